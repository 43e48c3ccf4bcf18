"""Run a repository script (an example or a benchmark) in a subprocess, as a
user would from the repository root, for the smoke tests."""

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300  # generous: each smoke run takes well under a minute on 2 cores
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_script(args, timeout=TIMEOUT_S):
    """``python *args`` from the repository root (keras_gmm importable from
    the checkout); asserts exit status 0 and returns stdout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    result = subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True,
        text=True, timeout=timeout,
    )
    assert result.returncode == 0, (
        f"{args} exited with {result.returncode}\n"
        f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    )
    return result.stdout
