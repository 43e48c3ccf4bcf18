"""Losses for mixture outputs."""

import keras
import tensorflow as tf

from keras_gmm import _validation
from keras_gmm import mixture as mixture_lib

__all__ = ["GMMClassificationLoss", "GMMNegLogLik", "check_targets"]


def check_targets(y_true, event_size, params_rank=None, arg_name="y_true"):
    """Return ``y_true`` as ``[..., event_size]`` or raise a clear ValueError.

    A target without an event axis (``[batch]`` against params ``[batch, P]``)
    is accepted when ``event_size == 1``, as Keras users commonly pass ``y`` of
    shape ``[n]``.
    """
    shape = y_true.shape
    if shape.rank is not None and shape.rank >= 1 and shape[-1] == event_size:
        if params_rank is None or shape.rank == params_rank:
            return y_true
    if (
        event_size == 1
        and params_rank is not None
        and shape.rank == params_rank - 1
    ):
        return y_true[..., None]
    raise ValueError(
        f"`{arg_name}` must have event_size={event_size} values on its last "
        f"axis; received {arg_name} with shape {tuple(shape)}. Check the "
        "`event_size` of the head/loss against your targets."
    )


@keras.saving.register_keras_serializable(package="keras_gmm")
class GMMNegLogLik(mixture_lib.MixtureLayoutMixin, keras.losses.Loss):
    """Negative log-likelihood of targets under a predicted Gaussian mixture.

    For each sample, ``-log p(y_true | y_pred)`` where ``y_pred`` holds the flat
    mixture parameters produced by :class:`keras_gmm.MixtureDensityHead` (layout
    in :mod:`keras_gmm.mixture`)::

        -log p(y) = -logsumexp_k [ log w_k
                                   - D/2 log(2 pi) + log|P_k|
                                   - 1/2 ||P_k^T (y - mu_k)||^2 ]

    including the ``2 pi`` constant, computed in float32 (also under
    ``mixed_float16``) in log space from precision Cholesky factors.

    This is a density, so the loss is **negative whenever the predicted
    density exceeds one**, which is normal (for example a narrow 1-D Gaussian
    with standard deviation 0.05 has density up to 8, i.e. a loss near -2).

    Args:
        num_components: number of mixture components ``K``.
        event_size: dimension ``D`` of each target.
        covariance_type: "diag" (default), "full", "spherical" or "tied".
        min_scale: floor added to every softplus scale; must match the head.
        reduction: Keras reduction, "sum_over_batch_size" (the mean) by default.
        name: loss name.

    Call arguments:
        y_true: ``[..., event_size]`` targets (``[batch]`` also accepted when
            ``event_size == 1``).
        y_pred: ``[..., params_size]`` flat mixture parameters.

    Example:

    >>> import keras, keras_gmm
    >>> head = keras_gmm.MixtureDensityHead(num_components=3, event_size=2)
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), head])
    >>> model.compile("adam", loss=head.loss())   # == GMMNegLogLik(3, 2)
    """

    def __init__(
        self,
        num_components,
        event_size,
        covariance_type="diag",
        min_scale=1e-3,
        reduction="sum_over_batch_size",
        name="gmm_neg_log_lik",
        dtype=None,
    ):
        self.layout = mixture_lib.MixtureLayout(
            num_components, event_size, covariance_type, min_scale
        )
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        y_true = check_targets(
            tf.cast(y_true, tf.float32), self.event_size, y_pred.shape.rank
        )
        return -mixture_lib.log_prob(self.mixture(y_pred), y_true)

    def get_config(self):
        config = super().get_config()
        config.update(self.layout.get_config())
        return config


def _class_targets(y_true, num_classes, logits_rank):
    """Integer labels (``[...]`` or ``[..., 1]``) or one-hot rows
    (``[..., C]``) against logits ``[..., C]`` of rank ``logits_rank`` ->
    float32 ``[..., C]`` targets, and whether each row's label is valid (an
    integer label outside ``[0, C)`` is not)."""
    shape = y_true.shape
    same_rank = shape.rank == logits_rank
    if same_rank and shape[-1] == num_classes and num_classes > 1:
        targets = tf.cast(y_true, tf.float32)
        return targets, tf.ones(tf.shape(targets)[:-1], tf.bool)
    if same_rank and shape[-1] == 1:
        y_true = y_true[..., 0]
    elif shape.rank != logits_rank - 1:
        raise ValueError(
            f"`y_true` must be integer labels [...] (or [..., 1]) or one-hot "
            f"rows [..., {num_classes}] for logits of rank {logits_rank}; "
            f"received y_true with shape {tuple(shape)}."
        )
    labels = tf.cast(y_true, tf.int32)
    valid = (labels >= 0) & (labels < num_classes)
    return tf.one_hot(labels, num_classes, dtype=tf.float32), valid


@keras.saving.register_keras_serializable(package="keras_gmm")
class GMMClassificationLoss(keras.losses.Loss):
    """The large-margin Gaussian mixture (L-GM) loss of a Gaussian-mixture
    classifier: margin cross-entropy plus a likelihood term.

    ``y_pred`` is the output of a :class:`keras_gmm.GaussianMixtureClassifier`
    with ``output_mode="logits_and_distances"``: ``[..., C, 2]``, the class
    logits ``logit_c = log pi_c + log p(f | c)`` and the squared Mahalanobis
    distances ``d_c`` of the features to each class. For a sample of class
    ``y``::

        margin logits:  z_c = logit_c - [c == y] * alpha * d_c / 2
        L_cls = -log softmax(z)_y
        L_lkd = -log p(f, y) = -logit_y
              = d_y / 2 + 1/2 log|Sigma_y| + D/2 log(2 pi) - log pi_y
        loss  = L_cls + likelihood_weight * L_lkd

    The margin multiplies the true class's Mahalanobis distance by
    ``1 + alpha`` inside the softmax (the paper's ``d_y (1 + alpha)`` with
    ``d = 1/2 (f - mu)^T Sigma^-1 (f - mu)``); ``L_lkd`` is the paper's
    likelihood regularization, ``d_y / 2 + 1/2 log|Sigma_y|``, plus terms
    that are constant when the priors are fixed (with learned priors,
    ``-log pi_y`` fits them to the class frequencies): the negative joint
    log-likelihood of the features and labels. Computed in float32 (also
    under ``mixed_float16``).

    Labels: integer class labels ``[...]`` (or ``[..., 1]``) or one-hot rows
    ``[..., C]`` (soft labels weight the margin and both terms linearly). An
    integer label outside ``[0, C)`` gives a NaN loss for its row (never a
    silent zero); a NaN feature row gives a NaN loss.

    Args:
        alpha: the margin, a number >= 0 (default 0.1; 0: plain cross-entropy
            on the logits).
        likelihood_weight: ``lambda``, the weight of ``L_lkd``, >= 0 (default
            0.1).
        reduction: Keras reduction, "sum_over_batch_size" (the mean) by
            default.
        name: loss name.

    Call arguments:
        y_true: labels, as above.
        y_pred: ``[..., C, 2]`` from the classifier.

    Example:

    >>> import numpy as np, keras_gmm
    >>> loss = keras_gmm.GMMClassificationLoss(alpha=0.0, likelihood_weight=0.0)
    >>> y_pred = np.array([[[0.0, 1.0], [0.0, 4.0]]], "float32")  # C = 2
    >>> round(float(loss(np.array([1]), y_pred)), 4)   # -log(1/2)
    0.6931

    Reference:
        Wan, Zhong, Li, Chen, "Rethinking Feature Distribution for Loss
        Functions in Image Classification", CVPR 2018.
    """

    def __init__(
        self,
        alpha=0.1,
        likelihood_weight=0.1,
        reduction="sum_over_batch_size",
        name="gmm_classification_loss",
        dtype=None,
    ):
        self.alpha = _validation.check_number(
            alpha, "alpha", low=0.0, hint="the L-GM margin, e.g. 0.1"
        )
        self.likelihood_weight = _validation.check_number(
            likelihood_weight, "likelihood_weight", low=0.0,
            hint="the weight of the likelihood term, e.g. 0.1",
        )
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        y_pred = tf.cast(y_pred, tf.float32)
        shape = y_pred.shape
        if shape.rank is None or shape.rank < 2 or shape[-1] != 2:
            raise ValueError(
                "`y_pred` must be [..., num_classes, 2] (class logits and "
                "squared Mahalanobis distances): the output of a "
                "GaussianMixtureClassifier with "
                "output_mode='logits_and_distances'; received y_pred with "
                f"shape {tuple(shape)}."
            )
        logits, distances = y_pred[..., 0], y_pred[..., 1]
        num_classes = logits.shape[-1]
        targets, valid = _class_targets(
            tf.convert_to_tensor(y_true), num_classes, logits.shape.rank
        )
        margin_logits = logits - (0.5 * self.alpha) * targets * distances
        cross_entropy = -tf.reduce_sum(
            targets * tf.nn.log_softmax(margin_logits, axis=-1), axis=-1
        )
        likelihood = -tf.reduce_sum(targets * logits, axis=-1)
        loss = cross_entropy + self.likelihood_weight * likelihood
        return tf.where(valid, loss, tf.constant(float("nan"), tf.float32))

    def get_config(self):
        config = super().get_config()
        config.update(
            {"alpha": self.alpha, "likelihood_weight": self.likelihood_weight}
        )
        return config
