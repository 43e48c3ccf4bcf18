"""scikit-learn estimators over the keras_gmm mixtures: change one import.

::

    # from sklearn.mixture import GaussianMixture, BayesianGaussianMixture
    from keras_gmm.sklearn import GaussianMixture, BayesianGaussianMixture

:class:`GaussianMixture` and :class:`BayesianGaussianMixture` have exactly
scikit-learn's constructor signatures, defaults, fitted attributes, methods,
warnings and errors (its own test modules and ``check_estimator`` run against
them, see ``tests/test_sklearn_suites.py``), so ``clone``, ``Pipeline``,
``GridSearchCV`` and pickling work. The math runs in the Keras layers
:class:`keras_gmm.GaussianMixtureEM` and :class:`keras_gmm.
BayesianGaussianMixtureEM` (the fitted layer is ``estimator.layer_``):
XLA-compiled EM, float32 or float64.

What is ours, as keyword-only extras (scikit-learn's code never passes them):

- ``dtype``: "float32" or "float64" (None: the input's, as scikit-learn
  keeps float32 data in float32);
- ``batch_size``: rows per chunk of the compiled loop;
- ``fit(dataset)``: a finite, batched ``tf.data.Dataset`` is streamed, one
  pass per iteration (data larger than memory);
- under ``with tf.distribute.MirroredStrategy().scope():`` ``fit`` runs on
  every replica, their statistics summed by one all-reduce per pass;
- ``layer_``: the fitted Keras layer, to put in a model, save to ``.keras``
  or export as a SavedModel.

Numbers: from the same initial parameters the fits equal scikit-learn's
(float64: 1e-8 relative). The random initialisations draw from TensorFlow's
stateless generators, seeded from ``random_state``: the same
``random_state`` gives the same fit, but not scikit-learn's draws.

scikit-learn is needed only for this module (``pip install scikit-learn``).
"""

import copy
import numbers

import numpy as np

try:
    from sklearn.base import BaseEstimator, DensityMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.validation import check_is_fitted
except ImportError as error:  # pragma: no cover - scikit-learn is a test dependency
    raise ImportError(
        "keras_gmm.sklearn needs scikit-learn, which is not installed: "
        "pip install scikit-learn (the layers keras_gmm.GaussianMixtureEM and "
        "keras_gmm.BayesianGaussianMixtureEM work without it)."
    ) from error

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _sklearn_validate_data
except ImportError:  # pragma: no cover - older scikit-learn

    def _sklearn_validate_data(estimator, X, **kwargs):
        return estimator._validate_data(X, **kwargs)


try:  # scikit-learn's own parameter constraints (>= 1.2)
    from sklearn.mixture import BayesianGaussianMixture as _SklearnBayesian
    from sklearn.mixture import GaussianMixture as _SklearnGaussian
    from sklearn.utils._param_validation import Interval, StrOptions

    _EXTRA_CONSTRAINTS = {
        "dtype": [None, StrOptions({"float32", "float64"})],
        "batch_size": [None, Interval(numbers.Integral, 1, None, closed="left")],
    }
    _GAUSSIAN_CONSTRAINTS = {**_SklearnGaussian._parameter_constraints,
                             **_EXTRA_CONSTRAINTS}
    _BAYESIAN_CONSTRAINTS = {**_SklearnBayesian._parameter_constraints,
                             **_EXTRA_CONSTRAINTS}
except (ImportError, AttributeError):  # pragma: no cover - older scikit-learn
    _GAUSSIAN_CONSTRAINTS = _BAYESIAN_CONSTRAINTS = None

import tensorflow as tf

from keras_gmm.layers.bayesian_gaussian_mixture_em import (
    BayesianGaussianMixtureEM,
)
from keras_gmm.layers.gaussian_mixture_em import GaussianMixtureEM

__all__ = ["BayesianGaussianMixture", "GaussianMixture"]

_MAX_SEED = np.iinfo(np.int32).max
#: The estimators' arguments that are not the layer's: the estimator names
#: ``n_components`` (the layer's ``num_components``) and draws the seed from
#: ``random_state``; it prints ``verbose``; dtype is the layer's base
#: argument and batch_size is ``fit``'s.
_ESTIMATOR_ONLY = frozenset({"n_components", "random_state", "verbose",
                             "verbose_interval", "dtype", "batch_size"})


class _MixtureEstimator(DensityMixin, BaseEstimator):
    """What both estimators share: input checks, the layer's fit and
    methods, scikit-learn's messages, warm starts, pickling."""

    _layer_class = None
    #: the layer attributes copied to the estimator after fit
    _fitted_attributes = (
        "weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_",
        "converged_", "n_iter_", "lower_bound_",
    )

    # ------------------------------------------------------------- layer
    def _store_arguments(self, arguments):
        """scikit-learn's ``__init__``: each argument stored as given, under
        its name (no checks: ``fit`` validates them)."""
        for name in self._get_param_names():
            setattr(self, name, arguments[name])

    def _layer_arguments(self):
        """The layer's constructor arguments: the estimator's, less those
        the estimator handles itself (:data:`_ESTIMATOR_ONLY`)."""
        return {name: value for name, value in self.get_params(deep=False).items()
                if name not in _ESTIMATOR_ONLY}

    def _new_layer(self, dtype):
        seed = int(check_random_state(self.random_state).randint(_MAX_SEED))
        return self._layer_class(
            self.n_components, seed=seed, dtype=dtype, **self._layer_arguments()
        )

    @property
    def layer_(self):
        """The fitted Keras layer (:class:`keras_gmm.GaussianMixtureEM` or
        :class:`keras_gmm.BayesianGaussianMixtureEM`)."""
        check_is_fitted(self)
        return self._layer

    def _validate_parameters(self):
        if hasattr(self, "_validate_params") and self._parameter_constraints:
            self._validate_params()  # scikit-learn's InvalidParameterError

    def _check_data(self, X):
        """``(X or a dataset, dtype)`` for fit, scikit-learn's checks."""
        if isinstance(X, tf.data.Dataset):
            spec = X.element_spec
            spec = spec[0] if isinstance(spec, tuple) and spec else spec
            floating = getattr(spec, "dtype", None) in (tf.float32, tf.float64)
            return X, self.dtype or (spec.dtype.name if floating else "float32")
        X = _sklearn_validate_data(
            self, X, dtype=[np.float64, np.float32], ensure_min_samples=2
        )
        if X.shape[0] < self.n_components:
            raise ValueError(
                "Expected n_samples >= n_components but got n_components = "
                f"{self.n_components}, n_samples = {X.shape[0]}"
            )
        return X, self.dtype or X.dtype.name

    def _fit_layer(self, X):
        self._validate_parameters()
        X, dtype = self._check_data(X)
        previous = getattr(self, "_layer", None)
        layer = self._new_layer(dtype)
        if self.warm_start and previous is not None and hasattr(self, "converged_"):
            # scikit-learn: a warm start continues from the fitted parameters
            # (and its convergence test from lower_bound_), n_init ignored.
            try:
                layer.build((None, previous.event_size))
                layer.set_weights(previous.get_weights())
            except ValueError:  # another shape since: start afresh
                layer = self._new_layer(dtype)
        layer.fit(X, batch_size=self.batch_size, verbose=0)
        self._layer = layer
        for name in self._fitted_attributes:
            setattr(self, name, getattr(layer, name))
        self.lower_bounds_ = list(layer.lower_bounds_)
        if isinstance(X, tf.data.Dataset):
            self.n_features_in_ = layer.event_size
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        self._print_verbose()
        return X

    def _print_verbose(self):
        """scikit-learn's ``verbose`` messages, for the kept run (printed
        after the compiled fit)."""
        if not self.verbose:
            return
        print("Initialization 0")
        prev = -np.inf
        for i, bound in enumerate(self.lower_bounds_, start=1):
            if i % self.verbose_interval == 0:
                if self.verbose == 1:
                    print(f"  Iteration {i}")
                else:
                    print(f"  Iteration {i}\t ll change {bound - prev:.5f}")
            prev = bound
        status = "converged" if self.converged_ else "did not converge"
        if self.verbose == 1:
            print(f"Initialization {status}.")
        else:
            print(f"Initialization {status}.\t lower bound {self.lower_bound_:.5f}.")

    # --------------------------------------------------------------- fit
    def fit(self, X, y=None):
        """Estimate the mixture (scikit-learn's ``fit``); returns ``self``.

        Args:
            X: array-like ``[n_samples, n_features]`` (at least 2 rows, no
                NaN/inf, dense), or a finite, batched ``tf.data.Dataset``
                (streamed).
            y: ignored.
        """
        self._fit_layer(X)
        return self

    def fit_predict(self, X, y=None):
        """Fit, then the labels of ``X`` (equal to ``fit(X).predict(X)``)."""
        X = self._fit_layer(X)
        return self._layer.predict(X)

    # ----------------------------------------------------------- methods
    def _checked(self, X):
        check_is_fitted(self)
        return _sklearn_validate_data(self, X, reset=False)

    def _layer_method(self, name, X):
        """The fitted layer's method ``name`` on ``X``, checked first (so
        an unfitted estimator raises before ``self._layer`` is read)."""
        X = self._checked(X)
        return getattr(self._layer, name)(X)

    def predict(self, X):
        """The most probable component of each sample ``[n_samples]``."""
        return self._layer_method("predict", X)

    def predict_proba(self, X):
        """Responsibilities ``[n_samples, n_components]``."""
        return self._layer_method("predict_proba", X)

    def score_samples(self, X):
        """Log-likelihood of each sample ``[n_samples]``."""
        return self._layer_method("score_samples", X)

    def score(self, X, y=None):
        """Mean log-likelihood of ``X`` (a Python float)."""
        return float(np.mean(self.score_samples(X)))

    def sample(self, n_samples=1):
        """``(X [n_samples, n_features], y [n_samples])`` drawn from the fitted
        mixture, grouped by component (as scikit-learn's); seeded from
        ``random_state``."""
        check_is_fitted(self)
        if n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {int(self.n_components)} . The "
                "sampling requires at least one sample."
            )
        seed = int(check_random_state(self.random_state).randint(_MAX_SEED))
        X, y = self._layer.sample(int(n_samples), seed=seed)
        return X.astype(np.float64), y.astype(np.int64)

    # ---------------------------------------------------------- pickling
    def __getstate__(self):
        state = dict(super().__getstate__())
        layer = state.pop("_layer", None)
        if layer is not None:
            state["_layer_saved"] = (
                layer.get_config(), layer.event_size, layer.get_weights()
            )
        return state

    def __setstate__(self, state):
        state = dict(state)
        saved = state.pop("_layer_saved", None)
        super().__setstate__(state)
        if saved is not None:
            config, event_size, weights = saved
            layer = self._layer_class.from_config(copy.deepcopy(config))
            layer.build((None, event_size))
            layer.set_weights(weights)
            self._layer = layer


class GaussianMixture(_MixtureEstimator):
    """scikit-learn's ``GaussianMixture`` on :class:`keras_gmm.
    GaussianMixtureEM` (see the module docstring).

    Args:
        n_components, covariance_type, tol, reg_covar, max_iter, n_init,
        init_params, weights_init, means_init, precisions_init,
        random_state, warm_start, verbose, verbose_interval: exactly
            scikit-learn's (``init_params``: "kmeans", "k-means++",
            "random", "random_from_data").
        dtype: "float32" or "float64" (None: the input's).
        batch_size: rows per chunk of the compiled loop (None: cache-sized).

    Attributes:
        weights_, means_, covariances_, precisions_, precisions_cholesky_,
        converged_, n_iter_, lower_bound_, lower_bounds_, n_features_in_,
        feature_names_in_: scikit-learn's. ``layer_``: the fitted layer.

    Example:

    >>> import numpy as np
    >>> from keras_gmm.sklearn import GaussianMixture
    >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]])
    >>> gm = GaussianMixture(n_components=2, random_state=0).fit(X)
    >>> np.sort(gm.means_[:, 0])
    array([ 1., 10.])
    >>> bool(gm.predict([[0, 0], [12, 3]])[0] != gm.predict([[12, 3]])[0])
    True
    """

    _layer_class = GaussianMixtureEM
    _parameter_constraints = _GAUSSIAN_CONSTRAINTS

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        dtype=None,
        batch_size=None,
    ):
        self._store_arguments(locals())

    def _n_parameters(self):
        """The number of free parameters (scikit-learn's)."""
        check_is_fitted(self)
        return self._layer._n_parameters()

    def bic(self, X):
        """Bayesian information criterion on ``X`` (lower is better)."""
        n = self._checked(X).shape[0]
        return -2 * self.score(X) * n + self._n_parameters() * np.log(n)

    def aic(self, X):
        """Akaike information criterion on ``X`` (lower is better)."""
        n = self._checked(X).shape[0]
        return -2 * self.score(X) * n + 2 * self._n_parameters()


class BayesianGaussianMixture(_MixtureEstimator):
    """scikit-learn's ``BayesianGaussianMixture`` on :class:`keras_gmm.
    BayesianGaussianMixtureEM` (see the module docstring).

    Args:
        n_components, covariance_type, tol, reg_covar, max_iter, n_init,
        init_params, weight_concentration_prior_type,
        weight_concentration_prior, mean_precision_prior, mean_prior,
        degrees_of_freedom_prior, covariance_prior, random_state,
        warm_start, verbose, verbose_interval: exactly scikit-learn's.
        dtype: "float32" or "float64" (None: the input's).
        batch_size: rows per chunk of the compiled loop (None: cache-sized).

    Attributes:
        weights_, means_, covariances_, precisions_, precisions_cholesky_,
        converged_, n_iter_, lower_bound_, lower_bounds_,
        weight_concentration_prior_, weight_concentration_,
        mean_precision_prior_, mean_precision_, mean_prior_,
        degrees_of_freedom_prior_, degrees_of_freedom_, covariance_prior_,
        n_features_in_, feature_names_in_: scikit-learn's. ``layer_``: the
        fitted layer.

    Example (an upper bound of 5 components; the data need 2):

    >>> import numpy as np
    >>> from keras_gmm.sklearn import BayesianGaussianMixture
    >>> rng = np.random.RandomState(0)
    >>> X = np.r_[rng.randn(100, 2) - 4, rng.randn(100, 2) + 4]
    >>> bgm = BayesianGaussianMixture(n_components=5, covariance_type="diag",
    ...                               weight_concentration_prior=1e-3,
    ...                               random_state=0).fit(X)
    >>> int((bgm.weights_ > 0.01).sum())
    2
    """

    _layer_class = BayesianGaussianMixtureEM
    _parameter_constraints = _BAYESIAN_CONSTRAINTS
    _fitted_attributes = _MixtureEstimator._fitted_attributes + (
        "weight_concentration_prior_", "weight_concentration_",
        "mean_precision_prior_", "mean_precision_", "mean_prior_",
        "degrees_of_freedom_prior_", "degrees_of_freedom_", "covariance_prior_",
    )

    def __init__(
        self,
        *,
        n_components=1,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=None,
        mean_precision_prior=None,
        mean_prior=None,
        degrees_of_freedom_prior=None,
        covariance_prior=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        dtype=None,
        batch_size=None,
    ):
        self._store_arguments(locals())
