"""ferroloop.pytest_plugin: ``pytest --ferroloop`` runs pytest-asyncio tests on ferroloop.

Each test runs an inner pytest session in a subprocess (``pytester``), with the plugin
loaded the way users get it (the ``pytest11`` entry point of the installed package) and
pytest-asyncio's deprecation warnings turned into errors, so that the plugin is also checked to use the way the
installed pytest-asyncio supports. The inner tests print the class of the loop they and
their async fixtures run on; the outer test reads it.
"""

from __future__ import annotations

import re

import pytest
import pytest_asyncio  # noqa: F401 - the plugin's subject must be installed (requirements-dev.txt)

pytest_plugins = ["pytester"]

# Nothing to pass: the installed package registers the plugin (pyproject.toml's pytest11).
PLUGIN = ()
STRICT = ("-W", "error::pytest.PytestDeprecationWarning", "-s")

INNER_TESTS = '''
import asyncio

import pytest
import pytest_asyncio


FIRST_MODULE_LOOP = []


def describe(loop):
    origins = " task-origins" if getattr(loop, "get_task_origins", bool)() else ""
    return f"{type(loop).__module__}.{type(loop).__qualname__}{origins}"


@pytest_asyncio.fixture
async def fixture_loop():
    yield asyncio.get_running_loop()


@pytest.mark.asyncio
async def test_function_scope(fixture_loop):
    loop = asyncio.get_running_loop()
    print(f"\\nLOOP function {describe(loop)} fixture-same-loop={fixture_loop is loop}")


@pytest.mark.asyncio(loop_scope="module")
async def test_module_scope_first():
    FIRST_MODULE_LOOP.append(asyncio.get_running_loop())
    print(f"\\nLOOP module {describe(FIRST_MODULE_LOOP[0])}")


@pytest.mark.asyncio(loop_scope="module")
async def test_module_scope_second():
    print(f"\\nLOOP module-shared {asyncio.get_running_loop() is FIRST_MODULE_LOOP[0]}")
'''

# In a module of its own: with pytest-asyncio < 1.4 the policy is ferroloop's while a
# module-scoped loop of pytest-asyncio is open (see the plugin's doc).
SYNC_TEST = '''
import asyncio


def test_sync_test_is_left_alone():
    loop = asyncio.new_event_loop()
    print(f"\\nLOOP sync {type(loop).__module__}.{type(loop).__qualname__}")
    loop.close()
'''


@pytest.fixture
def inner(pytester):
    # Set, so that pytest-asyncio does not warn that it is unset.
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_inner=INNER_TESTS, test_sync=SYNC_TEST)
    return pytester


def loop_lines(result):
    return [line for line in result.outlines if line.startswith("LOOP ")]


def test_ferroloop_flag_runs_tests_and_fixtures_on_ferroloop(inner):
    result = inner.runpytest_subprocess(*PLUGIN, *STRICT, "--ferroloop")
    result.assert_outcomes(passed=4)
    lines = loop_lines(result)
    assert lines[:3] == [
        "LOOP function ferroloop._loop.Loop task-origins fixture-same-loop=True",
        "LOOP module ferroloop._loop.Loop task-origins",
        "LOOP module-shared True",
    ]
    assert re.fullmatch(r"LOOP sync asyncio\.\S+", lines[3]), "only pytest-asyncio's loops change"
    assert any(line.startswith("ferroloop: pytest-asyncio tests run on ferroloop.Loop")
               for line in result.outlines)


def test_without_the_flag_nothing_changes(inner):
    result = inner.runpytest_subprocess(*PLUGIN, *STRICT)
    result.assert_outcomes(passed=4)
    lines = loop_lines(result)
    assert len(lines) == 4
    assert re.fullmatch(r"LOOP function asyncio\.\S+ fixture-same-loop=True", lines[0])
    assert re.fullmatch(r"LOOP module asyncio\.\S+", lines[1])
    assert lines[2] == "LOOP module-shared True"
    assert re.fullmatch(r"LOOP sync asyncio\.\S+", lines[3])
    # (pytest's header lists the installed plugin; nothing else may mention ferroloop)
    assert not any(
        line.startswith("ferroloop:") or "ferroloop._loop" in line for line in result.outlines
    )


def test_test_ids_are_the_same_with_and_without_the_flag(inner):
    with_flag = inner.runpytest_subprocess(*PLUGIN, *STRICT, "--ferroloop", "--collect-only", "-q")
    without = inner.runpytest_subprocess(*PLUGIN, *STRICT, "--collect-only", "-q")
    ids = [line for line in without.outlines if "::" in line]
    assert len(ids) == 4
    assert [line for line in with_flag.outlines if "::" in line] == ids


def test_flag_without_pytest_asyncio_is_a_usage_error(inner):
    result = inner.runpytest_subprocess(*PLUGIN, "-p", "no:asyncio", "--ferroloop")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "ERROR: --ferroloop needs pytest-asyncio >= 0.23 (pip install pytest-asyncio)" in (
        result.errlines
    )


def test_plugin_is_registered_by_the_package_entry_point():
    from importlib.metadata import entry_points

    plugins = entry_points(group="pytest11") if hasattr(entry_points(), "select") else (
        entry_points().get("pytest11", ())
    )
    assert [(ep.name, ep.value) for ep in plugins if ep.name == "ferroloop"] == [
        ("ferroloop", "ferroloop.pytest_plugin")
    ]


def test_help_lists_the_flag(pytester):
    result = pytester.runpytest_subprocess(*PLUGIN, "--help")
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        ["*--ferroloop*run the tests and async fixtures of pytest-asyncio*"]
    )
