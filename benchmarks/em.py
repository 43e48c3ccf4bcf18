"""EM benchmark: keras_gmm's GaussianMixtureEM against scikit-learn's GaussianMixture.

Run from the repository root::

    PYTHONPATH=. python -m benchmarks.em            # all cases (several minutes)
    PYTHONPATH=. python -m benchmarks.em --quick    # smoke run: N / 20, 2 repeats
    PYTHONPATH=. python -m benchmarks.em --case full --case init --check
    PYTHONPATH=. python -m benchmarks.em --case small --case full --check

(``--case small|full|diag|stream|init|bayesian|all``, repeatable, default
``all`` (every case but ``bayesian``);
``--repeats N``, ``--n-divisor N`` (divides N of the full, diag and init
cases; 20 with ``--quick``), ``--max-iter N``, ``--batch-size N|none`` (ours; default
none: the layer's own chunk size), ``--sklearn-threads auto|N``, ``--memory-limit-gib X``,
``--output PATH``; default ``benchmarks/results/em.json``, ``em_quick.json``
with ``--quick``; the JSON is rewritten after every case.
``--check`` exits with status 1 when a target printed MISSED is missed
(not with ``--quick``: the targets are for the full sizes), or the two final
lower bounds of a case differ by more than 1e-4 relative, or their
``n_iter_`` differ. A memory guard ends the run with
status 3, printing the finished cases, if the process's RSS passes
``--memory-limit-gib`` (default 75% of the memory available at start), rather
than let the OOM killer choose a process of the machine.)

Data: 8 Gaussian blobs (seeded; random centres in [-8, 8]^D, each blob an
anisotropic, correlated Gaussian ``c_b + z A_b``, blob weights from a
Dirichlet), float32.

Cases
-----
- ``small``: the first fit a user waits for, on the data sizes scikit-learn
  is mostly used for: scikit-learn's wine (178 x 13, K=3, "full"), digits
  (1797 x 64, K=10, "diag") and ``make_blobs(20000, 8, centers=8,
  random_state=0)`` (K=8, "full"); each library with its defaults and seed 0
  on the arrays as loaded. Every measurement runs in a fresh process
  (``--small-worker``): imports and data loading are not timed; the first
  ``fit`` of a new estimator is, then three more fits of new estimators in
  the same process (the "later fit": their mean, since ours runs op by op
  for the first fits of a shape and then traces its graph once, the cost
  moving between them). ``--repeats`` processes per library and dataset
  (alternating), first fits' medians reported; scikit-learn in separate processes
  with 1 and ``os.cpu_count()`` BLAS/OpenMP threads, the faster kept. Target:
  ours' first fit no slower than scikit-learn's (ratio >= 1).
- ``full``: ``covariance_type="full"``, N=200,000, D=16, K=16.
- ``diag``: ``covariance_type="diag"``, N=1,000,000, D=32, K=64.

Both sides start from the same parameters: scikit-learn's k-means++ seeding
(``sklearn.cluster.kmeans_plusplus``) labels every point with its nearest
seed, and the weights, means and (``reg_covar``-regularised) precisions of
those clusters, computed in float64 and cast to float32, go to both as
``weights_init``, ``means_init`` and ``precisions_init`` (scikit-learn's
shapes: ``[K, D, D]`` full, ``[K, D]`` diag). Both run a fixed number of
iterations (``tol=0``, ``max_iter=10``, ``n_init=1``) in float32 (scikit-learn
keeps float32 input, and float32 initial parameters keep it there) on the
machine's cores: TensorFlow's default intra-op pool (all cores) for ours; for
scikit-learn, its BLAS and OpenMP pools set with threadpoolctl to the faster
of 1 thread and ``os.cpu_count()`` threads, picked per case by one trial fit
of each (``--sklearn-threads auto``, the default; the trial times are
printed and saved). On a 2-core machine that another process also uses,
OpenBLAS/OpenMP with 2 threads was found 5-15x slower than with 1 (threads
spinning for a busy core), which would flatter ours; "auto" keeps the peer at
its best. Ours is called as a user would:
``GaussianMixtureEM(...).fit(x, verbose=0)`` (its default chunking,
``ops.em.default_chunk_size``).

What is measured (times in one process; memory in fresh ones, see below):

- **first fit**: the first whole ``fit`` of each side in the case (scikit-learn
  first, so its figures are printed even if ours then trips the memory
  guard), ours on a new layer, so including tracing; scikit-learn has
  nothing to compile, so ours' first fit is compared with scikit-learn's
  median whole fit (target: >= 3x faster on the full case).
- **s/iter**: then ``--repeats`` rounds alternating the two sides (the side
  that starts alternates too), each round one ``max_iter=10`` fit and one
  ``max_iter=1`` fit per side; ours reuses its (traced) layer, scikit-learn
  gets a new estimator. Reported: the median whole-fit seconds divided by
  ``n_iter_`` (the headline, ratio = scikit-learn / ours), and the marginal
  cost of an iteration, ``(median T(10) - median T(1)) / 9``, which excludes
  what a fit pays once (input checks, the initialisation, scikit-learn's final
  E-step).
- **lower bounds**: the final ``lower_bound_`` of both (mean log-likelihood
  of the last E-step) and their relative difference (must be <= 1e-4).
- **peak RSS**: one ``max_iter=10`` fit per side in a fresh process (the
  benchmark runs itself with ``--memory-worker``; the data and initial
  parameters go through a temporary ``.npy``/``.npz``): the peak resident
  memory of that process during the fit minus its resident memory just before
  it (data loaded, libraries imported; scikit-learn's worker does not import
  TensorFlow). Measured exactly with the kernel's high-water mark:
  ``/proc/self/clear_refs`` is written with ``5`` (reset ``VmHWM`` to the
  current RSS) before the fit and ``VmHWM`` is read after it; where that is not
  available (not Linux) a psutil thread samples RSS every 2 ms. A fresh process
  because TensorFlow's CPU allocator keeps what it freed (a process that has
  once held 5 GB of tensors keeps the RSS), so later fits in the main process
  would be charged nothing for memory they reuse. Ours' fit is its first in
  that process, so it includes tracing (about 100 MB). Ratio ours /
  scikit-learn; target: <= 0.5 on the diag case. If ours' fit passes the
  memory guard's limit, ours is not timed in that case (scikit-learn is) and
  its targets are missed.
- **GFLOP/s**: flops per iteration of the main GEMM-shaped work divided by the
  marginal s/iter, next to a float32 ``tf.matmul`` of a similar shape timed in
  the same run (``tf.function``, median of 5)::

      full: 2 N K D^2 (Mahalanobis: (x - mu_k) P_k for each k)
          + 2 N K D^2 (second moments: sum_n r_nk x_n x_n^T, as [K D, N] x [N, D])
          + 2 N K D   (first moments: resp^T x)
          reference matmul [N, D] x [D, K D]   (2 N K D^2 flops)
      diag: 4 N K D (E-step: x^2 P^T and x (mu P)^T, two [N, D] x [D, K])
          + 4 N K D (statistics: resp^T x and resp^T x^2)
          reference matmul [N, 2 D] x [2 D, K]  (4 N K D flops)

  That count (and the target, ours >= 50 % of the reference) is the exact
  method's. When ours runs the full case on precomputed quadratic features
  (``keras_gmm.ops.em_driver.feature_layout``: ``phi(x)``, ``F = D (D + 3)
  / 2`` wide), it does fewer flops, ``4 N K F`` (``phi @ W`` and
  ``resp^T phi``); the ``own`` line prints the rate of those flops next to
  a float32 matmul of their shape ``[N, F] x [F, K]``: how well its own
  products run, as against how much less work it does.

Case ``init`` (on the full case's data and configuration): each library's
k-means initialisation as its ``init_params="kmeans"`` runs it. Ours:
``ops.em.initialize`` (k-means++ seeds, 10 Lloyd steps, distances as matrix
products, the parameters from the labels by segment sums), XLA-compiled as
``GaussianMixtureEM.fit`` runs it (compiled once before timing; ``fit``
itself runs it on at most 100,000 randomly drawn rows, this case times it on
all rows). scikit-learn:
``KMeans(K, n_init=1)`` (k-means++ then Lloyd to convergence) + its parameters,
measured through the public API as ``fit(init_params="kmeans", max_iter=1)``
minus ``fit(<initial parameters given>, max_iter=1)`` (scikit-learn skips the
initialisation when all three are given). The whole ``fit(init_params="kmeans",
max_iter=1)`` of both is printed too. Ratio = scikit-learn / ours (target:
>= 1, ours no slower).

Case ``bayesian`` (``--case bayesian``): ours' BayesianGaussianMixtureEM
against scikit-learn's BayesianGaussianMixture, and on the same data and
start ours' GaussianMixtureEM against GaussianMixture, the four alternating
in one process: "full" (the full case's D=16, K=16 "full", N=50,000, float32:
about a minute) and "small" (N=2,000, D=8, K=8, float64); N divided by
``--n-divisor``. All four start from the same clusters (scikit-learn's
k-means++ seeds, each point labelled by its nearest): scikit-learn's Bayesian
mixture through its ``_initialize(X, resp)`` of those one-hot
responsibilities, ours' by ``initialize_from_responsibilities`` (timed as part
of the fit, as scikit-learn's is), the EMs from those clusters' parameters;
``tol=0``, ``max_iter`` iterations. Printed: s/iter (median whole fit /
``n_iter_``) of each, the ratios scikit-learn / ours, the target (Bayesian
ratio >= our EM's ratio on the same case) and the lower bounds (relative
difference <= 1e-4 in float32, 1e-8 in float64; ``--check`` fails otherwise,
and, without ``--quick``, when the ratio target is missed).

Case ``stream``: ours alone, fitted to a ``tf.data.Dataset`` that generates
N=10,000,000 rows (D=16, K=16, diag; 500,000 with ``--quick``) batch by batch
(``Dataset.range(n_batches).map(one seeded batch)``, 65,536 rows a batch), so
the data never exist in memory as a whole; ``tol=0``, ``max_iter=2``, initial
parameters passed in (from the first two batches). Reported: time, rows/s,
the time of one pass that only generates the data (after the fit), and the
peak RSS of the process during the fit (absolute ``VmHWM``, TensorFlow's own
~0.8 GB included; target < 2 GB) and its increase. All of it runs in a fresh
process, as for the peak RSS above.
"""

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

# scikit-learn's memory worker runs without TensorFlow (faster start-up).
_NO_TF_ENV = "KERAS_GMM_BENCH_EM_NO_TF"
if os.environ.get(_NO_TF_ENV) != "1":
    import keras
    import tensorflow as tf

    import keras_gmm
    from keras_gmm.ops import covariance, em, em_driver

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKER_MARKER = "EM_MEMORY_WORKER_RESULT "

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "em.json"
QUICK_OUTPUT = Path(__file__).resolve().parent / "results" / "em_quick.json"

OURS = "keras_gmm"
PEER = "sklearn"

N_BLOBS = 8
SEED = 0
REG_COVAR = 1e-6
MAX_ITER = 10
REPEATS = 3
QUICK_REPEATS = 2
BATCH_SIZE = None  # the layer's default chunk size
QUICK_DIVISOR = 20

CASES = {
    "full": {"covariance_type": "full", "n": 200_000, "d": 16, "k": 16},
    "diag": {"covariance_type": "diag", "n": 1_000_000, "d": 32, "k": 64},
}
INIT_CASE = "full"  # the init case runs on this case's data and configuration
STREAM = {
    "covariance_type": "diag", "n": 10_000_000, "d": 16, "k": 16,
    "batch_size": 65_536, "max_iter": 2,
}
QUICK_STREAM_ROWS = 500_000
ALL_CASES = ("small", "stream", "init", "full", "diag")
#: The ``bayesian`` case (``--case bayesian``, not in ``all``): the full case's
#: shape scaled to about a minute on 2 cores ("full") and a small float64 one.
BAYESIAN_CASES = {
    "full": {"covariance_type": "full", "n": 50_000, "d": 16, "k": 16,
             "dtype": "float32"},
    "small": {"covariance_type": "full", "n": 2_000, "d": 8, "k": 8,
              "dtype": "float64"},
}
#: Lower bounds of ours and scikit-learn's agree to this (relative) per dtype.
BAYESIAN_BOUND_RTOL = {"float32": 1e-4, "float64": 1e-8}
BAYESIAN_SIDES = ("ours_bayesian", "sklearn_bayesian", "ours_em", "sklearn_em")
#: The ``small`` case: the data sizes scikit-learn is mostly used for, each
#: library with its defaults (tol 1e-3, max_iter 100, n_init 1, its own
#: init_params), seed 0, on the arrays as loaded (float64; ours computes in
#: its float32 default).
SMALL_CASES = {
    "wine": {"covariance_type": "full", "k": 3, "n": 178, "d": 13},
    "digits": {"covariance_type": "diag", "k": 10, "n": 1797, "d": 64},
    "blobs": {"covariance_type": "full", "k": 8, "n": 20_000, "d": 8},
}
SMALL_LATER_FITS = 3
SMALL_WORKER_MARKER = "EM_SMALL_WORKER_RESULT "

TARGETS = {
    "bound_rel_diff_max": 1e-4,
    "speed_ratio_min": {"full": 5.0, "diag": 3.0},  # sklearn s/iter / ours
    "first_fit_speedup_min": {"full": 3.0},  # sklearn median whole fit / ours first
    # sklearn's first whole fit / ours' first (each in a fresh process)
    "small_first_fit_ratio_min": 1.0,
    "matmul_fraction_min": {"full": 0.5},  # ours GFLOP/s / float32 matmul's
    "memory_ratio_max": {"diag": 0.5},  # ours peak RSS increase / sklearn's
    "init_ratio_min": 1.0,  # sklearn init time / ours
    "stream_peak_rss_max_bytes": 2 * 1024**3,
}

MIB = 1024.0**2


# --------------------------------------------------------------------------
# data: 8 Gaussian blobs
# --------------------------------------------------------------------------
def blob_spec(d, seed=SEED):
    """Centres ``[8, D]``, transforms ``[8, D, D]`` (float32) and weights."""
    rng = np.random.default_rng([seed, d])
    centres = rng.uniform(-8.0, 8.0, (N_BLOBS, d))
    scales = rng.uniform(0.5, 1.5, (N_BLOBS, 1, 1))
    mixing = np.eye(d) + 0.3 * rng.standard_normal((N_BLOBS, d, d)) / np.sqrt(d)
    weights = rng.dirichlet(np.full(N_BLOBS, 5.0))
    return (
        centres.astype(np.float32),
        (scales * mixing).astype(np.float32),
        weights,
    )


def make_blobs(n, d, seed=SEED, chunk=1 << 18):
    """``[n, d]`` float32 rows from :func:`blob_spec`, made chunk by chunk."""
    centres, transforms, weights = blob_spec(d, seed)
    rng = np.random.default_rng([seed, d, n])
    x = np.empty((n, d), np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        labels = rng.choice(N_BLOBS, size=m, p=weights)
        z = rng.standard_normal((m, d), dtype=np.float32)
        out = x[start:start + m]
        for b in range(N_BLOBS):
            rows = labels == b
            out[rows] = centres[b] + z[rows] @ transforms[b]
    return x


def blob_dataset(n, d, batch_size, seed=SEED):
    """A ``tf.data.Dataset`` of ``[batch, d]`` float32 blob batches, generated
    lazily from a per-batch stateless seed (the last batch may be shorter)."""
    centres, transforms, weights = blob_spec(d, seed)
    centres = tf.constant(centres)
    transforms = tf.constant(transforms)
    log_w = tf.math.log(tf.constant(weights, tf.float32))[None]
    n_batches = math.ceil(n / batch_size)

    def batch(i):
        seeds = tf.random.experimental.stateless_split(
            tf.stack([tf.constant(seed, tf.int64), i]), 2
        )
        rows_left = n - i * batch_size
        size = tf.cast(
            tf.minimum(tf.constant(batch_size, tf.int64), rows_left), tf.int32
        )
        labels = tf.random.stateless_categorical(log_w, size, seeds[0])[0]
        z = tf.random.stateless_normal(tf.stack([size, d]), seeds[1])
        every_blob = tf.einsum("nd,bde->nbe", z, transforms) + centres  # [n, 8, d]
        return tf.gather(every_blob, labels, batch_dims=1)

    return tf.data.Dataset.range(n_batches).map(batch).prefetch(1)


# --------------------------------------------------------------------------
# one initialisation for both sides
# --------------------------------------------------------------------------
def nearest(x, centres, chunk=1 << 16):
    labels = np.empty(len(x), np.int64)
    c = centres.astype(np.float64)
    c2 = (c**2).sum(1)
    for start in range(0, len(x), chunk):
        xb = x[start:start + chunk].astype(np.float64)
        labels[start:start + chunk] = np.argmin(c2 - 2.0 * xb @ c.T, axis=1)
    return labels


def initial_labels(x, k, seed=SEED):
    """scikit-learn's k-means++ seeds, each point labelled by its nearest."""
    from sklearn.cluster import kmeans_plusplus

    seeds, _ = kmeans_plusplus(x, k, random_state=seed)
    return nearest(x, seeds)


def initial_parameters(x, k, covariance_type, seed=SEED, reg_covar=REG_COVAR):
    """scikit-learn's k-means++ seeds -> nearest-seed clusters -> float32
    ``(weights [K], means [K, D], precisions)`` in scikit-learn's shapes."""
    labels = initial_labels(x, k, seed)
    d = x.shape[1]
    weights = np.zeros(k)
    means = np.zeros((k, d))
    precisions = np.zeros((k, d, d) if covariance_type == "full" else (k, d))
    for j in range(k):
        xj = x[labels == j].astype(np.float64)
        weights[j] = len(xj)
        means[j] = xj.mean(0)
        dx = xj - means[j]
        if covariance_type == "full":
            cov = dx.T @ dx / len(xj) + reg_covar * np.eye(d)
            prec = np.linalg.inv(cov)
            precisions[j] = 0.5 * (prec + prec.T)
        else:
            precisions[j] = 1.0 / ((dx**2).mean(0) + reg_covar)
    weights /= weights.sum()
    return (
        weights.astype(np.float32),
        means.astype(np.float32),
        precisions.astype(np.float32),
    )


# --------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------
def _proc_status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_high_water_mark():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _release_free_memory():
    """Give the C heap's free pages back to the OS (glibc ``malloc_trim``), so
    that a fit reusing memory an earlier one freed shows in the RSS again."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_bytes():
    try:
        return _proc_status_kib("VmRSS") * 1024
    except (OSError, KeyError):
        import psutil

        return psutil.Process().memory_info().rss


class PeakMemory:
    """Peak resident memory of this process during a ``with`` block.

    ``peak`` is the absolute peak RSS in bytes, ``increase`` the peak minus
    the RSS at the start of the block. Exact on Linux (reset and read the
    kernel's ``VmHWM``); elsewhere a psutil thread samples every 2 ms. Free
    C-heap pages are returned to the OS first (``malloc_trim``), so memory
    freed before the block and reused in it counts (TensorFlow's allocator
    keeps its own, hence one measured fit per fresh process).
    """

    def __enter__(self):
        gc.collect()
        _release_free_memory()
        self.before = _rss_bytes()
        self.method = "VmHWM" if _reset_high_water_mark() else "psutil sampling (2 ms)"
        if self.method != "VmHWM":
            self._samples = [self.before]
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self._samples.append(_rss_bytes())

    def __exit__(self, *exc):
        if self.method == "VmHWM":
            self.peak = _proc_status_kib("VmHWM") * 1024
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self._samples + [_rss_bytes()])
        self.increase = self.peak - self.before
        return False


class MemoryGuard:
    """Abort the benchmark (exit status 3) before it exhausts the machine.

    A daemon thread reads this process's RSS every 5 ms; above ``limit``
    bytes it prints what was running and ends the process with
    ``os._exit(3)`` after ``on_abort(message)`` (which reports the finished
    cases), so that a fit which needs more memory than the machine has does
    not bring in the OOM killer, which might pick another process.
    """

    activity = "start-up"
    # what the case in progress has measured so far (written on an abort)
    partial = {}

    def __init__(self, limit, on_abort=None):
        self.limit = limit
        self.on_abort = on_abort
        self.peak = 0
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self):
        while True:
            rss = _rss_bytes()
            self.peak = max(self.peak, rss)
            if rss > self.limit:
                message = (
                    f"\nmemory guard: RSS {rss / 1024**3:.1f} GiB exceeded the limit "
                    f"{self.limit / 1024**3:.1f} GiB during {MemoryGuard.activity}; "
                    "aborting (exit status 3). Raise it with --memory-limit-gib."
                )
                print(message, flush=True)
                print(message, file=sys.stderr, flush=True)
                try:
                    if self.on_abort is not None:
                        self.on_abort(message.strip())
                finally:
                    os._exit(3)
            time.sleep(0.005)


def default_memory_limit():
    """75% of (available memory + this process's RSS), in bytes."""
    try:
        import psutil

        available = psutil.virtual_memory().available
    except ImportError:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(0.75 * (available + _rss_bytes()))


def _sklearn_threads(threads):
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads)


def choose_sklearn_threads(make, x, setting):
    """scikit-learn's thread count: ``setting`` if an int, else ("auto") the
    faster of 1 and ``os.cpu_count()`` in one trial fit each.

    OpenBLAS and OpenMP pools can be many times slower with 2 threads than
    with 1 on small matrices or when another process holds a core; "auto"
    keeps the peer at its best, so the ratios do not flatter ours.
    """
    if setting != "auto":
        return int(setting), {}
    trials = {}
    for threads in sorted({1, os.cpu_count() or 1}):
        trials[threads] = fit_sklearn(make, x, threads)["seconds"]
    return min(trials, key=trials.get), trials


def _fit_result(gmm, seconds, mem):
    result = {"seconds": seconds, "lower_bound": float(gmm.lower_bound_),
              "n_iter": int(gmm.n_iter_)}
    if mem is not None:
        result.update(peak_rss_increase=mem.increase, peak_rss=mem.peak,
                      rss_before=mem.before, memory_method=mem.method)
    return result


def fit_ours(gmm, x, batch_size, measure_memory=False):
    MemoryGuard.activity = f"a {OURS} fit"
    mem = PeakMemory() if measure_memory else None
    with mem or contextlib.nullcontext(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol=0: never "converged"
        start = time.perf_counter()
        gmm.fit(x, batch_size=batch_size, verbose=0)
        seconds = time.perf_counter() - start
    return _fit_result(gmm, seconds, mem)


def fit_sklearn(make, x, threads, measure_memory=False):
    from sklearn.exceptions import ConvergenceWarning

    gmm = make()
    MemoryGuard.activity = f"a {PEER} fit"
    mem = PeakMemory() if measure_memory else None
    with mem or contextlib.nullcontext(), _sklearn_threads(threads), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        gmm.fit(x)
        seconds = time.perf_counter() - start
    return _fit_result(gmm, seconds, mem)


# --------------------------------------------------------------------------
# memory: one fit in a fresh process
# --------------------------------------------------------------------------
def memory_worker(spec_path):
    """Entry point of ``--memory-worker SPEC``: one fit, in this fresh process,
    with its peak RSS; prints one ``WORKER_MARKER`` line of JSON."""
    spec = json.loads(Path(spec_path).read_text())
    MemoryGuard(spec["limit"])
    side, case = spec["side"], spec["case"]
    if side == "stream":
        result = stream_fit(case)
    else:
        x = np.load(spec["data"])
        with np.load(spec["init"]) as f:
            init = (f["weights"], f["means"], f["precisions"])
        if side == OURS:
            gmm = make_ours(case, spec["max_iter"], init)
            result = fit_ours(gmm, x, spec["batch_size"], measure_memory=True)
        else:
            result = fit_sklearn(make_sklearn(case, spec["max_iter"], init), x,
                                 spec["threads"], measure_memory=True)
    print(WORKER_MARKER + json.dumps(result), flush=True)


def run_memory_worker(side, case, workdir, limit, max_iter=None, batch_size=None,
                      threads=None):
    """Run :func:`memory_worker` in a subprocess; its result dict, or
    ``{"exceeded_limit": True, ...}`` when its memory guard stopped it."""
    worker_limit = max(limit - _rss_bytes(), 256 * 1024**2)
    spec = {
        "side": side, "case": case, "max_iter": max_iter, "batch_size": batch_size,
        "threads": threads, "limit": worker_limit,
        "data": str(Path(workdir) / "x.npy"), "init": str(Path(workdir) / "init.npz"),
    }
    spec_path = Path(workdir) / f"spec_{side}.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if side == PEER:
        env[_NO_TF_ENV] = "1"
    MemoryGuard.activity = f"a {side} memory worker"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.em", "--memory-worker", str(spec_path)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True,
    )
    if proc.returncode == 3 and "memory guard" in proc.stdout:
        return {"exceeded_limit": True, "limit": worker_limit,
                "message": proc.stdout.strip().splitlines()[-1]}
    for line in proc.stdout.splitlines():
        if line.startswith(WORKER_MARKER):
            return json.loads(line[len(WORKER_MARKER):])
    raise RuntimeError(
        f"the {side} memory worker failed (exit status {proc.returncode}):\n"
        f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    )


def _memory_text(m):
    if m.get("exceeded_limit"):
        return f"over {m['limit'] / 1024**3:.1f} GiB (stopped by the memory guard)"
    return (f"+{m['peak_rss_increase'] / MIB:.0f} MiB (fit {m['seconds']:.2f} s, "
            f"lower bound {m['lower_bound']:.7f})")


def make_ours(case, max_iter, init=None, init_params=None):
    weights, means, precisions = init if init is not None else (None,) * 3
    init_kw = {} if init_params is None else {"init_params": init_params}
    return keras_gmm.GaussianMixtureEM(
        case["k"], covariance_type=case["covariance_type"], tol=0.0,
        reg_covar=REG_COVAR, max_iter=max_iter, n_init=1, **init_kw,
        weights_init=weights, means_init=means, precisions_init=precisions,
        seed=SEED,
    )


def make_sklearn(case, max_iter, init=None, init_params="kmeans"):
    from sklearn.mixture import GaussianMixture

    weights, means, precisions = init if init is not None else (None,) * 3
    return lambda: GaussianMixture(
        case["k"], covariance_type=case["covariance_type"], tol=0.0,
        reg_covar=REG_COVAR, max_iter=max_iter, n_init=1, init_params=init_params,
        weights_init=weights, means_init=means, precisions_init=precisions,
        random_state=SEED,
    )


def flops_per_iteration(case, n):
    k, d = case["k"], case["d"]
    if case["covariance_type"] == "full":
        return 4 * n * k * d * d + 2 * n * k * d
    return 8 * n * k * d


def own_flops(case, n, batch_size=None):
    """``(flops per iteration of ours' own products, their matmul shapes)``
    when ours runs on quadratic features (full case), else None."""
    k, d = case["k"], case["d"]
    chunk = batch_size or em.default_chunk_size(k, d, case["covariance_type"])
    compiled = em_driver.use_xla(em_driver.pass_work(n, k, d, case["covariance_type"]))
    if not compiled or em_driver.feature_layout(n, d, case["covariance_type"], chunk,
                                                "float32") is None:
        return None
    f = covariance.get(case["covariance_type"]).num_quadratic_features(d)
    return 4 * n * k * f, ((n, f), (f, k))


def matmul_reference(case, n, repeats=5, shapes=None):
    """GFLOP/s of a float32 tf.matmul shaped like the case's main GEMM
    (or ``shapes``)."""
    k, d = case["k"], case["d"]
    rng = np.random.default_rng(1)
    if shapes is not None:
        a_shape, b_shape = shapes
    elif case["covariance_type"] == "full":
        a_shape, b_shape = (n, d), (d, k * d)
    else:
        a_shape, b_shape = (n, 2 * d), (2 * d, k)
    a = tf.constant(rng.standard_normal(a_shape, dtype=np.float32))
    b = tf.constant(rng.standard_normal(b_shape, dtype=np.float32))
    matmul = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)[:1]))
    # The reduction touches one row: it only keeps the result alive.
    matmul(a, b).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).numpy()
        times.append(time.perf_counter() - start)
    flops = 2 * a_shape[0] * a_shape[1] * b_shape[1]
    seconds = float(np.median(times))
    return {
        "shape": f"[{a_shape[0]}, {a_shape[1]}] x [{b_shape[0]}, {b_shape[1]}]",
        "flops": flops, "seconds": seconds, "gflops": flops / seconds / 1e9,
    }


def _median(runs, key="seconds"):
    return float(np.median([r[key] for r in runs]))


# --------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------
def run_em_case(name, case, n, args):
    d, k = case["d"], case["k"]
    print(f"\n[{name}] covariance_type={case['covariance_type']}, N={n:,}, D={d}, "
          f"K={k}, max_iter={args.max_iter}, tol=0, {args.repeats} repeats; "
          f"ours batch_size={args.batch_size}", flush=True)
    start = time.perf_counter()
    x = make_blobs(n, d)
    init = initial_parameters(x, k, case["covariance_type"])
    print(f"  data + initial parameters: {time.perf_counter() - start:.1f} s",
          flush=True)
    threads, trials = choose_sklearn_threads(
        make_sklearn(case, 2, init), x, args.sklearn_threads
    )
    if trials:
        print("  sklearn threads: " + ", ".join(
            f"{t}: {s:.3f} s" for t, s in trials.items()
        ) + f" for a 2-iteration fit -> {threads}", flush=True)
    MemoryGuard.partial = {"case": name, "sklearn_threads": threads,
                           "sklearn_thread_trials_seconds": trials}

    # Peak RSS: one fit per side, each in a fresh process.
    memory = {}
    with tempfile.TemporaryDirectory(prefix="em_bench_") as workdir:
        np.save(Path(workdir) / "x.npy", x)
        np.savez(Path(workdir) / "init.npz", weights=init[0], means=init[1],
                 precisions=init[2])
        for side in (PEER, OURS):
            memory[side] = run_memory_worker(
                side, {**case, "n": n}, workdir, args.memory_limit,
                max_iter=args.max_iter, batch_size=args.batch_size, threads=threads,
            )
            print(f"  peak RSS, {side} fit in a fresh process: "
                  f"{_memory_text(memory[side])}", flush=True)
    MemoryGuard.partial["memory"] = memory
    sides_run = [PEER] if memory[OURS].get("exceeded_limit") else [OURS, PEER]
    if OURS not in sides_run:
        print(f"  {OURS} is not timed: one fit needs more memory than the limit",
              flush=True)

    ours = {n_it: make_ours(case, n_it, init) for n_it in (args.max_iter, 1)}
    peer = {n_it: make_sklearn(case, n_it, init) for n_it in (args.max_iter, 1)}
    runs = {side: {args.max_iter: [], 1: []} for side in sides_run}

    def one(side, n_it):
        if side == OURS:
            return fit_ours(ours[n_it], x, args.batch_size)
        return fit_sklearn(peer[n_it], x, threads)

    first = {}
    for side in reversed(sides_run):  # sklearn first
        first[side] = one(side, args.max_iter)
        note = " (new layer: with tracing)" if side == OURS else ""
        print(f"  first fit: {side} {first[side]['seconds']:.3f} s{note}, "
              f"lower bound {first[side]['lower_bound']:.7f}", flush=True)
        MemoryGuard.partial["first_fits"] = first
    if OURS in sides_run:
        one(OURS, 1)  # trace ours' max_iter=1 layer too (not timed)

    for r in range(args.repeats):
        order = sides_run if r % 2 == 0 else sides_run[::-1]
        for n_it in (args.max_iter, 1):
            for side in order:
                runs[side][n_it].append(one(side, n_it))
        print("  repeat {}: ".format(r) + ", ".join(
            f"{side} {runs[side][args.max_iter][-1]['seconds']:.3f} s" for side in order
        ), flush=True)

    matmul = matmul_reference(case, n)
    flops = flops_per_iteration(case, n)
    own = own_flops(case, n, args.batch_size)
    own_matmul = None if own is None else matmul_reference(case, n, shapes=own[1])
    sides = {}
    for side in (OURS, PEER):
        mem = memory[side]
        if side not in sides_run:
            sides[side] = {"skipped": mem["message"],
                           "peak_rss_increase_bytes": None,
                           "memory_limit_bytes": mem["limit"]}
            continue
        full_fits = runs[side][args.max_iter]
        n_iter = full_fits[0]["n_iter"]
        t_n = _median(full_fits)
        t_1 = _median(runs[side][1])
        marginal = (t_n - t_1) / (args.max_iter - 1)
        sides[side] = {
            "first_fit_seconds": first[side]["seconds"],
            "median_fit_seconds": t_n,
            "median_fit_seconds_max_iter_1": t_1,
            "n_iter": n_iter,
            "seconds_per_iteration": t_n / n_iter,
            "marginal_seconds_per_iteration": marginal,
            "fixed_seconds_per_fit": t_1 - marginal,
            "lower_bound": first[side]["lower_bound"],
            "lower_bounds_all_fits": sorted({f["lower_bound"] for f in full_fits}),
            "peak_rss_increase_bytes": mem["peak_rss_increase"],
            "memory_worker": mem,
            "gflops": flops / marginal / 1e9 if marginal > 0 else float("nan"),
        }
    summary = {
        "config": {**case, "n": n, "max_iter": args.max_iter,
                   "batch_size_ours": args.batch_size, "sklearn_threads": threads,
                   "sklearn_thread_trials_seconds": trials},
        "sides": sides,
        "flops_per_iteration": flops,
        "matmul_reference": matmul,
        "own_flops_per_iteration": None if own is None else own[0],
        "own_matmul_reference": own_matmul,
        "runs": {side: {str(n_it): v for n_it, v in by.items()}
                 for side, by in runs.items()},
        "first_fits": first,
        "ours_skipped": OURS not in sides_run,
    }
    if OURS in sides_run:
        o, p = sides[OURS], sides[PEER]
        summary.update({
            "speed_ratio_peer_over_ours": (
                p["seconds_per_iteration"] / o["seconds_per_iteration"]
            ),
            "marginal_speed_ratio_peer_over_ours": (
                p["marginal_seconds_per_iteration"]
                / o["marginal_seconds_per_iteration"]
            ),
            "first_fit_speedup": p["median_fit_seconds"] / o["first_fit_seconds"],
            "lower_bound_rel_diff": (
                abs(o["lower_bound"] - p["lower_bound"]) / abs(p["lower_bound"])
            ),
            "n_iter_match": o["n_iter"] == p["n_iter"] == args.max_iter,
            "memory_ratio_ours_over_peer": (
                o["peak_rss_increase_bytes"] / max(p["peak_rss_increase_bytes"], 1)
            ),
        })
    del x
    gc.collect()
    return summary


def _bayesian_makers(case, max_iter, x, resp, init):
    """``side -> fit()`` for the four sides of the bayesian case, all from
    the same one-hot responsibilities ``resp`` (scikit-learn's Bayesian
    mixture through its ``_initialize(X, resp)``; the EMs from the
    parameters of those clusters) and ``tol=0``; each returns the fitted
    estimator."""
    from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

    k, ctype, dtype = case["k"], case["covariance_type"], case["dtype"]
    common = {"covariance_type": ctype, "tol": 0.0, "reg_covar": REG_COVAR,
              "max_iter": max_iter}
    ours_bgm = keras_gmm.BayesianGaussianMixtureEM(
        k, warm_start=True, dtype=dtype, **common)
    ours_em = keras_gmm.GaussianMixtureEM(
        k, dtype=dtype, weights_init=init[0], means_init=init[1],
        precisions_init=init[2], **common)

    def fit_ours_bayesian():
        # the start is part of the fit (scikit-learn's _initialize is too)
        ours_bgm.initialize_from_responsibilities(x, resp)
        ours_bgm.fit(x, verbose=0)
        return ours_bgm

    def fit_sklearn_bayesian():
        peer = BayesianGaussianMixture(n_components=k, random_state=SEED, **common)
        peer._initialize_parameters = (
            lambda X, random_state, xp=None: peer._initialize(X, resp))
        return peer.fit(x)

    def fit_ours_em():
        ours_em.fit(x, verbose=0)
        return ours_em

    def fit_sklearn_em():
        return GaussianMixture(k, random_state=SEED, weights_init=init[0],
                               means_init=init[1], precisions_init=init[2],
                               **common).fit(x)

    return dict(zip(BAYESIAN_SIDES, (fit_ours_bayesian, fit_sklearn_bayesian,
                                     fit_ours_em, fit_sklearn_em)))


def run_bayesian_case(args):
    """Ours' BayesianGaussianMixtureEM against scikit-learn's
    BayesianGaussianMixture, and on the same data and start the EMs
    (GaussianMixtureEM against GaussianMixture), alternating in this
    process: s/iter, ratios, lower bounds."""
    return {"cases": {name: _bayesian_subcase(name, case, args)
                      for name, case in BAYESIAN_CASES.items()}}


def _bayesian_subcase(name, case, args):
    """One of :data:`BAYESIAN_CASES`, measured (see :func:`run_bayesian_case`)."""
    from sklearn.exceptions import ConvergenceWarning

    n = max(case["n"] // args.n_divisor, 20 * case["k"])
    d, k, dtype = case["d"], case["k"], case["dtype"]
    print(f"\n[bayesian {name}] covariance_type={case['covariance_type']}, "
          f"N={n:,}, D={d}, K={k}, {dtype}, max_iter={args.max_iter}, tol=0, "
          f"{args.repeats} repeats (load {os.getloadavg()[0]:.2f})", flush=True)
    x = make_blobs(n, d).astype(dtype)
    labels = initial_labels(x, k)
    resp = np.eye(k)[labels]
    weights, means, precisions = (
        a.astype(dtype) for a in initial_parameters(x, k, case["covariance_type"]))
    # scikit-learn checks that the weights sum to 1 in their own dtype
    weights[np.argmax(weights)] += 1 - weights.sum(dtype=np.float64)
    init = (weights, means, precisions)
    threads, _ = choose_sklearn_threads(
        make_sklearn({**case, "n": n}, 2, init), x, args.sklearn_threads)
    makers = _bayesian_makers(case, args.max_iter, x, resp, init)
    times = {side: [] for side in BAYESIAN_SIDES}
    fitted = {}

    def one(side):
        MemoryGuard.activity = f"a bayesian {name} fit ({side})"
        with _sklearn_threads(threads), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            start = time.perf_counter()
            model = makers[side]()
            seconds = time.perf_counter() - start
        fitted[side] = {"lower_bound": float(model.lower_bound_),
                        "n_iter": int(model.n_iter_)}
        return seconds

    first = {side: one(side) for side in BAYESIAN_SIDES}  # ours: with tracing
    for r in range(args.repeats):
        order = BAYESIAN_SIDES if r % 2 == 0 else BAYESIAN_SIDES[::-1]
        for side in order:
            times[side].append(one(side))
    per_iter = {side: float(np.median(v)) / fitted[side]["n_iter"]
                for side, v in times.items()}
    bgm_ratio = per_iter["sklearn_bayesian"] / per_iter["ours_bayesian"]
    em_ratio = per_iter["sklearn_em"] / per_iter["ours_em"]

    def rel(a, b):
        return abs(fitted[a]["lower_bound"] - fitted[b]["lower_bound"]) / abs(
            fitted[b]["lower_bound"])

    result = {
        "config": {**case, "n": n, "max_iter": args.max_iter,
                   "sklearn_threads": threads},
        "first_fit_seconds": first, "times": times,
        "seconds_per_iteration": per_iter, "fits": fitted,
        "bayesian_ratio_peer_over_ours": bgm_ratio,
        "em_ratio_peer_over_ours": em_ratio,
        "bayesian_bound_rel_diff": rel("ours_bayesian", "sklearn_bayesian"),
        "em_bound_rel_diff": rel("ours_em", "sklearn_em"),
        "bound_rtol": BAYESIAN_BOUND_RTOL[dtype],
        "n_iter_match": len({f["n_iter"] for f in fitted.values()}) == 1,
    }
    print("  s/iter: " + ", ".join(f"{side} {t:.4f}" for side, t in per_iter.items())
          + f"; ratio sklearn/ours: bayesian {bgm_ratio:.3f}, EM {em_ratio:.3f}",
          flush=True)
    del x
    gc.collect()
    return result


def _bayesian_targets(results, lines, failed_checks, missed):
    for name, r in results["bayesian"]["cases"].items():
        ok = (r["bayesian_bound_rel_diff"] <= r["bound_rtol"]
              and r["em_bound_rel_diff"] <= r["bound_rtol"] and r["n_iter_match"])
        if not ok:
            failed_checks.append(f"bayesian {name}")
        lines.append(
            f"  bayesian {name} lower bounds agree (rel diff <= {r['bound_rtol']:g}, "
            f"same n_iter): bayesian {r['bayesian_bound_rel_diff']:.2e}, EM "
            f"{r['em_bound_rel_diff']:.2e}  {_status(ok)}")
        v, t = r["bayesian_ratio_peer_over_ours"], r["em_ratio_peer_over_ours"]
        if v < t:
            missed.append(f"bayesian {name} ratio")
        lines.append(f"  bayesian {name} s/iter ratio sklearn/ours >= our EM's on "
                     f"the same case ({t:.3f}): {v:.3f}  {_status(v >= t)}")


def format_bayesian_table(bayesian):
    header = (f"{'bayesian':<9} {'N x D':>11} {'K':>3} {'dtype':<7} {'side':<17} "
              f"{'s/iter':>9} {'first fit s':>11} {'n_iter':>6} {'lower bound':>16}")
    lines = [header, "-" * len(header)]
    for name, r in bayesian["cases"].items():
        cfg = r["config"]
        for side in BAYESIAN_SIDES:
            f = r["fits"][side]
            lines.append(
                f"{name:<9} {cfg['n']:>6}x{cfg['d']:<4} {cfg['k']:>3} "
                f"{cfg['dtype']:<7} {side:<17} {r['seconds_per_iteration'][side]:>9.4f} "
                f"{r['first_fit_seconds'][side]:>11.3f} {f['n_iter']:>6} "
                f"{f['lower_bound']:>16.8f}")
        lines.append(f"{name:<9} ratios sklearn/ours: bayesian "
                     f"{r['bayesian_ratio_peer_over_ours']:.3f}, EM "
                     f"{r['em_ratio_peer_over_ours']:.3f}")
    return "\n".join(lines)


def ours_kmeans_init_fn(case):
    """The layer's initialisation (``ops.em.initialize``, XLA-compiled as in
    ``GaussianMixtureEM.fit``) with ``init_params="kmeans"``."""
    k, ctype = case["k"], case["covariance_type"]
    compiled = tf.function(em.initialize, jit_compile=True)

    def init(x, seed):
        return compiled(x, k, "kmeans", ctype, REG_COVAR, seed)

    return init


def run_init_case(case, n, args):
    d, k = case["d"], case["k"]
    print(f"\n[init] k-means initialisation, "
          f"covariance_type={case['covariance_type']}, N={n:,}, D={d}, K={k}, "
          f"{args.repeats} repeats", flush=True)
    x_np = make_blobs(n, d)
    given = initial_parameters(x_np, k, case["covariance_type"])
    x_tf = tf.constant(x_np)
    init_fn = ours_kmeans_init_fn(case)
    seed = tf.constant([SEED, 1], tf.int64)
    start = time.perf_counter()
    [t.numpy() for t in init_fn(x_tf, seed)]
    trace_seconds = time.perf_counter() - start

    ours_layer = make_ours(case, 1, init_params="kmeans")
    fit_ours(ours_layer, x_np, args.batch_size)  # trace
    peer_kmeans = make_sklearn(case, 1, init_params="kmeans")
    peer_given = make_sklearn(case, 1, init=given)
    threads, trials = choose_sklearn_threads(peer_kmeans, x_np, args.sklearn_threads)
    if trials:
        print("  sklearn threads: " + ", ".join(
            f"{t}: {s:.3f} s" for t, s in trials.items()
        ) + f" for fit(kmeans, max_iter=1) -> {threads}", flush=True)

    times = {"ours_ops": [], "ours_fit_kmeans": [], "sklearn_fit_kmeans": [],
             "sklearn_fit_given": []}
    for r in range(args.repeats):
        steps = [
            ("ours_ops",
             lambda: _timed(lambda: [t.numpy() for t in init_fn(x_tf, seed)])),
            ("ours_fit_kmeans",
             lambda: fit_ours(ours_layer, x_np, args.batch_size)["seconds"]),
            ("sklearn_fit_kmeans",
             lambda: fit_sklearn(peer_kmeans, x_np, threads)["seconds"]),
            ("sklearn_fit_given",
             lambda: fit_sklearn(peer_given, x_np, threads)["seconds"]),
        ]
        if r % 2:
            steps = steps[2:] + steps[:2]
        for key, step in steps:
            times[key].append(step())
        print(f"  repeat {r}: ours ops {times['ours_ops'][-1]:.3f} s, sklearn "
              f"fit(kmeans) {times['sklearn_fit_kmeans'][-1]:.3f} s", flush=True)
    med = {key: float(np.median(v)) for key, v in times.items()}
    sklearn_init = med["sklearn_fit_kmeans"] - med["sklearn_fit_given"]
    return {
        "config": {**case, "n": n, "sklearn_threads": threads,
                   "sklearn_thread_trials_seconds": trials},
        "ours_trace_and_first_run_seconds": trace_seconds,
        "ours_init_seconds": med["ours_ops"],
        "sklearn_init_seconds": sklearn_init,
        "init_ratio_peer_over_ours": sklearn_init / med["ours_ops"],
        "ours_fit_kmeans_max_iter_1_seconds": med["ours_fit_kmeans"],
        "sklearn_fit_kmeans_max_iter_1_seconds": med["sklearn_fit_kmeans"],
        "sklearn_fit_given_max_iter_1_seconds": med["sklearn_fit_given"],
        "times": times,
    }


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def stream_fit(cfg):
    """The stream case's fit, run in a fresh process (see ``memory_worker``)."""
    n, d, k, batch = cfg["n"], cfg["d"], cfg["k"], cfg["batch_size"]
    dataset = blob_dataset(n, d, batch)
    head = np.concatenate([b.numpy() for b in dataset.take(2)])
    init = initial_parameters(head, k, cfg["covariance_type"])
    del head
    gmm = make_ours(cfg, cfg["max_iter"], init)
    result = fit_ours(gmm, dataset, None, measure_memory=True)
    # after the fit, so that its allocations do not pre-fill the fit's memory
    start = time.perf_counter()
    for _ in dataset:
        pass
    result["generate_only_pass_seconds"] = time.perf_counter() - start
    return result


def run_stream_case(args):
    cfg = dict(STREAM)
    if args.quick:
        cfg["n"] = QUICK_STREAM_ROWS
    n, d, k, batch = cfg["n"], cfg["d"], cfg["k"], cfg["batch_size"]
    print(f"\n[stream] tf.data generating N={n:,} rows lazily, D={d}, K={k}, "
          f"{cfg['covariance_type']}, batch {batch:,}, max_iter={cfg['max_iter']}, "
          "tol=0; in a fresh process", flush=True)
    with tempfile.TemporaryDirectory(prefix="em_bench_") as workdir:
        result = run_memory_worker("stream", cfg, workdir, args.memory_limit)
    if result.get("exceeded_limit"):
        print(f"  {_memory_text(result)}", flush=True)
        return {"config": cfg, "skipped": result["message"],
                "peak_rss_bytes": None, "memory_limit_bytes": result["limit"]}
    print(f"  fit {result['seconds']:.1f} s, "
          f"peak RSS {result['peak_rss'] / MIB:.0f} MiB "
          f"(+{result['peak_rss_increase'] / MIB:.0f} MiB)", flush=True)
    return {
        "config": cfg,
        "fit_seconds": result["seconds"],
        "seconds_per_iteration": result["seconds"] / result["n_iter"],
        "rows_per_second": n * result["n_iter"] / result["seconds"],
        "generate_only_pass_seconds": result["generate_only_pass_seconds"],
        "n_iter": result["n_iter"],
        "lower_bound": result["lower_bound"],
        "peak_rss_bytes": result["peak_rss"],
        "peak_rss_before_fit_bytes": result["rss_before"],
        "peak_rss_increase_bytes": result["peak_rss_increase"],
        "memory_method": result["memory_method"],
    }


# --------------------------------------------------------------------------
# small: first and later fits, each process fresh
# --------------------------------------------------------------------------
def small_data(name):
    """The ``small`` case's arrays: scikit-learn's wine and digits, and
    ``make_blobs(20000, 8, centers=8, random_state=0)``."""
    from sklearn import datasets

    if name == "wine":
        return datasets.load_wine().data
    if name == "digits":
        return datasets.load_digits().data
    cfg = SMALL_CASES[name]
    return datasets.make_blobs(cfg["n"], cfg["d"], centers=cfg["k"],
                               random_state=SEED)[0]


def small_worker(spec_json):
    """Entry point of ``--small-worker SPEC``: in this fresh process (its
    imports and the data loading not timed), the first ``fit`` of a new
    estimator, then ``SMALL_LATER_FITS`` fits of new ones; prints one
    ``SMALL_WORKER_MARKER`` line of JSON."""
    spec = json.loads(spec_json)
    side, name, threads = spec["side"], spec["dataset"], spec.get("threads")
    cfg = SMALL_CASES[name]
    x = small_data(name)
    if side == OURS:
        def make():
            return keras_gmm.GaussianMixtureEM(
                cfg["k"], covariance_type=cfg["covariance_type"], seed=SEED)

        def fit(model):
            model.fit(x, verbose=0)
    else:
        from sklearn.mixture import GaussianMixture

        def make():
            return GaussianMixture(cfg["k"], covariance_type=cfg["covariance_type"],
                                   random_state=SEED)

        def fit(model):
            with _sklearn_threads(threads):
                model.fit(x)
    fits = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of either
        for _ in range(1 + SMALL_LATER_FITS):
            model = make()
            start = time.perf_counter()
            fit(model)
            seconds = time.perf_counter() - start
            fits.append({"seconds": seconds, "n_iter": int(model.n_iter_),
                         "lower_bound": float(model.lower_bound_)})
    print(SMALL_WORKER_MARKER + json.dumps({"fits": fits}), flush=True)


def run_small_worker(side, name, threads=None):
    spec = json.dumps({"side": side, "dataset": name, "threads": threads})
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if side == PEER:
        env[_NO_TF_ENV] = "1"
    MemoryGuard.activity = f"a {side} small worker ({name})"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.em", "--small-worker", spec],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith(SMALL_WORKER_MARKER):
            return json.loads(line[len(SMALL_WORKER_MARKER):])["fits"]
    raise RuntimeError(
        f"the {side} small worker ({name}) failed (exit status "
        f"{proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    )


def run_small_case(args):
    """Each (library, dataset) in ``args.repeats`` fresh processes,
    alternating libraries; scikit-learn with 1 and ``os.cpu_count()`` BLAS /
    OpenMP threads in separate processes (``--sklearn-threads auto``), its
    faster setting kept."""
    print(f"\n[small] first fit of a new estimator in a fresh process (imports "
          f"and data loading not timed), then {SMALL_LATER_FITS} later fits; "
          f"{args.repeats} processes per library and dataset; defaults of each "
          "library, seed 0", flush=True)
    if args.sklearn_threads == "auto":
        thread_options = sorted({1, os.cpu_count() or 1})
    else:
        thread_options = [int(args.sklearn_threads)]
    out = {}
    for name, cfg in SMALL_CASES.items():
        load = os.getloadavg()[0]
        runs = {OURS: [], **{f"{PEER}:{t}": [] for t in thread_options}}
        for r in range(args.repeats):
            keys = list(runs) if r % 2 == 0 else list(runs)[::-1]
            for key in keys:
                if key == OURS:
                    runs[key].append(run_small_worker(OURS, name))
                else:
                    runs[key].append(
                        run_small_worker(PEER, name, threads=int(key.split(":")[1])))

        def summary(fit_runs):
            first = [f[0] for f in fit_runs]
            later = [g for f in fit_runs for g in f[1:]]
            return {
                "first_fit_seconds": _median(first),
                "first_fit_seconds_all": [f["seconds"] for f in first],
                # the mean: ours' trace falls on one of the later fits
                "later_fit_seconds": float(np.mean([g["seconds"] for g in later])),
                "n_iter": first[0]["n_iter"],
                "lower_bound": first[0]["lower_bound"],
            }

        peer_by_threads = {k: summary(v) for k, v in runs.items() if k != OURS}
        best = min(peer_by_threads, key=lambda k: peer_by_threads[k]["first_fit_seconds"])
        peer = dict(peer_by_threads[best], threads=int(best.split(":")[1]))
        ours = summary(runs[OURS])
        out[name] = {
            "config": cfg, "load_average_before": load,
            "sides": {OURS: ours, PEER: peer},
            "sklearn_by_threads": peer_by_threads,
            "first_fit_ratio_peer_over_ours": (
                peer["first_fit_seconds"] / ours["first_fit_seconds"]),
            "later_fit_ratio_peer_over_ours": (
                peer["later_fit_seconds"] / ours["later_fit_seconds"]),
        }
        print(f"  {name} ({cfg['n']}x{cfg['d']}, K={cfg['k']} "
              f"{cfg['covariance_type']}): first fit sklearn "
              f"{peer['first_fit_seconds']:.3f} s ({peer['threads']} threads), "
              f"ours {ours['first_fit_seconds']:.3f} s; later fit sklearn "
              f"{peer['later_fit_seconds']:.3f} s, ours "
              f"{ours['later_fit_seconds']:.3f} s; n_iter {peer['n_iter']} / "
              f"{ours['n_iter']} (load {load:.2f})", flush=True)
    return {"datasets": out}


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------
def _status(ok):
    return "MET" if ok else "MISSED"


def format_em_table(results):
    header = (
        f"{'case':<5} {'method':<9} {'s/iter':>9} {'marg s/iter':>11} "
        f"{'first fit s':>11} {'median fit s':>12} {'RSS MiB':>9} "
        f"{'GFLOP/s':>8} {'lower bound':>14}"
    )
    lines = [header, "-" * len(header)]
    for name in ("full", "diag"):
        if name not in results:
            continue
        res = results[name]
        for side in (PEER, OURS):
            s = res["sides"][side]
            if "skipped" in s:
                lines.append(
                    f"{name:<5} {side:<9} not timed: one fit needs over "
                    f"{s['memory_limit_bytes'] / 1024**3:.1f} GiB (memory guard)"
                )
                continue
            lines.append(
                f"{name:<5} {side:<9} {s['seconds_per_iteration']:>9.4f} "
                f"{s['marginal_seconds_per_iteration']:>11.4f} "
                f"{s['first_fit_seconds']:>11.3f} {s['median_fit_seconds']:>12.3f} "
                f"{s['peak_rss_increase_bytes'] / MIB:>9.1f} {s['gflops']:>8.2f} "
                f"{s['lower_bound']:>14.7f}"
            )
        mm = res["matmul_reference"]
        lines.append(
            f"{name:<5} {'matmul':<9} {mm['shape']} in {mm['seconds']:.4f} s: "
            f"{mm['gflops']:.2f} GFLOP/s (flops/iter {res['flops_per_iteration']:.3g})"
        )
        own, own_mm = res.get("own_flops_per_iteration"), res.get("own_matmul_reference")
        if own and not res["ours_skipped"]:
            marginal = res["sides"][OURS]["marginal_seconds_per_iteration"]
            rate = own / marginal / 1e9
            lines.append(
                f"{name:<5} {'own':<9} ours on quadratic features does {own:.3g} flops/iter"
                f" ({own / res['flops_per_iteration']:.0%} of the count above): "
                f"{rate:.2f} GFLOP/s, {rate / own_mm['gflops']:.0%} of a matmul "
                f"{own_mm['shape']} ({own_mm['gflops']:.2f} GFLOP/s)"
            )
        if not res["ours_skipped"]:
            lines.append(
                f"{name:<5} ratios    sklearn/ours s/iter "
                f"{res['speed_ratio_peer_over_ours']:.3f}"
                f"  marginal {res['marginal_speed_ratio_peer_over_ours']:.3f}"
                f"  whole fit (sklearn median / ours first) "
                f"{res['first_fit_speedup']:.3f}"
                f"  memory ours/sklearn {res['memory_ratio_ours_over_peer']:.3f}"
                f"  lower bound rel diff {res['lower_bound_rel_diff']:.2e}"
            )
    return "\n".join(lines)


def targets_report(results):
    """Lines ``name: value  MET|MISSED``, the cases whose lower bounds
    disagree or could not be compared, and the targets missed (what
    ``--check`` fails on; with ``--quick`` only the lower bounds: the
    targets are for the full sizes)."""
    lines, failed_checks, missed = [], [], []
    if "small" in results:
        t = TARGETS["small_first_fit_ratio_min"]
        for name, r in results["small"]["datasets"].items():
            v = r["first_fit_ratio_peer_over_ours"]
            if v < t:
                missed.append(f"small {name}")
            lines.append(f"  small {name} first fit (fresh process) sklearn/ours >= "
                         f"{t:g}: {v:.3f} ({r['sides'][PEER]['first_fit_seconds']:.3f}"
                         f" / {r['sides'][OURS]['first_fit_seconds']:.3f} s)  "
                         f"{_status(v >= t)}")
    for name in ("full", "diag"):
        if name not in results:
            continue
        res = results[name]
        if res["ours_skipped"]:
            failed_checks.append(name)
            limit = res["sides"][OURS]["memory_limit_bytes"] / 1024**3
            lines.append(f"  {name}: {OURS} not run (one fit needs over {limit:.1f} "
                         "GiB); lower bounds, speed and memory targets  MISSED")
            continue
        ok = (res["lower_bound_rel_diff"] <= TARGETS["bound_rel_diff_max"]
              and res["n_iter_match"])
        if not ok:
            failed_checks.append(name)
        lines.append(f"  {name} lower bounds agree (rel diff <= "
                     f"{TARGETS['bound_rel_diff_max']:g}, same n_iter): "
                     f"{res['lower_bound_rel_diff']:.2e}  {_status(ok)}")
        if name in TARGETS["first_fit_speedup_min"]:
            t = TARGETS["first_fit_speedup_min"][name]
            v = res["first_fit_speedup"]
            if v < t:
                missed.append(f"{name} first fit")
            lines.append(f"  {name} whole fit (ours first, with compilation) >= "
                         f"{t:g}x faster than sklearn: {v:.3f}  {_status(v >= t)}")
        if name in TARGETS["matmul_fraction_min"]:
            t = TARGETS["matmul_fraction_min"][name]
            v = res["sides"][OURS]["gflops"] / res["matmul_reference"]["gflops"]
            if v < t:
                missed.append(f"{name} GFLOP/s")
            lines.append(f"  {name} GFLOP/s ours / float32 matmul >= {t:g}: "
                         f"{v:.3f}  {_status(v >= t)}")
        if name in TARGETS["memory_ratio_max"]:
            t = TARGETS["memory_ratio_max"][name]
            v = res["memory_ratio_ours_over_peer"]
            if v > t:
                missed.append(f"{name} memory")
            lines.append(f"  {name} peak RSS ours/sklearn <= {t:g}: {v:.3f}  "
                         f"{_status(v <= t)}")
        v = res["speed_ratio_peer_over_ours"]
        t = TARGETS["speed_ratio_min"].get(name, 1.0)
        if v < t:
            missed.append(f"{name} s/iter")
        lines.append(f"  {name} s/iter ratio sklearn/ours >= {t:g}: {v:.3f}  "
                     f"{_status(v >= t)}")
    if "init" in results:
        v = results["init"]["init_ratio_peer_over_ours"]
        t = TARGETS["init_ratio_min"]
        if v < t:
            missed.append("init")
        lines.append(f"  init ratio sklearn/ours >= {t:g}: {v:.3f}  {_status(v >= t)}")
    if "bayesian" in results:
        _bayesian_targets(results, lines, failed_checks, missed)
    if "stream" in results:
        v = results["stream"]["peak_rss_bytes"]
        t = TARGETS["stream_peak_rss_max_bytes"]
        text = "over the memory limit" if v is None else f"{v / MIB:.0f} MiB"
        ok = v is not None and v < t
        if not ok:
            missed.append("stream memory")
        lines.append(f"  stream peak RSS < {t / MIB:.0f} MiB: {text}  {_status(ok)}")
    return lines, failed_checks, missed


def format_small_table(small):
    header = (f"{'small':<7} {'N x D':>10} {'K':>3} {'type':<5} {'method':<9} "
              f"{'first fit s':>11} {'later fit s':>11} {'n_iter':>6} "
              f"{'lower bound':>12}")
    lines = [header, "-" * len(header)]
    for name, r in small["datasets"].items():
        cfg = r["config"]
        for side in (PEER, OURS):
            s = r["sides"][side]
            lines.append(
                f"{name:<7} {cfg['n']:>5}x{cfg['d']:<4} {cfg['k']:>3} "
                f"{cfg['covariance_type']:<5} {side:<9} {s['first_fit_seconds']:>11.4f} "
                f"{s['later_fit_seconds']:>11.4f} {s['n_iter']:>6} "
                f"{s['lower_bound']:>12.5f}")
        lines.append(f"{name:<7} ratios sklearn/ours: first fit "
                     f"{r['first_fit_ratio_peer_over_ours']:.3f}, later fit "
                     f"{r['later_fit_ratio_peer_over_ours']:.3f} (load average "
                     f"{r['load_average_before']:.2f})")
    return "\n".join(lines)


def print_report(results):
    """The tables of the finished cases and the targets, on stdout."""
    print()
    if "small" in results:
        print(format_small_table(results["small"]))
        print("(first fit: median over fresh processes of a new estimator's first "
              "fit, imports and data loading excluded; later fit: mean of the "
              f"{SMALL_LATER_FITS} next fits of new estimators in those processes; "
              "ours runs op by op until that has cost about a trace, then traces "
              "its graph once: one of the later fits pays the trace)")
        print()
    if "full" in results or "diag" in results:
        print(format_em_table(results))
        print("(s/iter: median whole fit / n_iter_; marg s/iter: (median T(max_iter) "
              "- median T(1)) / (max_iter - 1); first fit: ours on a new layer, "
              "with tracing; RSS MiB: peak RSS increase during one fit in a fresh "
              "process; GFLOP/s from the marginal s/iter)")
    if "init" in results:
        r = results["init"]
        print(f"init  ours k-means++ + kmeans + parameters (tf.function) "
              f"{r['ours_init_seconds']:.4f} s; sklearn KMeans init "
              f"{r['sklearn_init_seconds']:.4f} s (= fit(kmeans, max_iter=1) "
              f"{r['sklearn_fit_kmeans_max_iter_1_seconds']:.4f} - fit(given, "
              f"max_iter=1) {r['sklearn_fit_given_max_iter_1_seconds']:.4f}); "
              f"ratio sklearn/ours {r['init_ratio_peer_over_ours']:.3f}; whole "
              f"fit(init_params='kmeans', max_iter=1): ours "
              f"{r['ours_fit_kmeans_max_iter_1_seconds']:.4f} s, sklearn "
              f"{r['sklearn_fit_kmeans_max_iter_1_seconds']:.4f} s")
    if "stream" in results:
        r = results["stream"]
        if "skipped" in r:
            print(f"stream {r['config']['n']:,} rows: {r['skipped']}")
        else:
            print(f"stream {r['config']['n']:,} rows x {r['n_iter']} iterations: fit "
                  f"{r['fit_seconds']:.2f} s ({r['seconds_per_iteration']:.2f} s/iter, "
                  f"{r['rows_per_second']:,.0f} rows/s; generating alone "
                  f"{r['generate_only_pass_seconds']:.2f} s a pass), peak RSS "
                  f"{r['peak_rss_bytes'] / MIB:.0f} MiB "
                  f"(+{r['peak_rss_increase_bytes'] / MIB:.0f} MiB during the fit), "
                  f"lower bound {r['lower_bound']:.6f}")
    if "bayesian" in results:
        print(format_bayesian_table(results["bayesian"]))
        print("(s/iter: median whole fit / n_iter_, start from the "
              "responsibilities included; first fit: ours with tracing)")
    print()
    print("targets:")
    lines, _, _ = targets_report(results)
    print("\n".join(lines))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.em", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: N / {QUICK_DIVISOR}, "
                        f"{QUICK_REPEATS} repeats, "
                        f"{QUICK_STREAM_ROWS:,} streamed rows")
    parser.add_argument("--case", action="append",
                        choices=("small", "full", "diag", "stream", "init",
                                 "bayesian", "all"),
                        help="case(s) to run (repeatable; default all)")
    parser.add_argument("--n-divisor", type=int, default=None,
                        help="divide N of the full, diag and init cases by this "
                        f"(default 1; {QUICK_DIVISOR} with --quick), for machines "
                        "with less memory or time")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"timed rounds per case (default {REPEATS}; "
                        f"{QUICK_REPEATS} with --quick)")
    parser.add_argument("--max-iter", type=int, default=MAX_ITER,
                        help=f"EM iterations per fit (default {MAX_ITER})")
    parser.add_argument("--batch-size", default=str(BATCH_SIZE),
                        help="rows per chunk for ours (default 'none': the layer's "
                        "default, ops.em.default_chunk_size)")
    parser.add_argument("--sklearn-threads", default="auto",
                        help="threads of scikit-learn's BLAS/OpenMP pools: an int, or "
                        "'auto' (default): the faster of 1 and os.cpu_count() in a "
                        "trial fit per case")
    parser.add_argument("--memory-limit-gib", type=float, default=None,
                        help="abort (exit 3) when this process's RSS exceeds it "
                        "(default 75%% of available memory at start)")
    parser.add_argument("--memory-worker", metavar="SPEC", help=argparse.SUPPRESS)
    parser.add_argument("--small-worker", metavar="SPEC", help=argparse.SUPPRESS)
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 if the lower bounds disagree")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"JSON results path (default {DEFAULT_OUTPUT})")
    args = parser.parse_args(argv)
    cases = args.case or ["all"]
    # ("all" with --quick, the smoke run, leaves out the small case's dozens
    # of fresh processes)
    args.cases = [c for c in ALL_CASES if c in cases or (
        "all" in cases and not (args.quick and c == "small"))]
    if "bayesian" in cases:
        args.cases.append("bayesian")
    if args.repeats is None:
        args.repeats = QUICK_REPEATS if args.quick else REPEATS
    if args.n_divisor is None:
        args.n_divisor = QUICK_DIVISOR if args.quick else 1
    if args.n_divisor < 1:
        parser.error("--n-divisor must be >= 1")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.max_iter < 2:
        parser.error("--max-iter must be >= 2 (the marginal s/iter needs two fits)")
    if args.batch_size.lower() == "none":
        args.batch_size = None
    else:
        try:
            args.batch_size = int(args.batch_size)
        except ValueError:
            parser.error("--batch-size must be an int or 'none'; "
                         f"got {args.batch_size!r}")
        if args.batch_size < 1:
            parser.error("--batch-size must be >= 1")
    if args.sklearn_threads != "auto":
        try:
            if int(args.sklearn_threads) < 1:
                raise ValueError
        except ValueError:
            parser.error("--sklearn-threads must be 'auto' or an int >= 1; got "
                         f"{args.sklearn_threads!r}")
    if args.output is None:
        args.output = QUICK_OUTPUT if args.quick else DEFAULT_OUTPUT
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.memory_worker:
        return memory_worker(args.memory_worker)
    if args.small_worker:
        return small_worker(args.small_worker)
    import sklearn
    from threadpoolctl import threadpool_info

    limit = (default_memory_limit() if args.memory_limit_gib is None
             else int(args.memory_limit_gib * 1024**3))
    args.memory_limit = limit
    results = {}
    result = {}
    args.output.parent.mkdir(parents=True, exist_ok=True)

    def on_abort(message):
        print_report(results)
        result["aborted"] = {"message": message, "partial": MemoryGuard.partial}
        args.output.write_text(json.dumps(result, indent=2))
        print(f"\npartial results written to {args.output}", flush=True)

    guard = MemoryGuard(limit, on_abort=on_abort)
    divisor = args.n_divisor
    print(
        f"EM benchmark: keras_gmm {keras_gmm.__version__} GaussianMixtureEM vs "
        f"scikit-learn {sklearn.__version__} GaussianMixture; cases {args.cases}; "
        f"{os.cpu_count()} CPUs; TF intra-op threads "
        f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'}; "
        f"sklearn threads {args.sklearn_threads}; float32; memory guard at "
        f"{limit / 1024**3:.1f} GiB.", flush=True
    )
    load_before = os.getloadavg()
    result.update({
        "benchmark": "em",
        "command": " ".join(
            ["python -m benchmarks.em", *(sys.argv[1:] if argv is None else argv)]
        ),
        "complete": False,
        "config": {
            "cases": args.cases, "quick": args.quick, "repeats": args.repeats,
            "n_divisor": args.n_divisor,
            "max_iter": args.max_iter, "tol": 0.0, "n_init": 1,
            "reg_covar": REG_COVAR, "batch_size_ours": args.batch_size,
            "sklearn_threads": args.sklearn_threads,
            "n_blobs": N_BLOBS, "seed": SEED, "dtype": "float32",
            "memory_method": "one fit per side in a fresh process: " + (
                "VmHWM reset via /proc/self/clear_refs" if _reset_high_water_mark()
                else "psutil sampling thread (2 ms)"),
            "memory_limit_bytes": limit,
        },
        "targets": TARGETS,
        "results": results,
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average_before": load_before,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "keras_gmm": keras_gmm.__version__,
            "scikit_learn": sklearn.__version__,
            "threadpools": [
                {k: v for k, v in p.items() if k in ("internal_api", "num_threads")}
                for p in threadpool_info()
            ],
            # the EM code changes between versions of the working tree
            "gaussian_mixture_em_sha256": _sha256(
                keras_gmm.layers.gaussian_mixture_em.__file__
            ),
            "ops_em_sha256": _sha256(em.__file__),
        },
    })
    for name in args.cases:
        start = time.perf_counter()
        MemoryGuard.activity = f"the {name} case"
        MemoryGuard.partial = {"case": name}
        if name == "small":
            results[name] = run_small_case(args)
        elif name == "stream":
            results[name] = run_stream_case(args)
        elif name == "bayesian":
            results[name] = run_bayesian_case(args)
        elif name == "init":
            case = CASES[INIT_CASE]
            results[name] = run_init_case(case, case["n"] // divisor, args)
        else:
            case = CASES[name]
            results[name] = run_em_case(name, case, case["n"] // divisor, args)
        results[name]["wall_seconds"] = time.perf_counter() - start
        # after every case, so that an aborted run keeps what it measured
        args.output.write_text(json.dumps(result, indent=2))
    load_after = os.getloadavg()

    print_report(results)
    print(f"(load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
          f"process peak RSS {guard.peak / MIB:.0f} MiB)")
    _, failed, missed = targets_report(results)
    if not args.quick:
        failed += missed

    result["complete"] = True
    result["environment"]["load_average_after"] = load_after
    result["environment"]["process_peak_rss_bytes"] = guard.peak
    args.output.write_text(json.dumps(result, indent=2))
    print(f"\nresults written to {args.output}")
    if args.check and failed:
        print(f"check failed: targets missed (or lower bounds disagree): {failed}",
              file=sys.stderr)
        sys.exit(1)
    return result


def _sha256(path):
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


if __name__ == "__main__":
    main()
