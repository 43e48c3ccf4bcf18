"""Tests for keras_gmm.ops.bayesian against scikit-learn's BayesianGaussianMixture.

The reference runs scikit-learn's own estimator from the same initial
responsibilities: its ``_initialize_parameters`` is replaced (on the instance)
by ``_initialize(X, resp)``, so ``fit`` then runs scikit-learn's loop.
"""

import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import make_blobs
from sklearn.mixture import BayesianGaussianMixture

from keras_gmm.ops import bayesian, em

COV_TYPES = ("full", "tied", "diag", "spherical")
PRIOR_TYPES = bayesian.WEIGHT_CONCENTRATION_PRIOR_TYPES
REG = 1e-6
RTOL = 1e-8

# Graph-mode loop (fast to trace); test_jit_equals_graph checks XLA against it.
_RUN = tf.function(bayesian.variational_iterations, autograph=False)
_RUN_JIT = tf.function(bayesian.variational_iterations, jit_compile=True)


def _blobs(seed=0, n=200, d=3, k=3, std=1.0):
    x, _ = make_blobs(n_samples=n, n_features=d, centers=k, cluster_std=std,
                      random_state=seed)
    return x


def _random_resp(n, k, seed):
    r = np.random.default_rng(seed).uniform(size=(n, k))
    return r / r.sum(axis=1, keepdims=True)


def _sklearn_fit(x, resp, covariance_type, prior_type, **kwargs):
    """scikit-learn's fit from the initial responsibilities ``resp``."""
    ref = BayesianGaussianMixture(
        n_components=resp.shape[1], covariance_type=covariance_type,
        weight_concentration_prior_type=prior_type, reg_covar=REG, **kwargs,
    )
    ref._initialize_parameters = lambda X, random_state, xp=None: ref._initialize(
        X, resp
    )
    return ref.fit(x)


def _sklearn_initialized(x, resp, covariance_type, prior_type, **kwargs):
    ref = BayesianGaussianMixture(
        n_components=resp.shape[1], covariance_type=covariance_type,
        weight_concentration_prior_type=prior_type, reg_covar=REG, **kwargs,
    )
    ref._check_parameters(x)
    ref._initialize(x, resp)
    return ref


def _assert_state_equals_sklearn(state, ref, prior_type, rtol=RTOL):
    def close(got, want):
        want = np.asarray(want, dtype=np.float64)
        atol = rtol * max(float(np.max(np.abs(want))), 1e-300)
        np.testing.assert_allclose(np.asarray(got), want, rtol=rtol, atol=atol)

    if prior_type == "dirichlet_process":
        for got, want in zip(state.weight_concentration, ref.weight_concentration_):
            close(got, want)
    else:
        close(state.weight_concentration, ref.weight_concentration_)
    close(state.mean_precision, ref.mean_precision_)
    close(state.means, ref.means_)
    close(state.degrees_of_freedom, ref.degrees_of_freedom_)
    assert np.shape(state.degrees_of_freedom) == np.shape(ref.degrees_of_freedom_)
    close(state.covariances, ref.covariances_)
    close(state.precisions_cholesky, ref.precisions_cholesky_)


# --------------------------------------------------------------------------
# parity: initialisation, iterations, convergence, final parameters
# --------------------------------------------------------------------------
@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_fit_matches_sklearn(covariance_type, prior_type):
    x = _blobs()
    resp = _random_resp(x.shape[0], 4, seed=1)
    ref0 = _sklearn_initialized(x, resp, covariance_type, prior_type)
    priors = bayesian.priors_from_data(x, 4, covariance_type)
    state = bayesian.initial_state_from_resp(
        tf.constant(x), tf.constant(resp), priors, covariance_type, REG, prior_type
    )
    _assert_state_equals_sklearn(state, ref0, prior_type)

    ref = _sklearn_fit(x, resp, covariance_type, prior_type, max_iter=200, tol=1e-5)
    # chunks of 64 rows: three full ones and a masked tail
    out, bounds, n_iter, converged, failed = _RUN(
        tf.constant(x), state, priors, covariance_type, prior_type, REG, 200, 1e-5, 64
    )
    assert bool(converged) == ref.converged_ and not bool(failed)
    assert int(n_iter) == ref.n_iter_ > 3
    np.testing.assert_allclose(bounds.numpy()[: int(n_iter)],
                               np.ravel(ref.lower_bounds_), rtol=RTOL)
    _assert_state_equals_sklearn(out, ref, prior_type)
    np.testing.assert_allclose(
        bayesian.mixture_weights(out.weight_concentration, prior_type).numpy(),
        ref.weights_, rtol=RTOL, atol=RTOL * 1e-3,
    )
    # the E-step of the fitted state: predict_proba and the per-row norm
    log_resp, log_prob_norm = bayesian.variational_log_resp(
        tf.constant(x), out, covariance_type, prior_type
    )
    want_norm, want_log_resp = ref._estimate_log_prob_resp(x)
    np.testing.assert_allclose(log_prob_norm.numpy(), want_norm, rtol=RTOL)
    np.testing.assert_allclose(np.exp(log_resp.numpy()), np.exp(want_log_resp),
                               rtol=RTOL, atol=1e-12)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_non_default_priors_match_sklearn(covariance_type):
    x = _blobs(seed=2, n=150)
    d, k = x.shape[1], 3
    rng = np.random.default_rng(5)
    a = rng.normal(size=(d, d))
    cov_prior = {"full": a @ a.T + np.eye(d), "tied": a @ a.T + np.eye(d),
                 "diag": rng.uniform(0.5, 2.0, size=d), "spherical": 1.7}[covariance_type]
    kwargs = {"weight_concentration_prior": 2.5, "mean_precision_prior": 0.3,
              "mean_prior": rng.normal(size=d), "degrees_of_freedom_prior": d + 1.5,
              "covariance_prior": cov_prior}
    resp = _random_resp(x.shape[0], k, seed=3)
    for prior_type in PRIOR_TYPES:
        ref = _sklearn_initialized(x, resp, covariance_type, prior_type, **kwargs)
        priors = bayesian.priors_from_data(x, k, covariance_type, **kwargs)
        np.testing.assert_allclose(priors.covariance.numpy(), ref.covariance_prior_)
        np.testing.assert_allclose(priors.mean.numpy(), ref.mean_prior_)
        state = bayesian.initial_state_from_resp(
            tf.constant(x), tf.constant(resp), priors, covariance_type, REG, prior_type
        )
        _assert_state_equals_sklearn(state, ref, prior_type)
        for _ in range(2):  # one E-step, M-step and bound at a time
            log_prob_norm, log_resp = ref._e_step(x)
            ref._m_step(x, log_resp)
            want = ref._compute_lower_bound(log_resp, log_prob_norm)
            totals = bayesian.batch_statistics(tf.constant(x), state, covariance_type,
                                               prior_type)
            bound, state = bayesian.variational_pass(totals, state, priors,
                                                     covariance_type, REG, prior_type)
            np.testing.assert_allclose(float(bound), float(np.ravel(want)[0]), rtol=RTOL)
            _assert_state_equals_sklearn(state, ref, prior_type)


def test_default_priors_equal_sklearn_and_stream():
    x = _blobs(seed=4, n=230) + 50.0  # away from the origin
    for covariance_type in COV_TYPES:
        ref = BayesianGaussianMixture(n_components=5, covariance_type=covariance_type)
        ref._check_parameters(x)
        priors = bayesian.priors_from_data(x, 5, covariance_type)
        np.testing.assert_allclose(priors.mean.numpy(), ref.mean_prior_, rtol=1e-12)
        np.testing.assert_allclose(priors.covariance.numpy(), ref.covariance_prior_,
                                   rtol=1e-10)
        assert float(priors.weight_concentration) == ref.weight_concentration_prior_
        assert float(priors.mean_precision) == ref.mean_precision_prior_
        assert float(priors.degrees_of_freedom) == ref.degrees_of_freedom_prior_
        # streamed: three unequal batches around the first batch's mean
        shift = x[:40].mean(axis=0)
        total = None
        for lo, hi in ((0, 40), (40, 170), (170, 230)):
            s = bayesian.data_statistics(tf.constant(x[lo:hi]), shift, covariance_type)
            total = s if total is None else em.add_statistics(total, s)
        mean, cov_prior = bayesian.data_moments(total, shift, covariance_type)
        np.testing.assert_allclose(mean.numpy(), ref.mean_prior_, rtol=1e-12)
        np.testing.assert_allclose(cov_prior.numpy(), ref.covariance_prior_, rtol=1e-10)


# --------------------------------------------------------------------------
# streaming, masking, compilation
# --------------------------------------------------------------------------
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_streamed_statistics_equal_in_memory(covariance_type):
    x = _blobs(seed=6, n=180)
    prior_type = "dirichlet_process"
    resp = _random_resp(x.shape[0], 3, seed=7)
    priors = bayesian.priors_from_data(x, 3, covariance_type)
    state = bayesian.initial_state_from_resp(
        tf.constant(x), tf.constant(resp), priors, covariance_type, REG, prior_type
    )
    in_memory, bounds, *_ = _RUN(tf.constant(x), state, priors, covariance_type,
                                 prior_type, REG, 1, 0.0)
    # three unequal batches; the last padded with garbage rows masked out
    totals = bayesian.zero_statistics(3, x.shape[1], covariance_type, tf.float64)
    for lo, hi in ((0, 30), (30, 130), (130, 180)):
        batch, mask = x[lo:hi], None
        if hi == 180:
            batch = np.concatenate([batch, np.full((7, x.shape[1]), 1e3)])
            mask = np.r_[np.ones(hi - lo), np.zeros(7)]
        totals = bayesian.add_statistics(totals, bayesian.batch_statistics(
            tf.constant(batch), state, covariance_type, prior_type, mask=mask))
    bound, streamed = bayesian.variational_pass(totals, state, priors,
                                                covariance_type, REG, prior_type)
    np.testing.assert_allclose(float(bound), float(bounds[0]), rtol=1e-12)
    for got, want in zip(tf.nest.flatten(streamed), tf.nest.flatten(in_memory)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10, atol=1e-12)
    # the totals are plain sums: the whole data at once gives the same
    whole = bayesian.batch_statistics(tf.constant(x), state, covariance_type, prior_type)
    for got, want in zip(tf.nest.flatten(totals), tf.nest.flatten(whole)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("covariance_type,prior_type",
                         [("full", "dirichlet_process"),
                          ("spherical", "dirichlet_distribution")])
def test_jit_equals_graph_and_continues_a_run(covariance_type, prior_type):
    x = tf.constant(_blobs(seed=8, n=150))
    resp = _random_resp(150, 3, seed=9)
    priors = bayesian.priors_from_data(x, 3, covariance_type)
    state = bayesian.initial_state_from_resp(x, tf.constant(resp), priors,
                                             covariance_type, REG, prior_type)
    args = (priors, covariance_type, prior_type, REG, 6, 0.0, 64)
    want = _RUN(x, state, *args)
    # two jit calls of three iterations each, the second continuing the first
    # (prev_bound a tensor both times: one trace, one compilation)
    first = _RUN_JIT(x, state, *args, tf.constant(-np.inf, tf.float64), tf.constant(3))
    second = _RUN_JIT(x, first[0], *args, first[1][2], tf.constant(3))
    assert int(first[2]) == int(second[2]) == 3
    got_bounds = np.r_[first[1].numpy()[:3], second[1].numpy()[:3]]
    np.testing.assert_allclose(got_bounds, want[1].numpy(), rtol=1e-10)
    for got, ref in zip(tf.nest.flatten(second[0]), tf.nest.flatten(want[0])):
        np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-9, atol=1e-12)


def test_float32_runs_and_stays_finite():
    x64 = _blobs(seed=10, n=160) + 100.0  # far from the origin
    resp = _random_resp(160, 3, seed=11)
    for covariance_type, prior_type in zip(COV_TYPES, PRIOR_TYPES * 2):
        results = {}
        for dtype in (np.float32, np.float64):
            x = tf.constant(x64.astype(dtype))
            priors = bayesian.priors_from_data(x, 3, covariance_type)
            state = bayesian.initial_state_from_resp(
                x, tf.constant(resp.astype(dtype)), priors, covariance_type, REG,
                prior_type)
            results[dtype] = _RUN(x, state, priors, covariance_type, prior_type,
                                  REG, 10, 0.0)
        out32, bounds32, n32, _, failed32 = results[np.float32]
        assert out32.means.dtype == tf.float32 and not bool(failed32)
        assert int(n32) == 10
        for leaf in tf.nest.flatten(out32) + [bounds32]:
            assert np.all(np.isfinite(leaf.numpy()))
        np.testing.assert_allclose(bounds32.numpy(),
                                   results[np.float64][1].numpy(), rtol=1e-4)
        np.testing.assert_allclose(out32.means.numpy(),
                                   results[np.float64][0].means.numpy(), rtol=1e-4)


def test_dirichlet_process_leaves_unused_components_near_zero_weight():
    x = _blobs(seed=3, n=300, d=2, k=3, std=0.7)
    resp = _random_resp(300, 8, seed=1)
    priors = bayesian.priors_from_data(x, 8, "full")
    state = bayesian.initial_state_from_resp(
        tf.constant(x), tf.constant(resp), priors, "full", REG, "dirichlet_process"
    )
    out, bounds, n_iter, converged, _ = _RUN(
        tf.constant(x), state, priors, "full", "dirichlet_process", REG, 300, 1e-3
    )
    assert bool(converged)
    b = bounds.numpy()[: int(n_iter)]
    assert np.all(np.diff(b) > -1e-6 * np.abs(b[1:]))  # the bound never drops
    w = np.sort(bayesian.mixture_weights(out.weight_concentration,
                                         "dirichlet_process").numpy())[::-1]
    assert np.all(np.abs(w[:3] - 1 / 3) < 0.02)
    assert np.all(w[3:] < 0.01)


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------
def test_bad_priors_are_refused_with_the_argument_named():
    x = _blobs(n=50, d=2)
    with pytest.raises(ValueError, match="weight_concentration_prior_type"):
        bayesian.check_weight_concentration_prior_type("dirichlet")
    with pytest.raises(ValueError, match=r"should be greater than 1, but got 0.500"):
        bayesian.priors_from_data(x, 3, "full", degrees_of_freedom_prior=0.5)
    with pytest.raises(ValueError, match="weight_concentration_prior"):
        bayesian.priors_from_data(x, 3, "full", weight_concentration_prior=0.0)
    with pytest.raises(ValueError, match="mean_precision_prior"):
        bayesian.priors_from_data(x, 3, "diag", mean_precision_prior=-1.0)
    with pytest.raises(ValueError, match="mean_prior"):
        bayesian.priors_from_data(x, 3, "diag", mean_prior=[0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"covariance_prior.*shape \(2,\)"):
        bayesian.priors_from_data(x, 3, "diag", covariance_prior=np.eye(2))
    with pytest.raises(ValueError, match="covariance_prior.*positive definite"):
        bayesian.priors_from_data(x, 3, "tied", covariance_prior=-np.eye(2))
    with pytest.raises(ValueError, match="covariance_prior.*positive"):
        bayesian.priors_from_data(x, 3, "spherical", covariance_prior=0.0)
