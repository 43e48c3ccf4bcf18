"""Smoke test: examples/soft_weight_sharing.py runs end to end."""

import math
import re

from tests.script_utils import run_script as _run


def test_soft_weight_sharing_example_smoke(tmp_path):
    out = _run(
        ["examples/soft_weight_sharing.py", "--smoke", "--output-dir", str(tmp_path)]
    )
    png = tmp_path / "soft_weight_sharing.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(png) in out
    accuracy = re.search(
        r"trained normally (\S+), retrained with the prior (\S+), quantized (\S+)", out
    )
    assert accuracy, out
    assert all(0.0 <= float(a.rstrip(",")) <= 1.0 for a in accuracy.groups())
    nonzero = re.search(r"non-zero weights: (\d+) of (\d+)", out)
    assert nonzero and int(nonzero.group(2)) == 50610, out
    ratio = re.search(r"compression ratio vs float32: (\S+)x", out)
    assert ratio and math.isfinite(float(ratio.group(1))) and float(ratio.group(1)) >= 1
    assert "learned prior (mean, sd, weight):" in out
