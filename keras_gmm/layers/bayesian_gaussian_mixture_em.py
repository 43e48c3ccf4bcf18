"""BayesianGaussianMixtureEM: scikit-learn's variational Gaussian mixture as a
Keras layer (compiled, streamed, distributed).

The math is :mod:`keras_gmm.ops.bayesian` (scikit-learn's
``BayesianGaussianMixture``: Dirichlet-process or Dirichlet weight priors,
Wishart precisions, Gaussian means); the fit rules (``n_init``, warm start,
``max_iter=0``, ``ConvergenceWarning``, the data checks) are the batch-fit
mixin of :mod:`keras_gmm.layers._mixture_state`, shared with
:class:`keras_gmm.GaussianMixtureEM`. Arrays run one XLA-compiled loop
(:func:`keras_gmm.ops.bayesian.variational_iterations`); a
``tf.data.Dataset``, or any input under a ``tf.distribute`` strategy, is
streamed, one pass per iteration, each replica's statistics summed by one
all-reduce.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_gmm import _validation
from keras_gmm.layers.gaussian_mixture_em import BatchEMLayer
from keras_gmm.ops import bayesian, em, em_driver, init

__all__ = ["BayesianGaussianMixtureEM"]

#: The prior arguments (scikit-learn's), None for its data-dependent defaults.
_PRIOR_ARGUMENTS = ("weight_concentration_prior", "mean_precision_prior",
                    "mean_prior", "degrees_of_freedom_prior", "covariance_prior")


# Compiled once per (data shape, types, max_iter, chunk size) and shared by
# every layer; tol, reg_covar and the bounds are tensors (no retrace per value).
_VARIATIONAL_ITERATIONS = tf.function(
    bayesian.variational_iterations, jit_compile=True, autograph=False
)
_VARIATIONAL_PASS = tf.function(
    lambda totals, state, priors, ctype, reg_covar, wtype: bayesian.variational_pass(
        totals, state, priors, ctype, reg_covar, wtype, check=False
    ),
    autograph=False,
)


@keras.saving.register_keras_serializable(package="keras_gmm")
class BayesianGaussianMixtureEM(BatchEMLayer, keras.layers.Layer):
    """A variational Bayesian Gaussian mixture, as a Keras layer.

    scikit-learn's ``BayesianGaussianMixture`` (same priors, updates and
    lower bound; the same numbers from the same initial responsibilities),
    whose posterior lives in non-trainable weights: a model holding it saves
    to ``.keras``, loads and exports like any Keras model. With the
    Dirichlet-process prior (default) and a small
    ``weight_concentration_prior``, the components the data do not need get
    weights near 0: fit an upper bound ``K`` and count the components that
    keep weight.

    The model (Bishop 2006, 10.2): weights ``~ Dir(alpha_0 / K)``
    ("dirichlet_distribution") or stick-breaking ``Beta(1, alpha_0)``
    ("dirichlet_process"); each precision ``~ Wishart(nu_0, W_0)``, each mean
    ``~ N(m_0, (beta_0 Lambda_k)^-1)``. The mean-field posterior has the same
    families; an iteration is a variational E-step and M-step on the same
    accumulable statistics as EM (:mod:`keras_gmm.ops.bayesian`), and the
    lower bound is scikit-learn's (constants dropped).

    Args:
        num_components: the upper bound ``K`` on the number of components.
        covariance_type: "full" (default), "tied", "diag" or "spherical".
        tol: convergence threshold on the change of the lower bound.
        reg_covar: >= 0, added to the diagonal of the data covariances.
        max_iter: iterations per initialisation (>= 0; 0 keeps the initial
            posterior); a run that stops there warns
            (``ConvergenceWarning``).
        n_init: initialisations; the highest lower bound is kept.
        init_params: as :class:`keras_gmm.GaussianMixtureEM`'s
            ("kmeans++_assign", "kmeans", "k-means++", "random",
            "random_from_data"): the initial responsibilities, whose
            variational M-step is the initial posterior.
        weight_concentration_prior_type: "dirichlet_process" (default) or
            "dirichlet_distribution".
        weight_concentration_prior: ``alpha_0 > 0`` (None: ``1 / K``);
            smaller values empty more components.
        mean_precision_prior: ``beta_0 > 0`` (None: 1).
        mean_prior: ``m_0`` ``[D]`` (None: the data mean).
        degrees_of_freedom_prior: ``nu_0 > D - 1`` (None: ``D``).
        covariance_prior: ``W_0^-1``: ``[D, D]`` for full/tied, ``[D]`` for
            diag, a number for spherical (None: the data's covariance,
            ``ddof=1``).
        warm_start: continue from the current posterior on the next ``fit``
            (its convergence test continues from ``lower_bound_``).
        seed: int seed of the initialisations (None: fresh draws).
        output: what ``call`` returns: "responsibilities" ``[batch, K]``,
            "log_prob" ``[batch]`` (scikit-learn's ``score_samples``: the
            logsumexp of ``E[log pi_k] + E[log N(x | mu_k, Lambda_k^-1)]``)
            or "both" (a dict).

    Call arguments:
        inputs: ``[..., D]`` features.

    Input shape:
        ``[..., D]``.

    Output shape:
        ``[..., K]``, ``[...]`` or a dict of both (``output``), in the
        variables' dtype (float32 under ``mixed_float16``).

    Fitted state. scikit-learn's attributes: ``weights_`` (posterior mean
    weights), ``means_``, ``covariances_`` (``W_k^-1 / nu_k``),
    ``precisions_``, ``precisions_cholesky_``, ``weight_concentration_``
    (a pair ``(a, b)`` of Beta parameters for the Dirichlet process, else
    ``[K]``), ``mean_precision_``, ``degrees_of_freedom_``, the resolved
    priors ``weight_concentration_prior_``, ``mean_precision_prior_``,
    ``mean_prior_``, ``degrees_of_freedom_prior_``, ``covariance_prior_``,
    and ``converged_``, ``n_iter_``, ``lower_bound_``. All are weights (they
    survive ``.keras``) except ``lower_bounds_``. Before ``fit`` they raise
    :class:`~keras_gmm.layers._mixture_state.NotFittedError`.

    Non-finite input. As :class:`keras_gmm.GaussianMixtureEM`: ``fit``
    refuses NaN/inf rows; ``predict_proba``/``score_samples`` give NaN and
    ``predict`` ``-1`` for such a row.

    Example:

    >>> import numpy as np, keras_gmm
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(size=(150, 2)) - 5,
    ...                     rng.normal(size=(150, 2)) + 5])
    >>> bgm = keras_gmm.BayesianGaussianMixtureEM(
    ...     6, "diag", weight_concentration_prior=1e-3, seed=0, dtype="float64")
    >>> _ = bgm.fit(x, verbose=0)
    >>> int(np.sum(bgm.weights_ > 0.01))
    2

    Reference:
        Bishop, *Pattern Recognition and Machine Learning*, 2006, 10.2;
        Blei & Jordan, *Variational inference for Dirichlet process
        mixtures*, Bayesian Analysis 1(1), 2006.
    """

    def __init__(
        self,
        num_components,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans++_assign",
        weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=None,
        mean_precision_prior=None,
        mean_prior=None,
        degrees_of_freedom_prior=None,
        covariance_prior=None,
        warm_start=False,
        seed=None,
        output="responsibilities",
        **kwargs,
    ):
        self._init_mixture_state(covariance_type, reg_covar, 0.0, kwargs,
                                 zero_reg_covar=True)
        self._init_batch_em(num_components, tol, max_iter, n_init, init_params,
                            warm_start, seed, output)
        check = _validation
        self.weight_concentration_prior_type = (
            bayesian.check_weight_concentration_prior_type(
                weight_concentration_prior_type
            )
        )
        self.weight_concentration_prior = self._optional_positive(
            weight_concentration_prior, "weight_concentration_prior")
        self.mean_precision_prior = self._optional_positive(
            mean_precision_prior, "mean_precision_prior")
        self.degrees_of_freedom_prior = self._optional_positive(
            degrees_of_freedom_prior, "degrees_of_freedom_prior")
        self.mean_prior = None if mean_prior is None else _validation.check_array(
            mean_prior, "mean_prior", ndim=1, dtype=np.float64)
        # (its shape and definiteness are checked against the data in fit)
        if covariance_prior is None:
            self.covariance_prior = None
        elif not self._covariance.component_shape(1):  # one variance: a number
            self.covariance_prior = check.check_positive(
                covariance_prior, "covariance_prior")
        else:
            self.covariance_prior = _validation.check_array(
                covariance_prior, "covariance_prior", dtype=np.float64)
        self._priors = None

    @staticmethod
    def _optional_positive(value, name):
        return None if value is None else _validation.check_positive(value, name)

    @property
    def _weight_prior_shape(self):
        k = self.num_components
        return (2, k) if self.weight_concentration_prior_type == "dirichlet_process" else (k,)

    # ------------------------------------------------------------------ state
    def build(self, input_shape):
        k, d = self.num_components, self._check_feature_axis(input_shape)
        cov = self._covariance
        self._build_mixture_state(k, d, fitted_flag=True, moving=False)
        weight = self._state_weight
        self.weight_concentration = weight(
            "weight_concentration", self._weight_prior_shape, "ones")
        self.mean_precision = weight("mean_precision", (k,), "ones")
        self.degrees_of_freedom = weight(
            "degrees_of_freedom", () if cov.shared else (k,),
            keras.initializers.Constant(float(d)))
        self.weight_concentration_prior_var = weight(
            "weight_concentration_prior", (), "ones")
        self.mean_precision_prior_var = weight("mean_precision_prior", (), "ones")
        self.mean_prior_var = weight("mean_prior", (d,), "zeros")
        self.degrees_of_freedom_prior_var = weight(
            "degrees_of_freedom_prior", (), keras.initializers.Constant(float(d)))
        self.covariance_prior_var = weight(
            "covariance_prior", cov.component_shape(d),
            keras.initializers.Constant(
                cov.identity_precisions_cholesky(1, d).reshape(cov.component_shape(d))
            ),
        )
        self._build_fit_summary()

    def _state(self):
        """The posterior as a :class:`keras_gmm.ops.bayesian.VariationalState`."""
        concentration = tf.convert_to_tensor(self.weight_concentration)
        if self.weight_concentration_prior_type == "dirichlet_process":
            concentration = (concentration[0], concentration[1])
        prec_chol = tf.convert_to_tensor(self.precisions_cholesky)
        return bayesian.VariationalState(
            concentration, tf.convert_to_tensor(self.mean_precision),
            tf.convert_to_tensor(self.means),
            tf.convert_to_tensor(self.degrees_of_freedom),
            self._covariance.covariances(prec_chol), prec_chol,
        )

    def _stored_priors(self):
        return bayesian.Priors(*(tf.convert_to_tensor(v) for v in (
            self.weight_concentration_prior_var, self.mean_precision_prior_var,
            self.mean_prior_var, self.degrees_of_freedom_prior_var,
            self.covariance_prior_var,
        )))

    def _fitted_numpy(self, name):
        self._check_fitted()  # (before the weight is read: it may not exist)
        return getattr(self, name).numpy()

    @property
    def weight_concentration_(self):
        """``(a [K], b [K])`` (Dirichlet process) or ``[K]``."""
        value = self._fitted_numpy("weight_concentration")
        if self.weight_concentration_prior_type == "dirichlet_process":
            return value[0], value[1]
        return value

    @property
    def mean_precision_(self):
        return self._fitted_numpy("mean_precision")

    @property
    def degrees_of_freedom_(self):
        return self._fitted_numpy("degrees_of_freedom")

    @property
    def weight_concentration_prior_(self):
        return float(self._fitted_numpy("weight_concentration_prior_var"))

    @property
    def mean_precision_prior_(self):
        return float(self._fitted_numpy("mean_precision_prior_var"))

    @property
    def mean_prior_(self):
        return self._fitted_numpy("mean_prior_var")

    @property
    def degrees_of_freedom_prior_(self):
        return float(self._fitted_numpy("degrees_of_freedom_prior_var"))

    @property
    def covariance_prior_(self):
        value = self._fitted_numpy("covariance_prior_var")
        return float(value) if value.ndim == 0 else value

    # ------------------------------------------------------------------ call
    def call(self, inputs):
        # Probability math in the variables' dtype, never in float16.
        x = tf.cast(inputs, self.variable_dtype)
        self._check_fitted_call()
        return self._outputs(*self._log_resp_of(x))

    def _log_resp_of(self, x):
        return bayesian.variational_log_resp(
            x, self._state(), self.covariance_type, self.weight_concentration_prior_type
        )

    # ------------------------------------------------------------------ fit
    def _prior_arguments(self):
        return {name: getattr(self, name) for name in _PRIOR_ARGUMENTS}

    def _data_moments(self, dataset):
        """The data's mean and default covariance prior, streamed: one pass
        of :func:`keras_gmm.ops.bayesian.data_statistics` summed by
        :func:`keras_gmm.ops.em_driver.streamed_sums` (all-reduced under a
        strategy: every worker gets the moments of all workers' rows),
        exact moments around the first batch's mean (worker 0's under a
        multi-worker strategy, :func:`keras_gmm.ops.em_driver.agree`)."""
        ctype = self.covariance_type
        first = next(iter(dataset))
        shift = em_driver.agree(tf.reduce_mean(first, axis=0))
        zero = em.zero_statistics(1, int(first.shape[-1]), ctype, first.dtype)
        total, n_rows, nonfinite = em_driver.streamed_sums(
            dataset, bayesian.data_statistics, (shift, ctype), zero)
        if nonfinite:
            raise self._nonfinite_dataset_error(nonfinite)
        if n_rows < 2:
            raise ValueError("`x` must have at least 2 rows to estimate the priors.")
        mean, cov_prior = bayesian.data_moments(em.Stats(*total), shift, ctype)
        return mean.numpy(), cov_prior.numpy()

    def _prepare_fit(self, dataset, array, n_features):
        """scikit-learn's ``_check_parameters``: the priors, with the
        data-dependent defaults, checked and stored."""
        kwargs = self._prior_arguments()
        if array is not None:
            if len(array) < 2:
                raise ValueError("`x` must have at least 2 rows to estimate the priors.")
            priors = bayesian.priors_from_data(
                tf.constant(array), self.num_components, self.covariance_type,
                **kwargs)
        else:
            need_data = kwargs["mean_prior"] is None or kwargs["covariance_prior"] is None
            mean, cov_prior = self._data_moments(dataset) if need_data else (None, None)
            priors = bayesian.resolve_priors(
                self.num_components, n_features, self.covariance_type, mean, cov_prior,
                dtype=self.dtype, **kwargs)
        for variable, value in zip(
            (self.weight_concentration_prior_var, self.mean_precision_prior_var,
             self.mean_prior_var, self.degrees_of_freedom_prior_var,
             self.covariance_prior_var), priors,
        ):
            variable.assign(tf.cast(value, variable.dtype))
        self._priors = self._stored_priors()

    def _scalar(self, value):
        return tf.constant(value, self.dtype)

    def _initial_parameters(self, dataset, array):
        x = self._init_rows(dataset, array)
        seed = tf.constant(self._rng.integers(0, 2**31 - 1, size=2), tf.int64)
        return init.run(
            init.initial_variational_state, x, self.num_components,
            self.init_params, self.covariance_type, self._scalar(self.reg_covar),
            seed, self._priors, self.weight_concentration_prior_type,
        )

    def _current_parameters(self):
        return self._state()

    def _store_parameters(self, state):
        weights = bayesian.mixture_weights(
            state.weight_concentration, self.weight_concentration_prior_type
        )
        self._assign_mixture(weights, state.means, state.precisions_cholesky)
        concentration = state.weight_concentration
        if isinstance(concentration, (tuple, list)):
            concentration = tf.stack(concentration)
        for variable, value in ((self.weight_concentration, concentration),
                                (self.mean_precision, state.mean_precision),
                                (self.degrees_of_freedom, state.degrees_of_freedom)):
            variable.assign(tf.cast(value, variable.dtype))

    def _run_in_memory(self, x, state, progbar, batch_size, per_iteration,
                       prev_bound=-np.inf):
        """The whole variational loop compiled (:func:`keras_gmm.ops.
        bayesian.variational_iterations`); with a progress bar, one
        iteration per call (same graph). ``prev_bound``: the bound before
        the first iteration (a warm start continues the previous fit's
        convergence test from it). Large "full" data: the quadratic
        features of the rows computed once for every call
        (:func:`keras_gmm.ops.em_driver.quadratic_features`)."""
        features = em_driver.quadratic_features(x, self.num_components,
                                                self.covariance_type, batch_size)

        def iterations(state, prev, limit):
            return _VARIATIONAL_ITERATIONS(
                x, state, self._priors, self.covariance_type,
                self.weight_concentration_prior_type, self._scalar(self.reg_covar),
                self.max_iter, self._scalar(self.tol), batch_size,
                self._scalar(prev), tf.constant(limit), features,
            )

        return self._iterate_in_memory(iterations, state, progbar, per_iteration,
                                       prev_bound)

    def _streamed_pass(self, dataset, state):
        """One variational pass over ``dataset``: the statistics streamed by
        :func:`keras_gmm.ops.em_driver.streamed_sums` (one all-reduce per
        batch under a strategy), then the variational M-step; an
        :class:`keras_gmm.ops.em_driver.StreamedPass` (the loop is
        :meth:`BatchFit._run_streamed`'s)."""
        ctype, wtype = self.covariance_type, self.weight_concentration_prior_type
        zero = bayesian.zero_statistics(self.num_components, self.event_size, ctype,
                                        state.means.dtype)
        totals, n, nonfinite = em_driver.streamed_sums(
            dataset, bayesian.batch_statistics, (state, ctype, wtype), zero)
        if nonfinite:
            return em_driver.StreamedPass(float("nan"), state, n, nonfinite)
        bound, new = _VARIATIONAL_PASS(totals, state, self._priors, ctype,
                                       self._scalar(self.reg_covar), wtype)
        return em_driver.StreamedPass(float(bound), new, n, nonfinite)

    def initialize_from_responsibilities(self, x, resp):
        """Set the posterior to the variational M-step of responsibilities
        (scikit-learn's ``_initialize(X, resp)``), the priors resolved from
        ``x``; a following ``fit`` with ``warm_start=True`` iterates from it,
        its convergence test starting afresh. Starts a fit from another
        clustering's labels (one-hot ``resp``), or from scikit-learn's.

        Args:
            x: array ``[n, D]`` (finite, at least 2 rows).
            resp: array ``[n, K]`` of non-negative responsibilities.

        Returns:
            ``self``.
        """
        array = _validation.check_array(x, "x", ndim=2, min_rows=2)
        resp = _validation.check_array(resp, "resp", ndim=2)
        if resp.shape != (len(array), self.num_components) or np.any(resp < 0):
            raise ValueError(
                f"`resp` must be an array [n, K] = [{len(array)}, "
                f"{self.num_components}] of non-negative responsibilities; "
                f"received an array of shape {resp.shape}."
            )
        if not self.built:
            self.build((None, array.shape[1]))
        elif array.shape[1] != self.event_size:
            raise ValueError(
                f"`x` has {array.shape[1]} features but the layer was built for "
                f"{self.event_size}."
            )
        array = array.astype(self.dtype, copy=False)
        self._prepare_fit(None, array, array.shape[1])
        state = bayesian.initial_state_from_resp(
            tf.constant(array), tf.constant(resp, self.dtype), self._priors,
            self.covariance_type, self._scalar(self.reg_covar),
            self.weight_concentration_prior_type,
        )
        self._store_parameters(state)
        self._lower_bound.assign(-np.inf)
        self._n_iter.assign(0)
        self._converged.assign(False)
        return self

    def fit(self, x, batch_size=None, verbose="auto"):
        """Fit by variational inference; returns a ``keras.callbacks.
        History`` whose ``history["lower_bound"]`` holds the kept run's bound
        per iteration.

        Args:
            x: array ``[n, D]`` (at least 2 rows), or a finite, batched
                ``tf.data.Dataset`` of ``x``, ``(x,)`` or ``(x, y)``
                elements (streamed: one pass for the data-dependent priors,
                then one per iteration).
            batch_size: rows per chunk (arrays) or batch (arrays under a
                strategy); None: cache-sized chunks.
            verbose: "auto"/1 shows a Keras progress bar, 0 nothing.

        The priors (``*_prior_``) are resolved from the arguments and the
        data at every fit, as scikit-learn's. The initialisation sees at most
        100,000 rows (a random subsample of a larger array, the first rows
        of a dataset).
        """
        return self._fit(x, batch_size, verbose)

    def get_config(self):
        config = super().get_config()
        config.update(self._batch_em_config())
        config["weight_concentration_prior_type"] = self.weight_concentration_prior_type
        for name, value in self._prior_arguments().items():
            config[name] = value.tolist() if isinstance(value, np.ndarray) else value
        return config
