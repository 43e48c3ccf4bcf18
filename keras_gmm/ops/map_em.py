"""MAP M-step: a Gamma hyperprior on the precisions (diag / spherical).

EM's maximum-likelihood M-step (:func:`keras_gmm.ops.em.m_step`) lets a
component collapse onto a few points: its variance goes to zero and the
likelihood to infinity. Soft weight sharing (Ullrich, Meeds & Welling 2017)
prevents this with a conjugate Gamma prior on every precision
``lambda = 1 / variance``::

    p(lambda) = Gamma(lambda | alpha, beta)  (shape alpha, rate beta)
    log p(lambda) = (alpha - 1) log lambda - beta lambda + const

With the responsibilities fixed, the part of the expected complete-data log
posterior that depends on ``lambda_kd`` (one feature ``d`` of component ``k``,
"diag") is ``(N_k / 2 + alpha - 1) log lambda - (S_kd / 2 + beta) lambda``
with ``N_k = sum_n r_nk`` and ``S_kd = sum_n r_nk (x_nd - mu_kd)^2``, so the
MAP update of the variance is::

    variance_kd = (S_kd + 2 beta) / (N_k + 2 (alpha - 1))          (diag)
    variance_k  = (S_k + 2 beta) / (N_k D + 2 (alpha - 1))         (spherical,
                   S_k summed over the D features, one precision per component)

The prior acts like ``2 (alpha - 1)`` pseudo-observations at variance
``beta / (alpha - 1)`` (the mode of the prior's variance): an empty component
gets that variance instead of a collapse. ``alpha = 1`` and ``beta -> 0`` is
the maximum-likelihood update. The means are the usual weighted means, except
for components whose mean is *fixed* (soft weight sharing pins one component
at zero): their mean stays at the shift the statistics were taken around and
their scatter is taken around it.

The statistics are the shifted sums of :func:`keras_gmm.ops.em.sufficient_statistics`
(or :func:`keras_gmm.ops.em.batch_statistics`); the scatter around the new
means comes from :func:`keras_gmm.ops.em.recentred_statistics`, so no
``E[x^2] - mu^2`` cancellation is introduced here either.
"""

import tensorflow as tf

from keras_gmm.ops import covariance, em

__all__ = ["MAP_COVARIANCE_TYPES", "check_map_covariance_type",
           "map_means_and_covariances"]

#: Covariance types with one precision per scalar (or per component) that a
#: Gamma prior is conjugate to.
MAP_COVARIANCE_TYPES = ("diag", "spherical")


def check_map_covariance_type(covariance_type, arg_name="covariance_type"):
    """``covariance_type`` if the Gamma prior applies to it (see
    :data:`MAP_COVARIANCE_TYPES`), else a ValueError."""
    try:
        return covariance.check(covariance_type, arg_name, supported=MAP_COVARIANCE_TYPES)
    except ValueError as error:
        raise ValueError(
            f"{error} The Gamma prior on precisions is conjugate to one "
            "precision per feature or per component only."
        ) from None


def map_means_and_covariances(stats, shift, covariance_type, alpha, beta, fixed_mean=None):
    """Means and MAP covariances under a Gamma(alpha, beta) prior on precisions.

    Args:
        stats: :class:`keras_gmm.ops.em.Stats` summed over the data, taken
            around ``shift``.
        shift: ``[K, D]`` the per-component shift of the statistics (usually
            the current means).
        covariance_type: "diag" or "spherical".
        alpha: Gamma shape, ``>= 1``; a scalar or ``[K]`` (one per component).
        beta: Gamma rate, ``> 0``; a scalar or ``[K]``.
        fixed_mean: optional ``[K]`` boolean mask: those components keep
            ``mean = shift`` and their variance is the MAP estimate around it.

    Returns:
        ``(nk [K], means [K, D], covariances)`` with covariances ``[K, D]``
        ("diag") or ``[K]`` ("spherical"), and ``nk`` the summed
        responsibilities (plus ``10 eps``, as :func:`keras_gmm.ops.em.m_step`).
    """
    cov = covariance.get(check_map_covariance_type(covariance_type))
    dtype = stats.nk.dtype
    nk_eps, means, _ = em.estimate_gaussian_parameters(
        stats, shift, cov.name, reg_covar=0.0
    )
    scatter = em.recentred_statistics(stats, cov.name).sum_dxdx
    rank = scatter.shape.rank  # 2 for one precision per feature, 1 per component
    shift = tf.cast(shift, dtype)
    if fixed_mean is not None:
        fixed = tf.convert_to_tensor(fixed_mean, tf.bool)
        means = tf.where(fixed[:, None], shift, means)
        scatter = tf.where(_per_precision(fixed, rank), stats.sum_dxdx, scatter)
    alpha = _per_precision(tf.cast(alpha, dtype), rank)
    beta = _per_precision(tf.cast(beta, dtype), rank)
    # The number of squared deviations behind each precision (N_k per
    # feature, N_k D per component): the scatter unit variances would have.
    count = cov.scatter_from_covariances(
        nk_eps, tf.ones_like(scatter), tf.zeros((), dtype), means.shape[-1]
    )
    covariances = (scatter + 2.0 * beta) / (count + 2.0 * (alpha - 1.0))
    return nk_eps, means, covariances


def _per_precision(value, rank):
    """A scalar as it is; a ``[K]`` vector with ``rank - 1`` trailing axes of
    size one, to broadcast against one value per precision."""
    if not value.shape.rank:
        return value
    return tf.reshape(value, [-1] + [1] * (rank - 1))
