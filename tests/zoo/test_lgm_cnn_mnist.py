"""The lgm_cnn_mnist zoo model: GMMConv2D kernels, the L-GM head and loss,
the recorded comparison and OOD figures (the generic zoo checks are in
tests/zoo/test_zoo.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gmm
import keras_gmm.zoo
from keras_gmm.zoo import lgm_cnn_mnist as recipe

NAME = recipe.NAME


@pytest.fixture(scope="module")
def model():
    """The shipped model (checksum verified), loaded once."""
    return keras_gmm.zoo.load(NAME)


@pytest.fixture
def meta():
    """Its card, as shipped."""
    return keras_gmm.zoo.info(NAME)


def test_structure_and_parameter_counts(model, meta):
    convs = [layer for layer in model.layers if isinstance(layer, keras_gmm.GMMConv2D)]
    assert len(convs) == 2
    assert not any(isinstance(layer, keras.layers.Conv2D) for layer in model.layers)
    head = model.get_layer("classifier")
    assert isinstance(head, keras_gmm.GaussianMixtureClassifier)
    assert head.num_classes == 10 and head.output_mode == "logits_and_distances"
    # Saved compiled with the L-GM loss and the recipe's margin and weight.
    assert isinstance(model.loss, keras_gmm.GMMClassificationLoss)
    assert model.loss.alpha == recipe.ALPHA
    assert model.loss.likelihood_weight == recipe.LIKELIHOOD_WEIGHT
    counts = meta["training"]["parameters"]
    assert counts["lgm"]["convolution"] == recipe.conv_parameters(model)
    assert counts["lgm"]["total"] == model.count_params()
    baseline = recipe.build(variant="softmax")  # untrained: only its sizes
    assert counts["softmax"]["convolution"] == recipe.conv_parameters(baseline)
    ratio = counts["softmax"]["convolution"] / counts["lgm"]["convolution"]
    assert ratio >= 3
    assert meta["training"]["comparison"]["convolution_parameter_ratio"] == (
        pytest.approx(ratio))
    # The two CNNs differ only in their convolutions and their head.
    assert [a.name for a in model.layers] == [b.name for b in baseline.layers]
    for a, b in zip(model.layers, baseline.layers):
        if not (a.name.startswith("conv_") or a.name == "classifier"):
            assert type(a) is type(b) and a.get_config() | {"name": 0} == (
                b.get_config() | {"name": 0}), a.name


def test_outputs_and_log_likelihood(model):
    x = keras_gmm.zoo.example_inputs(NAME, 16)
    out = model.predict(x, verbose=0)
    assert out.shape == (16, 10, 2)
    logits, distances = out[..., 0], out[..., 1]
    assert np.all(distances >= 0)
    # log p(f) is the logsumexp of the logits (uniform fixed priors included).
    ll = recipe.log_likelihood(model, x)
    np.testing.assert_allclose(ll, np.logaddexp.reduce(logits, axis=-1),
                               rtol=1e-5, atol=1e-4)


def test_exported_log_likelihood_matches(model, tmp_path):
    x = keras_gmm.zoo.example_inputs(NAME, 8)
    path = keras_gmm.export_saved_model(model, tmp_path / "export")
    served = tf.saved_model.load(path).signatures["log_likelihood"]
    (input_name,) = served.structured_input_signature[1]
    got = served(**{input_name: tf.constant(x)})["log_likelihood"].numpy()
    np.testing.assert_allclose(got, recipe.log_likelihood(model, x),
                               rtol=1e-5, atol=1e-4)


def _check_summary(block, key, seeds):
    values = [block["per_seed"][str(s)][key] for s in seeds]
    assert block[key]["mean"] == pytest.approx(np.mean(values))
    assert block[key]["std"] == pytest.approx(np.std(values))
    return np.mean(values)


def test_recorded_comparison_and_ood(meta):
    training, metrics = meta["training"], meta["metrics"]
    seed = training["seed"]
    comparison = training["comparison"]
    seeds = comparison["seeds"]
    assert comparison["split"] == "test" and len(seeds) == 3 and seeds[0] == seed
    ours = _check_summary(comparison["lgm"], "accuracy", seeds)
    theirs = _check_summary(comparison["softmax"], "accuracy", seeds)
    assert comparison["accuracy_gain_points"] == pytest.approx(100 * (ours - theirs))
    assert comparison["target_met"] == bool(
        ours >= theirs and comparison["convolution_parameter_ratio"] >= 3)
    # The shipped model is the first seed's L-GM run; its reference the
    # baseline of the same seed.
    for key in ("accuracy", "nll"):
        assert metrics[key]["value"] == pytest.approx(
            comparison["lgm"]["per_seed"][str(seed)][key])
        assert metrics[key]["reference"]["value"] == pytest.approx(
            comparison["softmax"]["per_seed"][str(seed)][key])
    assert metrics["accuracy"]["value"] > 0.95  # far above chance (0.1)
    ood = training["ood"]
    assert ood["held_out_classes"] == list(recipe.OOD_CLASSES)
    assert ood["seeds"] == seeds and ood["positives"] == 200
    ll = _check_summary(ood["lgm"], "auroc_log_likelihood", seeds)
    msp = _check_summary(ood["softmax"], "auroc_msp", seeds)
    _check_summary(ood["lgm"], "auroc_msp", seeds)
    assert ood["auroc_gain"] == pytest.approx(ll - msp)
    assert ood["target_met"] == bool(ll > msp)
    assert ll > 0.9 and msp > 0.9  # both detect the unseen digits well


def test_evaluate_ood_scores_the_held_out_digits():
    # Untrained 8-class models: the scores exist, lie in [0, 1], and the L-GM
    # one has the likelihood score the softmax one lacks.
    lgm = recipe.evaluate_ood(recipe.build(variant="lgm", num_classes=8))
    softmax = recipe.evaluate_ood(recipe.build(variant="softmax", num_classes=8))
    assert set(lgm) == {"known_accuracy", "auroc_msp", "auroc_log_likelihood"}
    assert set(softmax) == {"known_accuracy", "auroc_msp"}
    assert all(0.0 <= v <= 1.0 for v in [*lgm.values(), *softmax.values()])
    assert recipe.known_classes() == [0, 1, 2, 3, 4, 5, 6, 7]


def test_train_tiny_writes_loadable_model(tmp_path):
    out = tmp_path / NAME
    meta = keras_gmm.zoo.train(NAME, output_dir=out, epochs=1, seed=1,
                               comparison_seeds=1, ood=False, train_rows=256)
    training = meta["training"]
    assert training["epochs"] == 1 and training["seed"] == 1
    assert training["train_rows"] == 256 and "ood" not in training
    assert training["comparison"]["seeds"] == [1]
    loaded = keras_gmm.zoo.load(NAME, root=tmp_path, sha256=meta["sha256"])
    measured = keras_gmm.zoo.evaluate(NAME, loaded)
    assert all(row["ok"] for row in
               keras_gmm.zoo.check_metrics(NAME, measured, root=tmp_path))
    assert isinstance(loaded.loss, keras_gmm.GMMClassificationLoss)


@pytest.mark.parametrize("options, match", [
    ({"train_rows": 0}, "train_rows"),
    ({"comparison_seeds": 0}, "comparison_seeds"),
    ({"ood": "yes"}, "ood"),
    ({"epochs": 0}, "epochs"),
])
def test_train_rejects_bad_options(tmp_path, options, match):
    with pytest.raises(ValueError, match=match):
        keras_gmm.zoo.train(NAME, output_dir=tmp_path, **options)
    assert not any(tmp_path.iterdir())
