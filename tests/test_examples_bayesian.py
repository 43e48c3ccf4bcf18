"""Smoke test: the Bayesian K-selection example runs end to end (``--smoke``),
prints its effective K and writes its PNG."""

import re

import pytest

from tests.script_utils import PNG_MAGIC


@pytest.mark.script(["examples/bayesian_k_selection.py", "--smoke",
                     "--output-dir", "{out}"])
def test_bayesian_k_selection_example_smoke(script_run):
    out = script_run.stdout
    png = script_run.out / "bayesian_k_selection.png"
    assert png.is_file() and png.read_bytes()[:8] == PNG_MAGIC
    assert f"wrote {png}" in out
    k = int(re.search(r"^effective K: (\d+)$", out, re.MULTILINE).group(1))
    ours, theirs = map(int, re.search(
        r"effective K \(weight > 1%\): keras_gmm (\d+), scikit-learn (\d+)", out
    ).groups())
    # Ours picks the K scikit-learn picks on the same features, and the
    # Dirichlet-process prior empties components: of the upper bound of 15,
    # several keep a weight near 0 (measured: 9 kept, 6 at <= 0.001).
    assert k == ours and abs(ours - theirs) <= 1
    assert 3 <= k <= 12
    weights = [float(w) for w in
               re.search(r"keras_gmm +([0-9. ]+)\n", out).group(1).split()]
    assert len(weights) == 15
    assert abs(sum(weights) - 1.0) < 0.01
    assert sum(w < 0.01 for w in weights) == 15 - k
    assert sum(w <= 0.002 for w in weights) == 15 - k  # near 0, not just small
