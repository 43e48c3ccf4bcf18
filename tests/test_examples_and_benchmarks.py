"""Smoke tests: the example scripts and the MDN and EM benchmarks run end to end."""

import json
import math
import re

import pytest

from tests.script_utils import run_script as _run

ROW = re.compile(
    r"^(?P<method>keras_gmm|plain_tfp|keras-mdn-layer)\s+"
    r"(?P<seconds>\S+)\s+(?P<ratio>\S+)\s+(?P<nll>\S+) ± (?P<std>\S+)\s+(?P<gap>\S+)",
    re.MULTILINE,
)


def _keras_mdn_layer_installed():
    try:
        import keras_mdn_layer  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.script(
    ["examples/mdn_inverse_sine.py", "--smoke", "--output-dir", "{out}"])
def test_mdn_inverse_sine_example_smoke(script_run):
    out, tmp_path = script_run.stdout, script_run.out
    png = tmp_path / "mdn_inverse_sine.png"
    assert png.is_file() and png.stat().st_size > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(png) in out
    nll = re.search(r"test NLL: (\S+) nats", out)
    assert nll and math.isfinite(float(nll.group(1))), out


@pytest.mark.script(["examples/em_clustering.py", "--smoke", "--output-dir", "{out}"])
def test_em_clustering_example_smoke(script_run):
    out, tmp_path = script_run.stdout, script_run.out
    for name in ("em_clustering_ellipses.png", "em_clustering_bic.png"):
        png = tmp_path / name
        assert png.is_file() and png.stat().st_size > 0
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert str(png) in out
    # BIC of every K = 1..8, ours and scikit-learn's, all finite.
    rows = re.findall(r"^([1-8])\s+(\S+) /\s*(\S+)$", out, re.MULTILINE)
    assert [int(k) for k, _, _ in rows] == list(range(1, 9)), out
    assert all(math.isfinite(float(a)) and math.isfinite(float(b)) for _, a, b in rows)
    chosen = re.search(r"chosen K: (\d+) \(covariance_type='full'", out)
    assert chosen and 1 <= int(chosen.group(1)) <= 8, out
    accuracy = re.search(r"accuracy (\S+), NMI (\S+)", out)
    assert accuracy and 0.0 <= float(accuracy.group(1)) <= 1.0, out


@pytest.mark.script(["-m", "benchmarks.mdn", "--quick", "--output", "{out}/mdn.json"])
def test_mdn_benchmark_quick(script_run):
    output = script_run.out / "mdn.json"
    out = script_run.stdout
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


EM_ROW = re.compile(
    r"^(?P<case>full|diag)\s+(?P<method>sklearn|keras_gmm)\s+"
    r"(?P<s_iter>\S+)\s+(?P<marginal>\S+)\s+(?P<first>\S+)\s+(?P<median>\S+)\s+"
    r"(?P<rss>\S+)\s+(?P<gflops>\S+)\s+(?P<bound>\S+)$",
    re.MULTILINE,
)
EM_RATIOS = re.compile(
    r"^(?P<case>full|diag)\s+ratios\s+sklearn/ours s/iter (?P<ratio>\S+).*"
    r"lower bound rel diff (?P<rel>\S+)$",
    re.MULTILINE,
)


def _check_em_output(out, output, cases):
    em_cases = [c for c in ("full", "diag") if c in cases]
    rows = {(m["case"], m["method"]): m for m in EM_ROW.finditer(out)}
    assert set(rows) == {
        (case, method) for case in em_cases for method in ("sklearn", "keras_gmm")
    }, out
    for row in rows.values():
        for key in ("s_iter", "marginal", "first", "median", "rss", "bound"):
            assert math.isfinite(float(row[key])), (key, row.group(0))
        assert float(row["s_iter"]) > 0 and float(row["first"]) > 0
    ratios = {m["case"]: m for m in EM_RATIOS.finditer(out)}
    assert set(ratios) == set(em_cases), out
    for m in ratios.values():
        assert float(m["ratio"]) > 0
        assert float(m["rel"]) <= 1e-4  # --check would have failed otherwise
    if "init" in cases:
        assert re.search(r"^init .* ratio sklearn/ours \S+;", out, re.MULTILINE), out
    if "stream" in cases:
        assert re.search(
            r"^stream 500,000 rows x 2 iterations: .* peak RSS \d+ MiB", out,
            re.MULTILINE,
        ), out
    assert "targets:" in out
    result = json.loads(output.read_text())
    assert result["complete"] and set(result["results"]) == set(cases)


@pytest.mark.script(
    ["-m", "benchmarks.em", "--quick", "--case", "full", "--case", "init",
     "--repeats", "1", "--max-iter", "3", "--check", "--output", "{out}/em.json"]
)
def test_em_benchmark_quick_full_case(script_run):
    # The default suite's smoke run: one EM case and the init case, small.
    output = script_run.out / "em.json"
    out = script_run.stdout
    _check_em_output(out, output, {"full", "init"})


# The whole --quick run (all four cases) took 64 s on 2 quiet cores (96 s busy),
# over the 60 s budget of the default suite, so it is opt-in.
@pytest.mark.slow
def test_em_benchmark_quick(tmp_path):
    output = tmp_path / "em.json"
    out = _run(
        ["-m", "benchmarks.em", "--quick", "--repeats", "1", "--check",
         "--output", str(output)]
    )
    _check_em_output(out, output, {"stream", "init", "full", "diag"})
