"""Gaussian math through the Cholesky factor of the precision.

Every mixture in keras_gmm stores, per component, its mean and the Cholesky
factor of its precision in scikit-learn's layout (``precisions_cholesky_``):
an upper-triangular ``P`` with ``precision = P @ P.T``, hence
``covariance = inv(P.T) @ inv(P)`` and the covariance Cholesky factor
``L = inv(P.T)`` (lower triangular). With it:

    log N(x | mu, Sigma) = -D/2 log(2 pi) + log|P| - 1/2 ||P.T (x - mu)||^2,
    log|P| = sum(log(diag(P))),

so no inverse and no determinant is ever formed: the log-determinant is the sum
of the log of a diagonal and the Mahalanobis term is a product.

Shapes of ``precisions_cholesky`` by covariance type (leading batch dimensions
``...`` are allowed everywhere, so the same functions serve a mixture density
network, whose parameters differ per sample, and a fitted mixture):

    "full":      [..., K, D, D]   upper triangular, positive diagonal
    "tied":      [..., D, D]      one factor shared by the K components
    "diag":      [..., K, D]      1 / standard deviations
    "spherical": [..., K]         1 / standard deviation, one per component

One small function per covariance type, chosen through a dict.
"""

import math

import tensorflow as tf

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

_LOG_2PI = math.log(2.0 * math.pi)


def check_covariance_type(covariance_type, arg_name="covariance_type"):
    """Raise a ValueError naming the argument unless the type is known."""
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(
            f"`{arg_name}` must be one of {COVARIANCE_TYPES}; "
            f"received {arg_name}={covariance_type!r}."
        )
    return covariance_type


# --------------------------------------------------------------------------
# log-determinant of the precision Cholesky factor, per component: [..., K]
# (or [...] for "tied", which has one factor)
# --------------------------------------------------------------------------
def _log_det_full(prec_chol, event_size):
    return tf.reduce_sum(tf.math.log(tf.linalg.diag_part(prec_chol)), axis=-1)


def _log_det_diag(prec_chol, event_size):
    return tf.reduce_sum(tf.math.log(prec_chol), axis=-1)


def _log_det_spherical(prec_chol, event_size):
    return event_size * tf.math.log(prec_chol)


_LOG_DET = {
    "full": _log_det_full,
    "tied": _log_det_full,
    "diag": _log_det_diag,
    "spherical": _log_det_spherical,
}


def log_det_cholesky(precisions_cholesky, covariance_type, event_size):
    """log|P| = sum of the log of the diagonal of the precision Cholesky factor.

    This is ``+1/2 log|precision|`` = ``-1/2 log|covariance|``.

    Returns:
        ``[..., K]`` for "full", "diag" and "spherical"; ``[...]`` for "tied".
    """
    return _LOG_DET[covariance_type](precisions_cholesky, event_size)


# --------------------------------------------------------------------------
# whitened residuals y = P.T (x - mu): [..., K, D] (or a squared norm)
# --------------------------------------------------------------------------
def _sq_mahalanobis_full(diff, prec_chol):
    # diff [..., K, D], prec_chol [..., K, D, D]: y_j = sum_i diff_i P_ij.
    y = tf.linalg.matvec(prec_chol, diff, adjoint_a=True)
    return tf.reduce_sum(tf.square(y), axis=-1)


def _sq_mahalanobis_tied(diff, prec_chol):
    y = tf.linalg.matvec(prec_chol[..., None, :, :], diff, adjoint_a=True)
    return tf.reduce_sum(tf.square(y), axis=-1)


def _sq_mahalanobis_diag(diff, prec_chol):
    return tf.reduce_sum(tf.square(diff * prec_chol), axis=-1)


def _sq_mahalanobis_spherical(diff, prec_chol):
    return tf.reduce_sum(tf.square(diff), axis=-1) * tf.square(prec_chol)


_SQ_MAHALANOBIS = {
    "full": _sq_mahalanobis_full,
    "tied": _sq_mahalanobis_tied,
    "diag": _sq_mahalanobis_diag,
    "spherical": _sq_mahalanobis_spherical,
}


# Un-batched fast paths (x [N, D], means [K, D]: a fitted mixture, as in EM):
# every per-(point, component) quantity becomes a matrix product over all
# components at once, the shape BLAS and XLA are fast at.
#
# "full"/"tied" whiten points and means separately, ``y = x P - mu P``
# (scikit-learn's form), after centring both on the mean of the means, so the
# products never hold the data's offset from the origin. The error of ``y`` is
# about ``eps * |x - ref| / sigma``: the result equals the general path up to
# rounding. This path is always taken for un-batched inputs.
#
# "diag"/"spherical" expand the square, ``sum_d p^2 (x - mu)^2 =
# x^2 . p^2 - 2 x . (mu p^2) + mu^2 . p^2``: two products ``[N, D] x [D, K]``
# instead of an ``[N, K, D]`` tensor. The expansion cancels: its absolute error
# is about ``eps * D * kappa`` with ``kappa = max_kd (1 + ((mu_kd - ref_d)
# p_kd)^2)`` (:func:`expansion_condition`), so it is only taken on request
# (``expand=True``), by callers that check ``kappa`` (the EM loop does).
def _sq_mahalanobis_full_gemm(x, means, prec_chol):
    ref = tf.reduce_mean(means, axis=0)
    y_x = tf.einsum("nd,kde->nke", x - ref, prec_chol)  # [N, K, D]
    y_mu = tf.einsum("kd,kde->ke", means - ref, prec_chol)  # [K, D]
    return tf.reduce_sum(tf.square(y_x - y_mu), axis=-1)


def _sq_mahalanobis_tied_gemm(x, means, prec_chol):
    ref = tf.reduce_mean(means, axis=0)
    y_x = tf.matmul(x - ref, prec_chol)  # [N, D]
    y_mu = tf.matmul(means - ref, prec_chol)  # [K, D]
    return tf.reduce_sum(tf.square(y_x[:, None, :] - y_mu), axis=-1)


def _sq_mahalanobis_diag_gemm(x, means, prec_chol):
    ref = tf.reduce_mean(means, axis=0)
    x, means = x - ref, means - ref
    p2 = tf.square(prec_chol)  # [K, D]
    sq = tf.matmul(tf.square(x), p2, transpose_b=True)
    sq -= 2.0 * tf.matmul(x, means * p2, transpose_b=True)
    sq += tf.reduce_sum(tf.square(means) * p2, axis=-1)
    return tf.maximum(sq, 0.0)


def _sq_mahalanobis_spherical_gemm(x, means, prec_chol):
    ref = tf.reduce_mean(means, axis=0)
    x, means = x - ref, means - ref
    sq = tf.reduce_sum(tf.square(x), axis=-1, keepdims=True)
    sq -= 2.0 * tf.matmul(x, means, transpose_b=True)
    sq += tf.reduce_sum(tf.square(means), axis=-1)
    return tf.maximum(sq, 0.0) * tf.square(prec_chol)


_SQ_MAHALANOBIS_GEMM = {
    # covariance type: (function, rank of an un-batched precision factor,
    #                   taken without expand=True)
    "full": (_sq_mahalanobis_full_gemm, 3, True),
    "tied": (_sq_mahalanobis_tied_gemm, 2, True),
    "diag": (_sq_mahalanobis_diag_gemm, 2, False),
    "spherical": (_sq_mahalanobis_spherical_gemm, 1, False),
}


def _static_rank(t):
    try:
        return len(t.shape)  # tensors and NumPy arrays alike
    except (AttributeError, TypeError, ValueError):  # no shape / unknown rank
        return None


def _use_gemm(x, means, precisions_cholesky, covariance_type, expand):
    _, prec_rank, always = _SQ_MAHALANOBIS_GEMM[covariance_type]
    return (
        (always or expand)
        and _static_rank(x) == 2
        and _static_rank(means) == 2
        and _static_rank(precisions_cholesky) == prec_rank
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
    if covariance_type in ("full", "tied"):
        return tf.ones((), means.dtype)
    ref = tf.reduce_mean(means, axis=-2, keepdims=True)
    p = precisions_cholesky
    if covariance_type == "spherical":
        p = p[..., None]
    return 1.0 + tf.reduce_max(tf.square((means - ref) * p))


def log_gaussian_prob(x, means, precisions_cholesky, covariance_type, expand=False):
    """Per-component Gaussian log-densities of ``x``.

    Args:
        x: ``[..., D]`` points.
        means: ``[..., K, D]`` component means (broadcast against ``x``).
        precisions_cholesky: precision Cholesky factors, shaped per covariance
            type as in the module docstring.
        covariance_type: one of ``COVARIANCE_TYPES``.
        expand: for un-batched "diag"/"spherical", compute the Mahalanobis
            term as matrix products (fast, error ``eps * D * kappa``, see
            :func:`expansion_condition`) instead of exactly.

    Returns:
        ``[..., K]``: ``log N(x | means[k], covariance[k])`` for each component,
        including the ``-D/2 log(2 pi)`` constant.

    For "full"/"tied" with un-batched ``x [N, D]`` and ``means [K, D]`` (a
    fitted mixture, as in EM) the whitening is done with matrix products, as
    scikit-learn does; the result is the same up to rounding.
    """
    event_size = means.shape[-1]
    if _use_gemm(x, means, precisions_cholesky, covariance_type, expand):
        gemm = _SQ_MAHALANOBIS_GEMM[covariance_type][0]
        sq = gemm(x, means, precisions_cholesky)
    else:
        diff = x[..., None, :] - means
        sq = _SQ_MAHALANOBIS[covariance_type](diff, precisions_cholesky)
    log_det = log_det_cholesky(precisions_cholesky, covariance_type, event_size)
    if covariance_type == "tied":
        log_det = log_det[..., None]
    return -0.5 * (event_size * _LOG_2PI + sq) + log_det


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
    if covariance_type in ("full", "tied"):
        p_t = tf.linalg.matrix_transpose(precisions_cholesky)
        eye = tf.eye(event_size, batch_shape=tf.shape(p_t)[:-2], dtype=p_t.dtype)
        return tf.linalg.triangular_solve(p_t, eye, lower=True)
    stddev = stddevs(precisions_cholesky, covariance_type, event_size)
    return tf.linalg.diag(stddev)


def stddevs(precisions_cholesky, covariance_type, event_size):
    """Marginal standard deviations of each component: ``[..., K, D]``
    (``[..., D]`` for "tied")."""
    if covariance_type == "diag":
        return tf.math.reciprocal(precisions_cholesky)
    if covariance_type == "spherical":
        scale = tf.math.reciprocal(precisions_cholesky)[..., None]
        return tf.broadcast_to(
            scale, tf.concat([tf.shape(scale)[:-1], [event_size]], axis=0)
        )
    chol = covariance_cholesky(precisions_cholesky, covariance_type, event_size)
    return tf.sqrt(tf.reduce_sum(tf.square(chol), axis=-1))


def covariances(precisions_cholesky, covariance_type, event_size):
    """Covariance matrices ``L @ L.T``: ``[..., K, D, D]`` (``[..., D, D]`` tied)."""
    chol = covariance_cholesky(precisions_cholesky, covariance_type, event_size)
    return tf.matmul(chol, chol, adjoint_b=True)


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
    if covariance_type in ("full", "tied"):
        p_t = tf.linalg.matrix_transpose(precisions_cholesky)
        return tf.linalg.triangular_solve(p_t, z[..., None], lower=True)[..., 0]
    if covariance_type == "diag":
        return z / precisions_cholesky
    return z / precisions_cholesky[..., None]
