"""``python -m ferroloop run``: real subprocesses, checked against plain ``python``.

The reference for what a program must see (``sys.argv``, ``__name__``, ``sys.path[0]``,
its exit status, its traceback) is the same program run by plain ``python`` / ``python
-m``; the difference must be only the event loop: the policy and the running loop are
ferroloop's under ``run`` and asyncio's under plain Python.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from looptest_support import PY

# Prints what the program sees as one JSON line, then exits with its last argument
# (when it is a number), raises when asked to.
PROGRAM = textwrap.dedent(
    """
    import asyncio, json, sys

    async def main():
        return type(asyncio.get_running_loop())

    def annotated(x: int): pass

    loop_class = asyncio.run(main())
    print(json.dumps({
        "policy_module": type(asyncio.get_event_loop_policy()).__module__,
        "loop_class": loop_class.__module__ + "." + loop_class.__qualname__,
        "argv": sys.argv,
        "name": __name__,
        "path0": sys.path[0],
        "file": __file__,
        "annotation": repr(annotated.__annotations__["x"]),  # evaluated: no future import
    }))
    if "--raise" in sys.argv:
        raise LookupError("raised by the program")
    if "--exit-message" in sys.argv:
        sys.exit("stopped by the program")
    if sys.argv[-1].isdigit():
        sys.exit(int(sys.argv[-1]))
    """
)

FERROLOOP_RUN = [sys.executable, "-m", "ferroloop", "run"]


def run(command, cwd):
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60)


def seen(result):
    """What the program printed (its one JSON line)."""
    lines = result.stdout.splitlines()
    assert len(lines) == 1, (result.stdout, result.stderr)
    return json.loads(lines[0])


def only_the_loop_differs(under_ferroloop, plain):
    """Assert the two runs saw the same program environment, ferroloop vs asyncio."""
    ours, theirs = seen(under_ferroloop), seen(plain)
    assert ours["policy_module"] == "ferroloop"
    assert ours["loop_class"] == "ferroloop._loop.Loop"
    assert theirs["policy_module"].startswith("asyncio.")
    assert theirs["loop_class"].startswith("asyncio.")
    for key in ("argv", "name", "path0", "file", "annotation"):
        assert ours[key] == theirs[key], key
    return ours


def without_runpy_frames(traceback_text):
    """A printed traceback without runpy's entries (a File line and its source lines)."""
    kept, dropping = [], False
    for line in traceback_text.splitlines(keepends=True):
        if line.startswith("  File "):
            dropping = "runpy" in line
        elif not line.startswith("    "):
            dropping = False
        if not dropping:
            kept.append(line)
    return "".join(kept)


@pytest.fixture
def script(tmp_path):
    folder = tmp_path / "scripts"
    folder.mkdir()
    path = folder / "program.py"
    path.write_text(PROGRAM)
    return path


@pytest.fixture
def module(tmp_path):
    package = tmp_path / "apppkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tool.py").write_text(PROGRAM)
    return "apppkg.tool"


def test_script_with_arguments_and_exit_code(script, tmp_path):
    # Arguments that look like options (even -m and --help) belong to the program.
    args = ["scripts/program.py", "-m", "x", "--help", "7"]
    ours = run(FERROLOOP_RUN + args, tmp_path)
    plain = run([sys.executable] + args, tmp_path)
    assert (ours.returncode, plain.returncode) == (7, 7), ours.stderr
    seen_by_program = only_the_loop_differs(ours, plain)
    assert seen_by_program["argv"] == args
    assert seen_by_program["name"] == "__main__"
    assert seen_by_program["path0"] == str(script.parent)
    assert ours.stderr == ""


def test_script_through_a_symbolic_link_sees_the_target_directory(script, tmp_path):
    (tmp_path / "linked.py").symlink_to(script)
    ours = run(FERROLOOP_RUN + ["linked.py"], tmp_path)
    plain = run([sys.executable, "linked.py"], tmp_path)
    assert (ours.returncode, plain.returncode) == (0, 0), ours.stderr
    assert only_the_loop_differs(ours, plain)["path0"] == str(script.parent)


def test_module_with_arguments_and_exit_code(module, tmp_path):
    ours = run(FERROLOOP_RUN + ["-m", module, "--flag", "-m", "3"], tmp_path)
    plain = run([sys.executable, "-m", module, "--flag", "-m", "3"], tmp_path)
    assert (ours.returncode, plain.returncode) == (3, 3), ours.stderr
    seen_by_program = only_the_loop_differs(ours, plain)
    # python -m puts the module's file path in argv[0] and the current directory first.
    assert seen_by_program["argv"] == [str(tmp_path / "apppkg" / "tool.py"), "--flag", "-m", "3"]
    assert seen_by_program["path0"] == str(tmp_path)
    assert seen_by_program["name"] == "__main__"


def test_module_name_glued_to_the_option(module, tmp_path):
    ours = run(FERROLOOP_RUN + [f"-m{module}", "0"], tmp_path)
    assert ours.returncode == 0, ours.stderr
    assert seen(ours)["loop_class"] == "ferroloop._loop.Loop"


def test_package_with_main_module(tmp_path):
    package = tmp_path / "runnable"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(PROGRAM)
    ours = run(FERROLOOP_RUN + ["-m", "runnable", "5"], tmp_path)
    plain = run([sys.executable, "-m", "runnable", "5"], tmp_path)
    assert (ours.returncode, plain.returncode) == (5, 5), ours.stderr
    only_the_loop_differs(ours, plain)


@pytest.mark.parametrize("how", ["script", "module"])
def test_uncaught_exception_prints_the_programs_traceback_and_exits_1(
    script, module, tmp_path, how
):
    target = ["scripts/program.py"] if how == "script" else ["-m", module]
    ours = run(FERROLOOP_RUN + target + ["--raise"], tmp_path)
    plain = run([sys.executable] + target + ["--raise"], tmp_path)
    assert (ours.returncode, plain.returncode) == (1, 1)
    only_the_loop_differs(ours, plain)
    # Python's traceback, without the frames of ferroloop's CLI and of runpy (which
    # Python shows for -m).
    assert ours.stderr == without_runpy_frames(plain.stderr)
    assert "runpy" not in ours.stderr and "ferroloop" not in ours.stderr
    assert ours.stderr.startswith("Traceback (most recent call last):\n")
    assert ours.stderr.endswith("LookupError: raised by the program\n")


def test_syntax_error_in_the_script(tmp_path):
    (tmp_path / "broken.py").write_text("print('never')\ndef (:\n")
    ours = run(FERROLOOP_RUN + ["broken.py"], tmp_path)
    plain = run([sys.executable, "broken.py"], tmp_path)
    assert (ours.returncode, plain.returncode) == (1, 1)
    assert ours.stdout == plain.stdout == ""
    assert ours.stderr == plain.stderr
    assert "SyntaxError" in ours.stderr


def test_system_exit_with_a_message(script, tmp_path):
    ours = run(FERROLOOP_RUN + ["scripts/program.py", "--exit-message"], tmp_path)
    plain = run([sys.executable, "scripts/program.py", "--exit-message"], tmp_path)
    assert (ours.returncode, plain.returncode) == (1, 1)
    assert ours.stderr == plain.stderr == "stopped by the program\n"


@pytest.mark.skipif(PY < (3, 11), reason="python -P (safe_path) is new in 3.11")
def test_safe_path_prepends_nothing(script, tmp_path):
    ours = run([sys.executable, "-P", "-m", "ferroloop", "run", "scripts/program.py"], tmp_path)
    plain = run([sys.executable, "-P", "scripts/program.py"], tmp_path)
    assert (ours.returncode, plain.returncode) == (0, 0), ours.stderr
    assert only_the_loop_differs(ours, plain)["path0"] != str(script.parent)


def test_missing_script(tmp_path):
    result = run(FERROLOOP_RUN + ["missing.py", "arg"], tmp_path)
    assert result.returncode == 2  # as python's
    assert result.stdout == ""
    assert result.stderr == (
        f"python -m ferroloop run: can't open file {str(tmp_path / 'missing.py')!r}: "
        "[Errno 2] No such file or directory\n"
    )


@pytest.mark.parametrize(
    "name, message",
    [
        ("no_such_module", "No module named no_such_module"),
        ("no_such_package.tool", "Error while finding module specification for "
         "'no_such_package.tool' (ModuleNotFoundError: No module named 'no_such_package')"),
        ("apppkg", "No module named apppkg.__main__; 'apppkg' is a package and cannot be "
         "directly executed"),
    ],
)
def test_module_that_cannot_run(module, tmp_path, name, message):
    result = run(FERROLOOP_RUN + ["-m", name], tmp_path)
    assert result.returncode == 1  # as python's
    assert result.stdout == ""
    assert result.stderr == f"python -m ferroloop run: {message}\n"


@pytest.mark.parametrize(
    "args, error",
    [
        ([], "the following arguments are required: COMMAND"),
        (["bogus"], "invalid choice: 'bogus'"),
        (["run"], "a script or -m MODULE is required"),
        (["run", "-m"], "argument -m: expected a module name"),
        (["run", "--no-such-option", "x.py"], "unrecognized arguments: --no-such-option"),
    ],
)
def test_command_line_mistakes(tmp_path, args, error):
    result = run([sys.executable, "-m", "ferroloop"] + args, tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("usage: python -m ferroloop")
    assert error in result.stderr


def test_help(tmp_path):
    top = run([sys.executable, "-m", "ferroloop", "--help"], tmp_path)
    assert top.returncode == 0
    assert "run a Python script or module with ferroloop" in top.stdout
    run_help = run(FERROLOOP_RUN + ["--help"], tmp_path)
    assert run_help.returncode == 0
    assert run_help.stdout.startswith(
        "usage: python -m ferroloop run [options] (SCRIPT | -m MODULE) [ARGS ...]\n"
    )
    assert "-m MODULE" in run_help.stdout and "sys.argv[1:]" in run_help.stdout
