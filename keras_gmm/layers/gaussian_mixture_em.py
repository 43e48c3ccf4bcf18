"""GaussianMixtureEM: a Gaussian mixture fitted by EM, as a Keras layer.

Batch EM (``fit``): arrays run one XLA-compiled loop over all iterations
(:func:`keras_gmm.ops.em.em_iterations`, the data in cache-sized chunks); a
``tf.data.Dataset``, or any input under a ``tf.distribute`` strategy, is
streamed, one pass per iteration, each replica's sufficient statistics summed
by one all-reduce. Online EM (``online=True``): inside ``model.fit`` each
training batch makes one stepwise-EM step on decayed statistics
(:func:`keras_gmm.ops.em.stepwise_statistics`), like BatchNormalization's
moving statistics. scikit-learn's fitted attributes and methods; the state
lives in non-trainable weights (saving, loading, export).
"""

import keras
import numpy as np
import tensorflow as tf

from keras_gmm import mixture as mixture_lib
from keras_gmm.ops import em, gaussian
from keras_gmm.ops.gaussian import check_covariance_type

__all__ = ["GaussianMixtureEM", "NotFittedError"]

INIT_PARAMS = ("kmeans++", "kmeans", "random", "random_from_data")
OUTPUTS = ("responsibilities", "log_prob", "both")
# At most this many rows are held in memory to initialise from a Dataset.
_MAX_INIT_ROWS = 100_000


# Compiled once per (data shape, covariance type, max_iter, batch size) and
# shared by every layer instance (n_init, refits, several layers). The ops
# write their loops and branches as tf.while_loop / tf.cond, so AutoGraph's
# source conversion is skipped (it was about a third of a first fit's time).
_EM_ITERATIONS = tf.function(em.em_iterations, jit_compile=True, autograph=False)
_INITIALIZE = tf.function(em.initialize, jit_compile=True, autograph=False)
_m_step = tf.function(em.m_step, autograph=False)


class NotFittedError(ValueError, AttributeError):
    """The mixture is used before :meth:`GaussianMixtureEM.fit` (as in sklearn)."""


@keras.saving.register_keras_serializable(package="keras_gmm")
class GaussianMixtureEM(keras.layers.Layer):
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
            scikit-learn (precisions, not their Cholesky factors).
        warm_start: continue from the current parameters on the next ``fit``.
        seed: int seed of the initialisations.
        output: what ``call`` returns: "responsibilities" ``[batch, K]``,
            "log_prob" ``[batch]`` or "both" (a dict).
        online: update the mixture from each training batch inside
            ``model.fit`` (``call(x, training=True)``) by stepwise EM; the
            first training batch initialises it by k-means++ unless the layer
            was fitted. Inference calls never change it.
        momentum: online mode's decay of the running statistics, in [0, 1):
            ``stats = momentum * stats + (1 - momentum) * batch_stats``. The
            mixture forgets in about ``1 / (1 - momentum)`` steps, so it can
            follow an encoder that is still training; 0 makes each step a full
            EM iteration on the batch alone.

    Call arguments:
        inputs: ``[..., D]`` features.
        training: with ``online=True``, a training call first makes one
            stepwise-EM step on the batch (no gradient flows into the EM).

    Input shape:
        ``[..., D]``.

    Output shape:
        ``[..., K]`` responsibilities, ``[...]`` log-likelihoods, or a dict
        of both (``output``); in the variables' dtype (float32 under
        ``mixed_float16``).

    An empty component keeps ``reg_covar * I`` as covariance, its previous mean
    and a weight near 0 (never NaN); a covariance that is not positive definite
    raises a ValueError suggesting a larger ``reg_covar``.

    Example:

    >>> import numpy as np, keras_gmm
    >>> x = np.concatenate([np.random.randn(200, 2) - 4, np.random.randn(200, 2) + 4])
    >>> gmm = keras_gmm.GaussianMixtureEM(2, seed=0)
    >>> history = gmm.fit(x.astype("float32"))
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
        # The fitted parameters are read in their own dtype (no autocast to
        # float16 under mixed precision): log-densities need the precision.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.num_components = mixture_lib.check_positive(
            num_components, "num_components", integer=True
        )
        self.covariance_type = check_covariance_type(covariance_type)
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or tol < 0:
            raise ValueError(f"`tol` must be a number >= 0; received tol={tol!r}.")
        self.tol = float(tol)
        self.reg_covar = mixture_lib.check_positive(reg_covar, "reg_covar")
        self.max_iter = mixture_lib.check_positive(max_iter, "max_iter", integer=True)
        self.n_init = mixture_lib.check_positive(n_init, "n_init", integer=True)
        if init_params not in INIT_PARAMS:
            raise ValueError(
                f"`init_params` must be one of {INIT_PARAMS}; "
                f"received init_params={init_params!r}."
            )
        self.init_params = init_params
        if output not in OUTPUTS:
            raise ValueError(
                f"`output` must be one of {OUTPUTS}; received output={output!r}."
            )
        self.output_mode = output
        self.warm_start = bool(warm_start)
        self.online = bool(online)
        if (isinstance(momentum, bool) or not isinstance(momentum, (int, float))
                or not 0.0 <= momentum < 1.0):
            raise ValueError(
                f"`momentum` must be a number in [0, 1); received momentum={momentum!r}."
            )
        self.momentum = float(momentum)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.weights_init = None if weights_init is None else np.asarray(weights_init, np.float64)
        self.means_init = None if means_init is None else np.asarray(means_init, np.float64)
        self.precisions_init = (
            None if precisions_init is None else np.asarray(precisions_init, np.float64)
        )
        self._rng = np.random.default_rng(seed)
        self.converged_ = False
        self.n_iter_ = 0
        self.lower_bound_ = -np.inf
        self.lower_bounds_ = []

    # ------------------------------------------------------------------ state
    def _prec_chol_shape(self, d):
        k = self.num_components
        return {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[
            self.covariance_type
        ]

    def build(self, input_shape):
        d = input_shape[-1]
        if d is None:
            raise ValueError(
                "The feature axis of the input to GaussianMixtureEM must be "
                f"known; received input_shape={tuple(input_shape)}."
            )
        self.num_features = int(d)
        k = self.num_components
        self.mixture_weights = self.add_weight(
            name="weights", shape=(k,), trainable=False, autocast=False,
            initializer=keras.initializers.Constant(1.0 / k),
        )
        self.means = self.add_weight(
            name="means", shape=(k, d), trainable=False, autocast=False, initializer="zeros"
        )
        eye = np.ones(self._prec_chol_shape(d))
        if self.covariance_type in ("full", "tied"):
            eye = np.broadcast_to(np.eye(d), self._prec_chol_shape(d)).copy()
        self.precisions_cholesky = self.add_weight(
            name="precisions_cholesky", shape=self._prec_chol_shape(d),
            trainable=False, autocast=False, initializer=keras.initializers.Constant(eye),
        )
        self.fitted = self.add_weight(
            name="fitted", shape=(), trainable=False, autocast=False, initializer="zeros"
        )
        if self.online:
            # Stepwise EM's running statistics, around the current means, in
            # units of a fraction of the data (see ops.em.stepwise_statistics).
            self.moving_nk = self.add_weight(
                name="moving_nk", shape=(k,), trainable=False, autocast=False, initializer="zeros"
            )
            self.moving_scatter = self.add_weight(
                name="moving_scatter", trainable=False, autocast=False, initializer="zeros",
                shape=em.zero_statistics(k, d, self.covariance_type).sum_dxdx.shape,
            )

    def _params(self):
        return (
            tf.convert_to_tensor(self.mixture_weights),
            tf.convert_to_tensor(self.means),
            tf.convert_to_tensor(self.precisions_cholesky),
        )

    def _check_fitted(self):
        if not self.built or float(self.fitted.numpy()) < 0.5:
            raise NotFittedError(
                "This GaussianMixtureEM is not fitted yet: call fit(x) first "
                "(or load a fitted model)."
            )

    # ------------------------------------------------------------------ call
    def call(self, inputs, training=None):
        # Probability math in the variables' dtype (float32 under
        # mixed_float16, float64 with dtype="float64"), never in float16.
        x = tf.cast(inputs, self.variable_dtype)
        if self.online and training:
            self._online_step(tf.stop_gradient(tf.reshape(x, [-1, self.num_features])))
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

    # ---------------------------------------------------------------- online
    def _online_init(self, x):
        """First training batch: k-means++ on it, as ``fit`` would."""
        w, means, prec_chol = em.initialize(
            x, self.num_components, "kmeans++", self.covariance_type,
            self.reg_covar, mixture_lib.stateless_seed(None, self.seed_generator),
        )
        return (w, means, prec_chol), self._running_statistics(w, prec_chol)

    def _online_update(self, x):
        ctype = self.covariance_type
        params = self._params()
        stats, _ = em.batch_statistics(x, *params, ctype)
        n = tf.cast(tf.shape(x)[0], x.dtype)
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            # All replicas step with the statistics of the global batch.
            stats, n = ctx.all_reduce(tf.distribute.ReduceOp.SUM, (stats, n))
        running = em.Stats(
            tf.convert_to_tensor(self.moving_nk),
            tf.zeros_like(params[1]),
            tf.convert_to_tensor(self.moving_scatter),
        )
        total = em.stepwise_statistics(running, stats, n, 1.0 - self.momentum)
        w, means, _, prec_chol = em.m_step(total, params[1], ctype, self.reg_covar)
        recentred = em.recentred_statistics(total, ctype)
        new = (w, means, prec_chol), (recentred.nk, recentred.sum_dxdx)
        # A failed Cholesky (NaN, never raised inside a compiled train step)
        # keeps the previous mixture for this step.
        ok = tf.reduce_all(tf.math.is_finite(prec_chol))
        old = params, (running.nk, running.sum_dxdx)
        return tf.nest.map_structure(lambda a, b: tf.where(ok, a, b), new, old)

    def _online_step(self, x):
        """One stepwise-EM step from a training batch (inside ``model.fit``)."""
        (w, means, prec_chol), running = tf.cond(
            self.fitted > 0.5,
            lambda: self._online_update(x),
            lambda: self._online_init(x),
        )
        self.mixture_weights.assign(w)
        self.means.assign(means)
        self.precisions_cholesky.assign(prec_chol)
        self.moving_nk.assign(running[0])
        self.moving_scatter.assign(running[1])
        self.fitted.assign(tf.ones_like(self.fitted))

    def _running_statistics(self, weights, prec_chol):
        """Stepwise EM's statistics ``(nk, sum_dxdx)`` of a mixture, around
        its means, in units of a fraction of the data."""
        cov = em.covariances_from_precisions_cholesky(prec_chol, self.covariance_type)
        scatter = em.scatter_from_covariances(
            weights, cov, self.covariance_type, self.reg_covar, self.num_features
        )
        return weights, scatter

    def _set_online_state_from_parameters(self):
        if not self.online:
            return
        running = self._running_statistics(
            tf.convert_to_tensor(self.mixture_weights),
            tf.convert_to_tensor(self.precisions_cholesky),
        )
        self.moving_nk.assign(running[0])
        self.moving_scatter.assign(running[1])

    # ------------------------------------------------------------------ data
    def _data(self, x):
        """``(dataset, None)`` for a ``tf.data.Dataset``, else ``(None,
        array)``: the rows checked, in the layer's dtype, copied at most once."""
        dtype = self.dtype
        if isinstance(x, tf.data.Dataset):
            return x.map(lambda b: tf.cast(b, dtype)), None
        array = np.asarray(x)
        if array.ndim != 2:
            raise ValueError(
                f"`x` must be 2-D [n_samples, n_features]; received shape {array.shape}."
            )
        bad = ~np.all(np.isfinite(array), axis=1)
        if bad.any():
            raise ValueError(
                f"`x` contains NaN or inf in {int(bad.sum())} of {len(array)} rows "
                f"(first at row {int(np.flatnonzero(bad)[0])}); remove or impute them."
            )
        if len(array) < self.num_components:
            raise ValueError(
                f"`x` has {len(array)} samples, fewer than num_components="
                f"{self.num_components}; use fewer components or more data."
            )
        return None, array.astype(dtype, copy=False)

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
        if len(rows) < self.num_components:
            raise ValueError(
                f"`x` has {len(rows)} samples, fewer than num_components="
                f"{self.num_components}; use fewer components or more data."
            )
        return tf.constant(rows)

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
        k = self.num_components
        checks = [
            ("weights_init", self.weights_init, (k,)),
            ("means_init", self.means_init, (k, d)),
            ("precisions_init", self.precisions_init, self._prec_chol_shape(d)),
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
        if p is not None:
            mats = p if self.covariance_type == "full" else (
                p[None] if self.covariance_type == "tied" else None)
            positive = (np.all(p > 0) if mats is None else all(
                np.all(np.linalg.eigvalsh(m) > 0) for m in mats))
            if not positive:
                raise ValueError(
                    "`precisions_init` must be positive definite (positive "
                    "for diag/spherical)."
                )

    def _batch_stats(self, batch, weights, means, prec_chol):
        stats, log_prob_sum = em.batch_statistics(
            batch, weights, means, prec_chol, self.covariance_type
        )
        return stats, log_prob_sum, tf.cast(tf.shape(batch)[0], batch.dtype)

    @tf.function(reduce_retracing=True, autograph=False)
    def _step(self, batch, weights, means, prec_chol):
        return self._batch_stats(batch, weights, means, prec_chol)

    @tf.function(reduce_retracing=True, autograph=False)
    def _distributed_step(self, batch, weights, means, prec_chol):
        # Each replica computes the statistics of its shard; they are plain
        # sums, so one all-reduce (SUM) gives the statistics of the batch.
        strategy = tf.distribute.get_strategy()
        per_replica = strategy.run(
            self._batch_stats, args=(batch, weights, means, prec_chol)
        )
        return tf.nest.map_structure(
            lambda t: strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None),
            per_replica,
        )

    def _em_pass(self, dataset, params):
        """One EM iteration streamed over a dataset (or replicas)."""
        weights, means, prec_chol = params
        d = means.shape[-1]
        total = em.zero_statistics(
            self.num_components, d, self.covariance_type, means.dtype
        )
        log_prob_sum, n = 0.0, 0.0
        if tf.distribute.has_strategy():
            strategy = tf.distribute.get_strategy()
            batches, step = strategy.experimental_distribute_dataset(dataset), self._distributed_step
        else:
            batches, step = dataset, self._step
        for batch in batches:
            stats, lp, count = step(batch, weights, means, prec_chol)
            total = em.add_statistics(total, stats)
            log_prob_sum += float(lp)
            n += float(count)
        new = _m_step(total, means, self.covariance_type, self.reg_covar)
        em.check_precisions_cholesky(new[3])
        return log_prob_sum / n, (new[0], new[1], new[3])

    def _run_streamed(self, dataset, params, progbar):
        bounds, prev = [], -np.inf
        for _ in range(self.max_iter):
            bound, params = self._em_pass(dataset, params)
            bounds.append(bound)
            progbar.add(1, [("lower_bound", bound), ("change", bound - prev)])
            if abs(bound - prev) < self.tol:
                return params, bounds, True
            prev = bound
        return params, bounds, False

    def _run_in_memory(self, x, params, progbar, batch_size, per_iteration):
        """The whole EM loop compiled (:func:`keras_gmm.ops.em.em_iterations`);
        with a progress bar, called one iteration at a time (same graph)."""
        bounds, prev, converged = [], -np.inf, False
        while len(bounds) < self.max_iter and not converged:
            limit = 1 if per_iteration else self.max_iter - len(bounds)
            *new, block, n_iter, converged, failed = _EM_ITERATIONS(
                x, *params, self.covariance_type, self.reg_covar, self.max_iter,
                self.tol, batch_size, tf.constant(prev, x.dtype), tf.constant(limit),
            )
            block = block.numpy()[: int(n_iter)].tolist()
            if bool(failed):
                raise ValueError(em.ill_defined_covariance_message(x.dtype))
            for bound in block:
                progbar.add(1, [("lower_bound", bound), ("change", bound - prev)])
                prev = bound
            bounds += block
            params, converged = tuple(new), bool(converged)
        return params, bounds, converged

    def fit(self, x, batch_size=None, verbose="auto"):
        """Fit by EM; returns a ``keras.callbacks.History`` whose ``history``
        holds ``"lower_bound"`` per iteration (of the best initialisation).

        Arrays are fitted by one compiled loop
        (:func:`keras_gmm.ops.em.em_iterations`, the data walked in chunks of
        ``batch_size`` rows); a ``tf.data.Dataset``, or any input under a
        ``tf.distribute`` strategy, is streamed batch by batch, one pass per
        iteration. Either way memory does not grow with the number of passes
        and each batch's statistics are summed before the M-step.

        Args:
            x: array ``[n, D]`` or a ``tf.data.Dataset`` of ``[batch, D]``.
            batch_size: rows per batch/chunk for arrays (None:
                :func:`keras_gmm.ops.em.default_chunk_size`, cache-sized).
            verbose: "auto"/1 shows a Keras progress bar, 0 nothing.
        """
        dataset, array = self._data(x)
        if array is None:
            d = int(next(iter(dataset)).shape[-1])
        else:
            d = array.shape[-1]
        if not self.built:
            self.build((None, d))
        elif d != self.num_features:
            raise ValueError(
                f"`x` has {d} features but the layer was built for "
                f"{self.num_features}."
            )
        self._check_inits(d)
        streamed = array is None or tf.distribute.has_strategy()
        if streamed and dataset is None:
            dataset = tf.data.Dataset.from_tensor_slices(array).batch(
                len(array) if batch_size is None else int(batch_size)
            )
        x_in_memory = None if streamed else tf.constant(array)
        verbose = int(verbose != 0)
        use_current = self.warm_start and float(self.fitted.numpy()) > 0.5
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
        self.mixture_weights.assign(params[0])
        self.means.assign(params[1])
        self.precisions_cholesky.assign(params[2])
        self.fitted.assign(1.0)
        self._set_online_state_from_parameters()
        self.lower_bounds_ = bounds
        self.lower_bound_ = bounds[-1]
        self.n_iter_ = len(bounds)
        self.converged_ = converged
        history = keras.callbacks.History()
        history.history = {"lower_bound": list(bounds)}
        return history

    # ------------------------------------------------------- fitted attributes
    @property
    def weights_(self):
        self._check_fitted()
        return self.mixture_weights.numpy()

    @property
    def means_(self):
        self._check_fitted()
        return self.means.numpy()

    @property
    def precisions_cholesky_(self):
        self._check_fitted()
        return self.precisions_cholesky.numpy()

    @property
    def covariances_(self):
        return em.covariances_from_precisions_cholesky(
            tf.constant(self.precisions_cholesky_), self.covariance_type
        ).numpy()

    @property
    def precisions_(self):
        p = self.precisions_cholesky_
        if self.covariance_type in ("full", "tied"):
            return p @ np.swapaxes(p, -1, -2)
        return p**2

    # ------------------------------------------------------------- methods
    def _checked_x(self, x):
        self._check_fitted()
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"`x` must have shape [n, {self.num_features}]; received {x.shape}."
            )
        return tf.constant(x.astype(self.dtype))

    def _log_resp(self, x):
        x = self._checked_x(x)
        w, means, prec_chol = self._params()
        return gaussian.log_responsibilities(
            x, tf.math.log(w), means, prec_chol, self.covariance_type
        )

    def predict_proba(self, x):
        return np.exp(self._log_resp(x)[0].numpy())

    def predict(self, x):
        return np.argmax(self._log_resp(x)[0].numpy(), axis=1)

    def score_samples(self, x):
        return self._log_resp(x)[1].numpy()

    def score(self, x):
        return float(np.mean(self.score_samples(x)))

    def _n_parameters(self):
        k, d = self.num_components, self.num_features
        cov = {"full": k * d * (d + 1) / 2, "tied": d * (d + 1) / 2,
               "diag": k * d, "spherical": k}[self.covariance_type]
        return int(cov + k * d + k - 1)

    def bic(self, x):
        n = np.asarray(x).shape[0]
        return -2 * self.score(x) * n + self._n_parameters() * np.log(n)

    def aic(self, x):
        n = np.asarray(x).shape[0]
        return -2 * self.score(x) * n + 2 * self._n_parameters()

    def distribution(self):
        """The fitted mixture as a ``tfd.MixtureSameFamily``."""
        self._check_fitted()
        w, means, prec_chol = self._params()
        return mixture_lib.distribution(
            mixture_lib.MixtureParams(tf.math.log(w), means, prec_chol,
                                      self.covariance_type)
        )

    def sample(self, n_samples=1, seed=None):
        """``(x [n, D], labels [n])`` drawn from the fitted mixture."""
        self._check_fitted()
        n_samples = mixture_lib.check_positive(n_samples, "n_samples", integer=True)
        w, means, prec_chol = self._params()
        seeds = tf.random.experimental.stateless_split(
            tf.constant(np.random.default_rng(seed).integers(0, 2**31 - 1, 2), tf.int64), 2
        )
        labels = tf.random.stateless_categorical(
            tf.math.log(w)[None], n_samples, seeds[0], dtype=tf.int32)[0]
        loc = tf.gather(means, labels)
        chol = prec_chol if self.covariance_type == "tied" else tf.gather(prec_chol, labels)
        if self.covariance_type == "tied":
            chol = tf.broadcast_to(chol, [n_samples] + chol.shape.as_list())
        z = tf.random.stateless_normal(tf.shape(loc), seeds[1], dtype=loc.dtype)
        x = loc + gaussian.scale_noise(z, chol, self.covariance_type)
        return x.numpy(), labels.numpy()

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
