"""Tests of the CPython test_asyncio runner itself (tests/cpython/).

The runner must not report a module as passing when its child process
misbehaved after its last test, and must count only the tests that ran on the
loop under test as "passed on <loop>".  The end-to-end cases run
``run_cpython_asyncio.py --python WRAPPER test_context``, where WRAPPER is a
shell script that runs this interpreter with the same arguments and then
misbehaves (segfault, non-zero exit, hang, ...).  The wrapper behaves only
for the per-module child (``--module`` among its arguments): the runner also
calls ``--python`` for ``--info``, which must keep working.  The status logic
for cases that are hard to provoke from outside (a module that skips itself,
no test on the loop under test) is tested on synthesized records.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import subprocess
import sys
import types

import pytest

CPY_DIR = pathlib.Path(__file__).resolve().parent / "cpython"
RUNNER = CPY_DIR / "run_cpython_asyncio.py"
MODULE = "test_context"   # one small test that builds its loop via asyncio.run


def _import_runner():
    if str(CPY_DIR) not in sys.path:
        sys.path.insert(0, str(CPY_DIR))
    import run_cpython_asyncio
    import runner_report

    return run_cpython_asyncio, runner_report


def make_wrapper(tmp_path, after_run, env_prefix=""):
    """A fake interpreter: for the module child, run the real one with the
    same arguments (environment prefixed by ``env_prefix``), then run the
    shell snippet ``after_run``; for anything else, exec the real one."""
    path = tmp_path / "python-wrapper.sh"
    py = shlex.quote(sys.executable)
    path.write_text(
        "#!/bin/sh\n"
        'case " $* " in\n'
        '  *" --module "*) ;;\n'
        f'  *) exec {py} "$@" ;;\n'
        "esac\n"
        f'{env_prefix}{py} "$@"\n'
        f"{after_run}\n"
    )
    path.chmod(0o755)
    return str(path)


def run_runner(tmp_path, python, *extra, timeout=20, module=MODULE):
    summary = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, str(RUNNER), "--python", python, module,
         "--timeout", str(timeout), "--log-dir", str(tmp_path / "logs"),
         "--json", str(summary), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=timeout + 60)
    data = json.loads(summary.read_text()) if summary.exists() else None
    return proc, data


def _last_line(proc):
    return proc.stdout.rstrip().splitlines()[-1]


def test_normal_run_is_ok_and_final_line_counts_the_test(tmp_path):
    proc, data = run_runner(tmp_path, sys.executable)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    mod = data["modules"][MODULE]
    assert mod["status"] == "ok" and mod["ok"]
    assert mod["counts"]["on_loop"] == 1
    assert mod["after_tests"] is None and mod["returncode"] == 0
    assert _last_line(proc) == (
        "1 passed on ferroloop, 0 failed, 0 passed without the loop under "
        "test (vclock 0, stock-loop 0, no-loop 0), 0 skipped, 0 excluded")
    assert data["final_line"] == _last_line(proc)


def test_crash_after_tests_fails(tmp_path):
    wrapper = make_wrapper(tmp_path, "kill -SEGV $$")
    proc, data = run_runner(tmp_path, wrapper)
    assert proc.returncode != 0
    status = data["modules"][MODULE]["status"]
    assert "CRASH(after tests, signal SIGSEGV)" in status, status
    assert "CRASH(after tests, signal SIGSEGV)" in proc.stdout
    assert _last_line(proc).endswith("; 1 required module(s) not ok")
    assert MODULE in data["failing_required"]
    # the test itself still ran and passed on the loop under test
    assert data["modules"][MODULE]["counts"]["on_loop"] == 1


def test_nonzero_exit_after_tests_fails(tmp_path):
    wrapper = make_wrapper(tmp_path, "exit 3")
    proc, data = run_runner(tmp_path, wrapper)
    assert proc.returncode != 0
    status = data["modules"][MODULE]["status"]
    assert "CRASH(after tests, exit status 3)" in status, status


def test_hang_after_tests_fails(tmp_path):
    wrapper = make_wrapper(tmp_path, "sleep 1000")
    proc, data = run_runner(tmp_path, wrapper, timeout=8)
    assert proc.returncode != 0
    mod = data["modules"][MODULE]
    assert "TIMEOUT(after tests)" in mod["status"], mod["status"]
    assert mod["finished"] and not mod["timed_out"]


def make_injecting_wrapper(tmp_path, sitecustomize):
    """A wrapper whose module child imports ``sitecustomize`` at startup."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(sitecustomize)
    return make_wrapper(tmp_path, "exit $?",
                        env_prefix='PYTHONPATH="%s:$PYTHONPATH" ' % inject)


def test_hang_in_interpreter_shutdown_fails(tmp_path):
    # The child's own shutdown watchdog (armed after "done", for
    # --test-timeout seconds) must catch a hang in atexit.
    wrapper = make_injecting_wrapper(
        tmp_path, "import atexit, time\n"
                  "atexit.register(time.sleep, 1000)\n")
    proc, data = run_runner(tmp_path, wrapper, "--test-timeout", "3")
    assert proc.returncode != 0
    mod = data["modules"][MODULE]
    assert "TIMEOUT(after tests)" in mod["status"], mod["status"]
    assert "shutdown watchdog" in mod["after_tests"]


def test_setupclass_skip_leaves_tests_not_run_and_fails(tmp_path):
    # Every setUpClass raises SkipTest, so no test of the module ever runs.
    wrapper = make_injecting_wrapper(
        tmp_path, "import unittest\n"
                  "def _skip(cls):\n"
                  "    raise unittest.SkipTest('skipped by the runner "
                  "self-test')\n"
                  "unittest.TestCase.setUpClass = classmethod(_skip)\n")
    proc, data = run_runner(tmp_path, wrapper)
    assert proc.returncode != 0, proc.stdout
    mod = data["modules"][MODULE]
    assert mod["not_run"] == 1
    assert "INCOMPLETE(not run: 1)" in mod["status"], mod["status"]
    assert mod["counts"]["on_loop"] == 0
    assert _last_line(proc).startswith("0 passed on ferroloop, ")


def test_loop_built_in_setupclass_counts_for_every_test_of_the_class(tmp_path):
    # test_events' HandleTests/TimerTests build no loop (no-loop column);
    # with a setUpClass that builds the loop under test, they all count as
    # on-loop, not only the first test of each class.
    wrapper = make_injecting_wrapper(
        tmp_path, "import unittest\n"
                  "def _setup(cls):\n"
                  "    import asyncio\n"
                  "    asyncio.new_event_loop().close()\n"
                  "unittest.TestCase.setUpClass = classmethod(_setup)\n")
    proc, data = run_runner(tmp_path, wrapper, module="test_events")
    assert proc.returncode == 0, proc.stdout
    mod = data["modules"]["test_events"]
    assert mod["counts"]["no_loop"] == 0
    handle_tests = [t for t in mod["tests"] if ".HandleTests." in t["id"]
                    and t["outcome"] == "pass"]
    assert len(handle_tests) > 1
    assert all(t["column"] == "on_loop" for t in handle_tests)


# ---------------------------------------------------------------------------
# Status logic and counting on synthesized records
# ---------------------------------------------------------------------------

def _module_run(tmp_path, records=(), **attrs):
    runner, _ = _import_runner()
    args = types.SimpleNamespace(timeout=10.0, loop="ferroloop")
    run = runner.ModuleRun("test_fake", args, str(tmp_path), required=True)
    for i, rec in enumerate(records):
        rec = dict({"ev": "end", "id": "t.Fake.test_%d" % i, "details": []},
                   **rec)
        run.tests[rec["id"]] = rec
    run.finished = True
    run.returncode = 0
    for k, v in attrs.items():
        setattr(run, k, v)
    return run


ON_LOOP = {"outcome": "pass", "marks": {"target_loop": "yes"}}


def test_module_that_skipped_itself_is_not_ok(tmp_path):
    run = _module_run(tmp_path, module_skip="requires something",
                      finished=False)
    assert not run.ok()
    assert run.status() == "SKIPPED"


def test_module_without_a_test_on_the_loop_is_not_ok(tmp_path):
    run = _module_run(tmp_path, [
        {"outcome": "pass", "marks": {}},
        {"outcome": "pass", "marks": {"foreign_loop": "SelectorEventLoop"}},
        {"outcome": "pass", "marks": {"testloop": "virtual clock (gen)"}},
        {"outcome": "skip", "marks": {}},
        {"outcome": "excluded", "marks": {}},
    ])
    assert not run.ok()
    assert run.status().startswith("NO-LOOP")


def test_not_run_and_after_tests_problems_add_up(tmp_path):
    run = _module_run(tmp_path, [ON_LOOP, {"outcome": "error", "marks": {}}],
                      not_run=2, after_tests="TIMEOUT(after tests)")
    assert run.problems() == ["FAIL", "TIMEOUT(after tests)",
                              "INCOMPLETE(not run: 2)"]
    assert _module_run(tmp_path, [ON_LOOP]).status() == "ok"


def test_columns_and_final_line(tmp_path):
    _, report = _import_runner()
    records = [
        ON_LOOP,
        {"outcome": "pass", "marks": {"target_loop": "yes",
                                      "foreign_loop": "BaseEventLoop"}},
        {"outcome": "pass", "marks": {"target_loop": "yes",
                                      "testloop": "virtual clock (gen)"}},
        {"outcome": "pass", "marks": {"testloop_kept": "reason"}},
        {"outcome": "pass", "marks": {"foreign_loop": "SelectorEventLoop"}},
        {"outcome": "pass", "marks": {}},
        {"outcome": "fail"}, {"outcome": "upass"}, {"outcome": "error"},
        {"outcome": "skip"}, {"outcome": "xfail"}, {"outcome": "excluded"},
        {"outcome": "something new"},
    ]
    c = report.count_records(records)
    assert [c[k] for k in report.ALL_COLUMNS] == [2, 2, 1, 1, 2, 2, 2, 1]
    assert sum(c[k] for k in report.ALL_COLUMNS) == c["run"] == len(records)
    assert c["on_loop_with_stock"] == 1
    assert report.final_line(c, "asyncio") == (
        "2 passed on asyncio, 4 failed, 4 passed without the loop under test "
        "(vclock 2, stock-loop 1, no-loop 1), 2 skipped, 1 excluded")
