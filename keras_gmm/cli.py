"""The ``keras-gmm`` command.

::

    keras-gmm demo                       # check every zoo model end to end
    keras-gmm zoo list                   # registered zoo models
    keras-gmm zoo info NAME [--json]     # its metadata
    keras-gmm zoo evaluate NAME          # re-measure its held-out metrics
    keras-gmm zoo train NAME [--output-dir DIR] [--epochs N] [--seed S]
    keras-gmm export NAME DIR [--version N] [--overwrite]

``demo`` loads each zoo model (checksum verified), evaluates it on the
held-out split its metadata records, prints recorded against measured
metrics, exports it with :func:`keras_gmm.export_saved_model` to a temporary
folder, reloads that with ``tf.saved_model.load`` and checks that its
``serving_default`` signature gives the Keras model's outputs on a few
held-out rows. It exits 1 if a metric does not reproduce within its recorded
tolerance or an export check fails.

Exit codes: 0 success, 1 a check failed, 2 usage error (unknown model name,
missing or modified zoo file, bad arguments), reported on stderr without a
traceback. Without an installed console script, run it as
``python -m keras_gmm.cli ...``.

TensorFlow and the zoo are imported inside the commands, not at import time
of this module.
"""

import argparse
import json
import os
import sys
import tempfile

__all__ = ["main"]

# Outputs of the SavedModel and of the Keras model must agree to this
# (same float32 graph; only op fusion / threading can change rounding).
EXPORT_RTOL = 1e-5
EXPORT_ATOL = 1e-5
EXPORT_CHECK_ROWS = 8


# ------------------------------------------------------------------ parser
def _parser():
    parser = argparse.ArgumentParser(
        prog="keras-gmm",
        description="keras_gmm: Gaussian mixture models for Keras 3. "
        "Zoo of pretrained models, their checks and their export.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    demo = commands.add_parser(
        "demo",
        help="load, evaluate and export every zoo model; exit 1 if a check fails",
        description="For each zoo model: load it (checksum verified), evaluate "
        "it on its recorded held-out split, compare with the recorded metrics, "
        "export it as a SavedModel to a temporary folder and check that "
        "serving_default reproduces the Keras outputs.",
    )
    demo.add_argument(
        "--rows",
        type=_positive_int,
        default=EXPORT_CHECK_ROWS,
        help="held-out rows compared in the export check "
        f"(default {EXPORT_CHECK_ROWS})",
    )

    zoo = commands.add_parser("zoo", help="list, inspect, evaluate or train zoo models")
    zoo_commands = zoo.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND")
    zoo_commands.required = True
    zoo_commands.add_parser("list", help="names of the zoo models")
    info = zoo_commands.add_parser("info", help="metadata of a zoo model")
    info.add_argument("name")
    info.add_argument("--json", action="store_true", help="print metadata.json as is")
    evaluate = zoo_commands.add_parser(
        "evaluate", help="measure a zoo model's metrics on its held-out split"
    )
    evaluate.add_argument("name")
    train = zoo_commands.add_parser(
        "train",
        help="retrain a zoo model from its recipe",
        description="Retrain a zoo model from its recipe and write model.keras "
        "and metadata.json into --output-dir (default: saved_models/NAME under "
        "the current directory, i.e. in place when run from the repository root).",
    )
    train.add_argument("name")
    train.add_argument("--output-dir", default=None, help="default: saved_models/NAME")
    train.add_argument(
        "--epochs", type=_positive_int, default=None, help="default: the recipe's"
    )
    train.add_argument("--seed", type=int, default=None, help="default: the recipe's")
    train.add_argument("--quiet", action="store_true", help="no per-epoch lines")

    export = commands.add_parser(
        "export", help="export a zoo model as a SavedModel (TF Serving layout)"
    )
    export.add_argument("name")
    export.add_argument(
        "dir", help="export directory; writes DIR/VERSION/saved_model.pb"
    )
    export.add_argument(
        "--version",
        type=_positive_int,
        default=1,
        help="model version sub-folder (default 1)",
    )
    export.add_argument(
        "--overwrite", action="store_true", help="replace an existing DIR/VERSION"
    )
    return parser


class _UsageError(Exception):
    """A command-line mistake: reported on stderr with exit status 2."""


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


# ---------------------------------------------------------------- commands
def _zoo():
    import keras_gmm.zoo

    return keras_gmm.zoo


def _check_name(name):
    """``name`` if it is a zoo model, else an error listing the known ones
    (exit status 2)."""
    from keras_gmm.zoo._registry import check_name

    return check_name(name)


def _cmd_zoo_list(args, out):
    zoo = _zoo()
    for name in zoo.list_models():
        try:
            description = zoo.info(name)["description"].split(". ")[0]
        except zoo.ZooError:
            description = "(files missing: see `keras-gmm zoo info NAME`)"
        print(f"{name}\t{description}", file=out)
    return 0


def _cmd_zoo_info(args, out):
    zoo = _zoo()
    meta = zoo.info(_check_name(args.name))
    if args.json:
        print(json.dumps(meta, indent=2), file=out)
        return 0
    print(f"name:         {meta['name']}", file=out)
    print(f"description:  {meta['description']}", file=out)
    if meta.get("architecture"):
        print(f"architecture: {meta['architecture']}", file=out)
    dataset = meta["dataset"]
    print(
        f"dataset:      {dataset['function']} (trained on split "
        f"{dataset.get('train_split')!r}, evaluated on split "
        f"{dataset.get('evaluation_split')!r})",
        file=out,
    )
    print("metrics (held-out):", file=out)
    for key, spec in meta["metrics"].items():
        line = (
            f"  {key} = {spec['value']:.5f} {spec.get('unit', '')} "
            f"on {spec.get('split')}"
        )
        reference = spec.get("reference")
        if reference:
            line += f"  ({reference.get('name', 'reference')} {reference['value']:.5f})"
        print(line, file=out)
    training = meta.get("training", {})
    print(
        "training:     "
        + ", ".join(
            f"{k}={training[k]}"
            for k in ("seed", "epochs", "batch_size")
            if k in training
        ),
        file=out,
    )
    print(f"sha256:       {meta['sha256']}", file=out)
    print(f"files:        {zoo.model_dir(meta['name'])}", file=out)
    print(f"retrain:      {meta['train_command']}", file=out)
    versions = meta.get("library_versions", {})
    print(
        "versions:     " + ", ".join(f"{k} {v}" for k, v in versions.items()), file=out
    )
    return 0


def _cmd_zoo_evaluate(args, out):
    zoo = _zoo()
    name = _check_name(args.name)
    measured = zoo.evaluate(name)
    rows = zoo.check_metrics(name, measured)
    _print_table([(name, row) for row in rows], out)
    return 0 if all(row["ok"] for row in rows) else 1


def _cmd_zoo_train(args, out):
    zoo = _zoo()
    name = _check_name(args.name)
    options = {"verbose": 0 if args.quiet else 2}
    if args.epochs is not None:
        options["epochs"] = args.epochs
    if args.seed is not None:
        options["seed"] = args.seed
    output_dir = args.output_dir or f"saved_models/{name}"
    print(f"training {name} into {output_dir} ...", file=out, flush=True)
    meta = zoo.train(name, output_dir=output_dir, **options)
    for key, spec in meta["metrics"].items():
        print(
            f"{key} = {spec['value']:.5f} {spec.get('unit', '')} on "
            f"{spec.get('split')}",
            file=out,
        )
    print(
        f"wrote {output_dir}/model.keras (sha256 {meta['sha256']}) and "
        f"{output_dir}/metadata.json",
        file=out,
    )
    return 0


def _cmd_export(args, out):
    import keras_gmm

    zoo = _zoo()
    name = _check_name(args.name)
    target = os.path.join(args.dir, str(args.version))
    if os.path.lexists(target) and not args.overwrite:
        raise _UsageError(
            f"{target} already exists; pass --overwrite to replace it, or "
            "export a higher --version"
        )
    model = zoo.load(name)
    path = keras_gmm.export_saved_model(
        model, args.dir, version=args.version, overwrite=args.overwrite
    )
    print(f"exported {name} to {path}", file=out)
    return 0


def _cmd_demo(args, out):
    zoo = _zoo()
    names = zoo.list_models()
    results, failures = [], []
    for i, name in enumerate(names, 1):
        prefix = f"[{i}/{len(names)}] {name}:"
        print(f"{prefix} loading (checksum) ...", file=out, flush=True)
        try:
            model = zoo.load(name)
        except zoo.ZooError as error:
            print(f"{prefix} FAILED to load: {error}", file=out, flush=True)
            failures.append(f"{name}: load failed")
            continue
        print(f"{prefix} evaluating on its held-out split ...", file=out, flush=True)
        rows = zoo.check_metrics(name, zoo.evaluate(name, model))
        results.extend((name, row) for row in rows)
        failures.extend(
            f"{name}: {row['metric']} not reproduced" for row in rows if not row["ok"]
        )
        print(
            f"{prefix} exporting a SavedModel and comparing serving_default ...",
            file=out,
            flush=True,
        )
        try:
            max_diff = _export_check(model, zoo.example_inputs(name, args.rows))
        except Exception as error:  # report any export failure, keep going
            print(
                f"{prefix} export check FAILED: {type(error).__name__}: {error}",
                file=out,
                flush=True,
            )
            failures.append(f"{name}: export check failed")
        else:
            print(
                f"{prefix} export check ok (serving_default vs Keras, "
                f"max |diff| {max_diff:.2e} on {args.rows} rows)",
                file=out,
                flush=True,
            )

    print("", file=out)
    _print_table(results, out)
    print("", file=out)
    if failures:
        print("FAILED: " + "; ".join(failures), file=out)
        return 1
    print(
        f"all {len(names)} zoo model(s) reproduce their recorded metrics and "
        "export correctly",
        file=out,
    )
    return 0


def _export_check(model, x):
    """Export ``model``, reload it with ``tf.saved_model.load`` and compare its
    ``serving_default`` outputs with ``model.predict`` on ``x``.

    Returns the largest absolute difference; raises AssertionError (with the
    difference) if outside ``EXPORT_RTOL``/``EXPORT_ATOL``.
    """
    import numpy as np
    import tensorflow as tf

    import keras_gmm

    expected = model.predict(x, verbose=0)
    with tempfile.TemporaryDirectory(prefix="keras_gmm_demo_") as tmp:
        path = keras_gmm.export_saved_model(model, tmp, version=1)
        loaded = tf.saved_model.load(str(path))
        serving = loaded.signatures["serving_default"]
        _, kwargs = serving.structured_input_signature
        if len(kwargs) != 1:
            raise AssertionError(
                f"expected one input in serving_default, found {sorted(kwargs)}"
            )
        ((input_name, spec),) = kwargs.items()
        outputs = serving(**{input_name: tf.constant(x, dtype=spec.dtype)})
        if len(outputs) != 1:
            raise AssertionError(
                f"expected one output in serving_default, found {sorted(outputs)}"
            )
        actual = np.asarray(next(iter(outputs.values())))
    expected = np.asarray(expected)
    if actual.shape != expected.shape:
        raise AssertionError(
            f"serving_default output shape {actual.shape} != Keras {expected.shape}"
        )
    max_diff = float(np.max(np.abs(actual - expected))) if actual.size else 0.0
    if not np.allclose(actual, expected, rtol=EXPORT_RTOL, atol=EXPORT_ATOL):
        raise AssertionError(
            f"serving_default outputs differ from the Keras model's "
            f"(max |diff| {max_diff:.3e})"
        )
    return max_diff


def _print_table(results, out):
    header = (
        "model",
        "metric",
        "recorded",
        "measured",
        "|diff|",
        "tolerance",
        "reference",
        "status",
    )
    lines = [header]
    for name, row in results:
        lines.append(
            (
                name,
                row["metric"],
                f"{row['recorded']:.5f}",
                "-" if row["measured"] is None else f"{row['measured']:.5f}",
                "-" if row["difference"] is None else f"{row['difference']:.1e}",
                f"{row['tolerance']:.0e}",
                "-" if row["reference"] is None else f"{row['reference']:.5f}",
                "ok" if row["ok"] else "FAILED",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip(),
            file=out,
        )


_COMMANDS = {
    ("demo", None): _cmd_demo,
    ("zoo", "list"): _cmd_zoo_list,
    ("zoo", "info"): _cmd_zoo_info,
    ("zoo", "evaluate"): _cmd_zoo_evaluate,
    ("zoo", "train"): _cmd_zoo_train,
    ("export", None): _cmd_export,
}


def main(argv=None):
    """Run the ``keras-gmm`` command with ``argv`` (default ``sys.argv[1:]``).

    Returns the exit status (0 ok, 1 a check failed, 2 usage error).
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2)
        return int(exit_.code or 0)
    command = _COMMANDS[(args.command, getattr(args, "zoo_command", None))]
    try:
        return command(args, sys.stdout)
    except _UsageError as error:
        print(f"keras-gmm: error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        # The zoo's own errors (unknown name, missing or modified files) are
        # usage errors: a message, no traceback. Anything else propagates.
        from keras_gmm.zoo import ZooError

        if isinstance(error, ZooError):
            print(f"keras-gmm: error: {error}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
