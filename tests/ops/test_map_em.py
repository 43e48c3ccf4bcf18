"""Tests for keras_gmm.ops.map_em: the MAP M-step with a Gamma prior on
precisions, against a naive NumPy reference."""

import numpy as np
import pytest
import tensorflow as tf

from keras_gmm.ops import em, map_em


def _problem(n=300, d=3, k=4, seed=0, offset=50.0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.2, 2.0, size=d) + offset
    resp = rng.uniform(size=(n, k)) ** 3
    resp /= resp.sum(axis=1, keepdims=True)
    shift = x[rng.choice(n, k, replace=False)]
    return x, resp, shift


def _naive(x, resp, shift, covariance_type, alpha, beta, fixed):
    nk = resp.sum(0)
    means = resp.T @ x / nk[:, None]
    means = np.where(fixed[:, None], shift, means)
    sq = (x[:, None, :] - means[None]) ** 2  # [N, K, D]
    scatter = np.einsum("nk,nkd->kd", resp, sq)
    alpha = np.broadcast_to(alpha, nk.shape)
    beta = np.broadcast_to(beta, nk.shape)
    if covariance_type == "diag":
        cov = (scatter + 2 * beta[:, None]) / (nk[:, None] + 2 * (alpha[:, None] - 1))
    else:
        cov = (scatter.sum(-1) + 2 * beta) / (nk * x.shape[1] + 2 * (alpha - 1))
    return nk, means, cov


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
@pytest.mark.parametrize("per_component", [False, True])
@pytest.mark.parametrize("with_fixed", [False, True])
def test_matches_naive_reference(covariance_type, per_component, with_fixed):
    x, resp, shift = _problem()
    k = resp.shape[1]
    alpha = np.array([1.0, 3.0, 50.0, 2.0]) if per_component else 5.0
    beta = np.array([0.5, 0.01, 2.0, 0.1]) if per_component else 0.3
    fixed = np.array([True, False, False, True]) if with_fixed else np.zeros(k, bool)
    stats = em.sufficient_statistics(
        tf.constant(x), tf.constant(resp), tf.constant(shift), covariance_type
    )
    nk, means, cov = map_em.map_means_and_covariances(
        stats, tf.constant(shift), covariance_type, alpha, beta,
        fixed_mean=fixed if with_fixed else None,
    )
    ref_nk, ref_means, ref_cov = _naive(x, resp, shift, covariance_type, alpha, beta, fixed)
    np.testing.assert_allclose(nk.numpy(), ref_nk, rtol=1e-10)
    np.testing.assert_allclose(means.numpy(), ref_means, rtol=1e-10)
    np.testing.assert_allclose(cov.numpy(), ref_cov, rtol=1e-8)


def test_float32_far_from_origin_stays_accurate():
    # Centred statistics: data at 1e3 with unit spread keep float32 variances.
    x, resp, shift = _problem(offset=1e3)
    stats = em.sufficient_statistics(
        tf.constant(x, tf.float32), tf.constant(resp, tf.float32),
        tf.constant(shift, tf.float32), "diag",
    )
    _, _, cov = map_em.map_means_and_covariances(
        stats, tf.constant(shift, tf.float32), "diag", 2.0, 0.1
    )
    ref = _naive(x, resp, shift, "diag", 2.0, 0.1, np.zeros(4, bool))[2]
    np.testing.assert_allclose(cov.numpy(), ref, rtol=2e-3)


def test_empty_component_gets_the_prior_mode():
    x, resp, shift = _problem()
    resp[:, 2] = 0.0
    resp /= resp.sum(1, keepdims=True)
    stats = em.sufficient_statistics(
        tf.constant(x), tf.constant(resp), tf.constant(shift), "diag"
    )
    _, means, cov = map_em.map_means_and_covariances(
        stats, tf.constant(shift), "diag", 11.0, 0.5
    )
    np.testing.assert_allclose(cov.numpy()[2], 0.5 / 10.0, rtol=1e-6)
    np.testing.assert_allclose(means.numpy()[2], shift[2])  # falls back to the shift


def test_runs_under_xla():
    x, resp, shift = _problem()
    args = [tf.constant(v, tf.float32) for v in (x, resp, shift)]

    @tf.function(jit_compile=True)
    def step(x, resp, shift):
        stats = em.sufficient_statistics(x, resp, shift, "spherical")
        return map_em.map_means_and_covariances(
            stats, shift, "spherical", tf.constant([2.0, 2.0, 3.0, 4.0]), 0.1,
            fixed_mean=tf.constant([True, False, False, False]),
        )

    _, _, cov = step(*args)
    ref = _naive(x, resp, shift, "spherical", np.array([2.0, 2.0, 3.0, 4.0]), 0.1,
                 np.array([True, False, False, False]))[2]
    np.testing.assert_allclose(cov.numpy(), ref, rtol=1e-4)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "nope"])
def test_rejects_other_covariance_types(covariance_type):
    x, resp, shift = _problem()
    stats = em.sufficient_statistics(
        tf.constant(x), tf.constant(resp), tf.constant(shift), "diag"
    )
    with pytest.raises(ValueError, match="covariance_type"):
        map_em.map_means_and_covariances(stats, shift, covariance_type, 2.0, 0.1)
