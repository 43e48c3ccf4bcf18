"""Public keras_gmm layers, one class per module."""

from keras_gmm.layers.gaussian_mixture_em import GaussianMixtureEM
from keras_gmm.layers.mixture_density_head import MixtureDensityHead

__all__ = ["GaussianMixtureEM", "MixtureDensityHead"]
