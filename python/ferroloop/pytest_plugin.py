"""pytest plugin: ``pytest --ferroloop`` runs the pytest-asyncio tests on ferroloop loops.

Load it with ``-p ferroloop.pytest_plugin`` (or through the package's ``pytest11`` entry
point once it is registered). It adds one option, ``--ferroloop``:

* Without it the plugin does nothing: it registers no hook implementation and no
  fixture, and does not import ferroloop's compiled core.
* With it, every test and async fixture that pytest-asyncio runs gets a
  ``ferroloop.Loop``, whatever its loop scope. How depends on pytest-asyncio's release:

  - 1.4 and later: through pytest-asyncio's ``pytest_asyncio_loop_factories`` hook, the
    supported way there (overriding ``event_loop_policy`` is deprecated since 1.4). The
    hook returns the single factory ``{"ferroloop": ferroloop.new_event_loop}``, so
    test ids do not change (pytest >= 8.4 hides a lone factory's id); it runs first,
    so it wins over a project's own ``pytest_asyncio_loop_factories``, and a test
    marked ``asyncio(loop_factories=[...])`` without ``"ferroloop"`` is skipped by
    pytest-asyncio as "not available".
  - 0.23 to 1.3 (1.2 is the last for Python 3.9): by overriding pytest-asyncio's
    session-scoped ``event_loop_policy`` fixture with ``ferroloop.EventLoopPolicy()``,
    the supported way there.

  The hook's presence, not the version number, decides.

  Older pytest-asyncio (and its absence) is a usage error naming what is needed.
  Tests that make their own loops (``asyncio.run``, ``asyncio.new_event_loop``) are
  left alone.
* The report header says that the tests run on ferroloop.

Planned: ``--ferroloop-fail-on-blocking=DURATION`` (with the blocking detector).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import pytest

_MINIMUM_PYTEST_ASYNCIO = (0, 23)
_NEEDS_PYTEST_ASYNCIO = "--ferroloop needs pytest-asyncio >= 0.23 (pip install pytest-asyncio)"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ferroloop")
    group.addoption(
        "--ferroloop",
        action="store_true",
        default=False,
        help="run the tests and async fixtures of pytest-asyncio on ferroloop event loops",
    )


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("ferroloop"):
        return
    version = _pytest_asyncio_version(config)
    if version is None or version < _MINIMUM_PYTEST_ASYNCIO:
        raise pytest.UsageError(_NEEDS_PYTEST_ASYNCIO)
    import ferroloop  # imported only when asked for: a broken build fails only --ferroloop

    if hasattr(config.hook, "pytest_asyncio_loop_factories"):
        config.pluginmanager.register(_LoopFactoryHook(ferroloop), "ferroloop-loop-factory")
    else:
        config.pluginmanager.register(_PolicyFixture(ferroloop), "ferroloop-event-loop-policy")


def _pytest_asyncio_version(config: pytest.Config) -> Optional[tuple]:
    """pytest-asyncio's version as (major, minor), or None if it is not active."""
    plugin = config.pluginmanager.get_plugin("asyncio")
    if plugin is None:
        return None
    from importlib import metadata

    try:
        text = metadata.version("pytest-asyncio")
    except metadata.PackageNotFoundError:
        return None
    numbers: List[int] = []
    for part in text.split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        numbers.append(int(digits or 0))
    return tuple(numbers)


class _LoopFactoryHook:
    """pytest-asyncio >= 1.4: provide ferroloop's loop factory through its hook."""

    def __init__(self, ferroloop: Any) -> None:
        self._ferroloop = ferroloop

    @pytest.hookimpl(tryfirst=True)
    def pytest_asyncio_loop_factories(
        self, config: pytest.Config, item: pytest.Item
    ) -> Dict[str, Any]:
        return {"ferroloop": self._ferroloop.new_event_loop}

    def pytest_report_header(self, config: pytest.Config) -> str:
        return _header(self._ferroloop, "pytest_asyncio_loop_factories hook")


class _PolicyFixture:
    """pytest-asyncio 0.23 to 1.3: replace its ``event_loop_policy`` fixture."""

    def __init__(self, ferroloop: Any) -> None:
        self._ferroloop = ferroloop

    @pytest.fixture(scope="session")
    def event_loop_policy(self) -> Any:
        return self._ferroloop.EventLoopPolicy()

    def pytest_report_header(self, config: pytest.Config) -> str:
        return _header(self._ferroloop, "event_loop_policy fixture")


def _header(ferroloop: Any, how: str) -> str:
    return f"ferroloop: pytest-asyncio tests run on ferroloop.Loop ({ferroloop.__version__}, {how})"
