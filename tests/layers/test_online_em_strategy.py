"""Online EM under ``tf.distribute.MirroredStrategy`` (two logical CPU
devices, see conftest): one mixture for all replicas, equal to one process
fed the global batches (the two-worker version is tests/test_multi_worker.py).
"""

import numpy as np
import pytest
import tensorflow as tf

import keras_gmm
from tests.ops.test_em_driver import _mirrored as _strategy

K, D, GLOBAL_BATCH = 3, 3, 32


def _data(n=4 * GLOBAL_BATCH, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[-4.0, 0.0, 1.0], [3.0, 3.0, -2.0], [0.0, -4.0, 4.0]])
    return centres[rng.integers(0, K, n)] + rng.normal(size=(n, D))


def _layer(covariance_type, fitted_on=None):
    gmm = keras_gmm.GaussianMixtureEM(K, covariance_type=covariance_type, online=True,
                                      momentum=0.5, seed=3, dtype="float64")
    if fitted_on is not None:
        gmm.fit(fitted_on, verbose=0)
    else:
        gmm.build((None, D))
    return gmm


def _step_mirrored(strategy, gmm, x):
    """Training calls of ``gmm`` under ``strategy``, one per global batch
    (replica 0 gets the first half of each)."""
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(GLOBAL_BATCH)

    @tf.function
    def step(batch):
        strategy.run(lambda b: gmm(b, training=True), args=(batch,))

    for batch in strategy.experimental_distribute_dataset(dataset):
        step(batch)


def _replica_values(strategy, gmm):
    """Each replica's copy of every weight: ``[replica][weight]``."""
    per_weight = [strategy.experimental_local_results(v.value) for v in gmm.weights]
    return [[w[r].numpy() for w in per_weight] for r in range(2)]


def _assert_one_mixture_equal_to(strategy, gmm, reference, rtol=1e-10):
    first, second = _replica_values(strategy, gmm)
    for v, a, b, want in zip(gmm.weights, first, second, reference.get_weights()):
        np.testing.assert_array_equal(a, b, err_msg=v.path)  # one mixture
        np.testing.assert_allclose(a, want, rtol=rtol, atol=1e-12, err_msg=v.path)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_online_steps_of_a_fitted_layer_equal_one_process_on_the_global_batch(
        covariance_type):
    x = _data()
    strategy = _strategy()
    reference = _layer(covariance_type, fitted_on=x)
    with strategy.scope():
        gmm = _layer(covariance_type)
        gmm.set_weights(reference.get_weights())
    half = _layer(covariance_type)  # replica 0's rows alone
    half.set_weights(reference.get_weights())
    _step_mirrored(strategy, gmm, x)
    for start in range(0, len(x), GLOBAL_BATCH):
        reference(x[start:start + GLOBAL_BATCH], training=True)
        half(x[start:start + GLOBAL_BATCH // 2], training=True)
    _assert_one_mixture_equal_to(strategy, gmm, reference)
    assert int(gmm.skipped_batches.numpy()) == 0
    # the statistics were all-reduced: not what one replica's rows give
    assert not np.allclose(gmm.means.numpy(), half.means.numpy(), rtol=1e-6)


def test_the_first_step_initialises_every_replica_from_replica_0():
    x = _data()
    strategy = _strategy()
    with strategy.scope():
        gmm = _layer("full")
    _step_mirrored(strategy, gmm, x[:2 * GLOBAL_BATCH])
    # one process: k-means++ (same seed) on replica 0's half of the first
    # global batch, then a stepwise step on the whole second global batch
    reference = _layer("full")
    reference(x[:GLOBAL_BATCH // 2], training=True)
    reference(x[GLOBAL_BATCH:2 * GLOBAL_BATCH], training=True)
    assert reference._is_fitted() and gmm._is_fitted()
    _assert_one_mixture_equal_to(strategy, gmm, reference)


def test_a_non_finite_row_on_one_replica_skips_the_step_on_every_replica():
    x = _data()
    strategy = _strategy()
    reference = _layer("diag", fitted_on=x)
    with strategy.scope():
        gmm = _layer("diag")
        gmm.set_weights(reference.get_weights())
    bad = x[:GLOBAL_BATCH].copy()
    bad[GLOBAL_BATCH - 1, 0] = np.nan  # replica 1's half
    _step_mirrored(strategy, gmm, np.concatenate([bad, x[GLOBAL_BATCH:]]))
    reference(bad, training=True)  # skipped: counted, mixture kept
    for start in range(GLOBAL_BATCH, len(x), GLOBAL_BATCH):
        reference(x[start:start + GLOBAL_BATCH], training=True)
    assert int(reference.skipped_batches.numpy()) == 1
    counts = strategy.experimental_local_results(gmm.skipped_batches.value)
    assert [int(c) for c in counts] == [1, 1]
    _assert_one_mixture_equal_to(strategy, gmm, reference)
