"""MDN benchmark: keras_gmm's MixtureDensityHead against the ways peers build it.

Run from the repository root::

    PYTHONPATH=. python -m benchmarks.mdn            # 3 seeds x 30 epochs (minutes)
    PYTHONPATH=. python -m benchmarks.mdn --quick    # smoke run: 1 seed, 2 epochs,
                                                     # 2000 training samples

(``--seeds N`` and ``--epochs N`` override the defaults, ``--output PATH`` where
the JSON goes; default ``benchmarks/results/mdn.json``, ``mdn_quick.json`` with
``--quick``.)

The same mixture density network -- 1-D input, 1-D output, K=5 Gaussian
components, two hidden ``Dense(64, relu)`` layers -- is trained on Bishop's
inverse-sine problem (:func:`keras_gmm.datasets.inverse_sine_split`, the
20,000-sample "train" split; evaluated on the 5,000-sample "val" split), with
batch 256, Adam(1e-3), 30 epochs, built three ways:

- ``keras_gmm``: ``keras_gmm.MixtureDensityHead(5, 1)`` (its defaults) and
  ``head.loss()``;
- ``plain_tfp``: a ``Dense(15)`` output and the loss users write by hand,
  ``-tfd.MixtureSameFamily(tfd.Categorical(logits),
  tfd.Normal(loc, softplus(raw) + 1e-3)).log_prob(y)``;
- ``keras-mdn-layer``: ``keras_mdn_layer.MDN(1, 5)`` and
  ``get_mixture_loss_func(1, 5)`` (skipped, with a note, if not installed).

All three run in one process, on identical data, with
``keras.utils.set_random_seed(seed)`` before each model is built, the same
``compile``/``fit`` settings (``jit_compile`` left at the Keras default,
``"auto"``, which Keras resolves to False on a CPU-only machine and to XLA on a
GPU; the resolved value is printed), and they alternate epoch by epoch (one
epoch of each in turn, the starting method rotating every epoch), so that a
busy spell of a shared machine falls on all three alike.

What is measured:

- **seconds per epoch**: wall time of each training epoch from a callback
  (``on_epoch_begin`` -> ``on_epoch_end``, no validation inside ``fit``),
  excluding the first epoch (tracing); the median over epochs 2..N and seeds.
  The speed ratio is peer time / our time, so >= 1.0 means ours is at least as
  fast.
- **validation NLL**: the mean ``-log p(y | x)`` in nats on the "val" split
  after the last epoch, computed for all three by one common float64 evaluator
  from each model's predicted weights, means and standard deviations (so a
  loss that dropped the ``2 pi`` constant could not flatter a method; each
  model's own loss on the same data is recorded next to it as a check).
  The exact floor is ``H(Y|X)`` =
  :func:`keras_gmm.datasets.inverse_sine_conditional_entropy` (about -1.282).

Targets: ratio >= 1.0 against each peer, and our val NLL <= -1.10.
"""

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import keras_gmm
from keras_gmm import datasets

tfd = tfp.distributions

NUM_COMPONENTS = 5
EVENT_SIZE = 1
HIDDEN_UNITS = 64
BATCH_SIZE = 256
LEARNING_RATE = 1e-3
TFP_MIN_SCALE = 1e-3
TARGET_RATIO = 1.0
TARGET_NLL = -1.10
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "mdn.json"
QUICK_OUTPUT = Path(__file__).resolve().parent / "results" / "mdn_quick.json"

OURS = "keras_gmm"
PLAIN_TFP = "plain_tfp"
KERAS_MDN = "keras-mdn-layer"


# --------------------------------------------------------------------------
# the three models; each builder returns (model, loss, components) where
# components(outputs) -> (log_weights, means, stddevs), float64 [n, K] arrays
# --------------------------------------------------------------------------
def _trunk():
    return [
        keras.Input((1,)),
        keras.layers.Dense(HIDDEN_UNITS, activation="relu"),
        keras.layers.Dense(HIDDEN_UNITS, activation="relu"),
    ]


def _log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def build_ours():
    head = keras_gmm.MixtureDensityHead(NUM_COMPONENTS, EVENT_SIZE)
    model = keras.Sequential(_trunk() + [head], name="keras_gmm_mdn")

    def components(outputs):
        m = head.mixture(outputs)
        return (
            np.asarray(m.log_weights, np.float64),
            np.asarray(m.means, np.float64)[..., 0],
            np.asarray(m.stddevs(), np.float64)[..., 0],
        )

    return model, head.loss(), components


def plain_tfp_nll(y_true, y_pred):
    """The straightforward hand-written TFP mixture loss."""
    logits, loc, raw_scale = tf.split(y_pred, 3, axis=-1)
    mix = tfd.MixtureSameFamily(
        mixture_distribution=tfd.Categorical(logits=logits),
        components_distribution=tfd.Normal(
            loc=loc, scale=tf.math.softplus(raw_scale) + TFP_MIN_SCALE
        ),
    )
    return -mix.log_prob(tf.reshape(y_true, [-1]))


def build_plain_tfp():
    model = keras.Sequential(
        _trunk() + [keras.layers.Dense(3 * NUM_COMPONENTS)], name="plain_tfp_mdn"
    )

    def components(outputs):
        outputs = np.asarray(outputs, np.float64)
        logits, loc, raw = np.split(outputs, 3, axis=-1)
        return _log_softmax(logits), loc, np.logaddexp(0.0, raw) + TFP_MIN_SCALE

    return model, plain_tfp_nll, components


def build_keras_mdn():
    import keras_mdn_layer

    model = keras.Sequential(
        _trunk() + [keras_mdn_layer.MDN(EVENT_SIZE, NUM_COMPONENTS)],
        name="keras_mdn_layer_mdn",
    )
    loss = keras_mdn_layer.get_mixture_loss_func(EVENT_SIZE, NUM_COMPONENTS)

    def components(outputs):
        # Layout [mus (K*D) | sigmas (K*D, already positive) | pi logits (K)].
        outputs = np.asarray(outputs, np.float64)
        k = NUM_COMPONENTS
        return _log_softmax(outputs[:, 2 * k:]), outputs[:, :k], outputs[:, k:2 * k]

    return model, loss, components


def keras_mdn_available():
    try:
        import keras_mdn_layer  # noqa: F401
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------
def mixture_nll(log_weights, means, stddevs, y):
    """Mean ``-log p(y)`` (nats, with the 2 pi constant) of 1-D Gaussian
    mixtures, one per row, in float64: the common evaluator."""
    y = np.asarray(y, np.float64).reshape(-1, 1)
    z = (y - means) / stddevs
    log_comp = -0.5 * math.log(2.0 * math.pi) - np.log(stddevs) - 0.5 * z * z
    joint = log_weights + log_comp
    top = joint.max(axis=-1, keepdims=True)
    log_p = top[:, 0] + np.log(np.exp(joint - top).sum(axis=-1))
    return float(-log_p.mean())


class EpochRecorder(keras.callbacks.Callback):
    """Wall time of each training epoch, then the val NLL after it.

    The clock stops at the start of ``on_epoch_end``, before the evaluation,
    so the evaluation is not counted in the epoch time.
    """

    def __init__(self, x_val, y_val, components):
        super().__init__()
        self.x_val, self.y_val, self.components = x_val, y_val, components
        self.epoch_seconds, self.val_nll, self.train_loss = [], [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self._start)
        outputs = self.model(self.x_val, training=False)
        self.val_nll.append(mixture_nll(*self.components(outputs), self.y_val))
        self.train_loss.append(float((logs or {}).get("loss", float("nan"))))


def run_seed(builders, order, seed, data, epochs):
    """Train every method for ``epochs`` epochs with one seed, in lockstep.

    Epochs are interleaved (one epoch of each method in turn, the starting
    method rotating every epoch), so a slow spell of the machine falls on all
    methods alike instead of on whichever happened to run then.
    """
    x_train, y_train, x_val, y_val = data
    keras.backend.clear_session()
    models = {}
    for name in order:
        keras.utils.set_random_seed(seed)
        model, loss, components = builders[name]()
        model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss=loss)
        models[name] = (model, loss, EpochRecorder(x_val, y_val, components))
    for epoch in range(epochs):
        shift = epoch % len(order)
        for name in order[shift:] + order[:shift]:
            model, _, recorder = models[name]
            model.fit(
                x_train,
                y_train,
                batch_size=BATCH_SIZE,
                epochs=epoch + 1,
                initial_epoch=epoch,
                shuffle=True,
                verbose=0,
                callbacks=[recorder],
            )
    runs = []
    for name in order:
        model, loss, recorder = models[name]
        outputs = model(x_val, training=False)
        runs.append(
            {
                "method": name,
                "seed": seed,
                "jit_compile": bool(model.jit_compile),
                "epoch_seconds": recorder.epoch_seconds,
                "val_nll_per_epoch": recorder.val_nll,
                "train_loss_per_epoch": recorder.train_loss,
                "val_nll": recorder.val_nll[-1],
                "own_loss_on_val": float(np.mean(np.asarray(loss(y_val, outputs)))),
            }
        )
    return runs


def _timed_epochs(run):
    """Epoch times without the first (tracing) epoch, unless it is the only one."""
    return run["epoch_seconds"][1:] or run["epoch_seconds"]


def summarise(runs, methods):
    summary = {}
    for name in methods:
        mine = [r for r in runs if r["method"] == name]
        # epochs 2..N of every seed (all epochs if only one was run)
        times = [t for r in mine for t in _timed_epochs(r)]
        nlls = np.array([r["val_nll"] for r in mine])
        summary[name] = {
            "median_seconds_per_epoch": float(np.median(times)),
            # a low quantile is less sensitive to other processes on the machine
            "p10_seconds_per_epoch": float(np.percentile(times, 10)),
            "val_nll_mean": float(nlls.mean()),
            "val_nll_std": float(nlls.std(ddof=1)) if len(nlls) > 1 else 0.0,
            "val_nll_per_seed": nlls.tolist(),
            "max_abs_own_loss_minus_common_nll": float(
                max(abs(r["own_loss_on_val"] - r["val_nll"]) for r in mine)
            ),
            "jit_compile": sorted({r["jit_compile"] for r in mine}),
        }
    ours = summary[OURS]["median_seconds_per_epoch"]
    for name in methods:
        summary[name]["speed_ratio_peer_over_ours"] = (
            summary[name]["median_seconds_per_epoch"] / ours
        )
    return summary


def format_table(summary, floor):
    header = (
        f"{'method':<16} {'s/epoch (median)':>16} {'ratio peer/ours':>15} "
        f"{'val NLL (nats, mean ± std)':>27} {'NLL - floor':>11} "
        f"{'s/epoch (p10)':>13}"
    )
    lines = [header, "-" * len(header)]
    for name, s in summary.items():
        nll = f"{s['val_nll_mean']:.4f} ± {s['val_nll_std']:.4f}"
        lines.append(
            f"{name:<16} {s['median_seconds_per_epoch']:>16.4f} "
            f"{s['speed_ratio_peer_over_ours']:>15.3f} {nll:>27} "
            f"{s['val_nll_mean'] - floor:>11.4f} "
            f"{s['p10_seconds_per_epoch']:>13.4f}"
        )
    lines.append(f"{'floor H(Y|X)':<16} {'':>16} {'':>15} {floor:>27.4f}")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.mdn", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 seed, 2 epochs, 2000 training samples")
    parser.add_argument("--seeds", type=int, default=None,
                        help="number of seeds (default 3; 1 with --quick)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per run (default 30; 2 with --quick)")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"JSON results path (default {DEFAULT_OUTPUT})")
    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = 1 if args.quick else 3
    if args.epochs is None:
        args.epochs = 2 if args.quick else 30
    if args.output is None:
        args.output = QUICK_OUTPUT if args.quick else DEFAULT_OUTPUT
    for flag in ("seeds", "epochs"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    x_train, y_train = datasets.inverse_sine_split("train")
    x_val, y_val = datasets.inverse_sine_split("val")
    if args.quick:
        x_train, y_train = x_train[:2000], y_train[:2000]
    data = (x_train, y_train, x_val, y_val)
    floor = datasets.inverse_sine_conditional_entropy()

    builders = {OURS: build_ours, PLAIN_TFP: build_plain_tfp}
    if keras_mdn_available():
        builders[KERAS_MDN] = build_keras_mdn
    else:
        print("note: keras-mdn-layer is not installed; skipping it "
              "(pip install keras-mdn-layer).")
    methods = list(builders)

    print(
        f"MDN benchmark: K={NUM_COMPONENTS}, 2x Dense({HIDDEN_UNITS}, relu), "
        f"{len(x_train)} train / {len(x_val)} val samples, batch {BATCH_SIZE}, "
        f"Adam({LEARNING_RATE}), {args.epochs} epochs, {args.seeds} seed(s); "
        f"jit_compile left at the Keras default ('auto')."
    )
    load_before = os.getloadavg()
    runs = []
    for seed in range(args.seeds):
        start = time.perf_counter()
        order = methods[seed % len(methods):] + methods[:seed % len(methods)]
        for run in run_seed(builders, order, seed, data, args.epochs):
            runs.append(run)
            print(
                f"  seed {seed} {run['method']:<16} val NLL {run['val_nll']:.4f}  "
                f"median s/epoch {np.median(_timed_epochs(run)):.4f}  "
                f"(jit_compile={run['jit_compile']})",
                flush=True,
            )
        print(f"  seed {seed}: {time.perf_counter() - start:.1f} s", flush=True)
    load_after = os.getloadavg()

    summary = summarise(runs, methods)
    jit = {name: s["jit_compile"] for name, s in summary.items()}
    print()
    print(format_table(summary, floor))
    print(f"(times: median over epochs 2..{args.epochs} and seeds; "
          f"jit_compile resolved to {jit}; load average {load_before[0]:.2f} "
          f"before, {load_after[0]:.2f} after; {os.cpu_count()} CPUs)")
    print()
    print("targets:")
    for name in methods:
        if name == OURS:
            continue
        ratio = summary[name]["speed_ratio_peer_over_ours"]
        status = "MET" if ratio >= TARGET_RATIO else "MISSED"
        print(f"  speed ratio vs {name} >= {TARGET_RATIO}: {ratio:.3f}  {status}")
    ours_nll = summary[OURS]["val_nll_mean"]
    status = "MET" if ours_nll <= TARGET_NLL else "MISSED"
    print(f"  our val NLL <= {TARGET_NLL}: {ours_nll:.4f}  {status}")
    print()
    print("val NLL per epoch, seed 0:")
    for name in methods:
        curve = next(r for r in runs if r["method"] == name and r["seed"] == 0)
        values = " ".join(f"{v:.3f}" for v in curve["val_nll_per_epoch"])
        print(f"  {name:<16} {values}")

    result = {
        "benchmark": "mdn",
        "command": " ".join(
            ["python -m benchmarks.mdn", *(sys.argv[1:] if argv is None else argv)]
        ),
        "config": {
            "num_components": NUM_COMPONENTS,
            "event_size": EVENT_SIZE,
            "hidden": [HIDDEN_UNITS, HIDDEN_UNITS],
            "batch_size": BATCH_SIZE,
            "learning_rate": LEARNING_RATE,
            "epochs": args.epochs,
            "seeds": list(range(args.seeds)),
            "train_samples": int(len(x_train)),
            "val_samples": int(len(x_val)),
            "jit_compile": "Keras default ('auto')",
        },
        "floor_nats": floor,
        "targets": {"speed_ratio_min": TARGET_RATIO, "our_val_nll_max": TARGET_NLL},
        "summary": summary,
        "runs": runs,
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": load_after,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "tensorflow_probability": tfp.__version__,
            "keras_gmm": keras_gmm.__version__,
            # the head's defaults may change between versions of the working tree
            "mixture_density_head_sha256": _sha256(
                keras_gmm.layers.mixture_density_head.__file__
            ),
            "keras_mdn_layer": _version("keras-mdn-layer"),
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print(f"\nresults written to {args.output}")
    return result


def _sha256(path):
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _version(dist):
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
