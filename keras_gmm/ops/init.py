"""Initialisations of a Gaussian mixture: scikit-learn's ``init_params``,
their one home.

Each initialisation gives responsibilities ``[N, K]`` (:func:`initial_resp`);
their M-step is the initial mixture (:func:`initialize`, scikit-learn's
``_initialize_parameters``) or the initial variational posterior
(:func:`initial_variational_state`, that of ``BayesianGaussianMixture``).
``init_params`` (:data:`INIT_PARAMS`):

- "kmeans": k-means labels (k-means++ seeds, then 10 Lloyd steps);
- "k-means++": one-hot at the k-means++ seed points, so each initial mean is
  its seed point and each initial covariance ``reg_covar * I``
  (scikit-learn's meaning);
- "kmeans++_assign": k-means++ seeds, each point labelled by its nearest
  seed (what scikit-learn's "k-means++" reaches after one EM iteration,
  without that iteration); "kmeans++" is its former name;
- "random": uniform random responsibilities, each row normalised;
- "random_from_data": one-hot at ``K`` distinct random points.

The k-means work runs on data centred on its mean (distances as matrix
products lose less there). The hard-label initialisations take their
parameters from the labels by segment sums
(:func:`keras_gmm.ops.em.parameters_from_labels`: memory ``N * D``, not
``N * K * D``).

Random draws: TF stateless RNG (``seed``: a shape-[2] integer tensor, the
Philox algorithm fixed and floats built from integer draws, so eager, graph
and XLA draw the same numbers); the random streams differ from NumPy's, the
sampling distributions do not (k-means++ draws its candidates by Gumbel-max
rather than an inverse CDF). So the same ``seed`` gives the same
initialisation here, but not scikit-learn's for the same ``random_state``.

:func:`run` is how a fit runs an initialisation (op by op, traced, or
XLA-compiled by data size; a failed factor is the same ValueError either
way). Everything else is dtype-generic with static shapes and compiles with
``tf.function(jit_compile=True)``.
"""

import math
import warnings

import tensorflow as tf

from keras_gmm import _validation
from keras_gmm.ops import bayesian, em, em_driver

__all__ = [
    "INIT_PARAMS",
    "check_init_params",
    "initial_resp",
    "initial_variational_state",
    "initialize",
    "kmeans",
    "kmeans_plusplus",
    "labels_to_resp",
    "random_from_data_resp",
    "random_resp",
    "run",
]

#: ``init_params`` values: scikit-learn's four and "kmeans++_assign".
INIT_PARAMS = ("kmeans++_assign", "kmeans", "k-means++", "random", "random_from_data")
#: The former name of "kmeans++_assign" (:func:`check_init_params` warns;
#: the ops below accept it silently).
RENAMED_INIT_PARAMS = {"kmeans++": "kmeans++_assign"}
#: The initialisations given by hard labels (parameters by segment sums).
_LABEL_INITS = ("kmeans", "kmeans++_assign")


def check_init_params(value, name="init_params"):
    """``value`` if it is one of :data:`INIT_PARAMS` (the former "kmeans++"
    is renamed "kmeans++_assign", with a DeprecationWarning), else a
    ValueError naming the argument, the value and the choices.

    >>> check_init_params("k-means++")
    'k-means++'
    """
    if isinstance(value, str) and value in RENAMED_INIT_PARAMS:
        new = RENAMED_INIT_PARAMS[value]
        warnings.warn(
            f"`{name}={value!r}` is now spelled {new!r} (scikit-learn's "
            "'k-means++' puts each initial mean on its seed point instead); "
            f"the old name will be removed.", DeprecationWarning, stacklevel=3,
        )
        value = new
    return _validation.check_one_of(value, name, INIT_PARAMS)


def _static_init_params(init_params):
    """The (static) name, the former "kmeans++" renamed, else a ValueError."""
    init_params = RENAMED_INIT_PARAMS.get(init_params, init_params)
    if init_params not in INIT_PARAMS:
        raise ValueError(
            f"`init_params` must be one of {INIT_PARAMS}; received "
            f"init_params={init_params!r}."
        )
    return init_params


# Explicit, so eager, graph and XLA draw the same numbers ("auto_select" may
# pick a different algorithm per device or compiler).
_ALG = "philox"
_UNIFORM_BITS = 24


def _stateless_unit_uniform(shape, seed, dtype):
    """Uniform in (0, 1) on a 2^-24 grid, identical eagerly and under XLA.

    TF's float ``stateless_uniform`` draws differ between its CPU kernel and
    XLA; its bounded-integer draws do not, so floats are built from those.
    """
    ints = tf.random.stateless_uniform(
        shape, seed, minval=0, maxval=2**_UNIFORM_BITS, dtype=tf.int32, alg=_ALG
    )
    return (tf.cast(ints, dtype) + 0.5) / (2.0**_UNIFORM_BITS)


def _sq_distances(a, b):
    """``[A, B]`` squared Euclidean distances as one matrix product,
    ``|a|^2 - 2 a.b + |b|^2`` clamped at 0 (scikit-learn's
    ``euclidean_distances``): memory ``A * B``, not ``A * B * D``. Centre the
    data first (:func:`initialize` does) so the cancellation stays small."""
    cross = tf.matmul(a, b, transpose_b=True)
    sq = (tf.reduce_sum(tf.square(a), -1)[:, None] - 2.0 * cross
          + tf.reduce_sum(tf.square(b), -1)[None, :])
    return tf.maximum(sq, 0.0)


def kmeans_plusplus(x, n_clusters, seed):
    """Greedy k-means++ seeding (scikit-learn's ``_kmeans_plusplus``).

    The first centre is a uniformly drawn point; each next one is the best (in
    potential, the sum of squared distances to the closest centre) of
    ``2 + floor(log(n_clusters))`` candidates drawn with probability
    proportional to the squared distance to the closest centre. The candidates
    are drawn with the Gumbel-max trick (same distribution as scikit-learn's
    inverse CDF; different random stream), in a ``tf.while_loop`` so the XLA
    graph does not grow with ``n_clusters``.

    Args:
        x: ``[N, D]`` data.
        n_clusters: static Python int ``K``.
        seed: shape-``[2]`` integer tensor for stateless RNG.

    Returns:
        ``(centers [K, D], indices [K] int32)``: the centres are rows of ``x``.
    """
    n_samples = x.shape[0] if x.shape[0] is not None else tf.shape(x)[0]
    n_local_trials = 2 + int(math.log(n_clusters))
    first = tf.random.stateless_uniform(
        [], seed, minval=0, maxval=n_samples, dtype=tf.int32, alg=_ALG
    )
    # tf.gather, not x[first]: a tensor index in a strided slice is a
    # compile-time constant for XLA, which would recompile for every seed.
    closest_dist_sq = _sq_distances(tf.gather(x, first[None]), x)[0]  # [N]
    indices = tf.tensor_scatter_nd_update(
        tf.zeros([n_clusters], tf.int32), [[0]], first[None]
    )

    def body(c, indices, closest_dist_sq):
        seed_c = tf.random.experimental.stateless_fold_in(seed, c, alg=_ALG)
        u = _stateless_unit_uniform([n_local_trials, n_samples], seed_c, x.dtype)
        gumbel = -tf.math.log(-tf.math.log(u))
        candidate_ids = tf.argmax(
            tf.math.log(closest_dist_sq)[None, :] + gumbel,
            axis=-1,
            output_type=tf.int32,
        )  # [T], each drawn with probability closest_dist_sq / potential
        dist_to_candidates = tf.minimum(
            closest_dist_sq[None, :], _sq_distances(tf.gather(x, candidate_ids), x)
        )  # [T, N]
        best = tf.argmin(tf.reduce_sum(dist_to_candidates, axis=-1),
                         output_type=tf.int32)
        indices = tf.tensor_scatter_nd_update(
            indices, [[c]], tf.gather(candidate_ids, best[None])
        )
        return c + 1, indices, tf.gather(dist_to_candidates, best)

    _, indices, _ = tf.while_loop(
        lambda c, *_: c < n_clusters,
        body,
        (tf.constant(1), indices, closest_dist_sq),
    )
    return tf.gather(x, indices), indices


def kmeans(x, centers, n_iter=10):
    """Lloyd iterations from ``centers``.

    An empty cluster keeps its previous centre.

    Args:
        x: ``[N, D]``.
        centers: ``[K, D]`` initial centres (e.g. from :func:`kmeans_plusplus`).
        n_iter: number of Lloyd steps (a Python int or scalar tensor).

    Returns:
        ``(centers [K, D], labels [N] int32)``; the labels are the assignment
        to the returned centres.
    """
    n_clusters = centers.shape[0]

    def assign(c):
        return tf.argmin(_sq_distances(x, c), axis=-1, output_type=tf.int32)

    def body(i, c):
        onehot = tf.one_hot(assign(c), n_clusters, dtype=x.dtype)  # [N, K]
        counts = tf.reduce_sum(onehot, axis=0)
        sums = tf.matmul(onehot, x, transpose_a=True)
        new = sums / tf.maximum(counts, 1)[:, None]
        return i + 1, tf.where(counts[:, None] > 0, new, c)

    _, centers = tf.while_loop(
        lambda i, c: i < n_iter, body, (tf.constant(0), centers)
    )
    return centers, assign(centers)


def labels_to_resp(labels, n_components, dtype=tf.float32):
    """One-hot responsibilities ``[N, K]`` from hard labels.

    As scikit-learn's ``init_params='kmeans'`` (labels from :func:`kmeans`).
    """
    return tf.one_hot(labels, n_components, dtype=dtype)


def random_resp(n_samples, n_components, seed, dtype=tf.float32):
    """Uniform random rows normalised to one (``init_params='random'``)."""
    resp = _stateless_unit_uniform([n_samples, n_components], seed, dtype)
    return resp / tf.reduce_sum(resp, axis=1, keepdims=True)


def random_from_data_resp(n_samples, n_components, seed, dtype=tf.float32):
    """One-hot at ``K`` distinct random points (``init_params='random_from_data'``).

    Row ``indices[k]`` has a one in column ``k``; all other rows are zero.
    """
    keys = _stateless_unit_uniform([n_samples], seed, tf.float32)
    _, indices = tf.math.top_k(keys, k=n_components)  # distinct indices
    return tf.scatter_nd(
        indices[:, None], tf.eye(n_components, dtype=dtype), [n_samples, n_components]
    )


def _kmeans_labels(x, n_components, init_params, seed, kmeans_iter):
    """"kmeans" / "kmeans++_assign" labels ``[N]`` (on the centred data)."""
    xc = x - tf.reduce_mean(x, axis=0)
    centers, _ = kmeans_plusplus(xc, n_components, seed)
    # kmeans_iter=0: the nearest-seed labels
    _, labels = kmeans(xc, centers, kmeans_iter if init_params == "kmeans" else 0)
    return labels


def initial_resp(x, n_components, init_params, seed, kmeans_iter=10):
    """Initial responsibilities ``[N, K]`` of ``init_params`` (see the module
    docstring; scikit-learn's ``_initialize_parameters``).

    Args:
        x: ``[N, D]`` data.
        n_components: static Python int ``K``.
        init_params: one of :data:`INIT_PARAMS` (static).
        seed: shape-``[2]`` integer tensor for stateless RNG.
        kmeans_iter: Lloyd steps of "kmeans".

    Example:

    >>> import tensorflow as tf
    >>> x = tf.constant([[0.0], [0.1], [5.0], [5.1]])
    >>> resp = initial_resp(x, 2, "k-means++", tf.constant([0, 1], tf.int64))
    >>> resp.shape, float(tf.reduce_sum(resp))   # one row per seed point
    (TensorShape([4, 2]), 2.0)
    """
    init_params = _static_init_params(init_params)
    k = n_components
    n = x.shape[0] if x.shape[0] is not None else tf.shape(x)[0]
    if init_params in _LABEL_INITS:
        return labels_to_resp(_kmeans_labels(x, k, init_params, seed, kmeans_iter),
                              k, x.dtype)
    if init_params == "k-means++":
        _, indices = kmeans_plusplus(x - tf.reduce_mean(x, axis=0), k, seed)
        return tf.scatter_nd(indices[:, None], tf.eye(k, dtype=x.dtype), [n, k])
    if init_params == "random":
        return random_resp(n, k, seed, x.dtype)
    return random_from_data_resp(n, k, seed, x.dtype)


def initialize(x, n_components, init_params, covariance_type, reg_covar, seed,
               kmeans_iter=10, check=True):
    """Initial mixture parameters from data (scikit-learn's
    ``_initialize_parameters`` then ``_initialize``), one function to
    compile: the M-step of :func:`initial_resp` (of the labels, by segment
    sums, for "kmeans" and "kmeans++_assign").

    Args:
        x, n_components, init_params, seed, kmeans_iter: as
            :func:`initial_resp`.
        covariance_type: "full", "tied", "diag" or "spherical".
        reg_covar: added to covariance diagonals.
        check: raise on a non-finite precision factor (False: leave it NaN,
            for the caller to check).

    Returns:
        ``(weights [K], means [K, D], precisions_cholesky)``.

    Example:

    >>> import numpy as np, tensorflow as tf
    >>> x = tf.constant(np.r_[np.zeros((5, 2)), np.ones((5, 2)) * 9.0])
    >>> w, means, _ = initialize(x, 2, "kmeans", "diag", 1e-6,
    ...                          tf.constant([0, 1], tf.int64))
    >>> sorted(np.round(means.numpy()[:, 0], 6).tolist()), np.round(w.numpy(), 6).tolist()
    ([0.0, 9.0], [0.5, 0.5])
    """
    init_params = _static_init_params(init_params)
    if init_params in _LABEL_INITS:
        labels = _kmeans_labels(x, n_components, init_params, seed, kmeans_iter)
        w, means, _, prec_chol = em.parameters_from_labels(
            x, labels, n_components, covariance_type, reg_covar, check=check
        )
        return w, means, prec_chol
    resp = initial_resp(x, n_components, init_params, seed, kmeans_iter)
    w, means, _, prec_chol = em.parameters_from_resp(
        x, resp, covariance_type, reg_covar, check=check
    )
    return w, means, prec_chol


def initial_variational_state(x, n_components, init_params, covariance_type,
                              reg_covar, seed, priors,
                              weight_concentration_prior_type):
    """The initial posterior of ``BayesianGaussianMixture``
    (scikit-learn's ``_initialize_parameters``): the variational M-step of
    :func:`initial_resp` (:func:`keras_gmm.ops.bayesian.
    initial_state_from_resp`), a :class:`keras_gmm.ops.bayesian.
    VariationalState`.

    Args:
        x, n_components, init_params, covariance_type, reg_covar, seed: as
            :func:`initialize`.
        priors: :class:`keras_gmm.ops.bayesian.Priors`.
        weight_concentration_prior_type: "dirichlet_process" or
            "dirichlet_distribution".
    """
    resp = initial_resp(x, n_components, init_params, seed)
    return bayesian.initial_state_from_resp(
        x, resp, priors, covariance_type, reg_covar, weight_concentration_prior_type
    )


def _factor(result):
    """The precision factor of an initialisation's result."""
    if isinstance(result, bayesian.VariationalState):
        return result.precisions_cholesky
    return result[2]


def run(fn, x, n_components, *args):
    """``fn(x, n_components, *args)`` (:func:`initialize` or
    :func:`initial_variational_state`) as a fit runs it: small data op by
    op for the first fits of a shape, then traced without XLA
    (:func:`keras_gmm.ops.em_driver.small`), large data XLA-compiled (once
    per shape and static arguments, :func:`keras_gmm.ops.em_driver.
    compiled`); the precision factor is then
    checked eagerly, so a covariance that is not positive definite is the
    same ValueError (scikit-learn's message) either way.

    Args:
        fn: the initialisation.
        x: ``[N, D]`` tensor (static shape).
        n_components: static Python int ``K``.
        *args: ``fn``'s other arguments (strings are static).

    Returns:
        ``fn``'s result.
    """
    n, d = int(x.shape[0]), int(x.shape[1])
    key = (n, n_components, d, x.dtype.name)
    if em_driver.use_xla(n * n_components * d):
        out = em_driver.compiled(fn, *key)(x, n_components, *args)
    else:
        try:
            out = em_driver.small(fn, *key)(x, n_components, *args)
        except tf.errors.InvalidArgumentError as error:
            message = em.ill_defined_covariance_message(x.dtype)
            if message not in str(error):  # not the traced factor check
                raise
            raise ValueError(message) from error
    em.check_precisions_cholesky(_factor(out))
    return out
