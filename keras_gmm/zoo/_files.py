"""The zoo's files: where they are, what metadata they carry, and their checks.

Everything every recipe shares lives here, once: locating the zoo root,
sha256 checksums, library versions, writing a trained model and its
``metadata.json`` (atomically), reading metadata and verifying a model file
before it is loaded. Recipes never re-implement any of it.

A zoo model is a folder ``<zoo root>/<name>/`` holding:

- ``model.keras``: the Keras 3 file (saved compiled when it has a loss, see
  :func:`save_trained_model`);
- ``metadata.json``: see :func:`save_trained_model` for its fields.
"""

import datetime
import hashlib
import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np

__all__ = [
    "ZOO_DIR_ENV",
    "MODEL_FILENAME",
    "METADATA_FILENAME",
    "METADATA_FORMAT_VERSION",
    "ZooError",
    "ZooFileNotFoundError",
    "ChecksumMismatchError",
    "zoo_root",
    "model_dir",
    "sha256_file",
    "library_versions",
    "train_command",
    "read_metadata",
    "verify_model_file",
    "save_trained_model",
]

#: Environment variable that overrides where the zoo's files are looked up
#: (a folder holding ``<name>/model.keras`` and ``<name>/metadata.json``).
ZOO_DIR_ENV = "KERAS_GMM_ZOO_DIR"
MODEL_FILENAME = "model.keras"
METADATA_FILENAME = "metadata.json"
METADATA_FORMAT_VERSION = 1

# Command that retrains a zoo model in place, run from the repository root.
_TRAIN_COMMAND = "keras-gmm zoo train {name} --output-dir saved_models/{name}"
_TRAIN_COMMAND_PYTHON = (
    "PYTHONPATH=. python -m keras_gmm.cli zoo train {name} "
    "--output-dir saved_models/{name}"
)


class ZooError(Exception):
    """Base class of the zoo's own errors (the CLI reports them without a
    traceback)."""


class ZooFileNotFoundError(ZooError, FileNotFoundError):
    """A zoo model's ``model.keras`` or ``metadata.json`` is missing."""


class ChecksumMismatchError(ZooError, ValueError):
    """A zoo model's ``model.keras`` does not match the sha256 in its metadata."""


# --------------------------------------------------------------- locating
def zoo_root(root=None):
    """The folder holding the zoo's model folders (``<root>/<name>/...``).

    Looked up in this order:

    1. ``root``, when given (a path);
    2. the environment variable ``KERAS_GMM_ZOO_DIR``, when set and non-empty
       (point it at a copy of the files, e.g. in tests);
    3. ``keras_gmm/saved_models`` inside the installed package: a wheel ships
       the repository's ``saved_models/`` there (``pyproject.toml``
       force-includes it);
    4. the repository's top-level ``saved_models/`` (source checkout or
       editable install, where ``keras_gmm/`` sits next to it).

    The path is returned even when it does not exist; loading then fails with
    a clear :class:`ZooFileNotFoundError`.
    """
    if root is not None:
        return Path(root)
    env = os.environ.get(ZOO_DIR_ENV)
    if env:
        return Path(env)
    package_dir = Path(__file__).resolve().parent.parent  # .../keras_gmm
    shipped = package_dir / "saved_models"
    if shipped.is_dir():
        return shipped
    return package_dir.parent / "saved_models"


def model_dir(name, root=None):
    """``<zoo root>/<name>``: the folder of one zoo model."""
    return zoo_root(root) / name


# ----------------------------------------------------------------- values
def sha256_file(path, chunk_size=1 << 20):
    """Hex sha256 digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions():
    """Versions of the libraries a zoo model was trained and saved with."""
    import keras
    import numpy
    import tensorflow
    import tensorflow_probability

    import keras_gmm

    return {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "tensorflow": tensorflow.__version__,
        "keras": keras.__version__,
        "tensorflow_probability": tensorflow_probability.__version__,
        "keras_gmm": getattr(keras_gmm, "__version__", "unknown"),
    }


def train_command(name, **options):
    """The commands that retrain zoo model ``name`` in place, with ``options``.

    Returns ``(console_script_command, python_command)``; both are run from the
    repository root, the second without installing the package.
    """
    extra = "".join(
        f" --{key.replace('_', '-')} {value}" for key, value in options.items()
    )
    return (
        _TRAIN_COMMAND.format(name=name) + extra,
        _TRAIN_COMMAND_PYTHON.format(name=name) + extra,
    )


def _restore_hint(name):
    command, python_command = train_command(name)
    return (
        f"Restore the file from the keras_gmm distribution (reinstall the "
        f"package, or `git checkout -- saved_models/{name}` in a source "
        f"checkout), or retrain it from the repository root with `{command}` "
        f"(or `{python_command}`)."
    )


# ---------------------------------------------------------------- reading
def read_metadata(name, root=None):
    """The parsed ``metadata.json`` of zoo model ``name``.

    Raises:
        ZooFileNotFoundError: the file is missing (the message names the path
            and how to restore or retrain it).
    """
    path = model_dir(name, root) / METADATA_FILENAME
    if not path.is_file():
        raise ZooFileNotFoundError(
            f"The metadata of zoo model {name!r} is missing: {path} does not "
            f"exist. {_restore_hint(name)}"
        )
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def verify_model_file(name, root=None, metadata=None):
    """Check ``model.keras`` of zoo model ``name`` against its recorded sha256.

    Returns the verified path.

    Raises:
        ZooFileNotFoundError: the model file or the metadata is missing.
        ChecksumMismatchError: the file's sha256 differs from ``metadata.json``
            (a corrupted, modified or mismatched file); the message names the
            path, both digests and how to restore or retrain it.
    """
    if metadata is None:
        metadata = read_metadata(name, root)
    path = model_dir(name, root) / metadata.get("model_file", MODEL_FILENAME)
    if not path.is_file():
        raise ZooFileNotFoundError(
            f"The weights of zoo model {name!r} are missing: {path} does not "
            f"exist. {_restore_hint(name)}"
        )
    expected = metadata.get("sha256")
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumMismatchError(
            f"Checksum mismatch for zoo model {name!r}: {path} has sha256 "
            f"{actual}, but its metadata.json records {expected}. The file is "
            f"corrupted or was modified, so it is not loaded. "
            f"{_restore_hint(name)}"
        )
    return path


# ---------------------------------------------------------------- writing
def save_trained_model(
    model,
    output_dir,
    *,
    name,
    description,
    dataset,
    metrics,
    training,
    architecture=None,
    notes=None,
):
    """Write ``model.keras`` and ``metadata.json`` into ``output_dir``.

    The model is saved as it is. A model trained by gradient descent is saved
    **compiled**: its compile config (optimizer and a keras_gmm loss,
    registered serializable) goes into the file, so
    ``keras.saving.load_model(path, safe_mode=True)`` with no
    ``custom_objects`` returns a model ready for ``predict``, ``evaluate`` and
    further ``fit``. A model fitted by EM has no optimizer or loss and is
    saved uncompiled; ``saved_compiled`` in the metadata says which.

    Both files are written to temporary names and moved into place, the model
    first, so an interrupted run never leaves a metadata file describing
    another model's bytes.

    ``metadata.json`` fields:

    - ``name``, ``description``, ``architecture`` (free text);
    - ``dataset``: the :mod:`keras_gmm.datasets` function, the splits used for
      training / validation / evaluation and their arguments;
    - ``metrics``: ``{metric: {"value", "unit", "split", "meaning",
      "tolerance", "reference"...}}`` measured on held-out data; ``value`` is
      what :func:`keras_gmm.zoo.evaluate` must reproduce within ``tolerance``;
    - ``training``: seed, epochs, batch size, optimizer, ... and the final
      losses;
    - ``model_file``, ``sha256``: the weights file and its digest;
    - ``train_command`` / ``train_command_python``: the command that retrains
      the zoo model in place (from the repository root) with these settings;
    - ``library_versions``, ``saved_at`` (UTC), ``format_version``.

    Returns:
        The metadata dict (as written).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model_path = output_dir / MODEL_FILENAME
    fd, tmp_model = tempfile.mkstemp(prefix=".model-", suffix=".keras", dir=output_dir)
    os.close(fd)
    try:
        model.save(tmp_model, overwrite=True)
        digest = sha256_file(tmp_model)
        compiled = bool(getattr(model, "compiled", False))
        options = {key: training[key] for key in ("epochs", "seed") if key in training}
        command, python_command = train_command(name, **options)
        metadata = {
            "format_version": METADATA_FORMAT_VERSION,
            "name": name,
            "description": description,
            "architecture": architecture,
            "dataset": dataset,
            "metrics": metrics,
            "training": training,
            "model_file": MODEL_FILENAME,
            "sha256": digest,
            "saved_compiled": compiled,
            "loading": (
                "keras_gmm.zoo.load(name) verifies sha256, then "
                "keras.saving.load_model(path, safe_mode=True) with no "
                "custom_objects; "
                + (
                    "the file is saved compiled (keras_gmm loss)."
                    if compiled
                    else "the model is saved uncompiled (no optimizer or "
                    "loss, e.g. a mixture fitted by EM)."
                )
            ),
            "train_command": command,
            "train_command_python": python_command,
            "library_versions": library_versions(),
            "saved_at": datetime.datetime.now(datetime.timezone.utc)
            .replace(microsecond=0)
            .isoformat(),
        }
        if notes:
            metadata["notes"] = notes
        fd, tmp_meta = tempfile.mkstemp(
            prefix=".metadata-", suffix=".json", dir=output_dir
        )
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(metadata, f, indent=2, sort_keys=False)
            f.write("\n")
        # mkstemp creates 0600 files; zoo files are meant to be shared/shipped.
        for tmp in (tmp_model, tmp_meta):
            os.chmod(tmp, 0o644)
        os.replace(tmp_model, model_path)
        os.replace(tmp_meta, output_dir / METADATA_FILENAME)
    finally:
        for leftover in output_dir.glob(".model-*.keras"):
            leftover.unlink(missing_ok=True)
        for leftover in output_dir.glob(".metadata-*.json"):
            leftover.unlink(missing_ok=True)
    return metadata


def digits_clustering_metrics(output, tolerance=0.0025):
    """The metric specs of a zoo model that clusters the digits without
    labels (``em_digits``, ``vade_digits``), scored on ``load_digits("test")``.

    ``output`` names what the model returns (e.g. "responsibilities"); the
    default ``tolerance`` accepts one of the 454 test images changing cluster
    on other hardware (1/454 = 0.0022); the NMI gets 0.005.
    """
    label = f"argmax({output})"
    return {
        "clustering_accuracy": {
            "unit": "fraction",
            "split": "test",
            "meaning": (
                f"accuracy of {label} on the held-out 'test' split "
                "(keras_gmm.datasets.load_digits('test'), 454 images) under the "
                "best one-to-one map clusters -> digits (Hungarian; "
                "keras_gmm.metrics.clustering_accuracy); higher is better"
            ),
            "lower_is_better": False,
            "tolerance": tolerance,
        },
        "nmi": {
            "unit": "fraction",
            "split": "test",
            "meaning": (
                "normalised mutual information (arithmetic mean of the "
                f"entropies, as scikit-learn's default) between {label} and the "
                "digits on the held-out 'test' split "
                "(keras_gmm.metrics.normalized_mutual_info); higher is better"
            ),
            "lower_is_better": False,
            "tolerance": 0.005,
        },
        "digit_accuracy": {
            "unit": "fraction",
            "split": "test",
            "meaning": (
                f"mean({label} == digit) on the held-out 'test' split: accuracy "
                "with the cluster -> digit names fixed on the train split (the "
                "component order); higher is better"
            ),
            "lower_is_better": False,
            "tolerance": tolerance,
        },
    }


def check_int(value, name, minimum=None):
    """``value`` as a Python int (an integer ``>= minimum`` when given), else
    a ValueError naming the argument and value: the recipes' option check."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
        minimum is not None and value < minimum
    ):
        what = "an int" if minimum is None else f"an integer >= {minimum}"
        raise ValueError(f"`{name}` must be {what}; received {name}={value!r}.")
    return int(value)


def seed_summary(per_seed, keys):
    """``{key: {"mean", "std", "per_seed"}}`` of the scores of several seeds
    (``per_seed``: ``{seed: {key: value}}``); keys the runs lack are skipped."""
    first = next(iter(per_seed.values()))
    out = {}
    for key in keys:
        if key not in first:
            continue
        values = np.array([s[key] for s in per_seed.values()], dtype=np.float64)
        out[key] = {
            "mean": float(values.mean()),
            "std": float(values.std()),
            "per_seed": {str(seed): float(s[key]) for seed, s in per_seed.items()},
        }
    return out
