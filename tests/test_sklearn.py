"""keras_gmm.sklearn: scikit-learn's estimators over our layers (signatures,
attributes, errors, clone/Pipeline/GridSearchCV/pickle, streaming, dtype,
and the Bayesian mixture's parity with scikit-learn's through the estimator).

scikit-learn's own test modules and check_estimator run in
tests/test_sklearn_suites.py.
"""

import copy
import inspect
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import sklearn.mixture
import tensorflow as tf
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import keras_gmm
from keras_gmm.sklearn import BayesianGaussianMixture, GaussianMixture

REPO_ROOT = Path(__file__).resolve().parents[1]
COV_TYPES = ("full", "tied", "diag", "spherical")
PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")
PAIRS = [(GaussianMixture, sklearn.mixture.GaussianMixture),
         (BayesianGaussianMixture, sklearn.mixture.BayesianGaussianMixture)]
OUR_EXTRAS = ("dtype", "batch_size")


@pytest.fixture(scope="module")
def blobs():
    x, y = make_blobs(300, n_features=3, centers=3, random_state=0)
    return x, y


@pytest.mark.parametrize("ours, theirs", PAIRS, ids=["gaussian", "bayesian"])
def test_the_signature_is_scikit_learns_plus_keyword_only_extras(ours, theirs):
    mine = inspect.signature(ours).parameters
    reference = inspect.signature(theirs).parameters
    assert list(mine)[: len(reference)] == list(reference)
    for name, parameter in reference.items():
        assert mine[name].default == parameter.default, name
        assert mine[name].kind == parameter.kind, name
    assert list(mine)[len(reference):] == list(OUR_EXTRAS)
    assert all(mine[n].kind is inspect.Parameter.KEYWORD_ONLY for n in OUR_EXTRAS)
    assert ours().get_params().keys() == set(reference) | set(OUR_EXTRAS)


def test_fitted_attributes_and_methods(blobs):
    x, y = blobs
    gm = GaussianMixture(3, random_state=0).fit(x)
    ref = sklearn.mixture.GaussianMixture(3, random_state=0).fit(x)
    for name in ("weights_", "means_", "covariances_", "precisions_",
                 "precisions_cholesky_"):
        assert getattr(gm, name).shape == getattr(ref, name).shape, name
        assert getattr(gm, name).dtype == np.float64, name
    assert gm.converged_ and gm.n_iter_ == len(gm.lower_bounds_) >= 1
    assert gm.n_features_in_ == 3
    np.testing.assert_allclose(np.sort(gm.means_[:, 0]), np.sort(ref.means_[:, 0]),
                               rtol=1e-6)
    np.testing.assert_allclose(gm.score(x), ref.score(x), rtol=1e-8)
    labels = gm.predict(x)
    np.testing.assert_array_equal(labels, gm.fit_predict(x))
    np.testing.assert_array_equal(labels, gm.predict_proba(x).argmax(1))
    assert isinstance(gm.score(x), float)
    np.testing.assert_allclose(gm.bic(x), ref.bic(x), rtol=1e-8)
    np.testing.assert_allclose(gm.aic(x), ref.aic(x), rtol=1e-8)
    assert gm._n_parameters() == ref._n_parameters()
    assert isinstance(gm.layer_, keras_gmm.GaussianMixtureEM)


def test_sample_is_grouped_by_component_and_seeded_by_random_state(blobs):
    x, _ = blobs
    gm = GaussianMixture(3, random_state=0).fit(x)
    samples, labels = gm.sample(500)
    assert samples.shape == (500, 3) and samples.dtype == np.float64
    assert np.all(np.diff(labels) >= 0)  # component 0's rows first, then 1, ...
    again, _ = gm.sample(500)
    np.testing.assert_array_equal(samples, again)  # an int random_state
    with pytest.raises(ValueError, match="Invalid value for 'n_samples'"):
        gm.sample(0)


def test_dtype_follows_the_input_as_scikit_learn(blobs):
    x, _ = blobs
    gm = GaussianMixture(3, random_state=0).fit(x.astype(np.float32))
    assert gm.means_.dtype == gm.covariances_.dtype == np.float32
    assert gm.score_samples(x).dtype == np.float32
    assert gm.layer_.dtype == "float32"
    assert GaussianMixture(3, dtype="float64").fit(
        x.astype(np.float32)).means_.dtype == np.float64


def test_scikit_learns_errors_and_warnings(blobs):
    x, _ = blobs
    gm = GaussianMixture(3)
    with pytest.raises(NotFittedError, match="This GaussianMixture instance is not "
                                             "fitted yet"):
        gm.predict(x)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        gm.fit(np.where(np.arange(3) == 1, np.nan, x))
    with pytest.raises(ValueError, match="Complex data not supported"):
        gm.fit(x + 1j)
    with pytest.raises(TypeError, match="[Ss]parse"):
        gm.fit(scipy.sparse.csr_matrix(x))
    with pytest.raises(ValueError, match="Expected n_samples >= n_components"):
        GaussianMixture(5).fit(x[:3])
    with pytest.raises(ValueError, match="n_components.*must be an int in the range"):
        GaussianMixture(0).fit(x)
    with pytest.raises(ValueError, match="'dtype' parameter.*must be None or a str among"):
        GaussianMixture(2, dtype="float16").fit(x)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        GaussianMixture(3, max_iter=1, random_state=0).fit(x)
    gm.fit(x)
    with pytest.raises(ValueError, match="Input X contains NaN"):
        gm.score_samples(np.full((2, 3), np.nan))
    with pytest.raises(ValueError, match="X has 2 features, but GaussianMixture is "
                                         "expecting 3 features"):
        gm.predict(x[:, :2])


def test_not_fitted_error_is_scikit_learns_for_the_layers_too(blobs):
    from keras_gmm.layers._mixture_state import ConvergenceWarning as ours
    from keras_gmm.layers._mixture_state import NotFittedError as layer_error

    assert ours is ConvergenceWarning
    assert issubclass(layer_error, NotFittedError)
    with pytest.raises(NotFittedError):
        keras_gmm.GaussianMixtureEM(2).predict(blobs[0])


def test_feature_names_are_kept_and_checked(blobs):
    pandas = pytest.importorskip("pandas")
    x, _ = blobs
    frame = pandas.DataFrame(x, columns=["a", "b", "c"])
    gm = GaussianMixture(3, random_state=0).fit(frame)
    np.testing.assert_array_equal(gm.feature_names_in_, ["a", "b", "c"])
    with pytest.warns(UserWarning, match="feature names"):
        gm.predict(x)


def test_clone_pipeline_grid_search_and_pickle(blobs):
    x, _ = blobs
    gm = GaussianMixture(2, covariance_type="diag", random_state=0)
    assert clone(gm).get_params() == gm.get_params()
    pipe = make_pipeline(StandardScaler(), clone(gm)).fit(x)
    assert np.isfinite(pipe.score(x))
    search = GridSearchCV(GaussianMixture(covariance_type="diag", random_state=0),
                          {"n_components": [1, 3, 5]}, cv=3).fit(x)
    assert search.best_params_["n_components"] >= 3
    fitted = gm.fit(x)
    for restored in (pickle.loads(pickle.dumps(fitted)), copy.deepcopy(fitted)):
        np.testing.assert_array_equal(restored.predict(x), fitted.predict(x))
        np.testing.assert_allclose(restored.score_samples(x), fitted.score_samples(x))
        assert restored.converged_ == fitted.converged_
        assert restored.layer_ is not fitted.layer_


def test_warm_start_converges_across_one_iteration_fits(blobs):
    x, _ = blobs
    gm = GaussianMixture(3, max_iter=1, warm_start=True, random_state=0, tol=1e-4)
    bounds = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(200):
            bounds.append(gm.fit(x).lower_bound_)
            if gm.converged_:
                break
    assert gm.converged_ and gm.n_iter_ == 1
    assert np.all(np.diff(bounds) >= -1e-9)


def test_max_iter_zero_returns_the_initial_parameters(blobs):
    x, _ = blobs
    means_init = x[[0, 100, 200]]
    gm = GaussianMixture(3, max_iter=0, means_init=means_init, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # none for max_iter=0
        gm.fit(x)
    np.testing.assert_allclose(gm.means_, means_init)
    assert gm.n_iter_ == 0 and not gm.converged_ and gm.lower_bound_ == -np.inf


def test_k_means_plus_plus_puts_each_initial_mean_on_a_data_point(blobs):
    x, _ = blobs
    gm = GaussianMixture(3, init_params="k-means++", max_iter=0, random_state=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(x)
    distances = np.linalg.norm(x[None] - gm.means_[:, None], axis=-1).min(axis=1)
    np.testing.assert_allclose(distances, 0, atol=1e-9)
    np.testing.assert_allclose(gm.covariances_, np.stack([1e-6 * np.eye(3)] * 3),
                               rtol=1e-6, atol=1e-20)


def test_a_dataset_is_streamed_and_equals_the_array_fit(blobs):
    x, _ = blobs
    ref = sklearn.mixture.GaussianMixture(3, random_state=0, max_iter=2).fit(x)
    init = dict(weights_init=ref.weights_, means_init=ref.means_,
                precisions_init=ref.precisions_)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = GaussianMixture(3, tol=0, max_iter=4, **init).fit(x)
        b = GaussianMixture(3, tol=0, max_iter=4, **init).fit(
            tf.data.Dataset.from_tensor_slices(x).batch(64))
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-10)
    np.testing.assert_allclose(b.lower_bounds_, a.lower_bounds_, rtol=1e-10)
    assert b.n_features_in_ == 3 and not hasattr(b, "feature_names_in_")


def test_bayesian_attributes_are_scikit_learns(blobs):
    x, _ = blobs
    for prior_type in PRIOR_TYPES:
        ours = BayesianGaussianMixture(n_components=4, random_state=0,
                                       weight_concentration_prior_type=prior_type,
                                       max_iter=300).fit(x)
        ref = sklearn.mixture.BayesianGaussianMixture(
            n_components=4, random_state=0, weight_concentration_prior_type=prior_type,
            max_iter=300).fit(x)
        for name in ("weight_concentration_", "mean_precision_", "degrees_of_freedom_",
                     "weights_", "means_", "covariances_", "precisions_cholesky_",
                     "mean_prior_", "covariance_prior_"):
            mine, theirs = getattr(ours, name), getattr(ref, name)
            assert type(mine) is type(theirs), name
            assert np.shape(mine) == np.shape(theirs), name
        for name in ("weight_concentration_prior_", "mean_precision_prior_",
                     "degrees_of_freedom_prior_"):
            np.testing.assert_allclose(getattr(ours, name), getattr(ref, name))
        np.testing.assert_allclose(ours.mean_prior_, ref.mean_prior_, rtol=1e-12)
        np.testing.assert_allclose(ours.covariance_prior_, ref.covariance_prior_,
                                   rtol=1e-12)
        assert isinstance(ours.layer_, keras_gmm.BayesianGaussianMixtureEM)
        assert not hasattr(ours, "bic")  # scikit-learn's has none either


def _sklearn_from_resp(x, resp, **kwargs):
    """scikit-learn's BayesianGaussianMixture started from ``resp`` (its
    private ``_initialize``, on the reference only)."""
    ref = sklearn.mixture.BayesianGaussianMixture(**kwargs)
    ref._initialize_parameters = lambda X, random_state, xp=None: ref._initialize(
        X, resp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return ref.fit(x)


@pytest.mark.parametrize("prior_type", PRIOR_TYPES)
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_bayesian_estimator_equals_scikit_learn_from_the_same_start(
        covariance_type, prior_type):
    # float64, the same initial responsibilities, tol=0: every iteration's
    # lower bound and the final posterior agree to 1e-8 (relative).
    x, _ = make_blobs(240, n_features=3, centers=3, random_state=1)
    resp = np.random.default_rng(0).dirichlet(np.ones(5), size=len(x))
    kwargs = dict(n_components=5, covariance_type=covariance_type, tol=0,
                  max_iter=12, weight_concentration_prior_type=prior_type)
    ref = _sklearn_from_resp(x, resp, **kwargs)
    ours = BayesianGaussianMixture(**kwargs, warm_start=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.set_params(max_iter=0).fit(x)  # priors and a layer
        ours.layer_.initialize_from_responsibilities(x, resp)
        ours.set_params(max_iter=12).fit(x)
    np.testing.assert_allclose(ours.lower_bounds_, np.ravel(ref.lower_bounds_),
                               rtol=1e-8)
    assert ours.n_iter_ == ref.n_iter_ == 12
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_",
                 "mean_precision_", "degrees_of_freedom_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(ref, name),
                                   rtol=1e-8, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(np.ravel(ours.weight_concentration_),
                               np.ravel(ref.weight_concentration_), rtol=1e-8)
    np.testing.assert_allclose(ours.score_samples(x), ref.score_samples(x), rtol=1e-8)
    np.testing.assert_allclose(ours.predict_proba(x), ref.predict_proba(x),
                               rtol=1e-7, atol=1e-12)


def test_importing_without_scikit_learn_names_the_install_command():
    code = (
        "import sys\n"
        "sys.modules['sklearn'] = None\n"
        "try:\n"
        "    import keras_gmm.sklearn\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=REPO_ROOT, timeout=300)
    assert "pip install scikit-learn" in out.stdout, out.stderr[-2000:]
