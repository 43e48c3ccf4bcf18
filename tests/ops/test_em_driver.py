"""Tests for keras_gmm.ops.em_driver: the one EM loop."""

import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import make_blobs

from keras_gmm.ops import em, em_driver

COV_TYPES = ("full", "tied", "diag", "spherical")
REG = 1e-6


def _blobs(seed=0, n=240, d=3, k=3):
    x, _ = make_blobs(n_samples=n, n_features=d, centers=k, random_state=seed)
    return x


def _random_resp(n, k, seed):
    r = np.random.default_rng(seed).uniform(size=(n, k))
    return r / r.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------
# iterate: the outer loop
# --------------------------------------------------------------------------
def test_iterate_stops_at_convergence_and_keeps_the_bounds():
    # bound -p, p halves each pass: |change| = p / 2 < tol first at p = 2^-10
    params, bounds, n, converged, failed = em_driver.iterate(
        lambda p: (-p, p / 2.0), tf.constant(1.0, tf.float64), 50, 1e-3
    )
    assert bool(converged) and not bool(failed) and int(n) == 11
    np.testing.assert_allclose(bounds.numpy()[:11], -(0.5 ** np.arange(11)))
    assert np.all(np.isnan(bounds.numpy()[11:]))
    np.testing.assert_allclose(float(params), 0.5**11)


def test_iterate_drops_a_non_finite_pass_and_reports_it():
    # the third pass gives NaN parameters: the second pass's are returned
    def one_pass(p):
        new = tf.where(p < 0.3, tf.constant(np.nan, tf.float64), p / 2.0)
        return -p, new

    params, bounds, n, converged, failed = em_driver.iterate(
        one_pass, tf.constant(1.0, tf.float64), 10, 0.0
    )
    assert bool(failed) and not bool(converged) and int(n) == 3
    np.testing.assert_allclose(float(params), 0.25)


def test_iterate_respects_iter_limit_and_max_iter():
    run = lambda limit: em_driver.iterate(  # noqa: E731
        lambda p: (-p, p / 2.0), tf.constant(1.0, tf.float64), 5, 0.0,
        iter_limit=limit,
    )
    assert int(run(tf.constant(2))[2]) == 2
    assert int(run(None)[2]) == 5


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_em_iterations_equals_step_by_step(covariance_type):
    x = tf.constant(_blobs(n=250, d=3, k=3))
    resp = _random_resp(250, 3, seed=4)
    w, m, _, p = em.parameters_from_resp(x, resp, covariance_type, REG)
    params, bounds = (w, m, p), []
    for _ in range(4):
        stats, lp = em.batch_statistics(x, *params, covariance_type)
        bounds.append(float(lp) / 250)
        new = em.m_step(stats, params[1], covariance_type, REG)
        params = (new[0], new[1], new[3])
    run = tf.function(em_driver.em_iterations, jit_compile=True)
    # chunks of 64 rows plus a tail of 58; two calls of 2 iterations
    out1 = run(x, w, m, p, covariance_type, REG, 4, 0.0, 64, -np.inf, 2)
    out2 = run(x, *out1[:3], covariance_type, REG, 4, 0.0, 64, out1[3][1], 2)
    assert int(out1[4]) == 2 and int(out2[4]) == 2
    got = np.concatenate([out1[3].numpy()[:2], out2[3].numpy()[:2]])
    np.testing.assert_allclose(got, bounds, rtol=1e-10)
    for a, b in zip(out2[:3], params):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-8, atol=1e-10)
    assert not bool(out2[5]) and not bool(out2[6])
    # a large tol converges at the second iteration
    out = run(x, w, m, p, covariance_type, REG, 4, 1e3, 64)
    assert bool(out[5]) and int(out[4]) == 2  # as scikit-learn's n_iter_


def test_em_iterations_reports_a_failed_cholesky():
    x = tf.constant(np.repeat(np.arange(4.0)[:, None], 10, axis=0) @ np.ones((1, 2)))
    w = tf.constant([0.5, 0.5], tf.float64)
    m = tf.constant([[0.0, 0.0], [3.0, 3.0]], tf.float64)
    p = tf.constant(np.stack([np.eye(2)] * 2))
    out = tf.function(em_driver.em_iterations, jit_compile=True)(x, w, m, p, "full", 0.0, 5, 0.0)
    assert bool(out[6]) and int(out[4]) == 1
    np.testing.assert_array_equal(out[2].numpy(), p.numpy())  # last good parameters


