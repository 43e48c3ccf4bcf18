"""Smoke test: examples/soft_weight_sharing.py runs end to end."""

import math
import re

import pytest


@pytest.mark.script(["examples/soft_weight_sharing.py", "--smoke", "--output-dir", "{out}"])
def test_soft_weight_sharing_example_smoke(script_run):
    out = script_run.stdout
    png = script_run.out / "soft_weight_sharing.png"
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
