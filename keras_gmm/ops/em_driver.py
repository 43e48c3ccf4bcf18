"""The one EM loop: every EM-like fit of keras_gmm iterates through here.

:func:`iterate` is EM's outer loop as one ``tf.while_loop``: a pass gives the
lower bound of the current parameters and the parameters after the M-step;
the loop stops after ``max_iter`` passes, when the bound changes by less than
``tol`` (scikit-learn's rule), or when a pass gives non-finite parameters (the
previous ones are kept and ``failed`` is set: a failed Cholesky never turns a
good model into a NaN model). Its callers:

- :func:`em_iterations`: batch EM over in-memory data in one graph (eager,
  traced, or XLA-compiled whole), the data walked in fixed-size chunks
  (:func:`chunked_sum`);
- :func:`in_memory_em` (``GaussianMixtureEM.fit`` of an array): small data
  (:func:`use_xla`) run :func:`em_iterations` op by op for the first fits
  of a shape in the process, then traced without XLA (:func:`small`); large
  data run :func:`iterate` eagerly over
  fixed-shape blocks whose statistics one XLA-compiled function sums, one
  compilation per (components, features, covariance type, dtype, chunk and
  block rows) whatever the number of rows (:func:`compiled`, also for other
  EM-like layers);
- the MAP-EM of the weight prior (:mod:`keras_gmm.regularizers`);
- the streamed loop below (:func:`streamed_sums`, :func:`streamed_iterations`;
  EM's :func:`streamed_em`, the Bayesian mixture's passes), one pass per
  iteration over a ``tf.data.Dataset``, each batch's statistics of all
  replicas summed by one all-reduce of one packed tensor under a
  ``tf.distribute`` strategy.

The strategy mechanics live here too: :func:`pack` / :func:`unpack` (a nest
of sums as one tensor), :func:`all_reduce` (sums and replica 0's values in
one all-reduce, in a replica context: online EM's step) and :func:`agree`
(worker 0's initial parameters on every worker).

The per-iteration math (E-step, statistics, M-step) is :mod:`keras_gmm.ops.em`.
"""

import math
import time
import weakref
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from keras_gmm.ops import covariance, em

__all__ = [
    "iterate", "chunked_sum", "log_terms", "pass_statistics", "em_iterations",
    "EAGER_MAX_WORK", "pass_work", "use_xla", "compiled", "small", "block_rows",
    "row_blocks", "InMemoryData", "in_memory_em", "m_step_unchecked",
    "pack", "unpack", "all_reduce", "agree", "StreamedSums",
    "streamed_sums", "StreamedPass", "StreamedResult", "streamed_pass",
    "streamed_iterations", "streamed_em",
]


def iterate(one_pass, params, max_iter, tol, prev_bound=-np.inf, iter_limit=None):
    """EM's outer loop, in-graph.

    Args:
        one_pass: ``params -> (bound, new_params)``: the lower bound of
            ``params`` (the E-step) and the parameters after the M-step;
            ``params`` is any nest of tensors of fixed shapes.
        params: the initial parameters.
        max_iter: Python int, the most iterations (the size of ``bounds``).
        tol: stop when ``|bound - previous bound| < tol``.
        prev_bound: the bound before the first iteration (to continue a run).
        iter_limit: a scalar tensor ``<= max_iter``: run at most this many
            iterations in this call (default ``max_iter``).

    Returns:
        ``(params, bounds [max_iter], n_iter, converged, failed)``: the
        parameters after the last successful pass, each iteration's bound
        (``bounds[:n_iter]``, NaN after), whether the bound converged, and
        whether a pass gave a non-finite bound or parameters (whose result is
        then dropped).

    Example:

    >>> import tensorflow as tf
    >>> halve = lambda p: (-p, p / 2.0)   # bound -p rises to 0 as p halves
    >>> p, bounds, n, converged, failed = iterate(
    ...     halve, tf.constant(1.0), 50, 1e-3)
    >>> int(n), bool(converged), bool(failed)
    (11, True, False)
    """
    leaves = tf.nest.flatten(params)
    dtype = leaves[0].dtype
    tol = tf.cast(tol, dtype)
    limit = max_iter if iter_limit is None else iter_limit

    def cond(it, params, prev, bounds, converged, failed):
        return (it < limit) & ~converged & ~failed

    def body(it, params, prev, bounds, converged, failed):
        bound, new = one_pass(params)
        bound = tf.cast(bound, dtype)
        bounds = tf.tensor_scatter_nd_update(bounds, [[it]], [bound])
        ok = tf.math.is_finite(bound)
        for leaf in tf.nest.flatten(new):
            ok &= tf.reduce_all(tf.math.is_finite(leaf))
        params = tf.nest.map_structure(lambda a, b: tf.where(ok, a, b), new, params)
        converged = ok & (tf.abs(bound - prev) < tol)
        return it + 1, params, bound, bounds, converged, ~ok

    init = (
        tf.constant(0), params, tf.cast(prev_bound, dtype),
        tf.fill([max_iter], tf.constant(np.nan, dtype)), tf.constant(False),
        tf.constant(False),
    )
    it, params, _, bounds, converged, failed = tf.while_loop(cond, body, init)
    return params, bounds, it, converged, failed


def chunked_sum(fn, x, zero, chunk_size, n_valid=None):
    """``sum_i fn(rows_i, mask_i)`` over ``x`` walked in chunks of rows.

    The chunks are a ``tf.while_loop`` of one shape ``[chunk_size, D]``: the
    last one repeats the final row, masked out (``mask`` ``[chunk_size]``
    0/1, ``None`` when every row of every chunk is real), so one chunk graph
    is compiled whatever the number of rows, and the working set is one
    chunk's.

    Args:
        fn: ``(rows [chunk, D], mask or None) -> nest of sums``.
        x: ``[R, D]`` rows (static ``R``).
        zero: the nest of zeros ``fn`` returns the shape of.
        chunk_size: Python int, rows per chunk (at most ``R`` are used).
        n_valid: optional scalar int tensor ``<= R``: only the first
            ``n_valid`` rows count (the others are padding, never computed
            beyond the last chunk that holds a valid row).

    Returns:
        The nest of sums.
    """
    rows_total = int(x.shape[0])
    chunk = max(1, min(int(chunk_size), rows_total))
    if n_valid is None:
        n, n_chunks = rows_total, -(-rows_total // chunk)
        masked = rows_total % chunk != 0
        if n_chunks == 1 and not masked:
            return fn(x, None)
    else:
        n = tf.cast(n_valid, tf.int32)
        n_chunks, masked = (n + chunk - 1) // chunk, True
    dtype = x.dtype

    def body(i, acc):
        rows = i * chunk + tf.range(chunk)
        if masked:
            part = fn(tf.gather(x, tf.minimum(rows, rows_total - 1)),
                      tf.cast(rows < n, dtype))
        else:
            part = fn(tf.gather(x, rows), None)
        return i + 1, tf.nest.map_structure(tf.add, acc, part)

    _, total = tf.while_loop(lambda i, _: i < n_chunks, body, (tf.constant(0), zero))
    return total


def log_terms(weights, means, precisions_cholesky, covariance_type):
    """``(log(weights), log|P|)``: the per-component terms of an E-step,
    computed once per pass rather than per chunk."""
    log_det = covariance.get(covariance_type).log_det(
        precisions_cholesky, int(means.shape[-1])
    )
    return tf.math.log(weights), log_det


def pass_statistics(x, weights, means, precisions_cholesky, covariance_type,
                    chunk_size, n_valid=None, log_weights=None, log_det=None):
    """One E-step over ``x`` in chunks: ``(Stats, sum of log p(x_n))`` of
    its (first ``n_valid``) rows, around ``means`` (see
    :func:`chunked_sum`, :func:`keras_gmm.ops.em.batch_statistics`).
    ``log_weights``, ``log_det``: :func:`log_terms`, computed here if None."""
    k, d = int(means.shape[0]), int(x.shape[1])
    dtype = x.dtype
    if log_weights is None or log_det is None:
        log_weights, log_det = log_terms(weights, means, precisions_cholesky,
                                         covariance_type)

    def statistics(rows, mask):
        return em.batch_statistics(
            rows, weights, means, precisions_cholesky, covariance_type, mask=mask,
            log_weights=log_weights, log_det=log_det,
        )

    zero = (em.zero_statistics(k, d, covariance_type, dtype), tf.zeros((), dtype))
    stats, log_prob_sum = chunked_sum(statistics, x, zero, chunk_size, n_valid)
    return em.Stats(*stats), log_prob_sum


def _cast_params(params, dtype):
    return tuple(tf.cast(t, dtype) for t in params)


def em_iterations(
    x, weights, means, precisions_cholesky, covariance_type, reg_covar, max_iter,
    tol, chunk_size=None, prev_bound=-np.inf, iter_limit=None,
):
    """Up to ``max_iter`` EM iterations over in-memory data, in one graph.

    Runs eagerly (op by op) or wrapped in ``tf.function(jit_compile=True)``:
    the iterations are :func:`iterate`'s loop and each pass walks the data
    in chunks of ``chunk_size`` rows (:func:`chunked_sum`), so the working
    set is ``O(chunk_size * K * D)`` whatever ``N``. (:func:`in_memory_em`
    chooses between this and XLA-compiled blocks for a layer's fit.)

    Args:
        x: ``[N, D]`` data (static shape).
        weights, means, precisions_cholesky: initial parameters.
        covariance_type: one of ``COVARIANCE_TYPES``.
        reg_covar: added to the covariance diagonals.
        max_iter: Python int, the most iterations.
        tol: stop when the lower bound changes by less than ``tol``.
        chunk_size: rows per chunk (default
            :func:`keras_gmm.ops.em.default_chunk_size`).
        prev_bound: the lower bound of the iteration before the first one
            (to continue a run: convergence compares with it).
        iter_limit: a scalar tensor ``<= max_iter``: run at most this many
            iterations now (default ``max_iter``). A caller can step through a
            run one iteration per call without a new trace.

    Returns:
        ``(weights, means, precisions_cholesky, bounds [max_iter], n_iter,
        converged, failed)``: the parameters after the last successful M-step,
        the lower bound of each iteration (``bounds[:n_iter]``), and
        ``failed`` True if an M-step gave a non-finite precision factor (the
        returned parameters are then the ones before it, see
        :func:`keras_gmm.ops.em.check_precisions_cholesky`).
    """
    n, d = int(x.shape[0]), int(x.shape[1])
    k = int(means.shape[0])
    if chunk_size is None:
        chunk_size = em.default_chunk_size(k, d, covariance_type)

    def one_pass(params):
        w, mu, pc = params
        stats, log_prob_sum = pass_statistics(x, w, mu, pc, covariance_type, chunk_size)
        return log_prob_sum / n, m_step_unchecked(stats, mu, covariance_type, reg_covar)

    params = _cast_params((weights, means, precisions_cholesky), x.dtype)
    params, bounds, it, converged, failed = iterate(
        one_pass, params, max_iter, tol, prev_bound, iter_limit
    )
    return (*params, bounds, it, converged, failed)


# --------------------------------------------------------------------------
# in-memory EM for a layer's fit: traced graph, or XLA-compiled blocks
# --------------------------------------------------------------------------
#: Multiply-adds of one EM pass (:func:`pass_work`) up to which a fit of
#: in-memory data runs op by op or as a traced graph without XLA
#: (:func:`small`) rather than XLA-compiled: compiling a pass costs about
#: 0.5-1 s once per mixture shape and process, more than a whole fit of
#: data this small (measured: wine, digits, 20k blobs fit in a fraction of
#: the compile time).
EAGER_MAX_WORK = 1 << 26

#: Rows of one XLA-compiled block (a multiple of the chunk size, and at most
#: BLOCK_BYTES of data): the compiled pass has this fixed shape, so one
#: compilation serves every number of rows; larger data make several calls.
BLOCK_ROWS = 1 << 16
BLOCK_BYTES = 16 << 20

#: Elements of ``[chunk, K, D]`` up to which a small-data pass takes all
#: rows in one chunk (each chunk costs its ops' dispatch; memory stays
#: small).
EAGER_CHUNK_ELEMENTS = 1 << 22

#: Bytes of quadratic features (covariance types with ``quadratic_features``:
#: "full"; ``D (D + 3) / 2`` values a row, 8.5x the data for D = 16) up to
#: which an XLA-compiled fit computes them once and runs every pass on them
#: (:func:`_quadratic_block_statistics`: two matrix products a chunk); above
#: it, or while the expanded form would lose accuracy
#: (``eps * kappa > EXPANSION_RTOL``), passes run the exact per-chunk math.
FEATURE_BYTES = 256 << 20

#: Elements of one chunk of quadratic features (about 2 MiB of float32:
#: cache-sized).
FEATURE_CHUNK_ELEMENTS = 1 << 19


def pass_work(n, n_components, n_features, covariance_type):
    """Multiply-adds of one EM pass, about: ``N K D`` (``N K D^2`` for a
    type with ``D x D`` factors)."""
    cov = covariance.get(covariance_type)
    return n * n_components * n_features * (n_features if cov.matrix else 1)


def use_xla(work):
    """Whether work of this many multiply-adds a pass (:func:`pass_work`)
    is XLA-compiled (above :data:`EAGER_MAX_WORK`), else run op by op or
    traced without XLA (:func:`small`)."""
    return work > EAGER_MAX_WORK


_COMPILED = {}


def compiled(fn, *key, jit=True):
    """``fn`` as a ``tf.function`` (``jit``: XLA-compiled), one per
    ``(fn, *key, jit)`` in the process: callers key it by everything that
    fixes its shapes and trace (components, features, covariance type,
    dtype, chunk and block rows), so one compilation serves every layer
    instance and every fit of that shape. No AutoGraph: the ops write their
    loops and branches as ``tf.while_loop`` / ``tf.cond``."""
    entry = (fn, *key, jit)
    function = _COMPILED.get(entry)
    if function is None:
        function = _COMPILED[entry] = tf.function(
            fn, jit_compile=jit, autograph=False
        )
    return function


#: A traced small-data graph costs about this many times the first eager
#: run of the same call (tracing plus the graph's first run; measured 1.4-2x
#: on wine and digits fits, CPU time, fresh processes).
TRACE_COST_FACTOR = 1.5

_EAGER_SECONDS = {}


def small(fn, *key):
    """How to run ``fn`` on small data (below :data:`EAGER_MAX_WORK`) for
    this static ``key``: op by op while the seconds spent so running it stay
    below what a trace would cost (:data:`TRACE_COST_FACTOR` times its first
    eager run), then as a ``tf.function`` without XLA, traced once per key
    and process (:func:`compiled` with ``jit=False``).

    It is the ski-rental rule: renting (eager, about 2,000 dispatched ops a
    wine fit: 0.5-0.7 s the first time in a process, 0.2-0.3 s later) until
    the rent paid equals the price of buying (the trace: about 0.9 s, after
    which a fit takes 0.03 s), so any sequence of fits costs at most about
    twice what the best choice in hindsight would. One fit in a script runs
    op by op (its fastest first fit); ``n_init``, refits and searches switch
    to the traced graph after a few fits. Both run TensorFlow's own kernels:
    the numbers are the same up to rounding."""
    entry = (fn, *key)
    spent = _EAGER_SECONDS.get(entry)
    if spent is not None and spent[0] >= spent[1]:
        return compiled(fn, *key, jit=False)

    def eager(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        seconds = time.perf_counter() - start
        total, price = _EAGER_SECONDS.get(entry, (0.0, TRACE_COST_FACTOR * seconds))
        _EAGER_SECONDS[entry] = (total + seconds, price)
        return out

    return eager


def block_rows(chunk_size, n_features, dtype):
    """Rows of one compiled block: ``chunk_size`` times the most chunks
    within :data:`BLOCK_ROWS` rows and :data:`BLOCK_BYTES` bytes (at least
    one)."""
    itemsize = tf.as_dtype(dtype).size
    chunks = min(BLOCK_ROWS // chunk_size,
                 BLOCK_BYTES // max(chunk_size * n_features * itemsize, 1))
    return chunk_size * max(chunks, 1)


def row_blocks(x, rows):
    """``x [N, D]`` as ``[(block [rows, D], n_valid)]``: slices of ``x``
    (dim-0 slices share its buffer), the last one padded with zeros to
    ``rows`` rows; ``n_valid`` an int32 scalar tensor."""
    x = tf.convert_to_tensor(x)
    n = int(x.shape[0])
    blocks = []
    for start in range(0, n, rows):
        block = x[start:start + rows]
        valid = int(block.shape[0])
        if valid < rows:
            block = tf.concat([block, tf.zeros([rows - valid, x.shape[1]], x.dtype)], 0)
        blocks.append((block, tf.constant(valid, tf.int32)))
    return blocks


def feature_layout(n, n_features, covariance_type, chunk_size, dtype):
    """``(rows per chunk, rows per block)`` of the quadratic features an
    XLA-compiled fit of ``n`` rows computes once (:class:`InMemoryData`),
    or None when it does not: a covariance type without
    ``quadratic_features``, or more than :data:`FEATURE_BYTES` of them."""
    cov = covariance.get(covariance_type)
    if not cov.quadratic_features:
        return None
    f = cov.num_quadratic_features(n_features)
    chunk = min(int(chunk_size), max(256, FEATURE_CHUNK_ELEMENTS // f))
    rows = block_rows(chunk, f, dtype)
    if -(-n // rows) * rows * f * tf.as_dtype(dtype).size > FEATURE_BYTES:
        return None
    return chunk, rows


def quadratic_features(x, n_components, covariance_type, chunk_size=None):
    """``(phi [N, F], center [D])``: the quadratic features of all rows of
    ``x [N, D]`` around their mean, for a loop compiled over the whole data
    with ``n_components`` components
    (the variational one, :func:`keras_gmm.ops.bayesian.variational_iterations`)
    when large data of a type with ``quadratic_features`` fit within
    :data:`FEATURE_BYTES` (:func:`use_xla`, :func:`feature_layout`); else
    None."""
    x = tf.convert_to_tensor(x)
    n, d = int(x.shape[0]), int(x.shape[1])
    cov = covariance.get(covariance_type)
    if not cov.quadratic_features:
        return None
    chunk = chunk_size or em.default_chunk_size(n_components, d, covariance_type)
    if (not use_xla(pass_work(n, n_components, d, covariance_type))
            or feature_layout(n, d, covariance_type, chunk, x.dtype) is None):
        return None
    center = tf.reduce_mean(x, axis=0)
    return compiled(_quadratic_features, d, x.dtype.name, n)(x, center, cov.name), center


_compiled = compiled  # InMemoryData's argument ``compiled`` hides the name


class InMemoryData:
    """In-memory rows prepared once per fit for :func:`in_memory_em`, with
    the way its passes run: op by op or a traced graph without XLA
    (``compiled`` False: small data, see :func:`use_xla` and :func:`small`)
    over ``x`` in one or a few chunks, or XLA-compiled over
    fixed-shape blocks (:func:`row_blocks`) with the chunk size the layer
    asked for. A compiled "full" fit also holds the quadratic features of
    its rows (``feature_blocks``, computed once here, see
    :func:`feature_layout`), on which its passes run while the expanded form
    is accurate.

    Args:
        x: ``[N, D]`` tensor (or array) in the fit's dtype.
        n_components: ``K``.
        covariance_type: the covariance type's name.
        chunk_size: rows per chunk (None: :func:`keras_gmm.ops.em.
            default_chunk_size`).
        compiled: force (True) or forbid (False) XLA; None: :func:`use_xla`.
    """

    def __init__(self, x, n_components, covariance_type, chunk_size=None,
                 compiled=None):
        self.x = tf.convert_to_tensor(x)
        self.n, self.d = int(self.x.shape[0]), int(self.x.shape[1])
        self.k = int(n_components)
        default = em.default_chunk_size(self.k, self.d, covariance_type)
        if compiled is None:
            compiled = use_xla(pass_work(self.n, self.k, self.d, covariance_type))
        self.compiled = bool(compiled)
        if self.compiled:
            self.chunk_size = int(chunk_size or default)
            self.block_rows = block_rows(self.chunk_size, self.d, self.x.dtype)
            self.blocks = row_blocks(self.x, self.block_rows)
        else:
            one_chunk = self.n * self.k * self.d <= EAGER_CHUNK_ELEMENTS
            self.chunk_size = int(chunk_size or (self.n if one_chunk else default))
            self.block_rows, self.blocks = None, None
        # full: quadratic features computed once, every pass on them
        self.center = self.feature_blocks = None
        self.feature_chunk = self.feature_block_rows = None
        layout = (feature_layout(self.n, self.d, covariance_type, self.chunk_size,
                                 self.x.dtype) if self.compiled else None)
        if layout is not None:
            self.feature_chunk, self.feature_block_rows = layout
            # features of x - mean(x): the expanded form's error grows with
            # the distance of the means from this centre
            self.center = tf.reduce_mean(self.x, axis=0)
            features = _compiled(_quadratic_features, self.d, self.x.dtype.name,
                                 self.feature_block_rows)  # 5x faster than eager
            self.feature_blocks = [
                (features(block, self.center, covariance.get(covariance_type).name),
                 n_valid)
                for block, n_valid in row_blocks(self.x, self.feature_block_rows)
            ]


def _block_statistics(block, n_valid, log_weights, log_det, means,
                      precisions_cholesky, covariance_type, chunk_size):
    # log(weights) and log|P| come in computed: fewer transcendental
    # fusions to compile (each costs tens of ms of XLA compilation)
    return pass_statistics(block, None, means, precisions_cholesky,
                           covariance_type, chunk_size, n_valid,
                           log_weights=log_weights, log_det=log_det)


def _quadratic_features(block, center, covariance_type):
    return covariance.get(covariance_type).quadratic_features_of(block - center)


def _quadratic_block_statistics(phi, n_valid, a, b, chunk_size):
    k, f, dtype = int(a.shape[-1]), int(phi.shape[-1]), phi.dtype
    zero = (tf.zeros([k], dtype), tf.zeros([k, f], dtype), tf.zeros((), dtype))
    return chunked_sum(lambda rows, mask: em.quadratic_feature_statistics(rows, mask, a, b),
                       phi, zero, chunk_size, n_valid)


def _sum_blocks(step, blocks, *args):
    total = None
    for block, n_valid in blocks:
        part = step(block, n_valid, *args)
        total = part if total is None else tf.nest.map_structure(tf.add, total, part)
    return total


def in_memory_em(data, weights, means, precisions_cholesky, covariance_type,
                 reg_covar, max_iter, tol, prev_bound=-np.inf, iter_limit=None):
    """:func:`em_iterations` over :class:`InMemoryData`, called eagerly.

    Small data run :func:`em_iterations` op by op, or as a graph traced
    without XLA once per shape and process after a few fits of the shape
    (:func:`small`; no XLA compilation).
    Larger data run :func:`iterate` eagerly, each pass summing the
    statistics of the fixed-shape blocks with one XLA-compiled function per
    (components, features, covariance type, dtype, chunk and block rows)
    (:func:`compiled`: any number of rows, any layer instance), and the
    M-step op by op (it is ``O(K D^3)``, not worth a compilation). A "full"
    fit with ``feature_blocks`` sums them instead
    (:func:`keras_gmm.ops.em.quadratic_feature_statistics`: two products a
    chunk) in each pass whose ``eps * kappa <= EXPANSION_RTOL``
    (:func:`keras_gmm.ops.em.quadratic_log_joint_terms`), else the exact
    blocks. Same math, same loop rule, same results up to rounding either
    way.

    Args:
        data: :class:`InMemoryData`.
        weights, means, precisions_cholesky, covariance_type, reg_covar,
        max_iter, tol, prev_bound, iter_limit: as :func:`em_iterations`.

    Returns:
        As :func:`em_iterations`.
    """
    dtype = data.x.dtype
    if not data.compiled:
        run = small(em_iterations, data.n, data.k, data.d, covariance_type,
                    dtype.name, data.chunk_size, int(max_iter))
        # tensors, not Python floats: a traced run serves every value
        return run(
            data.x, weights, means, precisions_cholesky, covariance_type,
            tf.constant(reg_covar, dtype), int(max_iter), tf.constant(tol, dtype),
            data.chunk_size, tf.cast(prev_bound, dtype),
            None if iter_limit is None else tf.cast(iter_limit, tf.int32),
        )
    step = compiled(_block_statistics, data.k, data.d, covariance_type, dtype.name,
                    data.chunk_size, data.block_rows)
    if data.feature_blocks is not None:
        quadratic_step = compiled(_quadratic_block_statistics, data.k, data.d,
                                  dtype.name, data.feature_chunk,
                                  data.feature_block_rows)
        max_kappa = em.EXPANSION_RTOL / em._finfo_eps(dtype)

    def one_pass(params):
        w, mu, pc = params
        log_w, log_det = log_terms(w, mu, pc, covariance_type)
        if data.feature_blocks is not None:
            a, b, kappa = em.quadratic_log_joint_terms(log_w, log_det, mu, pc,
                                                       data.center, covariance_type)
            if bool(kappa <= max_kappa):  # eager: one branch compiled, not both
                nk, sums, log_prob_sum = _sum_blocks(
                    quadratic_step, data.feature_blocks, a, b, data.feature_chunk)
                stats = em.statistics_of_quadratic_sums(nk, sums, mu, data.center,
                                                        covariance_type)
                return log_prob_sum / data.n, m_step_unchecked(
                    stats, mu, covariance_type, reg_covar)
        stats, log_prob_sum = _sum_blocks(step, data.blocks, log_w, log_det, mu, pc,
                                          covariance_type, data.chunk_size)
        return log_prob_sum / data.n, m_step_unchecked(
            em.Stats(*stats), mu, covariance_type, reg_covar
        )

    params = _cast_params((weights, means, precisions_cholesky), dtype)
    params, bounds, it, converged, failed = iterate(
        one_pass, params, max_iter, tol, prev_bound, iter_limit
    )
    return (*params, bounds, it, converged, failed)


# --------------------------------------------------------------------------
# all-reduce: a nest of sums as one tensor, one collective
# --------------------------------------------------------------------------
def _pack_dtype(leaves):
    floats = [t.dtype for t in leaves if t.dtype.is_floating]
    return max(floats, key=lambda dtype: dtype.size) if floats else tf.float64


def pack(nest, dtype=None):
    """A nest of tensors as one 1-D tensor (each leaf flattened, cast to
    ``dtype``, default the widest floating dtype among the leaves, and
    concatenated): one all-reduce sums all of it (:func:`unpack` splits it)."""
    leaves = [tf.convert_to_tensor(t) for t in tf.nest.flatten(nest)]
    dtype = dtype or _pack_dtype(leaves)
    return tf.concat([tf.reshape(tf.cast(t, dtype), [-1]) for t in leaves], 0)


def unpack(vector, like):
    """The nest ``like`` (its structure, static shapes and dtypes) from a
    :func:`pack`-ed vector.

    Example:

    >>> import tensorflow as tf
    >>> nest = (tf.ones([2, 3]), {"n": tf.constant(5, tf.int64)})
    >>> back = unpack(pack(nest) * 2, nest)
    >>> back[0].shape, int(back[1]["n"])
    (TensorShape([2, 3]), 10)
    """
    leaves = [tf.convert_to_tensor(t) for t in tf.nest.flatten(like)]
    parts = tf.split(vector, [t.shape.num_elements() for t in leaves])
    return tf.nest.pack_sequence_as(like, [
        tf.cast(tf.reshape(p, t.shape), t.dtype) for p, t in zip(parts, leaves)
    ])


def all_reduce(summed=None, first=None):
    """In a replica context, ``(summed, first)`` made the same on every
    replica by one all-reduce of one packed tensor: ``summed`` (a nest)
    summed over the replicas, ``first`` (a nest) replica 0's values (the
    others send zeros). Outside a strategy, or with one replica, the values
    themselves. Call it outside any ``tf.cond`` or loop body: a strategy
    refuses a collective inside control flow.

    Returns:
        ``(summed total, replica 0's first)`` (None for a nest not given).
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return summed, first
    parts = [nest for nest in (summed, first) if nest is not None]
    packed = pack(parts)
    if first is not None:
        n_summed = sum(int(tf.convert_to_tensor(t).shape.num_elements())
                       for t in tf.nest.flatten(summed)) if summed is not None else 0
        keep = (tf.range(int(packed.shape[0])) < n_summed) | tf.equal(
            ctx.replica_id_in_sync_group, 0)
        # tf.where, not a product: 0 * inf would be NaN
        packed = tf.where(keep, packed, tf.zeros_like(packed))
    total = unpack(ctx.all_reduce(tf.distribute.ReduceOp.SUM, packed), parts)
    return (total.pop(0) if summed is not None else None,
            total[0] if first is not None else None)


_BROADCASTS = weakref.WeakKeyDictionary()


def _multi_worker(strategy):
    return strategy.num_replicas_in_sync > len(strategy.extended.worker_devices)


def agree(nest):
    """The first replica's (worker 0's) ``nest`` on every worker, called in
    the cross-replica context of a multi-worker strategy (e.g. the initial
    parameters each worker computed from its own rows); ``nest`` itself
    without a strategy or on one machine (its replicas share the values)."""
    if not tf.distribute.has_strategy():
        return nest
    strategy = tf.distribute.get_strategy()
    if not _multi_worker(strategy):
        return nest
    packed = pack(nest)
    # one function per strategy: retraced per packed length only
    run = _BROADCASTS.get(strategy)
    if run is None:
        run = _BROADCASTS[strategy] = tf.function(
            lambda v: strategy.run(lambda u: all_reduce(first=u)[1], args=(v,)),
            autograph=False)
    out = strategy.experimental_local_results(run(packed))[0]
    return unpack(out, nest)


# --------------------------------------------------------------------------
# the streamed pass: one EM iteration over a tf.data.Dataset (or replicas)
# --------------------------------------------------------------------------
def m_step_unchecked(stats, shift, covariance_type, reg_covar):
    """:func:`keras_gmm.ops.em.m_step` without the finiteness assertion:
    ``(weights, means, precisions_cholesky)``, the factor NaN where a
    covariance is not positive definite (the caller checks: the streamed loop
    and a layer's stepwise update keep the previous parameters then)."""
    weights, means, _, prec_chol = em.m_step(
        stats, shift, covariance_type, reg_covar, check=False
    )
    return weights, means, prec_chol


_M_STEP = tf.function(m_step_unchecked, autograph=False)
# The batch steps, one per (statistics function, argument shapes and static
# values), and per strategy for the distributed one (a trace captures its
# strategy): within one, reduce_retracing keeps a ragged last batch from
# adding more than one trace, while K and D stay static for the ops. No
# AutoGraph: the ops write their branches as tf.cond.
_STEPS = {}
_DISTRIBUTED_STEPS = weakref.WeakKeyDictionary()


def _make_step(strategy, statistics):
    def counted(batch, *args):
        # the statistics, the row count and the rows holding NaN or inf,
        # packed: one all-reduce per batch, one accumulation
        finite_rows = tf.reduce_all(tf.math.is_finite(batch), axis=-1)
        nonfinite = tf.reduce_sum(tf.cast(tf.logical_not(finite_rows), batch.dtype))
        count = tf.cast(tf.shape(batch)[0], batch.dtype)
        return pack((statistics(batch, *args), count, nonfinite))

    def step(batch, *args):
        if strategy is None:
            return counted(batch, *args)
        # Each replica sums its shard; the sums of all replicas are one
        # all-reduce (SUM) of one packed tensor.
        per_replica = strategy.run(counted, args=(batch, *args))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return tf.function(step, reduce_retracing=True, autograph=False)


def _static_key(args):
    return tuple(
        (tuple(leaf.shape), leaf.dtype.name) if tf.is_tensor(leaf) else leaf
        for leaf in tf.nest.flatten(args)
    )


def _batch_step(strategy, statistics, args):
    """The compiled batch step of ``statistics`` for this strategy (None:
    none) and these arguments' shapes."""
    steps = _STEPS if strategy is None else _DISTRIBUTED_STEPS.setdefault(strategy, {})
    key = (statistics, _static_key(args))
    if key not in steps:
        steps[key] = _make_step(strategy, statistics)
    return steps[key]


class StreamedSums(NamedTuple):
    """What :func:`streamed_sums` returns.

    Attributes:
        totals: the nest of sums (the structure and dtypes of ``zero``).
        n_rows: rows seen.
        nonfinite_rows: rows holding NaN or inf among them.
    """

    totals: object
    n_rows: int
    nonfinite_rows: int


def streamed_sums(dataset, statistics, args, zero):
    """``sum over batches of statistics(batch, *args)``, streamed over
    ``dataset``: the one streamed loop of every EM-like fit (EM, the
    Bayesian mixture, ...), memory independent of the data.

    Under a ``tf.distribute`` strategy (``tf.distribute.has_strategy()``)
    the dataset is distributed over its replicas, each replica sums its part
    of a batch, and the replicas' sums (with the row counts) are one
    all-reduce of one packed tensor per batch (:func:`pack`). The totals
    accumulate in float64.

    Args:
        dataset: a finite ``tf.data.Dataset`` of ``[batch, D]`` tensors.
        statistics: ``(batch, *args) -> nest of sums`` (plain sums over the
            rows, so that sums of parts are the sum of the whole).
        args: its other arguments (tensors of static shapes, Python values).
        zero: a nest of the structure, shapes and dtypes of the totals.

    Returns:
        A :class:`StreamedSums`.
    """
    strategy, batches = None, dataset
    if tf.distribute.has_strategy():
        strategy = tf.distribute.get_strategy()
        batches = strategy.experimental_distribute_dataset(dataset)
    step = _batch_step(strategy, statistics, args)
    total = tf.cast(pack((zero, 0.0, 0.0)), tf.float64)
    for batch in batches:
        total += tf.cast(step(batch, *args), tf.float64)
    like = (zero, tf.zeros((), tf.float64), tf.zeros((), tf.float64))
    totals, n, nonfinite = unpack(total, like)
    return StreamedSums(totals, int(n), int(nonfinite))


class StreamedPass(NamedTuple):
    """One streamed EM iteration.

    Attributes:
        bound: the mean log-likelihood of the parameters passed in (Python
            float; NaN for an empty dataset).
        params: ``(weights, means, precisions_cholesky)`` after the M-step
            (unchecked: NaN where a covariance is not positive definite);
            for another EM-like fit, its parameters (any nest).
        n_rows: rows seen.
        nonfinite_rows: rows holding NaN or inf among them.
    """

    bound: float
    params: tuple
    n_rows: int
    nonfinite_rows: int


def streamed_pass(dataset, params, covariance_type, reg_covar):
    """One EM iteration streamed over ``dataset``, batch by batch
    (:func:`streamed_sums` of :func:`keras_gmm.ops.em.batch_statistics`:
    all-reduced under a strategy).

    Args:
        dataset: a finite ``tf.data.Dataset`` of ``[batch, D]`` tensors in the
            parameters' dtype (the caller checks its structure).
        params: ``(weights [K], means [K, D], precisions_cholesky)``.
        covariance_type: a covariance type's name.
        reg_covar: added to the covariance diagonals.

    Returns:
        A :class:`StreamedPass`.
    """
    weights, means, prec_chol = params
    k, d = int(means.shape[0]), int(means.shape[1])
    # the log-likelihood sum in float64 (the bound of 10^7 rows)
    zero = (em.zero_statistics(k, d, covariance_type, means.dtype),
            tf.zeros((), tf.float64))
    (stats, log_prob_sum), n, nonfinite = streamed_sums(
        dataset, em.batch_statistics, (weights, means, prec_chol, covariance_type),
        zero,
    )
    new = _M_STEP(stats, means, covariance_type, reg_covar)
    bound = float(log_prob_sum) / n if n else math.nan
    return StreamedPass(bound, tuple(new), n, nonfinite)


class StreamedResult(NamedTuple):
    """The outcome of :func:`streamed_em` (:func:`streamed_iterations`).

    Attributes:
        params: the parameters after the last successful pass.
        bounds: each iteration's lower bound (Python floats).
        converged: whether the bound changed by less than ``tol``.
        failed: whether a pass gave a non-finite bound or parameters (that
            pass's result is dropped, as in :func:`iterate`).
        nonfinite_rows: rows holding NaN or inf seen by the first pass (the
            run stops there: their statistics are meaningless).
    """

    params: tuple
    bounds: list
    converged: bool
    failed: bool
    nonfinite_rows: int


def streamed_iterations(one_pass, dataset, params, max_iter, tol,
                        prev_bound=-np.inf, callback=None):
    """Streamed passes with :func:`iterate`'s rule: at most ``max_iter``
    passes, converged when the bound changes by less than ``tol``, failed
    (previous parameters kept) when a pass gives non-finite values; a pass
    that saw rows holding NaN or inf ends the run.

    Args:
        one_pass: ``(dataset, params) -> StreamedPass`` (e.g.
            :func:`streamed_pass`; any EM-like fit's, over
            :func:`streamed_sums`).
        dataset: a finite ``tf.data.Dataset``.
        params: the initial parameters (any nest of tensors).
        max_iter: the most passes; ``tol``: the convergence threshold.
        prev_bound: the bound before the first pass (to continue a run).
        callback: optional ``(bound, previous_bound) -> None`` after each pass
            (a progress bar).

    Returns:
        A :class:`StreamedResult`.
    """
    bounds, prev = [], prev_bound
    for _ in range(max_iter):
        step = one_pass(dataset, params)
        if step.nonfinite_rows:
            return StreamedResult(params, bounds, False, True, step.nonfinite_rows)
        bounds.append(step.bound)
        ok = math.isfinite(step.bound) and all(
            bool(tf.reduce_all(tf.math.is_finite(t)))
            for t in tf.nest.flatten(step.params)
        )
        if callback is not None:
            callback(step.bound, prev)
        if not ok:
            return StreamedResult(params, bounds, False, True, 0)
        params = step.params
        if abs(step.bound - prev) < tol:
            return StreamedResult(params, bounds, True, False, 0)
        prev = step.bound
    return StreamedResult(params, bounds, False, False, 0)


def streamed_em(dataset, params, covariance_type, reg_covar, max_iter, tol,
                prev_bound=-np.inf, callback=None):
    """EM by streamed passes (:func:`streamed_pass`), with
    :func:`streamed_iterations`' rule.

    Args:
        dataset, params, covariance_type, reg_covar: as :func:`streamed_pass`.
        max_iter, tol, prev_bound, callback: as :func:`streamed_iterations`.

    Returns:
        A :class:`StreamedResult`.
    """
    return streamed_iterations(
        lambda data, p: streamed_pass(data, p, covariance_type, reg_covar),
        dataset, tuple(params), max_iter, tol, prev_bound, callback,
    )
