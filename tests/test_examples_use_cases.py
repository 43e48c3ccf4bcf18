"""Smoke tests: the anomaly-detection, probabilistic-regression and
GMM-on-embeddings examples run end to end (``--smoke``), and the README lists
every example."""

import math
import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_png(path, out):
    assert path.is_file() and path.read_bytes()[:8] == PNG_MAGIC
    assert str(path) in out


def _table(out, title):
    """``{method: (auroc, f1)}`` of the table printed under ``title``."""
    block = out.split(title, 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^(\S.*?)\s+([0-9.]+)\s+([0-9.]+)$", block, re.MULTILINE)
    return {name: (float(a), float(f)) for name, a, f in rows if name != "method"}


@pytest.mark.script(
    ["examples/anomaly_detection.py", "--smoke", "--output-dir", "{out}"])
def test_anomaly_detection_example_smoke(script_run):
    out = script_run.stdout
    _check_png(script_run.out / "anomaly_detection.png", out)
    breast = _table(out, "breast cancer, test split")
    assert {"keras_gmm DAGMM", "untrained control", "GaussianMixture(1)",
            "GaussianMixture(2)", "IsolationForest", "OneClassSVM"} == set(breast)
    assert all(0.0 <= a <= 1.0 and 0.0 <= f <= 1.0 for a, f in breast.values())
    # The zoo model as recorded: the trained network beats its untrained control.
    assert breast["keras_gmm DAGMM"][0] > breast["untrained control"][0]
    digits = _table(out, "digits, one class held out")
    assert set(digits) == set(breast)
    assert all(math.isfinite(a) for a, _ in digits.values())


@pytest.mark.script(["examples/probabilistic_regression.py", "--smoke",
                     "--output-dir", "{out}"])
def test_probabilistic_regression_example_smoke(script_run):
    out = script_run.stdout
    _check_png(script_run.out / "probabilistic_regression.png", out)
    nll = re.search(r"test NLL: (\S+) nats", out)
    assert nll and math.isfinite(float(nll.group(1))), out
    both = re.search(
        r"both solutions recovered: (\S+) of the (\d+) test positions", out
    )
    assert both and 0.0 <= float(both.group(1)) <= 1.0 and int(both.group(2)) > 0, out
    coverage = re.search(r"region coverage: (\S+)", out)
    assert coverage and 0.0 <= float(coverage.group(1)) <= 1.0, out
    assert len(re.findall(r"component weight \S+: t1 in \[", out)) == 6, out


@pytest.mark.script(
    ["examples/gmm_on_embeddings.py", "--smoke", "--output-dir", "{out}"])
def test_gmm_on_embeddings_example_smoke(script_run):
    out = script_run.stdout
    _check_png(script_run.out / "gmm_on_embeddings.png", out)
    accuracy = re.search(r"classifier test accuracy: (\S+)", out)
    assert accuracy and float(accuracy.group(1)) > 0.5, out
    clusters = re.search(r"\(test\): accuracy (\S+), NMI (\S+);", out)
    assert clusters and float(clusters.group(1)) > 0.3, out
    # One SavedModel returns both heads, equal to the Keras model's outputs.
    assert "SavedModel outputs: ['class_probabilities', 'responsibilities']" in out
    difference = re.search(r"largest difference from Keras: (\S+)", out)
    assert difference and float(difference.group(1)) < 1e-5, out


def test_readme_lists_every_example():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Examples", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`examples/([A-Za-z0-9_]+\.py)`", section))
    present = {p.name for p in (REPO_ROOT / "examples").glob("*.py")}
    assert listed == present, (sorted(listed), sorted(present))
