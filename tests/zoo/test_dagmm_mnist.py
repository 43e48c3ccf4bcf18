"""Zoo model dagmm_mnist and its recipe: ten one-class DAGMM detectors on MNIST.

(The generic zoo checks, loading, recorded metrics reproduced and the
serving_default export, run for it in tests/zoo/test_zoo.py.)
"""

import keras
import numpy as np
import pytest

import keras_gmm
import keras_gmm.zoo
from keras_gmm import datasets
from keras_gmm.metrics import roc_auc_score
from keras_gmm.zoo import dagmm_mnist as recipe

NAME = "dagmm_mnist"


@pytest.fixture(scope="module")
def model():
    """The shipped zoo model (checksum verified), loaded once."""
    return keras_gmm.zoo.load(NAME)


def test_shipped_file_and_structure(model):
    path = keras_gmm.zoo.model_dir(NAME) / "model.keras"
    assert path.stat().st_size <= 10 * 2**20  # the limit
    assert not model.compiled  # scoring only: no optimizer state in the file
    detectors = recipe.detectors_of(model)
    assert len(detectors) == 10
    for detector in detectors:
        layer = detector.get_layer("energy")
        assert isinstance(layer, keras_gmm.GMMEnergy)
        assert layer.covariance_type == "full"
        assert (layer.num_components, layer.event_size) == (4, recipe.CODE_DIM + 1)
        assert layer.weights_.sum() == pytest.approx(1.0, abs=1e-5)
    x = keras_gmm.zoo.example_inputs(NAME, 20)
    energies = recipe.anomaly_scores(model, x)
    assert energies.shape == (20, 10) and np.all(np.isfinite(energies))
    # Column d is detector d's energy.
    np.testing.assert_allclose(
        energies[:, 3], np.asarray(detectors[3](x, training=False)), rtol=1e-5, atol=1e-4)


def test_each_detector_scores_its_digit_lowest(model):
    x_test, y_test = datasets.load_mnist("test")
    energies = recipe.anomaly_scores(model, x_test)
    # Per digit, the median energy of its own test images under its own
    # detector is below that of every other digit's images.
    for d in range(10):
        medians = [np.median(energies[y_test == c, d]) for c in range(10)]
        assert int(np.argmin(medians)) == d, (d, medians)
    # The lowest energy of a row names its digit far better than chance.
    assert np.mean(energies.argmin(axis=1) == y_test) > 0.5


def test_recorded_metrics_baselines_controls_and_spread(model):
    meta = keras_gmm.zoo.info(NAME)
    recorded = keras_gmm.zoo.recorded_metrics(NAME)
    assert set(recorded) == set(recipe.METRIC_KEYS)
    assert recorded["mean_auroc"] == pytest.approx(
        np.mean([recorded[key] for key in recipe.TASK_KEYS]), abs=1e-12)
    training = meta["training"]
    comparison = training["comparison"]
    seed = str(training["seed"])
    assert comparison["split"] == "test" and len(comparison["seeds"]) == 3
    methods = [k for k in comparison if k not in ("split", "seeds")]
    for needle in ("this recipe", "untrained control", "PCA-initialised control",
                   "OneClassSVM() on pixels", "IsolationForest() on pixels",
                   "GaussianMixture(4, 'full') on PCA(64)",
                   "OneClassSVM() on PCA(64)"):
        assert sum(needle in m for m in methods) == 1, (needle, methods)
    ours = comparison[recipe.OURS_KEY]
    for key, value in recorded.items():
        assert ours[key]["per_seed"][seed] == pytest.approx(value, abs=1e-12)
    spread = training["mean_auroc_spread"]
    assert spread == ours["mean_auroc"] and len(spread["per_seed"]) == 3
    assert spread["std"] == pytest.approx(np.std(list(spread["per_seed"].values())))
    # The per-digit table holds every method's ten AUROCs (means over seeds).
    table = training["per_digit_table"]
    assert set(table) == set(methods)
    for name, row in table.items():
        assert row["mean_auroc"] == pytest.approx(comparison[name]["mean_auroc"]["mean"])
        assert set(row) == set(recipe.METRIC_KEYS)
    # The reference is the best scikit-learn baseline of the same seed, and
    # "met" says whether the target is reached.
    reference = meta["metrics"]["mean_auroc"]["reference"]
    best = max(v["mean_auroc"]["per_seed"][seed] for k, v in comparison.items()
               if k.startswith("sklearn"))
    assert reference["value"] == pytest.approx(best, abs=1e-12)
    assert reference["met"] == (recorded["mean_auroc"] >= best)
    # The detectors beat their random-weight control on every seed.
    control = comparison[recipe.CONTROL_KEY]["mean_auroc"]["per_seed"]
    for run_seed, value in ours["mean_auroc"]["per_seed"].items():
        assert value > control[run_seed], (run_seed, value, control)


def test_short_training_of_one_detector():
    x_train, y_train = datasets.load_mnist("train_fit")
    x_val, y_val = datasets.load_mnist("val")
    normal = x_train[y_train == 7][:160]
    trained, history = recipe.train_detector(normal, 7, epochs=2, seed=0)
    assert np.all(np.isfinite(history.history["loss"]))
    auroc = roc_auc_score((y_val != 7).astype(int),
                          recipe.anomaly_scores(trained, x_val))
    assert auroc > 0.85, auroc
    # The PCA initialisation starts from the PCA reconstruction: on the
    # normal images the untrained detector's reconstruction error is small.
    untrained = recipe.build_detector(normal, 7, seed=0)
    x_hat = keras.Model(untrained.input, untrained.get_layer("reconstruction").output)
    error = np.mean((np.asarray(x_hat(normal)) - normal) ** 2)
    assert error < 0.5 * np.mean((normal - normal.mean(axis=0)) ** 2)


def test_combined_copies_are_uncompiled_and_round_trip(tmp_path):
    x_train, y_train = datasets.load_mnist("train_fit")
    detectors = [recipe.train_detector(x_train[y_train == d][:80], d, epochs=1)[0]
                 for d in (0, 1)]
    combined = recipe.combine(detectors)
    x = x_train[:16]
    energies = recipe.anomaly_scores(combined, x)
    assert energies.shape == (16, 2)
    for d, detector in enumerate(detectors):
        np.testing.assert_allclose(energies[:, d], recipe.anomaly_scores(detector, x),
                                   rtol=1e-5, atol=1e-4)
    path = tmp_path / "combined.keras"
    combined.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(recipe.anomaly_scores(loaded, x), energies,
                               rtol=1e-6, atol=1e-6)


def test_train_rejects_bad_options(tmp_path):
    for options, match in (({"epochs": 0}, "epochs"), ({"seed": "0"}, "seed"),
                           ({"seeds": 0}, "seeds")):
        with pytest.raises(ValueError, match=match):
            keras_gmm.zoo.train(NAME, output_dir=tmp_path, **options)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_train_tiny_writes_loadable_model(tmp_path):
    # Ten detectors even for one epoch: minutes on a busy 2-core machine.
    out = tmp_path / NAME
    meta = keras_gmm.zoo.train(NAME, output_dir=out, epochs=1, seed=1, seeds=1,
                               baselines=False, verbose=0)
    assert meta["training"]["epochs"] == 1 and meta["training"]["seed"] == 1
    card = keras_gmm.zoo.info(NAME)
    assert meta["training"]["selection"] == card["training"]["selection"]
    loaded = keras_gmm.zoo.load(NAME, root=tmp_path, sha256=meta["sha256"])
    rows = keras_gmm.zoo.check_metrics(NAME, keras_gmm.zoo.evaluate(NAME, loaded),
                                       root=tmp_path)
    assert all(row["ok"] for row in rows), rows
