"""The soft_weight_sharing_digits recipe and the soft weight sharing steps
it shares with soft_weight_sharing_mnist (keras_gmm.zoo._recipe): pruning to
a fraction, tuning the non-zero weights onto shared values, a tiny train.
The shipped models' checks are in tests/zoo/test_soft_weight_sharing_mnist.py,
the generic zoo checks in tests/zoo/test_zoo.py."""

import keras
import numpy as np
import pytest

import keras_gmm
import keras_gmm.zoo
from keras_gmm import datasets
from keras_gmm.regularizers import quantize, regularized_variables
from keras_gmm.zoo import _recipe
from keras_gmm.zoo import soft_weight_sharing_digits as recipe
from tests.zoo.zoo_checks import assert_train_rejects, load_and_check_retrained

NAME = "soft_weight_sharing_digits"


@pytest.fixture(scope="module")
def data():
    x, y = datasets.load_digits("train")
    return x[:512], y[:512]


@pytest.fixture(scope="module")
def trained_weights(data):
    net, _ = _trained_net(data, fit=True)
    return net.get_weights()


def _trained_net(data, fit=False, weights=None):
    """A small net under a prior whose 16 components are set by hand, trained
    briefly (``fit``) or given those ``weights``; returns ``(net, reg)``."""
    reg = keras_gmm.GMMRegularizer(num_components=16, strength=1e-6, zero_weight=0.5)
    net = recipe.build(seed=0, regularizer=reg)
    if fit:
        net.fit(*data, batch_size=64, epochs=2, verbose=0)
    else:
        net.set_weights(weights)
    means = np.concatenate([[0.0], np.linspace(-0.21, 0.2, 15)])
    reg.set_prior(means, np.full(16, 1e-3), np.full(16, 1 / 16))
    return net, reg


def _flat(net):
    return np.concatenate([v.numpy().ravel() for v in net.trainable_weights])


def test_prune_to_fraction_keeps_the_largest_weights(data, trained_weights):
    net, reg = _trained_net(data, weights=trained_weights)
    before = _flat(net)
    by_prior = np.concatenate([reg.component_of(v.value).numpy().ravel() != 0
                               for v in net.trainable_weights])
    assert by_prior.mean() > 0.1  # so that pruning to 10 % has work to do
    pruned = _recipe.prune_to_fraction(net, reg, 0.1)
    after = _flat(net)
    kept = after != 0
    assert pruned["nonzero_fraction_by_prior"] == pytest.approx(by_prior.mean())
    assert kept.sum() == int(np.floor(0.1 * after.size))
    assert pruned["nonzero_fraction"] == pytest.approx(kept.mean())
    np.testing.assert_array_equal(after[kept], before[kept])  # left unchanged
    assert np.all(by_prior[kept])  # the prior's zeros stay zero
    # Those kept are the largest of the prior's non-zeros.
    assert np.abs(before[kept]).min() > pruned["threshold"]
    assert np.abs(before[by_prior & ~kept]).max() <= pruned["threshold"]
    # A fraction the prior already meets prunes nothing beyond its zeros.
    net, reg = _trained_net(data, weights=trained_weights)
    loose = _recipe.prune_to_fraction(net, reg, 1.0)
    assert loose["threshold"] == 0.0
    assert loose["nonzero_fraction"] == pytest.approx(loose["nonzero_fraction_by_prior"])


def test_tune_nonzero_weights_keeps_zeros_and_shares_values(data, trained_weights):
    """Step 4 on a small pruned, quantized net: the zeros stay zero, every
    weight is one of the tuned prior's means, which snaps them to themselves,
    and the training loss falls."""
    x, y = data
    net, reg = _trained_net(data, weights=trained_weights)
    _recipe.prune_to_fraction(net, reg, 0.1)
    quantize(net, reg, check="ignore")
    zeros = _flat(net) == 0
    tuned = _recipe.tune_nonzero_weights(net, reg, x, y, free_epochs=2, epochs=3,
                                         batch_size=64, learning_rate=1e-3)
    assert tuned["loss_free"] < tuned["loss_before"]
    assert tuned["loss_after"] < tuned["loss_before"]
    assert len(tuned["kmeans_values"]) == 15 and 0 <= tuned["reassigned_fraction"] <= 1
    after = _flat(net)
    assert np.all(after[zeros] == 0)
    assert reg.means[0] == 0.0
    assert np.all(np.isin(after, reg.means))
    assert np.unique(after).size <= 16
    for variable in net.trainable_weights:
        np.testing.assert_array_equal(reg.snap(variable.value).numpy(), variable.numpy())
    assert tuned["changed_by_final_snap"] == 0  # the tight components keep theirs
    # The saved prior's mixing weights follow the shares of the weights, its
    # non-zero components are tight around their values.
    counts = np.array([np.sum(after == m) for m in reg.means[1:]], np.float64)
    assert np.count_nonzero(counts) > 3
    free = reg.mixture_weights[1:] / reg.mixture_weights[1:].sum()
    np.testing.assert_allclose(free[counts > 0], (counts / counts.sum())[counts > 0],
                               atol=1e-3)
    # (re-estimated: tighter than the hand-set 1e-3, the zero component's kept)
    assert np.all(reg.variances[1:] < 1e-3) and reg.variances[0] == pytest.approx(1e-3)
    assert np.all(reg.variances[1:] >= _recipe.MIN_SHARED_VARIANCE)
    with pytest.raises(ValueError, match="zero_component=True"):
        _recipe.tune_nonzero_weights(
            net, keras_gmm.GMMRegularizer(num_components=3, zero_component=False),
            x, y, free_epochs=1, epochs=1, batch_size=64, learning_rate=1e-3)


def test_train_tiny_writes_loadable_model(tmp_path):
    out = tmp_path / NAME
    meta = keras_gmm.zoo.train(NAME, output_dir=out, epochs=2, pretrain_epochs=2,
                               tune_epochs=2, free_epochs=2, num_seeds=1, seed=1)
    assert meta["training"]["epochs"] == 2 and meta["training"]["seed"] == 1
    loaded, measured = load_and_check_retrained(NAME, tmp_path, meta)
    assert isinstance(loaded, keras.Model)
    assert measured["nonzero_fraction"] <= recipe.RECIPE.target_nonzero
    (reg,) = {id(r): r for _, r in regularized_variables(loaded)}.values()
    for variable in loaded.trainable_weights:
        assert np.all(np.isin(variable.numpy(), reg.means))


def test_train_rejects_bad_options(tmp_path):
    assert_train_rejects(NAME, tmp_path, (
        ({"epochs": 0}, "epochs"),
        ({"seed": "0"}, "seed"),
        ({"pretrain_epochs": 0}, "pretrain_epochs"),
        ({"tune_epochs": 0}, "tune_epochs"),
        ({"num_seeds": 0}, "num_seeds"),
    ))
