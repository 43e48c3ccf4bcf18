"""Tests for keras_gmm.ops.em_driver: the one EM loop."""

import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import make_blobs

from keras_gmm.ops import em, em_driver

COV_TYPES = ("full", "tied", "diag", "spherical")
REG = 1e-6


def _blobs(seed=0, n=240, d=3, k=3):
    x, _ = make_blobs(n_samples=n, n_features=d, centers=k, random_state=seed)
    return x


def _random_resp(n, k, seed):
    r = np.random.default_rng(seed).uniform(size=(n, k))
    return r / r.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------
# iterate: the outer loop
# --------------------------------------------------------------------------
def test_iterate_stops_at_convergence_and_keeps_the_bounds():
    # bound -p, p halves each pass: |change| = p / 2 < tol first at p = 2^-10
    params, bounds, n, converged, failed = em_driver.iterate(
        lambda p: (-p, p / 2.0), tf.constant(1.0, tf.float64), 50, 1e-3
    )
    assert bool(converged) and not bool(failed) and int(n) == 11
    np.testing.assert_allclose(bounds.numpy()[:11], -(0.5 ** np.arange(11)))
    assert np.all(np.isnan(bounds.numpy()[11:]))
    np.testing.assert_allclose(float(params), 0.5**11)


def test_iterate_drops_a_non_finite_pass_and_reports_it():
    # the third pass gives NaN parameters: the second pass's are returned
    def one_pass(p):
        new = tf.where(p < 0.3, tf.constant(np.nan, tf.float64), p / 2.0)
        return -p, new

    params, bounds, n, converged, failed = em_driver.iterate(
        one_pass, tf.constant(1.0, tf.float64), 10, 0.0
    )
    assert bool(failed) and not bool(converged) and int(n) == 3
    np.testing.assert_allclose(float(params), 0.25)


def test_iterate_respects_iter_limit_and_max_iter():
    run = lambda limit: em_driver.iterate(  # noqa: E731
        lambda p: (-p, p / 2.0), tf.constant(1.0, tf.float64), 5, 0.0,
        iter_limit=limit,
    )
    assert int(run(tf.constant(2))[2]) == 2
    assert int(run(None)[2]) == 5


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_em_iterations_equals_step_by_step(covariance_type):
    x = tf.constant(_blobs(n=250, d=3, k=3))
    resp = _random_resp(250, 3, seed=4)
    w, m, _, p = em.parameters_from_resp(x, resp, covariance_type, REG)
    params, bounds = (w, m, p), []
    for _ in range(4):
        stats, lp = em.batch_statistics(x, *params, covariance_type)
        bounds.append(float(lp) / 250)
        new = em.m_step(stats, params[1], covariance_type, REG)
        params = (new[0], new[1], new[3])
    run = tf.function(em_driver.em_iterations, jit_compile=True)
    # chunks of 64 rows plus a tail of 58; two calls of 2 iterations
    out1 = run(x, w, m, p, covariance_type, REG, 4, 0.0, 64, -np.inf, 2)
    out2 = run(x, *out1[:3], covariance_type, REG, 4, 0.0, 64, out1[3][1], 2)
    assert int(out1[4]) == 2 and int(out2[4]) == 2
    got = np.concatenate([out1[3].numpy()[:2], out2[3].numpy()[:2]])
    np.testing.assert_allclose(got, bounds, rtol=1e-10)
    for a, b in zip(out2[:3], params):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-8, atol=1e-10)
    assert not bool(out2[5]) and not bool(out2[6])
    # a large tol converges at the second iteration
    out = run(x, w, m, p, covariance_type, REG, 4, 1e3, 64)
    assert bool(out[5]) and int(out[4]) == 2  # as scikit-learn's n_iter_


def test_em_iterations_reports_a_failed_cholesky():
    x = tf.constant(np.repeat(np.arange(4.0)[:, None], 10, axis=0) @ np.ones((1, 2)))
    w = tf.constant([0.5, 0.5], tf.float64)
    m = tf.constant([[0.0, 0.0], [3.0, 3.0]], tf.float64)
    p = tf.constant(np.stack([np.eye(2)] * 2))
    out = tf.function(em_driver.em_iterations, jit_compile=True)(x, w, m, p, "full", 0.0, 5, 0.0)
    assert bool(out[6]) and int(out[4]) == 1
    np.testing.assert_array_equal(out[2].numpy(), p.numpy())  # last good parameters




# --------------------------------------------------------------------------
# the streamed pass and loop (tf.data.Dataset, optionally all-reduced)
# --------------------------------------------------------------------------
def _start(x, covariance_type, seed=4):
    resp = _random_resp(len(x), 3, seed=seed)
    w, m, _, p = em.parameters_from_resp(tf.constant(x), resp, covariance_type, REG)
    return w, m, p


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_streamed_pass_is_one_em_iteration_over_all_batches(covariance_type):
    x = _blobs(n=250)
    params = _start(x, covariance_type)
    stats, lp = em.batch_statistics(tf.constant(x), *params, covariance_type)
    ref = em.m_step(stats, params[1], covariance_type, REG)
    # batches of 64 rows plus a ragged tail of 58
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(64)
    step = em_driver.streamed_pass(dataset, params, covariance_type, REG)
    assert step.n_rows == 250 and step.nonfinite_rows == 0
    np.testing.assert_allclose(step.bound, float(lp) / 250, rtol=1e-12)
    for got, want in zip(step.params, (ref[0], ref[1], ref[3])):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("covariance_type", ["full", "spherical"])
def test_streamed_em_follows_the_in_memory_loop(covariance_type):
    x = _blobs(n=240)
    params = _start(x, covariance_type)
    run = tf.function(em_driver.em_iterations, jit_compile=True)
    *ref, bounds, n_iter, converged, failed = run(
        tf.constant(x), *params, covariance_type, REG, 30, 1e-4
    )
    seen = []
    result = em_driver.streamed_em(
        tf.data.Dataset.from_tensor_slices(x).batch(100), params, covariance_type,
        REG, 30, 1e-4, callback=lambda bound, prev: seen.append((bound, prev)),
    )
    assert result.converged == bool(converged) and not result.failed
    assert len(result.bounds) == int(n_iter) == len(seen)
    np.testing.assert_allclose(result.bounds, bounds.numpy()[: int(n_iter)], rtol=1e-10)
    assert seen[0][1] == -np.inf and seen[1][1] == result.bounds[0]
    for got, want in zip(result.params, ref):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-8, atol=1e-10)


def test_streamed_em_stops_at_non_finite_rows_and_keeps_the_parameters():
    x = _blobs(n=240)
    x[[17, 200], 1] = np.nan
    params = _start(_blobs(n=240), "diag")
    result = em_driver.streamed_em(
        tf.data.Dataset.from_tensor_slices(x).batch(50), params, "diag", REG, 5, 0.0
    )
    assert result.nonfinite_rows == 2 and result.failed and result.bounds == []
    for got, want in zip(result.params, params):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_streamed_em_reports_a_failed_cholesky_without_raising():
    # collapsed data and reg_covar=0: the M-step's factor is NaN; as
    # `iterate`, the last good parameters are kept and `failed` is set
    x = np.repeat(np.arange(4.0)[:, None], 10, axis=0) @ np.ones((1, 2))
    params = (tf.constant([0.5, 0.5], tf.float64),
              tf.constant([[0.0, 0.0], [3.0, 3.0]], tf.float64),
              tf.constant(np.stack([np.eye(2)] * 2)))
    result = em_driver.streamed_em(
        tf.data.Dataset.from_tensor_slices(x).batch(16), params, "full", 0.0, 5, 0.0
    )
    assert result.failed and not result.converged and len(result.bounds) == 1
    np.testing.assert_array_equal(result.params[2].numpy(), params[2].numpy())


def test_streamed_pass_of_an_empty_dataset_has_no_bound():
    params = _start(_blobs(n=240), "tied")
    empty = tf.data.Dataset.from_tensor_slices(np.zeros((0, 3))).batch(8)
    step = em_driver.streamed_pass(empty, params, "tied", REG)
    assert step.n_rows == 0 and np.isnan(step.bound)


def test_m_step_unchecked_gives_nan_where_m_step_raises():
    stats = em.Stats(tf.constant([5.0, 5.0], tf.float64), tf.zeros((2, 2), tf.float64),
                     -tf.ones((2, 2), tf.float64))  # negative variances
    shift = tf.zeros((2, 2), tf.float64)
    with pytest.raises(ValueError, match="ill-defined empirical covariance"):
        em.m_step(stats, shift, "diag", 0.0)
    w, means, prec_chol = em_driver.m_step_unchecked(stats, shift, "diag", 0.0)
    assert np.all(np.isnan(prec_chol.numpy())) and np.all(np.isfinite(means.numpy()))
    np.testing.assert_allclose(w.numpy(), [0.5, 0.5])


def _mirrored():
    """A MirroredStrategy over the two logical CPUs, with collective keys of
    its own: a strategy numbers its collectives from the same keys as any
    earlier one, and the runtime remembers an earlier collective's shape
    under its keys (TensorFlow's own tests raise this base per strategy)."""
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2
    tf.distribute.MirroredStrategy._collective_key_base += 100_000
    return tf.distribute.MirroredStrategy(devices)


def test_streamed_pass_under_mirrored_strategy_is_one_all_reduce_per_batch(
        monkeypatch):
    x = _blobs(n=240).astype("float32")
    params = tuple(tf.cast(t, tf.float32) for t in _start(x.astype(float), "full"))
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(60)
    single = em_driver.streamed_pass(dataset, params, "full", REG)
    strategy = _mirrored()
    reduces = []
    reduce = strategy.reduce

    def counting_reduce(op, value, axis):
        reduces.append(value)
        return reduce(op, value, axis)

    monkeypatch.setattr(strategy, "reduce", counting_reduce)
    with strategy.scope():
        mirrored = em_driver.streamed_pass(dataset, params, "full", REG)
    # the statistics went through this strategy's replica step, whose one
    # trace reduces one packed 1-D tensor (statistics, counts) per batch
    step = em_driver._batch_step(strategy, em.batch_statistics, (*params, "full"))
    assert step.experimental_get_tracing_count() == len(reduces) == 1
    assert [v.shape.rank for v in strategy.experimental_local_results(reduces[0])] == [1, 1]
    assert mirrored.n_rows == 240 and mirrored.nonfinite_rows == 0
    np.testing.assert_allclose(mirrored.bound, single.bound, rtol=1e-5)
    for got, want in zip(mirrored.params, single.params):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)


def test_pack_and_unpack_keep_the_structure_shapes_and_dtypes():
    stats = em.zero_statistics(3, 2, "full", tf.float64)
    nest = (em.Stats(*(t + i for i, t in enumerate(stats))), tf.constant(7, tf.int64))
    packed = em_driver.pack(nest)
    assert packed.dtype == tf.float64 and packed.shape == [3 + 6 + 12 + 1]
    back = em_driver.unpack(packed, nest)
    assert isinstance(back[0], em.Stats) and back[1].dtype == tf.int64
    for a, b in zip(tf.nest.flatten(back), tf.nest.flatten(nest)):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_all_reduce_sums_and_broadcasts_the_first_replica_in_one():
    strategy = _mirrored()

    def replica_fn():
        i = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group,
                    tf.float64)
        # replica 1 holds an inf: first_replica must not turn it into NaN
        nest = (tf.stack([i + 1.0, tf.where(i > 0, tf.constant(np.inf, tf.float64), 2.0)]),
                tf.cast(i, tf.int64) + 3)
        return em_driver.all_reduce(nest)[0], em_driver.all_reduce(first=nest)[1], (
            em_driver.all_reduce(nest, nest))

    out = tf.function(lambda: strategy.run(replica_fn))()
    for total, first, both in strategy.experimental_local_results(out):
        for t, f in ((total, first), both):  # alone or together in one
            np.testing.assert_array_equal(t[0].numpy(), [3.0, np.inf])
            assert int(t[1]) == 7 and t[1].dtype == tf.int64
            np.testing.assert_array_equal(f[0].numpy(), [1.0, 2.0])
            assert int(f[1]) == 3
    # no strategy: the values themselves
    nest = (tf.ones([2]),)
    assert em_driver.all_reduce(nest)[0] is nest and em_driver.agree(nest) is nest


def _scaled_sum(batch, scale):
    return tf.reduce_sum(batch) * scale


def test_streamed_iterations_run_any_em_like_pass():
    # a pass whose "parameters" halve: converged as iterate's rule says
    def one_pass(dataset, p):
        sums = em_driver.streamed_sums(dataset, _scaled_sum, (p,),
                                       tf.zeros((), tf.float64))
        assert sums.n_rows == 10 and float(sums.totals) == 20.0 * float(p)
        return em_driver.StreamedPass(-float(p), p / 2.0, sums.n_rows, 0)

    dataset = tf.data.Dataset.from_tensor_slices(np.ones((10, 2))).batch(4)
    result = em_driver.streamed_iterations(
        one_pass, dataset, tf.constant(1.0, tf.float64), 50, 1e-3)
    assert result.converged and not result.failed and len(result.bounds) == 11


def test_streamed_steps_keep_static_shapes_across_mixture_shapes():
    # one step per mixture shape: fitting other K and D in between never
    # relaxes a step's shapes (the ops need a static event size)
    for d, k in ((3, 3), (2, 3), (3, 2), (3, 3)):
        x = make_blobs(n_samples=90, n_features=d, centers=k, random_state=0)[0]
        resp = _random_resp(90, k, seed=1)
        w, m, _, p = em.parameters_from_resp(tf.constant(x), resp, "diag", REG)
        for batch in (40, 25):  # ragged tails
            step = em_driver.streamed_pass(
                tf.data.Dataset.from_tensor_slices(x).batch(batch), (w, m, p), "diag", REG
            )
            assert np.isfinite(step.bound)


# --------------------------------------------------------------------------
# in-memory EM for a layer's fit: eager, traced, XLA-compiled blocks
# --------------------------------------------------------------------------
def test_chunked_sum_counts_only_the_valid_rows():
    x = tf.constant(np.arange(20.0).reshape(10, 2))
    zero = tf.zeros((), tf.float64)

    def row_sum(rows, mask):
        total = tf.reduce_sum(rows, axis=1)
        return tf.reduce_sum(total if mask is None else total * mask)

    full = em_driver.chunked_sum(row_sum, x, zero, 4)  # a masked tail
    part = em_driver.chunked_sum(row_sum, x, zero, 4, n_valid=tf.constant(7))
    assert float(full) == np.arange(20.0).sum()
    assert float(part) == np.arange(14.0).sum()


@pytest.mark.parametrize("covariance_type,features",
                         [(c, True) for c in COV_TYPES] + [("full", False)])
def test_in_memory_em_blocks_equal_the_one_graph_loop(covariance_type, features,
                                                      monkeypatch):
    # XLA-compiled fixed-shape blocks (3 blocks of 96 rows, the last padded;
    # "full": of its quadratic features, or of the rows when they would
    # take more than FEATURE_BYTES) give em_iterations' run, and one
    # compilation serves two data sizes
    monkeypatch.setattr(em_driver, "BLOCK_ROWS", 96)
    if not features:
        monkeypatch.setattr(em_driver, "FEATURE_BYTES", 0)
    x = tf.constant(_blobs(n=250, d=3, k=3))
    params = em.parameters_from_resp(x, _random_resp(250, 3, seed=4),
                                     covariance_type, REG)
    params = (params[0], params[1], params[3])
    ref = em_driver.em_iterations(x, *params, covariance_type, REG, 6, 0.0, 32)
    data = em_driver.InMemoryData(x, 3, covariance_type, 32, compiled=True)
    assert data.block_rows == 96 and len(data.blocks) == 3
    on_features = features and covariance_type == "full"
    assert (data.feature_blocks is not None) == on_features
    out = em_driver.in_memory_em(data, *params, covariance_type, REG, 6, 0.0)
    assert int(out[4]) == int(ref[4]) == 6
    np.testing.assert_allclose(out[3].numpy(), ref[3].numpy(), rtol=1e-12)
    for a, b in zip(out[:3], ref[:3]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)
    if on_features:  # 9 features a row: 3 blocks of 96 rows, chunks of 32
        assert (data.feature_chunk, data.feature_block_rows) == (32, 96)
        assert len(data.feature_blocks) == 3
        step = em_driver.compiled(em_driver._quadratic_block_statistics, 3, 3,
                                  "float64", 32, 96)
    else:
        step = em_driver.compiled(em_driver._block_statistics, 3, 3,
                                  covariance_type, "float64", 32, 96)
    other = em_driver.InMemoryData(x[:130], 3, covariance_type, 32, compiled=True)
    em_driver.in_memory_em(other, *params, covariance_type, REG, 2, 0.0)
    assert step.experimental_get_tracing_count() == 1


def _far_tight_mixture(rng):
    # a tight component (sd 1e-3) 100 units from a wide one: features centred
    # on the data mean (~50 from each) would lose every digit of the tight
    # covariance (kappa ~ 5e9)
    x = np.concatenate([rng.normal(size=(600, 2)) * 1e-3,
                        100.0 + rng.normal(size=(600, 2))])
    resp = np.zeros((1200, 2))
    resp[:600, 0] = resp[600:, 1] = 1.0
    return x, resp


def _correlated_mixture(rng):
    # two components at the data mean, features correlated 0.99999: the
    # expanded quadratic form cancels terms 1e5 times its value (kappa ~ 2e5)
    chol = np.linalg.cholesky(np.array([[1.0, 0.99999], [0.99999, 1.0]]))
    x = rng.normal(size=(1200, 2)) @ chol.T
    return x, rng.dirichlet([1.0, 1.0], size=1200)


@pytest.mark.parametrize("mixture", [_far_tight_mixture, _correlated_mixture])
def test_full_passes_leave_the_features_where_they_would_be_inaccurate(mixture,
                                                                       monkeypatch):
    # float32: kappa flags both mixtures, so every pass runs the exact blocks
    # (the same numbers as a fit without features); features forced whatever
    # kappa lose the tight covariance (or its factor's finiteness)
    x, resp = mixture(np.random.default_rng(0))
    p64 = em.parameters_from_resp(tf.constant(x), tf.constant(resp), "full", 0.0)
    ref = em_driver.em_iterations(tf.constant(x), p64[0], p64[1], p64[3], "full",
                                  0.0, 3, 0.0, 256)
    params = tuple(tf.cast(p, tf.float32) for p in (p64[0], p64[1], p64[3]))

    def run():
        data = em_driver.InMemoryData(x.astype("float32"), 2, "full", 256,
                                      compiled=True)
        return data, em_driver.in_memory_em(data, *params, "full", 0.0, 3, 0.0)

    data, guarded = run()
    log_w, log_det = em_driver.log_terms(*params, "full")
    kappa = em.quadratic_log_joint_terms(log_w, log_det, params[1], params[2],
                                         data.center, "full")[2]
    assert float(kappa) * np.finfo(np.float32).eps > em.EXPANSION_RTOL
    with monkeypatch.context() as patch:
        patch.setattr(em_driver, "FEATURE_BYTES", 0)
        without, exact = run()
    assert data.feature_blocks is not None and without.feature_blocks is None
    for a, b in zip(guarded, exact):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    if mixture is _correlated_mixture:
        return
    cov, cov_ref = (em.covariances_from_precisions_cholesky(o[2], "full").numpy()[0]
                    for o in (guarded, ref))
    assert not bool(guarded[6]) and int(guarded[4]) == 3
    np.testing.assert_allclose(cov, cov_ref, rtol=1e-3, atol=1e-9)
    monkeypatch.setattr(em, "EXPANSION_RTOL", 1e9)  # features whatever kappa
    _, expanded = run()
    cov = em.covariances_from_precisions_cholesky(expanded[2], "full").numpy()[0]
    assert bool(expanded[6]) or np.max(np.abs(cov - cov_ref)) > 1e-2 * np.max(cov_ref)


def test_feature_layout_keeps_the_features_under_their_byte_budget(monkeypatch):
    # 152 features a row for D = 16 (8.5x the data): a fit that would need
    # more than FEATURE_BYTES of them runs the exact blocks
    chunk, rows = em_driver.feature_layout(200_000, 16, "full", 2048, "float32")
    assert chunk <= 2048 and rows % chunk == 0
    assert -(-200_000 // rows) * rows * 152 * 4 <= em_driver.FEATURE_BYTES
    assert em_driver.feature_layout(3_000_000, 16, "full", 2048, "float32") is None
    for other in ("tied", "diag", "spherical"):
        assert em_driver.feature_layout(200_000, 16, other, 2048, "float32") is None
    monkeypatch.setattr(em_driver, "FEATURE_BYTES", 0)
    data = em_driver.InMemoryData(np.zeros((300, 2)), 2, "full", 64, compiled=True)
    assert data.feature_blocks is None and len(data.blocks) == 1


def _small_fits(monkeypatch, factor, fits):
    """``fits`` in-memory EM runs of one small shape with
    ``TRACE_COST_FACTOR = factor``: ``(results, traced tf.function or None)``."""
    monkeypatch.setattr(em_driver, "TRACE_COST_FACTOR", factor)
    x = tf.constant(_blobs(n=90, d=2, k=3, seed=5))
    params = em.parameters_from_resp(x, _random_resp(90, 3, seed=2), "full", REG)
    params = (params[0], params[1], params[3])
    data = em_driver.InMemoryData(x, 3, "full")
    assert not data.compiled and data.chunk_size == 90  # one chunk
    key = (em_driver.em_iterations, 90, 3, 2, "full", "float64", 90, 7)
    em_driver._EAGER_SECONDS.pop(key, None)
    em_driver._COMPILED.pop((*key, False), None)
    results = [em_driver.in_memory_em(data, *params, "full", REG, 7, 1e-8)
               for _ in range(fits)]
    return results, em_driver._COMPILED.get((*key, False))


def test_small_data_run_op_by_op_until_that_costs_a_trace(monkeypatch):
    # the first run is op by op; once the seconds spent so reach the trace's
    # price (here: at once), one trace serves every later run of the shape
    results, traced = _small_fits(monkeypatch, 0.0, 4)
    assert traced is not None and traced.experimental_get_tracing_count() == 1
    for later in results[1:]:
        for a, b in zip(results[0], later):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)
    # a trace priced higher than any rent: never traced
    _, traced = _small_fits(monkeypatch, float("inf"), 3)
    assert traced is None


def test_use_xla_follows_the_work_of_a_pass():
    assert not em_driver.use_xla(em_driver.pass_work(178, 3, 13, "full"))
    assert em_driver.use_xla(em_driver.pass_work(200_000, 16, 16, "full"))
    # "diag" does N K D work a pass, "full" N K D^2
    assert em_driver.pass_work(10, 2, 3, "full") == 3 * em_driver.pass_work(
        10, 2, 3, "diag")
