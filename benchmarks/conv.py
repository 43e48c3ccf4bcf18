"""Convolution benchmark: keras_gmm's GMMConv2D against keras.layers.Conv2D.

Run from the repository root::

    PYTHONPATH=. python -m benchmarks.conv            # the full run (minutes)
    PYTHONPATH=. python -m benchmarks.conv --quick    # smoke run: small input,
                                                      # 3 repeats

(``--repeats N`` overrides the number of timed calls per cell, ``--output
PATH`` where the JSON goes; default ``benchmarks/results/conv.json``,
``conv_quick.json`` with ``--quick``.)

The same input -- batch 64, 32 x 32 images, 32 channels in, 64 out, "same"
padding -- goes through, for each kernel size (5 x 5 and 7 x 7):

- ``Conv2D``: ``keras.layers.Conv2D(64, k, padding="same")``, the peer;
- ``GMMConv2D``: ``keras_gmm.GMMConv2D(64, k, padding="same")`` (defaults:
  K = 4 bumps, "diag", geometry shared by the channel pairs);
- ``GMMConv2D-full-pair``: ``num_components=4, covariance_type="full",
  share_gaussians=False`` (each channel pair has its own bumps: the largest
  kernel-building graph).

Two passes are timed: ``forward`` (``layer(x)``) and ``fwd+bwd`` (the
gradient of ``sum(layer(x) * g)``, ``g`` fixed, with respect to the input and
every trainable weight: for GMMConv2D this includes building the dense kernel
from the bumps and differentiating through it). Each is a ``tf.function``,
with ``jit_compile`` off and on (XLA). All methods run in one process, on the
same tensors, and alternate call by call (the starting method rotating), after
two warm-up calls each, so that a busy spell of a shared machine falls on all
alike. The table gives the median seconds per call and the ratio to Conv2D
(lower is better; 1.0 = as fast as Conv2D).

Target: ``fwd+bwd`` ratio of GMMConv2D (defaults) <= 1.5.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import keras_gmm

TARGET_RATIO = 1.5
PEER = "Conv2D"
OURS = "GMMConv2D"
FULL_PAIR = "GMMConv2D-full-pair"
PASSES = ("forward", "fwd+bwd")
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "conv.json"
QUICK_OUTPUT = Path(__file__).resolve().parent / "results" / "conv_quick.json"

# (batch, size, in channels, filters)
FULL_SHAPE = (64, 32, 32, 64)
QUICK_SHAPE = (8, 16, 8, 16)


def build_layers(kernel_size, filters):
    return {
        PEER: keras.layers.Conv2D(filters, kernel_size, padding="same"),
        OURS: keras_gmm.GMMConv2D(filters, kernel_size, padding="same"),
        FULL_PAIR: keras_gmm.GMMConv2D(
            filters, kernel_size, num_components=4, covariance_type="full",
            share_gaussians=False, padding="same",
        ),
    }


def make_step(layer, which, jit):
    if which == "forward":

        def step(x, g):
            return layer(x)

    else:

        def step(x, g):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(layer(x) * g)
            return tape.gradient(loss, [x] + layer.trainable_weights)

    return tf.function(step, jit_compile=jit)


def _block(result):
    """Wait for the computation (results are device tensors)."""
    for t in tf.nest.flatten(result):
        t.numpy()


def time_cell(layers, which, jit, x, g, repeats):
    """Median seconds per call of each layer, alternating call by call."""
    steps = {name: make_step(layer, which, jit) for name, layer in layers.items()}
    for step in steps.values():  # trace/compile, then one warm call
        _block(step(x, g))
        _block(step(x, g))
    names = list(steps)
    times = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            start = time.perf_counter()
            _block(steps[name](x, g))
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}, times


def parameter_counts(layers):
    return {name: int(layer.count_params()) for name, layer in layers.items()}


def run(shape, kernel_sizes, repeats, jit_modes, seed=0):
    batch, size, channels, filters = shape
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.normal(size=(batch, size, size, channels)).astype(np.float32))
    g = tf.constant(rng.normal(size=(batch, size, size, filters)).astype(np.float32))
    results = []
    for k in kernel_sizes:
        keras.utils.set_random_seed(seed)
        layers = build_layers(k, filters)
        for layer in layers.values():
            layer.build(x.shape)
        counts = parameter_counts(layers)
        for jit in jit_modes:
            for which in PASSES:
                medians, raw = time_cell(layers, which, jit, x, g, repeats)
                results.append(
                    {
                        "kernel_size": k,
                        "jit_compile": jit,
                        "pass": which,
                        "median_seconds": medians,
                        "ratio_to_conv2d": {
                            name: medians[name] / medians[PEER] for name in medians
                        },
                        "seconds": raw,
                        "parameters": counts,
                    }
                )
                print(format_row(results[-1]), flush=True)
    return results


HEADER = (
    f"{'kernel':<7} {'jit':<5} {'pass':<8} {'method':<20} {'params':>8} "
    f"{'median s':>10} {'ratio':>7}"
)


def format_row(result):
    lines = []
    for name, seconds in result["median_seconds"].items():
        k = result["kernel_size"]
        lines.append(
            f"{f'{k}x{k}':<7} {str(result['jit_compile']):<5} {result['pass']:<8} "
            f"{name:<20} {result['parameters'][name]:>8} {seconds:>10.5f} "
            f"{result['ratio_to_conv2d'][name]:>7.3f}"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="GMMConv2D vs keras.layers.Conv2D: forward and forward+"
        "backward time, jit_compile off and on."
    )
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: batch 8, 16x16, 8->16 channels, 3 repeats")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls per method and cell (default 15; 3 quick)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON results path")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 15
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1; received {args.repeats}")
    if args.output is None:
        args.output = QUICK_OUTPUT if args.quick else DEFAULT_OUTPUT
    return args


def main(argv=None):
    args = parse_args(argv)
    shape = QUICK_SHAPE if args.quick else FULL_SHAPE
    batch, size, channels, filters = shape
    devices = [d.device_type for d in tf.config.list_logical_devices()]
    print(
        f"input [{batch}, {size}, {size}, {channels}] -> {filters} filters, "
        f"'same' padding; {args.repeats} timed calls per cell, alternating; "
        f"devices: {sorted(set(devices))}; TF {tf.__version__}, "
        f"Keras {keras.__version__}, {os.cpu_count()} CPUs",
        flush=True,
    )
    print(HEADER, flush=True)
    start = time.perf_counter()
    results = run(shape, (5, 7), args.repeats, (False, True))
    print(f"(median seconds per call; ratio = method / Conv2D, lower is better; "
          f"{time.perf_counter() - start:.0f} s in all)")
    print()
    print("targets:")
    ok_all = True
    for result in results:
        if result["pass"] != "fwd+bwd":
            continue
        ratio = result["ratio_to_conv2d"][OURS]
        ok = ratio <= TARGET_RATIO
        ok_all &= ok
        k = result["kernel_size"]
        print(
            f"  fwd+bwd {k}x{k} jit={result['jit_compile']}: GMMConv2D / Conv2D "
            f"= {ratio:.3f} <= {TARGET_RATIO}  {'met' if ok else 'NOT met'}"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "shape": {"batch": batch, "size": size, "in_channels": channels,
                          "filters": filters},
                "repeats": args.repeats,
                "quick": args.quick,
                "target_ratio": TARGET_RATIO,
                "targets_met": bool(ok_all),
                "results": results,
                "platform": {
                    "python": platform.python_version(),
                    "tensorflow": tf.__version__,
                    "keras": keras.__version__,
                    "cpus": os.cpu_count(),
                    "devices": devices,
                },
            },
            indent=2,
        )
    )
    print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
