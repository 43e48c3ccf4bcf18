"""What the zoo's recipes share, written once: layer lookup, scores, naming
clusters after classes, seed summaries, baselines, loading and writing.

Imports TensorFlow (through Keras and the layers): :mod:`keras_gmm.zoo`
imports this module only when a model is loaded or trained.
"""

import datetime
import importlib.metadata
import json
import os
import platform
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import keras_gmm.layers  # noqa: F401  (registers the serializable layers,
import keras_gmm.losses  # noqa: F401  loss and regularizer, so that
import keras_gmm.regularizers  # noqa: F401  load_model needs no custom_objects)
from keras_gmm import metrics
from keras_gmm.zoo._files import (
    METADATA_FILENAME,
    MODEL_FILENAME,
    sha256_file,
    train_command,
)

EVAL_BATCH_SIZE = 1024
KMEANS_KEY = "sklearn.cluster.KMeans(10, n_init=10) on the raw 64 pixels"


def load_model(path):
    """``keras.saving.load_model(path, safe_mode=True)``, no custom_objects."""
    return keras.saving.load_model(path, safe_mode=True)


def find_layer(model, cls):
    """The last layer of ``model`` that is a ``cls``."""
    found = [layer for layer in model.layers if isinstance(layer, cls)]
    if not found:
        raise ValueError(f"Model {model.name!r} has no {cls.__name__} layer.")
    return found[-1]


def predict(model, x, batch_size=EVAL_BATCH_SIZE):
    """The outputs of ``model`` on ``x`` as NumPy arrays (the structure the
    model returns: an array, a list, a dict), computed eagerly, ``batch_size``
    rows at a time: ``model(batch, training=False)``.

    Not ``model.predict``: it traces a new ``tf.function`` for every model
    and for every new batch shape, and TensorFlow counts those traces
    together for all Keras models (one code object), so evaluating or
    training the zoo's models one after another logged "triggered
    tf.function retracing" warnings. An eager call traces nothing and gives
    the same numbers.
    """
    x = np.asarray(x)
    parts = [model(x[i:i + batch_size], training=False)
             for i in range(0, max(len(x), 1), batch_size)]
    def join(*tensors):
        return np.concatenate([keras.ops.convert_to_numpy(t) for t in tensors])

    return keras.tree.map_structure(join, *parts)


def say(verbose, name, message):
    """One line of a recipe's progress (a phase, a restart, a seed, a
    result), ``"NAME: message"`` on stdout, when ``verbose``."""
    if verbose:
        print(f"{name}: {message}", flush=True)


def count(n, noun):
    """``"1 epoch"``, ``"3 epochs"``: ``n`` and ``noun``, plural unless one."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def steps_per_epoch(n, batch_size):
    return -(-n // batch_size)


def fit_record(seed, epochs, batch_size, history, seconds, **learning_rate):
    """The ``training`` record of a model fitted by Adam with a cosine-decaying
    ``learning_rate`` (its ``initial_learning_rate``, ``decay_steps``, ...)."""
    return {"seed": seed, "epochs": epochs, "batch_size": batch_size,
            "optimizer": {"name": "Adam", "learning_rate": {
                "schedule": "keras.optimizers.schedules.CosineDecay", **learning_rate}},
            "shuffle": True, "seconds": round(seconds, 1),
            "final_train_loss": float(history.history["loss"][-1])}


def cluster_scores(y, labels):
    """:func:`keras_gmm.metrics.clustering_scores` and ``digit_accuracy``
    (``mean(labels == y)``: the clusters named after the classes)."""
    return {**metrics.clustering_scores(y, labels),
            "digit_accuracy": float(np.mean(np.asarray(labels) == np.asarray(y)))}


def name_clusters(layer, labels, y):
    """Renumber ``layer``'s components so that component ``k`` is the one the
    Hungarian matching of ``labels`` to classes ``y`` (0, 1, ...) gives class
    ``k`` (a relabelling: no likelihood changes); returns the order applied."""
    from scipy.optimize import linear_sum_assignment

    counts = np.zeros((layer.num_components,) * 2, np.int64)
    np.add.at(counts, (np.asarray(y), np.asarray(labels)), 1)
    classes, components = linear_sum_assignment(counts, maximize=True)
    order = components[np.argsort(classes)]
    layer.permute_components(order)
    return order


def seed_summary(per_seed, keys):
    """``{key: {"mean", "std", "per_seed"}}`` of the scores of several seeds
    (``per_seed``: ``{seed: {key: value}}``); keys the runs lack are skipped."""
    first = next(iter(per_seed.values()))
    out = {}
    for key in (k for k in keys if k in first):
        values = np.array([s[key] for s in per_seed.values()], np.float64)
        out[key] = {"mean": float(values.mean()), "std": float(values.std()),
                    "per_seed": {str(seed): float(s[key])
                                 for seed, s in per_seed.items()}}
    return out


def digits_baselines(x_train, x_test, y_test, seeds, mixtures):
    """Per seed, scikit-learn's ``KMeans(10)`` on the raw pixels and, for each
    ``key: (features, settings)`` of ``mixtures``, a ``GaussianMixture(10,
    **settings)`` on ``features(seed) -> (z_train, z_test)``; returns
    ``{key: {seed: scores}}`` (the mixtures' with their ``lower_bound``)."""
    from sklearn.cluster import KMeans
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    results = {KMEANS_KEY: {}, **{key: {} for key in mixtures}}
    # One BLAS thread: next to TensorFlow's pools more oversubscribe the cores.
    with threadpool_limits(limits=1):
        for seed in seeds:
            km = KMeans(10, n_init=10, random_state=seed).fit(x_train)
            results[KMEANS_KEY][seed] = cluster_scores(y_test, km.predict(x_test))
            for key, (features, settings) in mixtures.items():
                z_train, z_test = features(seed)
                gm = GaussianMixture(10, random_state=seed, **settings).fit(z_train)
                results[key][seed] = {**cluster_scores(y_test, gm.predict(z_test)),
                                      "lower_bound": float(gm.lower_bound_)}
    return results


def kmeans_references(comparison, seed):
    """The k-means baseline of ``comparison`` as the ``reference`` of the
    clustering_accuracy and nmi metrics (its name and meaning: the card's)."""
    return {key: {"reference": {
        "value": comparison[KMEANS_KEY][key]["per_seed"][str(seed)],
        "source": f"sklearn.cluster.KMeans(10, n_init=10, random_state={seed}) "
        "fitted on the train split",
    }} for key in ("clustering_accuracy", "nmi")}


def library_versions():
    """Versions of the libraries a zoo model was trained and saved with."""
    try:
        version = importlib.metadata.version("keras-gmm")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        version = "unknown"
    return {"python": platform.python_version(), "numpy": np.__version__,
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "tensorflow_probability": tfp.__version__, "keras_gmm": version}


def save(model, output_dir, card, record):
    """Write ``model.keras`` and ``metadata.json`` into ``output_dir``; return
    the metadata.

    The metadata is the model's ``card`` (its shipped metadata: description,
    architecture, dataset, notes, each metric's definition, tolerance and
    reference, a baseline's score kept unless the run measures it again, and
    the prose and ``selection`` of its ``training``) with what this run set
    and measured: ``record["metrics"]`` (``{key: value}`` or ``{key:
    {"value": ..., ...}}``) and ``record["training"]``. The model is saved as
    it is (compiled when trained by gradient descent: its keras_gmm loss is
    registered). Both files go to temporary names first, the model first, so
    an interrupted run never leaves a metadata file describing other bytes.
    """
    if set(record["metrics"]) != set(card["metrics"]):
        raise RuntimeError(
            f"The recipe of {card['name']!r} measured {sorted(record['metrics'])}, "
            f"but its card defines {sorted(card['metrics'])}."
        )
    metric_specs = {}
    for key, spec in card["metrics"].items():
        measured = record["metrics"][key]
        measured = measured if isinstance(measured, dict) else {"value": measured}
        fixed = {k: v for k, v in spec.items() if k != "value"}
        if "reference" in measured and "reference" in fixed:
            measured = {**measured,
                        "reference": {**fixed["reference"], **measured["reference"]}}
        metric_specs[key] = {"value": float(measured["value"]), **fixed, **measured}
    training = dict(record["training"])
    for key, value in card["training"].items():
        if key == "selection" or isinstance(value, str):
            training.setdefault(key, value)

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp_model = tmp_meta = None
    try:
        fd, tmp_model = tempfile.mkstemp(prefix=".model-", suffix=".keras",
                                         dir=output_dir)
        os.close(fd)
        model.save(tmp_model, overwrite=True)
        commands = train_command(card["name"], epochs=training["epochs"],
                                 seed=training["seed"])
        metadata = {
            "format_version": 1,
            "name": card["name"],
            "description": card["description"],
            "architecture": card.get("architecture"),
            "dataset": card["dataset"],
            "metrics": metric_specs,
            "training": training,
            "model_file": MODEL_FILENAME,
            "sha256": sha256_file(tmp_model),
            "saved_compiled": bool(getattr(model, "compiled", False)),
            **({"loading": card["loading"]} if "loading" in card else {}),
            "train_command": commands[0],
            "train_command_python": commands[1],
            "library_versions": library_versions(),
            "saved_at": datetime.datetime.now(datetime.timezone.utc)
            .replace(microsecond=0).isoformat(),
            **({"notes": card["notes"]} if "notes" in card else {}),
        }
        fd, tmp_meta = tempfile.mkstemp(prefix=".metadata-", suffix=".json",
                                        dir=output_dir)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(metadata, f, indent=2)
            f.write("\n")
        for tmp in (tmp_model, tmp_meta):
            os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; zoo files are shared
        os.replace(tmp_model, output_dir / MODEL_FILENAME)
        os.replace(tmp_meta, output_dir / METADATA_FILENAME)
    finally:
        for tmp in (tmp_model, tmp_meta):
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
    return metadata
