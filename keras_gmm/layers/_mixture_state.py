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

__all__ = ["MixtureState", "NotFittedError", "check_permutation", "check_rows"]


class NotFittedError(ValueError, AttributeError):
    """A fitted mixture is used before it was fitted (as scikit-learn's)."""


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

    def _init_mixture_state(self, covariance_type, reg_covar, momentum, kwargs):
        """The layer's ``__init__`` start: the base layer with ``autocast``
        off by default, and the state's arguments checked and stored."""
        # The mixture is read in its own dtype (no autocast to float16 under
        # mixed precision: log-densities need the precision); the weights are
        # also created with autocast=False, as Keras enters an autocast scope
        # for a mixed policy even when the layer's is off.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.covariance_type = covariance.check(covariance_type)
        self.reg_covar = _validation.check_positive(reg_covar, "reg_covar")
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
        """``(x [n, D], labels [n])`` drawn from the fitted mixture (NumPy).

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
        return x.numpy(), labels.numpy()

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
    def _all_reduce(self, batch_stats, batch_size):
        """Sum a batch's statistics over the replicas (inside a replica
        context of a strategy with several), so all replicas step alike."""
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            return ctx.all_reduce(tf.distribute.ReduceOp.SUM, (batch_stats, batch_size))
        return batch_stats, batch_size

    def _stepwise_values(self, batch_stats, batch_size):
        """Stepwise EM (:func:`keras_gmm.ops.em.stepwise_statistics`) from one
        batch's statistics around the current means.

        Returns:
            ``(values, ok)``: the new ``(weights, means, precisions_cholesky,
            moving_nk, moving_scatter)`` and whether they are all finite.
        """
        ctype = self.covariance_type
        means = tf.convert_to_tensor(self.means)
        dtype = means.dtype
        batch_stats, n = self._all_reduce(batch_stats, tf.cast(batch_size, dtype))
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
