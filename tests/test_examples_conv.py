"""Smoke tests: examples/gmm_conv_digits.py and benchmarks/conv.py run end to end."""

import json
import math
import re

import pytest


@pytest.mark.script(["examples/gmm_conv_digits.py", "--smoke", "--output-dir", "{out}"])
def test_gmm_conv_digits_example_smoke(script_run):
    out = script_run.stdout
    png = script_run.out / "gmm_conv_digits.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(png) in out
    rows = {
        m[0]: (float(m[1]), int(m[2]))
        for m in re.findall(
            r"^(GMMConv2D|Conv2D)\s+CNN: test accuracy (\S+), .*convolutions (\d+),",
            out, re.MULTILINE,
        )
    }
    assert set(rows) == {"GMMConv2D", "Conv2D"}, out
    for accuracy, _ in rows.values():
        assert 0.0 <= accuracy <= 1.0
    # The recipe's 5x5 CNN: 8 shared bumps per layer against 25 taps per pair.
    assert rows["GMMConv2D"][1] == 16800 and rows["Conv2D"][1] == 52096
    assert re.search(r"3\.10x fewer convolution parameters", out), out


ROW = re.compile(
    r"^(?P<k>[57]x[57])\s+(?P<jit>True|False)\s+(?P<pass>forward|fwd\+bwd)\s+"
    r"(?P<method>\S+)\s+(?P<params>\d+)\s+(?P<seconds>\S+)\s+(?P<ratio>\S+)$",
    re.MULTILINE,
)


@pytest.mark.script(["-m", "benchmarks.conv", "--quick", "--output", "{out}/conv.json"])
def test_conv_benchmark_quick(script_run):
    output = script_run.out / "conv.json"
    out = script_run.stdout
    rows = list(ROW.finditer(out))
    methods = {"Conv2D", "GMMConv2D", "GMMConv2D-full-pair"}
    cells = {(m["k"], m["jit"], m["pass"]) for m in rows}
    assert cells == {
        (k, jit, p) for k in ("5x5", "7x7") for jit in ("True", "False")
        for p in ("forward", "fwd+bwd")
    }, out
    assert len(rows) == 3 * len(cells) and {m["method"] for m in rows} == methods
    for m in rows:
        assert float(m["seconds"]) > 0 and math.isfinite(float(m["ratio"]))
        if m["method"] == "Conv2D":
            assert float(m["ratio"]) == 1.0
    assert "targets:" in out and len(re.findall(r"GMMConv2D / Conv2D = ", out)) == 4
    result = json.loads(output.read_text())
    assert result["quick"] and len(result["results"]) == len(cells)
    for cell in result["results"]:
        assert cell["parameters"]["GMMConv2D"] < cell["parameters"]["Conv2D"]
