"""keras_gmm.GaussianMixtureEM (work in progress toward issue 3): batch EM
parity with scikit-learn, streaming, saving, export and bad input."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import make_blobs
from sklearn.mixture import GaussianMixture

import keras_gmm
from keras_gmm.layers.gaussian_mixture_em import NotFittedError

COV_TYPES = ("full", "tied", "diag", "spherical")


@pytest.fixture(scope="module")
def blobs():
    x, y = make_blobs(600, n_features=3, centers=4, random_state=0)
    return x, y


def sklearn_pair(x, covariance_type, max_iter=6):
    """scikit-learn's fit from fixed initial parameters, and those parameters."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = GaussianMixture(4, covariance_type=covariance_type, random_state=0,
                                max_iter=2).fit(x)
        init = dict(weights_init=start.weights_, means_init=start.means_,
                    precisions_init=start.precisions_)
        ref = GaussianMixture(4, covariance_type=covariance_type, tol=0,
                              max_iter=max_iter, **init).fit(x)
    return ref, init


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-8), ("float32", 1e-4)])
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_equals_scikit_learn_from_the_same_initial_parameters(blobs, covariance_type,
                                                               dtype, rtol):
    x, _ = blobs
    ref, init = sklearn_pair(x, covariance_type)
    ours = keras_gmm.GaussianMixtureEM(4, covariance_type, tol=0, max_iter=6,
                                       dtype=dtype, **init)
    history = ours.fit(x, batch_size=256, verbose=0)  # 3 batches: streamed
    np.testing.assert_allclose(history.history["lower_bound"], ref.lower_bounds_, rtol=rtol)
    np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, rtol=rtol)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_",
                 "precisions_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(ref, name),
                                   rtol=rtol, atol=rtol * 1e-2, err_msg=name)
    assert ours.n_iter_ == ref.n_iter_ == 6
    np.testing.assert_allclose(ours.score_samples(x), ref.score_samples(x), rtol=rtol)
    np.testing.assert_allclose(ours.bic(x), ref.bic(x), rtol=rtol)
    np.testing.assert_allclose(ours.aic(x), ref.aic(x), rtol=rtol)
    np.testing.assert_array_equal(ours.predict(x), ref.predict(x))


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-8), ("float32", 1e-4)])
def test_full_fit_on_compiled_quadratic_features_equals_scikit_learn(blobs, dtype,
                                                                     rtol, monkeypatch):
    # large-data path (forced here): XLA-compiled passes over the quadratic
    # features the fit computes once
    from keras_gmm.ops import em_driver

    monkeypatch.setattr(em_driver, "EAGER_MAX_WORK", 0)
    x, _ = blobs
    ref, init = sklearn_pair(x, "full")
    ours = keras_gmm.GaussianMixtureEM(4, "full", tol=0, max_iter=6, dtype=dtype, **init)
    history = ours.fit(x, verbose=0)
    np.testing.assert_allclose(history.history["lower_bound"], ref.lower_bounds_, rtol=rtol)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(ref, name),
                                   rtol=rtol, atol=rtol * 1e-2, err_msg=name)
    assert ours.n_iter_ == ref.n_iter_ == 6
    data = em_driver.InMemoryData(x.astype(dtype), 4, "full")
    assert data.compiled and data.feature_blocks is not None  # the path tested
    # ... and its passes ran on them (the expanded form accurate enough)
    weights, means, factors = (tf.constant(getattr(ours, name), dtype) for name in
                               ("weights_", "means_", "precisions_cholesky_"))
    log_w, log_det = em_driver.log_terms(weights, means, factors, "full")
    kappa = em_driver.em.quadratic_log_joint_terms(log_w, log_det, means, factors,
                                                   data.center, "full")[2]
    assert float(kappa) * np.finfo(dtype).eps <= em_driver.em.EXPANSION_RTOL


def test_lower_bound_never_decreases_and_converges(blobs):
    x, _ = blobs
    gmm = keras_gmm.GaussianMixtureEM(4, seed=0, tol=1e-6, max_iter=200)
    bounds = gmm.fit(x.astype("float32"), verbose=0).history["lower_bound"]
    assert np.all(np.diff(bounds) >= -1e-5)
    assert gmm.converged_ and gmm.n_iter_ == len(bounds) < 200


def test_warm_start_two_single_iterations_equal_one_fit_of_two(blobs):
    x, _ = blobs
    _, init = sklearn_pair(x, "full")
    two = keras_gmm.GaussianMixtureEM(4, tol=0, max_iter=2, dtype="float64", **init)
    two.fit(x, verbose=0)
    warm = keras_gmm.GaussianMixtureEM(4, tol=0, max_iter=1, dtype="float64",
                                       warm_start=True, **init)
    warm.fit(x, verbose=0)
    warm.fit(x, verbose=0)
    np.testing.assert_allclose(warm.means_, two.means_, rtol=1e-12)
    np.testing.assert_allclose(warm.covariances_, two.covariances_, rtol=1e-12)


def test_given_initial_parameters_skip_the_data_initialisation(blobs, monkeypatch):
    # scikit-learn's rule: with all three given, no k-means runs on the data.
    x, _ = blobs
    ref = GaussianMixture(4, random_state=0).fit(x)
    from keras_gmm.ops import init

    def fail(*args):
        raise AssertionError("initialisation ran although all parameters were given")

    monkeypatch.setattr(init, "run", fail)
    gmm = keras_gmm.GaussianMixtureEM(4, dtype="float64", max_iter=2, tol=0,
                                      weights_init=ref.weights_, means_init=ref.means_,
                                      precisions_init=ref.precisions_)
    gmm.fit(x, verbose=0)
    assert gmm.n_iter_ == 2
    with pytest.raises(AssertionError, match="initialisation ran"):
        keras_gmm.GaussianMixtureEM(4, means_init=ref.means_).fit(x, verbose=0)


def test_dataset_streaming_equals_array_fit(blobs):
    x, _ = blobs
    _, init = sklearn_pair(x, "diag")
    a = keras_gmm.GaussianMixtureEM(4, "diag", tol=0, max_iter=3, dtype="float64", **init)
    a.fit(x, verbose=0)
    b = keras_gmm.GaussianMixtureEM(4, "diag", tol=0, max_iter=3, dtype="float64", **init)
    b.fit(tf.data.Dataset.from_tensor_slices(x).batch(50), verbose=0)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-12)
    np.testing.assert_allclose(a.lower_bounds_, b.lower_bounds_, rtol=1e-12)


def test_n_init_keeps_the_best_run(blobs):
    x, _ = blobs
    one = keras_gmm.GaussianMixtureEM(4, init_params="random", seed=3, max_iter=5)
    one.fit(x.astype("float32"), verbose=0)
    many = keras_gmm.GaussianMixtureEM(4, init_params="random", seed=3, max_iter=5,
                                       n_init=4)
    many.fit(x.astype("float32"), verbose=0)
    assert many.lower_bound_ >= one.lower_bound_ - 1e-6


def test_bic_selects_the_true_number_of_components(blobs):
    x, _ = blobs
    bics = []
    for k in range(1, 8):
        gmm = keras_gmm.GaussianMixtureEM(k, seed=0, n_init=2)
        gmm.fit(x.astype("float32"), verbose=0)
        bics.append(gmm.bic(x))
    assert int(np.argmin(bics)) + 1 == 4


@pytest.mark.parametrize("init_params", ["kmeans++_assign", "kmeans", "k-means++",
                                         "random", "random_from_data"])
def test_every_initialisation_fits_the_blobs(blobs, init_params):
    x, y = blobs
    seeded = init_params.startswith(("kmeans", "k-means"))
    n_init = 3 if seeded else 8
    gmm = keras_gmm.GaussianMixtureEM(4, init_params=init_params, seed=0, n_init=n_init)
    gmm.fit(x.astype("float32"), verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        best = GaussianMixture(4, random_state=0, n_init=5).fit(x).lower_bound_
    if seeded:
        labels = gmm.predict(x)  # each true blob maps to one component
        purity = sum(np.bincount(labels[y == c]).max() for c in range(4)) / len(y)
        assert purity > 0.95
        assert gmm.lower_bound_ > best - 1e-3
    else:
        # random starts may stop in a nearby local optimum (scikit-learn's
        # random starts reach -5.52 to -5.57 here, 0.05 below the best)
        assert gmm.lower_bound_ > best - 0.06


def test_degenerate_data_never_gives_nan():
    rng = np.random.default_rng(0)
    x = np.concatenate([np.repeat(rng.normal(size=(1, 3)), 50, axis=0),
                        rng.normal(size=(50, 3))])
    x[:, 2] = 1.0  # constant feature
    gmm = keras_gmm.GaussianMixtureEM(3, seed=0, reg_covar=1e-4)
    gmm.fit(x.astype("float32"), verbose=0)
    for name in ("weights_", "means_", "covariances_"):
        assert np.all(np.isfinite(getattr(gmm, name))), name
    assert np.all(np.isfinite(gmm.score_samples(x)))


def test_call_outputs_and_keras_round_trip(blobs, tmp_path):
    x, _ = blobs
    x = x.astype("float32")
    gmm = keras_gmm.GaussianMixtureEM(4, seed=0, output="both", name="gmm")
    gmm.fit(x, verbose=0)
    inputs = keras.Input((3,), name="x")
    model = keras.Model(inputs, gmm(inputs))
    out = model.predict(x, verbose=0)
    np.testing.assert_allclose(out["responsibilities"], gmm.predict_proba(x), rtol=1e-5,
                               atol=1e-30)
    np.testing.assert_allclose(out["log_prob"], gmm.score_samples(x), rtol=1e-5)
    model.save(tmp_path / "gmm.keras")
    loaded = keras.saving.load_model(tmp_path / "gmm.keras", safe_mode=True)
    again = loaded.predict(x, verbose=0)
    np.testing.assert_allclose(again["log_prob"], out["log_prob"], rtol=1e-6)
    restored = loaded.get_layer("gmm")
    np.testing.assert_allclose(restored.means_, gmm.means_)
    config = gmm.get_config()
    assert type(gmm).from_config(config).get_config() == config


def test_export_runs_without_keras_gmm_or_tfp(blobs, tmp_path):
    from tests.export_utils import tf_only_outputs

    x, _ = blobs
    x = x.astype("float32")
    gmm = keras_gmm.GaussianMixtureEM(4, seed=0)
    gmm.fit(x, verbose=0)
    inputs = keras.Input((3,), name="x")
    model = keras.Model(inputs, gmm(inputs))
    path = keras_gmm.export_saved_model(model, tmp_path / "export")
    (served,) = tf_only_outputs(path, "serving_default", {"x": x[:20]}).values()
    np.testing.assert_allclose(served, gmm.predict_proba(x[:20]), rtol=1e-5, atol=1e-7)


def test_sample_and_distribution(blobs):
    x, _ = blobs
    gmm = keras_gmm.GaussianMixtureEM(4, seed=0, dtype="float64")
    gmm.fit(x, verbose=0)
    samples, labels = gmm.sample(20000, seed=1)
    assert samples.shape == (20000, 3) and labels.shape == (20000,)
    np.testing.assert_allclose(np.bincount(labels, minlength=4) / 20000, gmm.weights_, atol=0.02)
    np.testing.assert_allclose(samples.mean(0), gmm.distribution().mean().numpy(), atol=0.1)
    np.testing.assert_allclose(gmm.distribution().log_prob(x[:5]).numpy(),
                               gmm.score_samples(x[:5]), rtol=1e-9)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_components=0), "num_components"),
        (dict(num_components=2, covariance_type="box"), "covariance_type.*box"),
        (dict(num_components=2, init_params="magic"), "init_params.*magic"),
        (dict(num_components=2, tol=-1.0), "tol.*-1.0"),
        (dict(num_components=2, reg_covar=-1e-6), "reg_covar.*>= 0.*-1e-06"),
        (dict(num_components=2, max_iter=-1), "max_iter.*>= 0.*-1"),
        (dict(num_components=2, max_iter=2.0), "max_iter.*integer.*2.0"),
        (dict(num_components=2, n_init=0), "n_init.*0"),
        (dict(num_components=2, output="labels"), "output.*labels"),
        (dict(num_components=2, online=True, momentum=1.0), "momentum.*1.0"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_gmm.GaussianMixtureEM(**kwargs)


def test_bad_data_and_use_before_fit():
    x = np.random.default_rng(0).normal(size=(30, 2)).astype("float32")
    gmm = keras_gmm.GaussianMixtureEM(2)
    with pytest.raises(NotFittedError, match="not fitted"):
        gmm.predict(x)
    bad = x.copy()
    bad[[3, 7], 0] = np.nan
    bad[9, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or inf in 3 of 30 rows"):
        gmm.fit(bad, verbose=0)
    with pytest.raises(ValueError, match="fewer than num_components=40"):
        keras_gmm.GaussianMixtureEM(40).fit(x, verbose=0)
    with pytest.raises(ValueError, match="means_init.*shape \\(2, 2\\).*\\(3, 2\\)"):
        keras_gmm.GaussianMixtureEM(2, means_init=np.zeros((3, 2))).fit(x, verbose=0)
    with pytest.raises(ValueError, match="precisions_init.*positive definite"):
        keras_gmm.GaussianMixtureEM(
            2, precisions_init=-np.stack([np.eye(2)] * 2)).fit(x, verbose=0)
    gmm.fit(x, verbose=0)
    with pytest.raises(ValueError, match=r"`x` must have 2 features.*\(30, 3\)"):
        gmm.predict(np.zeros((30, 3)))
    with pytest.raises(ValueError, match=r"`x` must be 2-D.*\(30,\)"):
        gmm.predict(np.zeros(30))
    small = tf.data.Dataset.from_tensor_slices(x[:5]).batch(2)
    with pytest.raises(ValueError, match="5 samples.*num_components=8"):
        keras_gmm.GaussianMixtureEM(8).fit(small, verbose=0)


def test_failed_cholesky_suggests_reg_covar():
    x = np.zeros((20, 2))
    x[:, 0] = np.arange(20.0)
    # (reg_covar reaches the float64 initialisation exactly: 1e-300 would
    # keep the covariance positive definite, 0 does not)
    gmm = keras_gmm.GaussianMixtureEM(1, covariance_type="full", reg_covar=0.0,
                                      dtype="float64", max_iter=2)
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="reg_covar"):
        gmm.fit(x, verbose=0)


def test_mixed_precision_outputs_are_float32(blobs):
    x, _ = blobs
    x = x.astype("float32")
    gmm = keras_gmm.GaussianMixtureEM(4, seed=0)
    gmm.fit(x, verbose=0)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        inputs = keras.Input((3,))
        hidden = keras.layers.Dense(3, kernel_initializer="identity")(inputs)
        config = gmm.get_config()
        config.pop("dtype", None)  # take the global mixed_float16 policy
        layer = keras_gmm.GaussianMixtureEM.from_config(config)
        assert layer.dtype_policy.name == "mixed_float16"
        symbolic = layer(hidden)
        assert symbolic.dtype == "float32"  # the symbolic output says what call returns
        model = keras.Model(inputs, symbolic)
        layer.set_weights(gmm.get_weights())
        out = model(x[:10])
        assert out.dtype == tf.float32
        np.testing.assert_allclose(out, gmm.predict_proba(x[:10]), atol=2e-2)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_fit_under_mirrored_strategy_equals_one_device(blobs):
    x, _ = blobs
    _, init = sklearn_pair(x, "full")
    x32 = x.astype("float32")
    single = keras_gmm.GaussianMixtureEM(4, tol=0, max_iter=4, **init)
    single.fit(x32, batch_size=100, verbose=0)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():
        mirrored = keras_gmm.GaussianMixtureEM(4, tol=0, max_iter=4, **init)
        mirrored.fit(x32, batch_size=100, verbose=0)
    # (that the statistics go through the replicas' all-reduce is
    # tests/ops/test_em_driver.py's)
    np.testing.assert_allclose(mirrored.lower_bounds_, single.lower_bounds_, rtol=1e-5)
    np.testing.assert_allclose(mirrored.means_, single.means_, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mirrored.covariances_, single.covariances_,
                               rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------
# online (stepwise) EM inside model.fit
# --------------------------------------------------------------------------
def _online_model(covariance_type="diag", momentum=0.9):
    inputs = keras.Input((6,), name="x")
    z = keras.layers.Dense(2, name="encoder")(inputs)
    gmm = keras_gmm.GaussianMixtureEM(4, covariance_type=covariance_type, online=True,
                                      momentum=momentum, seed=0, name="gmm")
    reconstruction = keras.layers.Dense(6, name="decoder")(z)
    autoencoder = keras.Model(inputs, reconstruction)
    autoencoder.compile("adam", loss="mse", jit_compile=True)
    model = keras.Model(inputs, {"reconstruction": reconstruction,
                                 "responsibilities": gmm(z)})
    model.compile("adam", loss={"reconstruction": "mse"}, jit_compile=True)
    return model, autoencoder, keras.Model(inputs, z), gmm


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_online_em_tracks_the_embeddings_of_a_training_encoder(covariance_type):
    # Four blobs on a 2-D plane inside 6-D space: the autoencoder's 2-D code
    # keeps them apart while it learns (the EM has to follow a moving target).
    rng = np.random.default_rng(0)
    plane, y = make_blobs(2000, n_features=2, centers=[[-3, -3], [3, -3], [-3, 3], [3, 3]],
                          cluster_std=0.3, random_state=0)
    x = plane @ rng.normal(size=(2, 6)) + 0.05 * rng.normal(size=(2000, 6))
    x = ((x - x.mean(0)) / x.std(0)).astype("float32")
    keras.utils.set_random_seed(0)
    model, autoencoder, encoder, gmm = _online_model(covariance_type)
    # As in deep clustering: a short pretraining of the autoencoder alone (a
    # random encoder can map two blobs onto one point; no EM could split them
    # later), then the model with the online EM layer keeps training.
    autoencoder.fit(x, x, epochs=2, batch_size=100, verbose=0)
    before = encoder.predict(x, verbose=0)
    model.fit(x, {"reconstruction": x}, epochs=6, batch_size=100, verbose=0)
    z = encoder.predict(x, verbose=0)
    assert np.abs(z - before).max() > 0.1  # the embeddings moved while the EM tracked
    centers = np.stack([z[y == c].mean(0) for c in range(4)])
    spread = np.stack([z[y == c].std(0).max() for c in range(4)])
    dist = np.linalg.norm(centers[:, None] - gmm.means_[None], axis=-1)
    # one component on each blob (an EMA lags a moving target a little) ...
    assert sorted(dist.argmin(1).tolist()) == [0, 1, 2, 3]
    assert np.all(dist.min(1) < 0.5 * spread), (dist.min(1), spread)
    np.testing.assert_allclose(np.sort(gmm.weights_), 0.25, atol=0.03)
    # ... and the responsibilities the model outputs recover the blobs
    labels = model.predict(x, verbose=0)["responsibilities"].argmax(1)
    assert keras_gmm.metrics.clustering_accuracy(y, labels) > 0.99


def test_online_em_continues_a_batch_fit_and_round_trips(blobs, tmp_path):
    x, _ = blobs
    x = x.astype("float32")
    gmm = keras_gmm.GaussianMixtureEM(4, online=True, momentum=0.999, seed=0, name="gmm")
    gmm.fit(x, verbose=0)
    means = gmm.means_.copy()
    inputs = keras.Input((3,))
    model = keras.Model(inputs, gmm(inputs))
    model.predict(x, verbose=0)  # inference: no update
    np.testing.assert_array_equal(gmm.means_, means)
    # A training step starts from the batch fit (momentum 0.999: barely moves).
    gmm(tf.constant(x[:200]), training=True)
    assert 0 < np.abs(gmm.means_ - means).max() < 0.05
    model.save(tmp_path / "online.keras")
    loaded = keras.saving.load_model(tmp_path / "online.keras", safe_mode=True)
    layer = loaded.layers[-1]
    assert layer.online and layer.momentum == 0.999
    np.testing.assert_array_equal(layer.moving_nk.numpy(), gmm.moving_nk.numpy())
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_online_step_with_momentum_zero_is_one_em_iteration(blobs):
    x, _ = blobs
    gmm = keras_gmm.GaussianMixtureEM(4, max_iter=1, tol=0, seed=0, dtype="float64",
                                      online=True, momentum=0.0)
    gmm.fit(x, verbose=0)
    ref = keras_gmm.GaussianMixtureEM(4, max_iter=1, tol=0, seed=0, dtype="float64",
                                      warm_start=True)
    ref.fit(x, verbose=0)
    ref.fit(x, verbose=0)  # a second full-batch iteration
    gmm(tf.constant(x), training=True)
    np.testing.assert_allclose(gmm.means_, ref.means_, rtol=1e-10)
    np.testing.assert_allclose(gmm.covariances_, ref.covariances_, rtol=1e-8)
    np.testing.assert_allclose(gmm.weights_, ref.weights_, rtol=1e-10)


# --------------------------------------------------------------------------
# the boundary: NaN rows, empty input, datasets, fitted state
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(blobs):
    x, _ = blobs
    gmm = keras_gmm.GaussianMixtureEM(4, seed=0, dtype="float64")
    gmm.fit(x, verbose=0)
    return gmm


def test_a_non_finite_row_gives_nan_and_no_invented_label(blobs, fitted):
    x, _ = blobs
    bad = x[:6].copy()
    bad[1, 0], bad[4, 2] = np.nan, np.inf
    good = np.array([0, 2, 3, 5])
    labels, proba = fitted.predict(bad), fitted.predict_proba(bad)
    np.testing.assert_array_equal(labels[[1, 4]], -1)
    np.testing.assert_array_equal(labels[good], fitted.predict(x[:6])[good])
    assert np.all(np.isnan(proba[[1, 4]]))
    np.testing.assert_allclose(proba[good], fitted.predict_proba(x[:6])[good])
    scores = fitted.score_samples(bad)
    assert np.all(np.isnan(scores[[1, 4]]))
    np.testing.assert_allclose(scores[good], fitted.score_samples(x[:6])[good])
    assert np.isnan(fitted.score(bad)) and np.isnan(fitted.bic(bad))
    assert np.isnan(fitted.aic(bad))


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples",
                                    "score", "bic", "aic"])
def test_empty_and_misshapen_inputs_are_refused(fitted, method):
    with pytest.raises(ValueError, match="`x` must have at least 1 row.*\\(0, 3\\)"):
        getattr(fitted, method)(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="`x` must be 2-D"):
        getattr(fitted, method)(np.zeros(3))
    with pytest.raises(TypeError, match="`x` must hold numbers"):
        getattr(fitted, method)(np.array([["a", "b", "c"]]))


def test_an_unfitted_layer_raises_eagerly_and_warns_once_in_a_model(blobs):
    x, _ = blobs
    gmm = keras_gmm.GaussianMixtureEM(4, seed=0)
    gmm.build((None, 3))
    with pytest.raises(NotFittedError, match="not fitted yet: call fit"):
        gmm(tf.constant(x[:5], tf.float32))
    inputs = keras.Input((3,))
    model = keras.Model(inputs, gmm(inputs))  # building the model is fine
    with pytest.warns(UserWarning, match="not fitted yet.*placeholder") as record:
        model.predict(x[:5], verbose=0)
        model.predict(x[:7], verbose=0)  # a second trace: no second warning
    assert sum("not fitted" in str(w.message) for w in record) == 1
    gmm.fit(x.astype("float32"), verbose=0)
    # atol: responsibilities near 0 differ relatively between the two paths
    np.testing.assert_allclose(model(x[:5]), gmm.predict_proba(x[:5]), rtol=1e-5,
                               atol=1e-6)


def test_fit_results_survive_a_keras_round_trip(blobs, tmp_path):
    x, _ = blobs
    gmm = keras_gmm.GaussianMixtureEM(4, seed=0, tol=1e-4, name="gmm")
    gmm.fit(x.astype("float32"), verbose=0)
    assert gmm.converged_ and gmm.n_iter_ > 1
    inputs = keras.Input((3,))
    keras.Model(inputs, gmm(inputs)).save(tmp_path / "gmm.keras")
    restored = keras.saving.load_model(tmp_path / "gmm.keras").get_layer("gmm")
    assert restored.converged_ is True
    assert restored.n_iter_ == gmm.n_iter_
    assert restored.lower_bound_ == gmm.lower_bound_


def _dataset(x, structure="x", batch=50):
    y = np.zeros(len(x))
    elements = {"x": x, "(x,)": (x,), "(x, y)": (x, y), "dict": {"x": x},
                "(x, y, w)": (x, y, y)}[structure]
    return tf.data.Dataset.from_tensor_slices(elements).batch(batch)


@pytest.mark.parametrize("structure", ["(x,)", "(x, y)"])
def test_dataset_tuples_use_their_first_element(blobs, structure):
    x, _ = blobs
    _, init = sklearn_pair(x, "diag")
    kwargs = dict(tol=0, max_iter=2, dtype="float64", **init)
    ref = keras_gmm.GaussianMixtureEM(4, "diag", **kwargs)
    ref.fit(_dataset(x), verbose=0)
    gmm = keras_gmm.GaussianMixtureEM(4, "diag", **kwargs)
    gmm.fit(_dataset(x, structure), verbose=0)
    np.testing.assert_allclose(gmm.means_, ref.means_, rtol=1e-12)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda x: _dataset(x).repeat(), ValueError, "infinite tf.data.Dataset.*repeat"),
        (lambda x: _dataset(x).take(0), ValueError, "empty tf.data.Dataset"),
        (lambda x: _dataset(x).filter(lambda b: False), ValueError, "empty"),
        (lambda x: _dataset(x, "dict"), ValueError, r"structure \{'x'.*Map it to x"),
        (lambda x: _dataset(x, "(x, y, w)"), ValueError,
         r"`\(x, y\)` tuples.*lambda x, \*rest: x"),
        (lambda x: tf.data.Dataset.from_tensor_slices(x), ValueError,
         "shape \\(3,\\). It looks unbatched: call dataset.batch"),
        (lambda x: tf.data.Dataset.from_tensor_slices(x[:, :, None]).batch(5),
         ValueError, "2-D batches"),
        (lambda x: tf.data.Dataset.from_tensor_slices(x.astype(str)).batch(5),
         ValueError, "real numbers.*string"),
    ],
)
def test_bad_datasets_are_refused_before_any_pass(blobs, make, error, match):
    x, _ = blobs
    with pytest.raises(error, match=match):
        keras_gmm.GaussianMixtureEM(2, max_iter=2).fit(make(x), verbose=0)


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, "8"])
def test_bad_batch_sizes_are_refused(blobs, batch_size):
    x, _ = blobs
    with pytest.raises(ValueError, match="`batch_size` must be an integer >= 1"):
        keras_gmm.GaussianMixtureEM(2).fit(x, batch_size=batch_size, verbose=0)


def test_nan_in_a_dataset_or_in_the_initial_parameters_says_so(blobs):
    x, _ = blobs
    bad = x.copy()
    bad[[100, 500], 1] = np.nan
    with pytest.raises(ValueError, match="contains NaN or inf in 2 rows"):
        keras_gmm.GaussianMixtureEM(4).fit(_dataset(bad), verbose=0)
    # the initial parameters given: the first streamed pass finds them
    _, init = sklearn_pair(x, "full")
    with pytest.raises(ValueError, match="contains NaN or inf in 2 rows"):
        keras_gmm.GaussianMixtureEM(4, **init).fit(_dataset(bad), verbose=0)
    for name in ("weights_init", "means_init", "precisions_init"):
        value = np.array(init[name], dtype=float)
        value.flat[0] = np.nan
        with pytest.raises(ValueError, match=f"`{name}` must be finite; it holds NaN"):
            keras_gmm.GaussianMixtureEM(4, **{**init, name: value})


@pytest.mark.parametrize("dtype, advice", [("float32", True), ("float64", False)])
def test_ill_defined_covariance_suggests_the_layer_dtype(dtype, advice):
    x = np.zeros((20, 2))
    x[:, 0] = np.arange(20.0)
    for data in (x, tf.data.Dataset.from_tensor_slices(x).batch(8)):
        gmm = keras_gmm.GaussianMixtureEM(1, reg_covar=0.0, dtype=dtype, max_iter=2)
        with pytest.raises(ValueError, match="increase reg_covar") as info:
            gmm.fit(data, verbose=0)
        assert ('dtype="float64"' in str(info.value)) is advice
        assert "float64 data instead" not in str(info.value)


# --------------------------------------------------------------------------
# online EM: failed steps, small first batches, the training gate
# --------------------------------------------------------------------------
def _online_fit_model(x, jit_compile, bad_row):
    inputs = keras.Input((3,))
    gmm = keras_gmm.GaussianMixtureEM(4, "diag", online=True, momentum=0.5, seed=0)
    head = keras.layers.Dense(1, name="head")(inputs)
    model = keras.Model(inputs, {"head": head, "resp": gmm(inputs)})
    model.compile("adam", loss={"head": "mse"}, jit_compile=jit_compile)
    x = x.astype("float32")
    x[bad_row, 0] = np.nan
    model.fit(x, {"head": np.zeros((len(x), 1))}, batch_size=100, epochs=1,
              shuffle=False, verbose=0)
    return gmm


@pytest.mark.parametrize("jit_compile", [False, True])
@pytest.mark.parametrize("bad_row", [3, 250], ids=["first batch", "later batch"])
def test_online_em_skips_and_counts_a_non_finite_batch(blobs, jit_compile, bad_row):
    x, _ = blobs
    gmm = _online_fit_model(x.copy(), jit_compile, bad_row)
    assert int(gmm.skipped_batches.numpy()) == 1
    assert gmm.converged_ is False  # online steps are not a batch fit
    for name in ("weights_", "means_", "covariances_"):
        assert np.all(np.isfinite(getattr(gmm, name))), name
    np.testing.assert_allclose(gmm.weights_.sum(), 1.0, rtol=1e-5)


def test_online_first_batch_smaller_than_num_components_is_skipped_with_a_warning(blobs):
    x, _ = blobs
    gmm = keras_gmm.GaussianMixtureEM(4, online=True, seed=0)
    with pytest.warns(UserWarning, match="first training batch of 3 rows cannot "
                                         "initialise 4 components"):
        gmm(tf.constant(x[:3], tf.float32), training=True)
    assert int(gmm.skipped_batches.numpy()) == 1
    with pytest.raises(NotFittedError):
        gmm.means_
    gmm(tf.constant(x[:200], tf.float32), training=True)  # enough rows: initialises
    assert gmm.means_.shape == (4, 3) and int(gmm.skipped_batches.numpy()) == 1


def test_online_first_batch_too_small_in_a_graph_is_skipped(blobs):
    # an unknown batch size at trace time: the check runs in the graph
    x, _ = blobs
    gmm = keras_gmm.GaussianMixtureEM(4, online=True, seed=0)
    gmm.build((None, 3))
    step = tf.function(lambda b: gmm(b, training=True),
                       input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    step(tf.constant(x[:2], tf.float32))
    assert int(gmm.skipped_batches.numpy()) == 1 and not gmm._is_fitted()
    step(tf.constant(x[:100], tf.float32))
    assert gmm._is_fitted() and np.all(np.isfinite(gmm.means_))


def test_a_frozen_online_layer_does_not_update(blobs):
    x, _ = blobs
    gmm = keras_gmm.GaussianMixtureEM(4, online=True, seed=0, dtype="float64")
    gmm.fit(x, verbose=0)
    gmm.trainable = False
    before = [v.numpy().copy() for v in gmm.weights]
    gmm(tf.constant(x[:100]), training=True)
    for b, v in zip(before, gmm.weights):
        np.testing.assert_array_equal(b, v.numpy())


# --------------------------------------------------------------------------
# warm start in memory (both batch-EM layers)
# --------------------------------------------------------------------------
_BATCH_EM_LAYERS = [keras_gmm.GaussianMixtureEM, keras_gmm.BayesianGaussianMixtureEM]


def _converged_layer(layer_class, x, **kwargs):
    layer = layer_class(3, "diag", tol=1e-3, max_iter=300, seed=0, dtype="float64",
                        **kwargs)
    layer.fit(x, verbose=0)
    assert layer.converged_
    return layer


@pytest.mark.parametrize("layer_class", _BATCH_EM_LAYERS)
def test_in_memory_loop_continues_from_the_previous_bound(blobs, layer_class):
    # scikit-learn's rule across fits: converged when the change from the
    # previous fit's bound is < tol; from -inf the first change never is.
    x, _ = blobs
    layer = _converged_layer(layer_class, x)
    bar = keras.utils.Progbar(1, verbose=0)
    args = (tf.constant(x), layer._current_parameters(), bar, None, False)
    _, bounds, converged = layer._run_in_memory(*args, prev_bound=layer.lower_bound_)
    assert converged and len(bounds) == 1
    assert abs(bounds[0] - layer.lower_bound_) < layer.tol
    _, bounds, converged = layer._run_in_memory(*args)
    assert converged and len(bounds) == 2


@pytest.mark.parametrize("layer_class", _BATCH_EM_LAYERS)
def test_warm_start_fits_in_memory_and_converges_across_fits(blobs, layer_class,
                                                            monkeypatch):
    x, _ = blobs
    layer = _converged_layer(layer_class, x, warm_start=True)

    def streamed(*args, **kwargs):
        raise AssertionError("a warm start of an array streamed it")

    monkeypatch.setattr(layer, "_run_streamed", streamed)
    layer.fit(x, verbose=0)
    assert layer.converged_ and layer.n_iter_ == 1
