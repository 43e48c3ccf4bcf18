"""Gaussian log-densities, mixture log-densities and responsibilities.

The per-covariance-type math (log-determinants, Mahalanobis terms, factor
shapes) lives in :mod:`keras_gmm.ops.covariance`; this module combines it into
the densities every layer uses, with no per-type branch of its own::

    log N(x | mu, Sigma) = -D/2 log(2 pi) + log|P| - 1/2 ||P.T (x - mu)||^2,

``P`` the precision Cholesky factor in scikit-learn's layout (see
:mod:`keras_gmm.ops.covariance` for the shapes). Leading batch dimensions are
allowed everywhere, so the same functions serve a mixture density network,
whose parameters differ per sample, and a fitted mixture.
"""

import tensorflow as tf

from keras_gmm.ops import covariance
from keras_gmm.ops.covariance import COVARIANCE_TYPES, LOG_2PI

__all__ = [
    "COVARIANCE_TYPES",
    "log_det_cholesky",
    "expansion_condition",
    "log_gaussian_prob",
    "log_mixture_prob",
    "log_responsibilities",
    "responsibilities",
    "responsibilities_of_log_joint",
    "covariance_cholesky",
    "stddevs",
    "covariances",
    "scale_noise",
]


def log_det_cholesky(precisions_cholesky, covariance_type, event_size):
    """log|P| = sum of the log of the diagonal of the precision Cholesky factor.

    This is ``+1/2 log|precision|`` = ``-1/2 log|covariance|``.

    Returns:
        ``[..., K]`` (``[..., 1]`` for "tied", which has one factor).
    """
    return covariance.get(covariance_type).log_det(precisions_cholesky, event_size)


def _static_rank(t):
    try:
        return len(t.shape)  # tensors and NumPy arrays alike
    except (AttributeError, TypeError, ValueError):  # no shape / unknown rank
        return None


def _use_gemm(x, means, precisions_cholesky, cov, expand):
    # Un-batched inputs (x [N, D], means [K, D]: a fitted mixture, as in EM):
    # every per-(point, component) quantity becomes a matrix product. Always
    # taken for "full"/"tied" (no cancellation: the result equals the general
    # path up to rounding); for the expandable types ("diag", "spherical")
    # only on request, by callers that check expansion_condition (EM does).
    cov = covariance.get(cov)
    return (
        (not cov.expandable or expand)
        and _static_rank(x) == 2
        and _static_rank(means) == 2
        and _static_rank(precisions_cholesky) == cov.factor_rank()
    )


def expansion_condition(means, precisions_cholesky, covariance_type):
    """``kappa``, the error factor of the expanded "diag"/"spherical" forms.

    ``kappa = max_kd (1 + ((mu_kd - ref_d) p_kd)^2)`` where ``ref`` is the mean
    of the means: squared distances in units of each component's standard
    deviation. The expanded Mahalanobis term (``expand=True`` in
    :func:`log_gaussian_prob`) and the expanded second moments of
    :func:`keras_gmm.ops.em.sufficient_statistics` have a relative error of
    about ``eps * kappa``. Returns 1 for "full"/"tied" (never expanded).
    """
    return covariance.get(covariance_type).expansion_condition(
        means, precisions_cholesky
    )


def log_gaussian_prob(x, means, precisions_cholesky, covariance_type, expand=False,
                      log_det=None):
    """Per-component Gaussian log-densities of ``x``.

    Args:
        x: ``[..., D]`` points.
        means: ``[..., K, D]`` component means (broadcast against ``x``).
        precisions_cholesky: precision Cholesky factors, shaped per covariance
            type (:mod:`keras_gmm.ops.covariance`).
        covariance_type: one of ``COVARIANCE_TYPES`` (or its object).
        expand: for un-batched "diag"/"spherical", compute the Mahalanobis
            term as matrix products (fast, error ``eps * D * kappa``, see
            :func:`expansion_condition`) instead of exactly.
        log_det: optional precomputed :func:`log_det_cholesky` of
            ``precisions_cholesky`` (a loop over chunks of data computes it
            once).

    Returns:
        ``[..., K]``: ``log N(x | means[k], covariance[k])`` for each component,
        including the ``-D/2 log(2 pi)`` constant.

    For "full"/"tied" with un-batched ``x [N, D]`` and ``means [K, D]`` (a
    fitted mixture, as in EM) the whitening is done with matrix products, as
    scikit-learn does; the result is the same up to rounding.
    """
    cov = covariance.get(covariance_type)
    event_size = means.shape[-1]
    if _use_gemm(x, means, precisions_cholesky, cov, expand):
        sq = cov.sq_mahalanobis_gemm(x, means, precisions_cholesky)
    else:
        sq = cov.sq_mahalanobis(x[..., None, :] - means, precisions_cholesky)
    if log_det is None:
        log_det = cov.log_det(precisions_cholesky, event_size)
    return -0.5 * (event_size * LOG_2PI + sq) + log_det


def log_mixture_prob(x, log_weights, means, precisions_cholesky, covariance_type):
    """log p(x) of a Gaussian mixture: ``logsumexp_k(log w_k + log N_k(x))``.

    Args:
        x: ``[..., D]``.
        log_weights: ``[..., K]`` normalised log mixture weights (for example
            ``tf.nn.log_softmax(logits)``).
        means, precisions_cholesky, covariance_type: as in
            :func:`log_gaussian_prob`.

    Returns:
        ``[...]`` log-densities.
    """
    log_joint = log_weights + log_gaussian_prob(
        x, means, precisions_cholesky, covariance_type
    )
    return tf.reduce_logsumexp(log_joint, axis=-1)


def log_responsibilities(
    x, log_weights, means, precisions_cholesky, covariance_type, expand=False
):
    """Posterior log-probabilities of each component, and log p(x).

    ``expand`` as in :func:`log_gaussian_prob`.

    Returns:
        ``(log_resp [..., K], log_prob [...])`` with
        ``log_resp = log w_k + log N_k(x) - log p(x)`` (rows sum to one in
        probability space, computed with logsumexp).
    """
    log_joint = log_weights + log_gaussian_prob(
        x, means, precisions_cholesky, covariance_type, expand=expand
    )
    log_prob = tf.reduce_logsumexp(log_joint, axis=-1)
    return log_joint - log_prob[..., None], log_prob


def responsibilities(x, log_weights, means, precisions_cholesky, covariance_type,
                     expand=False, log_det=None):
    """:func:`log_responsibilities` in probability space, with one ``exp``.

    ``e = exp(log_joint - m)`` with ``m`` the row maximum (0 where it is not
    finite, as ``tf.reduce_logsumexp``), ``resp = e / sum(e)`` and
    ``log p(x) = m + log(sum(e))``: the same numbers up to rounding as
    ``exp(log_resp)``, one ``[..., K]`` exponential fewer (EM's E-step).
    ``expand``, ``log_det`` as in :func:`log_gaussian_prob`.

    Returns:
        ``(resp [..., K], log_prob [...])``.
    """
    log_joint = log_weights + log_gaussian_prob(
        x, means, precisions_cholesky, covariance_type, expand=expand,
        log_det=log_det,
    )
    return responsibilities_of_log_joint(log_joint)


def responsibilities_of_log_joint(log_joint):
    """:func:`responsibilities` from ``log_joint = log w_k + log N_k(x)``
    ``[..., K]`` (however the densities were computed): ``(resp, log_prob)``."""
    top = tf.reduce_max(log_joint, axis=-1, keepdims=True)
    top = tf.stop_gradient(tf.where(tf.math.is_finite(top), top, tf.zeros_like(top)))
    e = tf.exp(log_joint - top)
    total = tf.reduce_sum(e, axis=-1, keepdims=True)
    return e / total, tf.squeeze(tf.math.log(total) + top, axis=-1)


# --------------------------------------------------------------------------
# covariances and scales from precision Cholesky factors
# --------------------------------------------------------------------------
def covariance_cholesky(precisions_cholesky, covariance_type, event_size):
    """Lower-triangular Cholesky factor ``L`` of each covariance (``L = inv(P.T)``).

    For "full" and "tied" this is one triangular solve against the identity;
    for "diag"/"spherical" it is the diagonal matrix of standard deviations.

    Returns:
        ``[..., K, D, D]`` (``[..., D, D]`` for "tied").
    """
    return covariance.get(covariance_type).covariance_cholesky(
        precisions_cholesky, event_size
    )


def stddevs(precisions_cholesky, covariance_type, event_size):
    """Marginal standard deviations of each component: ``[..., K, D]``
    (``[..., D]`` for "tied")."""
    return covariance.get(covariance_type).stddevs(precisions_cholesky, event_size)


def covariances(precisions_cholesky, covariance_type, event_size):
    """Covariance matrices ``L @ L.T``: ``[..., K, D, D]`` (``[..., D, D]`` tied)."""
    return covariance.get(covariance_type).covariance_matrices(
        precisions_cholesky, event_size
    )


def scale_noise(z, precisions_cholesky, covariance_type):
    """Colour standard-normal noise: ``L @ z`` with ``L = inv(P.T)``.

    Args:
        z: ``[..., D]`` standard-normal noise, one vector per (selected)
            component; ``precisions_cholesky`` holds that component's factor:
            ``[..., D, D]`` for full/tied, ``[..., D]`` for diag, ``[...]`` for
            spherical.

    Returns:
        ``[..., D]`` noise with covariance ``inv(P @ P.T)``. Full/tied use one
        triangular solve (``P.T`` is lower triangular); no inverse is formed.
    """
    return covariance.get(covariance_type).scale_noise(z, precisions_cholesky)
