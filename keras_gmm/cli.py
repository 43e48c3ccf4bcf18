"""The ``keras-gmm`` command.

::

    keras-gmm demo                       # check every zoo model end to end
    keras-gmm zoo list                   # the zoo models, one line each
    keras-gmm zoo info NAME [--json]     # a model's metadata
    keras-gmm zoo evaluate NAME          # re-measure its held-out metrics
    keras-gmm zoo train NAME [--output-dir DIR] [--epochs N] [--seed S] [--quiet]
    keras-gmm export NAME DIR [--version N] [--overwrite]

``demo`` loads each zoo model (checksum verified), evaluates it on the
held-out split its metadata records, prints recorded against measured
metrics, exports it with :func:`keras_gmm.export_saved_model` to a temporary
folder, reloads that with ``tf.saved_model.load`` and checks that its
``serving_default`` signature gives the Keras model's outputs on a few
held-out rows. It exits 1 if a metric does not reproduce within its recorded
tolerance or an export check fails.

Exit codes: 0 success, 1 a check failed, 2 a usage error (bad arguments, an
unknown model name, an output folder that cannot be written, a missing or
modified zoo file), reported as one line on stderr without a traceback and
found before any long work (loading, training, exporting). Without an
installed console script, run it as ``python -m keras_gmm.cli ...``.

Start-up: ``--help``, ``zoo list`` and ``zoo info`` never import TensorFlow
(the package face is lazy inside this command, see :mod:`keras_gmm`), so they
answer at once. The other commands import it after their arguments are
checked, with ``TF_CPP_MIN_LOG_LEVEL=2`` (errors only) unless you set it,
and apply that level to the start-up lines TensorFlow writes before it honours
the variable; a failed GPU probe (``failed call to cuInit``: no usable GPU)
becomes one note that the command runs on the CPU. ``TF_CPP_MIN_LOG_LEVEL=0``
shows everything TensorFlow writes.
"""

import argparse
import contextlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import keras_gmm  # lazy inside this command: no TensorFlow yet
from keras_gmm._validation import check_positive_int, check_seed

__all__ = ["main"]

PROG = "keras-gmm"

# Outputs of the SavedModel and of the Keras model must agree to this
# (same float32 graph; only op fusion / threading can change rounding).
EXPORT_RTOL = 1e-5
EXPORT_ATOL = 1e-5
EXPORT_CHECK_ROWS = 8

#: the longest line ``zoo list`` prints.
LIST_WIDTH = 99

TF_LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
#: the level the commands use unless the user set one (2: errors only).
TF_LOG_LEVEL = "2"

#: printed under the recorded-against-measured table (demo, zoo evaluate).
TABLE_LEGEND = (
    "recorded: in metadata.json; measured: now, on the held-out split; "
    "ok if |diff| <= tolerance\n"
    "reference: a baseline or bound on that split (named by keras-gmm zoo info "
    "NAME); - if none"
)


# ------------------------------------------------------------------ parser
class _ArgumentParser(argparse.ArgumentParser):
    """argparse, with a usage error reported as one line (no usage dump)."""

    def error(self, message):
        message = " ".join(str(message).split())
        # "argument --epochs: `--epochs` must be ..." -> "`--epochs` must be ..."
        message = re.sub(r"^argument (\S+): (`\1` )", r"\2", message)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _integer(check, option):
    """An argparse ``type=``: the text as an int, checked by ``check(value,
    option)`` from :mod:`keras_gmm._validation`."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer, received {text!r}"
            ) from None
        try:
            return check(value, option)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = f"{option} value"
    return parse


def _check_seed(value, name):
    return check_seed(value, name, allow_none=False)


def _parser():
    parser = _ArgumentParser(
        prog=PROG,
        description="keras_gmm: Gaussian mixture models for Keras 3. "
        "Check, inspect, retrain and export the pretrained models of its zoo.",
        epilog="Exit status: 0 ok, 1 a check failed, 2 a usage error (one line "
        "on stderr). TensorFlow's start-up log is hidden; to see it, set "
        f"{TF_LOG_LEVEL_ENV}=0 (default here: 2, errors only).",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {keras_gmm.__version__}",
        help="print the keras_gmm version and exit",
    )
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", title="commands",
        parser_class=_ArgumentParser,
    )
    commands.required = True

    demo = commands.add_parser(
        "demo",
        help="load, evaluate and export every zoo model; exit 1 if a check fails",
        description="For each zoo model: load it (checksum verified), evaluate "
        "it on its recorded held-out split, compare with the recorded metrics, "
        "export it as a SavedModel to a temporary folder and check that "
        "serving_default reproduces the Keras outputs. About a minute.",
    )
    demo.add_argument(
        "--rows",
        type=_integer(check_positive_int, "--rows"),
        metavar="N",
        default=EXPORT_CHECK_ROWS,
        help="held-out rows compared in the export check "
        f"(default {EXPORT_CHECK_ROWS})",
    )

    zoo = commands.add_parser(
        "zoo",
        help="list, inspect, evaluate or retrain the zoo's pretrained models",
        description="The zoo's pretrained models: list them, read their "
        "metadata, re-measure their metrics, retrain them.",
    )
    zoo_commands = zoo.add_subparsers(
        dest="zoo_command", metavar="ZOO_COMMAND", title="zoo commands",
        parser_class=_ArgumentParser,
    )
    zoo_commands.required = True
    name_help = "a zoo model name (see: keras-gmm zoo list)"
    zoo_commands.add_parser(
        "list",
        help="one line per model: name, headline held-out metric, task",
        description="One line per zoo model: its name, its headline metric on "
        "held-out data (all of them: keras-gmm zoo info NAME) and its task.",
    )
    info = zoo_commands.add_parser(
        "info",
        help="a model's metadata: data, metrics, training, files",
        description="A zoo model's metadata (its metadata.json): description, "
        "dataset and splits, held-out metrics, training settings, sha256, "
        "the command that retrains it.",
    )
    info.add_argument("name", metavar="NAME", help=name_help)
    info.add_argument(
        "--json", action="store_true", help="print metadata.json as it is"
    )
    evaluate = zoo_commands.add_parser(
        "evaluate",
        help="re-measure a model's metrics on its held-out split; exit 1 if "
        "one does not reproduce",
        description="Load a zoo model (checksum verified), measure its metrics "
        "on its recorded held-out split and compare them with the recorded "
        "ones.",
    )
    evaluate.add_argument("name", metavar="NAME", help=name_help)
    train = zoo_commands.add_parser(
        "train",
        help="retrain a model from its recipe (minutes; progress shown)",
        description="Retrain a zoo model from its recipe and write model.keras "
        "and metadata.json into --output-dir (default: a new folder NAME, or "
        "NAME-2, ..., in the current directory; the shipped files are never "
        "replaced unless you name their folder). The folder is checked to be "
        "writable before training starts.",
    )
    train.add_argument("name", metavar="NAME", help=name_help)
    train.add_argument(
        "--output-dir",
        metavar="DIR",
        default=None,
        help="folder to write model.keras and metadata.json into (created if "
        "needed; default: a new folder ./NAME)",
    )
    train.add_argument(
        "--epochs",
        type=_integer(check_positive_int, "--epochs"),
        metavar="N",
        default=None,
        help="training epochs (default: the recipe's, recorded in the metadata)",
    )
    train.add_argument(
        "--seed",
        type=_integer(_check_seed, "--seed"),
        metavar="S",
        default=None,
        help="random seed, an integer >= 0 (default: the recipe's)",
    )
    train.add_argument(
        "--quiet",
        action="store_true",
        help="no progress lines (epochs, restarts, phases)",
    )

    export = commands.add_parser(
        "export",
        help="export a zoo model as a SavedModel (TF Serving layout)",
        description="Export a zoo model with keras_gmm.export_saved_model: "
        "writes DIR/VERSION/saved_model.pb and its variables, loadable with "
        "tf.saved_model.load or served by TensorFlow Serving.",
    )
    export.add_argument("name", metavar="NAME", help=name_help)
    export.add_argument(
        "dir", metavar="DIR",
        help="export folder (created if needed); writes DIR/VERSION/saved_model.pb",
    )
    export.add_argument(
        "--version",
        type=_integer(check_positive_int, "--version"),
        metavar="N",
        default=1,
        help="model version sub-folder, an integer >= 1 (default 1)",
    )
    export.add_argument(
        "--overwrite", action="store_true", help="replace an existing DIR/VERSION"
    )
    return parser


class _UsageError(Exception):
    """A command-line mistake: reported on stderr with exit status 2."""


# ------------------------------------------------------------ TensorFlow
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ \S+:\d+\] ")
_OLD_TF_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: ([IWEF]) ")
_SEVERITIES = "IWEF"  # index = the TF_CPP_MIN_LOG_LEVEL that hides it
# Start-up lines never worth a user's attention (hidden at any level >= 1).
_STARTUP_NOISE = (
    "WARNING: All log messages before absl::InitializeLog() is called",
    "To enable the following instructions:",  # 2nd line of cpu_feature_guard's
    "Unable to register cu",  # cuDNN/cuFFT/cuBLAS factory registered twice
)
GPU_PROBE_NOTE = (
    f"{PROG}: note: TensorFlow found no usable GPU (its probe, cuInit, "
    "failed); running on the CPU."
)


def _log_level():
    """``TF_CPP_MIN_LOG_LEVEL`` as an int in [0, 3] (ours when unset)."""
    text = os.environ.get(TF_LOG_LEVEL_ENV) or TF_LOG_LEVEL
    try:
        return min(max(int(text), 0), 3)
    except ValueError:
        return int(TF_LOG_LEVEL)


def _filter_tensorflow_startup(text, level=int(TF_LOG_LEVEL)):
    """Split what TensorFlow wrote to stderr while starting into
    ``(lines to show, whether the GPU probe failed)``.

    TensorFlow (2.19+) writes some start-up lines before its logging honours
    ``TF_CPP_MIN_LOG_LEVEL``; this applies the level to them: a log line below
    ``level`` (0 INFO, 1 WARNING, 2 ERROR, 3 FATAL) is dropped, so is
    :data:`_STARTUP_NOISE` (for ``level >= 1``), and a ``cuInit`` failure
    becomes the flag (shown as one note unless ``level >= 3``). Anything
    else (Python warnings, unknown lines) is kept.
    """
    kept, gpu_probe_failed = [], False
    for line in text.splitlines():
        if level >= 1 and "cuInit" in line:
            gpu_probe_failed = level < 3
            continue
        if level >= 1 and any(noise in line for noise in _STARTUP_NOISE):
            continue
        match = _ABSL_LINE.match(line) or _OLD_TF_LINE.match(line)
        if match and _SEVERITIES.index(match.group(1)) < level:
            continue
        kept.append(line)
    return kept, gpu_probe_failed


@contextlib.contextmanager
def _tensorflow_startup_filtered(level=int(TF_LOG_LEVEL)):
    """Capture file descriptor 2 (TensorFlow's C++ logs bypass ``sys.stderr``)
    and replay it through :func:`_filter_tensorflow_startup` at the end."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable fd 2: no filter
        yield
        return
    capture = tempfile.TemporaryFile()
    os.dup2(capture.fileno(), 2)
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)
        os.close(saved)
        capture.seek(0)
        text = capture.read().decode("utf-8", errors="replace")
        capture.close()
        kept, gpu_probe_failed = _filter_tensorflow_startup(text, level)
        for line in kept:
            print(line, file=sys.stderr)
        if gpu_probe_failed:
            print(GPU_PROBE_NOTE, file=sys.stderr)


def _load_tensorflow():
    """Import TensorFlow and all of keras_gmm (registering every layer, so a
    zoo file loads), for the commands that need them.

    ``TF_CPP_MIN_LOG_LEVEL`` is set to 2 (errors only) unless the user set
    it, and applied to the start-up lines TensorFlow writes before honouring
    it (see :func:`_filter_tensorflow_startup`); level 0 shows everything.
    """
    if "tensorflow" in sys.modules:  # imported by the caller: not ours to filter
        keras_gmm._import_public_api()
        return
    if not os.environ.get(TF_LOG_LEVEL_ENV):
        os.environ[TF_LOG_LEVEL_ENV] = TF_LOG_LEVEL
    level = _log_level()
    with (_tensorflow_startup_filtered(level) if level else contextlib.nullcontext()):
        import tensorflow as tf

        tf.config.list_physical_devices()  # the GPU probe happens here
        keras_gmm._import_public_api()


# ------------------------------------------------------------------ checks
def _zoo():
    import keras_gmm.zoo  # no TensorFlow: the registry and the metadata

    return keras_gmm.zoo


def _check_name(name):
    """``name`` if it is a zoo model, else a ZooError listing the known ones
    (exit status 2)."""
    return _zoo().check_name(name)


def _check_writable_dir(path, what):
    """Make sure folder ``path`` exists or can be created and that a file can
    be written in it, leaving no trace; a :class:`_UsageError` naming
    ``what`` (the option) otherwise. Run before any long work."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise _UsageError(
            f"{what} {path} is a file, not a folder; pass a folder (it is "
            "created if needed)"
        )
    created = []
    try:
        missing, parent = [], path.absolute()
        while not parent.exists() and parent != parent.parent:
            missing.append(parent)
            parent = parent.parent
        if not parent.is_dir():
            raise _UsageError(
                f"{what} {path} cannot be created: {parent} is a file, not a "
                "folder; pass another folder"
            )
        for folder in reversed(missing):
            folder.mkdir()
            created.append(folder)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise _UsageError(
            f"{what} {path} cannot be created or written to ({reason}); pass "
            "a folder you can write to"
        ) from None
    finally:
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:
                pass
    return path


# ---------------------------------------------------------------- commands
def _shorten(text, width):
    """``text`` cut at a word boundary to at most ``width`` characters."""
    text = " ".join(str(text).split())
    if len(text) <= width:
        return text
    cut = text[: max(width - 3, 1)].rsplit(" ", 1)[0].rstrip(" ,;:")
    return cut + "..."


def _task(meta):
    """A zoo model's task in a few words: its metadata's ``task`` if it has
    one, else the head of its description."""
    task = meta.get("task")
    if task:
        return str(task)
    head = str(meta.get("description", ""))
    for stop in (": ", " (", "; ", ", "):
        head = head.split(stop)[0]
    return head


def _headline(meta):
    """``metric=value`` of a zoo model's first (headline) recorded metric."""
    metrics = meta.get("metrics") or {}
    for key, spec in metrics.items():
        value = spec.get("value") if isinstance(spec, dict) else spec
        try:
            return f"{key}={float(value):.4g}"
        except (TypeError, ValueError):
            return f"{key}={value}"
    return "-"


def _cmd_zoo_list(args, out):
    zoo = _zoo()
    rows = []
    for name in zoo.list_models():
        try:
            meta = zoo.info(name)
        except zoo.ZooError:
            rows.append((name, "(files missing or damaged: see zoo info)", ""))
            continue
        rows.append((name, _task(meta), _headline(meta)))
    name_width = max(len(row[0]) for row in rows)
    metric_width = max(len(row[2]) for row in rows)
    task_width = LIST_WIDTH - name_width - metric_width - 4
    for name, task, metric in rows:
        line = f"{name:<{name_width}}  {metric:<{metric_width}}  "
        print((line + _shorten(task, task_width)).rstrip(), file=out)
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
    zoo.verify(name)  # a missing or modified file is reported before TensorFlow
    _load_tensorflow()
    measured = zoo.evaluate(name)
    rows = zoo.check_metrics(name, measured)
    _print_table([(name, row) for row in rows], out)
    return 0 if all(row["ok"] for row in rows) else 1


def _cmd_zoo_train(args, out):
    zoo = _zoo()
    name = _check_name(args.name)
    zoo.info(name)  # its metadata card must be readable
    if args.output_dir is None:
        output_dir = zoo.default_output_dir(name)
    else:
        output_dir = Path(args.output_dir)
    _check_writable_dir(output_dir, "--output-dir")
    options = {"verbose": 0 if args.quiet else 2}
    if args.epochs is not None:
        options["epochs"] = args.epochs
    if args.seed is not None:
        options["seed"] = args.seed
    print(f"training {name} into {output_dir} ...", file=out, flush=True)
    _load_tensorflow()
    meta = zoo.train(name, output_dir=str(output_dir), **options)
    for key, spec in meta["metrics"].items():
        print(
            f"{key} = {spec['value']:.5f} {spec.get('unit', '')} on "
            f"{spec.get('split')}",
            file=out,
        )
    print(
        f"wrote {output_dir / 'model.keras'} (sha256 {meta['sha256']}) and "
        f"{output_dir / 'metadata.json'}",
        file=out,
    )
    return 0


def _cmd_export(args, out):
    zoo = _zoo()
    name = _check_name(args.name)
    target = os.path.join(args.dir, str(args.version))
    if os.path.lexists(target) and not args.overwrite:
        raise _UsageError(
            f"{target} already exists; pass --overwrite to replace it, or "
            "export a higher --version"
        )
    _check_writable_dir(args.dir, "DIR")
    zoo.verify(name)
    _load_tensorflow()
    model = zoo.load(name)
    path = keras_gmm.export_saved_model(
        model, args.dir, version=args.version, overwrite=args.overwrite
    )
    print(f"exported {name} to {path}", file=out)
    return 0


def _cmd_demo(args, out):
    zoo = _zoo()
    names = zoo.list_models()
    print(
        f"checking {len(names)} zoo models: load, evaluate, export ...",
        file=out, flush=True,
    )
    _load_tensorflow()
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

    from keras_gmm.zoo import _recipe

    # Eager, batched: model.predict would trace one more tf.function per
    # model, and TensorFlow warns about retracing after a few of them.
    expected = _recipe.predict(model, x)
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
    """The recorded-against-measured table, with a legend of its columns."""
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
    print(TABLE_LEGEND, file=out)


_COMMANDS = {
    ("demo", None): _cmd_demo,
    ("zoo", "list"): _cmd_zoo_list,
    ("zoo", "info"): _cmd_zoo_info,
    ("zoo", "evaluate"): _cmd_zoo_evaluate,
    ("zoo", "train"): _cmd_zoo_train,
    ("export", None): _cmd_export,
}


#: import name -> pip name, where they differ.
_PIP_NAMES = {"sklearn": "scikit-learn", "yaml": "pyyaml", "PIL": "pillow"}


def _error(message):
    """Report ``message`` as the one line of a usage error; exit status 2."""
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def main(argv=None):
    """Run the ``keras-gmm`` command with ``argv`` (default ``sys.argv[1:]``).

    Returns the exit status (0 ok, 1 a check failed, 2 usage error).
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version (0) or a usage error (2)
        return exit_.code if isinstance(exit_.code, int) else 2
    command = _COMMANDS[(args.command, getattr(args, "zoo_command", None))]
    zoo = _zoo()
    try:
        return command(args, sys.stdout)
    except (_UsageError, zoo.ZooError) as error:
        # Our own usage errors and the zoo's (unknown name, missing, damaged
        # or modified files): the message says what to do; no traceback.
        return _error(error)
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] in ("keras_gmm", ""):
            raise  # a bug of ours, not a missing dependency
        package = _PIP_NAMES.get(error.name.split(".")[0], error.name)
        return _error(
            f"this command needs the Python module {error.name!r}, which is "
            f"not installed; install it: pip install {package}"
        )
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
