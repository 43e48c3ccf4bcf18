"""keras_gmm.mixture: layout, transforms, TFP parity, moments and sampling."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import special, stats

from keras_gmm import mixture

COV_TYPES = mixture.COVARIANCE_TYPES


def random_params(rng, batch, k, d, covariance_type, dtype=np.float32, scale=1.0):
    size = mixture.params_size(k, d, covariance_type)
    return tf.constant(rng.normal(scale=scale, size=batch + (size,)).astype(dtype))


@pytest.mark.parametrize(
    "k, d, covariance_type, expected",
    [
        (5, 1, "diag", 15),
        (3, 2, "diag", 3 + 6 + 6),
        (3, 2, "spherical", 3 + 6 + 3),
        (3, 2, "full", 3 + 6 + 3 * 3),
        (3, 2, "tied", 3 + 6 + 3),
        (4, 3, "full", 4 + 12 + 4 * 6),
    ],
)
def test_params_size(k, d, covariance_type, expected):
    assert mixture.params_size(k, d, covariance_type) == expected
    slices = mixture.param_slices(k, d, covariance_type)
    assert slices["scale"].stop == expected


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_log_prob_equals_tfp_mixture_same_family(covariance_type):
    """Required: 1e-5 relative agreement with TFP in float32, random params."""
    rng = np.random.default_rng(0)
    k, d = 4, 3
    params = random_params(rng, (64,), k, d, covariance_type)
    m = mixture.split_params(params, k, d, covariance_type, min_scale=1e-2)
    y = tf.constant(rng.normal(scale=2.0, size=(64, d)).astype(np.float32))
    ours = mixture.log_prob(m, y).numpy()
    dist = mixture.distribution(m)
    assert type(dist).__name__ == "MixtureSameFamily"
    theirs = dist.log_prob(y).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_log_prob_equals_naive_numpy(covariance_type):
    rng = np.random.default_rng(1)
    k, d = 3, 2
    params = random_params(rng, (10,), k, d, covariance_type, dtype=np.float64)
    m = mixture.split_params(params, k, d, covariance_type, min_scale=1e-3)
    y = rng.normal(size=(10, d))
    got = mixture.log_prob(m, tf.constant(y)).numpy()
    weights = m.weights.numpy()
    locs = m.locs.numpy()
    covs = m.covariances().numpy()
    for i in range(10):
        comp = [
            stats.multivariate_normal(
                locs[i, j], covs[i] if covariance_type == "tied" else covs[i, j]
            ).logpdf(y[i])
            for j in range(k)
        ]
        want = special.logsumexp(np.log(weights[i]) + np.array(comp))
        np.testing.assert_allclose(got[i], want, rtol=1e-10)


def test_diag_transform_is_softplus_plus_floor():
    k, d, floor = 2, 3, 0.05
    params = np.zeros(mixture.params_size(k, d, "diag"), np.float32)
    raw = np.linspace(-30, 5, k * d).astype(np.float32)
    params[mixture.param_slices(k, d, "diag")["scale"]] = raw
    m = mixture.split_params(tf.constant(params), k, d, "diag", min_scale=floor)
    want = np.log1p(np.exp(raw)).reshape(k, d) + floor
    np.testing.assert_allclose(m.stddevs().numpy(), want, rtol=1e-6)
    assert np.all(m.stddevs().numpy() >= floor)


def test_full_fill_gives_covariance_cholesky_with_floored_diagonal():
    rng = np.random.default_rng(2)
    k, d, floor = 2, 3, 0.1
    params = random_params(rng, (), k, d, "full", dtype=np.float64, scale=3.0)
    m = mixture.split_params(params, k, d, "full", min_scale=floor)
    p = m.precisions_cholesky.numpy()
    assert np.allclose(p, np.triu(p))  # scikit-learn's upper layout
    chol = m.scale_tril().numpy()
    assert np.allclose(chol, np.tril(chol))
    raw = params.numpy()[mixture.param_slices(k, d, "full")["scale"]].reshape(k, -1)
    np.testing.assert_allclose(
        np.diagonal(chol, axis1=-2, axis2=-1), np.logaddexp(0, raw[:, :d]) + floor
    )
    for j in range(k):  # precision = P P^T is the inverse of L L^T
        np.testing.assert_allclose(
            p[j] @ p[j].T @ chol[j] @ chol[j].T, np.eye(d), atol=1e-9
        )


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_moments_match_tfp(covariance_type):
    rng = np.random.default_rng(3)
    k, d = 3, 2
    params = random_params(rng, (5,), k, d, covariance_type, dtype=np.float64)
    m = mixture.split_params(params, k, d, covariance_type)
    dist = mixture.distribution(m)
    np.testing.assert_allclose(mixture.mean(m).numpy(), dist.mean().numpy(), rtol=1e-9)
    np.testing.assert_allclose(
        mixture.covariance(m).numpy(), dist.covariance().numpy(), rtol=1e-8, atol=1e-12
    )
    np.testing.assert_allclose(
        mixture.variance(m).numpy(), dist.variance().numpy(), rtol=1e-8
    )


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_sample_moments_match_the_mixture(covariance_type):
    rng = np.random.default_rng(4)
    k, d, n = 3, 2, 100_000
    one = random_params(rng, (1,), k, d, covariance_type, dtype=np.float64)
    params = tf.tile(one, [n, 1])
    m = mixture.split_params(params, k, d, covariance_type)
    x = mixture.sample(m, seed=tf.constant([7, 8])).numpy()
    assert x.shape == (n, d)
    mean = mixture.mean(m).numpy()[0]
    cov = mixture.covariance(m).numpy()[0]
    std_err = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(x.mean(0) - mean) < 5 * std_err)
    np.testing.assert_allclose(np.cov(x.T), cov, rtol=0.05, atol=0.02 * np.max(cov))


def test_sample_is_reproducible_and_temperature_zero_is_greedy():
    rng = np.random.default_rng(5)
    k, d = 4, 2
    m = mixture.split_params(random_params(rng, (32,), k, d, "full"), k, d, "full")
    seed = tf.constant([1, 2])
    a = mixture.sample(m, seed).numpy()
    np.testing.assert_array_equal(a, mixture.sample(m, seed).numpy())
    assert not np.allclose(a, mixture.sample(m, tf.constant([3, 4])).numpy())
    greedy = mixture.greedy(m).numpy()
    np.testing.assert_array_equal(
        mixture.sample(m, seed, temperature=0.0, sigma_temperature=0.0).numpy(), greedy
    )
    # temperature -> 0 as a tensor (exported endpoints) approaches greedy too
    np.testing.assert_allclose(
        mixture.sample(
            m, seed, temperature=tf.constant(1e-6), sigma_temperature=0.0
        ).numpy(),
        greedy,
    )


def test_sample_temperature_sharpens_the_component_choice():
    # two components, weights 0.75 / 0.25, far apart: count the picks
    logits = np.log([0.75, 0.25])
    params = np.concatenate([logits, [-10.0, 10.0], [-20.0, -20.0]]).astype(np.float32)
    m = mixture.split_params(tf.tile(params[None], [20_000, 1]), 2, 1, "diag")
    frac = lambda t: np.mean(mixture.sample(m, tf.constant([0, 1]), t).numpy() < 0)
    assert abs(frac(1.0) - 0.75) < 0.02
    p_half = 0.75**2 / (0.75**2 + 0.25**2)  # softmax(logits / 0.5)
    assert abs(frac(0.5) - p_half) < 0.02


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_components=0, event_size=1), "num_components.*0"),
        (dict(num_components=2.5, event_size=1), "num_components.*2.5"),
        (dict(num_components=2, event_size=0), "event_size.*0"),
        (dict(num_components=2, event_size=1, covariance_type="dense"), "dense"),
    ],
)
def test_params_size_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mixture.params_size(**kwargs)


def test_split_params_wrong_size_names_the_shape():
    with pytest.raises(ValueError, match=r"params.*15.*\(4, 14\)"):
        mixture.split_params(tf.zeros([4, 14]), 5, 1, "diag")
