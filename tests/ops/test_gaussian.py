"""keras_gmm.ops.gaussian against naive NumPy/SciPy references."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import special, stats

from keras_gmm.ops import gaussian

COV_TYPES = gaussian.COVARIANCE_TYPES


def random_precision_cholesky(rng, k, d, covariance_type):
    """Random precision Cholesky factors in scikit-learn's layout, and the
    matching covariance matrices ``[K, D, D]`` computed naively."""

    def upper(n):
        m = np.triu(rng.normal(scale=0.3, size=(n, n)))
        m[np.diag_indices(n)] = rng.uniform(0.5, 2.0, size=n)
        return m

    if covariance_type == "full":
        p = np.stack([upper(d) for _ in range(k)])
        cov = np.stack([np.linalg.inv(pk @ pk.T) for pk in p])
    elif covariance_type == "tied":
        p = upper(d)
        cov = np.repeat(np.linalg.inv(p @ p.T)[None], k, axis=0)
    elif covariance_type == "diag":
        p = rng.uniform(0.5, 2.0, size=(k, d))
        cov = np.stack([np.diag(1.0 / pk**2) for pk in p])
    else:
        p = rng.uniform(0.5, 2.0, size=k)
        cov = np.stack([np.eye(d) / pk**2 for pk in p])
    return p, cov


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_log_gaussian_prob_matches_scipy(covariance_type):
    rng = np.random.default_rng(0)
    k, d, n = 3, 4, 50
    p, cov = random_precision_cholesky(rng, k, d, covariance_type)
    means = rng.normal(size=(k, d))
    x = rng.normal(scale=2.0, size=(n, d))
    got = gaussian.log_gaussian_prob(
        tf.constant(x), tf.constant(means), tf.constant(p), covariance_type
    ).numpy()
    want = np.stack(
        [stats.multivariate_normal(means[j], cov[j]).logpdf(x) for j in range(k)],
        axis=-1,
    )
    np.testing.assert_allclose(got, want, rtol=1e-10)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_log_mixture_prob_and_responsibilities(covariance_type):
    rng = np.random.default_rng(1)
    k, d, n = 4, 3, 40
    p, cov = random_precision_cholesky(rng, k, d, covariance_type)
    means = rng.normal(size=(k, d))
    w = rng.dirichlet(np.ones(k))
    x = rng.normal(size=(n, d))
    comp = np.stack(
        [stats.multivariate_normal(means[j], cov[j]).logpdf(x) for j in range(k)],
        axis=-1,
    )
    want = special.logsumexp(np.log(w) + comp, axis=-1)
    args = (tf.constant(x), tf.constant(np.log(w)), tf.constant(means), tf.constant(p))
    got = gaussian.log_mixture_prob(*args, covariance_type).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10)
    log_resp, log_prob = gaussian.log_responsibilities(*args, covariance_type)
    np.testing.assert_allclose(log_prob.numpy(), want, rtol=1e-10)
    np.testing.assert_allclose(np.exp(log_resp.numpy()).sum(-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(
        log_resp.numpy(), np.log(w) + comp - want[:, None], rtol=1e-9, atol=1e-9
    )
    # the same in probability space with one exp (EM's E-step), also with
    # a precomputed log-determinant
    log_det = gaussian.log_det_cholesky(tf.constant(p), covariance_type, d)
    for kwargs in ({}, {"log_det": log_det}):
        resp, log_prob = gaussian.responsibilities(*args, covariance_type, **kwargs)
        np.testing.assert_allclose(log_prob.numpy(), want, rtol=1e-10)
        np.testing.assert_allclose(resp.numpy(), np.exp(np.log(w) + comp - want[:, None]),
                                   rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_covariances_and_log_det(covariance_type):
    rng = np.random.default_rng(2)
    k, d = 3, 4
    p, cov = random_precision_cholesky(rng, k, d, covariance_type)
    got = gaussian.covariances(tf.constant(p), covariance_type, d).numpy()
    want = cov[0] if covariance_type == "tied" else cov
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    log_det = gaussian.log_det_cholesky(tf.constant(p), covariance_type, d).numpy()
    want_log_det = -0.5 * np.linalg.slogdet(want)[1]
    np.testing.assert_allclose(log_det, want_log_det, rtol=1e-10)
    std = gaussian.stddevs(tf.constant(p), covariance_type, d).numpy()
    np.testing.assert_allclose(
        std, np.sqrt(np.diagonal(want, axis1=-2, axis2=-1)), rtol=1e-10
    )


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_scale_noise_has_the_component_covariance(covariance_type):
    rng = np.random.default_rng(3)
    d = 3
    p, cov = random_precision_cholesky(rng, 1, d, covariance_type)
    p_one = p if covariance_type == "tied" else p[0]
    z = tf.random.stateless_normal([200_000, d], seed=[1, 2], dtype=tf.float64)
    p_b = tf.broadcast_to(tf.constant(p_one), [200_000] + list(np.shape(p_one)))
    noise = gaussian.scale_noise(z, p_b, covariance_type).numpy()
    np.testing.assert_allclose(np.cov(noise.T), cov[0], atol=0.02)


def test_batched_parameters_broadcast_like_an_mdn():
    """Per-sample parameters [B, K, ...] score per-sample points [B, D]."""
    rng = np.random.default_rng(4)
    b, k, d = 5, 2, 3
    ps, covs = zip(*[random_precision_cholesky(rng, k, d, "full") for _ in range(b)])
    means = rng.normal(size=(b, k, d))
    x = rng.normal(size=(b, d))
    got = gaussian.log_gaussian_prob(
        tf.constant(x), tf.constant(means), tf.constant(np.stack(ps)), "full"
    ).numpy()
    for i in range(b):
        for j in range(k):
            want = stats.multivariate_normal(means[i, j], covs[i][j]).logpdf(x[i])
            np.testing.assert_allclose(got[i, j], want, rtol=1e-10)


def test_unknown_covariance_type_is_a_clear_error():
    with pytest.raises(ValueError, match="covariance_type.*'diagonal'"):
        gaussian.log_gaussian_prob(np.zeros((2, 1)), np.zeros((1, 1)), np.ones((1, 1)),
                                   "diagonal")


# --------------------------------------------------------------------------
# gaussian.log_gaussian_prob: un-batched GEMM fast path == general path
# --------------------------------------------------------------------------
@pytest.mark.parametrize("offset", [0.0, 1e4])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_gemm_fast_path_equals_general_path(covariance_type, dtype, offset):
    rng = np.random.default_rng(11)
    k, d = 4, 3
    x64 = rng.normal(size=(50, d)) * 2
    means64 = rng.normal(size=(k, d))
    if covariance_type in ("full", "tied"):
        shape = (k, d, d) if covariance_type == "full" else (d, d)
        p64 = np.triu(rng.normal(size=shape) * 0.3) + np.eye(d)
    else:
        p64 = rng.uniform(0.5, 1.5, size=(k, d) if covariance_type == "diag" else (k,))
    args = [tf.constant(a, dtype) for a in (x64 + offset, means64 + offset, p64)]
    ref = gaussian.log_gaussian_prob(  # exact: float64, no offset, general path
        x64[None], means64[None], p64[None], covariance_type)[0].numpy()
    # full/tied always take the product form; diag/spherical on request.
    expand = covariance_type in ("diag", "spherical")
    assert gaussian._use_gemm(*args, covariance_type, expand)
    assert gaussian._use_gemm(*args, covariance_type, False) != expand
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(args)
        fast = gaussian.log_gaussian_prob(*args, covariance_type, expand=True)
        general = gaussian.log_gaussian_prob(*[a[None] for a in args],
                                             covariance_type)[0]
    if dtype == "float64" and offset == 0.0:
        np.testing.assert_allclose(fast.numpy(), general.numpy(), rtol=1e-12)
        for a in args:
            np.testing.assert_allclose(tape.gradient(fast, a).numpy(),
                                       tape.gradient(general, a).numpy(), rtol=1e-10,
                                       atol=1e-12)
    else:
        # The fast path is no less accurate than the general one (the offset
        # 1e4 itself costs float32 ~1e-3 in the inputs).
        err_fast = np.abs(fast.numpy() - ref).max()
        err_general = np.abs(general.numpy() - ref).max()
        assert err_fast <= 2 * err_general + 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_expanded_form_error_is_bounded_by_the_condition(covariance_type):
    # Tight components far apart (kappa ~ 1e6): the expanded float32 form loses
    # about eps * D * kappa, as documented, and expansion_condition says so.
    rng = np.random.default_rng(3)
    k, d = 3, 4
    means64 = rng.normal(size=(k, d)) * 100.0
    shape = (k, d) if covariance_type == "diag" else (k,)
    p64 = np.full(shape, 10.0)
    x64 = means64[rng.integers(0, k, 200)] + rng.normal(size=(200, d)) * 0.1
    args = [tf.constant(a, tf.float32) for a in (x64, means64, p64)]
    kappa = float(gaussian.expansion_condition(*args[1:], covariance_type))
    assert kappa > 1e5
    ref = gaussian.log_gaussian_prob(x64, means64, p64, covariance_type).numpy()
    exact = gaussian.log_gaussian_prob(*args, covariance_type).numpy()
    fast = gaussian.log_gaussian_prob(*args, covariance_type, expand=True).numpy()
    own = np.abs(ref) < 1e3  # each point's own component
    eps = np.finfo(np.float32).eps
    assert np.abs(exact - ref)[own].max() < 1e-3
    assert np.abs(fast - ref)[own].max() < 4 * eps * d * kappa
