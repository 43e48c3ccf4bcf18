"""keras_gmm.BayesianGaussianMixtureEM: parity with scikit-learn's
BayesianGaussianMixture (streamed and compiled), emptied components, the fit
rules, saving, export, distribution and bad input."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import BayesianGaussianMixture

import keras_gmm
from keras_gmm.layers._mixture_state import NotFittedError

COV_TYPES = ("full", "tied", "diag", "spherical")
PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")


@pytest.fixture(scope="module")
def blobs():
    x, y = make_blobs(240, n_features=3, centers=3, random_state=1)
    return x, y


def _reference(x, resp, **kwargs):
    """scikit-learn's fit from responsibilities ``resp`` (its private
    ``_initialize``, on the reference only)."""
    ref = BayesianGaussianMixture(**kwargs)
    ref._initialize_parameters = lambda X, random_state, xp=None: ref._initialize(
        X, resp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return ref.fit(x)


def _started(x, resp, **kwargs):
    layer = keras_gmm.BayesianGaussianMixtureEM(warm_start=True, dtype="float64",
                                                **kwargs)
    return layer.initialize_from_responsibilities(x, resp)


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_streamed_fit_equals_scikit_learn_from_the_same_start(
        blobs, covariance_type, prior_type):
    # float64, tol=0, 12 iterations streamed in batches of 64 rows: the lower
    # bound of every iteration and the posterior agree to 1e-8 (relative).
    x, _ = blobs
    resp = np.random.default_rng(0).dirichlet(np.ones(5), size=len(x))
    kwargs = dict(covariance_type=covariance_type, tol=0, max_iter=12,
                  weight_concentration_prior_type=prior_type)
    ref = _reference(x, resp, n_components=5, **kwargs)
    layer = _started(x, resp, num_components=5, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        history = layer.fit(tf.data.Dataset.from_tensor_slices(x).batch(64), verbose=0)
    np.testing.assert_allclose(history.history["lower_bound"],
                               np.ravel(ref.lower_bounds_), rtol=1e-8)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_",
                 "mean_precision_", "degrees_of_freedom_", "mean_prior_",
                 "covariance_prior_"):
        np.testing.assert_allclose(getattr(layer, name), getattr(ref, name),
                                   rtol=1e-8, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(np.ravel(layer.weight_concentration_),
                               np.ravel(ref.weight_concentration_), rtol=1e-8)
    np.testing.assert_allclose(layer.score_samples(x), ref.score_samples(x), rtol=1e-8)
    np.testing.assert_array_equal(layer.predict(x), ref.predict(x))


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
def test_full_fit_on_quadratic_features_equals_scikit_learn(blobs, prior_type,
                                                            monkeypatch):
    # large-data path (forced here): the compiled variational loop runs its
    # passes on the quadratic features of the rows, computed once a fit
    from keras_gmm.ops import em_driver

    monkeypatch.setattr(em_driver, "EAGER_MAX_WORK", 0)
    x, _ = blobs
    features = em_driver.quadratic_features(x, 5, "full")
    assert features is not None and features[0].shape == (len(x), 9)
    resp = np.random.default_rng(0).dirichlet(np.ones(5), size=len(x))
    kwargs = dict(covariance_type="full", tol=0, max_iter=12,
                  weight_concentration_prior_type=prior_type)
    ref = _reference(x, resp, n_components=5, **kwargs)
    layer = _started(x, resp, num_components=5, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        history = layer.fit(x, verbose=0)
    np.testing.assert_allclose(history.history["lower_bound"],
                               np.ravel(ref.lower_bounds_), rtol=1e-8)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_",
                 "degrees_of_freedom_"):
        np.testing.assert_allclose(getattr(layer, name), getattr(ref, name),
                                   rtol=1e-8, atol=1e-12, err_msg=name)
    # the passes ran on the features: rounding differs from the exact loop's
    monkeypatch.setattr(em_driver, "FEATURE_BYTES", 0)
    assert em_driver.quadratic_features(x, 5, "full") is None
    exact = _started(x, resp, num_components=5, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        exact.fit(x, verbose=0)
    np.testing.assert_allclose(exact.means_, layer.means_, rtol=1e-10)
    assert not np.array_equal(exact.means_, layer.means_)


def test_the_dirichlet_process_empties_the_components_the_data_do_not_need(blobs):
    x, _ = blobs
    layer = keras_gmm.BayesianGaussianMixtureEM(
        8, "diag", weight_concentration_prior=1e-3, max_iter=300, seed=0,
        dtype="float64")
    layer.fit(x, verbose=0)
    assert layer.converged_
    assert int(np.sum(layer.weights_ > 0.01)) == 3
    np.testing.assert_allclose(layer.weights_.sum(), 1.0, rtol=1e-12)
    a, b = layer.weight_concentration_
    assert a.shape == b.shape == (8,)


def test_fit_rules_max_iter_zero_warm_start_and_convergence_warning(blobs):
    x, _ = blobs
    layer = keras_gmm.BayesianGaussianMixtureEM(3, "spherical", max_iter=0, seed=0,
                                                warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # none for max_iter=0
        layer.fit(x, verbose=0)
    assert layer.n_iter_ == 0 and layer.lower_bound_ == -np.inf
    start = layer.means_.copy()
    layer.max_iter = 1
    bounds = []
    for _ in range(100):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            layer.fit(x, verbose=0)
        bounds.append(layer.lower_bound_)
        if layer.converged_:
            break
        assert any(issubclass(w.category, ConvergenceWarning) for w in caught)
    # the first one-iteration fit compares with -inf: never converged
    assert layer.converged_ and layer.n_iter_ == 1 and len(bounds) >= 2
    assert np.all(np.diff(bounds) > -1e-3)  # float32 rounding only
    assert np.all(np.isfinite(layer.means_)) and layer.means_.shape == start.shape


def test_keras_round_trip_export_and_mixed_precision(blobs, tmp_path):
    from keras_gmm.export import bayesian_gaussian_mixture_em  # noqa: F401
    from tests.export_utils import tf_only_outputs

    x, _ = blobs
    x = x.astype("float32")
    layer = keras_gmm.BayesianGaussianMixtureEM(
        4, "full", seed=0, output="both", weight_concentration_prior=0.01,
        mean_prior=[0.0, 0.0, 0.0], covariance_prior=np.eye(3), name="bgm")
    layer.fit(x, verbose=0)
    inputs = keras.Input((3,), name="x")
    model = keras.Model(inputs, layer(inputs))
    out = model.predict(x, verbose=0)
    np.testing.assert_allclose(out["responsibilities"], layer.predict_proba(x),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out["log_prob"], layer.score_samples(x), rtol=1e-5)
    model.save(tmp_path / "bgm.keras")
    loaded = keras.saving.load_model(tmp_path / "bgm.keras", safe_mode=True)
    restored = loaded.get_layer("bgm")
    for name in ("weights_", "means_", "mean_precision_", "degrees_of_freedom_",
                 "covariance_prior_", "lower_bound_", "n_iter_", "converged_"):
        np.testing.assert_allclose(getattr(restored, name), getattr(layer, name),
                                   err_msg=name)
    np.testing.assert_allclose(restored.score_samples(x), layer.score_samples(x),
                               rtol=1e-6)
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config

    single = keras.Model(inputs, keras_gmm.BayesianGaussianMixtureEM.from_config(
        {**config, "output": "responsibilities", "name": "served"})(inputs))
    single.get_layer("served").set_weights(layer.get_weights())
    path = keras_gmm.export_saved_model(single, tmp_path / "export")
    (served,) = tf_only_outputs(path, "serving_default", {"x": x[:20]}).values()
    np.testing.assert_allclose(served, layer.predict_proba(x[:20]), rtol=1e-5,
                               atol=1e-7)

    keras.mixed_precision.set_global_policy("mixed_float16")
    mixed = keras_gmm.BayesianGaussianMixtureEM(4, "diag", seed=0, max_iter=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mixed.fit(x, verbose=0)
    out = mixed(tf.constant(x[:5], tf.float16))
    assert out.dtype == tf.float32 and mixed.means.dtype == "float32"
    assert np.all(np.isfinite(out.numpy()))


def test_unfitted_use_and_export_are_refused(blobs, tmp_path):
    from keras_gmm.export import bayesian_gaussian_mixture_em  # noqa: F401

    x, _ = blobs
    layer = keras_gmm.BayesianGaussianMixtureEM(3)
    with pytest.raises(NotFittedError, match="BayesianGaussianMixtureEM is not fitted"):
        layer.predict(x)
    with pytest.raises(NotFittedError):
        layer.weight_concentration_  # noqa: B018
    inputs = keras.Input((3,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = keras.Model(inputs, layer(inputs))
    with pytest.raises(ValueError, match="not fitted.*fit"):
        keras_gmm.export_saved_model(model, tmp_path / "export")


def test_a_non_finite_row_gives_nan_and_label_minus_one(blobs):
    x, _ = blobs
    layer = keras_gmm.BayesianGaussianMixtureEM(3, "tied", seed=0)
    layer.fit(x, verbose=0)
    bad = x[:4].copy()
    bad[1, 0] = np.nan
    labels = layer.predict(bad)
    assert labels[1] == -1 and np.all(labels[[0, 2, 3]] >= 0)
    assert np.isnan(layer.score_samples(bad)[1])
    assert np.all(np.isnan(layer.predict_proba(bad)[1]))
    with pytest.raises(ValueError, match="NaN or inf in 1 of 4 rows"):
        keras_gmm.BayesianGaussianMixtureEM(2).fit(bad, verbose=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_components=0), "num_components"),
        (dict(num_components=2, weight_concentration_prior_type="beta"),
         "weight_concentration_prior_type.*beta"),
        (dict(num_components=2, weight_concentration_prior=0.0),
         "weight_concentration_prior.*> 0"),
        (dict(num_components=2, mean_precision_prior=-1.0), "mean_precision_prior"),
        (dict(num_components=2, reg_covar=-1.0), "reg_covar.*>= 0"),
        (dict(num_components=2, max_iter=-1), "max_iter.*>= 0"),
        (dict(num_components=2, init_params="magic"), "init_params.*magic"),
        (dict(num_components=2, covariance_type="spherical", covariance_prior=-1.0),
         "covariance_prior"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_gmm.BayesianGaussianMixtureEM(**kwargs)


def test_bad_priors_for_the_data_are_refused_at_fit(blobs):
    x, _ = blobs
    with pytest.raises(ValueError, match="degrees_of_freedom_prior.*greater than 2"):
        keras_gmm.BayesianGaussianMixtureEM(2, degrees_of_freedom_prior=1.5).fit(
            x, verbose=0)
    with pytest.raises(ValueError, match="mean_prior.*3 features"):
        keras_gmm.BayesianGaussianMixtureEM(2, mean_prior=[0.0, 1.0]).fit(x, verbose=0)
    with pytest.raises(ValueError, match="covariance_prior.*shape \\(3, 3\\)"):
        keras_gmm.BayesianGaussianMixtureEM(2, covariance_prior=np.eye(2)).fit(
            x, verbose=0)
    with pytest.raises(ValueError, match="resp.*\\[240, 2\\]"):
        keras_gmm.BayesianGaussianMixtureEM(2).initialize_from_responsibilities(
            x, np.ones((240, 3)) / 3)


def test_fit_under_mirrored_strategy_equals_one_device(blobs):
    x, _ = blobs
    resp = np.random.default_rng(1).dirichlet(np.ones(3), size=len(x))
    kwargs = dict(num_components=3, covariance_type="diag", tol=0, max_iter=4)
    one = _started(x, resp, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        one.fit(x, verbose=0)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            two = _started(x, resp, **kwargs)
            two.fit(x, batch_size=60, verbose=0)
    np.testing.assert_allclose(two.lower_bounds_, one.lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(two.means_, one.means_, rtol=1e-10)
