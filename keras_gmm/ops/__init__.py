"""Pure, stateless Gaussian-mixture math shared by every layer.

- :mod:`keras_gmm.ops.gaussian`: log-densities, responsibilities, covariances
  and sampling noise through precision Cholesky factors.
- :mod:`keras_gmm.ops.covariance`: one object per covariance type (shapes,
  log-det, Mahalanobis, moments, scatter, covariance <-> precision).
- :mod:`keras_gmm.ops.em`: E-step, batch-accumulable centred sufficient
  statistics, M-step, precision conversions, stepwise update.
- :mod:`keras_gmm.ops.init`: the initialisations (k-means, k-means++,
  random, random_from_data; scikit-learn parity).
- :mod:`keras_gmm.ops.em_driver`: the one EM loop (in memory, streamed,
  all-reduced under a strategy); :mod:`keras_gmm.ops.bayesian`: the
  variational mixture's steps and bound.
"""

from keras_gmm.ops import em, gaussian  # noqa: F401
