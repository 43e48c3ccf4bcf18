"""Pure, stateless Gaussian-mixture math shared by every layer.

- :mod:`keras_gmm.ops.gaussian`: log-densities, responsibilities, covariances
  and sampling noise through precision Cholesky factors.
- :mod:`keras_gmm.ops.em`: E-step, batch-accumulable centred sufficient
  statistics, M-step, precision conversions, k-means++/k-means and the other
  initialisations (scikit-learn parity).
"""

from keras_gmm.ops import em, gaussian  # noqa: F401
