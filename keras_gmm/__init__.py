"""keras_gmm: Gaussian mixture models for Keras 3, on TensorFlow Probability.

The public API:

- :class:`MixtureDensityHead` and :class:`GMMNegLogLik`: mixture density
  networks trained by negative log-likelihood.
- :class:`GMMConv2D`: convolutions whose kernels are Gaussian mixtures.
- :class:`GMMPriorSampling`: a VAE latent with a learnable Gaussian-mixture
  prior (VaDE): deep clustering and generation.
- :class:`GMMEnergy`: DAGMM's sample energy -log p(z) under a mixture
  estimated from soft memberships (deep anomaly detection).
- :class:`GMMRegularizer`: a learned Gaussian-mixture prior on weights (soft
  weight sharing); :mod:`keras_gmm.regularizers` quantizes and reports the
  compression.
- :func:`export_saved_model`: SavedModel export in the TF Serving layout.
- :mod:`keras_gmm.mixture`: the mixture parameterization every layer shares.
- :mod:`keras_gmm.metrics`: clustering scores (Hungarian accuracy, NMI).
- :mod:`keras_gmm.zoo`: pretrained models; :mod:`keras_gmm.datasets`: the
  embedded data they are trained and evaluated on.
"""

import keras as _keras

if _keras.backend.backend() != "tensorflow":  # pragma: no cover - env guard
    raise ImportError(
        "keras_gmm runs on the TensorFlow backend of Keras 3 (it builds on "
        "TensorFlow Probability); found KERAS_BACKEND="
        f"{_keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow."
    )

from keras_gmm import datasets, metrics, mixture, ops, zoo  # noqa: E402
from keras_gmm.export import export_saved_model  # noqa: E402
from keras_gmm.layers import (  # noqa: E402
    GaussianMixtureEM,
    GMMPriorSampling,
    MixtureDensityHead,
)
from keras_gmm.layers import GMMConv2D  # noqa: E402
from keras_gmm.layers import GMMEnergy  # noqa: E402
from keras_gmm.losses import GMMNegLogLik  # noqa: E402
from keras_gmm import regularizers  # noqa: E402
from keras_gmm.regularizers import GMMRegularizer  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "GMMConv2D",
    "GMMEnergy",
    "GMMNegLogLik",
    "GMMPriorSampling",
    "GMMRegularizer",
    "GaussianMixtureEM",
    "MixtureDensityHead",
    "datasets",
    "export_saved_model",
    "metrics",
    "mixture",
    "regularizers",
    "ops",
    "zoo",
    "__version__",
]
