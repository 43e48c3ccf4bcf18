"""The one EM loop: every EM-like fit of keras_gmm iterates through here.

:func:`iterate` is EM's outer loop as one ``tf.while_loop``: a pass gives the
lower bound of the current parameters and the parameters after the M-step;
the loop stops after ``max_iter`` passes, when the bound changes by less than
``tol`` (scikit-learn's rule), or when a pass gives non-finite parameters (the
previous ones are kept and ``failed`` is set: a failed Cholesky never turns a
good model into a NaN model). Its callers:

- :func:`em_iterations`: batch EM over in-memory data, compiled whole with
  XLA, the data walked in fixed-size chunks (``GaussianMixtureEM.fit``);
- the MAP-EM of the weight prior (:mod:`keras_gmm.regularizers`);
- the streamed pass below, one pass per iteration over a ``tf.data.Dataset``,
  each replica's statistics all-reduced under a ``tf.distribute`` strategy.

The per-iteration math (E-step, statistics, M-step) is :mod:`keras_gmm.ops.em`.
"""

import math
import weakref
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from keras_gmm.ops import em

__all__ = [
    "iterate", "em_iterations", "m_step_unchecked", "StreamedPass",
    "StreamedResult", "streamed_pass", "streamed_em",
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


def em_iterations(
    x, weights, means, precisions_cholesky, covariance_type, reg_covar, max_iter,
    tol, chunk_size=None, prev_bound=-np.inf, iter_limit=None,
):
    """Up to ``max_iter`` EM iterations over in-memory data, in one graph.

    Meant to be wrapped in ``tf.function(jit_compile=True)``: the iterations
    are a ``tf.while_loop`` and each pass walks the data in chunks of
    ``chunk_size`` rows (a ``tf.while_loop`` too; the last chunk padded and
    masked), so the
    working set is ``O(chunk_size * K * D)`` whatever ``N``.

    Args:
        x: ``[N, D]`` data (static shape).
        weights, means, precisions_cholesky: initial parameters.
        covariance_type: one of ``COVARIANCE_TYPES``.
        reg_covar: added to the covariance diagonals.
        max_iter: Python int, the most iterations.
        tol: stop when the lower bound changes by less than ``tol``.
        chunk_size: rows per chunk (default :func:`default_chunk_size`).
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
    dtype = x.dtype
    if chunk_size is None:
        chunk_size = em.default_chunk_size(k, d, covariance_type)
    chunk_size = min(int(chunk_size), n)
    n_chunks = -(-n // chunk_size)
    reg_covar = tf.cast(reg_covar, dtype)
    tol = tf.cast(tol, dtype)

    def chunk(i):
        # The last chunk repeats the final row up to chunk_size rows, masked
        # out: one chunk graph to compile, not a second one for the tail.
        rows = i * chunk_size + tf.range(chunk_size)
        if n % chunk_size == 0:
            return tf.gather(x, rows), None
        return tf.gather(x, tf.minimum(rows, n - 1)), tf.cast(rows < n, dtype)

    def one_pass(params):
        w, mu, pc = params

        def body(i, stats, log_prob_sum):
            rows, mask = chunk(i)
            s, lp = em.batch_statistics(rows, w, mu, pc, covariance_type, mask=mask)
            return i + 1, em.add_statistics(stats, s), log_prob_sum + lp

        zero = em.zero_statistics(k, d, covariance_type, dtype)
        _, stats, log_prob_sum = tf.while_loop(
            lambda i, *_: i < n_chunks, body, (0, zero, tf.zeros((), dtype))
        )
        new_w, new_mu, _, new_pc = em.m_step(stats, mu, covariance_type, reg_covar)
        return log_prob_sum / n, (new_w, new_mu, new_pc)

    params = tuple(
        tf.cast(t, dtype) for t in (weights, means, precisions_cholesky)
    )
    params, bounds, it, converged, failed = iterate(
        one_pass, params, max_iter, tol, prev_bound, iter_limit
    )
    return (*params, bounds, it, converged, failed)


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


def _batch_statistics(batch, weights, means, precisions_cholesky, covariance_type):
    """One batch's statistics, log-likelihood sum, row count and number of
    rows holding NaN or inf."""
    stats, log_prob_sum = em.batch_statistics(
        batch, weights, means, precisions_cholesky, covariance_type
    )
    finite_rows = tf.reduce_all(tf.math.is_finite(batch), axis=-1)
    nonfinite = tf.reduce_sum(tf.cast(tf.logical_not(finite_rows), batch.dtype))
    return stats, log_prob_sum, tf.cast(tf.shape(batch)[0], batch.dtype), nonfinite


_M_STEP = tf.function(m_step_unchecked, autograph=False)
# The batch steps, one per mixture shape (K, D, dtype, covariance type), and
# per strategy for the distributed one (a trace captures its strategy): within
# one, reduce_retracing keeps a ragged last batch from adding more than one
# trace, while K and D stay static for the ops. No AutoGraph: the ops write
# their branches as tf.cond.
_STEPS = {}
_DISTRIBUTED_STEPS = weakref.WeakKeyDictionary()


def _make_step(strategy):
    def batch_step(batch, weights, means, precisions_cholesky, covariance_type):
        if strategy is None:
            return _batch_statistics(
                batch, weights, means, precisions_cholesky, covariance_type
            )
        # Each replica computes the statistics of its shard; they are plain
        # sums, so one all-reduce (SUM) gives the statistics of the batch.
        per_replica = strategy.run(
            _batch_statistics,
            args=(batch, weights, means, precisions_cholesky, covariance_type),
        )
        return tf.nest.map_structure(
            lambda t: strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None),
            per_replica,
        )

    return tf.function(batch_step, reduce_retracing=True, autograph=False)


def _batch_step(strategy, means, covariance_type):
    """The compiled batch step for this strategy (None: none) and mixture."""
    steps = _STEPS if strategy is None else _DISTRIBUTED_STEPS.setdefault(strategy, {})
    key = (tuple(means.shape), means.dtype, covariance_type)
    if key not in steps:
        steps[key] = _make_step(strategy)
    return steps[key]


class StreamedPass(NamedTuple):
    """One streamed EM iteration.

    Attributes:
        bound: the mean log-likelihood of the parameters passed in (Python
            float; NaN for an empty dataset).
        params: ``(weights, means, precisions_cholesky)`` after the M-step
            (unchecked: NaN where a covariance is not positive definite).
        n_rows: rows seen.
        nonfinite_rows: rows holding NaN or inf among them.
    """

    bound: float
    params: tuple
    n_rows: int
    nonfinite_rows: int


def streamed_pass(dataset, params, covariance_type, reg_covar):
    """One EM iteration streamed over ``dataset``, batch by batch.

    Under a ``tf.distribute`` strategy (``tf.distribute.has_strategy()``)
    the dataset is distributed over its replicas and each batch's statistics
    are all-reduced; memory does not grow with the data either way.

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
    total = em.zero_statistics(k, d, covariance_type, means.dtype)
    log_prob_sum, n, nonfinite = 0.0, 0.0, 0.0
    strategy, batches = None, dataset
    if tf.distribute.has_strategy():
        strategy = tf.distribute.get_strategy()
        batches = strategy.experimental_distribute_dataset(dataset)
    step = _batch_step(strategy, means, covariance_type)
    for batch in batches:
        stats, lp, count, bad = step(batch, weights, means, prec_chol, covariance_type)
        total = em.add_statistics(total, stats)
        log_prob_sum += float(lp)
        n += float(count)
        nonfinite += float(bad)
    new = _M_STEP(total, means, covariance_type, reg_covar)
    bound = log_prob_sum / n if n else math.nan
    return StreamedPass(bound, tuple(new), int(n), int(nonfinite))


class StreamedResult(NamedTuple):
    """The outcome of :func:`streamed_em`.

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


def streamed_em(dataset, params, covariance_type, reg_covar, max_iter, tol,
                prev_bound=-np.inf, callback=None):
    """EM by streamed passes, with :func:`iterate`'s rule: at most
    ``max_iter`` passes, converged when the bound changes by less than
    ``tol``, failed (previous parameters kept) when a pass gives non-finite
    values.

    Args:
        dataset, params, covariance_type, reg_covar: as :func:`streamed_pass`.
        max_iter: the most passes; ``tol``: the convergence threshold.
        prev_bound: the bound before the first pass (to continue a run).
        callback: optional ``(bound, previous_bound) -> None`` after each pass
            (a progress bar).

    Returns:
        A :class:`StreamedResult`.
    """
    params = tuple(params)
    bounds, prev = [], prev_bound
    for _ in range(max_iter):
        step = streamed_pass(dataset, params, covariance_type, reg_covar)
        if step.nonfinite_rows:
            return StreamedResult(params, bounds, False, True, step.nonfinite_rows)
        bounds.append(step.bound)
        ok = math.isfinite(step.bound) and all(
            bool(tf.reduce_all(tf.math.is_finite(t))) for t in step.params
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
