"""Zoo model dagmm_breast_cancer and its recipe: DAGMM-style anomaly detection.

(The generic zoo checks, loading, recorded metrics reproduced and the
serving_default export, run for it in tests/zoo/test_zoo.py.)
"""

import numpy as np
import pytest

import keras_gmm
import keras_gmm.zoo
from keras_gmm import datasets
from keras_gmm.metrics import roc_auc_score
from keras_gmm.zoo import dagmm_breast_cancer as recipe

NAME = "dagmm_breast_cancer"


@pytest.fixture(scope="module")
def model():
    return keras_gmm.zoo.load(NAME)


def planted_outliers(seed=0, n_train=1000, n_inliers=200, n_outliers=50, d=8):
    """Inliers near a 2-d curved surface in ``d`` dims (``tanh`` of a random
    linear map of a uniform 2-d latent, plus noise 0.02); outliers are
    inliers with each coordinate shuffled across rows: the same marginals,
    off the surface. Standardised with the training statistics."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(2, d)) * 1.5
    b = rng.normal(size=d) * 0.5

    def inliers(n):
        t = rng.uniform(-1, 1, size=(n, 2))
        return np.tanh(t @ a + b) + 0.02 * rng.normal(size=(n, d))

    x_train = inliers(n_train)
    pool = inliers(n_outliers)
    outliers = np.stack([rng.permutation(pool[:, j]) for j in range(d)], axis=1)
    x_test = np.concatenate([inliers(n_inliers), outliers])
    y_test = np.r_[np.zeros(n_inliers, int), np.ones(n_outliers, int)]
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    return (
        ((x_train - mean) / std).astype("float32"),
        ((x_test - mean) / std).astype("float32"),
        y_test,
    )


def test_short_training_ranks_planted_outliers_above_inliers():
    x_train, x_test, y_test = planted_outliers()
    trained, history = recipe.train_dagmm(x_train, epochs=30, seed=0, batch_size=128)
    assert np.all(np.isfinite(history.history["loss"]))
    auroc = roc_auc_score(y_test, recipe.anomaly_scores(trained, x_test))
    # The untrained control (random weights, only the mixture fitted) varies
    # with its initialisation: its mean over three is compared.
    untrained = [
        roc_auc_score(
            y_test,
            recipe.anomaly_scores(recipe.train_dagmm(x_train, 0, seed=s)[0], x_test),
        )
        for s in range(3)
    ]
    assert auroc >= 0.95, auroc
    # Training, not the architecture alone, ranks the outliers.
    assert np.mean(untrained) < 0.95, untrained
    assert auroc > untrained[0]  # the same initialisation, trained and not


def test_recorded_metrics_and_baselines(model):
    meta = keras_gmm.zoo.info(NAME)
    recorded = keras_gmm.zoo.recorded_metrics(NAME)
    assert set(recorded) == {"auroc", "f1_at_contamination", "f1_at_threshold"}
    rows = keras_gmm.zoo.check_metrics(NAME, keras_gmm.zoo.evaluate(NAME, model))
    assert all(row["ok"] for row in rows), rows
    comparison = meta["training"]["comparison"]
    assert comparison["split"] == "test" and len(comparison["seeds"]) == 3
    methods = [k for k in comparison if k not in ("split", "seeds", "note")]
    for needle in ("this recipe", "untrained control", "GaussianMixture(1,",
                   "GaussianMixture(2,", "IsolationForest", "OneClassSVM"):
        assert sum(needle in m for m in methods) == 1, (needle, methods)
    ours = comparison[recipe.OURS_KEY]
    seed = str(meta["training"]["selected_seed"])
    # The kept seed is the candidate with the best validation AUROC.
    val_auroc = meta["training"]["validation_auroc_per_seed"]
    assert seed == max(val_auroc, key=val_auroc.get)
    assert sorted(val_auroc) == sorted(str(s) for s in comparison["seeds"])
    for key, value in recorded.items():
        assert ours[key]["per_seed"][seed] == pytest.approx(value, abs=1e-12)
    # The training matters: the recorded model beats its untrained control.
    control = next(v for k, v in comparison.items() if "untrained" in k)
    assert recorded["auroc"] > control["auroc"]["per_seed"][seed] + 0.02
    reference = meta["metrics"]["auroc"]["reference"]
    best = max(v["auroc"]["per_seed"][seed] for k, v in comparison.items()
               if k.startswith("sklearn"))
    assert reference["value"] == pytest.approx(best, abs=1e-12)


def test_structure_threshold_and_predict(model):
    layer = model.get_layer("energy")
    assert isinstance(layer, keras_gmm.GMMEnergy)
    assert layer.covariance_type == "full" and layer.num_components == 2
    meta = keras_gmm.zoo.info(NAME)
    threshold = float(layer.threshold.numpy())
    assert threshold == pytest.approx(meta["training"]["threshold"], abs=1e-9)
    # The threshold is the val split's contamination threshold.
    x_val, y_val = datasets.load_breast_cancer("val")
    val_scores = recipe.anomaly_scores(model, x_val)
    assert np.sum(val_scores > threshold) == round(np.mean(y_val) * len(y_val))
    # The inference mixture is the train split's M-step (fit_mixture).
    weights = layer.weights_
    assert weights.shape == (2,) and weights.sum() == pytest.approx(1.0, abs=1e-5)


def test_scores_finite_for_extreme_inputs(model):
    x = np.concatenate(
        [
            np.zeros((1, 30)),
            np.full((1, 30), 1e6),
            np.full((1, 30), -1e6),
            np.where(np.arange(30) % 2, 1e6, -1e6)[None],
        ]
    ).astype("float32")
    scores = recipe.anomaly_scores(model, x)
    assert np.all(np.isfinite(scores)), scores
    typical = recipe.anomaly_scores(model, datasets.load_breast_cancer("train")[0])
    assert np.all(scores[1:] > typical.max())


def test_export_endpoints_without_keras_gmm(model, tmp_path):
    from tests.export_utils import run_tf_only

    x = keras_gmm.zoo.example_inputs(NAME, 8)
    path = keras_gmm.export_saved_model(model, tmp_path / "export")
    default, score, predict = run_tf_only(
        [(path, name, {"x": x}) for name in ("serving_default", "score", "predict")]
    )
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(score["score"], expected, rtol=1e-5, atol=1e-4)
    (served,) = default.values()
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-4)
    threshold = float(model.get_layer("energy").threshold.numpy())
    np.testing.assert_array_equal(predict["is_anomaly"], expected > threshold)


def test_train_tiny_writes_loadable_model(tmp_path):
    out = tmp_path / NAME
    meta = keras_gmm.zoo.train(NAME, output_dir=out, epochs=2, seed=1, candidates=1,
                               baselines=False)
    assert meta["training"]["epochs"] == 2 and meta["training"]["seed"] == 1
    card = keras_gmm.zoo.info(NAME)
    assert meta["training"]["selection"] == card["training"]["selection"]
    loaded = keras_gmm.zoo.load(NAME, root=tmp_path, sha256=meta["sha256"])
    measured = keras_gmm.zoo.evaluate(NAME, loaded)
    rows = keras_gmm.zoo.check_metrics(NAME, measured, root=tmp_path)
    assert all(row["ok"] for row in rows), rows


def test_train_rejects_bad_options(tmp_path):
    for options, match in (({"epochs": 0}, "epochs"), ({"seed": "0"}, "seed"),
                           ({"candidates": 0}, "candidates")):
        with pytest.raises(ValueError, match=match):
            keras_gmm.zoo.train(NAME, output_dir=tmp_path, **options)
    assert not any(tmp_path.iterdir())
