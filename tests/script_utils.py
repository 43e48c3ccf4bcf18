"""Run a repository script (an example or a benchmark) in a subprocess, as a
user would from the repository root, for the smoke tests; and run the
suite's other subprocess work in the background of the in-process tests.

:func:`run_script` runs one now. A smoke test marked
``@pytest.mark.script([...])`` (the command's arguments, ``{out}`` standing
for its own empty output folder) gets its run from the ``script_run``
fixture instead; a test marked ``@pytest.mark.background.with_args(job,
*args)`` (a callable ``job(out, *args)``; ``with_args``, as pytest reads a
lone callable argument as the function to mark), ``out`` its own empty folder, that runs a
subprocess: a README block, scikit-learn's test modules, a wheel install)
gets ``job``'s return value from the ``background_result`` fixture (its
exception, raised there, if it failed). The session starts every selected
marked test's job when it starts (tests/conftest.py), in collection order,
``WORKERS`` at a time, in the background of the in-process tests (which keep
about one core busy: the suite ran at 130 % of 2 cores with the runs started
at the first marked test, and the subprocess tests left a core idle while
the in-process tests waited on them); each test then waits for its own job
only. Under pytest-xdist (the default: ``-n 2``, one test process per
core, see tests/conftest.py) a worker does not know which tests it will get,
so each job starts when its test asks for it (``lazy``): the other worker
keeps the other core busy meanwhile.
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
    """The background jobs of the marked tests of a session (see the module
    docstring)."""

    def __init__(self, items, make_dir, timeout=TIMEOUT_S, lazy=False):
        self.timeout = timeout
        self._executor = ThreadPoolExecutor(max_workers=WORKERS)
        self._runs, self._pending = {}, {}
        for item in items:
            script = item.get_closest_marker("script")
            background = item.get_closest_marker("background")
            if script is None and background is None:
                continue
            if script is not None and background is not None:
                raise ValueError(f"{item.nodeid}: mark it script or background, "
                                 "not both")
            if lazy:  # started when the test asks for it
                self._pending[item.nodeid] = (item, script, background, make_dir)
            else:
                self._start(item, script, background, make_dir)

    def _start(self, item, script, background, make_dir):
        out = make_dir(item.name)
        if script is not None:
            args = [str(a).replace("{out}", str(out)) for a in script.args[0]]
            future = self._executor.submit(_run, args, self.timeout)
        else:
            args = None
            job, *job_args = background.args
            future = self._executor.submit(job, out, *job_args)
        self._runs[item.nodeid] = (args, out, future)

    def _future(self, nodeid, kind):
        if nodeid in self._pending:
            self._start(*self._pending.pop(nodeid))
        if nodeid not in self._runs:
            raise LookupError(f"{nodeid} has no @pytest.mark.{kind} job")
        return self._runs[nodeid]

    def result(self, nodeid):
        """A ``script``-marked test's run, exit status 0 asserted."""
        args, out, future = self._future(nodeid, "script")
        return ScriptRun(_checked(args, future.result(), self.timeout), out)

    def background_result(self, nodeid):
        """What a ``background``-marked test's job returned (or its error)."""
        return self._future(nodeid, "background")[2].result()

    def close(self):
        for _, _, future in self._runs.values():
            future.cancel()
        self._executor.shutdown(wait=True)
