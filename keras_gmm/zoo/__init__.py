"""The keras_gmm model zoo: pretrained models, trained reproducibly offline.

A zoo model is a name, a recipe module that trains it from the embedded data
of :mod:`keras_gmm.datasets`, and a folder ``<zoo root>/<name>/`` with
``model.keras`` and ``metadata.json`` (description, dataset and splits,
metrics measured on held-out data, the settings tried, sha256 of
``model.keras``, the command that retrains it, library versions).

Example:

>>> import keras_gmm.zoo
>>> keras_gmm.zoo.list_models()  # doctest: +NORMALIZE_WHITESPACE
['dagmm_breast_cancer', 'dagmm_mnist', 'em_digits', 'gmmconv_digits',
 'lgm_cnn_mnist', 'mdn_inverse_sine', 'soft_weight_sharing_digits',
 'soft_weight_sharing_mnist', 'vade_digits', 'vade_mnist']
>>> model = keras_gmm.zoo.load("mdn_inverse_sine")   # checksum verified
>>> measured = keras_gmm.zoo.evaluate("mdn_inverse_sine", model)
>>> recorded = keras_gmm.zoo.info("mdn_inverse_sine")["metrics"]

Where the files are: :func:`zoo_root`. Loading: :func:`load` reads the
weights file only from the model's own folder, checks that it is a Keras 3
file whose sha256 is the one pinned in the package (and recorded in its
metadata), then calls ``keras.saving.load_model(path, safe_mode=True)`` with
no ``custom_objects``. Models trained by gradient descent are saved compiled
with their keras_gmm loss; those fitted by EM are saved uncompiled.

Listing and reading metadata (:func:`list_models`, :func:`info`) import
neither TensorFlow nor a recipe; :func:`load`, :func:`train` and
:func:`evaluate` import them on first use. Adding a model: a recipe module
``keras_gmm/zoo/<name>.py`` (interface in ``keras_gmm/zoo/_registry.py``), its
card ``saved_models/<name>/metadata.json``, then ``keras-gmm zoo train <name>
--output-dir saved_models/<name>`` and its pin in ``_registry.REGISTRY``.
"""

import math

from keras_gmm._validation import check_one_of
from keras_gmm.zoo._files import (
    ZOO_DIR_ENV,
    ChecksumMismatchError,
    InvalidModelFileError,
    ZooError,
    ZooFileNotFoundError,
    ZooMetadataError,
    default_output_dir,
    model_dir,
    read_metadata,
    sha256_file,
    verify_model_file,
    zoo_root,
)
from keras_gmm.zoo._registry import (
    REGISTRY,
    UnknownModelError,
    check_name,
    get_recipe,
    names,
    pinned_sha256,
)

__all__ = [
    "ZOO_DIR_ENV",
    "ChecksumMismatchError",
    "InvalidModelFileError",
    "UnknownModelError",
    "ZooError",
    "ZooFileNotFoundError",
    "ZooMetadataError",
    "check_metrics",
    "default_output_dir",
    "evaluate",
    "example_inputs",
    "info",
    "list_models",
    "load",
    "model_dir",
    "recorded_metrics",
    "sha256_file",
    "train",
    "verify",
    "zoo_root",
]


def __getattr__(attr):
    """``keras_gmm.zoo.<recipe>``: the recipe modules, imported on first use."""
    if attr in REGISTRY:
        return get_recipe(attr)
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def list_models():
    """Names of the registered zoo models, sorted."""
    return names()


def info(name, root=None):
    """The metadata of zoo model ``name`` (its checked ``metadata.json``).

    Raises:
        UnknownModelError (a ``ValueError``): ``name`` is not registered; the
            message lists the known names.
        ZooFileNotFoundError: the metadata file is missing.
        ZooMetadataError: it is not valid JSON or lacks a required key.
    """
    return read_metadata(check_name(name), root)


def verify(name, root=None, sha256=None):
    """Check zoo model ``name``'s ``model.keras`` and return its path.

    ``sha256``: the digest to expect instead of the pinned one (for a model
    you retrained: the ``sha256`` that :func:`train` returned).

    Raises:
        UnknownModelError, ZooFileNotFoundError, ZooMetadataError,
        InvalidModelFileError, ChecksumMismatchError.
    """
    expected = pinned_sha256(name) if sha256 is None else sha256
    return verify_model_file(check_name(name), expected, root)


def load(name, root=None, sha256=None):
    """Load zoo model ``name`` as a ``keras.Model``, after :func:`verify`.

    The model takes its inputs exactly as the recorded dataset function
    returns them (any standardisation is inside the model).

    Args:
        name: a registered zoo model name (see :func:`list_models`).
        root: optional folder overriding :func:`zoo_root`.
        sha256: the digest to expect instead of the pinned one (see
            :func:`verify`).
    """
    path = verify(name, root, sha256)
    from keras_gmm.zoo import _recipe  # TensorFlow, imported on first use

    return _recipe.load_model(path)


def train(name, output_dir=None, verbose=1, **options):
    """Retrain zoo model ``name`` with its recipe; write it into ``output_dir``.

    Writes ``output_dir/model.keras`` and ``output_dir/metadata.json``: the
    shipped card (description, dataset, metric definitions, settings tried)
    with what this run set and measured, and returns the metadata. With the
    recipe's defaults and ``output_dir="saved_models/<name>"`` (from the
    repository root) it reproduces the shipped model, in place.

    Args:
        name: a registered zoo model name.
        output_dir: folder to write into (created if needed). ``None``
            (default): a new folder in the current directory,
            :func:`default_output_dir` (``./NAME``, else ``./NAME-2``, ...),
            never the zoo's shipped files.
        verbose: progress, on stdout: 0 silent; 1 (default) Keras' progress
            bars for the saved model's epochs (as ``keras.Model.fit``) and
            one line per phase, restart and seed of the recipe; 2 the same
            with one line per epoch (for logs; what ``keras-gmm zoo train``
            uses).
        **options: recipe options, e.g. ``seed=0``, ``epochs=...`` (see the
            recipe's ``train``).
    """
    verbose = check_one_of(verbose, "verbose", (0, 1, 2),
                           hint="0 silent, 1 progress bars, 2 one line per epoch")
    card = read_metadata(check_name(name))  # checked before any training
    recipe = get_recipe(name)
    from keras_gmm.zoo import _recipe

    if output_dir is None:
        output_dir = default_output_dir(name)
        if verbose:
            print(f"{name}: writing into {output_dir} (a new folder)", flush=True)
    model, record = recipe.train(verbose=verbose, **options)
    return _recipe.save(model, output_dir, card, record)


def evaluate(name, model=None, root=None):
    """Measure zoo model ``name``'s metrics on its recorded held-out split.

    ``model``: the model to evaluate; by default ``load(name, root)``.
    Returns ``{metric: float}``, the keys of ``info(name)["metrics"]``.
    """
    recipe = get_recipe(name)
    if model is None:
        model = load(name, root)
    return {key: float(value) for key, value in recipe.evaluate(model).items()}


def example_inputs(name, n=8):
    """A few held-out inputs of zoo model ``name`` (as the model takes them)."""
    return get_recipe(name).example_inputs(n)


def recorded_metrics(name, root=None):
    """``{metric: value}`` recorded in zoo model ``name``'s metadata."""
    return {key: spec["value"] for key, spec in info(name, root)["metrics"].items()}


def check_metrics(name, measured, root=None):
    """Compare measured metrics with those recorded for zoo model ``name``.

    Returns one dict per recorded metric: ``metric``, ``recorded``,
    ``measured`` (None if not measured), ``difference`` (absolute),
    ``tolerance``, ``reference`` (e.g. the exact floor, or None) and ``ok``
    (``|measured - recorded| <= tolerance``).
    """
    rows = []
    for key, spec in info(name, root)["metrics"].items():
        recorded, value = float(spec["value"]), measured.get(key)
        tolerance = float(spec.get("tolerance", 1e-3))
        difference = None if value is None else abs(float(value) - recorded)
        reference = spec.get("reference")
        rows.append({
            "metric": key,
            "recorded": recorded,
            "measured": None if value is None else float(value),
            "difference": difference,
            "tolerance": tolerance,
            "reference": None if reference is None else reference.get("value"),
            "ok": difference is not None and math.isfinite(difference)
            and difference <= tolerance,
        })
    return rows
