"""Expectation-maximisation for Gaussian mixtures: pure, streamable TF math.

These functions hold no state. The ``GaussianMixtureEM`` layer calls them in a
``tf.function`` loop that streams the data in batches::

    shift = means                                      # current means, [K, D]
    stats = zero_statistics(K, D, covariance_type, dtype)
    for x in batches:                                  # one pass over the data
        log_resp, log_prob = e_step(x, log(weights), means, prec_chol, cov_type)
        stats = add_statistics(
            stats, sufficient_statistics(x, exp(log_resp), shift, cov_type))
        log_prob_sum += sum(log_prob)                  # lower bound numerator
    weights, means, covariances, prec_chol = m_step(stats, shift, cov_type,
                                                    reg_covar)

This reproduces scikit-learn's ``GaussianMixture`` EM (``_e_step``,
``_estimate_gaussian_parameters`` and ``_compute_precision_cholesky``): its
``lower_bound_`` of an iteration is the mean ``log_prob`` of the E-step made
*before* that iteration's M-step, exactly as above.

Design
------
* **Accumulable statistics.** :class:`Stats` holds plain sums over data points
  (``nk``, ``sum_dx``, ``sum_dxdx``), so batches are combined with
  :func:`add_statistics` and replicas with an all-reduce ``SUM``; the M-step
  only ever sees the totals.
* **Centred (shifted) moments.** scikit-learn's diag/spherical/tied formulas
  use ``E[x^2] - mu^2``, which cancels catastrophically in float32 when the data
  sit far from the origin (its issue #30382: negative variances). Here every
  moment is taken around a per-component shift ``c_k`` (the current means are
  the natural choice: they are close to the new means)::

      nk       = sum_n r_nk                             [K]
      sum_dx   = sum_n r_nk (x_n - c_k)                 [K, D]
      sum_dxdx = sum_n r_nk (x_n - c_k)(x_n - c_k)^T    full [K, D, D]
                 sum_k of the above                     tied [D, D]
                 sum_n r_nk (x_n - c_k)^2               diag [K, D]
                 sum_n r_nk ||x_n - c_k||^2             spherical [K]

  and with ``nk' = nk + 10 eps`` (as scikit-learn), ``d_k = sum_dx_k / nk'``::

      mean_k = c_k + d_k
      sum_n r_nk (x_n - mean_k)(x_n - mean_k)^T
             = sum_dxdx_k - (2 nk' - nk) d_k d_k^T      (exact)

  so the only subtraction left involves the small ``d_k``. Covariances are then
  divided by ``nk'`` (full, diag, spherical) or by ``sum_k nk'`` (tied), and
  ``reg_covar`` is added to the diagonal, as in scikit-learn. Weights are
  ``nk' / sum(nk')`` (scikit-learn's M-step); the initialisation from
  responsibilities (:func:`parameters_from_resp`) uses ``nk' / N`` as
  scikit-learn's ``_initialize`` does.
* **Empty components.** If ``nk ~ 0`` then ``sum_dx ~ 0`` and
  ``sum_dxdx ~ 0``, so ``d_k = sum_dx / (nk + 10 eps)`` stays finite: the mean
  falls back to the shift (no ``0/0``), the covariance is ``reg_covar * I``
  (finite and positive definite as long as ``reg_covar > 0``) and the weight is
  ~0. Nothing in the M-step produces a NaN from an empty component.
* **Cholesky failure.** TensorFlow's Cholesky returns NaNs (it does not raise)
  for a matrix that is not positive definite, and a non-positive diag/spherical
  variance gives an infinite or NaN ``1/sqrt``. :func:`check_precisions_cholesky`
  turns a non-finite factor into a ``ValueError`` when run eagerly and into an
  ``InvalidArgumentError`` (``tf.debugging.assert_all_finite``) inside a
  ``tf.function``; both carry scikit-learn's message (fewer components, larger
  ``reg_covar``, scaled data). Under ``jit_compile=True`` XLA drops assertions:
  the caller must then check the returned factor eagerly with
  :func:`check_precisions_cholesky` (the factor is NaN, never silently wrong).
* The per-covariance-type algebra (moments, scatter, covariances <->
  precision factors) is asked of :mod:`keras_gmm.ops.covariance`.
* The initialisations (k-means++, k-means, random; scikit-learn's
  ``init_params``) are :mod:`keras_gmm.ops.init`; this module holds the
  parameters of an initial clustering (:func:`parameters_from_resp`,
  :func:`parameters_from_labels`). The names that lived here before
  (``kmeans_plusplus``, ``kmeans``, ``labels_to_resp``, ``random_resp``,
  ``random_from_data_resp``, ``initialize``, ``INIT_PARAMS``) still import
  from here: they are :mod:`keras_gmm.ops.init`'s.

All functions are dtype-generic (float32/float64) and use static shapes, so
they run under ``tf.function(jit_compile=True)``.
"""

import importlib
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from keras_gmm.ops import covariance, gaussian
from keras_gmm.ops.covariance import COVARIANCE_TYPES

__all__ = [
    "COVARIANCE_TYPES",
    "EXPANSION_RTOL",
    "Stats",
    "add_statistics",
    "batch_statistics",
    "check_precisions_cholesky",
    "covariances_from_precisions",
    "covariances_from_precisions_cholesky",
    "default_chunk_size",
    "e_step",
    "estimate_gaussian_parameters",
    "ill_defined_covariance_message",
    "lower_bound",
    "m_step",
    "parameters_from_labels",
    "parameters_from_resp",
    "precisions_cholesky_from_covariances",
    "precisions_cholesky_from_precisions",
    "quadratic_feature_statistics",
    "quadratic_log_joint_terms",
    "recentred_statistics",
    "statistics_of_quadratic_sums",
    "scatter_from_covariances",
    "stepwise_statistics",
    "sufficient_statistics",
    "zero_statistics",
]


def ill_defined_covariance_message(dtype):
    """scikit-learn's message for a failed precision Cholesky factor."""
    message = (
        "Fitting the mixture model failed because some components have "
        "ill-defined empirical covariance (for instance caused by singleton "
        "or collapsed samples). Try to decrease the number of components, "
        "increase reg_covar, or scale the input data."
    )
    if tf.as_dtype(dtype) != tf.float64:
        message += (
            " The numerical accuracy can also be improved by computing in"
            ' float64: create the layer with dtype="float64" (it computes in'
            " its own dtype, so float64 data alone does not help)."
        )
    return message


# --------------------------------------------------------------------------
# E-step
# --------------------------------------------------------------------------
def e_step(x, log_weights, means, precisions_cholesky, covariance_type):
    """Log-responsibilities and log-likelihoods of a batch.

    Args:
        x: ``[N, D]`` data.
        log_weights: ``[K]`` normalised log mixture weights.
        means: ``[K, D]``.
        precisions_cholesky: scikit-learn layout (see
            :mod:`keras_gmm.ops.gaussian`).
        covariance_type: one of ``COVARIANCE_TYPES``.

    Returns:
        ``(log_resp [N, K], log_prob [N])`` from
        :func:`keras_gmm.ops.gaussian.log_responsibilities`.
    """
    return gaussian.log_responsibilities(
        x, log_weights, means, precisions_cholesky, covariance_type
    )


def lower_bound(log_prob_sum, n):
    """scikit-learn's ``lower_bound_`` for EM: the mean log-likelihood."""
    return log_prob_sum / tf.cast(n, log_prob_sum.dtype)


# --------------------------------------------------------------------------
# sufficient statistics (plain sums, shifted by a per-component c_k)
# --------------------------------------------------------------------------
class Stats(NamedTuple):
    """Sums over data points of a batch, the whole data or all replicas.

    Attributes:
        nk: ``[K]`` sum of responsibilities.
        sum_dx: ``[K, D]`` sum of ``r_nk (x_n - c_k)``.
        sum_dxdx: centred second moments around the shift: full ``[K, D, D]``,
            tied ``[D, D]`` (summed over components), diag ``[K, D]``,
            spherical ``[K]`` (summed over features).
    """

    nk: tf.Tensor
    sum_dx: tf.Tensor
    sum_dxdx: tf.Tensor


# Matrix-product forms. The sums are taken after centring the data on ``ref``,
# the mean of the shifts (so no product holds the data's offset from the
# origin), and:
#
# * full/tied are half-centred: with ``a_nk = r_nk (x_n - c_k)``,
#   ``sum_n a_nk (x_n - c_k)^T = (sum_n a_nk x_n^T) - sum_dx_k c_k^T``, one
#   ``[K*D, N] x [N, D]`` product (tied: ``[D, N] x [N, D]`` after summing
#   ``a`` over k). Its error is about ``eps * |x - c| |x| / sigma^2``, small
#   because ``c`` (the current means) is close to the points a component owns;
# * diag/spherical are exact (an ``[N, K, D]`` tensor) unless ``expand=True``:
#   then ``sum_n r (x - c)^2 = r^T x^2 - 2 c r^T x + nk c^2``, two
#   ``[K, N] x [N, D]`` products, with relative error ``eps * kappa``
#   (:func:`keras_gmm.ops.gaussian.expansion_condition`).
def sufficient_statistics(x, resp, shift, covariance_type, expand=False):
    """Shifted sufficient statistics of one batch.

    Args:
        x: ``[N, D]`` data.
        resp: ``[N, K]`` responsibilities (``exp(log_resp)``; rows sum to one).
        shift: ``[K, D]`` per-component shift ``c_k``, usually the current
            means; the same shift must be passed to :func:`m_step`.
        covariance_type: one of ``COVARIANCE_TYPES``.
        expand: for "diag"/"spherical", take the second moments as matrix
            products (fast; relative error ``eps * kappa``, see
            :func:`keras_gmm.ops.gaussian.expansion_condition`) instead of
            from an ``[N, K, D]`` tensor. "full"/"tied" always use products.

    Returns:
        A :class:`Stats` of plain sums over the batch.
    """
    cov = covariance.get(covariance_type)
    resp = tf.cast(resp, x.dtype)
    shift = tf.cast(shift, x.dtype)
    ref = tf.reduce_mean(shift, axis=0)
    x, shift = x - ref, shift - ref
    sum_dx, sum_dxdx = cov.moments(resp, x, shift, expand)
    return Stats(tf.reduce_sum(resp, axis=0), sum_dx, sum_dxdx)


def zero_statistics(n_components, n_features, covariance_type, dtype=tf.float32):
    """A :class:`Stats` of zeros, the start of an accumulation."""
    cov = covariance.get(covariance_type)
    return Stats(
        tf.zeros((n_components,), dtype),
        tf.zeros((n_components, n_features), dtype),
        tf.zeros(cov.second_moment_shape(n_components, n_features), dtype),
    )


def add_statistics(a, b):
    """Element-wise sum of two :class:`Stats` (batches or replicas)."""
    return Stats(*(u + v for u, v in zip(a, b)))


# --------------------------------------------------------------------------
# M-step
# --------------------------------------------------------------------------
def _scatter(cov, stats, nk_eps, d):
    """Scatter around the new means from statistics around the shift (exact
    algebra, see the module docstring), in the layout of ``Stats.sum_dxdx``."""
    return cov.scatter(stats.nk, stats.sum_dx, stats.sum_dxdx, nk_eps, d)


def estimate_gaussian_parameters(stats, shift, covariance_type, reg_covar):
    """scikit-learn's ``_estimate_gaussian_parameters`` from :class:`Stats`.

    Returns:
        ``(nk', means [K, D], covariances)`` with ``nk' = nk + 10 eps`` and the
        covariances in scikit-learn's layout (full ``[K, D, D]``, tied
        ``[D, D]``, diag ``[K, D]``, spherical ``[K]``), ``reg_covar`` added.
    """
    cov = covariance.get(covariance_type)
    dtype = stats.nk.dtype
    eps = tf.constant(10.0 * _finfo_eps(dtype), dtype)
    nk_eps = stats.nk + eps
    d = stats.sum_dx / nk_eps[:, None]
    means = tf.cast(shift, dtype) + d
    reg = tf.cast(reg_covar, dtype)
    covariances = cov.covariances_from_scatter(
        _scatter(cov, stats, nk_eps, d), nk_eps, d.shape[-1], reg
    )
    return nk_eps, means, covariances


def _finfo_eps(dtype):
    return float(np.finfo(tf.as_dtype(dtype).as_numpy_dtype).eps)


def m_step(stats, shift, covariance_type, reg_covar, check=True):
    """New parameters from accumulated statistics (scikit-learn's ``_m_step``).

    Args:
        stats: :class:`Stats` summed over the whole data.
        shift: ``[K, D]`` the shift the statistics were taken around.
        covariance_type: one of ``COVARIANCE_TYPES``.
        reg_covar: non-negative float added to the covariance diagonals.
        check: raise on a non-finite factor (:func:`check_precisions_cholesky`);
            ``False`` returns it NaN for the caller to handle (the EM loop and
            the stepwise updates keep the previous parameters then).

    Returns:
        ``(weights [K], means [K, D], covariances, precisions_cholesky)``;
        ``weights = nk' / sum(nk')``.

    Raises:
        ValueError: (eagerly) if a covariance is not positive definite;
            ``InvalidArgumentError`` inside a ``tf.function`` (see the module
            docstring for XLA).
    """
    nk_eps, means, covariances = estimate_gaussian_parameters(
        stats, shift, covariance_type, reg_covar
    )
    weights = nk_eps / tf.reduce_sum(nk_eps)
    prec_chol = precisions_cholesky_from_covariances(
        covariances, covariance_type, check=check
    )
    return weights, means, covariances, prec_chol


# --------------------------------------------------------------------------
# stepwise (online) EM
# --------------------------------------------------------------------------
def recentred_statistics(stats, covariance_type):
    """The same data's :class:`Stats` around their own new means.

    ``sum_dx`` becomes 0 and ``sum_dxdx`` the scatter around the means that
    :func:`m_step` returns for these statistics (same ``nk + 10 eps``), so
    decayed statistics can be carried from one step to the next around the
    moving means without ever forming ``E[x^2] - mu^2``.
    """
    cov = covariance.get(covariance_type)
    dtype = stats.nk.dtype
    nk_eps = stats.nk + tf.constant(10.0 * _finfo_eps(dtype), dtype)
    d = stats.sum_dx / nk_eps[:, None]
    return Stats(stats.nk, tf.zeros_like(stats.sum_dx),
                 _scatter(cov, stats, nk_eps, d))


def scatter_from_covariances(weights, covariances, covariance_type, reg_covar,
                             n_features):
    """``sum_dxdx`` of :func:`recentred_statistics` for a fitted mixture, in
    units of a fraction of the data (``nk = weights``): the inverse of the
    M-step's ``covariance = scatter / nk + reg_covar``. Starts stepwise EM from
    a batch fit."""
    w = tf.convert_to_tensor(weights)
    return covariance.get(covariance_type).scatter_from_covariances(
        w, tf.cast(covariances, w.dtype), tf.cast(reg_covar, w.dtype), n_features
    )


def stepwise_statistics(running, batch, batch_size, step_size):
    """Stepwise EM's update (Cappe & Moulines 2009, Liang & Klein 2009).

    ``(1 - step_size) * running + step_size * batch / batch_size``: both
    :class:`Stats` around the current means (``running`` from
    :func:`recentred_statistics`, so its ``sum_dx`` is 0); the result is in
    units of a fraction of the data, ready for :func:`m_step`. A constant
    ``step_size`` is an exponential moving average with ``momentum = 1 -
    step_size``, as BatchNormalization's moving statistics.
    """
    dtype = running.nk.dtype
    # A Python float goes straight to ``dtype`` (tf.cast would round it
    # through float32 first).
    step = (tf.cast(step_size, dtype) if tf.is_tensor(step_size)
            else tf.constant(step_size, dtype))
    scale = step / tf.cast(batch_size, dtype)
    return Stats(*((1.0 - step) * r + scale * tf.cast(b, dtype)
                   for r, b in zip(running, batch)))


# --------------------------------------------------------------------------
# one batch, one pass, a whole fit
# --------------------------------------------------------------------------
#: The expanded (matrix-product) diag/spherical forms are used in the data's
#: dtype while ``eps * kappa`` is below this; above it, in float64.
EXPANSION_RTOL = 1e-3


def batch_statistics(x, weights, means, precisions_cholesky, covariance_type, fast=True,
                     mask=None, log_weights=None, log_det=None):
    """E-step and sufficient statistics of one batch, around the current means.

    The unit of work of every EM loop (a pass, a replica, an online step).

    Args:
        x: ``[N, D]``.
        weights: ``[K]`` mixture weights; ``means``, ``precisions_cholesky``:
            the current parameters (the statistics are shifted by ``means``).
        covariance_type: one of ``COVARIANCE_TYPES``.
        fast: "diag"/"spherical" only: use the matrix-product forms, in the
            data's dtype when ``eps * kappa <= EXPANSION_RTOL``
            (:func:`keras_gmm.ops.gaussian.expansion_condition`) and in float64
            otherwise (so a float32 fit stays accurate for tight, far-apart
            components). ``False``: the exact ``[N, K, D]`` forms.
        mask: optional ``[N]`` 0/1 weights of the rows (0: padding, left out
            of the statistics and the log-likelihood sum).
        log_weights, log_det: optional precomputed ``log(weights)`` and
            :func:`keras_gmm.ops.gaussian.log_det_cholesky` (a loop over
            chunks computes them once; ``weights`` is then unused).

    Returns:
        ``(Stats, sum of log p(x_n))`` in the dtype of ``x``.
    """
    cov = covariance.get(covariance_type)
    dtype = x.dtype
    if log_weights is None:
        log_weights = tf.math.log(weights)

    def run(compute_dtype, expand):
        xc, log_w, mu, pc = (
            tf.cast(t, compute_dtype)
            for t in (x, log_weights, means, precisions_cholesky)
        )
        ld = None if log_det is None else tf.cast(log_det, compute_dtype)
        resp, log_prob = gaussian.responsibilities(
            xc, log_w, mu, pc, covariance_type, expand=expand, log_det=ld
        )
        if mask is not None:
            m = tf.cast(mask, compute_dtype)
            resp, log_prob = resp * m[:, None], log_prob * m
        stats = sufficient_statistics(xc, resp, mu, covariance_type, expand=expand)
        out = (stats, tf.reduce_sum(log_prob))
        return tf.nest.map_structure(lambda t: tf.cast(t, dtype), out)

    if not fast or not cov.expandable:
        return run(dtype, expand=False)
    if dtype == tf.float64:
        return run(dtype, expand=True)
    kappa = gaussian.expansion_condition(
        tf.cast(means, dtype), tf.cast(precisions_cholesky, dtype), covariance_type
    )
    accurate = kappa * _finfo_eps(dtype) <= EXPANSION_RTOL
    return tf.cond(
        accurate, lambda: run(dtype, True), lambda: run(tf.float64, True)
    )


def quadratic_log_joint_terms(log_weights, log_det, means, precisions_cholesky,
                              center, covariance_type):
    """The E-step over quadratic features (covariance types with
    ``quadratic_features``, :mod:`keras_gmm.ops.covariance`) as one product:
    ``(A [F, K], b [K], kappa)`` with ``log w_k + log N_k(x) = phi(x) @ A + b``
    for ``phi = quadratic_features_of(x - center)``; ``kappa`` the error
    factor of the expanded form (:meth:`~keras_gmm.ops.covariance.
    CovarianceType.quadratic_weights`: the caller uses the form only while
    ``eps * kappa <= EXPANSION_RTOL``)."""
    cov = covariance.get(covariance_type)
    d = int(means.shape[-1])
    weights, q, kappa = cov.quadratic_weights(means - center, precisions_cholesky)
    bias = log_weights + log_det - 0.5 * (d * covariance.LOG_2PI + q)
    return -0.5 * weights, bias, kappa


def quadratic_feature_statistics(phi, mask, a, b, entropy=False):
    """E-step and statistics of one chunk of quadratic features ``phi
    [N, F]`` (:func:`quadratic_log_joint_terms`' ``a``, ``b``; ``mask``
    ``[N]`` 0/1 or None): ``(nk [K], resp.T @ phi [K, F], sum of log p(x_n))``,
    to be turned into :class:`Stats` once summed
    (:func:`statistics_of_quadratic_sums`); ``entropy``: and ``sum r log r``
    (the variational bound's term, :mod:`keras_gmm.ops.bayesian`)."""
    log_joint = tf.matmul(phi, a) + b
    resp, log_prob = gaussian.responsibilities_of_log_joint(log_joint)
    log_resp = log_joint - log_prob[:, None] if entropy else None
    if mask is not None:
        resp, log_prob = resp * mask[:, None], log_prob * mask
    out = (tf.reduce_sum(resp, axis=0), tf.matmul(resp, phi, transpose_a=True),
           tf.reduce_sum(log_prob))
    if entropy:  # 0 log 0 = 0 (an underflow, a masked row)
        out += (tf.reduce_sum(tf.math.multiply_no_nan(log_resp, resp)),)
    return out


def statistics_of_quadratic_sums(nk, sums, means, center, covariance_type):
    """:class:`Stats` around ``means`` from :func:`quadratic_feature_statistics`'
    sums over the data (features of ``x - center``)."""
    cov = covariance.get(covariance_type)
    sum_dx, sum_dxdx = cov.moments_from_quadratic_sums(nk, sums, means - center)
    return Stats(nk, sum_dx, sum_dxdx)


def default_chunk_size(n_components, n_features, covariance_type):
    """Rows per chunk of :func:`em_iterations`: full/tied materialise
    ``[chunk, K, D]`` products, kept near 2 MiB of float32 (cache-sized:
    measured 2x faster per iteration than 16 MiB on the benchmark's full
    case); diag/spherical only ``[chunk, K]`` ones, so larger chunks."""
    kd = max(n_components * n_features, 1)
    if not covariance.get(covariance_type).expandable:
        return max(256, (1 << 19) // kd)
    return max(1024, (1 << 23) // kd)


# --------------------------------------------------------------------------
# precision Cholesky factors <-> covariances / precisions
# --------------------------------------------------------------------------
def check_precisions_cholesky(precisions_cholesky):
    """Raise scikit-learn's error if a precision Cholesky factor is not finite.

    Eagerly: ``ValueError``. In a graph: an ``assert_all_finite`` whose failure
    is an ``InvalidArgumentError`` with the same message (a no-op under XLA:
    check the result eagerly there). Returns ``precisions_cholesky``.
    """
    message = ill_defined_covariance_message(precisions_cholesky.dtype)
    if tf.executing_eagerly():
        if not bool(tf.reduce_all(tf.math.is_finite(precisions_cholesky))):
            raise ValueError(message)
        return precisions_cholesky
    return tf.debugging.assert_all_finite(precisions_cholesky, message)


def precisions_cholesky_from_covariances(covariances, covariance_type, check=True):
    """scikit-learn's ``_compute_precision_cholesky``.

    Full/tied: ``P = inv(L).T`` with ``L = cholesky(covariance)`` (upper
    triangular ``P``, ``precision = P P^T``); diag/spherical: ``1/sqrt(var)``.
    A covariance that is not positive definite raises (see
    :func:`check_precisions_cholesky`).
    """
    prec_chol = covariance.get(covariance_type).precisions_cholesky_from_covariances(
        covariances
    )
    return check_precisions_cholesky(prec_chol) if check else prec_chol


def precisions_cholesky_from_precisions(precisions, covariance_type):
    """scikit-learn's ``_compute_precision_cholesky_from_precisions``.

    Full/tied: the upper-triangular ``U`` with ``precision = U U^T`` is
    ``J cholesky(J precision J) J`` (``J`` reverses rows and columns);
    diag/spherical: ``sqrt(precision)``.
    """
    prec_chol = covariance.get(covariance_type).precisions_cholesky_from_precisions(
        precisions
    )
    return check_precisions_cholesky(prec_chol)


def covariances_from_precisions_cholesky(precisions_cholesky, covariance_type):
    """Covariances in scikit-learn's layout from precision Cholesky factors.

    Full ``[K, D, D]``, tied ``[D, D]``, diag ``[K, D]``, spherical ``[K]``.
    """
    return covariance.get(covariance_type).covariances(precisions_cholesky)


def covariances_from_precisions(precisions, covariance_type):
    """Covariances in scikit-learn's layout from precisions (``precisions_init``)."""
    return covariances_from_precisions_cholesky(
        precisions_cholesky_from_precisions(precisions, covariance_type),
        covariance_type,
    )


# --------------------------------------------------------------------------
# parameters from an initial clustering (the initialisations themselves are
# keras_gmm.ops.init)
# --------------------------------------------------------------------------
def parameters_from_labels(x, labels, n_components, covariance_type, reg_covar,
                           check=True):
    """:func:`parameters_from_resp` for one-hot responsibilities, from the
    labels: segment sums, memory ``N * D`` (``N * D^2`` for "full") instead of
    ``N * K * D``; exact two-pass statistics (means, then the scatter of
    ``x - means[label]``).

    Returns:
        ``(weights [K], means [K, D], covariances, precisions_cholesky)``.
    """
    cov = covariance.get(covariance_type)
    k = n_components
    dtype = x.dtype
    eps = tf.constant(10.0 * _finfo_eps(dtype), dtype)
    nk_eps = tf.math.unsorted_segment_sum(tf.ones_like(x[:, 0]), labels, k) + eps
    means = tf.math.unsorted_segment_sum(x, labels, k) / nk_eps[:, None]
    dx = x - tf.gather(means, labels)
    covariances = cov.covariances_from_scatter(
        cov.scatter_of_labels(dx, labels, k), nk_eps, x.shape[-1],
        tf.cast(reg_covar, dtype),
    )
    weights = nk_eps / tf.cast(tf.shape(x)[0], dtype)
    prec_chol = precisions_cholesky_from_covariances(
        covariances, covariance_type, check=check
    )
    return weights, means, covariances, prec_chol


def parameters_from_resp(x, resp, covariance_type, reg_covar, check=True):
    """Initial parameters from responsibilities (scikit-learn's ``_initialize``).

    Two passes over ``x``: the means first, then the statistics centred on
    them. ``weights = nk' / N``.

    Returns:
        ``(weights [K], means [K, D], covariances, precisions_cholesky)``.
    """
    resp = tf.cast(resp, x.dtype)
    eps = tf.constant(10.0 * _finfo_eps(x.dtype), x.dtype)
    nk_eps = tf.reduce_sum(resp, axis=0) + eps
    shift = tf.matmul(resp, x, transpose_a=True) / nk_eps[:, None]
    stats = sufficient_statistics(x, resp, shift, covariance_type)
    nk_eps, means, covariances = estimate_gaussian_parameters(
        stats, shift, covariance_type, reg_covar
    )
    weights = nk_eps / tf.cast(tf.shape(x)[0], x.dtype)
    prec_chol = precisions_cholesky_from_covariances(
        covariances, covariance_type, check=check
    )
    return weights, means, covariances, prec_chol


#: The initialisations that moved to :mod:`keras_gmm.ops.init` (their one
#: home); ``keras_gmm.ops.em.<name>`` still gives them.
_MOVED_TO_INIT = frozenset({
    "kmeans_plusplus", "kmeans", "labels_to_resp", "random_resp",
    "random_from_data_resp", "initialize", "INIT_PARAMS",
})


def __getattr__(name):
    # (init imports this module, so it is looked up when asked for)
    if name in _MOVED_TO_INIT:
        return getattr(importlib.import_module("keras_gmm.ops.init"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
