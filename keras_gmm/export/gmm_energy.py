"""Export endpoints of :class:`keras_gmm.GMMEnergy` (the anomaly detector)."""

import tensorflow as tf

from keras_gmm.export._core import ExportEndpoint, register_export_endpoints
from keras_gmm.layers import GMMEnergy

__all__ = ["SCORE", "PREDICT", "is_anomaly"]

#: The energy of each input (higher = more anomalous).
SCORE = "score"
#: Whether each input is an anomaly, and its energy.
PREDICT = "predict"


def is_anomaly(energy, threshold):
    """The anomaly decision: ``energy > threshold`` **or** ``energy`` not
    finite.

    A NaN or inf input row gives a NaN or inf energy, which is flagged
    anomalous (``NaN > threshold`` alone is False): the detector never calls
    a row it could not score normal.
    """
    threshold = tf.cast(threshold, energy.dtype)
    return (energy > threshold) | tf.logical_not(tf.math.is_finite(energy))


@register_export_endpoints(GMMEnergy)
def gmm_energy_endpoints(layer):
    """``score`` and ``predict`` for a model output produced by GMMEnergy.

    ``score``: ``score [b]``, the energy ``-log p(z)``. ``predict``:
    ``is_anomaly [b]`` (bool, see :func:`is_anomaly`: the energy is above
    the layer's ``threshold`` weight, set with ``GMMEnergy.set_threshold``,
    or is not finite) and ``score [b]``.
    """

    def score(energy):
        return {"score": energy}

    def predict(energy):
        return {"is_anomaly": is_anomaly(energy, layer.threshold), "score": energy}

    return {SCORE: ExportEndpoint(score), PREDICT: ExportEndpoint(predict)}
