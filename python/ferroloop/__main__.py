"""``python -m ferroloop``: command-line tools.

``run`` runs a program on ferroloop; ``ps`` and ``top`` read the monitor socket of a
running program (``ferroloop.monitor``).

``python -m ferroloop run script.py [args...]`` and ``python -m ferroloop run -m module
[args...]`` run a program the way ``python script.py`` / ``python -m module`` would, with
ferroloop installed as the event loop first (``ferroloop.install()``: ``asyncio.run()`` and
``asyncio.new_event_loop()`` give ``ferroloop.Loop`` instances).

What the program sees is what Python gives it:

* ``sys.argv``: the script path as given (for ``-m``, the module's file path, as
  ``python -m`` sets it) followed by the program's arguments, untouched even when they
  look like options;
* ``__name__ == "__main__"``: the program runs in a fresh ``__main__`` module. A script
  file is compiled under its absolute path (``__file__``, tracebacks) as Python does,
  and its module stays ``sys.modules["__main__"]``; a module, or a directory or zip
  file holding ``__main__.py``, is run by ``runpy``;
* ``sys.path[0]``: the directory of the script, symbolic links resolved, and for ``-m``
  the current directory; nothing is prepended when Python runs with ``-P`` (3.11+), as
  Python itself does. One difference: for a directory or zip file holding
  ``__main__.py``, ``sys.path[0]`` is that path as given (``runpy`` puts it there),
  where Python makes it absolute.

Exit status: 0 when the program returns; ``SystemExit`` propagates unchanged (its code
is the status, a message is printed to stderr with status 1, as Python does); an uncaught
exception prints its traceback through ``sys.excepthook`` and gives status 1 (the frames
of this module and of ``runpy`` are left out: a script's traceback is Python's own, and
a module's lacks the two ``runpy`` frames Python shows for ``-m``); ``KeyboardInterrupt``
propagates to the interpreter. A script that does not exist gives status 2, a module that
cannot be found status 1, each with a one-line message, as Python does.

The options of ``run`` come before the program (everything from the script path or
``-m MODULE`` on belongs to the program):

* ``--blocking-threshold SECONDS`` (``0.05``, ``50ms``) turns the blocking detector on
  for every ferroloop loop the program creates (``asyncio.run``, ``ferroloop.run``,
  ``ferroloop.new_event_loop``...): a callback or task step that blocks its loop that
  long is reported while it blocks, with the loop thread's stack, as a warning on the
  ``ferroloop`` logger (on stderr unless the program configures logging). It does so
  by setting ``FERROLOOP_BLOCKING_THRESHOLD`` for the program, which child processes
  inherit like any environment variable; it wins over a value already set there. A
  value that is not a positive duration is a usage error (status 2).

* ``--monitor PATH`` serves the program's event loop on the Unix socket ``PATH`` (mode
  0600, the owner's uid only) for ``ps`` and ``top``: it sets ``FERROLOOP_MONITOR`` to
  the absolute path for the program, so the first ferroloop loop it creates starts a
  monitor there (a loop created while that one still serves gets none: the path is in
  use; that is logged as a warning), and ``close()`` removes the socket.

* ``--task-origins`` makes "Task was destroyed but it is pending!" and "Task exception
  was never retrieved" say where the task was created (``task_created_at``; costs every
  coroutine creation a frame lookup, see ``ferroloop._origins``): it sets
  ``FERROLOOP_TASK_ORIGINS=1`` for the program.

``python -m ferroloop ps PATH`` prints the task tree of the loop serving the monitor at
``PATH``, as ``ferroloop.dump_tasks()`` would print it inside the program; status 1 with
the reason on stderr when the loop does not answer (blocked, not running: the loop's
counters follow) or the socket cannot be reached.

``python -m ferroloop top PATH [--interval SECONDS] [--iterations N]`` redraws every
``SECONDS`` (default 1) the loop's counters (iterations and callbacks with their rates,
busy and polling time, ready callbacks, timers, transports, watched fds) and its busiest
tasks (``loop.stats()["busiest_tasks"]``: the monitor turns callback timing on; the
names of the pending tasks if it was turned off), until Ctrl-C or ``N`` screens. The
screen is cleared between redraws only when stdout is a terminal; otherwise screens
follow each other, a blank line apart. Status 1 when the socket cannot be reached or the
monitor goes away.
"""

from __future__ import annotations

import argparse
import builtins
import importlib.machinery
import importlib.util
import io
import os
import runpy
import sys
import time
import types
from typing import Any, Dict, List, Optional, Sequence, Tuple

PROG = "python -m ferroloop"


def _threshold_argument(text: str) -> float:
    """``--blocking-threshold``'s value in seconds; argparse reports a bad one."""
    from ferroloop._blocking import parse_threshold

    try:
        return parse_threshold(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# Options of ``run`` that precede the program, as (flags, argparse keyword arguments).
# ``_split_run_arguments`` needs to know which take a value (any whose action stores
# one), so every ``run`` option is declared here and nowhere else.
_RUN_OPTIONS: List[Tuple[Tuple[str, ...], Dict[str, Any]]] = [
    (
        ("--blocking-threshold",),
        {
            "metavar": "SECONDS",
            "type": _threshold_argument,
            "default": None,
            "help": "report every callback or task step that blocks a ferroloop event "
                    "loop for this long (e.g. 0.05 or 50ms), while it blocks, with the "
                    "loop thread's stack, as a warning on the 'ferroloop' logger (sets "
                    "FERROLOOP_BLOCKING_THRESHOLD for the program)",
        },
    ),
    (
        ("--monitor",),
        {
            "metavar": "PATH",
            "default": None,
            "help": "serve the program's event loop (task tree, stats) on the Unix socket "
                    "PATH, mode 0600, for `ps PATH` and `top PATH` (sets "
                    "FERROLOOP_MONITOR for the program)",
        },
    ),
    (
        ("--task-origins",),
        {
            "action": "store_true",
            "help": "name where each forgotten task was created in asyncio's 'Task was "
                    "destroyed but it is pending' and 'exception was never retrieved' "
                    "reports (sets FERROLOOP_TASK_ORIGINS=1 for the program)",
        },
    ),
]

# Tasks and slow callbacks listed by ``top`` at most.
_TOP_TASKS = 20
_TOP_SLOWEST = 5
_CLEAR_SCREEN = "\x1b[H\x1b[2J"

_VALUELESS_ACTIONS = {"store_true", "store_false", "store_const", "count", "help", "version"}


class _UsageError(Exception):
    """A mistake on the command line: argparse reports it with the usage."""


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser, run_parser = _build_parser()
    if not args or args[0] != "run":
        # ps or top; else prints the help, or an error about the command, and exits.
        parsed = parser.parse_args(args)
        if parsed.command == "run":
            parser.error("the command must be the first argument")  # e.g. `-- run`
        return parsed.handler(parsed)
    try:
        options, module, program_args = _split_run_arguments(args[1:])
    except _UsageError as exc:
        run_parser.error(str(exc))
    parsed = run_parser.parse_args(options)
    if module is None and not program_args:
        run_parser.error("a script or -m MODULE is required")
    return _run_program(parsed, module, program_args)


def _build_parser() -> Tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="ferroloop command-line tools: run a program on ferroloop, look "
                    "inside a running one through its monitor socket.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    run = commands.add_parser(
        "run",
        usage=f"{PROG} run [options] (SCRIPT | -m MODULE) [ARGS ...]",
        help="run a Python script or module with ferroloop as the asyncio event loop",
        description=(
            "Run a script or module as `python SCRIPT` / `python -m MODULE` would, with "
            "ferroloop installed as the event loop (ferroloop.install()): asyncio.run() "
            "and asyncio.new_event_loop() create ferroloop loops. The program gets "
            "sys.argv, __name__ == '__main__' and sys.path[0] as Python sets them, and "
            "its exit status is the command's."
        ),
        epilog=(
            "Options of `run` go before SCRIPT or -m MODULE; every argument after them "
            "is the program's, even one that looks like an option. Examples:\n"
            f"  {PROG} run server.py --port 8080\n"
            f"  {PROG} run -m myapp.cli serve"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for flags, kwargs in _RUN_OPTIONS:
        run.add_argument(*flags, **kwargs)
    # Shown in the help; filled from _split_run_arguments, never parsed by argparse.
    program = run.add_argument_group("program")
    program.add_argument("-m", dest="module", metavar="MODULE",
                         help="run library module MODULE as a script (like python -m)")
    program.add_argument("script", nargs="?", metavar="SCRIPT",
                         help="path of the script (a file, or a directory or zip file "
                              "holding __main__.py)")
    program.add_argument("args", nargs="*", metavar="ARGS",
                         help="arguments for the program, in its sys.argv[1:]")
    socket_help = ("the monitor's Unix socket (run --monitor PATH, FERROLOOP_MONITOR=PATH "
                   "or loop.start_monitor(PATH) in the program)")
    ps = commands.add_parser(
        "ps",
        help="print the task tree of a program that serves a monitor socket",
        description="Print the pending tasks of the event loop serving the monitor at "
                    "PATH as a tree, as ferroloop.dump_tasks() would print it.",
    )
    ps.add_argument("path", metavar="PATH", help=socket_help)
    ps.set_defaults(handler=_ps)
    top = commands.add_parser(
        "top",
        help="redraw the stats and busiest tasks of a program that serves a monitor socket",
        description="Redraw the counters and the busiest tasks of the event loop serving "
                    "the monitor at PATH every SECONDS, until Ctrl-C.",
    )
    top.add_argument("path", metavar="PATH", help=socket_help)
    top.add_argument("--interval", metavar="SECONDS", type=_positive_float, default=1.0,
                     help="time between screens (default: 1)")
    top.add_argument("--iterations", metavar="N", type=_positive_int, default=None,
                     help="stop after N screens (default: run until Ctrl-C)")
    top.set_defaults(handler=_top)
    return parser, run


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return int(text)


def _split_run_arguments(args: List[str]) -> Tuple[List[str], Optional[str], List[str]]:
    """Split ``run``'s arguments into (its own options, module or None, program argv).

    The program argv is ``[script, *args]`` for a script and ``args`` for a module; it
    starts at the first argument that is not an option of ``run`` (or after ``--``).
    """
    takes_value = {
        flag
        for flags, kwargs in _RUN_OPTIONS
        if kwargs.get("action", "store") not in _VALUELESS_ACTIONS
        for flag in flags
    }
    options: List[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            return options, None, args[index + 1:]
        if arg == "-m" or (arg.startswith("-m") and not arg.startswith("--")):
            module = arg[2:] or (args[index + 1] if index + 1 < len(args) else "")
            rest = index + (1 if arg[2:] else 2)
            if not module:
                raise _UsageError("argument -m: expected a module name")
            return options, module, args[rest:]
        if not arg.startswith("-") or arg == "-":
            return options, None, args[index:]
        options.append(arg)
        if arg in takes_value:  # "--flag value"; "--flag=value" is one argument
            if index + 1 < len(args):
                options.append(args[index + 1])
            index += 1
        index += 1
    return options, None, []


def _run_program(options: argparse.Namespace, module: Optional[str], argv: List[str]) -> int:
    """Install ferroloop and run the program; return its exit status.

    ``options`` holds the options of ``run``: the blocking threshold and the monitor
    path are applied here, before the program runs.
    """
    if module is not None:
        problem = _module_problem(module)
        if problem is not None:
            print(f"{PROG} run: {problem}", file=sys.stderr)
            return 1
    else:
        script = argv[0]
        if not os.path.exists(script):
            print(f"{PROG} run: can't open file {os.path.abspath(script)!r}: "
                  "[Errno 2] No such file or directory", file=sys.stderr)
            return 2

    import ferroloop
    from ferroloop._blocking import ENV_THRESHOLD
    from ferroloop._origins import ENV_TASK_ORIGINS
    from ferroloop.monitor import ENV_MONITOR

    # Read by every ferroloop.Loop when it is created, whoever creates it.
    if options.blocking_threshold is not None:
        os.environ[ENV_THRESHOLD] = repr(options.blocking_threshold)
    if options.monitor is not None:
        os.environ[ENV_MONITOR] = os.path.abspath(options.monitor)
    if options.task_origins:
        os.environ[ENV_TASK_ORIGINS] = "1"
    ferroloop.install()
    try:
        if module is not None:
            # sys.path[0] stays the current directory, which `python -m` put there.
            sys.argv[:] = [module, *argv]
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            _set_script_path_entry(argv[0])
            sys.argv[:] = list(argv)
            _run_script(argv[0])
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:  # noqa: BLE001 - reported like an uncaught exception
        # The hook prints the exception's own __traceback__: trim that one.
        exc = exc.with_traceback(_program_frames(exc.__traceback__))
        sys.excepthook(type(exc), exc, exc.__traceback__)
        return 1
    return 0


def _module_problem(module: str) -> Optional[str]:
    """Why ``python -m module`` would refuse to start, in Python's words; None if it runs."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, AttributeError, TypeError, ValueError) as exc:  # as runpy
        return (f"Error while finding module specification for {module!r} "
                f"({type(exc).__name__}: {exc})")
    if spec is None:
        return f"No module named {module}"
    if spec.submodule_search_locations is not None:
        try:
            main_spec = importlib.util.find_spec(f"{module}.__main__")
        except (ImportError, ValueError):
            main_spec = None
        if main_spec is None:
            return (f"No module named {module}.__main__; {module!r} is a package and "
                    "cannot be directly executed")
    return None


def _run_script(path: str) -> None:
    """Run the script at ``path`` as ``python path`` does."""
    if _is_directory_or_zip(path) or path.endswith(".pyc"):
        runpy.run_path(path, run_name="__main__")
        return
    filename = os.path.abspath(path)
    with io.open_code(filename) as source_file:
        source = source_file.read()
    # dont_inherit: this module's `from __future__` imports must not reach the program.
    code = compile(source, filename, "exec", dont_inherit=True)
    main_module = types.ModuleType("__main__")
    main_module.__dict__.update(
        __file__=filename,
        __cached__=None,
        __loader__=importlib.machinery.SourceFileLoader("__main__", filename),
        __builtins__=builtins,
    )
    sys.modules["__main__"] = main_module
    exec(code, main_module.__dict__)


def _set_script_path_entry(script: str) -> None:
    """Make ``sys.path[0]`` what ``python script`` would, in place of the current
    directory that ``python -m ferroloop`` put there."""
    if getattr(sys.flags, "safe_path", False):
        return  # python -P: Python prepends nothing, and neither did `-m` here
    if _is_directory_or_zip(script):
        # runpy.run_path puts the directory or zip file itself first.
        if sys.path:
            del sys.path[0]
        return
    entry = os.path.dirname(os.path.realpath(script))
    if sys.path:
        sys.path[0] = entry
    else:
        sys.path.insert(0, entry)


def _is_directory_or_zip(path: str) -> bool:
    if os.path.isdir(path):
        return True
    if path.endswith(".py"):
        return False
    import zipfile

    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def _program_frames(tb: Any) -> Any:
    """The traceback from the program's first frame on (drops this module's and runpy's;
    runpy is a frozen module on 3.11+, so frames are told apart by their globals)."""
    while tb is not None and (
        tb.tb_frame.f_globals is globals() or tb.tb_frame.f_globals.get("__name__") == "runpy"
    ):
        tb = tb.tb_next
    return tb


# -- ps and top ----------------------------------------------------------------------


def _ps(options: argparse.Namespace) -> int:
    from ferroloop.monitor import MonitorClient

    try:
        client = MonitorClient(options.path)
        try:
            answer = client.request("ps")
        finally:
            client.close()
    except OSError as exc:
        print(f"{PROG} ps: cannot reach the monitor at {options.path}: {exc}",
              file=sys.stderr)
        return 1
    if "error" in answer:
        print(f"{PROG} ps: {answer['error']}", file=sys.stderr)
        if answer.get("stats"):
            print("\n".join(_stats_lines(answer["stats"], None, None)), file=sys.stderr)
        return 1
    print(answer["text"])
    return 0


def _top(options: argparse.Namespace) -> int:
    """One connection per screen: a screen interval may exceed the monitor's idle timeout."""
    from ferroloop.monitor import MonitorClient

    on_terminal = sys.stdout.isatty()
    previous: tuple[float, dict[str, Any]] | None = None
    screens = 0
    try:
        while True:
            try:
                client = MonitorClient(options.path)
                try:
                    answer = client.request("top")
                finally:
                    client.close()
            except OSError as exc:
                print(f"{PROG} top: cannot reach the monitor at {options.path}: {exc}",
                      file=sys.stderr)
                return 1
            now = time.monotonic()
            lines = _top_screen(options.path, answer, previous, now)
            if answer.get("stats"):
                previous = (now, answer["stats"])
            if on_terminal:
                sys.stdout.write(_CLEAR_SCREEN)
            elif screens:
                sys.stdout.write("\n")
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()
            screens += 1
            if options.iterations is not None and screens >= options.iterations:
                return 0
            time.sleep(options.interval)
    except KeyboardInterrupt:
        return 0


def _top_screen(path: str, answer: dict[str, Any],
                previous: tuple[float, dict[str, Any]] | None, now: float) -> list[str]:
    header = f"ferroloop top: {path}"
    if "pid" in answer:
        header += f"  pid {answer['pid']}"
    lines = [header + "  " + time.strftime("%H:%M:%S")]
    if answer.get("stats"):
        lines.extend(_stats_lines(answer["stats"], previous, now))
    if "error" in answer:
        lines.append(f"monitor: {answer['error']}")
        return lines
    tasks = answer["tasks"]
    if answer.get("timed"):
        lines.append("busiest tasks (time spent running since callback timing began):")
        lines.append(f"{'seconds':>10}  {'steps':>8}  task")
        lines.extend(_busiest_line(task) for task in tasks[:_TOP_TASKS])
        if not tasks:
            lines.append("  (no task has run yet)")
    elif tasks:
        lines.append(f"pending tasks ({len(tasks)}; the loop times no callbacks):")
        lines.extend(f"  {task['task']}" for task in tasks[:_TOP_TASKS])
    else:
        lines.append("no pending tasks")
    if len(tasks) > _TOP_TASKS:
        lines.append(f"  ... and {len(tasks) - _TOP_TASKS} more")
    if answer.get("stats"):
        lines.extend(_timing_lines(answer["stats"]))
    return lines


def _timing_lines(stats: dict[str, Any]) -> list[str]:
    """How late timers fired and the slowest recent callbacks, when ``stats`` has them."""
    lines = []
    lag = stats.get("timer_lag")
    if lag and lag.get("timers"):
        lines.append(
            f"timer lag (last {lag['timers']} timers): p50 {lag['p50'] * 1e3:.2f} ms   "
            f"p99 {lag['p99'] * 1e3:.2f} ms   max {lag['max'] * 1e3:.2f} ms"
        )
    slowest = stats.get("slowest_callbacks")
    if slowest:
        lines.append("slowest callbacks (last 60 s):")
        lines.append(f"{'seconds':>10}  callback")
        lines.extend(
            f"{slow['seconds']:10.3f}  {slow['task'] or slow['handle']}"
            for slow in slowest[:_TOP_SLOWEST]
        )
    return lines


def _busiest_line(task: dict[str, Any]) -> str:
    steps = task.get("steps")
    line = f"{task['seconds']:10.3f}  {'' if steps is None else steps:>8}  {task['task']}"
    return line + ("  (done)" if task.get("done") else "")


def _stats_lines(stats: dict[str, Any], previous: tuple[float, dict[str, Any]] | None,
                 now: float | None) -> list[str]:
    """``loop.stats()`` in three lines; rates since ``previous`` (time, stats) if given."""
    def count(key: str) -> str:
        text = f"{key} {stats[key]:,}"
        if previous is not None and now is not None and now > previous[0]:
            rate = (stats[key] - previous[1][key]) / (now - previous[0])
            text += f" ({rate:+,.0f}/s)"
        return text

    times = f"busy {stats['busy_seconds']:.3f} s   polling {stats['polling_seconds']:.3f} s"
    if previous is not None:
        ran = stats["running_seconds"] - previous[1]["running_seconds"]
        if ran > 0:
            busy = (stats["busy_seconds"] - previous[1]["busy_seconds"]) / ran
            times += f"   busy {busy:.0%} since the last screen"
    queues = (
        f"ready {stats['ready']}   timers {stats['timers']} "
        f"({stats['cancelled_timers']} cancelled)   transports {stats['transports']}   "
        f"watched fds {stats['watched_fds']}"
    )
    return [f"{count('iterations')}   {count('callbacks')}", times, queues]


if __name__ == "__main__":
    sys.exit(main())
