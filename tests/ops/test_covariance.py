"""Tests for keras_gmm.ops.covariance against naive NumPy references."""

import numpy as np
import pytest
import tensorflow as tf
from sklearn.mixture import GaussianMixture

from keras_gmm.ops import covariance

TYPES = covariance.COVARIANCE_TYPES
K, D = 3, 4


def _random_covariances(ctype, seed=0):
    """Covariances in scikit-learn's layout, and the full [K, D, D] matrices."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(K, D, D))
    full = a @ np.swapaxes(a, -1, -2) + D * np.eye(D)
    if ctype == "full":
        return full, full
    if ctype == "tied":
        return full[0], np.broadcast_to(full[0], (K, D, D))
    if ctype == "diag":
        var = rng.uniform(0.5, 2.0, size=(K, D))
        return var, np.stack([np.diag(v) for v in var])
    var = rng.uniform(0.5, 2.0, size=K)
    return var, np.stack([v * np.eye(D) for v in var])


def _factor(ctype, seed=0):
    cov, mats = _random_covariances(ctype, seed)
    p = covariance.get(ctype).precisions_cholesky_from_covariances(tf.constant(cov))
    return cov, mats, p


@pytest.mark.parametrize("ctype", TYPES)
def test_shapes_and_counts_match_scikit_learn(ctype):
    c = covariance.get(ctype)
    x = np.random.default_rng(0).normal(size=(60, D))
    gm = GaussianMixture(K, covariance_type=ctype, max_iter=200, random_state=0).fit(x)
    assert c.precisions_cholesky_shape(K, D) == gm.precisions_cholesky_.shape
    assert c.second_moment_shape(K, D) == gm.covariances_.shape
    # scikit-learn's parameter count: covariances + means + weights - 1
    assert c.num_parameters(K, D) + K * D + K - 1 == gm._n_parameters()
    ident = c.identity_precisions_cholesky(K, D)
    assert ident.shape == c.precisions_cholesky_shape(K, D)
    np.testing.assert_allclose(c.covariances(tf.constant(ident)).numpy(),
                               _identity_covariances(ctype))


def _identity_covariances(ctype):
    return {"full": np.broadcast_to(np.eye(D), (K, D, D)), "tied": np.eye(D),
            "diag": np.ones((K, D)), "spherical": np.ones(K)}[ctype]


@pytest.mark.parametrize("ctype", TYPES)
def test_conversions_round_trip(ctype):
    c = covariance.get(ctype)
    cov, mats, p = _factor(ctype)
    np.testing.assert_allclose(c.covariances(p).numpy(), cov, rtol=1e-10)
    precisions = c.precisions(p).numpy()
    want = np.linalg.inv(mats)
    if ctype == "tied":
        want = want[0]
    elif not c.matrix:
        want = 1.0 / cov
    np.testing.assert_allclose(precisions, want, rtol=1e-9)
    again = c.precisions_cholesky_from_precisions(tf.constant(precisions))
    np.testing.assert_allclose(again.numpy(), p.numpy(), rtol=1e-9, atol=1e-12)
    assert c.is_positive_definite(precisions)
    assert not c.is_positive_definite(-precisions)
    np.testing.assert_allclose(
        c.marginal_variances(tf.constant(cov), K, D).numpy(),
        np.stack([np.diag(m) for m in mats]), rtol=1e-12)


@pytest.mark.parametrize("ctype", TYPES)
def test_log_det_and_mahalanobis_equal_the_textbook_formulas(ctype):
    c = covariance.get(ctype)
    _, mats, p = _factor(ctype, seed=1)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(7, D))
    means = rng.normal(size=(K, D))
    log_det = np.broadcast_to(c.log_det(p, D).numpy(), (K,))
    np.testing.assert_allclose(log_det, -0.5 * np.linalg.slogdet(mats)[1], rtol=1e-10)
    diff = x[:, None, :] - means  # [N, K, D]
    want = np.einsum("nki,kij,nkj->nk", diff, np.linalg.inv(mats), diff)
    got = c.sq_mahalanobis(tf.constant(diff), p).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-9)
    gemm = c.sq_mahalanobis_gemm(tf.constant(x), tf.constant(means), p).numpy()
    np.testing.assert_allclose(gemm, want, rtol=1e-9)


@pytest.mark.parametrize("ctype", TYPES)
def test_noise_stddevs_and_cholesky_have_the_component_covariance(ctype):
    c = covariance.get(ctype)
    _, mats, p = _factor(ctype, seed=3)
    chol = c.per_component(c.covariance_cholesky(p, D), K, event_rank=2).numpy()
    np.testing.assert_allclose(chol @ np.swapaxes(chol, -1, -2), mats, rtol=1e-10)
    std = c.per_component(c.stddevs(p, D), K, event_rank=1).numpy()
    np.testing.assert_allclose(std**2, np.stack([np.diag(m) for m in mats]), rtol=1e-10)
    # L z for z = identity columns gives L itself, component by component
    index = tf.constant([0, 2, 1])
    factor = c.select(p, index, batch_rank=0)
    z = tf.constant(np.eye(D)[None].repeat(3, 0))  # [3, D, D]: D noise vectors
    noise = tf.stack([c.scale_noise(z[:, :, j], factor) for j in range(D)], -1)
    got = noise.numpy() @ np.swapaxes(noise.numpy(), -1, -2)
    np.testing.assert_allclose(got, mats[index.numpy()], rtol=1e-9)


@pytest.mark.parametrize("ctype", TYPES)
@pytest.mark.parametrize("expand", [False, True])
def test_moments_scatter_and_covariances_equal_the_naive_sums(ctype, expand):
    c = covariance.get(ctype)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(50, D))
    resp = rng.uniform(size=(50, K))
    resp /= resp.sum(1, keepdims=True)
    shift = rng.normal(size=(K, D)) * 0.1
    sum_dx, sum_dxdx = c.moments(tf.constant(resp), tf.constant(x), tf.constant(shift),
                                 expand)
    dx = x[:, None, :] - shift
    np.testing.assert_allclose(sum_dx.numpy(), np.einsum("nk,nkd->kd", resp, dx),
                               rtol=1e-10)
    outer = np.einsum("nk,nki,nkj->kij", resp, dx, dx)
    want = {"full": outer, "tied": outer.sum(0), "diag": np.einsum("kii->ki", outer),
            "spherical": np.einsum("kii->k", outer)}[ctype]
    np.testing.assert_allclose(sum_dxdx.numpy(), want, rtol=1e-9, atol=1e-12)
    # scatter around the weighted means, then the M-step covariances
    nk = resp.sum(0)
    d = sum_dx.numpy() / nk[:, None]
    scatter = c.scatter(tf.constant(nk), sum_dx, sum_dxdx, tf.constant(nk), tf.constant(d))
    means = shift + d
    dm = x[:, None, :] - means
    around = np.einsum("nk,nki,nkj->kij", resp, dm, dm)
    want = {"full": around, "tied": around.sum(0), "diag": np.einsum("kii->ki", around),
            "spherical": np.einsum("kii->k", around)}[ctype]
    np.testing.assert_allclose(scatter.numpy(), want, rtol=1e-9, atol=1e-12)
    cov = c.covariances_from_scatter(scatter, tf.constant(nk), D, 1e-3)
    back = c.scatter_from_covariances(tf.constant(nk), cov, 1e-3, D)
    np.testing.assert_allclose(back.numpy(), want, rtol=1e-9, atol=1e-12)


def test_full_quadratic_features_carry_the_mahalanobis_terms_and_the_moments():
    # phi(x) @ W + q is ||P.T (x - mu)||^2, and resp.T @ phi gives the
    # moments around any shift: naive NumPy sums, float64
    c = covariance.get("full")
    assert c.quadratic_features and not covariance.get("tied").quadratic_features
    assert not covariance.get("diag").quadratic_features
    _, mats, p = _factor("full", seed=2)
    rng = np.random.default_rng(5)
    x, center = rng.normal(size=(40, D)), rng.normal(size=D)
    means, shift = rng.normal(size=(K, D)), rng.normal(size=(K, D))
    phi = c.quadratic_features_of(tf.constant(x - center)).numpy()
    assert phi.shape == (40, c.num_quadratic_features(D)) == (40, D * (D + 3) // 2)
    weights, q, kappa = c.quadratic_weights(tf.constant(means - center), p)
    dx = x[:, None, :] - means
    want = np.einsum("nki,kij,nkj->nk", dx, np.linalg.inv(mats), dx)
    np.testing.assert_allclose(phi @ weights.numpy() + q.numpy(), want, rtol=1e-10)
    m = np.abs(means - center) + np.sqrt(np.einsum("kii->ki", mats))
    lam = np.abs(np.linalg.inv(mats))
    np.testing.assert_allclose(float(kappa),
                               1 + np.einsum("ki,kij,kj->k", m, lam, m).max())
    resp = rng.uniform(size=(40, K))
    sums = resp.T @ phi
    sum_dx, sum_dxdx = c.moments_from_quadratic_sums(
        tf.constant(resp.sum(0)), tf.constant(sums), tf.constant(shift - center))
    ds = x[:, None, :] - shift
    np.testing.assert_allclose(sum_dx.numpy(), np.einsum("nk,nkd->kd", resp, ds),
                               rtol=1e-10)
    np.testing.assert_allclose(sum_dxdx.numpy(),
                               np.einsum("nk,nki,nkj->kij", resp, ds, ds), rtol=1e-9)


@pytest.mark.parametrize("ctype", TYPES)
def test_flat_head_scales(ctype):
    c = covariance.get(ctype)
    raw = c.initial_raw_scales(K, D, 0.0)
    assert raw.shape == (c.num_scale_params(K, D),)
    p = c.precisions_cholesky_from_raw(tf.constant(raw[None]), K, D, 1e-3)
    std = c.per_component(c.stddevs(p, D), K, event_rank=1).numpy()
    np.testing.assert_allclose(std, np.log(2.0) + 1e-3, rtol=1e-6)  # softplus(0)
    cov = c.per_component(c.covariance_matrices(p, D), K, event_rank=2).numpy()
    off = cov - np.einsum("...ii->...i", cov)[..., None] * np.eye(D)
    np.testing.assert_allclose(off, 0.0, atol=1e-12)


def test_within_sums_per_component_values_and_keeps_a_shared_one():
    w = tf.constant([0.2, 0.8], tf.float64)
    v = tf.constant([[1.0, 2.0], [3.0, 4.0]], tf.float64)
    np.testing.assert_allclose(covariance.get("diag").within(w, v, 1).numpy(), [2.6, 3.6])
    shared = tf.constant([5.0, 6.0], tf.float64)
    assert covariance.get("tied").within(w, shared, 1) is shared


def test_check_names_the_argument_and_the_choices():
    assert covariance.check("tied") == "tied"
    assert covariance.get(covariance.get("diag")) is covariance.get("diag")
    with pytest.raises(ValueError, match=r"`covariance_type` must be one of .*'full'.*"
                       r"received covariance_type='ful'"):
        covariance.get("ful")
    with pytest.raises(ValueError, match=r"`kind` must be one of \('diag', 'full'\)"):
        covariance.check("tied", arg_name="kind", supported=("diag", "full"))
    with pytest.raises(ValueError, match="received covariance_type=3"):
        covariance.check(3)


@pytest.mark.parametrize("ctype", TYPES)
def test_log_precision_diagonal_is_the_log_of_the_precision_matrices_diagonal(ctype):
    _, mats, p = _factor(ctype, seed=4)
    c = covariance.get(ctype)
    got = c.per_component(c.log_precision_diagonal(p, D), K, event_rank=1).numpy()
    want = np.log(np.diagonal(np.linalg.inv(mats), axis1=-2, axis2=-1))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # Huge precisions (tiny covariances) do not overflow the squares.
    if ctype in ("full", "diag"):
        tiny = c.precisions_cholesky_from_covariances(tf.constant(
            _random_covariances(ctype, 5)[0] * 1e-300))
        assert np.all(np.isfinite(c.log_precision_diagonal(tiny, D).numpy()))


def test_full_raw_scales_invert_the_flat_head_rule():
    c = covariance.get("full")
    _, _, p = _factor("full", seed=6)
    for min_scale in (0.0, 1e-3):
        raw = c.raw_scales_from_precisions_cholesky(p.numpy(), min_scale)
        assert raw.shape == (K, D * (D + 1) // 2)
        back = c.precisions_cholesky_from_raw(tf.constant(raw.reshape(-1)), K, D, min_scale)
        np.testing.assert_allclose(back.numpy(), p.numpy(), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="min_scale=10.0"):
        c.raw_scales_from_precisions_cholesky(p.numpy(), 10.0)
