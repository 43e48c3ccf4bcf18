"""GaussianMixtureEM: a Gaussian mixture fitted by EM, as a Keras layer.

Batch EM (``fit``): arrays run :func:`keras_gmm.ops.em_driver.in_memory_em`
(small data op by op, then one traced graph per shape; large data
XLA-compiled fixed-shape blocks of cache-sized chunks, a "full" fit on
quadratic features of its rows computed once); a ``tf.data.Dataset``, or
any input under a ``tf.distribute`` strategy, is streamed, one pass per
iteration, each replica's sufficient
statistics summed by one all-reduce (:func:`keras_gmm.ops.em_driver.
streamed_em`). Online EM (``online=True``): inside ``model.fit`` each
training batch makes one stepwise-EM step on decayed statistics, like
BatchNormalization's moving statistics. The state (weights, fitted flag,
online update, scikit-learn's fitted attributes) is the one fitted-mixture
state of :mod:`keras_gmm.layers._mixture_state`; this module holds the EM
fit and scikit-learn's methods.
"""

import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_gmm import _validation
from keras_gmm import mixture as mixture_lib
from keras_gmm.layers._mixture_state import (
    BatchFit,
    ConvergenceWarning,
    MixtureState,
    NotFittedError,
)
from keras_gmm.ops import em, em_driver, gaussian, init

__all__ = [
    "ConvergenceWarning",
    "GaussianMixtureEM",
    "NotFittedError",
    "check_init_params",
    "initial_resp",
]

# The initialisations are keras_gmm.ops.init's (re-exported: public here before).
INIT_PARAMS = init.INIT_PARAMS
check_init_params = init.check_init_params
initial_resp = init.initial_resp
OUTPUTS = ("responsibilities", "log_prob", "both")


# The EM loop of an array fit: em_driver.in_memory_em, op by op then traced
# (no XLA) for small data, else XLA-compiled fixed-shape blocks (one
# compilation per mixture shape, dtype and chunk size, shared by every layer
# instance and data size).
_EM_ITERATIONS = em_driver.in_memory_em


class BatchEMLayer(MixtureState, BatchFit):
    """What the batch-EM layers (:class:`GaussianMixtureEM`,
    :class:`keras_gmm.BayesianGaussianMixtureEM`) share beyond
    :class:`~keras_gmm.layers._mixture_state.BatchFit`: their common
    arguments, the ``output`` modes of ``call`` and their config entries.
    List it before ``keras.layers.Layer`` in the bases."""

    _fit_hint = "call fit(x) first"
    #: the constructor arguments every batch-EM layer has (its config)
    _BATCH_EM_ARGUMENTS = ("num_components", "covariance_type", "tol", "reg_covar",
                           "max_iter", "n_init", "init_params", "warm_start", "seed")

    def _init_batch_em(self, num_components, tol, max_iter, n_init, init_params,
                       warm_start, seed, output):
        """Check and store the common arguments (after
        :meth:`_init_mixture_state`)."""
        check = _validation
        self.num_components = check.check_positive_int(num_components, "num_components")
        self.tol = check.check_number(tol, "tol", low=0.0)
        self.max_iter = check.check_int(max_iter, "max_iter", minimum=0)
        self.n_init = check.check_positive_int(n_init, "n_init")
        self.init_params = init.check_init_params(init_params)
        self.output_mode = check.check_one_of(output, "output", OUTPUTS)
        self.warm_start = check.check_bool(warm_start, "warm_start")
        self.seed = check.check_seed(seed)
        self._rng = np.random.default_rng(seed)
        self.lower_bounds_ = []

    def _check_feature_axis(self, input_shape):
        """``D`` of ``input_shape``; a ValueError when it is unknown."""
        d = input_shape[-1]
        if d is None:
            raise ValueError(
                f"The feature axis of the input to {type(self).__name__} must be "
                f"known; received input_shape={tuple(input_shape)}."
            )
        return int(d)

    def _ill_defined_message(self):
        return em.ill_defined_covariance_message(self.dtype)

    def _outputs(self, log_resp, log_prob):
        """What ``call`` returns for ``output``."""
        if self.output_mode == "responsibilities":
            return tf.exp(log_resp)
        if self.output_mode == "log_prob":
            return log_prob
        return {"responsibilities": tf.exp(log_resp), "log_prob": log_prob}

    def compute_output_shape(self, input_shape):
        resp = tuple(input_shape[:-1]) + (self.num_components,)
        if self.output_mode == "responsibilities":
            return resp
        if self.output_mode == "log_prob":
            return tuple(input_shape[:-1])
        return {"responsibilities": resp, "log_prob": tuple(input_shape[:-1])}

    def compute_output_spec(self, inputs, training=None):
        # The outputs are in the variables' dtype (float32 under
        # mixed_float16), not the compute dtype.
        shape = self.compute_output_shape(tuple(inputs.shape))
        dtype = self.variable_dtype
        if isinstance(shape, dict):
            return {key: keras.KerasTensor(s, dtype=dtype) for key, s in shape.items()}
        return keras.KerasTensor(shape, dtype=dtype)

    def _iterate_in_memory(self, iterations, params, progbar, per_iteration,
                           prev_bound):
        """The loop of ``_run_in_memory``: ``iterations(params, prev_bound,
        limit)`` runs at most ``limit`` compiled iterations (``-> (params,
        bounds [max_iter], n_iter, converged, failed)``), called once, or
        once per iteration with a progress bar (``per_iteration``); a failed
        factor raises scikit-learn's error. ``-> (params, bounds,
        converged)``."""
        bounds, prev, converged = [], prev_bound, False
        while len(bounds) < self.max_iter and not converged:
            limit = 1 if per_iteration else self.max_iter - len(bounds)
            params, block, n_iter, converged, failed = iterations(params, prev, limit)
            block = block.numpy()[: int(n_iter)].tolist()
            if bool(failed):
                raise ValueError(self._ill_defined_message())
            for bound in block:
                progbar.add(1, [("lower_bound", bound), ("change", bound - prev)])
                prev = bound
            bounds += block
            converged = bool(converged)
        return params, bounds, converged

    def _batch_em_config(self):
        """The config entries of the common arguments and ``output``."""
        config = {name: getattr(self, name) for name in self._BATCH_EM_ARGUMENTS}
        config["output"] = self.output_mode
        return config


@keras.saving.register_keras_serializable(package="keras_gmm")
class GaussianMixtureEM(BatchEMLayer, keras.layers.Layer):
    """A Gaussian mixture fitted by Expectation-Maximization, as a Keras layer.

    A drop-in for scikit-learn's ``GaussianMixture`` (same arguments, fitted
    attributes and methods, same numbers for the same initial parameters) whose
    state lives in non-trainable weights, so a model containing it saves to
    ``.keras``, loads, and exports like any Keras model. Each EM iteration is
    one pass that accumulates centred sufficient statistics batch by batch
    (:mod:`keras_gmm.ops.em`), so memory does not grow with the data.

    Args:
        num_components: number of components ``K``.
        covariance_type: "full" (default), "tied", "diag" or "spherical".
        tol: convergence threshold on the change of the lower bound (the mean
            log-likelihood); 0 runs ``max_iter`` iterations.
        reg_covar: added to the covariance diagonals (>= 0; with 0 a
            collapsed component raises scikit-learn's error).
        max_iter: EM iterations per initialisation (>= 0; 0 keeps the
            initial parameters, as scikit-learn). A fit that stops at
            ``max_iter`` without converging warns (``ConvergenceWarning``,
            scikit-learn's class when it is installed).
        n_init: number of initialisations; the best lower bound is kept.
        init_params: "kmeans++_assign" (default: k-means++ seeds, each point
            labelled by its nearest seed), or scikit-learn's "kmeans"
            (k-means labels), "k-means++" (each initial mean on its seed
            point, covariances ``reg_covar * I``), "random" or
            "random_from_data" (see :func:`initial_resp`). The former
            "kmeans++" means "kmeans++_assign" (deprecated spelling).
        weights_init, means_init, precisions_init: initial parameters, as in
            scikit-learn (precisions, not their Cholesky factors); finite.
        warm_start: continue from the current parameters on the next ``fit``
            (one run, ``n_init`` ignored); its convergence test continues
            from the previous fit's ``lower_bound_``, so repeated short fits
            converge (``converged_``) as scikit-learn's do.
        seed: int seed of the initialisations (None: fresh draws).
        output: what ``call`` returns: "responsibilities" ``[batch, K]``,
            "log_prob" ``[batch]`` or "both" (a dict).
        online: update the mixture from each training batch inside
            ``model.fit`` (``call(x, training=True)`` on a trainable layer) by
            stepwise EM; the first training batch initialises it by k-means++
            unless the layer was fitted. Inference calls never change it.
        momentum: online mode's decay of the running statistics, in [0, 1):
            ``stats = momentum * stats + (1 - momentum) * batch_stats``. The
            mixture forgets in about ``1 / (1 - momentum)`` steps, so it can
            follow an encoder that is still training; 0 makes each step a full
            EM iteration on the batch alone.

    Call arguments:
        inputs: ``[..., D]`` features.
        training: with ``online=True`` and ``trainable``, a training call
            first makes one stepwise-EM step on the batch (no gradient flows
            into the EM), as BatchNormalization updates its moving statistics.

    Input shape:
        ``[..., D]``.

    Output shape:
        ``[..., K]`` responsibilities, ``[...]`` log-likelihoods, or a dict
        of both (``output``); in the variables' dtype (float32 under
        ``mixed_float16``).

    Fitted state. ``weights_``, ``means_``, ``precisions_cholesky_``,
    ``covariances_``, ``precisions_`` and the methods raise
    :class:`NotFittedError` before ``fit`` (or a first online step); so does
    an eager call. Inside a model traced before ``fit`` the layer returns its
    placeholder mixture (uniform responsibilities) and warns once.
    ``converged_``, ``n_iter_`` and ``lower_bound_`` are weights too: they
    survive a ``.keras`` round trip (``lower_bounds_``, the per-iteration
    list, does not).

    Non-finite input. ``fit`` refuses NaN/inf rows (arrays upfront, a dataset
    on its first pass). ``predict_proba``, ``score_samples`` give NaN for a
    row holding NaN or inf, ``predict`` gives the label ``-1`` for it (no
    component is invented), ``score``/``bic``/``aic`` are then NaN. An online
    step whose batch holds NaN/inf (or whose M-step fails) keeps the previous
    mixture and is counted in the ``skipped_batches`` weight, with or without
    ``jit_compile``; so is a first batch with fewer rows than components.

    An empty component keeps ``reg_covar * I`` as covariance, its previous mean
    and a weight near 0 (never NaN); a covariance that is not positive definite
    raises a ValueError suggesting a larger ``reg_covar`` (and
    ``dtype="float64"`` for a float32 layer).

    Example:

    >>> import numpy as np, keras_gmm
    >>> x = np.concatenate([np.random.randn(200, 2) - 4, np.random.randn(200, 2) + 4])
    >>> gmm = keras_gmm.GaussianMixtureEM(2, seed=0)
    >>> history = gmm.fit(x.astype("float32"), verbose=0)
    >>> gmm.predict(x[:3]).shape, gmm.means_.shape
    ((3,), (2, 2))
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
        weights_init=None,
        means_init=None,
        precisions_init=None,
        warm_start=False,
        seed=None,
        output="responsibilities",
        online=False,
        momentum=0.99,
        **kwargs,
    ):
        self._init_mixture_state(covariance_type, reg_covar, momentum, kwargs,
                                 zero_reg_covar=True)
        self._init_batch_em(num_components, tol, max_iter, n_init, init_params,
                            warm_start, seed, output)
        self.online = _validation.check_bool(online, "online")
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.weights_init = self._init_array(weights_init, "weights_init")
        self.means_init = self._init_array(means_init, "means_init")
        self.precisions_init = self._init_array(precisions_init, "precisions_init")
        self._unfitted_warned = False

    @staticmethod
    def _init_array(value, name):
        if value is None:
            return None
        return _validation.check_array(value, name, dtype=np.float64)

    # ------------------------------------------------------------------ state
    def build(self, input_shape):
        d = self._check_feature_axis(input_shape)
        self._build_mixture_state(
            self.num_components, d, fitted_flag=True, moving=self.online
        )
        self._mark_legacy_variables()  # the weights of files saved before 0.2
        self._build_fit_summary()
        if self.online:
            self._build_skip_counter()

    # ------------------------------------------------------------------ call
    def call(self, inputs, training=None):
        # Probability math in the variables' dtype (float32 under
        # mixed_float16, float64 with dtype="float64"), never in float16.
        x = tf.cast(inputs, self.variable_dtype)
        if self.online and training and self.trainable:
            self._online_step(tf.stop_gradient(tf.reshape(x, [-1, self.event_size])))
        else:
            self._check_fitted_call()
        w, means, prec_chol = self._params()
        return self._outputs(*gaussian.log_responsibilities(
            x, tf.math.log(w), means, prec_chol, self.covariance_type
        ))

    # ---------------------------------------------------------------- online
    def _online_init_values(self, x):
        """First training batch: k-means++ on it, as ``fit`` would; ``ok``
        False (the batch is skipped) for a batch holding NaN/inf or fewer
        rows than components."""
        k = self.num_components
        finite_rows = tf.reduce_all(tf.math.is_finite(x), axis=-1)
        ok = tf.reduce_all(finite_rows) & (tf.shape(x)[0] >= k)
        # k-means++ runs on a finite stand-in of a skipped batch (its result
        # is dropped): the initialisation's checks never see a NaN.
        safe = tf.where(finite_rows[:, None], x, tf.zeros_like(x))
        w, means, prec_chol = init.initialize(
            safe, k, "kmeans++_assign", self.covariance_type, self.reg_covar,
            mixture_lib.stateless_seed(None, self.seed_generator),
        )
        nk, scatter = self._moving_statistics_of(
            w, self._covariance.covariances(prec_chol)
        )
        values = (w, means, prec_chol, nk, scatter)
        ok &= tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in values])
        return values, ok

    def _online_batch_values(self, x):
        """One replica's part of a step: the statistics of its rows around
        the current means, their count and the rows holding NaN/inf (summed
        over the replicas), and, before the first successful step, the
        k-means++ initialisation of its rows (replica 0's is used)."""
        stats, _ = em.batch_statistics(x, *self._params(), self.covariance_type)
        dtype = stats.nk.dtype
        finite_rows = tf.reduce_all(tf.math.is_finite(x), axis=-1)
        counts = (tf.cast(tf.shape(x)[0], dtype),
                  tf.reduce_sum(tf.cast(tf.logical_not(finite_rows), dtype)))
        # local work only inside the cond (no collective in control flow)
        init = tf.cond(
            self._fitted_tensor(),
            lambda: (tuple(tf.zeros_like(v) for v in (
                self.mixture_weights, self.means, self.precisions_cholesky,
                self.moving_nk, self.moving_scatter)), tf.constant(False)),
            lambda: self._online_init_values(x),
        )
        return (stats, counts), init

    def _online_step(self, x):
        """One stepwise-EM step from a training batch (inside ``model.fit``).

        Under a ``tf.distribute`` strategy every replica ends with the same
        mixture: the replicas' batch statistics are summed (with the first
        step's initialisation from replica 0's rows) by one all-reduce
        outside any ``tf.cond`` (:func:`keras_gmm.ops.em_driver.all_reduce`),
        so a step is the one-process step on the global batch; a global batch
        holding NaN/inf is skipped (and counted) on every replica."""
        k, rows = self.num_components, x.shape[0]
        if rows is not None and rows < k and not self._is_fitted():
            warnings.warn(
                f"GaussianMixtureEM {self.name!r}: a first training batch of "
                f"{rows} rows cannot initialise {k} components; it is skipped "
                "(counted in `skipped_batches`). Use batches of at least "
                "num_components rows, or fit(x) the layer first.", stacklevel=3,
            )
            self.skipped_batches.assign_add(tf.constant(1, tf.int64))
            return
        fitted = self._fitted_tensor()
        summed, first = self._online_batch_values(x)
        (stats, (n, nonfinite)), (init_values, init_ok) = em_driver.all_reduce(
            summed, first)
        values, ok = tf.cond(
            fitted,
            lambda: self._stepwise_update(stats, n),
            lambda: (init_values, init_ok),
        )
        ok &= nonfinite == 0
        self._commit_step(values, ok)
        self.fitted.assign(tf.cast(fitted | ok, self.fitted.dtype))

    # ------------------------------------------------------------------ fit
    def _given_parameters(self, dtype):
        """``weights_init``, ``means_init``, ``precisions_init`` as tensors
        (None where not given)."""
        weights = None if self.weights_init is None else tf.constant(self.weights_init, dtype)
        means = None if self.means_init is None else tf.constant(self.means_init, dtype)
        prec_chol = None if self.precisions_init is None else (
            em.precisions_cholesky_from_precisions(
                tf.constant(self.precisions_init, dtype), self.covariance_type
            )
        )
        return weights, means, prec_chol

    def _initial_parameters(self, dataset, array):
        """scikit-learn's rule: the given initial parameters, and, only when
        one of the three is missing, the ``init_params`` initialisation on
        (a subsample of) the data for the others."""
        given = self._given_parameters(self.dtype)
        if all(t is not None for t in given):
            return given
        x = self._init_rows(dataset, array)
        seed = tf.constant(self._rng.integers(0, 2**31 - 1, size=2), tf.int64)
        computed = init.run(
            init.initialize, x, self.num_components, self.init_params,
            self.covariance_type, tf.constant(self.reg_covar, x.dtype), seed,
        )
        return tuple(c if g is None else g for g, c in zip(given, computed))

    def _current_parameters(self):
        return tuple(tf.cast(t, self.dtype) for t in self._params())

    def _store_parameters(self, params):
        self._assign_mixture(*params)

    def _log_resp_of(self, x):
        return gaussian.log_responsibilities(
            x, *self.mixture()[:3], self.covariance_type
        )

    def _prepare_fit(self, dataset, array, n_features):
        self._check_inits(n_features)

    def _check_inits(self, d):
        """The initial parameters against the data (each message starts
        with scikit-learn's, which its tests match)."""
        k, cov = self.num_components, self._covariance
        checks = [
            ("weights_init", "weights", self.weights_init, (k,)),
            ("means_init", "means", self.means_init, (k, d)),
            ("precisions_init", f"{cov.name} precision", self.precisions_init,
             cov.precisions_cholesky_shape(k, d)),
        ]
        for name, sklearn_name, value, shape in checks:
            if value is not None and value.shape != shape:
                raise ValueError(
                    f"The parameter '{sklearn_name}' should have the shape of "
                    f"{shape}, but got {value.shape}. `{name}` must have shape "
                    f"{shape} for num_components={k}, {d} features and "
                    f"covariance_type={self.covariance_type!r}; received shape "
                    f"{value.shape}."
                )
        w = self.weights_init
        if w is not None and (np.any(w < 0) or np.any(w > 1)):
            # (scikit-learn's message names the minimum "max value")
            raise ValueError(
                "The parameter 'weights' should be in the range [0, 1], but got "
                f"max value {np.min(w):.5f}, min value {np.max(w):.5f}. "
                f"`weights_init` must hold numbers in [0, 1]; received "
                f"weights_init={w.tolist()}."
            )
        if w is not None and abs(w.sum() - 1) > 1e-6:
            raise ValueError(
                "The parameter 'weights' should be normalized, but got "
                f"sum(weights) = {np.sum(w):.5f}. `weights_init` must sum to 1; "
                f"received weights_init={w.tolist()}."
            )
        p = self.precisions_init
        if p is not None and not cov.is_positive_definite(p):
            what = "symmetric, positive-definite" if cov.matrix else "positive"
            raise ValueError(
                f"'{cov.name} precision' should be {what}. `precisions_init` "
                "must be positive definite (symmetric with positive "
                "eigenvalues; positive for diag/spherical)."
            )

    def _run_in_memory(self, x, params, progbar, batch_size, per_iteration,
                       prev_bound=-np.inf):
        """The EM loop (:func:`keras_gmm.ops.em_driver.in_memory_em`: op by
        op for small data, XLA-compiled blocks for large); with a progress
        bar, called one iteration at a time (same data, same compilation).
        ``prev_bound``: the bound before the first iteration (a warm start
        continues the previous fit's convergence test from it)."""
        data = em_driver.InMemoryData(x, self.num_components, self.covariance_type,
                                      batch_size)

        def iterations(params, prev, limit):
            *new, block, n_iter, converged, failed = _EM_ITERATIONS(
                data, *params, self.covariance_type, self.reg_covar, self.max_iter,
                self.tol, tf.constant(prev, x.dtype), tf.constant(limit),
            )
            return tuple(new), block, n_iter, converged, failed

        return self._iterate_in_memory(iterations, params, progbar, per_iteration,
                                       prev_bound)

    def _streamed_pass(self, dataset, params):
        """One EM iteration over ``dataset`` (:func:`keras_gmm.ops.em_driver.
        streamed_pass`; the loop is :meth:`BatchFit._run_streamed`'s)."""
        return em_driver.streamed_pass(dataset, params, self.covariance_type,
                                       self.reg_covar)

    def fit(self, x, batch_size=None, verbose="auto"):
        """Fit by EM; returns a ``keras.callbacks.History`` whose ``history``
        holds ``"lower_bound"`` per iteration (of the best initialisation).

        Arrays are fitted by one compiled loop
        (:func:`keras_gmm.ops.em_driver.em_iterations`, the data walked in
        chunks of ``batch_size`` rows); a ``tf.data.Dataset``, or any input
        under a ``tf.distribute`` strategy, is streamed batch by batch, one
        pass per iteration (:func:`keras_gmm.ops.em_driver.streamed_em`).
        Either way memory does not grow with the number of passes and each
        batch's statistics are summed before the M-step.

        Args:
            x: array ``[n, D]``, or a finite, batched ``tf.data.Dataset`` of
                ``x [batch, D]``, ``(x,)`` or ``(x, y)`` elements (``x`` is
                used; dicts, unbatched and infinite datasets are refused).
            batch_size: integer >= 1, rows per batch/chunk for arrays (None:
                :func:`keras_gmm.ops.em.default_chunk_size`, cache-sized).
            verbose: "auto"/1 shows a Keras progress bar, 0 nothing.

        scikit-learn's rules (:class:`keras_gmm.layers._mixture_state.
        BatchFit`): ``n_init`` runs, the best kept; ``max_iter=0`` keeps the
        initial parameters; a warm start continues the convergence test; a
        ``ConvergenceWarning`` when the kept run did not converge.
        """
        return self._fit(x, batch_size, verbose)

    # ------------------------------------------------------------- methods
    def _n_parameters(self):
        k, d = self.num_components, self.event_size
        return int(self._covariance.num_parameters(k, d) + k * d + k - 1)

    def bic(self, x):
        """Bayesian information criterion on ``x`` (lower is better)."""
        n = len(_validation.check_array(x, "x", ndim=2, allow_nan=True))
        return -2 * self.score(x) * n + self._n_parameters() * math.log(n)

    def aic(self, x):
        """Akaike information criterion on ``x`` (lower is better)."""
        n = len(_validation.check_array(x, "x", ndim=2, allow_nan=True))
        return -2 * self.score(x) * n + 2 * self._n_parameters()

    def get_config(self):
        config = super().get_config()
        config.update(self._batch_em_config())
        for name in ("weights_init", "means_init", "precisions_init"):
            value = getattr(self, name)
            config[name] = None if value is None else value.tolist()
        config.update(online=self.online, momentum=self.momentum)
        return config
