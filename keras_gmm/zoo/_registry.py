"""The zoo's registry: model name -> recipe module.

Adding a zoo model is one entry in :data:`REGISTRY` plus its recipe module
(``keras_gmm/zoo/<name>.py``) and its files (``saved_models/<name>/``).

A recipe module defines:

- ``NAME``, ``DESCRIPTION``, ``ARCHITECTURE`` (str);
- ``DATASET``: dict naming the :mod:`keras_gmm.datasets` function, the splits
  and their arguments (recorded in ``metadata.json``);
- ``METRICS``: ``{metric: {"unit", "split", "meaning", "tolerance", ...}}``,
  the held-out metrics :func:`evaluate` returns (``tolerance`` is the absolute
  difference accepted when a recorded value is reproduced);
- ``DEFAULTS``: the default training settings (at least ``seed`` and
  ``epochs``);
- ``build(seed=...)`` -> an untrained ``keras.Model`` (compiled with its
  loss when it is trained by gradient descent; a model fitted by EM has no
  optimizer or loss and is not compiled);
- ``train(output_dir, seed=..., epochs=..., verbose=0)`` -> metadata dict,
  writing the files through :func:`keras_gmm.zoo._files.save_trained_model`;
- ``evaluate(model)`` -> ``{metric: float}`` on the recorded held-out split;
- ``example_inputs(n)`` -> a few held-out model inputs (export checks).

Recipe modules are imported lazily, on first use.
"""

import importlib

from keras_gmm.zoo._files import ZooError

__all__ = ["REGISTRY", "UnknownModelError", "check_name", "get_recipe", "names"]

#: name -> recipe module (imported on first use).
REGISTRY = {
    "dagmm_breast_cancer": "keras_gmm.zoo.dagmm_breast_cancer",
    "em_digits": "keras_gmm.zoo.em_digits",
    "gmmconv_digits": "keras_gmm.zoo.gmmconv_digits",
    "mdn_inverse_sine": "keras_gmm.zoo.mdn_inverse_sine",
    "soft_weight_sharing_digits": "keras_gmm.zoo.soft_weight_sharing_digits",
    "vade_digits": "keras_gmm.zoo.vade_digits",
}


class UnknownModelError(ZooError, ValueError):
    """A name that is not in the zoo's registry."""


def names():
    """The registered zoo model names, sorted."""
    return sorted(REGISTRY)


def check_name(name):
    """Return ``name`` if registered, else raise :class:`UnknownModelError`
    listing the known names."""
    if not isinstance(name, str) or name not in REGISTRY:
        raise UnknownModelError(
            f"Unknown zoo model {name!r}. Known models: {', '.join(names())}."
        )
    return name


def get_recipe(name):
    """The recipe module of zoo model ``name``."""
    return importlib.import_module(REGISTRY[check_name(name)])
