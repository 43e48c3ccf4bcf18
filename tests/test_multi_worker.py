"""Scale-out: two MultiWorkerMirroredStrategy workers on loopback.

The module starts two worker processes (``tests/multi_worker_script.py``,
each with its ``TF_CONFIG``: a cluster of two workers on free loopback
ports), bounded in time (killed in a ``finally``), and compares what they
computed with one process:

- ``GaussianMixtureEM.fit`` on a sharded dataset (each worker reads only its
  shard) equals the one-process fit of all rows (float64, 1e-10);
- a model with each layer trains two steps on a global batch and ends with
  the same weights on both workers, equal to one process fed the global
  batch (float32 tolerances);
- online EM's statistics are all-reduced: one mixture for the cluster, not
  one per replica, equal to one process's (float64, 1e-9);
- a fit initialised from the data (no initial parameters) starts every
  worker from worker 0's initialisation, so both end with the same mixture.
- the Bayesian mixture's data-dependent priors are the moments of all
  workers' rows, its start worker 0's: its fit equals one process's from
  the same start (float64, 1e-10).

The workers are separate processes (this process's conftest splits its CPU
into two logical devices; theirs keep one each). The whole module takes
about 40-70 s on two cores.
"""

# xdist: tf.distribute only in subprocesses

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gmm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import multi_worker_script as script

SCRIPT = Path(__file__).resolve().parent / "multi_worker_script.py"
REPO_ROOT = Path(__file__).resolve().parents[1]
#: The most seconds the two workers may take together (start-up included).
WORKER_TIMEOUT_S = 300


def _free_ports(count):
    """Free loopback ports (held open together, so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _start_workers(directory):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(script.N_WORKERS)]}
    procs = []
    for index in range(script.N_WORKERS):
        env = dict(os.environ)
        env.update({
            "TF_CONFIG": json.dumps({"cluster": cluster,
                                     "task": {"type": "worker", "index": index}}),
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "KERAS_BACKEND": "tensorflow",
            "CUDA_VISIBLE_DEVICES": "",
            "PYTHONPATH": os.pathsep.join(
                [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])),
        })
        log = open(Path(directory) / f"worker_{index}.log", "w")  # noqa: SIM115
        procs.append((subprocess.Popen(
            [sys.executable, str(SCRIPT), str(directory)], env=env, cwd=REPO_ROOT,
            stdout=log, stderr=subprocess.STDOUT), log))
    return procs


def _wait(procs, directory, deadline):
    try:
        for proc, _ in procs:
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        pytest.fail(f"the workers did not finish within {WORKER_TIMEOUT_S} s; logs in "
                    f"{directory}: " + _tails(directory))
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            log.close()
    for index, (proc, _) in enumerate(procs):
        if proc.returncode != 0:
            pytest.fail(f"worker {index} exited with status {proc.returncode}: "
                        + _tails(directory))


def _tails(directory):
    text = []
    for path in sorted(Path(directory).glob("worker_*.log")):
        text.append(f"--- {path.name}:\n{path.read_text()[-3000:]}")
    return "\n".join(text)


# --------------------------------------------------------------------------
# one-process references (computed while the workers run)
# --------------------------------------------------------------------------
def _reference_em(directory):
    with np.load(Path(directory) / "em_init.npz") as f:
        init = {k: f[k] for k in f.files}
    gmm = script.make_em_layer(init)
    gmm.fit(script.em_data(), verbose=0)
    return script.em_result(gmm)


def _reference_data_init(index):
    """The initial parameters made from shard ``index`` alone (seed 0)."""
    gmm = script.make_em_layer(max_iter=0)
    gmm.fit(script.shard_dataset(script.em_shard(script.em_data(), index),
                                 script.EM_BATCH), verbose=0)
    return script.em_result(gmm)


def _reference_bayesian():
    """One process: the priors of all rows; the start made from shard 0's
    rows with those priors (as worker 0 makes it); then the fit of all rows
    from that start (a warm start continues from it)."""
    x = script.em_data()
    batched = tf.data.Dataset.from_tensor_slices(x).batch(script.EM_BATCH)
    whole = script.make_bayesian_layer(max_iter=0)
    whole.fit(x, verbose=0)
    priors = {"mean_prior": whole.mean_prior_,
              "covariance_prior": whole.covariance_prior_}
    gmm = script.make_bayesian_layer(max_iter=0, **priors)
    gmm.fit(script.shard_dataset(script.em_shard(x, 0), script.EM_BATCH), verbose=0)
    gmm.max_iter, gmm.warm_start = script.EM_MAX_ITER, True
    gmm.fit(batched, verbose=0)
    shard = script.make_bayesian_layer(max_iter=0)
    shard.fit(script.em_shard(x, 0), verbose=0)
    return script.bayesian_result(gmm), shard.mean_prior_


def _reference_model(directory, name, rows=None, batch_size=script.GLOBAL_BATCH,
                     strategy=None):
    x, y = script.model_data(name)
    if rows is not None:
        x, y = x[rows], y[rows]
    with strategy.scope() if strategy is not None else _nothing():
        model = script.build_model(name)
        model.set_weights(script.load_weights(Path(directory) / f"{name}_init.npz"))
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    return model, script.train(model, dataset)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Run the two workers once; the one-process references meanwhile."""
    directory = tmp_path_factory.mktemp("multi_worker")
    script.prepare(str(directory))
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    procs = _start_workers(directory)
    try:
        references = {"em": _reference_em(directory),
                      "bayes": _reference_bayesian()}
        for index in range(script.N_WORKERS):
            references[f"data_init_{index}"] = _reference_data_init(index)
        for name in script.MODELS:
            references[name] = _reference_model(directory, name)
        # online EM stepped on worker 0's half batches alone: what a replica
        # would learn if the statistics were not all-reduced
        references["online_em_shard_0"] = _reference_model(
            directory, "online_em",
            rows=script.worker_rows(script.STEPS * script.GLOBAL_BATCH, 0),
            batch_size=script.GLOBAL_BATCH // script.N_WORKERS)
    finally:
        _wait(procs, directory, deadline)
    workers = []
    for index in range(script.N_WORKERS):
        report = json.loads((Path(directory) / f"worker_{index}.json").read_text())
        with np.load(Path(directory) / f"worker_{index}.npz") as f:
            report["arrays"] = {k: f[k] for k in f.files}
        workers.append(report)
    return {"directory": directory, "workers": workers, "references": references}


def _worker_weights(worker, name):
    error = worker.get(f"{name}_error")
    assert error is None, f"worker {worker['index']} failed on {name}:\n{error}"
    arrays = worker["arrays"]
    count = sum(1 for k in arrays if k.startswith(f"{name}_") and k[len(name) + 1:].isdigit())
    return [arrays[f"{name}_{i}"] for i in range(count)]


# --------------------------------------------------------------------------
# the tests
# --------------------------------------------------------------------------
def test_the_cluster_has_one_replica_per_worker(cluster):
    assert [w["replicas"] for w in cluster["workers"]] == [script.N_WORKERS] * 2


def test_em_fit_on_shards_equals_one_process(cluster):
    ref = cluster["references"]["em"]
    for worker in cluster["workers"]:
        assert worker.get("em_error") is None, worker.get("em_error")
        # each worker read its own shard only; the pass saw every row once
        assert worker["em_local_rows"] == script.EM_ROWS_PER_SHARD
        assert worker["em_pass_rows"] == script.N_WORKERS * script.EM_ROWS_PER_SHARD
        got = {k[3:]: v for k, v in worker["arrays"].items() if k.startswith("em_")}
        assert int(got["n_iter"]) == int(ref["n_iter"]) > 2
        for key in ("weights", "means", "precisions_cholesky", "lower_bound"):
            np.testing.assert_allclose(got[key], ref[key], rtol=1e-10, atol=1e-12,
                                       err_msg=key)


@pytest.mark.parametrize("name", [m for m in script.MODELS if m != "online_em"])
def test_a_model_trains_in_sync_and_as_one_process(cluster, name):
    w0, w1 = (_worker_weights(w, name) for w in cluster["workers"])
    initial = script.load_weights(Path(cluster["directory"]) / f"{name}_init.npz")
    model, ref = cluster["references"][name]
    assert len(w0) == len(w1) == len(ref) == len(initial)
    # GMMEnergy's objective uses each replica's batch mixture (as
    # BatchNormalization's batch statistics): near one process, not equal
    tol = {"rtol": 0.0, "atol": 2e-2} if name == "energy_objective" else {
        "rtol": 1e-4, "atol": 2e-5}
    moved = False
    for a, b, r, i, v in zip(w0, w1, ref, initial, model.weights):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7,  # the same on both
                                   err_msg=v.path)
        np.testing.assert_allclose(a, r, err_msg=v.path, **tol)
        moved |= not np.allclose(a, i, rtol=1e-4, atol=1e-5, equal_nan=True)
    assert moved, "two training steps left every weight where it started"


def test_energy_moving_statistics_are_all_reduced(cluster):
    # one inference mixture from both workers' rows, as one process's
    w0 = _worker_weights(cluster["workers"][0], "energy")
    model, ref = cluster["references"]["energy"]
    layer = next(v for v in model.layers if isinstance(v, keras_gmm.GMMEnergy))
    index = next(i for i, v in enumerate(model.weights) if v is layer.moving_nk)
    assert np.sum(ref[index]) > 0.5  # two steps at momentum 0.5: mass 0.75
    np.testing.assert_allclose(w0[index], ref[index], rtol=1e-5, atol=1e-7)


def test_online_em_statistics_are_all_reduced(cluster):
    w0, w1 = (_worker_weights(w, "online_em") for w in cluster["workers"])
    model, ref = cluster["references"]["online_em"]
    _, shard_only = cluster["references"]["online_em_shard_0"]
    layer = script.online_em_layer(model)
    names = [v.path for v in model.weights]
    state = [layer.mixture_weights, layer.means, layer.precisions_cholesky,
             layer.moving_nk, layer.moving_scatter, layer.skipped_batches]
    mixture = [i for i, v in enumerate(model.weights) if any(v is u for u in state)]
    assert len(mixture) == len(state)
    for i in range(len(ref)):
        # the float64 mixture: one process's on the global batches, tightly
        tol = ({"rtol": 1e-9, "atol": 1e-12} if i in mixture
               else {"rtol": 1e-4, "atol": 2e-5})
        np.testing.assert_allclose(w0[i], w1[i], err_msg=names[i], **tol)
        np.testing.assert_allclose(w0[i], ref[i], err_msg=names[i], **tol)
    assert int(w0[names.index(layer.skipped_batches.path)]) == 0
    # one mixture from both workers' rows: not what worker 0's rows give
    assert any(not np.allclose(w0[i], shard_only[i], rtol=1e-3, atol=1e-4)
               for i in mixture)


def _prefixed(worker, prefix):
    return {k[len(prefix):]: v for k, v in worker["arrays"].items()
            if k.startswith(prefix)}


def test_em_initialised_from_the_data_starts_every_worker_from_worker_0s(cluster):
    # no initial parameters: each worker initialises from its own shard's
    # first rows, and every worker starts from worker 0's
    refs = cluster["references"]
    for worker in cluster["workers"]:
        assert worker.get("em_data_error") is None, worker.get("em_data_error")
        start = _prefixed(worker, "em_data_init_")
        for key in ("weights", "means", "precisions_cholesky"):
            np.testing.assert_allclose(start[key], refs["data_init_0"][key],
                                       rtol=1e-12, atol=1e-14, err_msg=key)
        # (worker 1's own rows give another start: the agreement is not moot)
        assert not np.allclose(start["means"], refs["data_init_1"]["means"])
    fit0, fit1 = (_prefixed(w, "em_data_fit_") for w in cluster["workers"])
    assert int(fit0["n_iter"]) == int(fit1["n_iter"]) > 1
    for key in ("weights", "means", "precisions_cholesky", "lower_bound"):
        np.testing.assert_allclose(fit0[key], fit1[key], rtol=1e-10, atol=1e-12,
                                   err_msg=key)


def test_bayesian_fit_on_shards_takes_its_priors_from_every_worker(cluster):
    ref, shard_0_mean = cluster["references"]["bayes"]
    for worker in cluster["workers"]:
        assert worker.get("bayes_error") is None, worker.get("bayes_error")
        got = _prefixed(worker, "bayes_")
        # the data-dependent priors: all rows' moments, not this shard's
        for key in ("mean_prior", "covariance_prior"):
            np.testing.assert_allclose(got[key], ref[key], rtol=1e-12, atol=1e-13,
                                       err_msg=key)
        assert not np.allclose(got["mean_prior"], shard_0_mean, atol=1e-3)
        assert int(got["n_iter"]) == int(ref["n_iter"]) > 2
        for key in ("weights", "means", "precisions_cholesky", "mean_precision",
                    "degrees_of_freedom", "lower_bound"):
            np.testing.assert_allclose(got[key], ref[key], rtol=1e-10, atol=1e-12,
                                       err_msg=key)


def test_workers_stop_by_themselves_in_time(cluster):
    for worker in cluster["workers"]:
        assert sum(worker["seconds"].values()) < WORKER_TIMEOUT_S
    assert keras.__version__  # the parent process is unaffected
