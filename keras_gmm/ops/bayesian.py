"""Variational Bayesian Gaussian mixture: scikit-learn's
``BayesianGaussianMixture`` as pure, streamable TF math.

The model (Bishop 2006, section 10.2; Blei & Jordan 2006 for the Dirichlet
process) puts conjugate priors on a Gaussian mixture:

- weights: a Dirichlet distribution ``Dir(alpha_0 / K, ...)``
  ("dirichlet_distribution") or a truncated Dirichlet process, its
  stick-breaking fractions ``Beta(1, alpha_0)`` ("dirichlet_process");
- each component's precision a Wishart ``W(nu_0, (W_0)^-1 / nu_0)`` (a Gamma
  per variance for "diag"/"spherical", one shared Wishart for "tied"), and its
  mean a Gaussian ``N(m_0, (beta_0 Lambda_k)^-1)``;

and its mean-field posterior has the same families. One iteration is the
EM iteration of :mod:`keras_gmm.ops.em` with different formulas at both
ends, and the same accumulable statistics in the middle::

    shift = state.means                               # current posterior means
    totals = zero_statistics(K, D, covariance_type, dtype)
    for x in batches:                                 # one pass over the data
        totals = add_statistics(totals, batch_statistics(
            x, state, covariance_type, weight_concentration_prior_type))
    state = variational_m_step(totals.stats, shift, priors, covariance_type,
                               reg_covar, weight_concentration_prior_type)
    bound = lower_bound(state, totals.resp_log_resp_sum, covariance_type,
                        weight_concentration_prior_type)

:class:`VariationalStats` are plain sums (the shifted :class:`em.Stats`, the
sum of ``log p(x_n)`` and the sum of ``r_nk log r_nk`` that the lower bound
needs), so batches are added and replicas all-reduced with ``SUM`` exactly as
for EM; the variational M-step only sees totals.

The formulas are scikit-learn's (``_estimate_weights``, ``_estimate_means``,
``_estimate_wishart_*``, ``_estimate_log_weights``, ``_estimate_log_prob``,
``_compute_lower_bound``), with its conventions: the Wishart scale is
normalised by the degrees of freedom, so ``covariances`` are
``W_k^-1 / nu_k`` and ``precisions_cholesky`` their precision factors
(the layout of :mod:`keras_gmm.ops.covariance`), and the lower bound drops the
constant terms. As in scikit-learn, the bound of an iteration is computed
from the responsibilities of its E-step and the parameters of its M-step.

Per-covariance-type algebra is asked of :mod:`keras_gmm.ops.covariance`: the
Wishart update ``W_k^-1 = W_0^-1 + N_k S_k + N_k beta_0 / beta_k
(xbar_k - m_0)(xbar_k - m_0)^T`` is three scatters in the layout of
``Stats.sum_dxdx`` (the prior scale as one pseudo-observation per component,
the data's, and the prior mean as a pseudo-observation of weight
``N_k beta_0 / beta_k`` around ``xbar_k``), divided by the degrees of freedom
with ``covariances_from_scatter``. The only per-type fact not found there is
that a shared ("tied") covariance pools the counts (``nu = nu_0 + N / K``):
read from ``cov.shared``.

All functions are dtype-generic (float32/float64) with static shapes, so
they compile with ``tf.function(jit_compile=True)``.

Reference:
    Bishop, *Pattern Recognition and Machine Learning*, 2006, section 10.2;
    Blei & Jordan, *Variational inference for Dirichlet process mixtures*,
    Bayesian Analysis 1(1), 2006.
"""

import math
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from keras_gmm import _validation
from keras_gmm.ops import covariance, em, em_driver, gaussian

__all__ = [
    "WEIGHT_CONCENTRATION_PRIOR_TYPES",
    "Priors",
    "VariationalState",
    "VariationalStats",
    "add_statistics",
    "batch_statistics",
    "check_weight_concentration_prior_type",
    "data_moments",
    "data_statistics",
    "estimate_log_prob",
    "estimate_log_weights",
    "estimate_weight_concentration",
    "initial_state_from_resp",
    "lower_bound",
    "mixture_weights",
    "priors_from_data",
    "resolve_priors",
    "variational_iterations",
    "variational_log_resp",
    "variational_m_step",
    "variational_pass",
    "zero_statistics",
]

_LOG_2 = math.log(2.0)


# --------------------------------------------------------------------------
# the weight prior: one object per type (as ops.covariance)
# --------------------------------------------------------------------------
class _DirichletProcess:
    """Truncated stick-breaking: ``weight_concentration = (a [K], b [K])``,
    the Beta parameters of each stick fraction."""

    name = "dirichlet_process"

    def concentration(self, nk, prior):
        # b_k = alpha_0 + sum_{j > k} N_j (scikit-learn's reversed cumsum)
        return (1.0 + nk, prior + tf.math.cumsum(nk, reverse=True, exclusive=True))

    def log_weights(self, concentration):
        a, b = concentration
        digamma_sum = tf.math.digamma(a + b)
        return (tf.math.digamma(a) - digamma_sum
                + tf.math.cumsum(tf.math.digamma(b) - digamma_sum, exclusive=True))

    def log_norm(self, concentration):
        # scikit-learn's -sum(betaln(a, b))
        a, b = concentration
        return -tf.reduce_sum(
            tf.math.lgamma(a) + tf.math.lgamma(b) - tf.math.lgamma(a + b)
        )

    def weights(self, concentration):
        a, b = concentration
        total = a + b
        w = a / total * tf.math.cumprod(b / total, exclusive=True)
        return w / tf.reduce_sum(w)

    def shapes(self, n_components):
        return ((n_components,), (n_components,))


class _DirichletDistribution:
    """A finite Dirichlet: ``weight_concentration = alpha [K]``."""

    name = "dirichlet_distribution"

    def concentration(self, nk, prior):
        return prior + nk

    def log_weights(self, concentration):
        return tf.math.digamma(concentration) - tf.math.digamma(
            tf.reduce_sum(concentration)
        )

    def log_norm(self, concentration):
        # scikit-learn's _log_dirichlet_norm
        return tf.math.lgamma(tf.reduce_sum(concentration)) - tf.reduce_sum(
            tf.math.lgamma(concentration)
        )

    def weights(self, concentration):
        return concentration / tf.reduce_sum(concentration)

    def shapes(self, n_components):
        return (n_components,)


_WEIGHT_PRIORS = {p.name: p for p in (_DirichletProcess(), _DirichletDistribution())}

#: ``weight_concentration_prior_type`` values (scikit-learn's).
WEIGHT_CONCENTRATION_PRIOR_TYPES = tuple(_WEIGHT_PRIORS)


def check_weight_concentration_prior_type(
    value, arg_name="weight_concentration_prior_type"
):
    """``value`` if it is a weight prior type, else a ValueError naming the
    argument, the value and the choices."""
    return _validation.check_one_of(value, arg_name, WEIGHT_CONCENTRATION_PRIOR_TYPES)


def _weight_prior(weight_concentration_prior_type):
    return _WEIGHT_PRIORS[
        check_weight_concentration_prior_type(weight_concentration_prior_type)
    ]


# --------------------------------------------------------------------------
# state and priors
# --------------------------------------------------------------------------
class VariationalState(NamedTuple):
    """The variational posterior, in scikit-learn's attribute layout.

    Attributes:
        weight_concentration: "dirichlet_process": a pair ``(a [K], b [K])``
            of Beta parameters; "dirichlet_distribution": ``[K]``
            (scikit-learn's ``weight_concentration_``).
        mean_precision: ``[K]`` ``beta_k`` (``mean_precision_``).
        means: ``[K, D]`` ``m_k`` (``means_``).
        degrees_of_freedom: ``[K]`` ``nu_k``; a scalar ``[]`` for "tied"
            (one shared Wishart, as scikit-learn's ``degrees_of_freedom_``).
        covariances: ``W_k^-1 / nu_k`` in scikit-learn's layout (full
            ``[K, D, D]``, tied ``[D, D]``, diag ``[K, D]``, spherical ``[K]``).
        precisions_cholesky: their precision Cholesky factors, same layout.
    """

    weight_concentration: object
    mean_precision: tf.Tensor
    means: tf.Tensor
    degrees_of_freedom: tf.Tensor
    covariances: tf.Tensor
    precisions_cholesky: tf.Tensor


class Priors(NamedTuple):
    """Resolved priors (scikit-learn's ``*_prior_`` attributes), tensors.

    Attributes:
        weight_concentration: scalar ``alpha_0`` (default ``1 / K``).
        mean_precision: scalar ``beta_0`` (default 1).
        mean: ``[D]`` ``m_0`` (default the data mean).
        degrees_of_freedom: scalar ``nu_0 > D - 1`` (default ``D``).
        covariance: one component's covariance prior ``W_0^-1``: full/tied
            ``[D, D]`` (default the data's covariance), diag ``[D]`` (the
            data's variances), spherical ``[]`` (their mean); unbiased
            (``ddof=1``) as scikit-learn's.
    """

    weight_concentration: tf.Tensor
    mean_precision: tf.Tensor
    mean: tf.Tensor
    degrees_of_freedom: tf.Tensor
    covariance: tf.Tensor


def _eps(dtype):
    return float(np.finfo(tf.as_dtype(dtype).as_numpy_dtype).eps)


def data_statistics(x, shift, covariance_type, mask=None):
    """One batch's statistics for the data-dependent priors: the
    :class:`em.Stats` of a single component (``K = 1``) owning every row.

    Args:
        x: ``[N, D]`` batch.
        shift: ``[D]`` (or ``[1, D]``) a point near the data mean, the same
            for every batch of a pass (the first batch's mean will do); the
            moments are exact for any shift, accurate for a near one.
        covariance_type: a covariance type (decides the layout of
            ``sum_dxdx``).
        mask: optional ``[N]`` 0/1 row weights (padding rows 0).

    Returns:
        ``em.Stats`` with ``nk [1]``, ``sum_dx [1, D]`` and ``sum_dxdx`` in
        the covariance type's layout for one component; add batches with
        :func:`keras_gmm.ops.em.add_statistics`.
    """
    ones = tf.ones_like(x[:, :1]) if mask is None else tf.cast(mask, x.dtype)[:, None]
    shift = tf.reshape(tf.cast(shift, x.dtype), [1, -1])
    return em.sufficient_statistics(x, ones, shift, covariance_type)


def data_moments(stats, shift, covariance_type):
    """The data's mean and default covariance prior from
    :func:`data_statistics` totals.

    Returns:
        ``(mean [D], covariance)``: the covariance in one component's layout
        (full/tied ``[D, D]``, diag ``[D]``, spherical ``[]``, the mean of the
        variances) with scikit-learn's ``ddof=1`` (``np.cov``,
        ``np.var(ddof=1)``). Needs at least two rows.
    """
    cov = covariance.get(covariance_type)
    nk = stats.nk
    d = stats.sum_dx / nk[:, None]
    mean = tf.reshape(tf.cast(shift, nk.dtype), [1, -1]) + d
    scatter = cov.scatter(nk, stats.sum_dx, stats.sum_dxdx, nk, d)
    n_features = int(stats.sum_dx.shape[-1])
    covariances = cov.covariances_from_scatter(
        scatter, nk - 1.0, n_features, tf.zeros((), nk.dtype)
    )
    return mean[0], cov.select(covariances, tf.constant(0), 0)


def _scalar_prior(value, default, name):
    if value is None:
        return default
    return _validation.check_positive(value, name)


def resolve_priors(
    n_components, n_features, covariance_type, data_mean=None, data_covariance=None,
    *, weight_concentration_prior=None, mean_precision_prior=None, mean_prior=None,
    degrees_of_freedom_prior=None, covariance_prior=None, dtype=tf.float64,
):
    """scikit-learn's ``_check_parameters`` of ``BayesianGaussianMixture``:
    the priors with their defaults filled in and checked (eagerly).

    Args:
        n_components, n_features: ``K`` and ``D``.
        covariance_type: a covariance type.
        data_mean: ``[D]`` the data mean (needed when ``mean_prior`` is None).
        data_covariance: the data's covariance in one component's layout
            (needed when ``covariance_prior`` is None); both from
            :func:`data_moments` (a streamed pass) or :func:`priors_from_data`.
        weight_concentration_prior: ``> 0`` (default ``1 / K``).
        mean_precision_prior: ``> 0`` (default 1).
        mean_prior: ``[D]`` (default ``data_mean``).
        degrees_of_freedom_prior: ``> D - 1`` (default ``D``).
        covariance_prior: full/tied ``[D, D]`` symmetric positive definite,
            diag ``[D]`` positive, spherical a positive number (default from
            ``data_covariance``).
        dtype: the priors' dtype.

    Returns:
        A :class:`Priors` of tensors of ``dtype``.

    Raises:
        ValueError: naming the argument and the value received.
    """
    cov = covariance.get(covariance_type)
    k = _validation.check_positive_int(n_components, "n_components")
    d = _validation.check_positive_int(n_features, "n_features")
    alpha = _scalar_prior(weight_concentration_prior, 1.0 / k,
                          "weight_concentration_prior")
    beta = _scalar_prior(mean_precision_prior, 1.0, "mean_precision_prior")
    if degrees_of_freedom_prior is None:
        nu = float(d)
    else:
        nu = _validation.check_number(degrees_of_freedom_prior,
                                      "degrees_of_freedom_prior")
        if not nu > d - 1.0:
            # scikit-learn's message, then ours (the argument and the fix)
            raise ValueError(
                "The parameter 'degrees_of_freedom_prior' should be greater "
                f"than {d - 1}, but got {nu:.3f}. `degrees_of_freedom_prior` "
                f"must be > n_features - 1 = {d - 1}; received "
                f"degrees_of_freedom_prior={_validation.describe(degrees_of_freedom_prior)}"
                f". Pass a larger value, or None for the default {d}."
            )
    if mean_prior is None:
        if data_mean is None:
            raise ValueError("`data_mean` is needed when `mean_prior` is None.")
        mean = data_mean
    else:
        mean = _validation.check_array(mean_prior, "mean_prior", ndim=1, n_features=d)
    if covariance_prior is None:
        if data_covariance is None:
            raise ValueError(
                "`data_covariance` is needed when `covariance_prior` is None."
            )
        cov_prior = data_covariance
    else:
        cov_prior = _check_covariance_prior(covariance_prior, cov, d)
    return Priors(*(_as_tensor(v, dtype) for v in (alpha, beta, mean, nu, cov_prior)))


def _as_tensor(value, dtype):
    """``value`` in ``dtype``; a Python or NumPy number goes straight there
    (``convert_to_tensor`` would round a Python float through float32)."""
    dtype = tf.as_dtype(dtype)
    if tf.is_tensor(value):
        return tf.cast(value, dtype)
    return tf.constant(np.asarray(value, dtype=dtype.as_numpy_dtype))


def _check_covariance_prior(value, cov, n_features):
    shape = cov.component_shape(n_features)
    array = _validation.check_array(value, "covariance_prior")
    if array.shape != shape:
        raise ValueError(
            f"`covariance_prior` must have shape {shape} for "
            f"covariance_type={cov.name!r}; received an array of shape "
            f"{array.shape}."
        )
    if not cov.is_positive_definite(array):
        raise ValueError(
            "`covariance_prior` must be a valid covariance for "
            f"covariance_type={cov.name!r} (symmetric positive definite "
            "matrix, or positive variances); received "
            f"covariance_prior={_validation.describe(value)}."
        )
    return array


def priors_from_data(x, n_components, covariance_type, **priors):
    """:func:`resolve_priors` with the data-dependent defaults taken from
    in-memory ``x [N, D]`` (two passes: the mean, then the moments around
    it). ``priors``: the keyword arguments of :func:`resolve_priors`."""
    x = tf.convert_to_tensor(x)
    shift = tf.reduce_mean(x, axis=0)
    mean, cov_prior = data_moments(
        data_statistics(x, shift, covariance_type), shift, covariance_type
    )
    priors.setdefault("dtype", x.dtype)
    return resolve_priors(n_components, int(x.shape[-1]), covariance_type,
                          mean.numpy(), cov_prior.numpy(), **priors)


# --------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------
def estimate_weight_concentration(nk, prior, weight_concentration_prior_type):
    """scikit-learn's ``_estimate_weights``: the posterior concentration
    from the counts ``nk [K]`` and ``alpha_0`` (``prior``)."""
    return _weight_prior(weight_concentration_prior_type).concentration(nk, prior)


def estimate_log_weights(weight_concentration, weight_concentration_prior_type):
    """scikit-learn's ``_estimate_log_weights``: ``E[log pi_k]`` ``[K]``
    (digamma terms; not normalised)."""
    return _weight_prior(weight_concentration_prior_type).log_weights(
        weight_concentration
    )


def mixture_weights(weight_concentration, weight_concentration_prior_type):
    """scikit-learn's ``weights_``: the posterior mean weights ``[K]``."""
    return _weight_prior(weight_concentration_prior_type).weights(weight_concentration)


# --------------------------------------------------------------------------
# E-step
# --------------------------------------------------------------------------
def _log_lambda(degrees_of_freedom, n_features, dtype):
    """``E[log |Lambda|]`` up to ``D log nu`` (scikit-learn's ``log_lambda``):
    ``D log 2 + sum_{i<D} digamma((nu - i) / 2)``."""
    i = tf.range(n_features, dtype=dtype)
    return n_features * _LOG_2 + tf.reduce_sum(
        tf.math.digamma(0.5 * (degrees_of_freedom[..., None] - i)), axis=-1
    )


def _log_prob_offset(state, n_features):
    """The per-component constant scikit-learn's ``_estimate_log_prob`` adds
    to ``log N(x | m_k, covariances_k)``: ``[K]``."""
    dtype = state.means.dtype
    dof = state.degrees_of_freedom
    return (-0.5 * n_features * tf.math.log(dof)
            + 0.5 * (_log_lambda(dof, n_features, dtype)
                     - n_features / state.mean_precision))


def estimate_log_prob(x, state, covariance_type, expand=False):
    """scikit-learn's ``_estimate_log_prob``: ``[N, K]``
    ``E[log N(x_n | mu_k, Lambda_k^-1)]`` (up to its constants)."""
    d = int(state.means.shape[-1])
    return gaussian.log_gaussian_prob(
        x, state.means, state.precisions_cholesky, covariance_type, expand=expand
    ) + _log_prob_offset(state, d)


def variational_log_resp(x, state, covariance_type, weight_concentration_prior_type,
                         expand=False):
    """The variational E-step of a batch (scikit-learn's
    ``_estimate_log_prob_resp`` of ``BayesianGaussianMixture``).

    Args:
        x: ``[N, D]``.
        state: a :class:`VariationalState`.
        covariance_type: its covariance type.
        weight_concentration_prior_type: "dirichlet_process" or
            "dirichlet_distribution".
        expand: the matrix-product Mahalanobis forms for "diag"/"spherical"
            (see :func:`keras_gmm.ops.gaussian.log_gaussian_prob`).

    Returns:
        ``(log_resp [N, K], log_prob_norm [N])``: ``log_prob_norm`` is the
        logsumexp over components of ``E[log pi_k] + E[log N_k(x)]``.
    """
    d = int(state.means.shape[-1])
    log_weights = estimate_log_weights(
        state.weight_concentration, weight_concentration_prior_type
    ) + _log_prob_offset(state, d)
    return gaussian.log_responsibilities(
        x, log_weights, state.means, state.precisions_cholesky, covariance_type,
        expand=expand,
    )


class VariationalStats(NamedTuple):
    """Plain sums over rows (a batch, the data or all replicas).

    Attributes:
        stats: :class:`keras_gmm.ops.em.Stats` around the shift (the current
            posterior means).
        log_prob_norm_sum: ``sum_n log_prob_norm_n`` (scikit-learn's E-step
            value; not part of the Bayesian bound, kept for scoring).
        resp_log_resp_sum: ``sum_nk r_nk log r_nk`` (the entropy term of the
            lower bound).
    """

    stats: em.Stats
    log_prob_norm_sum: tf.Tensor
    resp_log_resp_sum: tf.Tensor


def zero_statistics(n_components, n_features, covariance_type, dtype=tf.float32):
    """A :class:`VariationalStats` of zeros, the start of an accumulation."""
    return VariationalStats(
        em.zero_statistics(n_components, n_features, covariance_type, dtype),
        tf.zeros((), dtype), tf.zeros((), dtype),
    )


def add_statistics(a, b):
    """Element-wise sum of two :class:`VariationalStats`."""
    return VariationalStats(em.add_statistics(a.stats, b.stats),
                            a.log_prob_norm_sum + b.log_prob_norm_sum,
                            a.resp_log_resp_sum + b.resp_log_resp_sum)


def batch_statistics(x, state, covariance_type, weight_concentration_prior_type,
                     fast=True, mask=None):
    """Variational E-step and statistics of one batch, around the current
    posterior means: the unit of work of a pass (chunk, batch or replica).

    Args:
        x: ``[N, D]``.
        state: the current :class:`VariationalState`.
        covariance_type, weight_concentration_prior_type: as the state's.
        fast: as :func:`keras_gmm.ops.em.batch_statistics` ("diag"/
            "spherical": matrix-product forms, in float64 when the data's
            dtype is not accurate enough for them).
        mask: optional ``[N]`` 0/1 row weights (0: padding, left out of every
            sum).

    Returns:
        A :class:`VariationalStats` in the dtype of ``x``.
    """
    cov = covariance.get(covariance_type)
    dtype = x.dtype

    def run(compute_dtype, expand):
        xc = tf.cast(x, compute_dtype)
        st = tf.nest.map_structure(lambda t: tf.cast(t, compute_dtype), state)
        log_resp, log_prob = variational_log_resp(
            xc, st, cov, weight_concentration_prior_type, expand=expand
        )
        resp = tf.exp(log_resp)
        if mask is not None:
            m = tf.cast(mask, compute_dtype)
            resp, log_prob = resp * m[:, None], log_prob * m
        stats = em.sufficient_statistics(xc, resp, st.means, cov, expand=expand)
        # 0 log 0 = 0 (a responsibility that underflows, a masked row)
        out = VariationalStats(stats, tf.reduce_sum(log_prob),
                               tf.reduce_sum(tf.math.multiply_no_nan(log_resp, resp)))
        return tf.nest.map_structure(lambda t: tf.cast(t, dtype), out)

    # The same rule as em.batch_statistics (its threshold, its condition).
    if not fast or not cov.expandable:
        return run(dtype, expand=False)
    if dtype == tf.float64:
        return run(dtype, expand=True)
    kappa = gaussian.expansion_condition(
        tf.cast(state.means, dtype), tf.cast(state.precisions_cholesky, dtype), cov
    )
    accurate = kappa * _eps(dtype) <= em.EXPANSION_RTOL
    return tf.cond(accurate, lambda: run(dtype, True), lambda: run(tf.float64, True))


# --------------------------------------------------------------------------
# M-step
# --------------------------------------------------------------------------
def _wishart(nk, xk, sk, mean_precision, priors, cov):
    """scikit-learn's ``_estimate_wishart_*``: ``(degrees_of_freedom,
    covariances)`` from ``nk`` (with its ``10 eps``), the means ``xk`` and
    covariances ``sk`` (``reg_covar`` included) of the data."""
    k, d = int(xk.shape[0]), int(xk.shape[1])
    dtype = xk.dtype
    zero = tf.zeros((), dtype)
    # W_0^-1 as the scatter of one pseudo-observation per component
    prior_scale = tf.broadcast_to(priors.covariance,
                                  cov.precisions_cholesky_shape(k, d))
    prior_term = cov.scatter_from_covariances(tf.ones_like(nk), prior_scale, zero, d)
    data_term = cov.scatter_from_covariances(nk, sk, zero, d)  # N_k S_k
    # N_k beta_0 / beta_k (xbar_k - m_0)(xbar_k - m_0)^T: the prior mean as a
    # weighted point, around xbar_k
    mean_term = em.sufficient_statistics(
        priors.mean[None, :], (nk * priors.mean_precision / mean_precision)[None, :],
        xk, cov,
    ).sum_dxdx
    dof = priors.degrees_of_freedom + cov.pooled_counts(nk)
    covariances = cov.covariances_from_scatter(
        prior_term + data_term + mean_term, tf.broadcast_to(dof, [k]), d, zero
    )
    return dof, covariances


def _state_from_gaussian_parameters(nk, xk, sk, priors, cov, weight_prior, check):
    priors = Priors(*(tf.cast(p, xk.dtype) for p in priors))
    concentration = weight_prior.concentration(nk, priors.weight_concentration)
    mean_precision = priors.mean_precision + nk
    means = (priors.mean_precision * priors.mean + nk[:, None] * xk) / (
        mean_precision[:, None]
    )
    dof, covariances = _wishart(nk, xk, sk, mean_precision, priors, cov)
    if check:
        prec_chol = em.precisions_cholesky_from_covariances(covariances, cov)
    else:
        prec_chol = cov.precisions_cholesky_from_covariances(covariances)
    return VariationalState(concentration, mean_precision, means, dof, covariances,
                            prec_chol)


def variational_m_step(stats, shift, priors, covariance_type, reg_covar,
                       weight_concentration_prior_type, check=True):
    """scikit-learn's ``BayesianGaussianMixture._m_step`` from statistics.

    ``nk, xk, sk`` are :func:`keras_gmm.ops.em.estimate_gaussian_parameters`
    of the totals (scikit-learn's ``_estimate_gaussian_parameters``), then::

        weight_concentration  (1 + N_k, alpha_0 + sum_{j>k} N_j)  or  alpha_0 + N_k
        mean_precision        beta_k = beta_0 + N_k
        means                 (beta_0 m_0 + N_k xbar_k) / beta_k
        degrees_of_freedom    nu_k = nu_0 + N_k      (tied: nu_0 + N / K)
        covariances           (W_0^-1 + N_k S_k
                               + N_k beta_0 / beta_k (xbar_k - m_0)(xbar_k - m_0)^T) / nu_k

    (tied: ``W_0^-1 + (N S + sum_k ...) / K`` over ``nu``; diag: the
    diagonals; spherical: the mean over features of the diagonals).

    Args:
        stats: :class:`keras_gmm.ops.em.Stats` summed over the data.
        shift: ``[K, D]`` the shift they were taken around.
        priors: :class:`Priors`.
        covariance_type: a covariance type.
        reg_covar: added to the diagonal of the data covariances ``S_k``.
        weight_concentration_prior_type: "dirichlet_process" or
            "dirichlet_distribution".
        check: raise (eagerly; an assertion in a graph, none under XLA) if a
            covariance is not positive definite, as
            :func:`keras_gmm.ops.em.m_step`; False: NaN factors instead.

    Returns:
        The new :class:`VariationalState`.
    """
    cov = covariance.get(covariance_type)
    nk, xk, sk = em.estimate_gaussian_parameters(stats, shift, cov, reg_covar)
    return _state_from_gaussian_parameters(
        nk, xk, sk, priors, cov, _weight_prior(weight_concentration_prior_type), check
    )


def initial_state_from_resp(x, resp, priors, covariance_type, reg_covar,
                            weight_concentration_prior_type):
    """scikit-learn's ``BayesianGaussianMixture._initialize(X, resp)``: the
    M-step of responsibilities ``resp [N, K]`` (two passes over ``x``: the
    weighted means, then the statistics around them)."""
    resp = tf.cast(resp, x.dtype)
    nk = tf.reduce_sum(resp, axis=0) + 10.0 * _eps(x.dtype)
    shift = tf.matmul(resp, x, transpose_a=True) / nk[:, None]
    stats = em.sufficient_statistics(x, resp, shift, covariance_type)
    return variational_m_step(stats, shift, priors, covariance_type, reg_covar,
                              weight_concentration_prior_type)


# --------------------------------------------------------------------------
# lower bound
# --------------------------------------------------------------------------
def lower_bound(state, resp_log_resp_sum, covariance_type,
                weight_concentration_prior_type):
    """scikit-learn's ``_compute_lower_bound`` (constants dropped, as there)::

        - sum_nk r_nk log r_nk - sum_k log B(W_k, nu_k) - log C(weights)
        - D/2 sum_k log beta_k

    with ``log B`` the Wishart normalisation of the (normalised) precisions
    (tied: ``K`` times the shared one's) and ``log C`` the Dirichlet's (or
    ``-sum_k log Beta(a_k, b_k)`` for the Dirichlet process).

    Args:
        state: the :class:`VariationalState` after the M-step.
        resp_log_resp_sum: ``sum_nk r_nk log r_nk`` of the E-step before it
            (:attr:`VariationalStats.resp_log_resp_sum`).
        covariance_type, weight_concentration_prior_type: the state's.

    Returns:
        A scalar in the state's dtype.
    """
    cov = covariance.get(covariance_type)
    k, d = int(state.means.shape[0]), int(state.means.shape[1])
    dtype = state.means.dtype
    dof = state.degrees_of_freedom
    log_det = cov.log_det(state.precisions_cholesky, d) - 0.5 * d * tf.math.log(dof)
    i = tf.range(d, dtype=dtype)
    log_wishart_norm = -(
        dof * log_det + dof * d * 0.5 * _LOG_2
        + tf.reduce_sum(tf.math.lgamma(0.5 * (dof[..., None] - i)), axis=-1)
    )
    log_wishart = tf.reduce_sum(tf.broadcast_to(log_wishart_norm, [k]))
    log_norm_weight = _weight_prior(weight_concentration_prior_type).log_norm(
        state.weight_concentration
    )
    return (-tf.cast(resp_log_resp_sum, dtype) - log_wishart - log_norm_weight
            - 0.5 * d * tf.reduce_sum(tf.math.log(state.mean_precision)))


# --------------------------------------------------------------------------
# loops
# --------------------------------------------------------------------------
def variational_pass(totals, state, priors, covariance_type, reg_covar,
                     weight_concentration_prior_type, check=True):
    """The end of one pass: ``(bound, new state)`` from the
    :class:`VariationalStats` totals of the E-step of ``state`` (the step a
    streamed or distributed loop makes after its all-reduce)."""
    new = variational_m_step(totals.stats, state.means, priors, covariance_type,
                             reg_covar, weight_concentration_prior_type, check=check)
    bound = lower_bound(new, totals.resp_log_resp_sum, covariance_type,
                        weight_concentration_prior_type)
    return bound, new


def variational_iterations(
    x, state, priors, covariance_type, weight_concentration_prior_type, reg_covar,
    max_iter, tol, chunk_size=None, prev_bound=-np.inf, iter_limit=None,
    features=None,
):
    """Up to ``max_iter`` variational iterations over in-memory data, in one
    graph (scikit-learn's ``BayesianGaussianMixture.fit`` loop, from an
    initial state): :func:`keras_gmm.ops.em_driver.iterate` over passes that
    walk ``x`` in chunks (the last one padded and masked), as
    :func:`keras_gmm.ops.em_driver.em_iterations`. Meant for
    ``tf.function(jit_compile=True)``.

    Args:
        x: ``[N, D]`` data (static shape).
        state: the initial :class:`VariationalState` (e.g.
            :func:`initial_state_from_resp`).
        priors: :class:`Priors`.
        covariance_type, weight_concentration_prior_type: static.
        reg_covar: added to the data covariances' diagonals.
        max_iter: Python int, the most iterations.
        tol: stop when the lower bound changes by less than ``tol``.
        chunk_size: rows per chunk (default
            :func:`keras_gmm.ops.em.default_chunk_size`).
        prev_bound: the bound before the first iteration (to continue a run).
        iter_limit: a scalar tensor ``<= max_iter`` (run at most this many
            iterations now).
        features: optional ``(phi [N, F], center)`` of ``x``
            (:func:`keras_gmm.ops.em_driver.quadratic_features`, "full"):
            each pass whose expanded form is accurate
            (``eps * kappa <= EXPANSION_RTOL``) runs on them, two matrix
            products a chunk (:func:`keras_gmm.ops.em.
            quadratic_feature_statistics`), the others on ``x``.

    Returns:
        ``(state, bounds [max_iter], n_iter, converged, failed)`` as
        :func:`keras_gmm.ops.em_driver.iterate`: ``bounds[i]`` is
        scikit-learn's lower bound of iteration ``i + 1``.

    Example (two blobs, four components: the Dirichlet process empties two):

    >>> import numpy as np, tensorflow as tf
    >>> rng = np.random.default_rng(0)
    >>> x = tf.constant(np.r_[rng.normal(size=(60, 2)),
    ...                       rng.normal(size=(60, 2)) + 6.0])
    >>> resp = tf.one_hot(tf.range(120) // 30, 4, dtype=tf.float64)
    >>> priors = priors_from_data(x, 4, "diag")
    >>> state = initial_state_from_resp(x, resp, priors, "diag", 1e-6,
    ...                                 "dirichlet_process")
    >>> state, bounds, n_iter, converged, failed = variational_iterations(
    ...     x, state, priors, "diag", "dirichlet_process", 1e-6, 200, 1e-3)
    >>> w = mixture_weights(state.weight_concentration, "dirichlet_process")
    >>> bool(converged), int(tf.reduce_sum(tf.cast(w > 0.05, tf.int32)))
    (True, 2)
    """
    n, d = int(x.shape[0]), int(x.shape[1])
    k = int(state.means.shape[0])
    dtype = x.dtype
    if chunk_size is None:
        chunk_size = em.default_chunk_size(k, d, covariance_type)
    chunk_size = min(int(chunk_size), n)
    n_chunks = -(-n // chunk_size)
    state = tf.nest.map_structure(lambda t: tf.cast(t, dtype), state)
    priors = Priors(*(tf.cast(p, dtype) for p in priors))

    def chunk(data, i):
        # as em_iterations: the last chunk repeats the final row, masked out
        rows = i * chunk_size + tf.range(chunk_size)
        if n % chunk_size == 0:
            return tf.gather(data, rows), None
        return tf.gather(data, tf.minimum(rows, n - 1)), tf.cast(rows < n, dtype)

    def exact_totals(current):
        def body(i, totals):
            rows, mask = chunk(x, i)
            s = batch_statistics(rows, current, covariance_type,
                                 weight_concentration_prior_type, mask=mask)
            return i + 1, add_statistics(totals, s)

        zero = zero_statistics(k, d, covariance_type, dtype)
        return tf.while_loop(lambda i, _: i < n_chunks, body, (0, zero))[1]

    def feature_totals(current, a, b):
        phi, center = features

        def body(i, totals):
            rows, mask = chunk(phi, i)
            part = em.quadratic_feature_statistics(rows, mask, a, b, entropy=True)
            return i + 1, tuple(u + v for u, v in zip(totals, part))

        f = int(phi.shape[-1])
        zero = (tf.zeros([k], dtype), tf.zeros([k, f], dtype), tf.zeros((), dtype),
                tf.zeros((), dtype))
        nk, sums, log_prob, resp_log_resp = tf.while_loop(
            lambda i, _: i < n_chunks, body, (0, zero))[1]
        stats = em.statistics_of_quadratic_sums(nk, sums, current.means, center,
                                                covariance_type)
        return VariationalStats(stats, log_prob, resp_log_resp)

    def one_pass(current):
        if features is None:
            totals = exact_totals(current)
        else:
            # variational_log_resp's log-joint, as one product on phi
            log_weights = estimate_log_weights(
                current.weight_concentration, weight_concentration_prior_type
            ) + _log_prob_offset(current, d)
            log_det = covariance.get(covariance_type).log_det(
                current.precisions_cholesky, d)
            a, b, kappa = em.quadratic_log_joint_terms(
                log_weights, log_det, current.means, current.precisions_cholesky,
                tf.cast(features[1], dtype), covariance_type)
            totals = tf.cond(kappa * _eps(dtype) <= em.EXPANSION_RTOL,
                             lambda: feature_totals(current, a, b),
                             lambda: exact_totals(current))
        return variational_pass(totals, current, priors, covariance_type, reg_covar,
                                weight_concentration_prior_type)

    return em_driver.iterate(one_pass, state, max_iter, tol, prev_bound, iter_limit)
