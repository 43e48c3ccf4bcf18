"""The worker side of tests/test_multi_worker.py (a standalone script).

``python tests/multi_worker_script.py DIR`` is one worker of a
``tf.distribute.MultiWorkerMirroredStrategy`` cluster described by the
``TF_CONFIG`` environment variable (the test starts two on loopback). It
reads only its own shards from ``DIR`` (written by :func:`prepare`), runs
every scenario under the strategy and writes ``DIR/worker_<index>.npz`` and
``DIR/worker_<index>.json``:

- ``em``: ``GaussianMixtureEM(dtype="float64").fit`` on a ``tf.data``
  dataset of this worker's shard (auto-sharding off: the shard is already
  this worker's), from given initial parameters; plus one streamed pass, whose
  row count is the cluster's (the all-reduced statistics of both shards);
- ``em_data_init``, ``em_data_fit``: the same layer initialised from the
  data (no initial parameters, seed 0), with ``max_iter=0`` (the initial
  parameters: worker 0's, made from its shard) and a whole fit;
- ``bayes``: ``BayesianGaussianMixtureEM(dtype="float64").fit`` on the
  shard, its data-dependent priors (mean and covariance prior) and its
  start made from the data: the priors from all workers' rows
  (all-reduced), the start from worker 0's;
- one model per layer (:data:`MODELS`): two training steps (Keras's
  ``train_step``, see :func:`train_multi_worker`) on a global batch of
  ``GLOBAL_BATCH`` rows, this worker feeding its half of each
  (from its own shard, auto-sharding off), from initial weights written by
  the test (so no random initialisation differs between processes).

The test imports this module for the same data, models and reference runs.
"""

import json
import os
import sys
import time
import traceback

import numpy as np

EM_K, EM_D, EM_ROWS_PER_SHARD, EM_BATCH = 3, 3, 300, 64
EM_REG, EM_MAX_ITER, EM_TOL = 1e-6, 15, 1e-9
GLOBAL_BATCH, STEPS, N_WORKERS = 16, 2, 2
MODELS = ("mdn", "vae", "conv", "energy", "energy_objective", "online_em")
#: The collectives give up after this many seconds (a lost peer ends the
#: worker with an error instead of a hang; the test also times out).
COLLECTIVE_TIMEOUT_S = 120


# --------------------------------------------------------------------------
# data and models (shared with the test)
# --------------------------------------------------------------------------
def em_data():
    """``[2 * EM_ROWS_PER_SHARD, EM_D]`` float64 rows of three blobs."""
    rng = np.random.default_rng(0)
    centres = np.array([[-4.0, 0.0, 1.0], [3.0, 3.0, -2.0], [0.0, -4.0, 4.0]])
    labels = rng.integers(0, EM_K, N_WORKERS * EM_ROWS_PER_SHARD)
    return centres[labels] + rng.normal(size=(len(labels), EM_D))


def em_shard(x, index):
    """Worker ``index``'s rows (contiguous halves)."""
    return x[index * EM_ROWS_PER_SHARD:(index + 1) * EM_ROWS_PER_SHARD]


def model_data(name):
    """``(x, y)`` of ``STEPS * GLOBAL_BATCH`` rows for model ``name``."""
    rng = np.random.default_rng(len(name))
    n = STEPS * GLOBAL_BATCH
    if name == "conv":
        x = rng.normal(size=(n, 6, 6, 1)).astype("float32")
        return x, x.mean(axis=(1, 2, 3))[:, None] + 0.1
    if name == "mdn":
        x = rng.uniform(-1, 1, size=(n, 2)).astype("float32")
        return x, np.sin(3 * x[:, :1]).astype("float32")
    x = (rng.normal(size=(n, 4)) + np.where(np.arange(n) % 2, 2.0, -2.0)[:, None])
    x = x.astype("float32")
    if name == "online_em":
        return x[:, :3], x[:, 3:]
    return x, x  # "vae", "energy", "energy_objective": reconstruct x


def worker_rows(n, index):
    """The rows worker ``index`` feeds: its half of every global batch
    (the first half of a global batch to worker 0, as a one-process
    ``MirroredStrategy`` splits it between its two replicas)."""
    per = GLOBAL_BATCH // N_WORKERS
    return np.concatenate([
        np.arange(s + index * per, s + (index + 1) * per)
        for s in range(0, n, GLOBAL_BATCH)
    ])


def build_model(name):
    """The compiled model of one layer (call inside a strategy scope)."""
    import keras

    import keras_gmm

    if name == "mdn":
        head = keras_gmm.MixtureDensityHead(2, 1, seed=0)
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(8, "tanh"), head])
        loss = head.loss()
    elif name == "vae":
        x = keras.Input((4,))
        h = keras.layers.Dense(6, "tanh")(x)
        z_mean = keras.layers.Dense(2)(h)
        # a log-variance near -40 (std 2e-9): the reparameterized noise
        # (drawn per replica) does not move the weights at float32
        # precision, so the run is comparable with one process
        z_log_var = keras.layers.Dense(
            2, kernel_initializer="zeros",
            bias_initializer=keras.initializers.Constant(-40.0))(h)
        z = keras_gmm.GMMPriorSampling(3, 2, seed=0)([z_mean, z_log_var])
        model = keras.Model(x, keras.layers.Dense(4)(z))
        loss = "mse"
    elif name == "conv":
        model = keras.Sequential([
            keras.Input((6, 6, 1)), keras_gmm.GMMConv2D(2, 3, num_components=2),
            keras.layers.Flatten(), keras.layers.Dense(1),
        ])
        loss = "mse"
    elif name in ("energy", "energy_objective"):
        # "energy": no objective terms, so the gradients are the
        # reconstruction's and the run must equal one process; the moving
        # statistics (the inference mixture) are all-reduced.
        # "energy_objective": DAGMM's terms, from each replica's own batch
        # mixture (as BatchNormalization's batch statistics): in sync on
        # both workers, near (not equal to) one process.
        weights = ({"energy_weight": 0.0, "cov_penalty_weight": 0.0}
                   if name == "energy" else {})
        x = keras.Input((4,))
        z = keras.layers.Dense(3)(x)
        gamma = keras.layers.Dense(2, activation="softmax")(z)
        energy = keras_gmm.GMMEnergy(covariance_type="diag", reg_covar=1e-3,
                                     momentum=0.5, **weights)([z, gamma])
        recon = keras.layers.Dense(4)(z)
        out = recon + 0.0 * keras.ops.expand_dims(energy, -1)
        model = keras.Model(x, out)
        loss = "mse"
    elif name == "online_em":
        x = keras.Input((3,))
        # float64: the mixture is compared with one process tightly
        resp = keras_gmm.GaussianMixtureEM(2, online=True, momentum=0.5,
                                           seed=0, dtype="float64")(x)
        model = keras.Model(x, keras.layers.Dense(1)(resp))
        loss = "mse"
    else:
        raise ValueError(f"unknown model {name!r}")
    model.compile(keras.optimizers.SGD(0.05), loss=loss)
    return model


def online_em_layer(model):
    import keras_gmm

    return next(layer for layer in model.layers
                if isinstance(layer, keras_gmm.GaussianMixtureEM))


def initial_weights(name):
    """The initial weights of model ``name`` (built with a fixed seed; the
    online EM layer fitted on the model's inputs first)."""
    import keras

    keras.utils.set_random_seed(0)
    model = build_model(name)
    if name == "online_em":
        x, _ = model_data(name)
        online_em_layer(model).fit(x, verbose=0)
    return model.get_weights()


def train(model, dataset):
    """Two training steps (``model.fit``, no shuffling, no callbacks)."""
    model.fit(dataset, epochs=1, steps_per_epoch=STEPS, verbose=0, shuffle=False)
    return model.get_weights()


def train_multi_worker(model, strategy, dataset):
    """Two steps of Keras's own ``model.train_step`` under ``strategy``.

    Not ``model.fit``: Keras 3's ``fit`` does not run under
    ``MultiWorkerMirroredStrategy`` (it reduces the first distributed batch,
    and each step's scalar logs, with ``strategy.reduce(..., axis=0)``, which
    that strategy refuses: keras-team/keras#20585). Its train step is the
    same one ``fit`` runs per replica (forward pass, compiled and added
    losses scaled for the replicas, gradients all-reduced by the optimizer).
    """
    import tensorflow as tf

    with strategy.scope():
        model.optimizer.build(model.trainable_variables)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))

    @tf.function
    def step(iterator):
        strategy.run(model.train_step, args=(next(iterator),))

    for _ in range(STEPS):
        step(iterator)
    return model.get_weights()


def prepare(directory):
    """Write the shards, the EM's initial parameters and the models'
    initial weights into ``directory`` (the test does, before the workers
    start)."""
    import tensorflow as tf

    from keras_gmm.ops import em

    x = em_data()
    for index in range(N_WORKERS):
        np.save(os.path.join(directory, f"em_shard_{index}.npy"), em_shard(x, index))
    # a poor start (random responsibilities): EM has iterations to run
    resp = np.random.default_rng(1).uniform(size=(len(x), EM_K))
    w, means, _, prec_chol = em.parameters_from_resp(
        tf.constant(x), resp / resp.sum(axis=1, keepdims=True), "full", EM_REG)
    precisions = tf.matmul(prec_chol, prec_chol, transpose_b=True)
    np.savez(os.path.join(directory, "em_init.npz"), weights=w.numpy(),
             means=means.numpy(), precisions=precisions.numpy())
    for name in MODELS:
        x_m, y_m = model_data(name)
        for index in range(N_WORKERS):
            rows = worker_rows(len(x_m), index)
            np.savez(os.path.join(directory, f"{name}_shard_{index}.npz"),
                     x=x_m[rows], y=y_m[rows])
        np.savez(os.path.join(directory, f"{name}_init.npz"), *initial_weights(name))


def load_weights(path):
    with np.load(path) as f:
        return [f[f"arr_{i}"] for i in range(len(f.files))]


def make_em_layer(init=None, max_iter=EM_MAX_ITER):
    """The EM layer of the scenarios: from given initial parameters, or
    (``init`` None) initialised from the data (seed 0)."""
    import keras_gmm

    given = {} if init is None else {
        "weights_init": init["weights"], "means_init": init["means"],
        "precisions_init": init["precisions"]}
    return keras_gmm.GaussianMixtureEM(
        EM_K, covariance_type="full", tol=EM_TOL, reg_covar=EM_REG,
        max_iter=max_iter, seed=0, dtype="float64", **given,
    )


def em_result(gmm):
    return {"weights": gmm.weights_, "means": gmm.means_,
            "precisions_cholesky": gmm.precisions_cholesky_,
            "lower_bound": np.float64(gmm.lower_bound_),
            "n_iter": np.int64(gmm.n_iter_)}


def make_bayesian_layer(max_iter=EM_MAX_ITER, **priors):
    """The Bayesian mixture of the ``bayes`` scenario (seed 0; data-dependent
    priors unless ``priors`` gives them)."""
    import keras_gmm

    return keras_gmm.BayesianGaussianMixtureEM(
        EM_K, covariance_type="full", tol=EM_TOL, reg_covar=EM_REG,
        max_iter=max_iter, seed=0, dtype="float64", **priors)


def bayesian_result(gmm):
    return {**em_result(gmm), "mean_prior": gmm.mean_prior_,
            "covariance_prior": gmm.covariance_prior_,
            "mean_precision": gmm.mean_precision_,
            "degrees_of_freedom": gmm.degrees_of_freedom_}


# --------------------------------------------------------------------------
# the worker
# --------------------------------------------------------------------------
def shard_dataset(array, batch_size):
    """A dataset of this worker's rows, auto-sharding off (they are already
    this worker's: with the default policy every worker would keep only
    part of its own shard)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF)
    return tf.data.Dataset.from_tensor_slices(array).batch(batch_size).with_options(
        options)


def _scenario(report, name, run):
    """``run()`` timed into ``report["seconds"][name]``; an exception's
    traceback goes to ``report[name + "_error"]`` for the test to show."""
    start = time.perf_counter()
    try:
        run()
    except Exception:  # noqa: BLE001 - reported to the test
        report[f"{name}_error"] = traceback.format_exc()[-3000:]
    report["seconds"][name] = time.perf_counter() - start


def run_worker(directory):
    import tensorflow as tf

    # first: the collectives must be configured before any other op runs
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=COLLECTIVE_TIMEOUT_S))
    index = int(json.loads(os.environ["TF_CONFIG"])["task"]["index"])
    import keras_gmm  # noqa: F401  (registers the layers)
    from keras_gmm.ops import em_driver

    report = {"index": index, "replicas": strategy.num_replicas_in_sync,
              "seconds": {}}
    arrays = {}
    start = time.perf_counter()

    # (a) EM on this worker's shard, all-reduced
    shard = np.load(os.path.join(directory, f"em_shard_{index}.npy"))
    with np.load(os.path.join(directory, "em_init.npz")) as f:
        init = {k: f[k] for k in f.files}
    dataset = shard_dataset(shard, EM_BATCH)
    report["em_local_rows"] = int(sum(int(b.shape[0]) for b in dataset))
    try:
        with strategy.scope():
            gmm = make_em_layer(init)
            gmm.fit(dataset, verbose=0)
            step = em_driver.streamed_pass(
                dataset, tuple(tf.constant(v) for v in (
                    gmm.weights_, gmm.means_, gmm.precisions_cholesky_)),
                "full", EM_REG)
        report["em_pass_rows"] = step.n_rows
        arrays.update({f"em_{k}": v for k, v in em_result(gmm).items()})
    except Exception:  # noqa: BLE001 - reported to the test
        report["em_error"] = traceback.format_exc()[-3000:]
    report["seconds"]["em"] = time.perf_counter() - start

    # (b) EM initialised from the data (no init parameters): each worker
    # initialises from its own shard's first rows; all start from worker 0's
    def data_initialised():
        for name, max_iter in (("em_data_init", 0), ("em_data_fit", 8)):
            with strategy.scope():
                gmm = make_em_layer(max_iter=max_iter)
                gmm.fit(dataset, verbose=0)
            arrays.update({f"{name}_{k}": v for k, v in em_result(gmm).items()})

    # (b2) the Bayesian mixture: priors from every worker's rows, start from
    # worker 0's
    def bayesian():
        with strategy.scope():
            gmm = make_bayesian_layer()
            gmm.fit(dataset, verbose=0)
        arrays.update({f"bayes_{k}": v for k, v in bayesian_result(gmm).items()})

    _scenario(report, "em_data", data_initialised)
    _scenario(report, "bayes", bayesian)

    # (c) one model per layer, two steps on the global batch
    for name in MODELS:
        start = time.perf_counter()
        with np.load(os.path.join(directory, f"{name}_shard_{index}.npz")) as f:
            x, y = f["x"], f["y"]

        try:
            with strategy.scope():
                model = build_model(name)
                model.set_weights(load_weights(
                    os.path.join(directory, f"{name}_init.npz")))
            # experimental_distribute_dataset takes each batch as a global
            # one and splits it into
            # per-replica pieces (consumed in turn, nothing dropped with
            # auto-sharding off): batches of GLOBAL_BATCH rows of this
            # worker's shard give each step GLOBAL_BATCH / 2 of its rows.
            weights = train_multi_worker(model, strategy,
                                         shard_dataset((x, y), GLOBAL_BATCH))
            arrays.update({f"{name}_{i}": w for i, w in enumerate(weights)})
            report[f"{name}_rows"] = len(x)
        except Exception:  # noqa: BLE001 - reported to the test
            report[f"{name}_error"] = traceback.format_exc()[-3000:]
        report["seconds"][name] = time.perf_counter() - start

    np.savez(os.path.join(directory, f"worker_{index}.npz"), **arrays)
    with open(os.path.join(directory, f"worker_{index}.json"), "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    run_worker(sys.argv[1])
