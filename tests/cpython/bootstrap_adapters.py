"""Module adapters of the CPython asyncio conformance run.

Used by ``ferroloop_cpython_bootstrap.py`` (the per-module child): after the
test module is imported and before its tests are loaded, ``ADAPTERS[name]
(module, setup)`` replaces the fixtures that hard-code a loop other than the
loop under test (``setup.factory()`` builds one and marks it as the loop
under test).

Invariants: an adapter changes where a test gets its loop (or removes setUp
noise that the tests do not check), never what a test asserts; every adapter
runs for every loop kind, so ``--loop asyncio`` runs the same test code as
``--loop ferroloop`` (the one place where the loop's own type matters is
_loop_ignoring_hook_mocks, documented there); tests an adapter cannot make
meaningful are excluded in exclusions.py with their reason, not adapted.
"""

import unittest


def _adapt_test_events(mod, setup):
    from test.test_asyncio import utils as test_utils

    def create_event_loop(self):
        return setup.factory()

    # The per-selector classes are EventLoopTestsMixin + SubprocessTestsMixin
    # on asyncio.SelectorEventLoop; the clone runs both mixins on the loop
    # under test (exclusions.py says which of their tests cannot run yet).
    mixins = (mod.EventLoopTestsMixin,)
    if hasattr(mod, "SubprocessTestsMixin"):
        mixins += (mod.SubprocessTestsMixin,)
    name = setup.prefix + "EventLoopTests"
    cls = type(name, mixins + (test_utils.TestCase,), {
        "create_event_loop": create_event_loop,
        "__module__": mod.__name__,
        "__qualname__": name,
        "__doc__": "EventLoopTestsMixin and SubprocessTestsMixin against the "
                   "loop under test (added by ferroloop_cpython_bootstrap).",
        # exclusions.py names it FerroloopEventLoopTests for every loop kind
        "_exclusion_name": "FerroloopEventLoopTests",
    })
    setattr(mod, name, cls)

    # GetEventLoopTestsMixin.setUp (TestPyGetEventLoop, TestCGetEventLoop)
    # builds its loop with asyncio.new_event_loop() (the loop under test) and
    # then attaches an asyncio.SafeChildWatcher to it, whose attach_loop()
    # calls loop.add_signal_handler(SIGCHLD).  None of the mixin's tests
    # starts a child process through the watcher (test_get_event_loop_new_
    # process uses a ProcessPoolExecutor, i.e. multiprocessing), so the
    # watcher is only setUp noise: while the original setUp runs,
    # asyncio.SafeChildWatcher is asyncio's ThreadedChildWatcher, whose
    # attach_loop() does nothing (3.9-3.13 all have it).  Same for every
    # loop kind, so --loop asyncio runs the same code.
    mixin = getattr(mod, "GetEventLoopTestsMixin", None)
    if mixin is not None and "setUp" in mixin.__dict__:
        import asyncio
        orig_setup = mixin.__dict__["setUp"]
        watcher_cls = getattr(asyncio, "ThreadedChildWatcher", None)

        def setUp(self):
            saved = getattr(asyncio, "SafeChildWatcher", None)
            if saved is None or watcher_cls is None:
                return orig_setup(self)
            asyncio.SafeChildWatcher = watcher_cls
            try:
                return orig_setup(self)
            finally:
                asyncio.SafeChildWatcher = saved

        mixin.setUp = setUp


def _adapt_test_pep492(mod, setup):
    from test.test_asyncio import utils as test_utils

    def setUp(self):
        # Original: a bare asyncio.BaseEventLoop() with mocked
        # _process_events/_selector.  Same contract, loop under test.
        test_utils.TestCase.setUp(self)
        self.loop = setup.factory()
        self.set_event_loop(self.loop)

    mod.BaseTest.setUp = setUp


def _adapt_test_runners(mod, setup):
    base = mod.BaseTest

    def new_loop(self):
        # Original: a bare asyncio.BaseEventLoop() with mocked selector,
        # _write_to_self and a shutdown_asyncgens that only records that it
        # ran (checked in tearDown).  Here: the loop under test, whose real
        # shutdown_asyncgens is still awaited.
        loop = setup.factory()
        real_shutdown = loop.shutdown_asyncgens

        async def shutdown_asyncgens():
            loop.shutdown_ag_run = True
            await real_shutdown()

        try:
            loop.shutdown_ag_run = False
            loop.shutdown_asyncgens = shutdown_asyncgens
        except AttributeError:
            loop.close()
            raise unittest.SkipTest(
                "harness: cannot set attributes on %s instances (no "
                "__dict__); test_runners needs loop.shutdown_asyncgens to be "
                "replaceable per instance" % type(loop).__name__)
        return loop

    base.new_loop = new_loop


# Hooks that asyncio.BaseEventLoop leaves abstract and that test_base_events
# replaces with mocks on its bare BaseEventLoop() (with a mocked _selector).
# On the loop under test they are the loop's own business: ferroloop has no
# such Python-level hooks (the mocks land in its instance dict and nothing
# reads them, so its loops are left exactly as built), while a real
# SelectorEventLoop (--loop asyncio) would stop processing its self-pipe if
# they were mocked (a call_soon_threadsafe from another thread would then
# never wake it), so on loops that have the hooks assignments are ignored.
_BASE_LOOP_HOOKS = frozenset(("_process_events", "_write_to_self"))


def _loop_ignoring_hook_mocks(loop):
    """Return ``loop``; if its class has any of _BASE_LOOP_HOOKS, swap the
    class for a subclass (same name) that ignores assignments to them.  If
    the class cannot be swapped, the loop is returned unchanged."""
    base = type(loop)
    if not any(hasattr(base, h) for h in _BASE_LOOP_HOOKS):
        return loop

    def __setattr__(self, name, value):
        if name in _BASE_LOOP_HOOKS:
            return
        base.__setattr__(self, name, value)

    guarded = type(base.__name__, (base,), {
        "__setattr__": __setattr__, "__module__": base.__module__,
        "__qualname__": base.__qualname__})
    try:
        loop.__class__ = guarded
    except TypeError:
        pass
    return loop


def _adapt_test_base_events(mod, setup):
    """The classes of test_base_events that check public loop behaviour get
    the loop under test instead of their fixtures' asyncio loops; every test
    that checks BaseEventLoop/BaseSelectorEventLoop internals is excluded in
    exclusions.py (with its reason)."""
    from test.test_asyncio import utils as test_utils

    def setUp(self):
        # BaseEventLoopTests: a bare base_events.BaseEventLoop() with a
        # mocked _selector; BaseEventLoopWithSelectorTests:
        # asyncio.SelectorEventLoop().  Both: the loop under test.
        test_utils.TestCase.setUp(self)
        self.loop = _loop_ignoring_hook_mocks(setup.factory())
        self.set_event_loop(self.loop)

    for name in ("BaseEventLoopTests", "BaseEventLoopWithSelectorTests"):
        cls = getattr(mod, name, None)
        if cls is not None:
            cls.setUp = setUp


ADAPTERS = {
    "test_base_events": _adapt_test_base_events,
    "test_events": _adapt_test_events,
    "test_pep492": _adapt_test_pep492,
    "test_runners": _adapt_test_runners,
}
