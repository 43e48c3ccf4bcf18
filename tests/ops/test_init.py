"""Tests for keras_gmm.ops.init: scikit-learn's initialisations, their one home."""


import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import make_blobs

from keras_gmm.ops import bayesian, em, em_driver, init

COV_TYPES = ("full", "tied", "diag", "spherical")
REG = 1e-6
SEED = tf.constant([1, 2], tf.int64)


def _blobs(n=300, d=3, k=3, seed=0):
    return tf.constant(make_blobs(n_samples=n, n_features=d, centers=k,
                                  random_state=seed)[0])


def test_kmeans_plusplus_and_kmeans_recover_blobs():
    x, _, true_centers = make_blobs(
        n_samples=800, centers=4, n_features=2, cluster_std=0.5,
        center_box=(-20, 20), random_state=9, return_centers=True,
    )
    x = tf.constant(x)
    seed = tf.constant([1, 2])
    centers, idx = init.kmeans_plusplus(x, 4, seed)
    np.testing.assert_array_equal(centers.numpy(), tf.gather(x, idx).numpy())
    assert len(set(idx.numpy().tolist())) == 4
    _, idx2 = init.kmeans_plusplus(x, 4, seed)
    np.testing.assert_array_equal(idx.numpy(), idx2.numpy())
    fitted, labels = init.kmeans(x, centers, n_iter=20)
    # same draws and result under XLA (stateless RNG, fixed algorithm)
    xla = tf.function(lambda x, s: init.kmeans(x, init.kmeans_plusplus(x, 4, s)[0], 20),
                       jit_compile=True)
    xla_centers, xla_labels = xla(x, seed)
    np.testing.assert_allclose(xla_centers.numpy(), fitted.numpy(), rtol=1e-10)
    np.testing.assert_array_equal(xla_labels.numpy(), labels.numpy())
    dist = np.linalg.norm(fitted.numpy()[:, None] - true_centers[None], axis=-1)
    assert sorted(dist.argmin(axis=0).tolist()) == [0, 1, 2, 3]
    assert np.all(dist.min(axis=0) < 0.1)
    assert labels.shape == (800,)
    # hard labels -> one-hot resp -> parameters, as sklearn's init_params="kmeans"
    resp = init.labels_to_resp(labels, 4, tf.float64)
    w, m, _, _ = em.parameters_from_resp(x, resp, "diag", REG)
    np.testing.assert_allclose(m.numpy(), fitted.numpy(), atol=1e-8)
    np.testing.assert_allclose(w.numpy().sum(), 1.0, rtol=1e-10)


@pytest.mark.parametrize("init_params", init.INIT_PARAMS)
def test_initialize_under_xla_gives_finite_parameters_near_the_blobs(init_params):
    x, _, true_centers = make_blobs(
        n_samples=800, centers=4, n_features=2, cluster_std=0.5,
        center_box=(-20, 20), random_state=9, return_centers=True,
    )
    x = tf.constant(x + 1e3, tf.float32)  # distances as products on centred data
    xla = tf.function(init.initialize, jit_compile=True)
    w, m, p = xla(x, 4, init_params, "full", 1e-6, tf.constant([1, 2], tf.int64))
    assert all(np.all(np.isfinite(t.numpy())) for t in (w, m, p))
    assert np.all(w.numpy() > 0)  # (one point each: K/N in all, as scikit-learn)
    if init_params not in ("random_from_data", "k-means++"):
        np.testing.assert_allclose(w.numpy().sum(), 1.0, rtol=1e-5)
    if init_params in ("kmeans", "kmeans++_assign"):
        dist = np.linalg.norm(m.numpy()[:, None] - (true_centers[None] + 1e3), axis=-1)
        assert sorted(dist.argmin(axis=0).tolist()) == [0, 1, 2, 3]
        assert np.all(dist.min(axis=0) < 0.2)
    with pytest.raises(ValueError, match="init_params.*'kmeans+'"):
        init.initialize(x, 4, "kmeans+", "full", 1e-6, tf.constant([1, 2], tf.int64))


def test_random_initial_responsibilities():
    seed = tf.constant([3, 4])
    r = init.random_resp(50, 4, seed, tf.float64)
    np.testing.assert_allclose(r.numpy().sum(axis=1), 1.0)
    assert np.all(r.numpy() > 0)
    np.testing.assert_array_equal(r.numpy(), init.random_resp(50, 4, seed, tf.float64))
    xla = tf.function(lambda s: init.random_resp(50, 4, s, tf.float64), jit_compile=True)
    np.testing.assert_array_equal(xla(seed).numpy(), r.numpy())
    r = init.random_from_data_resp(50, 4, seed, tf.float64).numpy()
    np.testing.assert_array_equal(r.sum(axis=0), np.ones(4))
    assert np.count_nonzero(r.sum(axis=1)) == 4  # four distinct data points
    assert set(np.unique(r)) == {0.0, 1.0}


def test_the_names_that_moved_still_import_from_em():
    for name in ("kmeans_plusplus", "kmeans", "labels_to_resp", "random_resp",
                 "random_from_data_resp", "initialize", "INIT_PARAMS"):
        assert getattr(em, name) is getattr(init, name)
    from keras_gmm.layers import gaussian_mixture_em as layer_module

    assert layer_module.initial_resp is init.initial_resp
    assert layer_module.check_init_params is init.check_init_params
    with pytest.raises(AttributeError, match="no_such_name"):
        em.no_such_name  # noqa: B018


def test_k_means_plus_plus_puts_each_mean_on_its_seed_point():
    # scikit-learn's "k-means++": one-hot at the seeds, covariances reg_covar * I
    x = _blobs()
    resp = init.initial_resp(x, 3, "k-means++", SEED).numpy()
    seeds = np.flatnonzero(resp.sum(axis=1))
    assert len(seeds) == 3 and set(np.unique(resp)) == {0.0, 1.0}
    _, idx = init.kmeans_plusplus(x - tf.reduce_mean(x, axis=0), 3, SEED)
    np.testing.assert_array_equal(np.sort(seeds), np.sort(idx.numpy()))
    w, means, prec_chol = init.initialize(x, 3, "k-means++", "diag", 0.5, SEED)
    np.testing.assert_allclose(means.numpy(), x.numpy()[idx.numpy()], rtol=1e-12)
    np.testing.assert_allclose(prec_chol.numpy(), 0.5**-0.5, rtol=1e-6)
    np.testing.assert_allclose(w.numpy(), 1 / 300, rtol=1e-6)  # nk' / N


@pytest.mark.parametrize("init_params", init.INIT_PARAMS)
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_initialize_is_the_m_step_of_the_initial_responsibilities(
        init_params, covariance_type):
    # the label paths (segment sums) and the resp paths are one initialisation
    x = _blobs() + 40.0
    resp = init.initial_resp(x, 3, init_params, SEED)
    np.testing.assert_allclose(resp.numpy().sum(axis=1)[resp.numpy().sum(1) > 0], 1.0)
    want = em.parameters_from_resp(x, resp, covariance_type, REG)
    got = init.initialize(x, 3, init_params, covariance_type, REG, SEED)
    for a, b in zip(got, (want[0], want[1], want[3])):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-8, atol=1e-10)


def test_kmeans_assign_labels_each_point_with_its_nearest_seed():
    x = _blobs(k=4)
    xc = x - tf.reduce_mean(x, axis=0)
    centers, _ = init.kmeans_plusplus(xc, 4, SEED)
    labels = np.argmin(((xc.numpy()[:, None] - centers.numpy()[None]) ** 2).sum(-1), 1)
    resp = init.initial_resp(x, 4, "kmeans++_assign", SEED).numpy()
    np.testing.assert_array_equal(resp.argmax(axis=1), labels)
    # the former name means the same (silently in ops, with a warning in layers)
    np.testing.assert_array_equal(init.initial_resp(x, 4, "kmeans++", SEED), resp)
    with pytest.warns(DeprecationWarning, match="kmeans\\+\\+_assign"):
        assert init.check_init_params("kmeans++") == "kmeans++_assign"
    with pytest.raises(ValueError, match="init_params.*'magic'"):
        init.check_init_params("magic")


def test_initial_variational_state_is_the_variational_m_step_of_initial_resp():
    x = _blobs()
    priors = bayesian.priors_from_data(x, 3, "full")
    got = init.initial_variational_state(x, 3, "kmeans", "full", REG, SEED, priors,
                                         "dirichlet_process")
    want = bayesian.initial_state_from_resp(
        x, init.initial_resp(x, 3, "kmeans", SEED), priors, "full", REG,
        "dirichlet_process")
    for a, b in zip(tf.nest.flatten(got), tf.nest.flatten(want)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)


@pytest.mark.parametrize("xla", [False, True])
def test_run_gives_the_same_result_and_the_same_error_every_way(xla, monkeypatch):
    monkeypatch.setattr(em_driver, "use_xla", lambda work: xla)
    x = _blobs(n=301)  # a shape no other test runs (the first run is op by op)
    args = (3, "kmeans", "full", tf.constant(REG, tf.float64), SEED)
    ref = init.initialize(x, *args)
    for _ in range(2):  # small data: op by op, then traced
        out = init.run(init.initialize, x, *args)
        for a, b in zip(out, ref):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-8, atol=1e-12)
    # three identical points per component, reg_covar 0: not positive definite
    bad = tf.constant(np.repeat(np.eye(3) * 10.0, 3, axis=0) + 0.0)
    for _ in range(2):
        with pytest.raises(ValueError, match="ill-defined empirical covariance"):
            init.run(init.initialize, bad, 3, "kmeans", "full",
                     tf.constant(0.0, tf.float64), SEED)
