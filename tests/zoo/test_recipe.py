"""keras_gmm.zoo._recipe: the helpers the recipes share, written once."""

import json

import keras
import numpy as np
import pytest

import keras_gmm
from keras_gmm.zoo import _files, _recipe


def test_seed_summary():
    summary = _recipe.seed_summary(
        {0: {"acc": 0.5, "nmi": 0.1}, 1: {"acc": 0.7, "nmi": 0.3}},
        ("acc", "nmi", "absent"))
    assert set(summary) == {"acc", "nmi"}
    assert summary["acc"]["mean"] == pytest.approx(0.6)
    assert summary["acc"]["std"] == pytest.approx(0.1)
    assert summary["nmi"]["per_seed"] == {"0": 0.1, "1": 0.3}


def test_find_layer():
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1, name="last")(
        keras.layers.Dense(3)(inputs)))
    assert _recipe.find_layer(model, keras.layers.Dense).name == "last"
    with pytest.raises(ValueError, match="has no GMMEnergy layer"):
        _recipe.find_layer(model, keras_gmm.GMMEnergy)


def test_name_clusters_renumbers_components_after_the_classes():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])
    y = np.repeat(np.arange(3), 50)
    x = (centres[y] + rng.normal(size=(150, 2))).astype("float32")
    gmm = keras_gmm.GaussianMixtureEM(3, seed=1)
    gmm.fit(x, verbose=0)
    before = gmm.predict(x)
    log_likelihood = gmm.score(x)
    order = _recipe.name_clusters(gmm, before, y)
    assert sorted(order) == [0, 1, 2]
    after = gmm.predict(x)
    np.testing.assert_array_equal(after, np.argsort(order)[before])  # a relabelling
    assert np.mean(after == y) > 0.95
    assert gmm.score(x) == pytest.approx(log_likelihood, rel=1e-6)


CARD = {
    "name": "mdn_inverse_sine",
    "description": "a card",
    "architecture": "Dense",
    "dataset": {"function": "f"},
    "metrics": {
        "nll": {"value": 1.0, "unit": "nats", "tolerance": 0.1,
                "reference": {"name": "floor", "value": -1.0, "source": "exact"}},
        "acc": {"value": 0.5, "tolerance": 0.1,
                "reference": {"name": "baseline", "value": 0.4, "source": "seed 0"}},
    },
    "training": {"seed": 0, "epochs": 9, "loss": "prose", "selection": {"tried": [1]},
                 "comparison": {"stale": 1}, "seconds": 3.0},
    "model_file": "model.keras",
    "sha256": "0" * 64,
    "loading": "how it loads",
    "notes": ["a note"],
}


def test_save_writes_the_card_with_this_run(tmp_path):
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    record = {"metrics": {"nll": {"value": 0.25, "gap": 1.25},
                          "acc": {"value": 0.75, "reference": {"value": 0.5,
                                                               "source": "seed 1"}}},
              "training": {"seed": 1, "epochs": 2, "seconds": 0.5}}
    meta = _recipe.save(model, tmp_path / "out", CARD, record)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["metadata.json", "model.keras"]
    assert json.loads((out / "metadata.json").read_text()) == meta
    assert meta["sha256"] == _files.sha256_file(out / "model.keras")
    for key in ("description", "architecture", "dataset", "loading", "notes"):
        assert meta[key] == CARD[key]
    nll, acc = meta["metrics"]["nll"], meta["metrics"]["acc"]
    assert (nll["value"], nll["unit"], nll["tolerance"], nll["gap"]) == (
        0.25, "nats", 0.1, 1.25)
    assert nll["reference"] == CARD["metrics"]["nll"]["reference"]  # not measured: kept
    assert acc["reference"] == {"name": "baseline", "value": 0.5, "source": "seed 1"}
    # Prose and the selection come from the card; figures only from this run.
    assert meta["training"] == {"seed": 1, "epochs": 2, "seconds": 0.5, "loss": "prose",
                                "selection": {"tried": [1]}}
    assert "--epochs 2 --seed 1" in meta["train_command"]
    assert meta["saved_compiled"] is False
    assert set(meta["library_versions"]) >= {"tensorflow", "keras", "keras_gmm"}
    loaded = _recipe.load_model(out / "model.keras")
    np.testing.assert_allclose(loaded.get_weights()[0], model.get_weights()[0])


def test_save_refuses_metrics_the_card_does_not_define(tmp_path):
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    record = {"metrics": {"nll": 0.25}, "training": {"seed": 1, "epochs": 2}}
    with pytest.raises(RuntimeError, match="measured"):
        _recipe.save(model, tmp_path / "out", CARD, record)
    assert not (tmp_path / "out").exists()
