"""The soft_weight_sharing_mnist zoo model: quantized weights, tuned shared
values, per-seed figures against the plainly trained network (the generic zoo
checks are in tests/zoo/test_zoo.py)."""

import numpy as np
import pytest

import keras_gmm.zoo
from keras_gmm import datasets
from keras_gmm.regularizers import compression_report, regularized_variables
from keras_gmm.zoo import _recipe
from keras_gmm.zoo import soft_weight_sharing_mnist as recipe
from tests.zoo.zoo_checks import assert_train_rejects, load_and_check_retrained

NAME = "soft_weight_sharing_mnist"
N_WEIGHTS = 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10


@pytest.fixture(scope="module")
def model():
    return keras_gmm.zoo.load(NAME)


def _prior(model):
    regs = {id(reg): reg for _, reg in regularized_variables(model)}
    assert len(regs) == 1  # one prior shared by every kernel and bias
    return next(iter(regs.values()))


def test_weights_are_the_shared_values_of_the_saved_prior(model):
    reg = _prior(model)
    pairs = regularized_variables(model)
    assert reg.fitted and reg.zero_component and reg.means[0] == 0.0
    assert len(pairs) == len(model.trainable_weights) == 6
    for variable, _ in pairs:
        assert np.all(np.isin(variable.numpy(), reg.means)), variable.path
        # The tuned means still claim their weights: snapping changes nothing.
        np.testing.assert_array_equal(reg.snap(variable.value).numpy(), variable.numpy())
    flat = np.concatenate([v.numpy().ravel() for v, _ in pairs])
    assert flat.size == N_WEIGHTS
    assert np.unique(flat).size <= reg.num_components


def test_recorded_figures_match_the_model_and_the_targets(model):
    meta = keras_gmm.zoo.info(NAME)
    metrics, training = meta["metrics"], meta["training"]
    report = compression_report(model)
    assert metrics["nonzero_fraction"]["value"] == pytest.approx(report["nonzero_fraction"])
    assert metrics["compression_ratio"]["value"] == pytest.approx(report["compression_ratio"])
    assert report["compression_ratio"] > 10
    comparison = training["comparison"]
    assert comparison["split"] == "test" and len(comparison["seeds"]) == 3
    per_seed = comparison["per_seed"]
    saved = per_seed[str(training["seed"])]
    assert saved["accuracy_compressed"] == pytest.approx(metrics["accuracy"]["value"])
    assert saved["accuracy_plain"] == pytest.approx(metrics["accuracy"]["reference"]["value"])
    assert saved["nonzero_fraction"] == pytest.approx(report["nonzero_fraction"])
    for figures in per_seed.values():
        drop = 100 * (figures["accuracy_plain"] - figures["accuracy_compressed"])
        assert figures["accuracy_drop_points"] == pytest.approx(drop)
        assert figures["accuracy_plain"] > 0.9
        met = drop <= recipe.TARGET_DROP_POINTS and (
            figures["nonzero_fraction"] <= recipe.TARGET_NONZERO)
        assert figures["target_met"] == met
    assert comparison["targets_met_on_every_seed"] == all(
        f["target_met"] for f in per_seed.values())
    spread = comparison["spread"]["accuracy_drop_points"]
    assert spread["mean"] == pytest.approx(
        np.mean([f["accuracy_drop_points"] for f in per_seed.values()]))
    assert (keras_gmm.zoo.model_dir(NAME) / "model.keras").stat().st_size <= 10 * 2**20


def test_outputs_are_class_probabilities(model):
    x, y = datasets.load_mnist("test")
    probs = _recipe.predict(model, x)
    assert probs.shape == (len(x), 10)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    recorded = keras_gmm.zoo.recorded_metrics(NAME)
    assert np.mean(probs.argmax(-1) == y) == pytest.approx(recorded["accuracy"], abs=1e-9)


def test_tune_shared_values_keeps_zeros_and_sharing():
    """Step 4 on a tiny quantized network: the zeros stay zero, each weight
    keeps its component, and the training loss does not rise."""
    x, y = datasets.load_mnist("val")
    x, y = x[:256], y[:256]
    reg = keras_gmm.GMMRegularizer(num_components=16, strength=1e-6, zero_weight=0.5)
    net = recipe.build(seed=0, regularizer=reg)
    net.fit(x, y, batch_size=64, epochs=1, verbose=0)
    means = np.concatenate([[0.0], np.linspace(-0.21, 0.2, 15)])
    reg.set_prior(means, np.full(16, 1e-4), np.full(16, 1 / 16))
    report = keras_gmm.regularizers.quantize(net, reg, check="ignore")
    assert 0 < report["nonzero_fraction"] < 1
    for variable in net.trainable_weights:  # snapping the snapped changes nothing
        np.testing.assert_array_equal(reg.snap(variable.value).numpy(), variable.numpy())
    before = [v.numpy().copy() for v in net.trainable_weights]
    components = [reg.component_of(v.value).numpy() for v in net.trainable_weights]
    tuned = _recipe.tune_shared_values(net, reg, x, y, epochs=3, batch_size=64,
                                       learning_rate=1e-3)
    assert tuned["loss_after"] <= tuned["loss_before"] + 1e-6
    assert tuned["largest_shift"] > 0
    assert reg.means[0] == 0.0
    for old, comp, variable in zip(before, components, net.trainable_weights):
        new = variable.numpy()
        np.testing.assert_array_equal(new == 0, old == 0)
        np.testing.assert_array_equal(new, reg.means[comp])


# One epoch leaves the prior unready: quantize says so (the point of its check).
@pytest.mark.filterwarnings("ignore::keras_gmm.regularizers.QuantizationWarning")
def test_train_tiny_writes_loadable_model(tmp_path):
    out = tmp_path / NAME
    meta = keras_gmm.zoo.train(NAME, output_dir=out, epochs=1, pretrain_epochs=1,
                               codebook_epochs=1, num_seeds=1, seed=1, verbose=0)
    assert meta["training"]["epochs"] == 1 and meta["training"]["seed"] == 1
    assert list(meta["training"]["comparison"]["per_seed"]) == ["1"]
    loaded, measured = load_and_check_retrained(NAME, tmp_path, meta)
    reg = _prior(loaded)
    for variable in loaded.trainable_weights:
        assert np.all(np.isin(variable.numpy(), reg.means))


def test_train_rejects_bad_options(tmp_path):
    assert_train_rejects(NAME, tmp_path, (
        ({"epochs": 0}, "epochs"),
        ({"seed": "0"}, "seed"),
        ({"pretrain_epochs": 0}, "pretrain_epochs"),
        ({"codebook_epochs": 0}, "codebook_epochs"),
        ({"num_seeds": 0}, "num_seeds"),
    ))
