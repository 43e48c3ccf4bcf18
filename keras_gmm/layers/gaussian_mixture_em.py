"""GaussianMixtureEM: a Gaussian mixture fitted by EM, as a Keras layer.

Batch EM (``fit``): arrays run one XLA-compiled loop over all iterations
(:func:`keras_gmm.ops.em_driver.em_iterations`, the data in cache-sized
chunks); a ``tf.data.Dataset``, or any input under a ``tf.distribute``
strategy, is streamed, one pass per iteration, each replica's sufficient
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
from keras_gmm.layers._mixture_state import MixtureState, NotFittedError, check_rows
from keras_gmm.ops import em, em_driver, gaussian

__all__ = ["GaussianMixtureEM", "NotFittedError"]

INIT_PARAMS = em.INIT_PARAMS
OUTPUTS = ("responsibilities", "log_prob", "both")
# At most this many rows are held in memory to initialise from a Dataset.
_MAX_INIT_ROWS = 100_000


# Compiled once per (data shape, covariance type, max_iter, batch size) and
# shared by every layer instance (n_init, refits, several layers). The ops
# write their loops and branches as tf.while_loop / tf.cond, so AutoGraph's
# source conversion is skipped (it was about a third of a first fit's time).
_EM_ITERATIONS = tf.function(em_driver.em_iterations, jit_compile=True, autograph=False)
_INITIALIZE = tf.function(em.initialize, jit_compile=True, autograph=False)


def _dataset_of_rows(dataset, dtype, name="x"):
    """A ``tf.data.Dataset`` given to ``fit`` as a dataset of ``[batch, D]``
    tensors in ``dtype``, and ``D``; a ValueError naming the fix otherwise.

    Accepts elements ``x``, ``(x,)`` and ``(x, y)`` (``x`` is used, ``y``
    ignored); refuses infinite and empty datasets, dicts, longer tuples,
    unbatched (1-D) elements and non-numeric ones.
    """
    # TODO(_validation): a check_dataset there would serve every fit.
    cardinality = int(tf.data.experimental.cardinality(dataset))
    if cardinality == int(tf.data.experimental.INFINITE_CARDINALITY):
        raise ValueError(
            f"`{name}` is an infinite tf.data.Dataset (e.g. made with "
            ".repeat()); EM makes one pass over the data per iteration, so it "
            "needs a finite one: drop the .repeat() or bound it with "
            ".take(n_batches)."
        )
    spec = dataset.element_spec
    if isinstance(spec, tuple) and len(spec) in (1, 2):
        dataset = dataset.map(lambda *element: element[0])
        spec = spec[0]
    if not isinstance(spec, tf.TensorSpec):
        fix = ("dataset.map(lambda d: d['features'])" if isinstance(spec, dict)
               else "dataset.map(lambda x, *rest: x) (EM takes no sample weights)")
        raise ValueError(
            f"`{name}` must be a tf.data.Dataset of feature batches `x`, or of "
            "`(x,)` or `(x, y)` tuples (x is used); received elements of "
            f"structure {_validation.describe(spec, 200)}. Map it to x first, "
            f"e.g. {fix}."
        )
    if not (spec.dtype.is_floating or spec.dtype.is_integer or spec.dtype.is_bool):
        raise ValueError(
            f"`{name}` must hold real numbers; received a tf.data.Dataset of "
            f"dtype {spec.dtype.name}."
        )
    rank = spec.shape.rank
    if rank is not None and rank != 2:
        fix = (" It looks unbatched: call dataset.batch(1024) first."
               if rank == 1 else "")
        raise ValueError(
            f"`{name}` must be a tf.data.Dataset of 2-D batches [batch, "
            f"n_features]; received elements of shape {spec.shape}.{fix}"
        )
    first = next(iter(dataset.take(1)), None)
    if cardinality == 0 or first is None:
        raise ValueError(f"`{name}` is an empty tf.data.Dataset; it has no rows to fit.")
    if first.shape.rank != 2:
        raise ValueError(
            f"`{name}` must be a tf.data.Dataset of 2-D batches [batch, "
            f"n_features]; received a first element of shape {first.shape}."
        )
    return dataset.map(lambda b: tf.cast(b, dtype)), int(first.shape[-1])


@keras.saving.register_keras_serializable(package="keras_gmm")
class GaussianMixtureEM(MixtureState, keras.layers.Layer):
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
        reg_covar: added to the covariance diagonals (> 0).
        max_iter: EM iterations per initialisation.
        n_init: number of initialisations; the best lower bound is kept.
        init_params: "kmeans++" (default), "kmeans", "random" or
            "random_from_data".
        weights_init, means_init, precisions_init: initial parameters, as in
            scikit-learn (precisions, not their Cholesky factors); finite.
        warm_start: continue from the current parameters on the next ``fit``.
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

    _fit_hint = "call fit(x) first"

    def __init__(
        self,
        num_components,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans++",
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
        self._init_mixture_state(covariance_type, reg_covar, momentum, kwargs)
        check = _validation
        self.num_components = check.check_positive_int(num_components, "num_components")
        self.tol = check.check_number(tol, "tol", low=0.0)
        self.max_iter = check.check_positive_int(max_iter, "max_iter")
        self.n_init = check.check_positive_int(n_init, "n_init")
        self.init_params = check.check_one_of(init_params, "init_params", INIT_PARAMS)
        self.output_mode = check.check_one_of(output, "output", OUTPUTS)
        self.warm_start = check.check_bool(warm_start, "warm_start")
        self.online = check.check_bool(online, "online")
        self.seed = check.check_seed(seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.weights_init = self._init_array(weights_init, "weights_init")
        self.means_init = self._init_array(means_init, "means_init")
        self.precisions_init = self._init_array(precisions_init, "precisions_init")
        self._rng = np.random.default_rng(seed)
        self.lower_bounds_ = []
        self._unfitted_warned = False

    @staticmethod
    def _init_array(value, name):
        if value is None:
            return None
        return _validation.check_array(value, name, dtype=np.float64)

    # ------------------------------------------------------------------ state
    def build(self, input_shape):
        d = input_shape[-1]
        if d is None:
            raise ValueError(
                "The feature axis of the input to GaussianMixtureEM must be "
                f"known; received input_shape={tuple(input_shape)}."
            )
        self._build_mixture_state(
            self.num_components, d, fitted_flag=True, moving=self.online
        )
        self._mark_legacy_variables()  # the weights of files saved before 0.2
        self._n_iter = self._state_weight("n_iter", (), "zeros", dtype="int64")
        self._lower_bound = self._state_weight(
            "lower_bound", (), keras.initializers.Constant(-np.inf), dtype="float64"
        )
        self._converged = self._state_weight("converged", (), "zeros", dtype="bool")
        if self.online:
            self._build_skip_counter()

    @property
    def converged_(self):
        """Whether the best initialisation's EM run converged."""
        return bool(self._converged.numpy()) if self.built else False

    @property
    def n_iter_(self):
        """EM iterations of the best initialisation."""
        return int(self._n_iter.numpy()) if self.built else 0

    @property
    def lower_bound_(self):
        """The best initialisation's last lower bound (mean log-likelihood)."""
        return float(self._lower_bound.numpy()) if self.built else -np.inf

    def _ill_defined_message(self):
        return em.ill_defined_covariance_message(self.dtype)

    # ------------------------------------------------------------------ call
    def _check_fitted_call(self):
        """Eagerly, an unfitted layer raises; in a traced graph (a model
        compiled before fit) it warns once and serves its placeholder."""
        if tf.executing_eagerly():
            self._check_fitted()
        elif not self._unfitted_warned and not self._is_fitted():
            self._unfitted_warned = True
            warnings.warn(
                f"GaussianMixtureEM {self.name!r} is not fitted yet: the "
                "model uses its placeholder mixture (uniform "
                "responsibilities) until fit(x) is called.", stacklevel=3,
            )

    def call(self, inputs, training=None):
        # Probability math in the variables' dtype (float32 under
        # mixed_float16, float64 with dtype="float64"), never in float16.
        x = tf.cast(inputs, self.variable_dtype)
        if self.online and training and self.trainable:
            self._online_step(tf.stop_gradient(tf.reshape(x, [-1, self.event_size])))
        else:
            self._check_fitted_call()
        w, means, prec_chol = self._params()
        log_resp, log_prob = gaussian.log_responsibilities(
            x, tf.math.log(w), means, prec_chol, self.covariance_type
        )
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
        w, means, prec_chol = em.initialize(
            safe, k, "kmeans++", self.covariance_type, self.reg_covar,
            mixture_lib.stateless_seed(None, self.seed_generator),
        )
        nk, scatter = self._moving_statistics_of(
            w, self._covariance.covariances(prec_chol)
        )
        values = (w, means, prec_chol, nk, scatter)
        ok &= tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in values])
        return values, ok

    def _online_update_values(self, x):
        stats, _ = em.batch_statistics(x, *self._params(), self.covariance_type)
        return self._stepwise_values(stats, tf.shape(x)[0])

    def _online_step(self, x):
        """One stepwise-EM step from a training batch (inside ``model.fit``)."""
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
        values, ok = tf.cond(
            fitted,
            lambda: self._online_update_values(x),
            lambda: self._online_init_values(x),
        )
        self._commit_step(values, ok)
        self.fitted.assign(tf.cast(fitted | ok, self.fitted.dtype))

    # ------------------------------------------------------------------ data
    def _data(self, x, batch_size):
        """``(dataset, None, D)`` for a ``tf.data.Dataset``, else ``(None,
        array, D)``: checked, in the layer's dtype, copied at most once."""
        dtype = self.dtype
        if isinstance(x, tf.data.Dataset):
            dataset, d = _dataset_of_rows(x, dtype)
            return dataset, None, d
        array = _validation.check_array(x, "x", ndim=2, allow_nan=True)
        check_rows(~np.all(np.isfinite(array), axis=1), "x", "contains NaN or inf",
                   "remove or impute them")
        self._check_enough_rows(len(array))
        array = array.astype(dtype, copy=False)
        if tf.distribute.has_strategy():
            rows = len(array) if batch_size is None else batch_size
            return tf.data.Dataset.from_tensor_slices(array).batch(rows), array, array.shape[1]
        return None, array, array.shape[1]

    def _check_enough_rows(self, n):
        if n < self.num_components:
            raise ValueError(
                f"`x` has {n} samples, fewer than num_components="
                f"{self.num_components}; use fewer components or more data."
            )

    def _init_rows(self, dataset, array):
        """The rows the initialisation sees: all of an array up to
        ``_MAX_INIT_ROWS``, else a uniform random subsample of that many
        rows; from a dataset, its first ``_MAX_INIT_ROWS`` rows."""
        if array is not None:
            if len(array) <= _MAX_INIT_ROWS:
                return tf.constant(array)
            rows = np.sort(self._rng.choice(len(array), _MAX_INIT_ROWS, replace=False))
            return tf.constant(array[rows])
        rows, count = [], 0
        for batch in dataset:
            rows.append(batch.numpy())
            count += len(rows[-1])
            if count >= _MAX_INIT_ROWS:
                break
        rows = np.concatenate(rows)[:_MAX_INIT_ROWS]
        if not np.all(np.isfinite(rows)):
            raise self._nonfinite_dataset_error(
                int(np.sum(~np.all(np.isfinite(rows), axis=1))), "among its first rows"
            )
        self._check_enough_rows(len(rows))
        return tf.constant(rows)

    @staticmethod
    def _nonfinite_dataset_error(count, where=""):
        where = f" {where}" if where else ""
        return ValueError(
            f"`x` (a tf.data.Dataset) contains NaN or inf in {count} rows{where}; "
            "remove or impute them first, e.g. dataset.unbatch().filter(lambda "
            "r: tf.reduce_all(tf.math.is_finite(r))).batch(n)."
        )

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
        computed = _INITIALIZE(
            x, self.num_components, self.init_params, self.covariance_type,
            self.reg_covar, seed,
        )
        return tuple(c if g is None else g for g, c in zip(given, computed))

    def _check_inits(self, d):
        k, cov = self.num_components, self._covariance
        checks = [
            ("weights_init", self.weights_init, (k,)),
            ("means_init", self.means_init, (k, d)),
            ("precisions_init", self.precisions_init, cov.precisions_cholesky_shape(k, d)),
        ]
        for name, value, shape in checks:
            if value is not None and value.shape != shape:
                raise ValueError(
                    f"`{name}` must have shape {shape} for num_components={k}, "
                    f"{d} features and covariance_type={self.covariance_type!r}; "
                    f"received shape {value.shape}."
                )
        w = self.weights_init
        if w is not None and (np.any(w < 0) or abs(w.sum() - 1) > 1e-6):
            raise ValueError(
                "`weights_init` must be non-negative and sum to 1; received "
                f"weights_init={w.tolist()}."
            )
        p = self.precisions_init
        if p is not None and not cov.is_positive_definite(p):
            raise ValueError(
                "`precisions_init` must be positive definite (symmetric with "
                "positive eigenvalues; positive for diag/spherical)."
            )

    def _run_in_memory(self, x, params, progbar, batch_size, per_iteration):
        """The whole EM loop compiled (:func:`keras_gmm.ops.em_driver.
        em_iterations`); with a progress bar, called one iteration at a time
        (same graph)."""
        bounds, prev, converged = [], -np.inf, False
        while len(bounds) < self.max_iter and not converged:
            limit = 1 if per_iteration else self.max_iter - len(bounds)
            *new, block, n_iter, converged, failed = _EM_ITERATIONS(
                x, *params, self.covariance_type, self.reg_covar, self.max_iter,
                self.tol, batch_size, tf.constant(prev, x.dtype), tf.constant(limit),
            )
            block = block.numpy()[: int(n_iter)].tolist()
            if bool(failed):
                raise ValueError(self._ill_defined_message())
            for bound in block:
                progbar.add(1, [("lower_bound", bound), ("change", bound - prev)])
                prev = bound
            bounds += block
            params, converged = tuple(new), bool(converged)
        return params, bounds, converged

    def _run_streamed(self, dataset, params, progbar):
        result = em_driver.streamed_em(
            dataset, params, self.covariance_type, self.reg_covar, self.max_iter,
            self.tol,
            callback=lambda bound, prev: progbar.add(
                1, [("lower_bound", bound), ("change", bound - prev)]
            ),
        )
        if result.nonfinite_rows:
            raise self._nonfinite_dataset_error(result.nonfinite_rows)
        if result.failed:
            raise ValueError(self._ill_defined_message())
        return result.params, result.bounds, result.converged

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
        """
        if batch_size is not None:
            batch_size = _validation.check_positive_int(batch_size, "batch_size")
        dataset, array, d = self._data(x, batch_size)
        if not self.built:
            self.build((None, d))
        elif d != self.event_size:
            raise ValueError(
                f"`x` has {d} features but the layer was built for "
                f"{self.event_size}."
            )
        self._check_inits(d)
        streamed = dataset is not None
        x_in_memory = None if streamed else tf.constant(array)
        verbose = int(verbose != 0)
        use_current = self.warm_start and self._is_fitted()
        best = None
        n_init = 1 if use_current else self.n_init
        progbar = keras.utils.Progbar(self.max_iter * n_init, verbose=verbose)
        for _ in range(n_init):
            if use_current:
                params = tuple(tf.cast(t, self.dtype) for t in self._params())
            else:
                params = self._initial_parameters(dataset, array)
            if streamed:
                result = self._run_streamed(dataset, params, progbar)
            else:
                result = self._run_in_memory(
                    x_in_memory, params, progbar, batch_size, per_iteration=verbose
                )
            if best is None or result[1][-1] > best[1][-1]:
                best = result
        params, bounds, converged = best
        self._assign_mixture(*params)
        self.lower_bounds_ = bounds
        self._lower_bound.assign(bounds[-1])
        self._n_iter.assign(len(bounds))
        self._converged.assign(bool(converged))
        history = keras.callbacks.History()
        history.history = {"lower_bound": list(bounds)}
        return history

    # ------------------------------------------------------------- methods
    def _checked_x(self, x):
        """``(x tensor, finite_rows)``: ``x`` checked against the fitted
        layer, a non-finite row replaced by zeros (its outputs are set to
        NaN / -1 by the caller)."""
        self._check_fitted()
        x = _validation.check_array(
            x, "x", ndim=2, n_features=self.event_size, allow_nan=True
        )
        finite = np.all(np.isfinite(x), axis=1)
        if not finite.all():
            x = np.where(finite[:, None], x, 0.0)
        return tf.constant(x.astype(self.dtype)), finite

    def _log_resp(self, x):
        x, finite = self._checked_x(x)
        log_resp, log_prob = gaussian.log_responsibilities(
            x, *self.mixture()[:3], self.covariance_type
        )
        log_resp, log_prob = log_resp.numpy(), log_prob.numpy()
        log_resp[~finite] = np.nan
        log_prob[~finite] = np.nan
        return log_resp, log_prob, finite

    def predict_proba(self, x):
        """Responsibilities ``[n, K]`` (a NaN row for a non-finite input row)."""
        return np.exp(self._log_resp(x)[0])

    def predict(self, x):
        """Component labels ``[n]``; ``-1`` for a row holding NaN or inf."""
        log_resp, _, finite = self._log_resp(x)
        labels = np.argmax(np.where(finite[:, None], log_resp, 0.0), axis=1)
        return np.where(finite, labels, -1)

    def score_samples(self, x):
        """``log p(x)`` per row ``[n]`` (NaN for a row holding NaN or inf)."""
        return self._log_resp(x)[1]

    def score(self, x):
        """Mean log-likelihood of ``x`` (NaN if a row holds NaN or inf)."""
        return float(np.mean(self.score_samples(x)))

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
        to_list = lambda a: None if a is None else a.tolist()  # noqa: E731
        config.update(
            {
                "num_components": self.num_components,
                "covariance_type": self.covariance_type,
                "tol": self.tol,
                "reg_covar": self.reg_covar,
                "max_iter": self.max_iter,
                "n_init": self.n_init,
                "init_params": self.init_params,
                "weights_init": to_list(self.weights_init),
                "means_init": to_list(self.means_init),
                "precisions_init": to_list(self.precisions_init),
                "warm_start": self.warm_start,
                "seed": self.seed,
                "output": self.output_mode,
                "online": self.online,
                "momentum": self.momentum,
            }
        )
        return config
