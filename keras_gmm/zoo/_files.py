"""The zoo's files: where they are, and the checks before one is trusted.

A zoo model is a folder ``<zoo root>/<name>/`` holding ``model.keras`` (the
Keras 3 file) and ``metadata.json`` (its card: description, dataset, metrics
measured on held-out data, the settings tried, the sha256 of the weights
file, the command that retrains it). Nothing here imports TensorFlow or
Keras: ``keras-gmm zoo list`` / ``zoo info`` answer from these files alone.
"""

import hashlib
import json
import os
import zipfile
from pathlib import Path

__all__ = [
    "ZOO_DIR_ENV",
    "ZooError",
    "ZooFileNotFoundError",
    "ZooMetadataError",
    "ChecksumMismatchError",
    "InvalidModelFileError",
    "zoo_root",
    "model_dir",
    "default_output_dir",
    "sha256_file",
    "train_command",
    "read_metadata",
    "model_file",
    "verify_model_file",
]

#: Environment variable that overrides where the zoo's files are looked up.
ZOO_DIR_ENV = "KERAS_GMM_ZOO_DIR"
MODEL_FILENAME = "model.keras"
METADATA_FILENAME = "metadata.json"
#: The keys every metadata.json must have.
REQUIRED_KEYS = ("name", "description", "dataset", "metrics", "training",
                 "model_file", "sha256")

_TRAIN_COMMAND = "keras-gmm zoo train {name} --output-dir saved_models/{name}"
_TRAIN_COMMAND_PYTHON = (
    "PYTHONPATH=. python -m keras_gmm.cli zoo train {name} "
    "--output-dir saved_models/{name}"
)


class ZooError(Exception):
    """Base class of the zoo's errors (the CLI reports them without a traceback)."""


class ZooFileNotFoundError(ZooError, FileNotFoundError):
    """A zoo model's ``model.keras`` or ``metadata.json`` is missing."""


class ZooMetadataError(ZooError, ValueError):
    """A ``metadata.json`` that is not valid JSON, lacks keys, or names a file
    outside its model's folder."""


class ChecksumMismatchError(ZooError, ValueError):
    """A ``model.keras`` whose sha256 is not the pinned (or given) one."""


class InvalidModelFileError(ZooError, ValueError):
    """A ``model.keras`` that is not a Keras 3 file (a zip archive)."""


def zoo_root(root=None):
    """The folder holding the zoo's model folders (``<root>/<name>/...``).

    In this order: ``root`` when given; the environment variable
    ``KERAS_GMM_ZOO_DIR`` when set and non-empty; ``keras_gmm/saved_models``
    inside the installed package (a wheel ships the repository's
    ``saved_models/`` there); the repository's top-level ``saved_models/``
    (source checkout or editable install). The path is returned even when it
    does not exist; reading then fails with a :class:`ZooFileNotFoundError`.
    """
    if root is not None:
        return Path(root)
    if os.environ.get(ZOO_DIR_ENV):
        return Path(os.environ[ZOO_DIR_ENV])
    package_dir = Path(__file__).resolve().parent.parent  # .../keras_gmm
    shipped = package_dir / "saved_models"
    return shipped if shipped.is_dir() else package_dir.parent / "saved_models"


def model_dir(name, root=None):
    """``<zoo root>/<name>``: the folder of one zoo model."""
    return zoo_root(root) / name


def default_output_dir(name, cwd=None):
    """Where a retrained zoo model goes by default: a new folder in the
    current directory (``cwd``), ``NAME``, else ``NAME-2``, ``NAME-3``, ...:
    never an existing folder, so never the zoo's shipped files."""
    cwd = Path.cwd() if cwd is None else Path(cwd)
    candidate, n = cwd / name, 1
    while os.path.lexists(candidate):
        n += 1
        candidate = cwd / f"{name}-{n}"
    return candidate


def sha256_file(path, chunk_size=1 << 20):
    """Hex sha256 digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def train_command(name, **options):
    """``(console_script_command, python_command)`` that retrain zoo model
    ``name`` in place with ``options``, run from the repository root."""
    extra = "".join(f" --{key.replace('_', '-')} {value}"
                    for key, value in options.items())
    return (_TRAIN_COMMAND.format(name=name) + extra,
            _TRAIN_COMMAND_PYTHON.format(name=name) + extra)


def restore_hint(name):
    """How to get zoo model ``name``'s shipped files back, or retrain them."""
    command, python_command = train_command(name)
    return (
        f"Restore the files shipped with keras_gmm (reinstall the package, or "
        f"`git checkout -- saved_models/{name}` in a source checkout), or "
        f"retrain them from the repository root with `{command}` (or "
        f"`{python_command}`)."
    )


def read_metadata(name, root=None):
    """The parsed, checked ``metadata.json`` of zoo model ``name``.

    Raises:
        ZooFileNotFoundError: the file is missing.
        ZooMetadataError: it is not valid JSON, not an object, lacks one of
            :data:`REQUIRED_KEYS`, or describes another model.
    """
    path = model_dir(name, root) / METADATA_FILENAME
    if not path.is_file():
        raise ZooFileNotFoundError(
            f"The metadata of zoo model {name!r} is missing: {path} does not "
            f"exist. {restore_hint(name)}"
        )
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ZooMetadataError(
            f"The metadata of zoo model {name!r} is not valid JSON: {path} "
            f"({error}). {restore_hint(name)}"
        ) from None
    missing = ([key for key in REQUIRED_KEYS if key not in metadata]
               if isinstance(metadata, dict) else list(REQUIRED_KEYS))
    if missing:
        raise ZooMetadataError(
            f"The metadata of zoo model {name!r} is incomplete: {path} lacks "
            f"the key(s) {', '.join(missing)}. {restore_hint(name)}"
        )
    if metadata["name"] != name:
        raise ZooMetadataError(
            f"{path} describes zoo model {metadata['name']!r}, not {name!r}. "
            f"{restore_hint(name)}"
        )
    return metadata


def model_file(name, metadata, root=None):
    """The weights file ``metadata["model_file"]`` names, inside the model's
    folder only: an absolute path, a ``..`` or a link leading out of the
    folder raises :class:`ZooMetadataError`."""
    folder = model_dir(name, root)
    value = metadata["model_file"]
    inside = isinstance(value, str) and value and not Path(value).is_absolute()
    inside = inside and ".." not in Path(value).parts
    if inside:
        path = folder / value
        inside = path.resolve().is_relative_to(folder.resolve())
    if not inside:
        raise ZooMetadataError(
            f"The metadata of zoo model {name!r} ({folder / METADATA_FILENAME}) "
            f"names model_file={value!r}, which is not a file inside {folder}; "
            f"zoo files are only read from the model's own folder. "
            f"{restore_hint(name)}"
        )
    return path


def verify_model_file(name, expected_sha256, root=None, metadata=None):
    """Check zoo model ``name``'s weights file; return its path.

    The file must exist, be a zip archive (a Keras 3 file), and its sha256,
    and the one ``metadata.json`` records, must both be ``expected_sha256``
    (the hash pinned in the package, or one the caller trusts).

    Raises:
        ZooFileNotFoundError, ZooMetadataError, InvalidModelFileError,
        ChecksumMismatchError: each naming the file and how to restore it.
    """
    if metadata is None:
        metadata = read_metadata(name, root)
    path = model_file(name, metadata, root)
    if not path.is_file():
        raise ZooFileNotFoundError(
            f"The weights of zoo model {name!r} are missing: {path} does not "
            f"exist. {restore_hint(name)}"
        )
    if not zipfile.is_zipfile(path):
        raise InvalidModelFileError(
            f"The weights file of zoo model {name!r}, {path}, is not a Keras 3 "
            f"file (a zip archive): it is truncated or was replaced. "
            f"{restore_hint(name)}"
        )
    actual = sha256_file(path)
    for what, digest in (("its metadata.json records", metadata["sha256"]),
                         ("the file has", actual)):
        if digest != expected_sha256:
            raise ChecksumMismatchError(
                f"Checksum mismatch for zoo model {name!r} ({path}): "
                f"{what} sha256 {digest}, but the expected sha256 (pinned in "
                f"keras_gmm/zoo/_registry.py, or passed as sha256=) is "
                f"{expected_sha256}. The file is corrupted or was modified, so "
                f"it is not loaded. {restore_hint(name)} A model you retrained "
                f"yourself loads with sha256= the digest zoo.train returned."
            )
    return path
