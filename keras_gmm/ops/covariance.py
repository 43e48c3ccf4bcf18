"""One object per covariance type: every rule of a covariance type, once.

Every mixture in keras_gmm stores, per component, its mean and the Cholesky
factor of its precision in scikit-learn's layout (``precisions_cholesky_``):
an upper-triangular ``P`` with ``precision = P @ P.T``, hence
``covariance = inv(P.T) @ inv(P)`` and the covariance Cholesky factor
``L = inv(P.T)`` (lower triangular). With it::

    log N(x | mu, Sigma) = -D/2 log(2 pi) + log|P| - 1/2 ||P.T (x - mu)||^2,
    log|P| = sum(log(diag(P))),

so no inverse and no determinant is ever formed.

Shapes by covariance type (leading batch dimensions ``...`` are allowed for
the Gaussian math, so the same objects serve a mixture density network, whose
parameters differ per sample, and a fitted mixture):

============  ======================  =====================  ==================
type          precisions_cholesky     covariances (sklearn)  flat head scales
============  ======================  =====================  ==================
"full"        [..., K, D, D] upper    [K, D, D]              K * D(D+1)/2
"tied"        [..., D, D] (shared)    [D, D]                 D(D+1)/2
"diag"        [..., K, D] 1/stddev    [K, D] variances       K * D
"spherical"   [..., K] 1/stddev       [K] variances          K
============  ======================  =====================  ==================

Callers ask the object (``covariance.get(covariance_type)``) and never compare
a covariance type's name: the per-type table of scikit-learn's functions is
written here once. "tied" is "full" with one factor shared by the components,
so its class derives from "full" and overrides only what sharing changes.

Example:

>>> get("diag").precisions_cholesky_shape(3, 2)
(3, 2)
>>> get("tied").num_parameters(3, 2)
3
>>> check("full", supported=("diag", "full"))
'full'
"""

import math

import numpy as np
import tensorflow as tf

from keras_gmm import _validation

__all__ = ["COVARIANCE_TYPES", "CovarianceType", "get", "check"]

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

LOG_2PI = math.log(2.0 * math.pi)


# --------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------
def _add_to_diagonal(matrix, value):
    return tf.linalg.set_diag(matrix, tf.linalg.diag_part(matrix) + value)


def _flip(matrix):
    return tf.reverse(matrix, axis=[-2, -1])


def _unflatten_last(x, shape):
    """Reshape the last axis of ``x`` into ``shape`` (leading dims kept)."""
    lead = x.shape[:-1]
    if lead.is_fully_defined():
        return tf.reshape(x, lead.as_list() + list(shape))
    return tf.reshape(x, tf.concat([tf.shape(x)[:-1], shape], axis=0))


def positive_scale(raw, min_scale):
    """``softplus(raw) + min_scale``: the positive scale of a flat head."""
    return tf.math.softplus(raw) + tf.cast(min_scale, raw.dtype)


def _inverse_softplus(y):
    """NumPy ``softplus^-1(y) = log(expm1(y))`` for ``y > 0``, stable for
    small and large ``y``."""
    y = np.asarray(y, np.float64)
    return y + np.log(-np.expm1(-y))


def _tril_gather_indices(event_size):
    """Gather indices that place [diag (D), strict lower (row-major), 0] into a
    ``D x D`` lower-triangular matrix (flattened)."""
    d = event_size
    zero_slot = d * (d + 1) // 2
    idx = np.full((d, d), zero_slot, dtype=np.int32)
    for i in range(d):
        idx[i, i] = i
        for j in range(i):
            idx[i, j] = d + i * (i - 1) // 2 + j
    return idx.reshape(-1)


def _precision_cholesky_from_tril(raw, event_size, min_scale):
    """raw ``[..., D(D+1)/2]`` -> upper-triangular ``P = W.T`` ``[..., D, D]``.

    ``W`` (lower) holds ``1 / (softplus(raw_diag) + min_scale)`` on its diagonal
    and the raw strictly-lower entries below it; ``W = inv(L)`` with ``L`` the
    covariance Cholesky factor, whose diagonal is therefore
    ``softplus(raw_diag) + min_scale``.
    """
    d = event_size
    diag = tf.math.reciprocal(positive_scale(raw[..., :d], min_scale))
    zeros = tf.zeros_like(raw[..., :1])
    vec = tf.concat([diag, raw[..., d:], zeros], axis=-1)
    w = tf.gather(vec, _tril_gather_indices(d), axis=-1)
    w = _unflatten_last(w, [d, d])
    return tf.linalg.matrix_transpose(w)


def gather_component(tensor, index, batch_rank):
    """``tensor[..., index, ...]`` along the component axis ``batch_rank``."""
    return tf.gather(tensor, index, axis=batch_rank, batch_dims=batch_rank)


# --------------------------------------------------------------------------
# the types
# --------------------------------------------------------------------------
class CovarianceType:
    """What one covariance type is: shapes, counts and its Gaussian math.

    Subclasses: :class:`Full`, :class:`Tied` (a shared "full"),
    :class:`Diag`, :class:`Spherical`. Obtain them with :func:`get`.

    Attributes:
        name: the type's name ("full", "tied", "diag", "spherical").
        shared: True when one factor serves every component ("tied").
        matrix: True when the factor is a ``D x D`` matrix ("full", "tied").
        expandable: True when the Mahalanobis term and second moments have an
            expanded matrix-product form whose accuracy must be checked
            (:meth:`expansion_condition`): "diag" and "spherical".
        quadratic_features: True when an EM pass over large in-memory data
            runs on precomputed quadratic features of the rows
            (:meth:`quadratic_features_of`): "full", whose E- and M-step
            become one matrix product each (see
            :func:`keras_gmm.ops.em.quadratic_feature_statistics`).
    """

    name = None
    shared = False
    matrix = False
    expandable = False
    quadratic_features = False

    def __repr__(self):
        return f"covariance.get({self.name!r})"

    # ---------------------------------------------------------- shapes, counts
    def precisions_cholesky_shape(self, num_components, event_size):
        """Shape of an un-batched factor (and of sklearn's covariances_)."""
        raise NotImplementedError

    def second_moment_shape(self, num_components, event_size):
        """Shape of the second-moment statistics (``Stats.sum_dxdx``)."""
        return self.precisions_cholesky_shape(num_components, event_size)

    def num_parameters(self, num_components, event_size):
        """Free parameters of the covariances (scikit-learn's count)."""
        raise NotImplementedError

    def num_scale_params(self, num_components, event_size):
        """Scale parameters of a flat head (see :mod:`keras_gmm.mixture`)."""
        return self.num_parameters(num_components, event_size)

    def identity_precisions_cholesky(self, num_components, event_size):
        """Unit-covariance factors (NumPy), the initial value of a layer."""
        return np.ones(self.precisions_cholesky_shape(num_components, event_size))

    def component_shape(self, event_size):
        """Shape of one component's covariance in scikit-learn's layout (the
        layout without its component axis; "tied": the whole ``[D, D]``)."""
        return self.precisions_cholesky_shape(1, event_size)[1:]

    def pooled_counts(self, nk):
        """The counts behind each covariance estimate: ``nk [K]``, or their
        mean (a scalar) for one shared covariance."""
        return nk

    def factor_rank(self):
        """Rank of an un-batched factor."""
        return len(self.precisions_cholesky_shape(1, 1))

    # ------------------------------------------------------- Gaussian math
    def log_det(self, precisions_cholesky, event_size):
        """``log|P|`` per component, ``[..., K]`` (``[..., 1]`` if shared),
        ``= -1/2 log|covariance|``."""
        raise NotImplementedError

    def sq_mahalanobis(self, diff, precisions_cholesky):
        """``||P.T diff||^2`` for ``diff [..., K, D]``: ``[..., K]``."""
        raise NotImplementedError

    def sq_mahalanobis_gemm(self, x, means, precisions_cholesky):
        """The same for un-batched ``x [N, D]``, ``means [K, D]`` as matrix
        products (after centring on the mean of the means): ``[N, K]``."""
        raise NotImplementedError

    def expansion_condition(self, means, precisions_cholesky):
        """``kappa``, the error factor of the expanded forms (1 if none).

        ``kappa = max_kd (1 + ((mu_kd - ref_d) p_kd)^2)`` where ``ref`` is the
        mean of the means; the expanded Mahalanobis term and second moments
        have a relative error of about ``eps * kappa``.
        """
        return tf.ones((), means.dtype)

    # ------------------------------------ quadratic features ("full" EM)
    def num_quadratic_features(self, event_size):
        """``F``, the width of :meth:`quadratic_features_of`."""
        raise NotImplementedError

    def quadratic_features_of(self, xc):
        """``phi(x) [N, F]`` of centred rows ``xc = x - c [N, D]``: features in
        which every component's squared Mahalanobis distance is linear
        (:meth:`quadratic_weights`) and whose responsibility-weighted sums
        are the sufficient statistics (:meth:`moments_from_quadratic_sums`).
        Computed once per fit, they turn a pass into two matrix products."""
        raise NotImplementedError

    def quadratic_weights(self, means_c, precisions_cholesky):
        """``(W [F, K], q [K], kappa)`` with ``||P_k.T (x - mu_k)||^2 =
        phi(x) @ W[:, k] + q_k`` for ``means_c = mu - c``; ``kappa`` bounds the
        cancellation of that expanded form and of the moments recovered from
        it (relative error about ``eps * kappa``): ``1 + max_k a_k.T
        |Lambda_k| a_k`` with ``Lambda = P P.T`` and ``a_k = |mu_k - c| +
        s_k`` (``s_k`` the marginal standard deviations): the size of the
        terms for a point within a standard deviation of its mean, large for
        a component far from ``c`` or with strongly correlated features."""
        raise NotImplementedError

    def moments_from_quadratic_sums(self, nk, sums, shift_c):
        """``(sum_dx, sum_dxdx)`` around ``shift`` (:meth:`moments`' layout)
        from ``sums = resp.T @ phi [K, F]`` and ``nk = sum(resp) [K]``;
        ``shift_c = shift - c``."""
        raise NotImplementedError

    def select(self, precisions_cholesky, index, batch_rank):
        """The factor of component ``index`` (per batch element)."""
        return gather_component(precisions_cholesky, index, batch_rank)

    def per_component(self, value, num_components, event_rank):
        """``value`` with a component axis before its ``event_rank`` last
        axes: a shared ("tied") value is broadcast, others returned as is."""
        return value

    def initial_raw_scales(self, num_components, event_size, raw_scale):
        """Raw flat-head scale parameters (NumPy, ``[num_scale_params]``)
        whose scales all equal ``softplus(raw_scale) + min_scale``: every
        standard deviation equal, no correlation."""
        return np.full(self.num_scale_params(num_components, event_size), raw_scale)

    def scale_noise(self, z, precisions_cholesky):
        """``L @ z`` (``L = inv(P.T)``) for one selected component's factor:
        noise with that component's covariance. ``z [..., D]``."""
        raise NotImplementedError

    def covariance_cholesky(self, precisions_cholesky, event_size):
        """Lower Cholesky factor of each covariance: ``[..., K, D, D]``."""
        return tf.linalg.diag(self.stddevs(precisions_cholesky, event_size))

    def stddevs(self, precisions_cholesky, event_size):
        """Marginal standard deviations ``[..., K, D]`` (``[..., D]`` tied)."""
        raise NotImplementedError

    def log_precision_diagonal(self, precisions_cholesky, event_size):
        """``log Lambda_dd``, the log of the precision matrices' diagonal
        ``[..., K, D]`` (``[..., D]`` tied): minus the log variance of each
        feature given the others, and ``tr(Lambda S) = sum_d Lambda_dd s_d``
        for a diagonal ``S`` (the trace term of a KL against a diagonal
        Gaussian, :mod:`keras_gmm.ops.kl`)."""
        raise NotImplementedError

    def covariance_matrices(self, precisions_cholesky, event_size):
        """Covariance matrices ``L @ L.T``: ``[..., K, D, D]``."""
        chol = self.covariance_cholesky(precisions_cholesky, event_size)
        return tf.matmul(chol, chol, adjoint_b=True)

    # ------------------------------------------ scikit-learn's conversions
    def covariances(self, precisions_cholesky):
        """Covariances in scikit-learn's layout from precision factors."""
        return tf.math.reciprocal(tf.square(precisions_cholesky))

    def precisions(self, precisions_cholesky):
        """Precisions in scikit-learn's layout (``precisions_``)."""
        return tf.square(precisions_cholesky)

    def precisions_cholesky_from_covariances(self, covariances):
        """scikit-learn's ``_compute_precision_cholesky`` (NaN where a
        covariance is not positive definite: the caller checks)."""
        positive = covariances > 0
        return tf.where(
            positive,
            tf.math.rsqrt(tf.where(positive, covariances, tf.ones_like(covariances))),
            tf.constant(float("nan"), covariances.dtype),
        )

    def precisions_cholesky_from_precisions(self, precisions):
        """scikit-learn's ``_compute_precision_cholesky_from_precisions``."""
        return tf.sqrt(precisions)

    def is_positive_definite(self, precisions):
        """Whether NumPy ``precisions`` (scikit-learn's layout) are valid."""
        return bool(np.all(np.asarray(precisions) > 0))

    def marginal_variances(self, covariances, num_components, event_size):
        """``[K, D]`` variances of each component along each feature, from
        covariances in scikit-learn's layout."""
        raise NotImplementedError

    # ------------------------------------------------- EM statistics
    def moments(self, resp, x, shift, expand):
        """``(sum_dx [K, D], sum_dxdx)`` of centred data (see ops.em)."""
        raise NotImplementedError

    def scatter(self, nk, sum_dx, sum_dxdx, nk_eps, d):
        """Scatter around the new means ``shift + d`` from statistics around
        the shift (exact algebra; clipped at 0 where rounding could make a
        variance negative), in the layout of ``sum_dxdx``."""
        raise NotImplementedError

    def covariances_from_scatter(self, scatter, nk_eps, event_size, reg_covar):
        """M-step covariances: scatter / counts, ``reg_covar`` on the diagonal."""
        raise NotImplementedError

    def scatter_from_covariances(self, weights, covariances, reg_covar, event_size):
        """The inverse of :meth:`covariances_from_scatter` with ``nk = weights``
        (statistics in units of a fraction of the data)."""
        raise NotImplementedError

    def scatter_of_labels(self, dx, labels, num_components):
        """Scatter of hard-labelled residuals ``dx = x - means[labels]``."""
        raise NotImplementedError

    # ------------------------------------------------- mixtures
    def within(self, weights, per_component, event_rank):
        """``sum_k w_k X_k`` for ``X [..., K, *event]`` (``event_rank`` axes
        after the component axis): the within-component part of a mixture's
        covariance or variance. A shared ``X [..., *event]`` is returned as is."""
        w = weights
        for _ in range(event_rank):
            w = w[..., None]
        return tf.reduce_sum(w * per_component, axis=-1 - event_rank)

    def precisions_cholesky_from_raw(self, raw, num_components, event_size,
                                     min_scale):
        """A flat head's raw scale parameters ``[..., num_scale_params]`` ->
        precision factors (softplus + ``min_scale`` scales, see
        :mod:`keras_gmm.mixture`)."""
        raw = _unflatten_last(raw, [num_components, event_size])
        return tf.math.reciprocal(positive_scale(raw, min_scale))


class Full(CovarianceType):
    name = "full"
    matrix = True

    def precisions_cholesky_shape(self, num_components, event_size):
        return (num_components, event_size, event_size)

    def num_parameters(self, num_components, event_size):
        return num_components * event_size * (event_size + 1) // 2

    def identity_precisions_cholesky(self, num_components, event_size):
        shape = self.precisions_cholesky_shape(num_components, event_size)
        return np.broadcast_to(np.eye(event_size), shape).copy()

    def log_det(self, precisions_cholesky, event_size):
        return tf.reduce_sum(
            tf.math.log(tf.linalg.diag_part(precisions_cholesky)), axis=-1
        )

    def sq_mahalanobis(self, diff, precisions_cholesky):
        # diff [..., K, D], prec_chol [..., K, D, D]: y_j = sum_i diff_i P_ij.
        y = tf.linalg.matvec(precisions_cholesky, diff, adjoint_a=True)
        return tf.reduce_sum(tf.square(y), axis=-1)

    def sq_mahalanobis_gemm(self, x, means, precisions_cholesky):
        # Whiten points and means separately, y = x P - mu P (scikit-learn's
        # form), after centring both on the mean of the means.
        ref = tf.reduce_mean(means, axis=0)
        y_x = tf.einsum("nd,kde->nke", x - ref, precisions_cholesky)  # [N, K, D]
        y_mu = tf.einsum("kd,kde->ke", means - ref, precisions_cholesky)  # [K, D]
        return tf.reduce_sum(tf.square(y_x - y_mu), axis=-1)

    def scale_noise(self, z, precisions_cholesky):
        p_t = tf.linalg.matrix_transpose(precisions_cholesky)
        return tf.linalg.triangular_solve(p_t, z[..., None], lower=True)[..., 0]

    def covariance_cholesky(self, precisions_cholesky, event_size):
        p_t = tf.linalg.matrix_transpose(precisions_cholesky)
        eye = tf.eye(event_size, batch_shape=tf.shape(p_t)[:-2], dtype=p_t.dtype)
        return tf.linalg.triangular_solve(p_t, eye, lower=True)

    def stddevs(self, precisions_cholesky, event_size):
        chol = self.covariance_cholesky(precisions_cholesky, event_size)
        return tf.sqrt(tf.reduce_sum(tf.square(chol), axis=-1))

    def log_precision_diagonal(self, precisions_cholesky, event_size):
        # Lambda = P P^T: Lambda_dd = sum_j P_dj^2, from the largest entry of
        # each row (no overflow of the squares).
        p = tf.abs(precisions_cholesky)
        top = tf.reduce_max(p, axis=-1)
        return 2.0 * tf.math.log(top) + tf.math.log(
            tf.reduce_sum(tf.square(p / top[..., None]), axis=-1))

    def raw_scales_from_precisions_cholesky(self, precisions_cholesky, min_scale):
        """The inverse of :meth:`precisions_cholesky_from_raw` for un-batched
        factors ``[K, D, D]`` (NumPy): raw parameters ``[K, D(D+1)/2]``, the
        softplus-inverse of the covariance Cholesky diagonal minus
        ``min_scale`` first, then the strictly lower entries of ``P.T`` row by
        row. A diagonal entry at or below ``min_scale`` is an error."""
        w = np.swapaxes(np.asarray(precisions_cholesky, np.float64), -1, -2)
        d = w.shape[-1]
        scale = 1.0 / np.diagonal(w, axis1=-2, axis2=-1) - min_scale
        if not np.all(scale > 0):
            raise ValueError(
                "The covariance Cholesky factors' diagonal must exceed "
                f"min_scale={min_scale}; smallest is {float(np.min(scale + min_scale))}.")
        rows, cols = np.tril_indices(d, -1)
        return np.concatenate([_inverse_softplus(scale), w[..., rows, cols]], axis=-1)

    def covariances(self, precisions_cholesky):
        return self.covariance_matrices(
            precisions_cholesky, precisions_cholesky.shape[-1]
        )

    def precisions(self, precisions_cholesky):
        return tf.matmul(precisions_cholesky, precisions_cholesky, adjoint_b=True)

    def precisions_cholesky_from_covariances(self, covariances):
        event_size = covariances.shape[-1]
        cov_chol = tf.linalg.cholesky(covariances)
        eye = tf.eye(event_size, batch_shape=tf.shape(covariances)[:-2],
                     dtype=covariances.dtype)
        return tf.linalg.matrix_transpose(
            tf.linalg.triangular_solve(cov_chol, eye, lower=True)
        )

    def precisions_cholesky_from_precisions(self, precisions):
        # The upper-triangular U with precision = U U^T is J chol(J P J) J.
        return _flip(tf.linalg.cholesky(_flip(precisions)))

    def is_positive_definite(self, precisions):
        mats = np.asarray(precisions).reshape((-1,) + np.shape(precisions)[-2:])
        return all(
            np.allclose(m, m.T) and np.all(np.linalg.eigvalsh(m) > 0) for m in mats
        )

    def marginal_variances(self, covariances, num_components, event_size):
        return tf.linalg.diag_part(covariances)

    def moments(self, resp, x, shift, expand):
        # Half-centred: with a_nk = r_nk (x_n - c_k),
        # sum_n a_nk (x_n - c_k)^T = (sum_n a_nk x_n^T) - sum_dx_k c_k^T.
        # Both sums are one product [D + 1, N] x [N, K D]: the data with a
        # column of ones (giving sum_dx) against `a` flattened, which keeps
        # its row-major layout (XLA copied a transposed [K D, N] `a` for the
        # einsum "nkd,ne->kde" and reduced it once more for sum_dx: measured
        # 1.4x faster per EM iteration on the benchmark's full case).
        k, d = int(shift.shape[-2]), int(shift.shape[-1])
        a = resp[:, :, None] * (x[:, None, :] - shift)  # [N, K, D]
        x1 = tf.concat([x, tf.ones_like(x[:, :1])], axis=1)  # [N, D + 1]
        both = tf.matmul(x1, tf.reshape(a, [-1, k * d]), transpose_a=True)
        sum_dx = tf.reshape(both[d], [k, d])
        moment = tf.transpose(tf.reshape(both[:d], [d, k, d]), [1, 2, 0])
        moment -= sum_dx[:, :, None] * shift[:, None, :]
        return sum_dx, 0.5 * (moment + tf.linalg.matrix_transpose(moment))

    def scatter(self, nk, sum_dx, sum_dxdx, nk_eps, d):
        coef = 2.0 * nk_eps - nk
        return sum_dxdx - coef[:, None, None] * (d[:, :, None] * d[:, None, :])

    # phi(x) = [x_i x_j for i <= j (row-major upper triangle), x]: the
    # Gaussian's sufficient statistics, so that for one component
    # ||P.T (x - m)||^2 = x.T L x - 2 x.T L m + m.T L m (L = P P.T) is
    # phi(x) @ [L_ii or 2 L_ij; -2 L m] + m.T L m. A pass is then
    # phi @ W ([N, F] x [F, K]) for the E-step and resp.T @ phi for the
    # M-step, F = D (D + 3) / 2 wide, instead of two [N, D] x [D, K D]
    # products around an [N, K, D] tensor (measured 2x faster a pass on the
    # benchmark's full case, D = K = 16).
    quadratic_features = True

    def num_quadratic_features(self, event_size):
        return event_size * (event_size + 3) // 2

    def quadratic_features_of(self, xc):
        d = int(xc.shape[-1])
        rows, cols = np.triu_indices(d)
        outer = tf.reshape(xc[:, :, None] * xc[:, None, :], [-1, d * d])
        return tf.concat([tf.gather(outer, rows * d + cols, axis=1), xc], axis=1)

    def quadratic_weights(self, means_c, precisions_cholesky):
        d = int(means_c.shape[-1])
        rows, cols = np.triu_indices(d)
        lam = tf.matmul(precisions_cholesky, precisions_cholesky, adjoint_b=True)
        flat = tf.reshape(lam, [-1, d * d])  # [K, D * D]
        twice = np.where(rows == cols, 1.0, 2.0)
        quadratic = tf.gather(flat, rows * d + cols, axis=1) * tf.constant(
            twice, lam.dtype)  # [K, D(D+1)/2]
        lam_m = tf.linalg.matvec(lam, means_c)  # [K, D]
        weights = tf.transpose(tf.concat([quadratic, -2.0 * lam_m], axis=1))
        q = tf.reduce_sum(lam_m * means_c, axis=-1)
        # the terms of a point within a standard deviation of its mean
        a = tf.abs(means_c) + self.stddevs(precisions_cholesky, d)
        kappa = 1.0 + tf.reduce_max(
            tf.reduce_sum(tf.linalg.matvec(tf.abs(lam), a) * a, axis=-1))
        return weights, q, kappa

    def moments_from_quadratic_sums(self, nk, sums, shift_c):
        k, d = int(shift_c.shape[-2]), int(shift_c.shape[-1])
        rows, cols = np.triu_indices(d)
        slot = np.zeros((d, d), np.int64)
        slot[rows, cols] = slot[cols, rows] = np.arange(rows.size)
        s2 = tf.reshape(tf.gather(sums, slot.reshape(-1), axis=1), [k, d, d])
        s1 = sums[:, rows.size:]  # [K, D]
        sum_dx = s1 - nk[:, None] * shift_c
        cross = s1[:, :, None] * shift_c[:, None, :]
        sum_dxdx = (s2 - cross - tf.linalg.matrix_transpose(cross)
                    + nk[:, None, None] * (shift_c[:, :, None] * shift_c[:, None, :]))
        return sum_dx, sum_dxdx

    def covariances_from_scatter(self, scatter, nk_eps, event_size, reg_covar):
        return _add_to_diagonal(scatter / nk_eps[:, None, None], reg_covar)

    def scatter_from_covariances(self, weights, covariances, reg_covar, event_size):
        return weights[:, None, None] * _add_to_diagonal(covariances, -reg_covar)

    def scatter_of_labels(self, dx, labels, num_components):
        return tf.math.unsorted_segment_sum(
            dx[:, :, None] * dx[:, None, :], labels, num_components
        )

    def initial_raw_scales(self, num_components, event_size, raw_scale):
        # Per triangular block: D diagonal entries first, then off-diagonals.
        block = np.zeros(event_size * (event_size + 1) // 2)
        block[:event_size] = raw_scale
        return np.tile(block, self.num_scale_params(num_components, event_size)
                       // block.size)

    def precisions_cholesky_from_raw(self, raw, num_components, event_size,
                                     min_scale):
        raw = _unflatten_last(
            raw, [num_components, event_size * (event_size + 1) // 2]
        )
        return _precision_cholesky_from_tril(raw, event_size, min_scale)


class Tied(Full):
    """"full" with one factor shared by all components."""

    name = "tied"
    shared = True
    # one [N, D] x [D, D] whitening serves every component: cheaper than
    # the quadratic features
    quadratic_features = False

    def precisions_cholesky_shape(self, num_components, event_size):
        return (event_size, event_size)

    def component_shape(self, event_size):
        return (event_size, event_size)

    def pooled_counts(self, nk):
        return tf.reduce_mean(nk)

    def num_parameters(self, num_components, event_size):
        return event_size * (event_size + 1) // 2

    def log_det(self, precisions_cholesky, event_size):
        return super().log_det(precisions_cholesky, event_size)[..., None]

    def sq_mahalanobis(self, diff, precisions_cholesky):
        return super().sq_mahalanobis(diff, precisions_cholesky[..., None, :, :])

    def sq_mahalanobis_gemm(self, x, means, precisions_cholesky):
        ref = tf.reduce_mean(means, axis=0)
        y_x = tf.matmul(x - ref, precisions_cholesky)  # [N, D]
        y_mu = tf.matmul(means - ref, precisions_cholesky)  # [K, D]
        return tf.reduce_sum(tf.square(y_x[:, None, :] - y_mu), axis=-1)

    def select(self, precisions_cholesky, index, batch_rank):
        batch_shape = tf.shape(index)
        return tf.broadcast_to(
            precisions_cholesky,
            tf.concat([batch_shape, tf.shape(precisions_cholesky)[-2:]], axis=0),
        )

    def per_component(self, value, num_components, event_rank):
        lead, event = tf.shape(value)[:-event_rank], tf.shape(value)[-event_rank:]
        value = tf.expand_dims(value, axis=-1 - event_rank)
        return tf.broadcast_to(value, tf.concat([lead, [num_components], event], 0))

    def moments(self, resp, x, shift, expand):
        a = resp[:, :, None] * (x[:, None, :] - shift)  # [N, K, D]
        sum_dx = tf.reduce_sum(a, axis=0)
        moment = tf.matmul(tf.reduce_sum(a, axis=1), x, transpose_a=True) - tf.matmul(
            sum_dx, shift, transpose_a=True
        )
        return sum_dx, 0.5 * (moment + tf.transpose(moment))

    def scatter(self, nk, sum_dx, sum_dxdx, nk_eps, d):
        coef = 2.0 * nk_eps - nk
        return sum_dxdx - tf.einsum("k,kd,ke->de", coef, d, d)

    def covariances_from_scatter(self, scatter, nk_eps, event_size, reg_covar):
        return _add_to_diagonal(scatter / tf.reduce_sum(nk_eps), reg_covar)

    def scatter_from_covariances(self, weights, covariances, reg_covar, event_size):
        return tf.reduce_sum(weights) * _add_to_diagonal(covariances, -reg_covar)

    def scatter_of_labels(self, dx, labels, num_components):
        return tf.matmul(dx, dx, transpose_a=True)

    def marginal_variances(self, covariances, num_components, event_size):
        return tf.broadcast_to(
            tf.linalg.diag_part(covariances)[None], [num_components, event_size]
        )

    def within(self, weights, per_component, event_rank):
        return per_component

    def precisions_cholesky_from_raw(self, raw, num_components, event_size,
                                     min_scale):
        return _precision_cholesky_from_tril(raw, event_size, min_scale)


class Diag(CovarianceType):
    name = "diag"
    expandable = True

    def precisions_cholesky_shape(self, num_components, event_size):
        return (num_components, event_size)

    def num_parameters(self, num_components, event_size):
        return num_components * event_size

    def log_det(self, precisions_cholesky, event_size):
        return tf.reduce_sum(tf.math.log(precisions_cholesky), axis=-1)

    def sq_mahalanobis(self, diff, precisions_cholesky):
        return tf.reduce_sum(tf.square(diff * precisions_cholesky), axis=-1)

    def sq_mahalanobis_gemm(self, x, means, precisions_cholesky):
        # sum_d p^2 (x - mu)^2 = x^2 . p^2 - 2 x . (mu p^2) + mu^2 . p^2: two
        # [N, D] x [D, K] products; error eps * D * kappa.
        ref = tf.reduce_mean(means, axis=0)
        x, means = x - ref, means - ref
        p2 = tf.square(precisions_cholesky)  # [K, D]
        sq = tf.matmul(tf.square(x), p2, transpose_b=True)
        sq -= 2.0 * tf.matmul(x, means * p2, transpose_b=True)
        sq += tf.reduce_sum(tf.square(means) * p2, axis=-1)
        return tf.maximum(sq, 0.0)

    def _per_feature(self, precisions_cholesky):
        return precisions_cholesky

    def expansion_condition(self, means, precisions_cholesky):
        ref = tf.reduce_mean(means, axis=-2, keepdims=True)
        p = self._per_feature(precisions_cholesky)
        return 1.0 + tf.reduce_max(tf.square((means - ref) * p))

    def scale_noise(self, z, precisions_cholesky):
        return z / self._per_feature(precisions_cholesky)

    def log_precision_diagonal(self, precisions_cholesky, event_size):
        # Diagonal covariances: Lambda_dd = 1 / stddev_d^2.
        return -2.0 * tf.math.log(self.stddevs(precisions_cholesky, event_size))

    def stddevs(self, precisions_cholesky, event_size):
        return tf.math.reciprocal(precisions_cholesky)

    def marginal_variances(self, covariances, num_components, event_size):
        return covariances

    @staticmethod
    def _expanded_first_moments(resp, x, shift):
        nk = tf.reduce_sum(resp, axis=0)[:, None]
        s1 = tf.matmul(resp, x, transpose_a=True)
        return nk, s1, s1 - nk * shift

    def moments(self, resp, x, shift, expand):
        if not expand:
            dx = x[:, None, :] - shift
            return (
                tf.einsum("nk,nkd->kd", resp, dx),
                tf.einsum("nk,nkd->kd", resp, tf.square(dx)),
            )
        nk, s1, sum_dx = self._expanded_first_moments(resp, x, shift)
        s2 = tf.matmul(resp, tf.square(x), transpose_a=True)
        return sum_dx, tf.maximum(s2 - 2.0 * shift * s1 + nk * tf.square(shift), 0.0)

    def scatter(self, nk, sum_dx, sum_dxdx, nk_eps, d):
        coef = 2.0 * nk_eps - nk
        return tf.maximum(sum_dxdx - coef[:, None] * tf.square(d), 0.0)

    def covariances_from_scatter(self, scatter, nk_eps, event_size, reg_covar):
        return scatter / nk_eps[:, None] + reg_covar

    def scatter_from_covariances(self, weights, covariances, reg_covar, event_size):
        return weights[:, None] * (covariances - reg_covar)

    def scatter_of_labels(self, dx, labels, num_components):
        return tf.math.unsorted_segment_sum(tf.square(dx), labels, num_components)


class Spherical(Diag):
    """One variance per component (a "diag" with equal entries)."""

    name = "spherical"

    def precisions_cholesky_shape(self, num_components, event_size):
        return (num_components,)

    def num_parameters(self, num_components, event_size):
        return num_components

    def log_det(self, precisions_cholesky, event_size):
        return event_size * tf.math.log(precisions_cholesky)

    def sq_mahalanobis(self, diff, precisions_cholesky):
        return tf.reduce_sum(tf.square(diff), axis=-1) * tf.square(precisions_cholesky)

    def sq_mahalanobis_gemm(self, x, means, precisions_cholesky):
        ref = tf.reduce_mean(means, axis=0)
        x, means = x - ref, means - ref
        sq = tf.reduce_sum(tf.square(x), axis=-1, keepdims=True)
        sq -= 2.0 * tf.matmul(x, means, transpose_b=True)
        sq += tf.reduce_sum(tf.square(means), axis=-1)
        return tf.maximum(sq, 0.0) * tf.square(precisions_cholesky)

    def _per_feature(self, precisions_cholesky):
        return precisions_cholesky[..., None]

    def stddevs(self, precisions_cholesky, event_size):
        scale = tf.math.reciprocal(precisions_cholesky)[..., None]
        return tf.broadcast_to(
            scale, tf.concat([tf.shape(scale)[:-1], [event_size]], axis=0)
        )

    def marginal_variances(self, covariances, num_components, event_size):
        return tf.broadcast_to(covariances[:, None], [num_components, event_size])

    def precisions_cholesky_from_raw(self, raw, num_components, event_size,
                                     min_scale):
        return tf.math.reciprocal(positive_scale(raw, min_scale))

    def moments(self, resp, x, shift, expand):
        if not expand:
            dx = x[:, None, :] - shift
            return (
                tf.einsum("nk,nkd->kd", resp, dx),
                tf.einsum("nk,nkd->k", resp, tf.square(dx)),
            )
        nk, s1, sum_dx = self._expanded_first_moments(resp, x, shift)
        s2 = tf.linalg.matvec(resp, tf.reduce_sum(tf.square(x), axis=-1), adjoint_a=True)
        moment = (
            s2
            - 2.0 * tf.reduce_sum(shift * s1, axis=-1)
            + nk[:, 0] * tf.reduce_sum(tf.square(shift), axis=-1)
        )
        return sum_dx, tf.maximum(moment, 0.0)

    def scatter(self, nk, sum_dx, sum_dxdx, nk_eps, d):
        coef = 2.0 * nk_eps - nk
        return tf.maximum(sum_dxdx - coef * tf.reduce_sum(tf.square(d), -1), 0.0)

    def covariances_from_scatter(self, scatter, nk_eps, event_size, reg_covar):
        return scatter / (nk_eps * event_size) + reg_covar

    def scatter_from_covariances(self, weights, covariances, reg_covar, event_size):
        return weights * (covariances - reg_covar) * event_size

    def scatter_of_labels(self, dx, labels, num_components):
        return tf.math.unsorted_segment_sum(
            tf.reduce_sum(tf.square(dx), -1), labels, num_components
        )


_TYPES = {cls.name: cls() for cls in (Full, Tied, Diag, Spherical)}


def check(value, arg_name="covariance_type", supported=None):
    """The name ``value`` if it is a covariance type (among ``supported``,
    default all), else a ValueError naming the argument and the choices."""
    options = COVARIANCE_TYPES if supported is None else tuple(supported)
    if isinstance(value, CovarianceType):
        value = value.name
    return _validation.check_one_of(value, arg_name, options)


def get(covariance_type):
    """The :class:`CovarianceType` object of a name (or the object itself)."""
    if isinstance(covariance_type, CovarianceType):
        return covariance_type
    return _TYPES[check(covariance_type)]
