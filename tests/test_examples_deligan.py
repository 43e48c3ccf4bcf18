"""Smoke test: examples/deligan_mnist.py (a GAN with a learnable Gaussian-
mixture latent, DeLiGAN-style) runs end to end with ``--smoke``, learns the
mixture's means and scales, prints finite per-component stats and writes its
PNG (one row per component)."""

import math
import re
import struct

import pytest

from tests.script_utils import PNG_MAGIC

COMPONENTS = 10  # the example's default K


def _png_size(path):
    """``(width, height)`` from the PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.script(["examples/deligan_mnist.py", "--smoke", "--output-dir", "{out}"])
def test_deligan_mnist_example_smoke(script_run):
    out = script_run.stdout
    png = script_run.out / "deligan_mnist.png"
    wrote = re.search(
        r"^wrote (\S+) \((\d+) x (\d+) px: (\d+) rows x (\d+) samples\)$", out,
        re.MULTILINE)
    assert wrote, out
    assert wrote.group(1) == str(png) and png.is_file()
    width, height, n_rows, per_row = map(int, wrote.groups()[1:])
    assert n_rows == COMPONENTS and per_row >= 1
    # The PNG is as large as the script says, and taller with more rows:
    # a grid of 0.5-inch cells at 100 dpi plus the margins.
    assert _png_size(png) == (width, height)
    assert width > 50 * per_row and height > 50 * n_rows
    assert png.stat().st_size > 20_000  # not a blank canvas

    rows = re.findall(
        r"^ +(\d+) +(\S+) +(\S+) +(\S+) +(\S+) +(\d) +(\S+) +(\S+) +(\S+) +(\S+)$",
        out,
        re.MULTILINE)
    assert [int(r[0]) for r in rows] == list(range(COMPONENTS)), out
    stats = [[float(v) for v in r[1:]] for r in rows]
    for weight, sigma_init, sigma, shift, digit, share, conf, pixel, spread in stats:
        assert all(math.isfinite(v) for v in (weight, sigma_init, sigma, shift,
                                               share, conf, pixel, spread))
        assert 0 <= digit <= 9 and 0.1 <= share <= 1.0
        assert 0.1 <= conf <= 1.0 and 0.0 < pixel < 1.0 and 0.0 <= spread < 0.5
        # DeLiGAN's start (sigma 0.2) and then learned: the generator loss
        # and the sigma penalty move every component's mean and scale.
        assert sigma_init == 0.2
        assert abs(sigma - sigma_init) >= 1e-4 and shift >= 1e-3
    # Uniform weights, as in DeLiGAN: the discrete component draw gives the
    # logits no gradient, so they stay where they started.
    assert all(s[0] == 0.1 for s in stats)
    accuracy = float(re.search(r"held-out accuracy (\S+) on", out).group(1))
    assert accuracy > 0.6, out  # the quality proxy itself is a real classifier
    covered = int(re.search(r"digits generated .*: (\d+) of 10", out).group(1))
    shares = re.search(r"digit shares of all samples: (.*)$", out, re.MULTILINE)
    values = [float(p.split(":")[1]) for p in shares.group(1).split()]
    assert len(values) == 10 and abs(sum(values) - 1.0) < 0.005
    assert covered == sum(v >= 0.02 for v in values) >= 1
