"""Pure, stateless Gaussian-mixture math shared by every layer."""

from keras_gmm.ops import gaussian  # noqa: F401
