"""keras_gmm.ops.kl against direct NumPy formulas and Monte Carlo estimates."""

import numpy as np
import pytest
import tensorflow as tf
from scipy.special import logsumexp

from keras_gmm.ops import kl

K, D = 4, 3


def random_case(seed, batch=5):
    rng = np.random.default_rng(seed)
    return {
        "z_mean": rng.normal(size=(batch, D)),
        "z_log_var": rng.normal(-1.0, 0.7, size=(batch, D)),
        "logits": rng.normal(size=K),
        "means": rng.normal(scale=2.0, size=(K, D)),
        "log_variances": rng.normal(-0.5, 0.5, size=(K, D)),
    }


def as_tensors(case, dtype=tf.float64):
    """The keyword arguments of the kl functions: the "diag" prior as its
    precision factors ``exp(-v / 2)``."""
    t = {k: tf.constant(v, dtype) for k, v in case.items() if k != "log_variances"}
    t["precisions_cholesky"] = kl.precisions_cholesky_of_log_variances(
        tf.constant(case["log_variances"], dtype))
    return t


def log_normal_diag(z, mean, log_var):
    """log N(z; mean, diag(exp(log_var))), summed over the last axis."""
    return -0.5 * np.sum(
        np.log(2 * np.pi) + log_var + (z - mean) ** 2 / np.exp(log_var), axis=-1
    )


def numpy_vade(case):
    """VaDE's KL written as in Jiang et al. (2017), eq. (17) terms, with the
    responsibilities gamma_c ∝ pi_c exp(E_q[log N(z; mu_c, var_c)])."""
    m, s = case["z_mean"], case["z_log_var"]
    mu, v = case["means"], case["log_variances"]
    # E_q[log N(z; mu_c, var_c)] = -1/2 sum_d (log 2pi + v + (exp(s) + (m - mu)^2) / exp(v))
    ell = -0.5 * np.sum(
        np.log(2 * np.pi)
        + v[None]
        + (np.exp(s)[:, None] + (m[:, None] - mu[None]) ** 2) / np.exp(v[None]),
        axis=-1,
    )
    return numpy_vade_of_ell(case, ell)


def numpy_vade_of_ell(case, ell):
    """VaDE's KL and log gamma from the expected log-densities ``ell [B, K]``
    (any prior): ``(kl, log_gamma, ell)``."""
    log_pi = case["logits"] - logsumexp(case["logits"])
    log_joint = log_pi + ell
    log_gamma = log_joint - logsumexp(log_joint, axis=1, keepdims=True)
    gamma = np.exp(log_gamma)
    e_log_q = -0.5 * np.sum(np.log(2 * np.pi) + 1.0 + case["z_log_var"], axis=-1)
    # KL = E[log q(z|x)] + E[log q(c|x)] - E[log p(z|c)] - E[log p(c)]
    kl_value = (
        e_log_q
        + np.sum(gamma * log_gamma, axis=1)
        - np.sum(gamma * ell, axis=1)
        - np.sum(gamma * log_pi, axis=1)
    )
    return kl_value, log_gamma, ell


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vade_kl_equals_numpy_formula(seed):
    case = random_case(seed)
    want_kl, want_log_gamma, want_ell = numpy_vade(case)
    t = as_tensors(case)
    got_kl, got_log_gamma = kl.vade_kl(**t)
    np.testing.assert_allclose(got_kl.numpy(), want_kl, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got_log_gamma.numpy(), want_log_gamma, atol=1e-10)
    ell = kl.expected_log_prob(t["z_mean"], t["z_log_var"], t["means"],
                               t["precisions_cholesky"])
    np.testing.assert_allclose(ell.numpy(), want_ell, rtol=1e-10)
    np.testing.assert_allclose(
        kl.log_responsibilities(**t).numpy(), want_log_gamma, atol=1e-10
    )
    # float32 (the layer's dtype) agrees to float32 precision.
    got32, _ = kl.vade_kl(**as_tensors(case, tf.float32))
    np.testing.assert_allclose(got32.numpy(), want_kl, rtol=1e-5, atol=1e-4)


def test_vade_kl_matches_monte_carlo_and_bounds_the_marginal_kl():
    case = random_case(3, batch=3)
    t = as_tensors(case)
    want_kl, log_gamma, _ = numpy_vade(case)
    rng = np.random.default_rng(0)
    s = 200_000
    m, lv = case["z_mean"], case["z_log_var"]
    z = m + np.exp(0.5 * lv) * rng.normal(size=(s,) + m.shape)  # [S, B, D]
    log_q = log_normal_diag(z, m, lv)  # [S, B]
    log_pi = case["logits"] - logsumexp(case["logits"])
    log_pz_c = np.stack(
        [log_normal_diag(z, case["means"][c], case["log_variances"][c]) for c in range(K)],
        axis=-1,
    )  # [S, B, K]
    gamma = np.exp(log_gamma)
    # KL(q(z, c) || p(z, c)) = E_q(z)[log q(z) + sum_c gamma_c (log gamma_c - log pi_c
    # - log p(z | c))], estimated by Monte Carlo over z.
    mc_vade = np.mean(
        log_q + np.sum(gamma * (log_gamma - log_pi - log_pz_c), axis=-1), axis=0
    )
    np.testing.assert_allclose(want_kl, mc_vade, rtol=0.02, atol=0.02)
    # The MC term of the layer, log q(z) - log p(z), averaged: KL(q(z) || p(z)).
    mc = kl.mc_kl(
        tf.constant(z), t["z_mean"], t["z_log_var"], t["logits"], t["means"],
        t["precisions_cholesky"],
    ).numpy()
    want_mc = log_q - logsumexp(log_pi + log_pz_c, axis=-1)
    np.testing.assert_allclose(mc, want_mc, rtol=1e-9, atol=1e-9)
    marginal_kl = mc.mean(axis=0)
    # KL(q(z,c)||p(z,c)) = KL(q(z)||p(z)) + E[KL(q(c)||p(c|z))] >= KL(q(z)||p(z)).
    assert np.all(want_kl >= marginal_kl - 0.01), (want_kl, marginal_kl)
    assert np.all(marginal_kl > 0)


def test_log_posterior_prob_and_entropy():
    case = random_case(4)
    t = as_tensors(case)
    z = np.random.default_rng(1).normal(size=case["z_mean"].shape)
    got = kl.log_posterior_prob(tf.constant(z), t["z_mean"], t["z_log_var"]).numpy()
    np.testing.assert_allclose(
        got, log_normal_diag(z, case["z_mean"], case["z_log_var"]), rtol=1e-12
    )
    # -E_q[log q] is the entropy of a diagonal Gaussian.
    entropy = 0.5 * np.sum(np.log(2 * np.pi * np.e) + case["z_log_var"], axis=-1)
    np.testing.assert_allclose(
        -kl.negative_entropy(t["z_log_var"]).numpy(), entropy, rtol=1e-12
    )


@pytest.mark.parametrize("z_scale", [1e4, -1e4])
@pytest.mark.parametrize("log_var", [30.0, -30.0])
def test_extreme_inputs_give_finite_normalised_responsibilities(z_scale, log_var):
    rng = np.random.default_rng(0)
    f32 = tf.float32
    z_mean = tf.constant(z_scale * rng.choice([-1.0, 1.0], size=(6, D)), f32)
    z_log_var = tf.fill([6, D], tf.constant(log_var, f32))
    for prior_log_var in (30.0, -30.0, 0.0):
        logits = tf.constant(rng.normal(size=K), f32)
        means = tf.constant(rng.normal(size=(K, D)), f32)
        factors = kl.precisions_cholesky_of_log_variances(
            tf.fill([K, D], tf.constant(prior_log_var, f32)))
        log_gamma = kl.log_responsibilities(z_mean, z_log_var, logits, means, factors)
        gamma = tf.exp(log_gamma).numpy()
        assert np.all(np.isfinite(log_gamma.numpy()))
        np.testing.assert_allclose(gamma.sum(axis=-1), 1.0, atol=1e-5)
        value, _ = kl.vade_kl(z_mean, z_log_var, logits, means, factors)
        assert np.all(np.isfinite(value.numpy()))
        assert np.all(value.numpy() > -1e-3 * np.abs(value.numpy()).max() - 1e-3)


def test_large_posterior_variances_exact_below_the_limit():
    """Log-variance ratios up to MAX_LOG_VARIANCE_RATIO (50): the exact
    formulas (float64 reference), although the trace term is huge."""
    case = random_case(5)
    case["z_log_var"] = case["z_log_var"] + 40.0
    want_kl, want_log_gamma, want_ell = numpy_vade(case)
    t = as_tensors(case)
    got_kl, got_log_gamma = kl.vade_kl(**t)
    np.testing.assert_allclose(got_kl.numpy(), want_kl, rtol=1e-10)
    np.testing.assert_allclose(
        kl.expected_log_prob(t["z_mean"], t["z_log_var"], t["means"],
                             t["precisions_cholesky"]).numpy(), want_ell, rtol=1e-10)
    # The reference's softmax of values near -1e17 keeps only the largest
    # differences; ours cancels the common part first, so it is at least as
    # peaked: compare the argmax and where the reference is confident.
    np.testing.assert_array_equal(got_log_gamma.numpy().argmax(1), want_log_gamma.argmax(1))


@pytest.mark.parametrize("log_var", [89.0, 200.0, 1e4])
def test_beyond_the_limit_finite_increasing_and_c1(log_var):
    f32 = tf.float32
    rng = np.random.default_rng(1)
    args = dict(
        z_mean=tf.constant(rng.normal(size=(4, D)), f32),
        logits=tf.constant(rng.normal(size=K), f32),
        means=tf.constant(rng.normal(size=(K, D)), f32),
        precisions_cholesky=kl.precisions_cholesky_of_log_variances(
            tf.constant(rng.normal(-0.5, 0.5, size=(K, D)), f32)),
    )
    s = tf.Variable(tf.fill([4, D], tf.constant(log_var, f32)))
    with tf.GradientTape() as tape:
        value, log_gamma = kl.vade_kl(z_log_var=s, **args)
    grad = tape.gradient(value, s).numpy()
    assert np.all(np.isfinite(value.numpy())) and np.all(np.isfinite(log_gamma.numpy()))
    np.testing.assert_allclose(tf.exp(log_gamma).numpy().sum(-1), 1.0, atol=1e-5)
    assert np.all(grad > 0)  # the KL keeps pulling the variance down
    bigger, _ = kl.vade_kl(z_log_var=s + 1.0, **args)
    assert np.all(bigger.numpy() > value.numpy())
    # The continuation is C1 at the limit: value and slope of exp match.
    c = kl.MAX_LOG_VARIANCE_RATIO
    x = tf.constant([c - 1e-4, c, c + 1e-4], tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = kl._continued_exp(x)
    np.testing.assert_allclose(y.numpy(), np.exp(c) * np.array([np.exp(-1e-4), 1.0, 1.0 + 1e-4]),
                               rtol=1e-9)
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), np.exp(c), rtol=2e-4)


# ---------------------------------------------------------------- "full"
def random_full_case(seed, batch=5):
    """A case with a full-covariance prior: covariances ``[K, D, D]`` and
    their precision Cholesky factors (scikit-learn's layout, upper)."""
    case = random_case(seed, batch)
    rng = np.random.default_rng(100 + seed)
    a = rng.normal(size=(K, D, D))
    cov = a @ np.swapaxes(a, -1, -2) / D + 0.3 * np.eye(D)
    precision = np.linalg.inv(cov)  # the reference only
    # P with P P^T = precision, upper (scikit-learn): P = inv(chol(cov)).T
    factors = np.swapaxes(np.linalg.inv(np.linalg.cholesky(cov)), -1, -2)
    del case["log_variances"]
    return case, cov, precision, factors


def numpy_full_vade(case, cov, precision):
    """VaDE's KL against a full-covariance prior, from SciPy's density and
    the trace tr(Sigma_c^-1 diag(exp(s))) written out."""
    from scipy.stats import multivariate_normal

    m, s = case["z_mean"], case["z_log_var"]
    ell = np.stack([
        multivariate_normal(case["means"][c], cov[c]).logpdf(m)
        - 0.5 * np.array([np.trace(precision[c] @ np.diag(np.exp(row))) for row in s])
        for c in range(K)], axis=-1)
    return numpy_vade_of_ell(case, ell)


@pytest.mark.parametrize("seed", [0, 1])
def test_full_prior_vade_kl_equals_scipy_formula(seed):
    case, cov, precision, factors = random_full_case(seed)
    want_kl, want_log_gamma, want_ell = numpy_full_vade(case, cov, precision)
    t = {k: tf.constant(v, tf.float64) for k, v in case.items()}
    p = tf.constant(factors, tf.float64)
    got_kl, got_log_gamma = kl.vade_kl(**t, precisions_cholesky=p, covariance_type="full")
    np.testing.assert_allclose(got_kl.numpy(), want_kl, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got_log_gamma.numpy(), want_log_gamma, atol=1e-10)
    ell = kl.expected_log_prob(t["z_mean"], t["z_log_var"], t["means"], p, "full")
    np.testing.assert_allclose(ell.numpy(), want_ell, rtol=1e-10)
    got32, _ = kl.vade_kl(**{k: tf.cast(v, tf.float32) for k, v in t.items()},
                          precisions_cholesky=tf.constant(factors, tf.float32),
                          covariance_type="full")
    np.testing.assert_allclose(got32.numpy(), want_kl, rtol=1e-5, atol=1e-4)
    # The Monte Carlo term: log q(z) - log p(z) with the full marginal.
    from scipy.stats import multivariate_normal

    z = case["z_mean"] + np.random.default_rng(seed).normal(size=case["z_mean"].shape)
    mc = kl.mc_kl(tf.constant(z), t["z_mean"], t["z_log_var"], t["logits"], t["means"],
                  p, "full").numpy()
    log_pi = case["logits"] - logsumexp(case["logits"])
    log_p = logsumexp(log_pi + np.stack(
        [multivariate_normal(case["means"][c], cov[c]).logpdf(z) for c in range(K)],
        axis=-1), axis=-1)
    want_mc = log_normal_diag(z, case["z_mean"], case["z_log_var"]) - log_p
    np.testing.assert_allclose(mc, want_mc, rtol=1e-10, atol=1e-10)


def test_a_full_prior_with_diagonal_factors_is_the_diag_prior():
    case = random_case(6)
    t = as_tensors(case)
    diag_factors = t.pop("precisions_cholesky")
    full_factors = tf.linalg.diag(diag_factors)
    for fn in (kl.vade_kl, kl.log_responsibilities):
        want = fn(**t, precisions_cholesky=diag_factors)
        got = fn(**t, precisions_cholesky=full_factors, covariance_type="full")
        for a, b in zip(tf.nest.flatten(got), tf.nest.flatten(want)):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("log_var", [30.0, -30.0, 200.0])
def test_full_prior_extreme_posteriors_stay_finite(log_var):
    case, _, _, factors = random_full_case(2, batch=4)
    f32 = tf.float32
    value, log_gamma = kl.vade_kl(
        tf.constant(1e4 * case["z_mean"], f32), tf.fill([4, D], tf.constant(log_var, f32)),
        tf.constant(case["logits"], f32), tf.constant(case["means"], f32),
        tf.constant(factors, f32), "full")
    assert np.all(np.isfinite(value.numpy())) and np.all(np.isfinite(log_gamma.numpy()))
    np.testing.assert_allclose(tf.exp(log_gamma).numpy().sum(-1), 1.0, atol=1e-5)


def test_an_unsupported_prior_covariance_type_is_a_clear_error():
    t = as_tensors(random_case(0))
    with pytest.raises(ValueError, match="covariance_type.*tied"):
        kl.vade_kl(**t, covariance_type="tied")
