"""``pytest --ferroloop --ferroloop-fail-on-blocking=DURATION``, run by an inner pytest.

As in ``test_pytest_plugin.py``: each test runs an inner pytest session in a subprocess
(``pytester``) with the plugin loaded through the installed package's ``pytest11``
entry point and pytest-asyncio's deprecation warnings as errors. The inner tests block
their loop (``time.sleep`` in a test, in a fixture, in a test sharing a module-scoped
loop) or do not; the outer test reads the outcomes and the failure text. ferroloop
only: the option exists only with ``--ferroloop``.
"""

from __future__ import annotations

import pytest
import pytest_asyncio  # noqa: F401 - the plugin's subject must be installed (requirements-dev.txt)

pytest_plugins = ["pytester"]

STRICT = ("-W", "error::pytest.PytestDeprecationWarning", "-p", "no:randomly")
FAIL_ON = "--ferroloop-fail-on-blocking=50ms"

INNER_TESTS = '''
import asyncio
import time

import pytest
import pytest_asyncio


async def helper_that_blocks():
    time.sleep(0.3)  # HELPER-BLOCKS


@pytest.mark.asyncio
async def test_blocks():
    await asyncio.sleep(0)
    time.sleep(0.3)  # TEST-BLOCKS


@pytest.mark.asyncio
async def test_blocks_in_a_helper_task():
    await asyncio.create_task(helper_that_blocks(), name="the-helper")


@pytest.mark.asyncio
async def test_clean():
    await asyncio.sleep(0.3)


@pytest.mark.asyncio
async def test_short_steps_are_fine():
    for _ in range(20):
        time.sleep(0.01)
        await asyncio.sleep(0)


def test_sync_test_is_not_watched():
    time.sleep(0.2)
'''

FIXTURE_TESTS = '''
import asyncio
import time

import pytest
import pytest_asyncio


@pytest_asyncio.fixture
async def slow_fixture():
    time.sleep(0.3)  # FIXTURE-BLOCKS
    yield


@pytest.mark.asyncio
async def test_with_a_blocking_fixture(slow_fixture):
    await asyncio.sleep(0)
'''

MODULE_LOOP_TESTS = '''
import asyncio
import time

import pytest


@pytest.mark.asyncio(loop_scope="module")
async def test_first_blocks_the_shared_loop():
    time.sleep(0.3)  # SHARED-BLOCKS
    await asyncio.sleep(0.05)


@pytest.mark.asyncio(loop_scope="module")
async def test_second_on_the_shared_loop_is_clean():
    await asyncio.sleep(0.2)


@pytest.mark.asyncio(loop_scope="module")
async def test_third_blocks_twice():
    time.sleep(0.2)
    await asyncio.sleep(0.05)
    time.sleep(0.2)
    await asyncio.sleep(0.05)
'''


def line_of(path, marker):
    """The line of the inner test file ``path`` (as pytester wrote it) ending with
    ``# marker``."""
    lines = path.read_text().splitlines()
    hits = [n for n, line in enumerate(lines, 1) if line.endswith(f"# {marker}")]
    assert len(hits) == 1
    return hits[0]


@pytest.fixture
def inner(pytester):
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    return pytester


def outcome_of(result, test):
    """The outcome line pytest -rA printed for ``test`` (e.g. "FAILED")."""
    hits = [line.split()[0] for line in result.outlines if line.endswith(f"::{test}")
            or f"::{test} - " in line]
    return hits


def test_blocking_test_fails_and_clean_tests_pass(inner):
    inner.makepyfile(test_inner=INNER_TESTS)
    result = inner.runpytest_subprocess(*STRICT, "--ferroloop", FAIL_ON, "-rA")
    result.assert_outcomes(passed=3, failed=2)
    assert outcome_of(result, "test_blocks") == ["FAILED"]
    assert outcome_of(result, "test_blocks_in_a_helper_task") == ["FAILED"]
    for clean in ("test_clean", "test_short_steps_are_fine", "test_sync_test_is_not_watched"):
        assert outcome_of(result, clean) == ["PASSED"], clean
    path = inner.path / "test_inner.py"
    text = result.stdout.str()
    # The stall, where it happened (the blocking line, innermost last) and by whom.
    result.stdout.fnmatch_lines([
        "*_ test_blocks _*",
        "the event loop was blocked for 0.* s by task 'Task-*' "
        "(--ferroloop-fail-on-blocking=0.05 s); the loop thread was at (innermost last):",
        f'  File "{path}", line {line_of(path, "TEST-BLOCKS")}, in test_blocks',
        "    time.sleep(0.3)  # TEST-BLOCKS",
        "*_ test_blocks_in_a_helper_task _*",
        "the event loop was blocked for 0.* s by task 'the-helper' *",
        f'  File "{path}", line {line_of(path, "HELPER-BLOCKS")}, in helper_that_blocks',
        "    time.sleep(0.3)  # HELPER-BLOCKS",
    ])
    # Only the test's own frames: neither pytest's nor the loop's.
    failure = text[text.index("_ test_blocks _"):text.index("_ test_blocks_in_a_helper_task _")]
    assert "_pytest" not in failure and "pluggy" not in failure
    assert "ferroloop" not in failure.replace("--ferroloop-fail-on-blocking", "")
    duration = float(failure.split("blocked for ")[1].split(" s")[0])
    assert 0.25 <= duration <= 0.4


def test_without_the_option_blocking_tests_pass(inner):
    inner.makepyfile(test_inner=INNER_TESTS)
    result = inner.runpytest_subprocess(*STRICT, "--ferroloop")
    result.assert_outcomes(passed=5)


def test_blocking_async_fixture_errors_the_test(inner):
    inner.makepyfile(test_fixture=FIXTURE_TESTS)
    result = inner.runpytest_subprocess(*STRICT, "--ferroloop", FAIL_ON)
    result.assert_outcomes(errors=1)
    path = inner.path / "test_fixture.py"
    result.stdout.fnmatch_lines([
        "*ERROR at setup of test_with_a_blocking_fixture*",
        "the event loop was blocked for 0.* s by *",
        f'  File "{path}", line {line_of(path, "FIXTURE-BLOCKS")}, in slow_fixture',
    ])


def test_stall_on_a_shared_loop_fails_only_its_test(inner):
    inner.makepyfile(test_module_loop=MODULE_LOOP_TESTS)
    result = inner.runpytest_subprocess(*STRICT, "--ferroloop", FAIL_ON, "-rA")
    result.assert_outcomes(passed=1, failed=2)
    assert outcome_of(result, "test_first_blocks_the_shared_loop") == ["FAILED"]
    assert outcome_of(result, "test_second_on_the_shared_loop_is_clean") == ["PASSED"]
    assert outcome_of(result, "test_third_blocks_twice") == ["FAILED"]
    path = inner.path / "test_module_loop.py"
    result.stdout.fnmatch_lines([
        f"*line {line_of(path, 'SHARED-BLOCKS')}, in test_first_blocks_the_shared_loop",
        "stall 1 of 2: the event loop was blocked for 0.* s by task *",
        "stall 2 of 2: the event loop was blocked for 0.* s by task *",
    ])


def test_a_higher_threshold_lets_the_stall_pass(inner):
    inner.makepyfile(test_inner=INNER_TESTS)
    result = inner.runpytest_subprocess(*STRICT, "--ferroloop", "--ferroloop-fail-on-blocking",
                                        "1")
    result.assert_outcomes(passed=5)


def test_option_without_ferroloop_is_a_usage_error(inner):
    inner.makepyfile(test_inner=INNER_TESTS)
    result = inner.runpytest_subprocess(*STRICT, FAIL_ON)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "ERROR: --ferroloop-fail-on-blocking needs --ferroloop" in result.errlines


@pytest.mark.parametrize("value", ["abc", "0", "-5ms", "inf"])
def test_bad_duration_is_a_usage_error(inner, value):
    inner.makepyfile(test_inner=INNER_TESTS)
    result = inner.runpytest_subprocess(*STRICT, "--ferroloop",
                                        f"--ferroloop-fail-on-blocking={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert any(line.startswith("ERROR: --ferroloop-fail-on-blocking: ")
               for line in result.errlines), result.errlines


def test_help_lists_the_option(pytester):
    result = pytester.runpytest_subprocess("--help")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*--ferroloop-fail-on-blocking=DURATION*"])
