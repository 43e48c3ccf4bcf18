"""Pre-export check of :class:`keras_gmm.BayesianGaussianMixtureEM` (its
``serving_default`` is the layer's call: responsibilities or log-densities
under the variational posterior, core TensorFlow only)."""

from keras_gmm.export._core import register_export_check
from keras_gmm.export.gaussian_mixture_em import check_gaussian_mixture_em
from keras_gmm.layers import BayesianGaussianMixtureEM

__all__ = []

# The same rule as GaussianMixtureEM's: an unfitted layer (its ``fitted``
# weight 0) holds a placeholder posterior, so it is refused.
register_export_check(BayesianGaussianMixtureEM)(check_gaussian_mixture_em)
