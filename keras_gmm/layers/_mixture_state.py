"""The fitted-mixture state shared by the EM-like layers.

:class:`keras_gmm.GaussianMixtureEM` and :class:`keras_gmm.GMMEnergy` each
hold one Gaussian mixture in non-trainable weights and read, update, save and
expose it the same way; that one way is written here, as a mixin of
``keras.layers.Layer`` (:class:`MixtureState`):

- the weights: ``weights`` ``[K]``, ``means`` ``[K, D]``,
  ``precisions_cholesky`` (scikit-learn's layout, shaped by the covariance
  type), optionally the moving statistics ``moving_nk`` ``[K]`` and
  ``moving_scatter`` (stepwise EM's statistics around the means, in units of
  a fraction of the data) and ``skipped_batches`` (the training batches whose
  step was dropped). All non-trainable, created with ``autocast=False`` (read
  in their own dtype, float32 under ``mixed_float16``);
- the fitted flag and the fitted check (:class:`NotFittedError`);
- the stepwise (online / moving-statistics) update with its fallback: a step
  whose result is not finite (a NaN row, a failed Cholesky) keeps the
  previous mixture and is counted in ``skipped_batches``, eagerly, in a
  graph and under XLA alike (no assertion, so a train step never aborts);
- scikit-learn's fitted attributes (``weights_``, ``means_``,
  ``precisions_cholesky_``, ``covariances_``, ``precisions_``),
  :meth:`~MixtureState.mixture`, :meth:`~MixtureState.distribution`,
  :meth:`~MixtureState.sample` and :meth:`~MixtureState.permute_components`.

Every per-covariance-type rule is asked of :mod:`keras_gmm.ops.covariance`.

Fitted means: for a layer with a ``fitted`` weight (``GaussianMixtureEM``),
that flag, set by ``fit`` or the first successful online step; for one
without (``GMMEnergy``), its moving statistics hold mass, i.e. a training
step or ``fit_mixture`` has estimated the mixture (a ``GMMEnergy`` inside a
model that trains is fitted by its moving statistics).

Files saved before a weight was added still load: :meth:`MixtureState.
load_own_variables` accepts a store with the variables that existed then
(``_legacy_variable_count``) and leaves the newer ones at their initial
values.
"""

import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_gmm import _validation
from keras_gmm import mixture as mixture_lib
from keras_gmm.ops import covariance, em, em_driver

__all__ = [
    "BatchFit", "ConvergenceWarning", "MixtureState", "NotFittedError",
    "check_permutation", "check_rows", "dataset_of_rows",
]

# scikit-learn's classes when it is installed (it is optional): its users'
# ``except NotFittedError`` and warning filters then catch ours.
try:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.exceptions import NotFittedError as _SklearnNotFittedError
except ImportError:  # pragma: no cover - scikit-learn is installed in tests

    class ConvergenceWarning(UserWarning):
        """EM stopped at ``max_iter`` before its lower bound converged
        (scikit-learn's ``ConvergenceWarning`` when it is installed)."""

    _NOT_FITTED_BASES = (ValueError, AttributeError)
else:
    _NOT_FITTED_BASES = (_SklearnNotFittedError,)


class NotFittedError(*_NOT_FITTED_BASES):
    """A fitted mixture is used before it was fitted: a ``ValueError`` and an
    ``AttributeError``, and a subclass of scikit-learn's ``NotFittedError``
    when scikit-learn is installed."""


#: scikit-learn's ConvergenceWarning message (its tests match it).
NOT_CONVERGED_MESSAGE = (
    "Best performing initialization did not converge. Try different init "
    "parameters, or increase max_iter, tol, or check for degenerate data."
)


# The validators live in _validation; re-exported for the layers' imports.
check_permutation = _validation.check_permutation
check_rows = _validation.check_rows


def _finite(*tensors):
    ok = tf.constant(True)
    for t in tensors:
        ok &= tf.reduce_all(tf.math.is_finite(t))
    return ok


class MixtureState:
    """Mixin for a ``keras.layers.Layer`` that holds one fitted mixture.

    The layer starts its ``__init__`` with :meth:`_init_mixture_state` (the
    base layer, ``covariance_type``, ``reg_covar``, ``momentum``), calls
    :meth:`_build_mixture_state` in ``build`` and sets ``_fit_hint`` (how to
    fit it, for the :class:`NotFittedError` message). List it before
    ``keras.layers.Layer`` in the bases.
    """

    _fit_hint = "fit it first"

    def _init_mixture_state(self, covariance_type, reg_covar, momentum, kwargs,
                            zero_reg_covar=False):
        """The layer's ``__init__`` start: the base layer with ``autocast``
        off by default, and the state's arguments checked and stored.

        ``reg_covar`` must be > 0, or >= 0 with ``zero_reg_covar`` (the batch
        EM layers, as scikit-learn: an M-step whose covariance is then not
        positive definite raises its error)."""
        # The mixture is read in its own dtype (no autocast to float16 under
        # mixed precision: log-densities need the precision); the weights are
        # also created with autocast=False, as Keras enters an autocast scope
        # for a mixed policy even when the layer's is off.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.covariance_type = covariance.check(covariance_type)
        self.reg_covar = _validation.check_number(
            reg_covar, "reg_covar", low=0.0, low_open=not zero_reg_covar
        )
        self.momentum = _validation.check_number(
            momentum, "momentum", low=0.0, high=1.0, high_open=True
        )
        self.num_components = self.event_size = None

    # -------------------------------------------------------------- weights
    @property
    def _covariance(self):
        return covariance.get(self.covariance_type)

    def _state_weight(self, name, shape, initializer, dtype=None):
        return self.add_weight(
            name=name, shape=shape, dtype=dtype, trainable=False, autocast=False,
            initializer=initializer,
        )

    def _build_mixture_state(self, num_components, event_size, *, fitted_flag,
                             moving):
        """Create the mixture's weights (names and order are part of the
        saved format: keep them).

        Args:
            fitted_flag: create the ``fitted`` weight (else "fitted" is read
                from the moving statistics).
            moving: create the moving statistics ``moving_nk``,
                ``moving_scatter``.
        """
        cov = self._covariance
        k, d = int(num_components), int(event_size)
        self.num_components, self.event_size = k, d
        self.mixture_weights = self._state_weight(
            "weights", (k,), keras.initializers.Constant(1.0 / k)
        )
        self.means = self._state_weight("means", (k, d), "zeros")
        self.precisions_cholesky = self._state_weight(
            "precisions_cholesky", cov.precisions_cholesky_shape(k, d),
            keras.initializers.Constant(cov.identity_precisions_cholesky(k, d)),
        )
        self.fitted = self._state_weight("fitted", (), "zeros") if fitted_flag else None
        self.moving_nk = self.moving_scatter = None
        if moving:
            self.moving_nk = self._state_weight("moving_nk", (k,), "zeros")
            self.moving_scatter = self._state_weight(
                "moving_scatter", cov.second_moment_shape(k, d), "zeros"
            )

    def _build_skip_counter(self):
        """The ``skipped_batches`` counter of dropped stepwise steps."""
        self.skipped_batches = self._state_weight(
            "skipped_batches", (), "zeros", dtype="int64"
        )

    def _mark_legacy_variables(self):
        """The variables created so far are those of files saved before the
        later ones were added (see :meth:`load_own_variables`)."""
        self._legacy_variable_count = len(
            self._trainable_variables + self._non_trainable_variables
        )

    def load_own_variables(self, store):
        """Keras's loading, also accepting a file saved before the newer
        weights (counters, fit summary) existed: those keep their initial
        values."""
        all_vars = self._trainable_variables + self._non_trainable_variables
        legacy = getattr(self, "_legacy_variable_count", None)
        if legacy is not None and legacy < len(all_vars) and (
            len(store.keys()) == legacy
        ):
            for i in range(legacy):
                all_vars[i].assign(store[f"{i}"])
            return
        super().load_own_variables(store)

    # --------------------------------------------------------------- reading
    @property
    def num_features(self):
        """Deprecated alias of ``event_size`` (read-only)."""
        warnings.warn(
            f"`{type(self).__name__}.num_features` is deprecated; use "
            "`event_size`.", DeprecationWarning, stacklevel=2,
        )
        return self.event_size

    def _params(self):
        """``(weights, means, precisions_cholesky)`` as tensors."""
        return (
            tf.convert_to_tensor(self.mixture_weights),
            tf.convert_to_tensor(self.means),
            tf.convert_to_tensor(self.precisions_cholesky),
        )

    def mixture(self):
        """The stored mixture as a :class:`keras_gmm.mixture.MixtureParams`
        (no fitted check: the tensors a graph reads)."""
        w, means, prec_chol = self._params()
        return mixture_lib.MixtureParams(
            tf.math.log(w), means, prec_chol, self.covariance_type
        )

    def _fitted_tensor(self):
        """A boolean scalar tensor: whether the mixture is fitted."""
        if self.fitted is not None:
            return tf.convert_to_tensor(self.fitted) > 0.5
        return tf.reduce_sum(tf.convert_to_tensor(self.moving_nk)) > 0

    def _is_fitted(self):
        if not self.built:
            return False
        with tf.init_scope():  # a Python bool, also while a graph is traced
            return bool(self._fitted_tensor().numpy())

    def _check_fitted(self):
        if not self._is_fitted():
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet: "
                f"{self._fit_hint} (or load a fitted model)."
            )

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
        """Covariances in scikit-learn's layout."""
        prec_chol = tf.constant(self.precisions_cholesky_)
        return self._covariance.covariances(prec_chol).numpy()

    @property
    def precisions_(self):
        """Precisions in scikit-learn's layout."""
        prec_chol = tf.constant(self.precisions_cholesky_)
        return self._covariance.precisions(prec_chol).numpy()

    def distribution(self):
        """The fitted mixture as a ``tfd.MixtureSameFamily``."""
        self._check_fitted()
        return mixture_lib.distribution(self.mixture())

    def sample(self, n_samples=1, seed=None):
        """``(x [n, D], labels [n])`` drawn from the fitted mixture (NumPy),
        grouped by component as scikit-learn's ``sample``: the rows of
        component 0 first, then those of component 1, ... (the draws are
        i.i.d. from the mixture; only their order is grouped).

        Args:
            n_samples: integer >= 1.
            seed: None (fresh draws) or an int seed (the same draws).
        """
        self._check_fitted()
        n_samples = _validation.check_positive_int(n_samples, "n_samples")
        seed = _validation.check_seed(seed)
        seed = tf.constant(np.random.default_rng(seed).integers(0, 2**31 - 1, 2),
                           tf.int64)
        x, labels = mixture_lib.sample(
            self.mixture(), seed, n=n_samples, return_components=True
        )
        x, labels = x.numpy(), labels.numpy()
        order = np.argsort(labels, kind="stable")
        return x[order], labels[order]

    # --------------------------------------------------------------- writing
    def permute_components(self, order):
        """Relabel the components: new component ``k`` is old ``order[k]``.

        Reorders every per-component weight (weights, means, factors and
        moving statistics; a shared "tied" factor is unchanged). The mixture,
        hence every density, is the same; labels and responsibilities follow
        the new order.

        Args:
            order: a permutation of ``range(num_components)``.

        Returns:
            ``self``.
        """
        self._check_fitted()
        order = check_permutation(order, self.num_components)
        shared = self._covariance.shared
        variables = [self.mixture_weights, self.means, self.moving_nk]
        if not shared:
            variables += [self.precisions_cholesky, self.moving_scatter]
        for variable in variables:
            if variable is not None:
                variable.assign(tf.gather(tf.convert_to_tensor(variable), order))
        return self

    def _moving_statistics_of(self, weights, covariances):
        """Stepwise EM's ``(nk, scatter)`` of a mixture, around its means, in
        units of a fraction of the data."""
        scatter = em.scatter_from_covariances(
            weights, covariances, self.covariance_type, self.reg_covar,
            self.event_size,
        )
        return weights, scatter

    def _assign_mixture(self, weights, means, precisions_cholesky):
        """Store a fitted mixture (eagerly); the moving statistics restart
        from it."""
        values = (weights, means, precisions_cholesky)
        for variable, value in zip(
            (self.mixture_weights, self.means, self.precisions_cholesky), values
        ):
            variable.assign(tf.cast(value, variable.dtype))
        if self.fitted is not None:
            self.fitted.assign(1.0)
        if self.moving_nk is not None:
            w, _, prec_chol = self._params()
            nk, scatter = self._moving_statistics_of(
                w, self._covariance.covariances(prec_chol)
            )
            self.moving_nk.assign(nk)
            self.moving_scatter.assign(scatter)

    # ------------------------------------------------------ stepwise update
    def _stepwise_values(self, batch_stats, batch_size):
        """Stepwise EM from one replica's batch statistics around the current
        means: summed over the replicas first (inside a replica context of a
        strategy with several: one all-reduce, so all replicas step alike),
        then :meth:`_stepwise_update`. Call it outside any ``tf.cond``.

        Returns:
            ``(values, ok)``, as :meth:`_stepwise_update`.
        """
        dtype = tf.convert_to_tensor(self.means).dtype
        batch_stats, n = em_driver.all_reduce((batch_stats, tf.cast(batch_size, dtype)))[0]
        return self._stepwise_update(batch_stats, n)

    def _stepwise_update(self, batch_stats, n):
        """Stepwise EM (:func:`keras_gmm.ops.em.stepwise_statistics`) from the
        statistics of a (global) batch of ``n`` rows around the current means
        (no collective: safe inside a ``tf.cond``).

        Returns:
            ``(values, ok)``: the new ``(weights, means, precisions_cholesky,
            moving_nk, moving_scatter)`` and whether they are all finite.
        """
        ctype = self.covariance_type
        means = tf.convert_to_tensor(self.means)
        running = em.Stats(
            tf.convert_to_tensor(self.moving_nk), tf.zeros_like(means),
            tf.convert_to_tensor(self.moving_scatter),
        )
        total = em.stepwise_statistics(running, batch_stats, n, 1.0 - self.momentum)
        # Unchecked (a NaN factor where not positive definite): the caller's
        # fallback handles it, with no assertion that would abort a step.
        weights, new_means, prec_chol = em_driver.m_step_unchecked(
            total, means, ctype, self.reg_covar
        )
        recentred = em.recentred_statistics(total, ctype)
        values = (weights, new_means, prec_chol, recentred.nk, recentred.sum_dxdx)
        return values, _finite(*values)

    def _commit_step(self, values, ok):
        """Assign a step's ``values`` where ``ok``, else keep the previous
        mixture and count the batch in ``skipped_batches``. Returns ``ok``."""
        variables = (self.mixture_weights, self.means, self.precisions_cholesky,
                     self.moving_nk, self.moving_scatter)
        for variable, value in zip(variables, values):
            old = tf.convert_to_tensor(variable)
            variable.assign(tf.where(ok, tf.cast(value, old.dtype), old))
        self.skipped_batches.assign_add(tf.cast(tf.logical_not(ok), tf.int64))
        return ok


# --------------------------------------------------------------------------
# batch fitting: scikit-learn's fit, once for every batch-EM layer
# --------------------------------------------------------------------------
#: At most this many rows are held in memory to initialise a fit.
MAX_INIT_ROWS = 100_000


def dataset_of_rows(dataset, dtype, name="x"):
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


class BatchFit:
    """Mixin of a :class:`MixtureState` layer fitted by batch EM-like passes
    (:class:`keras_gmm.GaussianMixtureEM`, :class:`keras_gmm.
    BayesianGaussianMixtureEM`): scikit-learn's ``fit`` rules, written once.

    - The data: an array (checked; rows holding NaN or inf refused; at least
      ``num_components`` rows) or a finite, batched ``tf.data.Dataset``
      (:func:`dataset_of_rows`); under a ``tf.distribute`` strategy an array
      is streamed as a dataset too, and under a multi-worker strategy every
      worker starts from worker 0's initial parameters
      (:func:`keras_gmm.ops.em_driver.agree`).
    - ``n_init`` runs (one when warm-starting a fitted layer), each from its
      initialisation; the run with the highest final lower bound is kept.
    - ``max_iter=0`` keeps the initial parameters (``n_iter_ = 0``,
      ``lower_bound_ = -inf``, no warning), as scikit-learn.
    - A warm start continues the previous fit's convergence test from its
      ``lower_bound_``: fits of one iteration each converge once the bound
      stops moving.
    - A :class:`ConvergenceWarning` when the kept run stopped at
      ``max_iter`` without converging.
    - The fit summary (``n_iter_``, ``lower_bound_``, ``converged_``) lives in
      weights, so it survives a ``.keras`` round trip.
    - ``predict``/``predict_proba``/``score_samples``/``score`` check the
      input against the fitted layer; a row holding NaN or inf gives NaN
      (label ``-1``).

    The layer provides ``_prepare_fit(dataset, array, n_features)`` (per-fit
    checks), ``_initial_parameters(dataset, array)``,
    ``_current_parameters()``, ``_run_in_memory(x, params, progbar,
    batch_size, per_iteration, prev_bound)`` (``-> (params, bounds,
    converged)``),
    ``_streamed_pass(dataset, params)`` (``-> em_driver.StreamedPass``: one
    iteration over a dataset, see :func:`keras_gmm.ops.em_driver.
    streamed_sums`), ``_ill_defined_message()``,
    ``_store_parameters(params)``, ``_log_resp_of(x)`` (``-> (log_resp,
    log_prob)`` tensors), and the attributes ``num_components``, ``max_iter``,
    ``n_init``, ``warm_start`` and ``_rng`` (a NumPy generator).
    """

    # ------------------------------------------------------------ summary
    def _build_fit_summary(self):
        """The weights of the fit summary (call in ``build``)."""
        self._n_iter = self._state_weight("n_iter", (), "zeros", dtype="int64")
        self._lower_bound = self._state_weight(
            "lower_bound", (), keras.initializers.Constant(-np.inf), dtype="float64"
        )
        self._converged = self._state_weight("converged", (), "zeros", dtype="bool")

    @property
    def converged_(self):
        """Whether the kept run of the last fit converged."""
        return bool(self._converged.numpy()) if self.built else False

    @property
    def n_iter_(self):
        """Iterations of the kept run of the last fit."""
        return int(self._n_iter.numpy()) if self.built else 0

    @property
    def lower_bound_(self):
        """The kept run's last lower bound (-inf before any iteration)."""
        return float(self._lower_bound.numpy()) if self.built else -np.inf

    # --------------------------------------------------------------- data
    def _fit_data(self, x, batch_size):
        """``(dataset, None, D)`` for a ``tf.data.Dataset``, else ``(None,
        array, D)`` (``(dataset, array, D)`` under a strategy): checked, in
        the layer's dtype, copied at most once."""
        dtype = self.dtype
        if isinstance(x, tf.data.Dataset):
            dataset, d = dataset_of_rows(x, dtype)
            return dataset, None, d
        array = _validation.check_array(x, "x", ndim=2, allow_nan=True)
        check_rows(~np.all(np.isfinite(array), axis=1), "x", "contains NaN or inf",
                   "remove or impute them")
        self._check_enough_rows(len(array))
        array = array.astype(dtype, copy=False)
        if tf.distribute.has_strategy():
            return self._stream(array, batch_size), array, array.shape[1]
        return None, array, array.shape[1]

    def _stream(self, array, batch_size):
        """An in-memory array as a dataset of ``batch_size`` rows (None: the
        whole array at once)."""
        rows = len(array) if batch_size is None else batch_size
        return tf.data.Dataset.from_tensor_slices(array).batch(rows)

    def _check_enough_rows(self, n):
        if n < self.num_components:
            raise ValueError(
                f"`x` has {n} samples, fewer than num_components="
                f"{self.num_components}; use fewer components or more data."
            )

    def _init_rows(self, dataset, array):
        """The rows an initialisation sees: all of an array up to
        ``MAX_INIT_ROWS``, else a uniform random subsample of that many
        rows; from a dataset, its first ``MAX_INIT_ROWS`` rows."""
        if array is not None:
            if len(array) <= MAX_INIT_ROWS:
                return tf.constant(array)
            rows = np.sort(self._rng.choice(len(array), MAX_INIT_ROWS, replace=False))
            return tf.constant(array[rows])
        rows, count = [], 0
        for batch in dataset:
            rows.append(batch.numpy())
            count += len(rows[-1])
            if count >= MAX_INIT_ROWS:
                break
        rows = np.concatenate(rows)[:MAX_INIT_ROWS]
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

    # ---------------------------------------------------------------- fit
    def _fit(self, x, batch_size=None, verbose="auto"):
        """scikit-learn's ``fit`` (see the class docstring); returns a
        ``keras.callbacks.History`` whose ``history["lower_bound"]`` holds
        the kept run's bound per iteration."""
        if batch_size is not None:
            batch_size = _validation.check_positive_int(batch_size, "batch_size")
        dataset, array, d = self._fit_data(x, batch_size)
        if not self.built:
            self.build((None, d))
        elif d != self.event_size:
            raise ValueError(
                f"`x` has {d} features but the layer was built for "
                f"{self.event_size}."
            )
        self._prepare_fit(dataset, array, d)
        verbose = int(verbose != 0)
        use_current = self.warm_start and self._is_fitted()
        n_init = 1 if use_current else self.n_init
        # a warm start continues the previous fit's convergence test
        prev_bound = self.lower_bound_ if use_current else -np.inf
        x_in_memory = None if dataset is not None else tf.constant(array)
        progbar = keras.utils.Progbar(
            max(self.max_iter * n_init, 1), verbose=verbose,
            stateful_metrics=["lower_bound", "change", "converged", "iterations"],
        )
        best, best_bound = None, -np.inf
        for init in range(n_init):
            if use_current:
                params = self._current_parameters()
            else:
                # under a multi-worker strategy each worker initialises from
                # its own rows; all start from worker 0's parameters
                params = em_driver.agree(self._initial_parameters(dataset, array))
            if self.max_iter == 0:
                result = (params, [], False)
            elif dataset is not None:
                result = self._run_streamed(dataset, params, progbar, prev_bound)
            else:
                result = self._run_in_memory(
                    x_in_memory, params, progbar, batch_size, per_iteration=verbose,
                    prev_bound=prev_bound,
                )
            # The bar ends where this initialisation ended: a converged run
            # says so instead of waiting on iterations that never come.
            progbar.update(
                (init + 1) * self.max_iter if self.max_iter else 1,
                [("iterations", len(result[1])), ("converged", int(result[2]))],
                finalize=init == n_init - 1,
            )
            bound = result[1][-1] if result[1] else -np.inf
            # scikit-learn's rule (a run with no iteration replaces a -inf one)
            if best is None or bound > best_bound or best_bound == -np.inf:
                best, best_bound = result, bound
        params, bounds, converged = best
        self._store_parameters(params)
        self.lower_bounds_ = list(bounds)
        self._lower_bound.assign(best_bound)
        self._n_iter.assign(len(bounds))
        self._converged.assign(bool(converged))
        if not converged and self.max_iter > 0:
            warnings.warn(NOT_CONVERGED_MESSAGE, ConvergenceWarning, stacklevel=3)
        history = keras.callbacks.History()
        history.history = {"lower_bound": list(bounds)}
        return history

    def _run_streamed(self, dataset, params, progbar, prev_bound=-np.inf):
        """The layer's ``_streamed_pass`` iterated by the one streamed loop
        (:func:`keras_gmm.ops.em_driver.streamed_iterations`); rows holding
        NaN or inf, or a pass giving non-finite values, raise the layer's
        error. ``-> (params, bounds, converged)``."""
        result = em_driver.streamed_iterations(
            self._streamed_pass, dataset, params, self.max_iter, self.tol,
            prev_bound=prev_bound,
            callback=lambda bound, prev: progbar.add(
                1, [("lower_bound", bound), ("change", bound - prev)]
            ),
        )
        if result.nonfinite_rows:
            raise self._nonfinite_dataset_error(result.nonfinite_rows)
        if result.failed:
            raise ValueError(self._ill_defined_message())
        return result.params, result.bounds, result.converged

    # -------------------------------------------------------------- methods
    def _check_fitted_call(self):
        """Eagerly, an unfitted layer raises; in a traced graph (a model
        compiled before fit) it warns once and serves its placeholder."""
        if tf.executing_eagerly():
            self._check_fitted()
        elif not getattr(self, "_unfitted_warned", False) and not self._is_fitted():
            self._unfitted_warned = True
            warnings.warn(
                f"{type(self).__name__} {self.name!r} is not fitted yet: the "
                "model uses its placeholder mixture (uniform "
                "responsibilities) until fit(x) is called.", stacklevel=3,
            )

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
        log_resp, log_prob = self._log_resp_of(x)
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
