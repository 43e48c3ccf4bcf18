"""Smoke test: examples/vade_digits.py runs end to end (a tiny training)."""

import math
import re

import pytest


@pytest.mark.script(["examples/vade_digits.py", "--smoke", "--output-dir", "{out}"])
def test_vade_digits_example_smoke(script_run):
    out = script_run.stdout
    for name in ("vade_digits_samples.png", "vade_digits_latent.png"):
        png = script_run.out / name
        assert png.is_file() and png.stat().st_size > 0
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert str(png) in out
    rows = {
        name.strip(): (float(acc), float(nmi))
        for name, acc, nmi in re.findall(
            r"^(VaDE \(GMMPriorSampling\)|k-means, raw pixels|GMM \(\w+\), PCA \d+)"
            r"\s+(\S+)\s+(\S+)$", out, re.MULTILINE,
        )
    }
    assert set(rows) == {
        "VaDE (GMMPriorSampling)", "k-means, raw pixels", "GMM (diag), PCA 10",
        "GMM (full), PCA 30",
    }, out
    for acc, nmi in rows.values():
        assert 0.0 < acc <= 1.0 and 0.0 <= nmi <= 1.0 and math.isfinite(nmi)
    # Even a 5-epoch VaDE clusters far better than chance (0.1).
    assert rows["VaDE (GMMPriorSampling)"][0] > 0.3, out
    largest = re.search(r"largest cluster: (\S+) of the images", out)
    assert largest and 0.1 <= float(largest.group(1)) <= 1.0, out
