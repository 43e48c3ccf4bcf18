"""Smoke tests: the example script and the MDN benchmark run end to end."""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 300  # generous: each run takes well under a minute on 2 cores

ROW = re.compile(
    r"^(?P<method>keras_gmm|plain_tfp|keras-mdn-layer)\s+"
    r"(?P<seconds>\S+)\s+(?P<ratio>\S+)\s+(?P<nll>\S+) ± (?P<std>\S+)\s+(?P<gap>\S+)",
    re.MULTILINE,
)


def _run(args):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    result = subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert result.returncode == 0, (
        f"{args} exited with {result.returncode}\n"
        f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"
    )
    return result.stdout


def _keras_mdn_layer_installed():
    try:
        import keras_mdn_layer  # noqa: F401
    except ImportError:
        return False
    return True


def test_mdn_inverse_sine_example_smoke(tmp_path):
    out = _run(
        ["examples/mdn_inverse_sine.py", "--smoke", "--output-dir", str(tmp_path)]
    )
    png = tmp_path / "mdn_inverse_sine.png"
    assert png.is_file() and png.stat().st_size > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(png) in out
    nll = re.search(r"test NLL: (\S+) nats", out)
    assert nll and math.isfinite(float(nll.group(1))), out


def test_mdn_benchmark_quick(tmp_path):
    output = tmp_path / "mdn.json"
    out = _run(["-m", "benchmarks.mdn", "--quick", "--output", str(output)])
    rows = {m["method"]: m for m in ROW.finditer(out)}
    expected = {"keras_gmm", "plain_tfp"}
    if _keras_mdn_layer_installed():
        expected.add("keras-mdn-layer")
    else:
        assert "skipping" in out
    assert set(rows) == expected, out
    for row in rows.values():
        for key in ("seconds", "ratio", "nll", "std", "gap"):
            assert math.isfinite(float(row[key])), (key, row.group(0))
        assert float(row["seconds"]) > 0
    assert float(rows["keras_gmm"]["ratio"]) == 1.0
    assert "floor H(Y|X)" in out and "targets:" in out
    assert output.is_file() and output.stat().st_size > 0
