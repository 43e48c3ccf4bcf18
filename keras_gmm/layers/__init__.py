"""Public keras_gmm layers, one class per module."""

from keras_gmm.layers.mixture_density_head import MixtureDensityHead

__all__ = ["MixtureDensityHead"]
