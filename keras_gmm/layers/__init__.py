"""Public keras_gmm layers, one class per module."""

from keras_gmm.layers.gaussian_mixture_classifier import GaussianMixtureClassifier
from keras_gmm.layers.gaussian_mixture_em import GaussianMixtureEM
from keras_gmm.layers.bayesian_gaussian_mixture_em import BayesianGaussianMixtureEM
from keras_gmm.layers.gmm_energy import GMMEnergy
from keras_gmm.layers.gmm_prior_sampling import GMMPriorSampling
from keras_gmm.layers.gmm_conv2d import GMMConv2D
from keras_gmm.layers.mixture_density_head import MixtureDensityHead

__all__ = ["BayesianGaussianMixtureEM", "GMMConv2D", "GMMEnergy", "GMMPriorSampling", "GaussianMixtureClassifier", "GaussianMixtureEM", "MixtureDensityHead"]
