"""The keras-gmm command: zoo list/info/evaluate/train, export, demo, errors."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import keras_gmm.zoo
from keras_gmm.cli import main

NAMES = keras_gmm.zoo.list_models()
NAME = "mdn_inverse_sine"
REPO_ROOT = Path(__file__).resolve().parents[1]


def _zoo_copy(tmp_path, monkeypatch):
    """Point the zoo at a copy of its files (KERAS_GMM_ZOO_DIR) and return it."""
    root = tmp_path / "zoo"
    for name in NAMES:
        shutil.copytree(keras_gmm.zoo.model_dir(name), root / name)
    monkeypatch.setenv(keras_gmm.zoo.ZOO_DIR_ENV, str(root))
    return root


def test_help(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("demo", "zoo", "export"):
        assert command in out


def test_zoo_list(capsys):
    assert main(["zoo", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == NAMES


def test_zoo_info(capsys):
    assert main(["zoo", "info", NAME]) == 0
    out = capsys.readouterr().out
    meta = keras_gmm.zoo.info(NAME)
    assert meta["sha256"] in out
    assert meta["train_command"] in out
    assert "nll_per_sample" in out and "floor" in out

    assert main(["zoo", "info", NAME, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == meta


def test_zoo_evaluate(capsys):
    assert main(["zoo", "evaluate", NAME]) == 0
    out = capsys.readouterr().out
    recorded = keras_gmm.zoo.recorded_metrics(NAME)["nll_per_sample"]
    row = next(line for line in out.splitlines() if line.startswith(NAME))
    assert "nll_per_sample" in row and row.rstrip().endswith("ok")
    assert f"{recorded:.5f}" in row


@pytest.mark.parametrize(
    "argv",
    [
        ["zoo", "info", "nope"],
        ["zoo", "evaluate", "nope"],
        ["zoo", "train", "nope", "--epochs", "1"],
        ["export", "nope", "unused_dir"],
    ],
    ids=["info", "evaluate", "train", "export"],
)
def test_unknown_name_exits_2_listing_known_models(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "'nope'" in captured.err
    for name in NAMES:
        assert name in captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert not any(tmp_path.iterdir())  # nothing written


def test_bad_arguments_exit_2(capsys):
    assert main(["zoo", "train", NAME, "--epochs", "0"]) == 2
    assert "positive integer" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2


def test_tampered_file_exits_2_with_message(tmp_path, monkeypatch, capsys):
    root = _zoo_copy(tmp_path, monkeypatch)
    path = root / NAME / "model.keras"
    path.write_bytes(path.read_bytes()[:-10])
    assert main(["zoo", "evaluate", NAME]) == 2
    err = capsys.readouterr().err
    assert "Checksum mismatch" in err and str(path) in err
    assert "Traceback" not in err


def test_export_writes_version_dir(tmp_path, capsys):
    export_dir = tmp_path / "export"
    assert main(["export", NAME, str(export_dir), "--version", "3"]) == 0
    assert (export_dir / "3" / "saved_model.pb").is_file()
    assert str(export_dir / "3") in capsys.readouterr().out
    serving = tf.saved_model.load(str(export_dir / "3")).signatures["serving_default"]
    x = keras_gmm.zoo.example_inputs(NAME, 4)
    (output,) = serving(
        **{next(iter(serving.structured_input_signature[1])): tf.constant(x)}
    ).values()
    expected = keras_gmm.zoo.load(NAME).predict(x, verbose=0)
    np.testing.assert_allclose(output.numpy(), expected, rtol=1e-5, atol=1e-5)

    # An existing version is not replaced silently.
    assert main(["export", NAME, str(export_dir), "--version", "3"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err
    assert main(["export", NAME, str(export_dir), "--version", "3", "--overwrite"]) == 0


def test_demo_passes(capsys):
    start = time.perf_counter()
    assert main(["demo"]) == 0
    seconds = time.perf_counter() - start
    out = capsys.readouterr().out
    for name in NAMES:
        assert f"{name}: export check ok" in out
        row = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert row.rstrip().endswith("ok")
    assert "FAILED" not in out
    assert seconds < 60, seconds


def test_demo_fails_when_a_metric_does_not_reproduce(tmp_path, monkeypatch, capsys):
    root = _zoo_copy(tmp_path, monkeypatch)
    meta_path = root / NAME / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["metrics"]["nll_per_sample"]["value"] -= 0.1  # a claim the file can't meet
    meta_path.write_text(json.dumps(meta))
    assert main(["demo"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and f"{NAME}: nll_per_sample not reproduced" in out


def test_train_tiny(tmp_path, capsys):
    out_dir = tmp_path / NAME
    argv = [
        "zoo",
        "train",
        NAME,
        "--output-dir",
        str(out_dir),
        "--epochs",
        "1",
        "--seed",
        "5",
        "--quiet",
    ]
    assert main(argv) == 0
    meta = json.loads((out_dir / "metadata.json").read_text())
    assert meta["training"]["epochs"] == 1 and meta["training"]["seed"] == 5
    assert meta["sha256"] in capsys.readouterr().out
    assert keras_gmm.zoo.verify(NAME, root=tmp_path) == out_dir / "model.keras"


def test_module_entry_point_reports_errors_without_traceback():
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-m", "keras_gmm.cli", "zoo", "info", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 2
    assert "unknown zoo model 'nope'" in result.stderr.lower()
    assert "Traceback" not in result.stderr
