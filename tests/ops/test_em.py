"""Tests for keras_gmm.ops.em against scikit-learn's GaussianMixture."""

import warnings

import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.mixture._gaussian_mixture import (
    _compute_precision_cholesky,
    _estimate_gaussian_parameters,
)

from keras_gmm.ops import em, init

COV_TYPES = ("full", "tied", "diag", "spherical")
REG = 1e-6


def _blobs(seed=0, n=240, d=3, k=3):
    x, _ = make_blobs(n_samples=n, n_features=d, centers=k, random_state=seed)
    return x


def _anisotropic(seed=1, n=240):
    x, _ = make_blobs(n_samples=n, n_features=2, centers=3, random_state=seed)
    return x @ np.array([[0.6, -0.6], [-0.4, 0.8]])


def _random_resp(n, k, seed):
    r = np.random.default_rng(seed).uniform(size=(n, k))
    return r / r.sum(axis=1, keepdims=True)


def _precisions_from_chol(prec_chol, covariance_type):
    if covariance_type in ("full", "tied"):
        return prec_chol @ np.swapaxes(prec_chol, -1, -2)
    return prec_chol**2


def _stream_stats(x, resp, shift, covariance_type, n_batches):
    k, d = shift.shape
    stats = em.zero_statistics(k, d, covariance_type, x.dtype)
    bounds = np.linspace(0, x.shape[0], n_batches + 1).astype(int)
    if n_batches > 1:
        bounds[1] = bounds[1] // 2  # unequal batch sizes
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        stats = em.add_statistics(
            stats,
            em.sufficient_statistics(
                tf.constant(x[lo:hi]), tf.constant(resp[lo:hi]), shift, covariance_type
            ),
        )
    return stats


# --------------------------------------------------------------------------
# M-step parity, one pass and streamed
# --------------------------------------------------------------------------
@pytest.mark.parametrize("n_batches", [1, 3])
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_m_step_matches_sklearn(covariance_type, n_batches):
    x = _blobs()
    k = 3
    resp = _random_resp(x.shape[0], k, seed=2)
    nk, means, covs = _estimate_gaussian_parameters(x, resp, REG, covariance_type)
    prec_chol = _compute_precision_cholesky(covs, covariance_type)
    # An arbitrary shift: the statistics are exact for any shift.
    shift = tf.constant(np.random.default_rng(3).normal(size=(k, x.shape[1])))
    stats = _stream_stats(x, resp, shift, covariance_type, n_batches)
    w, m, c, p = em.m_step(stats, shift, covariance_type, REG)
    np.testing.assert_allclose(w.numpy(), nk / nk.sum(), rtol=1e-10)
    np.testing.assert_allclose(m.numpy(), means, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c.numpy(), covs, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(p.numpy(), prec_chol, rtol=1e-10, atol=1e-12)
    # initialisation from resp: weights = nk / N as in sklearn's _initialize
    w0, m0, c0, p0 = em.parameters_from_resp(
        tf.constant(x), tf.constant(resp), covariance_type, REG
    )
    np.testing.assert_allclose(w0.numpy(), nk / x.shape[0], rtol=1e-10)
    np.testing.assert_allclose(m0.numpy(), means, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c0.numpy(), covs, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(p0.numpy(), prec_chol, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_precision_conversions_round_trip(covariance_type):
    x = _blobs()
    resp = _random_resp(x.shape[0], 3, seed=4)
    _, _, covs = _estimate_gaussian_parameters(x, resp, REG, covariance_type)
    prec_chol = _compute_precision_cholesky(covs, covariance_type)
    precisions = _precisions_from_chol(prec_chol, covariance_type)
    precisions = tf.constant(precisions)
    ours = em.precisions_cholesky_from_precisions(precisions, covariance_type)
    np.testing.assert_allclose(ours.numpy(), prec_chol, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        em.covariances_from_precisions(precisions, covariance_type).numpy(),
        covs, rtol=1e-9, atol=1e-12,
    )


# --------------------------------------------------------------------------
# full EM parity with scikit-learn
# --------------------------------------------------------------------------
def _run_em(x, weights, means, prec_chol, covariance_type, n_iter, n_batches):
    lower_bounds = []
    for _ in range(n_iter):
        shift = means
        stats = em.zero_statistics(means.shape[0], means.shape[1], covariance_type,
                                   x.dtype)
        log_prob_sum = tf.zeros((), x.dtype)
        for xb in tf.split(x, n_batches):
            log_resp, log_prob = em.e_step(
                xb, tf.math.log(weights), means, prec_chol, covariance_type
            )
            stats = em.add_statistics(
                stats, em.sufficient_statistics(xb, tf.exp(log_resp), shift,
                                                covariance_type)
            )
            log_prob_sum += tf.reduce_sum(log_prob)
        lower_bounds.append(float(em.lower_bound(log_prob_sum, x.shape[0])))
        weights, means, covs, prec_chol = em.m_step(stats, shift, covariance_type, REG)
    return lower_bounds, weights, means, covs, prec_chol


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-8), ("float32", 1e-4)])
@pytest.mark.parametrize("dataset", ["blobs", "anisotropic"])
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_em_matches_sklearn(covariance_type, dataset, dtype, rtol):
    x = _blobs() if dataset == "blobs" else _anisotropic()
    k, n_iter = 3, 5
    resp = _random_resp(x.shape[0], k, seed=5)
    nk, means0, covs0 = _estimate_gaussian_parameters(x, resp, REG, covariance_type)
    weights0 = nk / x.shape[0]
    precisions0 = _precisions_from_chol(
        _compute_precision_cholesky(covs0, covariance_type), covariance_type
    )
    gm = GaussianMixture(
        k, covariance_type=covariance_type, weights_init=weights0,
        means_init=means0, precisions_init=precisions0, tol=0.0, max_iter=n_iter,
        reg_covar=REG, init_params="random", random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(x)
    assert len(gm.lower_bounds_) == n_iter

    cast = lambda a: tf.constant(np.asarray(a, dtype))  # noqa: E731
    prec_chol0 = em.precisions_cholesky_from_precisions(cast(precisions0),
                                                        covariance_type)
    bounds, w, m, c, p = _run_em(cast(x), cast(weights0), cast(means0), prec_chol0,
                                 covariance_type, n_iter, n_batches=3)
    assert w.dtype == dtype
    np.testing.assert_allclose(bounds, gm.lower_bounds_, rtol=rtol)
    scale = np.abs(x).max()
    np.testing.assert_allclose(w.numpy(), gm.weights_, rtol=rtol, atol=rtol * 1e-2)
    np.testing.assert_allclose(m.numpy(), gm.means_, rtol=rtol, atol=rtol * scale)
    cov_scale = np.abs(gm.covariances_).max()
    np.testing.assert_allclose(c.numpy(), gm.covariances_, rtol=rtol,
                               atol=rtol * cov_scale)
    p_scale = np.abs(gm.precisions_cholesky_).max()
    np.testing.assert_allclose(p.numpy(), gm.precisions_cholesky_, rtol=rtol,
                               atol=rtol * p_scale)


# --------------------------------------------------------------------------
# float32 stability (scikit-learn issue #30382)
# --------------------------------------------------------------------------
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_float32_large_offset_is_stable(covariance_type):
    rng = np.random.default_rng(6)
    x64 = 1e4 + rng.normal(size=(2000, 2)) * np.array([1.0, 0.5])
    labels = (x64[:, 0] > 1e4).astype(int)
    resp64 = np.eye(2)[labels] * 0.9 + 0.05
    x32, resp32 = x64.astype(np.float32), resp64.astype(np.float32)
    _, _, ref = _estimate_gaussian_parameters(x64, resp64, REG, covariance_type)

    _, m0, c0, p0 = em.parameters_from_resp(x32, resp32, covariance_type, REG)
    # An M-step with a shift near (not at) the means, as in an EM iteration.
    shift = m0 + 0.01
    stats = _stream_stats(x32, resp32, shift, covariance_type, 3)
    _, _, c1, p1 = em.m_step(stats, shift, covariance_type, REG)
    for c, p in ((c0, p0), (c1, p1)):
        assert c.dtype == tf.float32
        assert np.all(np.isfinite(c.numpy())) and np.all(np.isfinite(p.numpy()))
        np.testing.assert_allclose(c.numpy(), ref, rtol=1e-3, atol=1e-4)

    # The naive E[x^2] - mu^2 diagonal in float32 is far off (or negative).
    nk = resp32.sum(axis=0)
    means = (resp32.T @ x32) / nk[:, None]
    naive = (resp32.T @ (x32 * x32)) / nk[:, None] - means**2
    _, _, ref_diag = _estimate_gaussian_parameters(x64, resp64, 0.0, "diag")
    assert np.max(np.abs(naive - ref_diag) / ref_diag) > 1e-2


# --------------------------------------------------------------------------
# degenerate data and Cholesky failure
# --------------------------------------------------------------------------
def _cov_diagonal(c, covariance_type):
    c = c.numpy()
    if covariance_type in ("full", "tied"):
        return np.diagonal(c, axis1=-2, axis2=-1)
    return c


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_degenerate_data_gives_no_nan(covariance_type, dtype):
    rng = np.random.default_rng(7)
    base = rng.normal(size=(20, 3))
    x = np.concatenate([base, base, base[:5]])  # duplicated points
    x[:, 1] = 5.0  # a constant feature
    x = x.astype(dtype)
    labels = np.arange(x.shape[0]) % 2  # component 2 gets no points
    resp = np.eye(3, dtype=dtype)[labels]
    outs = em.parameters_from_resp(x, resp, covariance_type, REG)
    shift = outs[1]
    stats = em.sufficient_statistics(x, resp, shift, covariance_type)
    outs2 = em.m_step(stats, shift, covariance_type, REG)
    for w, m, c, p in (outs, outs2):
        for t in (w, m, c, p):
            assert np.all(np.isfinite(t.numpy()))
        assert np.all(_cov_diagonal(c, covariance_type) >= REG * (1 - 1e-3))
        assert w.numpy()[2] < 1e-5
    # the empty component: mean falls back to the shift, covariance reg_covar * I
    np.testing.assert_allclose(outs2[1].numpy()[2], shift.numpy()[2])
    if covariance_type != "tied":
        np.testing.assert_allclose(_cov_diagonal(outs2[2], covariance_type)[2], REG,
                                   rtol=1e-6)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_failed_cholesky_suggests_reg_covar(covariance_type):
    x = np.random.default_rng(8).normal(size=(30, 2))
    x[:, 1] = 5.0  # a constant feature: zero variance, and reg_covar=0
    if covariance_type == "spherical":
        x[:, 0] = 5.0  # spherical needs every feature constant
    resp = np.ones((30, 1))
    shift = tf.constant([[x[0, 0] if covariance_type == "spherical" else 0.0, 5.0]],
                        tf.float64)  # the exact constant: zero centred moments
    stats = em.sufficient_statistics(tf.constant(x), tf.constant(resp), shift,
                                     covariance_type)
    with pytest.raises(ValueError, match="increase reg_covar"):
        em.m_step(stats, shift, covariance_type, 0.0)
    graph_m_step = tf.function(lambda s: em.m_step(s, shift, covariance_type, 0.0))
    with pytest.raises(tf.errors.InvalidArgumentError, match="increase reg_covar"):
        graph_m_step(stats)


def test_non_positive_definite_covariance_raises():
    cov = tf.constant([[[1.0, 2.0], [2.0, 1.0]]], tf.float32)
    with pytest.raises(ValueError, match="reg_covar.*float64"):
        em.precisions_cholesky_from_covariances(cov, "full")
    with pytest.raises(ValueError, match="reg_covar"):
        em.precisions_cholesky_from_covariances(tf.constant([1.0, -1.0]), "spherical")


# --------------------------------------------------------------------------
# parameters from labels (the initialisations: tests/ops/test_init.py)
# --------------------------------------------------------------------------
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_parameters_from_labels_equal_one_hot_responsibilities(covariance_type):
    x = tf.constant(_anisotropic() + 50.0)  # far from the origin
    labels = tf.constant(np.random.default_rng(0).integers(0, 4, size=240), tf.int32)
    fast = em.parameters_from_labels(x, labels, 4, covariance_type, REG)
    ref = em.parameters_from_resp(x, init.labels_to_resp(labels, 4, tf.float64),
                                  covariance_type, REG)
    for a, b in zip(fast, ref):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------
# XLA
# --------------------------------------------------------------------------
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_em_iteration_under_xla_matches_eager(covariance_type):
    x = tf.constant(_blobs())
    resp = _random_resp(x.shape[0], 3, seed=10)
    w, m, _, p = em.parameters_from_resp(x, resp, covariance_type, REG)

    def iteration(x, w, m, p):
        stats = em.zero_statistics(3, x.shape[1], covariance_type, x.dtype)
        total = tf.zeros((), x.dtype)
        for xb in tf.split(x, 2):
            log_resp, log_prob = em.e_step(xb, tf.math.log(w), m, p, covariance_type)
            stats = em.add_statistics(
                stats, em.sufficient_statistics(xb, tf.exp(log_resp), m,
                                                covariance_type))
            total += tf.reduce_sum(log_prob)
        return (em.lower_bound(total, x.shape[0]),) + em.m_step(
            stats, m, covariance_type, REG)

    eager = iteration(x, w, m, p)
    compiled = tf.function(iteration, jit_compile=True)(x, w, m, p)
    for a, b in zip(eager, compiled):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------
# batch_statistics (matrix-product forms)
# --------------------------------------------------------------------------
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_batch_statistics_fast_equals_exact(covariance_type):
    x = _blobs(n=300, d=4, k=3) + 50.0
    resp = _random_resp(300, 3, seed=2)
    w, m, _, p = em.parameters_from_resp(x, resp, covariance_type, REG)
    m = m + 0.1  # a shift near, not at, the means
    fast, lp_fast = em.batch_statistics(x, w, m, p, covariance_type, fast=True)
    exact, lp_exact = em.batch_statistics(x, w, m, p, covariance_type, fast=False)
    # the exact forms are the textbook formulas
    log_resp, log_prob = em.e_step(x, tf.math.log(w), m, p, covariance_type)
    dx = x[:, None, :] - m.numpy()
    r = np.exp(log_resp.numpy())
    np.testing.assert_allclose(exact.sum_dx.numpy(), np.einsum("nk,nkd->kd", r, dx),
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(lp_exact.numpy(), log_prob.numpy().sum(), rtol=1e-12)
    for a, b in zip(fast, exact):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(lp_fast.numpy(), lp_exact.numpy(), rtol=1e-12)


@pytest.mark.parametrize("masked", [False, True])
def test_quadratic_feature_statistics_equal_the_batch_statistics(masked):
    # "full" over precomputed features of x - center: the same Stats (around
    # the shift) and log-likelihood sum as batch_statistics, float64
    x = _blobs(n=300, d=4, k=3) + 50.0
    resp = _random_resp(300, 3, seed=2)
    w, m, _, p = em.parameters_from_resp(x, resp, "full", REG)
    m = m + 0.1
    mask = (np.arange(300) < 230).astype("float64")
    want, lp_want = em.batch_statistics(x, w, m, p, "full",
                                        mask=tf.constant(mask) if masked else None)
    center = tf.constant(x.mean(0) + 0.3)
    phi = em.covariance.get("full").quadratic_features_of(tf.constant(x) - center)
    a, b, kappa = em.quadratic_log_joint_terms(
        tf.math.log(w), em.gaussian.log_det_cholesky(p, "full", 4), m, p, center, "full")
    assert float(kappa) * np.finfo(np.float64).eps < em.EXPANSION_RTOL
    nk, sums, lp = em.quadratic_feature_statistics(
        phi, tf.constant(mask) if masked else None, a, b)
    got = em.statistics_of_quadratic_sums(nk, sums, m, center, "full")
    for u, v in zip(got, want):
        np.testing.assert_allclose(u.numpy(), v.numpy(), rtol=1e-9, atol=1e-8)
    np.testing.assert_allclose(lp.numpy(), lp_want.numpy(), rtol=1e-12)


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_float32_tight_far_components_use_float64(covariance_type):
    # scikit-learn's issue #30382 (its regression test): two far-apart points,
    # one per component. The expanded float32 forms would cancel (kappa ~ 1e8);
    # batch_statistics falls back to float64 and the variances are exact.
    x = np.array([[9999.0], [0.0]], np.float32)
    m = tf.constant([[9999.0], [0.0]], tf.float32)
    p = tf.constant(np.full((2, 1) if covariance_type == "diag" else (2,), 1 / 0.1**0.5),
                    tf.float32)
    w = tf.constant([0.5, 0.5], tf.float32)
    kappa = float(em.gaussian.expansion_condition(m, p, covariance_type))
    assert kappa * np.finfo(np.float32).eps > em.EXPANSION_RTOL
    stats, lp = em.batch_statistics(x, w, m, p, covariance_type)
    assert stats.sum_dxdx.dtype == tf.float32
    np.testing.assert_allclose(stats.sum_dxdx.numpy(), 0.0, atol=1e-6)
    _, means, cov, _ = em.m_step(stats, m, covariance_type, 0.1)
    np.testing.assert_allclose(means.numpy().ravel(), [9999.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(cov.numpy().ravel(), 0.1, rtol=1e-5)
    # the log-likelihood is exact too: each point sits on its own mean
    want = np.log(0.5) - 0.5 * np.log(2 * np.pi * 0.1)
    np.testing.assert_allclose(lp.numpy(), 2 * want, rtol=1e-5)


# --------------------------------------------------------------------------
# stepwise (online) EM
# --------------------------------------------------------------------------
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_stepwise_update_equals_em_on_the_weighted_union(covariance_type):
    # Running statistics of data A (a fraction-weighted summary, around A's
    # means) stepped with a batch B equal the M-step on A and B weighted
    # (1 - step) / n_A and step / n_B.
    xa, xb = _blobs(seed=1, n=120, d=3) + 10.0, _blobs(seed=2, n=80, d=3) + 10.0
    ra, rb = _random_resp(120, 3, seed=6), _random_resp(80, 3, seed=7)
    step = 0.3
    _, mu_a, _, _ = em.parameters_from_resp(xa, ra, covariance_type, REG)
    sa = em.sufficient_statistics(xa, ra, mu_a, covariance_type)
    running = em.recentred_statistics(em.Stats(*(t / 120 for t in sa)), covariance_type)
    np.testing.assert_allclose(running.sum_dx.numpy(), 0.0)
    # the batch's statistics around the current (running) means
    shift = mu_a  # the current means
    sb = em.sufficient_statistics(xb, rb, shift, covariance_type)
    total = em.stepwise_statistics(running, sb, 80, step)
    got = em.m_step(total, shift, covariance_type, REG)

    x = np.concatenate([xa, xb])
    r = np.concatenate([ra * (1 - step) / 120, rb * step / 80])
    union = em.sufficient_statistics(x, r, mu_a + 0.5, covariance_type)
    want = em.m_step(union, mu_a + 0.5, covariance_type, REG)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_scatter_from_covariances_inverts_the_m_step(covariance_type):
    x = _blobs(n=200, d=3)
    w, mu, cov, _ = em.parameters_from_resp(x, _random_resp(200, 3, 8), covariance_type,
                                            1e-3)
    scatter = em.scatter_from_covariances(w, cov, covariance_type, 1e-3, 3)
    stats = em.Stats(w, tf.zeros_like(mu), scatter)
    w2, mu2, cov2, _ = em.m_step(stats, mu, covariance_type, 1e-3)
    np.testing.assert_allclose(mu2.numpy(), mu.numpy())
    np.testing.assert_allclose(cov2.numpy(), cov.numpy(), rtol=1e-9)
    np.testing.assert_allclose(w2.numpy(), w.numpy(), rtol=1e-9)
