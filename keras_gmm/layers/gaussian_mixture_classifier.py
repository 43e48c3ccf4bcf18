"""GaussianMixtureClassifier: class logits from a Gaussian mixture over features."""

import keras
import numpy as np
import tensorflow as tf

from keras_gmm import _validation
from keras_gmm import mixture as mixture_lib
from keras_gmm.ops import covariance as covariance_lib
from keras_gmm.ops import gaussian

__all__ = ["OUTPUTS", "GaussianMixtureClassifier"]

#: What the layer returns (its ``output_mode`` argument).
OUTPUTS = ("probabilities", "logits", "logits_and_distances")
#: The covariance types of the class Gaussians.
SUPPORTED_COVARIANCE_TYPES = ("diag", "full")


@keras.saving.register_keras_serializable(package="keras_gmm")
class GaussianMixtureClassifier(keras.layers.Layer):
    """Class logits from one Gaussian (or a small mixture) per class: L-GM.

    The large-margin Gaussian mixture (L-GM) classifier of Wan et al. models
    the features ``f`` of a network (``[..., D]``, e.g. a CNN's penultimate
    layer) by one Gaussian per class ``c``, with a prior ``pi_c``::

        logit_c = log pi_c + log p(f | c),
        p(f | c) = sum_m w_cm N(f | mu_cm, Sigma_cm)   (sum_m w_cm = 1),

    so ``softmax(logits)`` is the posterior ``p(c | f)`` and
    ``logsumexp_c(logit_c) = log p(f)`` is the features' likelihood under the
    class mixture, an out-of-distribution score (:meth:`log_likelihood`).
    With ``components_per_class=1`` (the paper's model) ``p(f | c)`` is one
    Gaussian. The log-densities come from :mod:`keras_gmm.ops.gaussian`.

    Training with the L-GM loss. The margin and the likelihood term need the
    labels, which a Keras layer does not see, so they live in the loss,
    :class:`keras_gmm.GMMClassificationLoss`. Besides the logits it needs
    each class's squared Mahalanobis distance ``d_c = (f - mu_c)^T
    Sigma_c^-1 (f - mu_c)``: ``output_mode="logits_and_distances"`` returns
    both, stacked as ``[..., C, 2]`` (``[..., 0]`` the logits, ``[..., 1]``
    the distances; with several components per class ``d_c`` is the
    responsibility-weighted mean ``sum_m r_m|c d_cm``, which makes the
    margin exact to first order in ``alpha``). Train that model, then read
    the classes, the posteriors and the OOD score of its features with
    :meth:`predict_classes`, :meth:`predict_proba` and
    :meth:`log_likelihood` (Keras's "accuracy" metric does not apply to
    that ``[..., C, 2]`` output). For plain cross-entropy use
    ``output_mode="logits"`` (``from_logits=True``) or "probabilities".

    (The argument is ``output_mode``, not ``output``: ``Layer.output`` is a
    Keras property.)

    Weights: ``means`` ``[C * M, D]`` (class-major: component ``k`` belongs to
    class ``k // M``), and, when learned, ``scales`` (the raw scale
    parameters of :mod:`keras_gmm.mixture`'s flat layout: standard deviations
    ``softplus(raw) + min_scale``, starting at 1, for "full" a triangular
    factor with that diagonal) and ``prior_logits`` ``[C * M]`` (the
    component weights ``softmax(prior_logits)``, starting uniform; the class
    prior is the sum over a class's components). Fixed covariances are the
    identity (the paper's simplest form), fixed priors uniform.

    Dtypes: every weight is float32 and the probability math runs in float32,
    also under ``mixed_float16`` (the features are cast); the outputs are
    float32.

    Args:
        num_classes: number of classes ``C`` (>= 2).
        components_per_class: Gaussians per class ``M`` (default 1), combined
            by logsumexp within a class.
        covariance_type: "diag" (default) or "full".
        learn_covariance: whether the covariances are trained (default True);
            False keeps unit covariances (the identity).
        learn_priors: whether the class priors (and, with ``M > 1``, the
            component weights within each class) are trained (default False:
            uniform, as in the paper).
        output_mode: "probabilities" (default, ``[..., C]``), "logits"
            (``[..., C]``) or "logits_and_distances" (``[..., C, 2]``, for
            :class:`keras_gmm.GMMClassificationLoss`).
        min_scale: positive floor added to every softplus standard deviation
            (default 1e-2); bounds the peak density of every class.
        means_initializer: initializer of the ``[C * M, D]`` means (default
            ``RandomNormal(stddev=1.0)``).
        means_regularizer: optional regularizer of the means.
        **kwargs: base layer arguments (``name``, ``dtype``, ...).

    Call arguments:
        inputs: features ``[..., D]``.

    Input shape:
        ``(..., D)`` with ``D`` known.

    Output shape:
        ``(..., C)`` for "probabilities" and "logits", ``(..., C, 2)`` for
        "logits_and_distances"; float32. A row of features holding NaN gives
        a NaN output row (and :meth:`predict_classes` gives it the label -1).

    Example:

    >>> import keras, numpy as np, keras_gmm
    >>> clf = keras_gmm.GaussianMixtureClassifier(
    ...     num_classes=3, output_mode="logits_and_distances")
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2), clf])
    >>> model.compile("adam", loss=keras_gmm.GMMClassificationLoss(alpha=0.1))
    >>> x = np.random.rand(64, 4).astype("float32")
    >>> y = np.random.randint(0, 3, size=64)
    >>> _ = model.fit(x, y, epochs=1, verbose=0)
    >>> features = model.layers[0](x[:5])
    >>> clf.predict_proba(features).shape, clf.log_likelihood(features).shape
    (TensorShape([5, 3]), TensorShape([5]))

    Reference:
        Wan, Zhong, Li, Chen, "Rethinking Feature Distribution for Loss
        Functions in Image Classification", CVPR 2018.
    """

    def __init__(
        self,
        num_classes,
        components_per_class=1,
        covariance_type="diag",
        learn_covariance=True,
        learn_priors=False,
        output_mode="probabilities",
        min_scale=1e-2,
        means_initializer=None,
        means_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = _validation.check_int(
            num_classes, "num_classes", minimum=2,
            hint="a classifier needs at least two classes",
        )
        self.components_per_class = _validation.check_positive_int(
            components_per_class, "components_per_class"
        )
        self.covariance_type = covariance_lib.check(
            covariance_type, supported=SUPPORTED_COVARIANCE_TYPES
        )
        self.learn_covariance = _validation.check_bool(
            learn_covariance, "learn_covariance"
        )
        self.learn_priors = _validation.check_bool(learn_priors, "learn_priors")
        self.output_mode = _validation.check_one_of(
            output_mode, "output_mode", OUTPUTS
        )
        self.min_scale = mixture_lib.check_min_scale(min_scale)
        if means_initializer is None:
            means_initializer = keras.initializers.RandomNormal(stddev=1.0)
        self.means_initializer = keras.initializers.get(means_initializer)
        self.means_regularizer = keras.regularizers.get(means_regularizer)
        self._covariance = covariance_lib.get(self.covariance_type)
        self.event_size = None  # the feature size D, known once built

    @property
    def num_components(self):
        """``C * M``, the number of Gaussians."""
        return self.num_classes * self.components_per_class

    # ------------------------------------------------------------------ build
    def build(self, input_shape):
        event_size = input_shape[-1]
        if event_size is None:
            raise ValueError(
                "The last axis of the input to GaussianMixtureClassifier must "
                f"be known; received input_shape={tuple(input_shape)}."
            )
        self.event_size = int(event_size)
        k, d = self.num_components, self.event_size
        self.means = self.add_weight(
            name="means", shape=(k, d), initializer=self.means_initializer,
            regularizer=self.means_regularizer, dtype="float32", autocast=False,
        )
        self.scales = None
        if self.learn_covariance:
            raw = mixture_lib.inverse_scale_transform(
                max(1.0, 2.0 * self.min_scale), self.min_scale
            )
            initial = self._covariance.initial_raw_scales(k, d, raw)
            self.scales = self.add_weight(
                name="scales", shape=initial.shape,
                initializer=keras.initializers.Constant(initial),
                dtype="float32", autocast=False,
            )
        self.prior_logits = None
        if self.learn_priors:
            self.prior_logits = self.add_weight(
                name="prior_logits", shape=(k,), initializer="zeros",
                dtype="float32", autocast=False,
            )

    # ------------------------------------------------------ the mixture
    def _precisions_cholesky(self):
        if self.scales is None:
            return tf.constant(
                self._covariance.identity_precisions_cholesky(
                    self.num_components, self.event_size
                ),
                tf.float32,
            )
        return self._covariance.precisions_cholesky_from_raw(
            tf.convert_to_tensor(self.scales), self.num_components,
            self.event_size, self.min_scale,
        )

    def _log_weights(self):
        """``log(pi_c w_cm)`` per component, ``[C * M]``."""
        if self.prior_logits is None:
            return tf.fill(
                [self.num_components],
                tf.constant(-np.log(self.num_components), tf.float32),
            )
        return tf.nn.log_softmax(tf.convert_to_tensor(self.prior_logits))

    def mixture(self):
        """The class mixture as a :class:`keras_gmm.mixture.MixtureParams`
        over all ``C * M`` components (class-major)."""
        self._check_built()
        return mixture_lib.MixtureParams(
            self._log_weights(), tf.convert_to_tensor(self.means),
            self._precisions_cholesky(), self.covariance_type,
        )

    def _per_class(self, per_component):
        """``[..., C * M]`` -> ``[..., C, M]``."""
        shape = tf.concat(
            [tf.shape(per_component)[:-1],
             [self.num_classes, self.components_per_class]], axis=0,
        )
        return tf.reshape(per_component, shape)

    def _class_terms(self, features, distances=False):
        """``(logits [..., C], d [..., C] or None)`` in float32."""
        x = tf.cast(features, tf.float32)
        m = self.mixture()
        log_joint = m.logits + gaussian.log_gaussian_prob(
            x, m.means, m.precisions_cholesky, m.covariance_type
        )
        per_class = self._per_class(log_joint)  # [..., C, M]
        logits = tf.reduce_logsumexp(per_class, axis=-1)
        if not distances:
            return logits, None
        sq = self._covariance.sq_mahalanobis(
            x[..., None, :] - m.means, m.precisions_cholesky
        )  # [..., C * M]
        resp = tf.nn.softmax(per_class, axis=-1)
        d = tf.reduce_sum(resp * self._per_class(sq), axis=-1)
        return logits, d

    def call(self, inputs):
        logits, d = self._class_terms(
            inputs, distances=self.output_mode == "logits_and_distances"
        )
        if d is not None:
            return tf.stack([logits, d], axis=-1)
        if self.output_mode == "probabilities":
            return tf.nn.softmax(logits, axis=-1)
        return logits

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape[:-1]) + (self.num_classes,)
        return shape + (2,) if self.output_mode == "logits_and_distances" else shape

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(
            self.compute_output_shape(inputs.shape), dtype="float32"
        )

    # --------------------------------------------------- reading features
    def _check_built(self):
        if not self.built or self.event_size is None:
            raise ValueError(
                f"Layer {self.name!r} (GaussianMixtureClassifier) is not built: "
                "call it on features (or build a model with it) first."
            )

    def _features(self, features):
        self._check_built()
        features = tf.convert_to_tensor(features)
        size = features.shape[-1] if features.shape.rank else None
        if features.shape.rank is not None and size != self.event_size:
            raise ValueError(
                f"`features` must have {self.event_size} values on their last "
                f"axis (the layer's feature size); received features with "
                f"shape {tuple(features.shape)}."
            )
        return features

    def class_log_likelihoods(self, features):
        """``log p(f | c)`` for each class, ``[..., C]`` (float32)."""
        logits, _ = self._class_terms(self._features(features))
        log_prior = tf.reduce_logsumexp(self._per_class(self._log_weights()), -1)
        return logits - log_prior

    def log_likelihood(self, features):
        """``log p(f) = log sum_c pi_c p(f | c)``, ``[...]`` (float32): the
        features' log-likelihood under the class mixture, an
        out-of-distribution score (low = unlike the training features).
        NaN for a row holding NaN."""
        logits, _ = self._class_terms(self._features(features))
        return tf.reduce_logsumexp(logits, axis=-1)

    def predict_proba(self, features):
        """Class posteriors ``p(c | f)``, ``[..., C]`` (float32), whatever
        ``output_mode`` is; a NaN row for a row of features holding NaN."""
        logits, _ = self._class_terms(self._features(features))
        return tf.nn.softmax(logits, axis=-1)

    def predict_classes(self, features):
        """The most probable class of each row, int32 ``[...]``; ``-1`` for
        a row whose features hold NaN or inf (no class is invented)."""
        logits, _ = self._class_terms(self._features(features))
        finite = tf.reduce_all(tf.math.is_finite(logits), axis=-1)
        labels = tf.argmax(logits, axis=-1, output_type=tf.int32)
        return tf.where(finite, labels, tf.constant(-1, tf.int32))

    # ------------------------------------------------------------- config
    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "components_per_class": self.components_per_class,
                "covariance_type": self.covariance_type,
                "learn_covariance": self.learn_covariance,
                "learn_priors": self.learn_priors,
                "output_mode": self.output_mode,
                "min_scale": self.min_scale,
                "means_initializer": keras.initializers.serialize(
                    self.means_initializer
                ),
                "means_regularizer": keras.regularizers.serialize(
                    self.means_regularizer
                ),
            }
        )
        return config
