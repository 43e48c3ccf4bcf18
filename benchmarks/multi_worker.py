"""Streamed EM on one worker against two MultiWorkerMirroredStrategy workers.

Run from the repository root::

    python -m benchmarks.multi_worker            # 10,000,000 rows, 3 passes
    python -m benchmarks.multi_worker --quick    # 500,000 rows
    python -m benchmarks.multi_worker --rows 2000000 --passes 3

The data are ``benchmarks.em``'s stream case (8 anisotropic Gaussian blobs,
D=16, generated lazily batch by batch from per-batch stateless seeds, 65,536
rows a batch; never in memory as a whole); the mixture is K=16 "diag",
``GaussianMixtureEM.fit`` of a ``tf.data.Dataset`` from given initial
parameters, ``tol=0``, ``--passes`` EM iterations. Measured, each in fresh
processes:

- **1 worker**: one process, no strategy, all batches;
- **2 workers**: two processes on loopback (``TF_CONFIG``, free ports), each
  generating only its own batches (batch ``i`` on worker ``i % 2``,
  auto-sharding off) under ``tf.distribute.MultiWorkerMirroredStrategy``;
  each batch's statistics (and its row counts) are one all-reduce of one
  packed tensor, one M-step per pass on the sums.

Reported: the seconds of each pass after the first (the first includes
tracing), their median, and 1 worker / 2 workers (speed-up). Both workers
run on the same machine: with 2 cores the two workers share the cores one
process would use alone, so the ratio shows the cost of the collectives,
not a gain from more hardware. The lower bounds of both runs must agree
(1e-6 relative; float32 sums in a different order).
"""

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "multi_worker.json"
MARKER = "MULTI_WORKER_RESULT "
ROWS, QUICK_ROWS, BATCH, D, K = 10_000_000, 500_000, 65_536, 16, 16
PASSES = 3
TIMEOUT_S = 3600


def batches(n_rows, batch_size, index=0, count=1):
    """A dataset of the stream case's batches ``index, index + count, ...``
    (all of them for one worker), auto-sharding off."""
    import tensorflow as tf

    from benchmarks.em import SEED, blob_spec

    centres, transforms, weights = blob_spec(D, SEED)
    centres, transforms = tf.constant(centres), tf.constant(transforms)
    log_w = tf.math.log(tf.constant(weights, tf.float32))[None]
    n_batches = math.ceil(n_rows / batch_size)

    def batch(i):  # as benchmarks.em.blob_dataset
        seeds = tf.random.experimental.stateless_split(
            tf.stack([tf.constant(SEED, tf.int64), i]), 2)
        size = tf.cast(tf.minimum(tf.constant(batch_size, tf.int64),
                                  n_rows - i * batch_size), tf.int32)
        labels = tf.random.stateless_categorical(log_w, size, seeds[0])[0]
        z = tf.random.stateless_normal(tf.stack([size, D]), seeds[1])
        every_blob = tf.einsum("nd,bde->nbe", z, transforms) + centres
        return tf.gather(every_blob, labels, batch_dims=1)

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF)
    return (tf.data.Dataset.range(index, n_batches, count).map(batch).prefetch(1)
            .with_options(options))


def run(spec):
    """One process: ``spec["workers"]`` 1 (no strategy) or a worker of 2."""
    import tensorflow as tf

    strategy, index, count = None, 0, 1
    if spec["workers"] > 1:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                timeout_seconds=600))
        index = int(json.loads(os.environ["TF_CONFIG"])["task"]["index"])
        count = spec["workers"]
    from keras_gmm.ops import em_driver

    with np.load(spec["init"]) as f:
        params = tuple(tf.constant(f[k]) for k in ("weights", "means", "prec_chol"))
    dataset = batches(spec["rows"], spec["batch_size"], index, count)
    stamps = [time.perf_counter()]
    scope = strategy.scope() if strategy is not None else _Nothing()
    with scope:
        result = em_driver.streamed_em(
            dataset, params, "diag", 1e-6, spec["passes"], 0.0,
            callback=lambda bound, prev: stamps.append(time.perf_counter()))
    print(MARKER + json.dumps({
        "pass_seconds": np.diff(stamps).tolist(), "bounds": result.bounds,
        "index": index}), flush=True)


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _launch(spec, workers, workdir):
    spec = dict(spec, workers=workers)
    path = Path(workdir) / f"spec_{workers}.json"
    path.write_text(json.dumps(spec))
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(workers)]}
    procs = []
    try:
        for index in range(workers):
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
            env["PYTHONPATH"] = os.pathsep.join(
                [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
            if workers > 1:
                env["TF_CONFIG"] = json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": index}})
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "benchmarks.multi_worker", "--run", str(path)],
                cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True))
        deadline = time.monotonic() + TIMEOUT_S
        outputs = [p.communicate(timeout=max(deadline - time.monotonic(), 1))
                   for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    results = []
    for p, (out, err) in zip(procs, outputs):
        line = next((ln for ln in out.splitlines() if ln.startswith(MARKER)), None)
        if p.returncode != 0 or line is None:
            raise RuntimeError(f"a run failed (status {p.returncode}):\n{err[-3000:]}")
        results.append(json.loads(line[len(MARKER):]))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.multi_worker",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_ROWS:,} rows instead of {ROWS:,}")
    parser.add_argument("--rows", type=int, default=None,
                        help=f"rows of the stream (default {ROWS:,})")
    parser.add_argument("--passes", type=int, default=PASSES)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        return run(json.loads(Path(args.run).read_text()))
    if args.passes < 2:
        parser.error("--passes must be >= 2 (the first pass includes tracing)")
    import tensorflow as tf

    from benchmarks.em import initial_parameters
    from keras_gmm.ops import em

    rows = args.rows or (QUICK_ROWS if args.quick else ROWS)
    head = np.concatenate([b.numpy() for b in batches(rows, BATCH).take(2)])
    weights, means, precisions = initial_parameters(head, K, "diag")
    prec_chol = em.precisions_cholesky_from_precisions(tf.constant(precisions), "diag")
    load_before = os.getloadavg()
    print(f"streamed EM, {rows:,} rows x D={D}, K={K} diag, batches of {BATCH:,}, "
          f"{args.passes} passes; {os.cpu_count()} CPUs; load average "
          f"{load_before[0]:.2f}", flush=True)
    out = {}
    with tempfile.TemporaryDirectory(prefix="multi_worker_") as workdir:
        init = Path(workdir) / "init.npz"
        np.savez(init, weights=weights, means=means, prec_chol=prec_chol.numpy())
        spec = {"rows": rows, "batch_size": BATCH, "passes": args.passes,
                "init": str(init)}
        for workers in (1, 2):
            start = time.perf_counter()
            results = _launch(spec, workers, workdir)
            later = [s for r in results for s in r["pass_seconds"][1:]]
            out[workers] = {
                "pass_seconds": [r["pass_seconds"] for r in results],
                "median_pass_seconds": float(np.median(later)),
                "bounds": results[0]["bounds"],
                "wall_seconds": time.perf_counter() - start,
            }
            print(f"  {workers} worker(s): passes "
                  + ", ".join(f"{s:.2f}" for s in results[0]["pass_seconds"])
                  + f" s; median later pass {out[workers]['median_pass_seconds']:.2f} s"
                  f" ({rows / out[workers]['median_pass_seconds']:,.0f} rows/s)",
                  flush=True)
    b1, b2 = out[1]["bounds"][-1], out[2]["bounds"][-1]
    summary = {
        "rows": rows, "d": D, "k": K, "batch_size": BATCH, "passes": args.passes,
        "cpu_count": os.cpu_count(), "load_average_before": load_before,
        "load_average_after": os.getloadavg(), "runs": out,
        "speedup_two_workers": out[1]["median_pass_seconds"]
        / out[2]["median_pass_seconds"],
        "lower_bound_rel_diff": abs(b1 - b2) / abs(b1),
    }
    print(f"  speed-up 2 workers / 1: {summary['speedup_two_workers']:.2f}x; "
          f"lower bounds {b1:.7f} / {b2:.7f} (rel diff "
          f"{summary['lower_bound_rel_diff']:.1e}); load average "
          f"{summary['load_average_after'][0]:.2f} after")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=2))
    print(f"results written to {args.output}")
    if summary["lower_bound_rel_diff"] > 1e-6:
        sys.exit(1)
    return summary


if __name__ == "__main__":
    main()
