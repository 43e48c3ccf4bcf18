"""GMMEnergy: the sample energy of a deep autoencoding Gaussian mixture model."""

import math

import keras
import numpy as np
import tensorflow as tf

from keras_gmm import mixture as mixture_lib
from keras_gmm.ops import em, gaussian
from keras_gmm.ops.gaussian import check_covariance_type

__all__ = ["GMMEnergy", "SCORE", "PREDICT"]

#: Export endpoint: the energy of each input (higher = more anomalous).
SCORE = "score"
#: Export endpoint: whether each input's energy is above the layer's threshold.
PREDICT = "predict"


def _check_weight(value, name):
    ok = (
        not isinstance(value, bool)
        and isinstance(value, (int, float, np.integer, np.floating))
        and math.isfinite(value)
        and value >= 0
    )
    if not ok:
        raise ValueError(
            f"`{name}` must be a finite number >= 0; received {name}={value!r}."
        )
    return float(value)


def _marginal_variances(covariances, covariance_type, num_components, num_features):
    """``[K, D]`` variances of each component along each feature."""
    if covariance_type == "full":
        return tf.linalg.diag_part(covariances)
    if covariance_type == "tied":
        return tf.broadcast_to(
            tf.linalg.diag_part(covariances)[None], [num_components, num_features]
        )
    if covariance_type == "diag":
        return covariances
    return tf.broadcast_to(covariances[:, None], [num_components, num_features])


@keras.saving.register_keras_serializable(package="keras_gmm")
class GMMEnergy(keras.layers.Layer):
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

    - ``training=True``: the mixture is estimated from the batch, the energy
      is differentiable through the M-step (gradients reach both ``z`` and
      ``gamma``), and the layer adds DAGMM's objective terms with
      ``add_loss``: ``energy_weight * mean(E(z)) + cov_penalty_weight *
      sum_kj 1 / Sigma_kjj`` (the second term keeps covariances from
      collapsing). The batch's sufficient statistics (no gradient) also
      update moving statistics, decayed by ``momentum``
      (:func:`keras_gmm.ops.em.stepwise_statistics`), and the inference
      mixture is their M-step.
    - ``training=False`` (``predict``, serving): the energy under the stored
      inference mixture (non-trainable weights). :meth:`fit_mixture` sets it
      from the memberships of a whole data set in one M-step, as DAGMM does
      after training.

    Exported (:func:`keras_gmm.export_saved_model`) as the output of a model,
    the layer adds two signatures: ``score`` (the model's inputs in, ``score
    [b]`` = the energy out) and ``predict`` (``is_anomaly [b]``: energy above
    the layer's ``threshold`` weight, set with :meth:`set_threshold`; and
    ``score``).

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

    def __init__(
        self,
        covariance_type="full",
        reg_covar=1e-6,
        momentum=0.99,
        energy_weight=0.1,
        cov_penalty_weight=0.005,
        **kwargs,
    ):
        # Probability math in the variables' dtype, never float16 (the
        # weights are also created with autocast=False: Keras enters an
        # autocast scope for a mixed policy even when the layer's is off).
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.covariance_type = check_covariance_type(covariance_type)
        self.reg_covar = mixture_lib.check_positive(reg_covar, "reg_covar")
        if (
            isinstance(momentum, bool)
            or not isinstance(momentum, (int, float, np.integer, np.floating))
            or not 0.0 <= momentum < 1.0
        ):
            raise ValueError(
                "`momentum` must be a number in [0, 1); received "
                f"momentum={momentum!r}."
            )
        self.momentum = float(momentum)
        self.energy_weight = _check_weight(energy_weight, "energy_weight")
        self.cov_penalty_weight = _check_weight(
            cov_penalty_weight, "cov_penalty_weight"
        )

    # ------------------------------------------------------------------ state
    def _prec_chol_shape(self):
        k, d = self.num_components, self.num_features
        return {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[
            self.covariance_type
        ]

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
        return z_shape, gamma_shape

    def build(self, input_shape):
        z_shape, gamma_shape = self._input_shapes(input_shape)
        self.num_features = int(z_shape[-1])
        self.num_components = int(gamma_shape[-1])
        k, d = self.num_components, self.num_features
        self.mixture_weights = self.add_weight(
            name="weights", shape=(k,), trainable=False, autocast=False,
            initializer=keras.initializers.Constant(1.0 / k),
        )
        self.means = self.add_weight(
            name="means", shape=(k, d), trainable=False, autocast=False,
            initializer="zeros",
        )
        eye = np.ones(self._prec_chol_shape())
        if self.covariance_type in ("full", "tied"):
            eye = np.broadcast_to(np.eye(d), self._prec_chol_shape()).copy()
        self.precisions_cholesky = self.add_weight(
            name="precisions_cholesky", shape=self._prec_chol_shape(),
            trainable=False, autocast=False,
            initializer=keras.initializers.Constant(eye),
        )
        # Moving statistics around the moving means, in units of a fraction
        # of the data (ops.em.stepwise_statistics); 0 before the first step.
        self.moving_nk = self.add_weight(
            name="moving_nk", shape=(k,), trainable=False, autocast=False,
            initializer="zeros",
        )
        self.moving_scatter = self.add_weight(
            name="moving_scatter", trainable=False, autocast=False, initializer="zeros",
            shape=em.zero_statistics(k, d, self.covariance_type).sum_dxdx.shape,
        )
        self.threshold = self.add_weight(
            name="threshold", shape=(), trainable=False, autocast=False,
            initializer=keras.initializers.Constant(float("inf")),
        )

    def _params(self):
        return (
            tf.convert_to_tensor(self.mixture_weights),
            tf.convert_to_tensor(self.means),
            tf.convert_to_tensor(self.precisions_cholesky),
        )

    # ------------------------------------------------------------------ call
    def _inputs(self, inputs):
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
        if training:
            weights, means, covariances, prec_chol = em.parameters_from_resp(
                z, gamma, ctype, self.reg_covar
            )
            energy = -gaussian.log_mixture_prob(
                z, tf.math.log(weights), means, prec_chol, ctype
            )
            self._add_objective(energy, covariances)
            self._update_moving_statistics(tf.stop_gradient(z), tf.stop_gradient(gamma))
            return energy
        weights, means, prec_chol = self._params()
        return -gaussian.log_mixture_prob(
            z, tf.math.log(weights), means, prec_chol, ctype
        )

    def _add_objective(self, energy, covariances):
        terms = []
        if self.energy_weight:
            terms.append(self.energy_weight * tf.reduce_mean(energy))
        if self.cov_penalty_weight:
            variances = _marginal_variances(
                covariances, self.covariance_type, self.num_components,
                self.num_features,
            )
            terms.append(
                self.cov_penalty_weight * tf.reduce_sum(tf.math.reciprocal(variances))
            )
        if terms:
            self.add_loss(tf.add_n(terms))

    def _update_moving_statistics(self, z, gamma):
        """One stepwise step of the moving statistics and the inference mixture."""
        ctype = self.covariance_type
        shift = tf.convert_to_tensor(self.means)
        batch = em.sufficient_statistics(z, gamma, shift, ctype)
        running = em.Stats(
            tf.convert_to_tensor(self.moving_nk),
            tf.zeros_like(shift),
            tf.convert_to_tensor(self.moving_scatter),
        )
        n = tf.cast(tf.shape(z)[0], z.dtype)
        # A tensor of the statistics' dtype: tf.cast of a Python float would go
        # through float32.
        step = tf.constant(1.0 - self.momentum, z.dtype)
        total = em.stepwise_statistics(running, batch, n, step)
        nk_eps, means, covariances = em.estimate_gaussian_parameters(
            total, shift, ctype, self.reg_covar
        )
        # A failed factor (NaN: under XLA the assertion is dropped) keeps the
        # previous mixture for this step.
        prec_chol = em.precisions_cholesky_from_covariances(covariances, ctype)
        recentred = em.recentred_statistics(total, ctype)
        new = (nk_eps / tf.reduce_sum(nk_eps), means, prec_chol,
               recentred.nk, recentred.sum_dxdx)
        old = (*self._params(), running.nk, running.sum_dxdx)
        ok = tf.reduce_all(tf.math.is_finite(prec_chol)) & tf.reduce_all(
            tf.math.is_finite(means)
        )
        new = [tf.where(ok, a, b) for a, b in zip(new, old)]
        for variable, value in zip(
            (self.mixture_weights, self.means, self.precisions_cholesky,
             self.moving_nk, self.moving_scatter),
            new,
        ):
            variable.assign(value)

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
        in two streamed passes (weighted means, then the statistics around
        them); the moving statistics restart from it.

        Args:
            z: ``[n, D]`` latent features; gamma: ``[n, K]`` memberships (rows
                normalised to sum to one).
            batch_size: rows per pass step.

        Returns:
            ``self``.
        """
        z = np.asarray(z, np.float64)
        gamma = np.asarray(gamma, np.float64)
        if not self.built:
            self.build([(None, z.shape[-1]), (None, gamma.shape[-1])])
        k, d = self.num_components, self.num_features
        if z.ndim != 2 or gamma.ndim != 2 or z.shape != (len(gamma), d) or (
            gamma.shape[1] != k
        ):
            raise ValueError(
                f"`z` and `gamma` must have shapes [n, {d}] and [n, {k}]; "
                f"received {z.shape} and {gamma.shape}."
            )
        if not (np.all(np.isfinite(z)) and np.all(np.isfinite(gamma))):
            raise ValueError("`z` and `gamma` must be finite; they contain NaN or inf.")
        batch_size = mixture_lib.check_positive(batch_size, "batch_size", integer=True)
        gamma = gamma / np.maximum(gamma.sum(axis=1, keepdims=True), 1e-300)
        nk = gamma.sum(axis=0)
        nk_eps = nk + 10 * np.finfo(np.float64).eps
        shift = tf.constant((gamma.T @ z) / nk_eps[:, None])
        stats = em.zero_statistics(k, d, self.covariance_type, tf.float64)
        for start in range(0, len(z), batch_size):
            stats = em.add_statistics(stats, em.sufficient_statistics(
                tf.constant(z[start:start + batch_size]),
                tf.constant(gamma[start:start + batch_size]),
                shift, self.covariance_type,
            ))
        nk_eps, means, covariances = em.estimate_gaussian_parameters(
            stats, shift, self.covariance_type, self.reg_covar
        )
        prec_chol = em.precisions_cholesky_from_covariances(
            covariances, self.covariance_type
        )
        weights = nk_eps / tf.reduce_sum(nk_eps)
        scatter = em.scatter_from_covariances(
            weights, covariances, self.covariance_type, self.reg_covar, d
        )
        for variable, value in zip(
            (self.mixture_weights, self.means, self.precisions_cholesky,
             self.moving_nk, self.moving_scatter),
            (weights, means, prec_chol, weights, scatter),
        ):
            variable.assign(tf.cast(value, variable.dtype))
        return self

    def set_threshold(self, value):
        """Set the energy above which ``predict`` calls an input an anomaly."""
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float, np.integer, np.floating))
            or math.isnan(value)
        ):
            raise ValueError(
                f"`value` must be a number (not NaN); received value={value!r}."
            )
        if not self.built:
            raise ValueError(
                "Call the layer (or build the model) before setting its threshold."
            )
        self.threshold.assign(float(value))

    @property
    def weights_(self):
        return self.mixture_weights.numpy()

    @property
    def means_(self):
        return self.means.numpy()

    @property
    def precisions_cholesky_(self):
        return self.precisions_cholesky.numpy()

    @property
    def covariances_(self):
        return em.covariances_from_precisions_cholesky(
            tf.convert_to_tensor(self.precisions_cholesky), self.covariance_type
        ).numpy()

    # --------------------------------------------------------------- export
    def export_endpoints(self):
        """``score`` and ``predict`` signatures (see :mod:`keras_gmm.export`)."""

        def score(energy):
            return {"score": energy}

        def predict(energy):
            return {
                "is_anomaly": energy > tf.cast(self.threshold, energy.dtype),
                "score": energy,
            }

        return {SCORE: (score, {}), PREDICT: (predict, {})}

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
