"""Run a repository script (an example or a benchmark) in a subprocess, as a
user would from the repository root, for the smoke tests.

:func:`run_script` runs one now. A smoke test marked
``@pytest.mark.script([...])`` (the command's arguments, ``{out}`` standing
for its own empty output folder) gets its run from the ``script_run``
fixture instead: the session starts the runs of every selected marked test
when it starts (tests/conftest.py), ``WORKERS`` at a time (each a fresh
interpreter in its own folder, as :func:`run_script`), in the background of
the in-process tests (which keep about one core busy: the suite ran at 130 %
of 2 cores with the runs started at the first marked test); each test then
waits for its own run only.
"""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300  # generous: each smoke run takes well under a minute on 2 cores
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: Marked scripts run this many at a time, beside the in-process tests (one
#: on the 2-core CI machine: the other core is the in-process tests').
WORKERS = max(1, min(2, (os.cpu_count() or 1) - 1))


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


def _run(args, timeout):
    """``python *args`` from the repository root: the CompletedProcess
    (returncode None when it ran past ``timeout`` seconds)."""
    try:
        return subprocess.run(
            [sys.executable, *args], cwd=REPO_ROOT, env=_env(), capture_output=True,
            text=True, timeout=timeout, check=False,
        )
    except subprocess.TimeoutExpired as error:
        return subprocess.CompletedProcess(
            error.cmd, None, as_text(error.stdout), as_text(error.stderr))


def as_text(value):
    """A subprocess's captured output as text ("" for None)."""
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _checked(args, result, timeout):
    """Assert exit status 0 (the output's tail in the message); stdout."""
    assert result.returncode is not None, (
        f"{args} did not finish in {timeout} s\n"
        f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    )
    assert result.returncode == 0, (
        f"{args} exited with {result.returncode}\n"
        f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    )
    return result.stdout


def run_script(args, timeout=TIMEOUT_S):
    """``python *args`` from the repository root (keras_gmm importable from
    the checkout); asserts exit status 0 and returns stdout."""
    return _checked(args, _run(args, timeout), timeout)


@dataclass
class ScriptRun:
    """A marked test's script run: ``stdout`` and its output folder ``out``."""

    stdout: str
    out: Path


class ScriptPool:
    """The runs of the marked tests of a session (see the module docstring)."""

    def __init__(self, items, make_dir, timeout=TIMEOUT_S):
        self.timeout = timeout
        self._executor = ThreadPoolExecutor(max_workers=WORKERS)
        self._runs = {}
        for item in items:
            marker = item.get_closest_marker("script")
            if marker is None:
                continue
            out = make_dir(item.name)
            args = [str(a).replace("{out}", str(out)) for a in marker.args[0]]
            self._runs[item.nodeid] = (
                args, out, self._executor.submit(_run, args, timeout))

    def result(self, nodeid):
        args, out, future = self._runs[nodeid]
        return ScriptRun(_checked(args, future.result(), self.timeout), out)

    def close(self):
        for _, _, future in self._runs.values():
            future.cancel()
        self._executor.shutdown(wait=True)
