"""GMMEnergy: the sample energy of a deep autoencoding Gaussian mixture model."""

import math

import keras
import numpy as np
import tensorflow as tf

from keras_gmm import _validation
from keras_gmm.layers._mixture_state import MixtureState, check_rows
from keras_gmm.ops import em, gaussian

__all__ = ["GMMEnergy"]


@keras.saving.register_keras_serializable(package="keras_gmm")
class GMMEnergy(MixtureState, keras.layers.Layer):
    """Sample energy ``-log p(z)`` under a mixture estimated from memberships.

    The estimation part of DAGMM (Zong et al., 2018): an estimation network
    predicts soft memberships ``gamma [batch, K]`` of the latent features
    ``z [batch, D]`` (in DAGMM: an autoencoder's code plus reconstruction-error
    features); this layer estimates a Gaussian mixture from them by the
    M-step from responsibilities shared with :class:`GaussianMixtureEM`
    (:func:`keras_gmm.ops.em.parameters_from_resp`)::

        phi_k = mean_n gamma_nk,   mu_k = sum_n gamma_nk z_n / sum_n gamma_nk,
        Sigma_k = sum_n gamma_nk (z_n - mu_k)(z_n - mu_k)^T / sum_n gamma_nk
                  + reg_covar * I,

    and returns the energy ``E(z) = -log sum_k phi_k N(z | mu_k, Sigma_k)``
    (nats; higher = less likely = more anomalous). The covariances are
    factored by Cholesky with ``reg_covar`` as jitter and the log-determinant
    is the sum of the log of the factor's diagonal
    (:mod:`keras_gmm.ops.gaussian`): no determinant is formed, so there is no
    underflow for small covariances in high dimension.

    Like ``BatchNormalization``:

    - ``training=True`` on a trainable layer: the mixture is estimated from the batch, the energy
      is differentiable through the M-step (gradients reach both ``z`` and
      ``gamma``), and the layer adds DAGMM's objective terms with
      ``add_loss``: ``energy_weight * mean(E(z)) + cov_penalty_weight *
      sum_kj 1 / Sigma_kjj`` (the second term keeps covariances from
      collapsing). The batch's sufficient statistics (no gradient) also
      update moving statistics, decayed by ``momentum``
      (:func:`keras_gmm.ops.em.stepwise_statistics`), and the inference
      mixture is their M-step.
    - ``training=False`` (``predict``, serving), or a frozen layer
      (``trainable=False``): the energy under the stored inference mixture
      (non-trainable weights), no loss added, no update.
      :meth:`fit_mixture` sets it from the memberships of a whole data set in
      one M-step, as DAGMM does after training. Before any training step or
      ``fit_mixture`` it is the initial mixture (uniform weights, zero means,
      unit covariances), as an untrained BatchNormalization uses its initial
      statistics.

    The mixture state is :mod:`keras_gmm.layers._mixture_state`'s: the layer
    counts as fitted once its moving statistics hold mass (a training step or
    :meth:`fit_mixture`); before that, ``weights_``, ``means_``,
    ``precisions_cholesky_``, ``covariances_``, ``precisions_``,
    :meth:`distribution` and :meth:`sample` raise ``NotFittedError``. A
    training step whose batch gives non-finite statistics keeps the previous
    inference mixture and is counted in the ``skipped_batches`` weight.

    Exported (:func:`keras_gmm.export_saved_model`) as the output of a model,
    the layer gets the anomaly endpoints of :mod:`keras_gmm.export.gmm_energy`
    (``score``, and ``predict`` against the ``threshold`` weight set with
    :meth:`set_threshold`).

    Args:
        covariance_type: "full" (default, as DAGMM), "tied", "diag" or
            "spherical".
        reg_covar: number > 0 added to the covariance diagonals (the Cholesky
            jitter; in units of ``z`` squared).
        momentum: decay of the moving statistics, in [0, 1) (0.99: about the
            last 100 batches; 0: the last batch alone).
        energy_weight: number >= 0, DAGMM's ``lambda_1``: the weight of the
            batch-mean energy added to the loss in training (0.1 in the paper;
            0 adds none).
        cov_penalty_weight: number >= 0, DAGMM's ``lambda_2``: the weight of
            ``sum_k sum_j 1 / Sigma_kjj`` added to the loss in training (0.005
            in the paper).
        **kwargs: base layer arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: a list ``[z, gamma]``: ``z`` latent features ``[batch, D]``,
            ``gamma`` non-negative memberships ``[batch, K]`` (e.g. a softmax;
            each row is normalised to sum to one).
        training: batch estimate (and moving-statistics update) or the stored
            inference mixture.

    Input shape:
        ``[(batch, D), (batch, K)]``.

    Output shape:
        ``(batch,)``: the energy, in the variables' dtype (float32 under
        ``mixed_float16``).

    Example:

    >>> import keras, numpy as np, keras_gmm
    >>> x = keras.Input((6,))
    >>> z = keras.layers.Dense(3)(x)
    >>> gamma = keras.layers.Dense(2, activation="softmax")(z)
    >>> energy = keras_gmm.GMMEnergy(reg_covar=1e-3)([z, gamma])
    >>> model = keras.Model(x, energy)
    >>> model.compile("adam")          # the loss is the layer's add_loss terms
    >>> data = np.random.randn(256, 6).astype("float32")
    >>> _ = model.fit(data, epochs=1, batch_size=64, verbose=0)
    >>> model.predict(data[:4], verbose=0).shape
    (4,)

    Reference:
        Zong, Song, Min, Cheng, Lumezanu, Cho, Chen, "Deep Autoencoding
        Gaussian Mixture Model for Unsupervised Anomaly Detection", ICLR 2018.
    """

    _fit_hint = "call fit_mixture(z, gamma) or train the model first"

    def __init__(self, covariance_type="full", reg_covar=1e-6, momentum=0.99,
                 energy_weight=0.1, cov_penalty_weight=0.005, **kwargs):
        self._init_mixture_state(covariance_type, reg_covar, momentum, kwargs)
        check = _validation
        self.energy_weight = check.check_number(energy_weight, "energy_weight", low=0.0)
        self.cov_penalty_weight = check.check_number(
            cov_penalty_weight, "cov_penalty_weight", low=0.0
        )

    # ------------------------------------------------------------------ state
    def _input_shapes(self, input_shape):
        pair = isinstance(input_shape, (list, tuple)) and len(input_shape) == 2
        if not pair or not all(isinstance(s, (list, tuple)) for s in input_shape):
            raise ValueError(
                "GMMEnergy takes a list [z, gamma] of two tensors, z [batch, D] "
                "and gamma [batch, K]; received input_shape="
                f"{input_shape!r}."
            )
        z_shape, gamma_shape = (tuple(s) for s in input_shape)
        for name, shape in (("z", z_shape), ("gamma", gamma_shape)):
            if len(shape) != 2 or shape[-1] is None:
                raise ValueError(
                    f"`{name}` must be 2-D [batch, features] with a known last "
                    f"axis; received {name} shape {shape}."
                )
        if None not in (z_shape[0], gamma_shape[0]) and z_shape[0] != gamma_shape[0]:
            raise ValueError(
                "`z` and `gamma` must have the same batch size; received shapes "
                f"{z_shape} and {gamma_shape}."
            )
        if self.built and (z_shape[-1], gamma_shape[-1]) != (
            self.event_size, self.num_components
        ):
            raise ValueError(
                f"This GMMEnergy was built for z [batch, {self.event_size}] and "
                f"gamma [batch, {self.num_components}] ({self.num_components} "
                f"components); received shapes {z_shape} and {gamma_shape}."
            )
        return z_shape, gamma_shape

    def build(self, input_shape):
        z_shape, gamma_shape = self._input_shapes(input_shape)
        # Moving statistics around the moving means, in units of a fraction
        # of the data (ops.em.stepwise_statistics); 0 before the first step.
        self._build_mixture_state(
            gamma_shape[-1], z_shape[-1], fitted_flag=False, moving=True
        )
        self.threshold = self._state_weight(
            "threshold", (), keras.initializers.Constant(float("inf"))
        )
        self._mark_legacy_variables()  # the weights of files saved before 0.2
        self._build_skip_counter()

    # ------------------------------------------------------------------ call
    def _inputs(self, inputs):
        if self.built:
            self._input_shapes([tuple(t.shape) for t in inputs])
        z, gamma = inputs
        dtype = self.variable_dtype
        z = tf.cast(z, dtype)
        gamma = tf.cast(gamma, dtype)
        gamma = gamma / tf.maximum(
            tf.reduce_sum(gamma, axis=-1, keepdims=True), tf.constant(1e-30, dtype)
        )
        return z, gamma

    def call(self, inputs, training=None):
        z, gamma = self._inputs(inputs)
        ctype = self.covariance_type
        if training and self.trainable:
            z, gamma = self._check_finite_batch(z, gamma)
            weights, means, covariances, prec_chol = em.parameters_from_resp(
                z, gamma, ctype, self.reg_covar
            )
            energy = -gaussian.log_mixture_prob(
                z, tf.math.log(weights), means, prec_chol, ctype
            )
            self._add_objective(energy, covariances)
            self._update_moving_statistics(tf.stop_gradient(z), tf.stop_gradient(gamma))
            return energy
        return -gaussian.log_mixture_prob(z, *self.mixture()[:3], ctype)

    _NONFINITE_BATCH = (
        "GMMEnergy received NaN or inf in `z` or `gamma` in a training batch, "
        "so the batch's mixture (and the loss) would be NaN: remove or impute "
        "non-finite input rows, or lower the learning rate if the networks "
        "before the layer diverge."
    )

    def _check_finite_batch(self, z, gamma):
        """A training batch must be finite: a ValueError eagerly, the same
        message as an assertion in a graph (dropped under XLA, where the
        moving statistics still skip the batch)."""
        if tf.executing_eagerly():
            if not (bool(tf.reduce_all(tf.math.is_finite(z)))
                    and bool(tf.reduce_all(tf.math.is_finite(gamma)))):
                raise ValueError(self._NONFINITE_BATCH)
            return z, gamma
        return (tf.debugging.assert_all_finite(z, self._NONFINITE_BATCH),
                tf.debugging.assert_all_finite(gamma, self._NONFINITE_BATCH))

    def _add_objective(self, energy, covariances):
        terms = []
        if self.energy_weight:
            terms.append(self.energy_weight * tf.reduce_mean(energy))
        if self.cov_penalty_weight:
            variances = self._covariance.marginal_variances(
                covariances, self.num_components, self.event_size
            )
            terms.append(
                self.cov_penalty_weight * tf.reduce_sum(tf.math.reciprocal(variances))
            )
        if terms:
            self.add_loss(tf.add_n(terms))

    def _update_moving_statistics(self, z, gamma):
        """One stepwise step of the moving statistics and the inference
        mixture (skipped and counted if not finite)."""
        shift = tf.convert_to_tensor(self.means)
        batch = em.sufficient_statistics(z, gamma, shift, self.covariance_type)
        self._commit_step(*self._stepwise_values(batch, tf.shape(z)[0]))

    def compute_output_shape(self, input_shape):
        z_shape, _ = self._input_shapes(input_shape)
        return (z_shape[0],)

    def compute_output_spec(self, inputs, training=None):
        shape = self.compute_output_shape([tuple(t.shape) for t in inputs])
        return keras.KerasTensor(shape, dtype=self.variable_dtype)

    # ----------------------------------------------------------- the mixture
    def fit_mixture(self, z, gamma, batch_size=4096):
        """Set the inference mixture from the memberships of a whole data set.

        One M-step over all rows (DAGMM's test-time parameters: the mixture
        of the training set under the trained networks), computed in float64
        by the ops of :mod:`keras_gmm.ops.em` (the weighted means, then the
        statistics around them, streamed ``batch_size`` rows at a time); the
        moving statistics restart from it.

        Args:
            z: ``[n, D]`` latent features (finite).
            gamma: ``[n, K]`` memberships: finite, non-negative, each row
                with a positive sum (rows are normalised to sum to one).
            batch_size: integer >= 1, rows per statistics step.

        Returns:
            ``self``.
        """
        check = _validation
        batch_size = check.check_positive_int(batch_size, "batch_size")
        z = check.check_array(z, "z", ndim=2, dtype=np.float64)
        gamma = check.check_array(gamma, "gamma", ndim=2, dtype=np.float64)
        if not self.built:
            self.build([(None, z.shape[-1]), (None, gamma.shape[-1])])
        k, d = self.num_components, self.event_size
        if z.shape != (len(gamma), d) or gamma.shape[1] != k:
            raise ValueError(
                f"`z` and `gamma` must have shapes [n, {d}] and [n, {k}]; "
                f"received {z.shape} and {gamma.shape}."
            )
        if np.any(gamma < 0):
            raise ValueError(
                "`gamma` must hold non-negative memberships (e.g. a softmax); "
                f"received a minimum of {gamma.min()!r}."
            )
        check_rows(gamma.sum(axis=1) <= 0, "gamma", "has zero total membership",
                   "every row needs a positive membership of some component")
        ctype = self.covariance_type
        z, gamma = tf.constant(z), tf.constant(gamma)
        gamma = gamma / tf.reduce_sum(gamma, axis=1, keepdims=True)
        # The weighted means first (the statistics' shift), as
        # ops.em.parameters_from_resp; then the statistics around them.
        eps = 10.0 * np.finfo(np.float64).eps
        shift = tf.matmul(gamma, z, transpose_a=True) / (
            tf.reduce_sum(gamma, axis=0)[:, None] + eps
        )
        stats = em.zero_statistics(k, d, ctype, tf.float64)
        for start in range(0, len(z), batch_size):
            rows = slice(start, start + batch_size)
            stats = em.add_statistics(
                stats, em.sufficient_statistics(z[rows], gamma[rows], shift, ctype)
            )
        weights, means, _, prec_chol = em.m_step(stats, shift, ctype, self.reg_covar)
        self._assign_mixture(weights, means, prec_chol)
        return self

    def set_threshold(self, value):
        """Set the energy above which ``predict`` calls an input an anomaly
        (a number, ``inf`` to flag none)."""
        infinite = (
            isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, (bool, np.bool_))
            and math.isinf(value)
        )
        if not infinite:
            value = _validation.check_number(
                value, "value", hint="an energy, or inf to flag no input"
            )
        if not self.built:
            raise ValueError(
                "Call the layer (or build the model) before setting its threshold."
            )
        self.threshold.assign(float(value))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "covariance_type": self.covariance_type,
                "reg_covar": self.reg_covar,
                "momentum": self.momentum,
                "energy_weight": self.energy_weight,
                "cov_penalty_weight": self.cov_penalty_weight,
            }
        )
        return config
