"""Losses for mixture outputs."""

import keras
import tensorflow as tf

from keras_gmm import mixture as mixture_lib
__all__ = ["GMMNegLogLik", "check_targets"]


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
