"""KL terms between a diagonal Gaussian posterior and a Gaussian-mixture prior.

The math of a VAE whose latent prior is a mixture (VaDE, Jiang et al. 2017):
an encoder gives ``q(z | x) = N(z; m, diag(exp(s)))`` (``m = z_mean``, ``s =
z_log_var``, ``[..., D]``) and the prior is ``p(z, c) = pi_c N(z; mu_c,
Sigma_c)`` with ``pi = softmax(logits)`` ``[K]``, ``mu`` ``[K, D]`` and
``Sigma_c`` diagonal ("diag") or full ("full"), given by its precision
Cholesky factors ``P_c`` in scikit-learn's layout (``Lambda_c = Sigma_c^-1 =
P_c P_c^T``; ``[K, D]`` or ``[K, D, D]``, see :mod:`keras_gmm.ops.covariance`;
:func:`precisions_cholesky_of_log_variances` makes the "diag" factors
``exp(-v / 2)`` of log-variances ``v``). With ``q(z, c | x) = q(z | x) q(c |
x)``:

- :func:`expected_log_prob`: ``l_c = E_q(z|x)[log N(z; mu_c, Sigma_c)]
  = log N(m; mu_c, Sigma_c) - 1/2 tr(Lambda_c diag(exp(s)))``, the trace
  ``sum_d exp(s_d) Lambda_cdd`` (the precision's diagonal, :meth:`keras_gmm.
  ops.covariance.CovarianceType.log_precision_diagonal`), the density
  through :func:`keras_gmm.ops.gaussian.log_gaussian_prob`.
- :func:`log_responsibilities`: ``log gamma_c = log pi_c + l_c -
  logsumexp_k(log pi_k + l_k)``, the ``q(c | x)`` that maximises the ELBO for
  the given ``q(z | x)`` (VaDE's ``gamma = p(c | z)`` evaluated in expectation
  over ``q(z | x)``; it equals ``p(c | m)`` as ``exp(s) -> 0``). Log space:
  rows are finite and sum to one for any finite inputs.
- :func:`vade_kl`: the closed-form ``KL(q(z, c | x) || p(z, c))`` of VaDE,
  ``sum_c gamma_c (log gamma_c - log pi_c - l_c) + E_q[log q(z | x)]`` with
  ``E_q[log q(z | x)] = -D/2 (log 2 pi + 1) - 1/2 sum_d s_d`` (minus the
  entropy of ``q(z | x)``).
- :func:`mc_kl`: the one-sample Monte Carlo estimate ``log q(z | x) - log
  p(z)`` of ``KL(q(z | x) || p(z))`` at a sample ``z``, with ``p(z)`` the
  mixture marginal (:func:`keras_gmm.ops.gaussian.log_mixture_prob`).

Since ``KL(q(z, c) || p(z, c)) = KL(q(z) || p(z)) + E_q(z)[KL(q(c) || p(c |
z))]``, the VaDE term is never below the expectation of the Monte Carlo one.

Large posterior variances. Write ``v_cd = -log Lambda_cdd`` (the
log-variances for "diag"). The trace term ``1/2 sum_d exp(s_d - v_cd)``
overflows float32 once ``s_d - v_cd`` exceeds about 88, although the
responsibilities stay well defined: the part of it shared by all components
cancels in ``gamma``. So the terms are computed relative to the component
variances' maximum ``v*_d = max_c v_cd``: ``exp(s_d - v_cd) = exp(s_d -
v*_d) + exp(s_d - v_cd) (-expm1(v_cd - v*_d))``, the first part common to all
components (it leaves ``gamma`` unchanged), the second zero for the widest
component. Beyond ``MAX_LOG_VARIANCE_RATIO`` (50: a posterior variance ``5e21``
times the prior's), ``exp`` is continued linearly with its value and slope
there, so the KL stays finite (a huge value, as it should be, with a gradient
that still pulls ``z_log_var`` down) instead of ``inf``, and ``gamma`` finite;
below it the results are the exact formulas.

All functions are pure TensorFlow, take tensors of one floating dtype and
broadcast leading dimensions of the posterior (``[..., D]``) against a fixed
prior (``[K]``, ``[K, D]``, ``[K, D, D]``).

Reference:
    Jiang, Zheng, Tan, Tang and Zhou, "Variational Deep Embedding: An
    Unsupervised and Generative Approach to Clustering", IJCAI 2017.
"""

import math

import tensorflow as tf

from keras_gmm.ops import covariance, gaussian

__all__ = [
    "MAX_LOG_VARIANCE_RATIO",
    "PRIOR_COVARIANCE_TYPES",
    "precisions_cholesky_of_log_variances",
    "expected_log_prob",
    "log_responsibilities",
    "negative_entropy",
    "vade_kl",
    "log_posterior_prob",
    "mc_kl",
]

_LOG_2PI = math.log(2.0 * math.pi)


#: Log of the posterior-to-prior variance ratio beyond which the trace term's
#: ``exp`` is continued linearly (its value and slope there): finite results.
MAX_LOG_VARIANCE_RATIO = 50.0

#: The prior covariance types of these terms: per-component diagonal or full.
PRIOR_COVARIANCE_TYPES = ("diag", "full")


def _continued_exp(x):
    """``exp(x)`` up to ``MAX_LOG_VARIANCE_RATIO``, then the tangent line there
    (C1, increasing, finite for any finite ``x`` below about 1e15)."""
    c = tf.cast(MAX_LOG_VARIANCE_RATIO, x.dtype)
    return tf.exp(tf.minimum(x, c)) * (1.0 + tf.nn.relu(x - c))


def _trace_terms(z_log_var, log_precision_diagonal):
    """The trace term ``1/2 sum_d exp(s_d + w_cd)`` (``w = log Lambda_dd``,
    ``[K, D]``) split as ``common [...]`` (shared by all components) plus
    ``relative [..., K]`` (>= 0, see the module docstring): ``(common,
    relative)``."""
    u = -log_precision_diagonal  # the "log-variances" of the trace term
    widest = tf.reduce_max(u, axis=0)  # [D]
    s = z_log_var[..., None, :]  # [..., 1, D]
    common = 0.5 * tf.reduce_sum(_continued_exp(z_log_var - widest), axis=-1)
    relative = 0.5 * tf.reduce_sum(
        _continued_exp(s - u) * -tf.math.expm1(u - widest), axis=-1,
    )
    return common, relative


def _checked(covariance_type):
    return covariance.get(covariance.check(covariance_type,
                                           supported=PRIOR_COVARIANCE_TYPES))


def _expected_log_prob_parts(z_mean, z_log_var, means, precisions_cholesky,
                             covariance_type):
    """:func:`expected_log_prob` as ``shifted [..., K] - common[..., None]``:
    ``(shifted, common)``, ``common`` the trace part shared by all
    components (it cancels in the responsibilities)."""
    cov = _checked(covariance_type)
    log_density = gaussian.log_gaussian_prob(
        z_mean, means, precisions_cholesky, cov.name
    )
    common, relative = _trace_terms(
        z_log_var, cov.log_precision_diagonal(precisions_cholesky, z_mean.shape[-1])
    )
    return log_density - relative, common


def _log_joint(z_mean, z_log_var, logits, means, precisions_cholesky,
               covariance_type):
    """``log pi_c + l_c = shifted_c - common``: ``(shifted [..., K], common
    [...])``."""
    shifted, common = _expected_log_prob_parts(
        z_mean, z_log_var, means, precisions_cholesky, covariance_type
    )
    return tf.nn.log_softmax(logits, axis=-1) + shifted, common


def precisions_cholesky_of_log_variances(log_variances):
    """``1 / stddev = exp(-v / 2)``: the "diag" precision Cholesky factor of
    log-variances ``v``."""
    return tf.exp(-0.5 * log_variances)


def expected_log_prob(z_mean, z_log_var, means, precisions_cholesky,
                      covariance_type="diag"):
    """``E_{N(z; m, exp(s))}[log N(z; mu_c, Sigma_c)]`` per component.

    Args:
        z_mean, z_log_var: ``[..., D]`` posterior means and log-variances.
        means: ``[K, D]`` prior component means.
        precisions_cholesky: the prior's precision Cholesky factors in
            scikit-learn's layout: ``[K, D]`` ("diag") or ``[K, D, D]``
            ("full").
        covariance_type: "diag" or "full".

    Returns:
        ``[..., K]``: ``log N(m; mu_c, Sigma_c) - 1/2 sum_d exp(s_d)
        Lambda_cdd`` (the ``exp`` continued linearly beyond
        ``MAX_LOG_VARIANCE_RATIO``).
    """
    shifted, common = _expected_log_prob_parts(
        z_mean, z_log_var, means, precisions_cholesky, covariance_type
    )
    return shifted - common[..., None]


def log_responsibilities(z_mean, z_log_var, logits, means, precisions_cholesky,
                         covariance_type="diag"):
    """``log q(c | x)`` ``[..., K]``: softmax over ``log pi_c + l_c`` (log space).

    ``l_c`` is :func:`expected_log_prob`; ``logits`` ``[K]`` are the prior's
    unnormalised log mixture weights.
    """
    # The trace part common to all components cancels in the softmax.
    shifted, _ = _log_joint(z_mean, z_log_var, logits, means, precisions_cholesky,
                            covariance_type)
    # log_softmax subtracts the row maximum before the log-sum: with
    # log-densities of -1e13 a plain ``log_joint - logsumexp`` would round
    # the log K of K tied components away.
    return tf.nn.log_softmax(shifted, axis=-1)


def negative_entropy(z_log_var):
    """``E_q[log q(z | x)] = -D/2 (log 2 pi + 1) - 1/2 sum_d s_d``: ``[...]``."""
    d = z_log_var.shape[-1]
    return -0.5 * (d * (_LOG_2PI + 1.0) + tf.reduce_sum(z_log_var, axis=-1))


def vade_kl(z_mean, z_log_var, logits, means, precisions_cholesky,
            covariance_type="diag"):
    """VaDE's closed-form ``KL(q(z, c | x) || p(z, c))``: ``[...]``.

    The VaDE formula is ``sum_c gamma_c (log gamma_c - log pi_c - l_c) +
    E_q[log q(z | x)]``. With ``gamma`` from :func:`log_responsibilities`,
    ``log gamma_c - log pi_c - l_c = -logsumexp_k(log pi_k + l_k)`` for every
    ``c``, so the sum is computed as that one logsumexp: the same value, with
    no ``0 * log 0`` where a ``gamma_c`` underflows, and finite for any
    finite inputs (see the module docstring for large ``z_log_var``).

    Returns:
        ``(kl [...], log_gamma [..., K])``.
    """
    shifted, common = _log_joint(z_mean, z_log_var, logits, means,
                                 precisions_cholesky, covariance_type)
    log_evidence = tf.reduce_logsumexp(shifted, axis=-1) - common
    kl = negative_entropy(z_log_var) - log_evidence
    return kl, tf.nn.log_softmax(shifted, axis=-1)


def log_posterior_prob(z, z_mean, z_log_var):
    """``log q(z | x) = log N(z; m, diag(exp(s)))``: ``[...]``."""
    log_prob = gaussian.log_gaussian_prob(
        z,
        z_mean[..., None, :],
        precisions_cholesky_of_log_variances(z_log_var)[..., None, :],
        "diag",
    )
    return log_prob[..., 0]


def mc_kl(z, z_mean, z_log_var, logits, means, precisions_cholesky,
          covariance_type="diag"):
    """One-sample Monte Carlo ``log q(z | x) - log p(z)`` at ``z``: ``[...]``.

    ``p(z) = sum_c pi_c N(z; mu_c, Sigma_c)``, by logsumexp. Its expectation
    over ``z ~ q(z | x)`` is ``KL(q(z | x) || p(z))``.
    """
    log_prior = gaussian.log_mixture_prob(
        z,
        tf.nn.log_softmax(logits, axis=-1),
        means,
        precisions_cholesky,
        _checked(covariance_type).name,
    )
    return log_posterior_prob(z, z_mean, z_log_var) - log_prior
