"""The keras_gmm model zoo: pretrained models, trained reproducibly offline.

A zoo model is a name, a recipe module that trains it from the embedded data
of :mod:`keras_gmm.datasets`, and a folder ``<zoo root>/<name>/`` with
``model.keras`` and ``metadata.json`` (description, dataset and splits,
metrics measured on held-out data, sha256 of ``model.keras``, the command that
retrains it, training settings and library versions).

Example:

>>> import keras_gmm.zoo
>>> keras_gmm.zoo.list_models()  # doctest: +NORMALIZE_WHITESPACE
['dagmm_breast_cancer', 'em_digits', 'gmmconv_digits', 'mdn_inverse_sine',
 'soft_weight_sharing_digits', 'vade_digits']
>>> model = keras_gmm.zoo.load("mdn_inverse_sine")   # checksum verified
>>> measured = keras_gmm.zoo.evaluate("mdn_inverse_sine", model)
>>> recorded = keras_gmm.zoo.info("mdn_inverse_sine")["metrics"]

Where the files are: see :func:`zoo_root` (a ``root=`` argument, else the
``KERAS_GMM_ZOO_DIR`` environment variable, else the files shipped inside the
installed package, else the repository's ``saved_models/``).

Loading: :func:`load` checks the sha256 of ``model.keras`` against
``metadata.json`` and refuses a modified or missing file with an error that
names the path and says how to restore or retrain it; it then calls
``keras.saving.load_model(path, safe_mode=True)`` with no ``custom_objects``
(keras_gmm's layers and losses are registered serializable). Zoo models
trained by gradient descent are saved compiled with their keras_gmm loss, so a
loaded model can ``predict``, ``evaluate`` and ``fit`` as is; those fitted by
EM (``em_digits``) are saved uncompiled (EM has no optimizer or loss).

Adding a model: a recipe module ``keras_gmm/zoo/<name>.py`` (the interface is
documented in ``keras_gmm/zoo/_registry.py``) and one line in
``keras_gmm.zoo._registry.REGISTRY``; then train it into ``saved_models/<name>``
with ``keras-gmm zoo train <name> --output-dir saved_models/<name>``.
"""

import math

from keras_gmm.zoo._files import (
    ZOO_DIR_ENV,
    ChecksumMismatchError,
    ZooError,
    ZooFileNotFoundError,
    model_dir,
    read_metadata,
    sha256_file,
    verify_model_file,
    zoo_root,
)
from keras_gmm.zoo._registry import UnknownModelError, check_name, get_recipe, names

__all__ = [
    "ZOO_DIR_ENV",
    "ChecksumMismatchError",
    "UnknownModelError",
    "ZooError",
    "ZooFileNotFoundError",
    "check_metrics",
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


def list_models():
    """Names of the registered zoo models, sorted."""
    return names()


def info(name, root=None):
    """The metadata of zoo model ``name`` (its ``metadata.json``, as a dict).

    Args:
        name: a registered zoo model name (see :func:`list_models`).
        root: optional folder overriding :func:`zoo_root`.

    Raises:
        UnknownModelError (a ``ValueError``): ``name`` is not registered; the
            message lists the known names.
        ZooFileNotFoundError: the metadata file is missing.
    """
    return read_metadata(check_name(name), root)


def verify(name, root=None):
    """Verify the sha256 of zoo model ``name``'s ``model.keras``; returns its path.

    Raises:
        UnknownModelError, ZooFileNotFoundError, ChecksumMismatchError.
    """
    return verify_model_file(check_name(name), root)


def load(name, root=None):
    """Load zoo model ``name`` as a ``keras.Model``, after verifying its checksum.

    The model takes its inputs exactly as the recorded dataset function
    returns them (any standardisation is inside the model) and, if it was
    trained by gradient descent, is compiled with its keras_gmm loss.

    Args:
        name: a registered zoo model name (see :func:`list_models`).
        root: optional folder overriding :func:`zoo_root`.

    Raises:
        UnknownModelError (a ``ValueError``): unknown ``name``; lists the
            known names.
        ZooFileNotFoundError: ``model.keras`` or ``metadata.json`` is missing.
        ChecksumMismatchError (a ``ValueError``): ``model.keras`` does not
            match the sha256 recorded in ``metadata.json``.
    """
    import keras

    path = verify(name, root)
    return keras.saving.load_model(path, safe_mode=True)


def train(name, output_dir, **options):
    """Retrain zoo model ``name`` with its recipe; write it into ``output_dir``.

    Writes ``output_dir/model.keras`` and ``output_dir/metadata.json`` (with
    the metrics measured on the recorded held-out split) and returns the
    metadata. To reproduce the shipped model, use the recipe's defaults and
    ``output_dir="saved_models/<name>"`` from the repository root.

    Args:
        name: a registered zoo model name.
        output_dir: folder to write into (created if needed; the two files are
            replaced).
        **options: recipe options, e.g. ``seed=0``, ``epochs=...``,
            ``verbose=1`` (see the recipe's ``train``).
    """
    return get_recipe(name).train(output_dir, **options)


def evaluate(name, model=None, root=None):
    """Measure zoo model ``name``'s metrics on its recorded held-out split.

    Args:
        name: a registered zoo model name.
        model: the model to evaluate; by default the zoo's own,
            ``load(name, root)``.
        root: optional folder overriding :func:`zoo_root` (when loading).

    Returns:
        ``{metric: float}``, the same keys as ``info(name)["metrics"]``.
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

    Returns:
        A list of dicts, one per recorded metric: ``metric``, ``recorded``,
        ``measured`` (None if not measured), ``difference`` (absolute),
        ``tolerance``, ``reference`` (e.g. the exact floor, or None) and ``ok``
        (``|measured - recorded| <= tolerance``).
    """
    rows = []
    for key, spec in info(name, root)["metrics"].items():
        recorded = float(spec["value"])
        value = measured.get(key)
        tolerance = float(spec.get("tolerance", 1e-3))
        difference = None if value is None else abs(float(value) - recorded)
        ok = (
            difference is not None
            and math.isfinite(difference)
            and (difference <= tolerance)
        )
        reference = spec.get("reference")
        rows.append(
            {
                "metric": key,
                "recorded": recorded,
                "measured": None if value is None else float(value),
                "difference": difference,
                "tolerance": tolerance,
                "reference": None if reference is None else reference.get("value"),
                "ok": bool(ok),
            }
        )
    return rows
