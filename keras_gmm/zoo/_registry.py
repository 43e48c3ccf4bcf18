"""The zoo's registry: each model's name and the sha256 of its shipped file.

Zoo model ``name`` is trained by the recipe module ``keras_gmm.zoo.<name>``
(imported on first use, never by :func:`names` or :func:`pinned_sha256`) and
shipped as ``saved_models/<name>/``. Its ``model.keras`` is loaded only if its
sha256 is the one pinned here and in its ``metadata.json``: retraining a
shipped model in place means updating its pin.

A recipe module defines ``DEFAULTS`` (the default training options, at least
``seed`` and ``epochs``), ``build(seed=...)`` (the untrained model),
``train(seed=..., epochs=..., verbose=0, **options) -> (model, record)``
(``record``: ``{"metrics": {key: value or {"value": ..., ...}}, "training":
{...}}``, what this run set and measured), ``evaluate(model) -> {metric:
float}`` on the recorded held-out split and ``example_inputs(n)``.
"""

import importlib

from keras_gmm.zoo._files import ZooError

__all__ = ["REGISTRY", "UnknownModelError", "check_name", "get_recipe", "names",
           "pinned_sha256"]

#: name -> sha256 of the shipped ``saved_models/<name>/model.keras``.
REGISTRY = {
    "dagmm_breast_cancer":
        "3ccb09cff05b3cc3fb23fe5286479a45b7e11c9e7bc11ca6c41d05392c93fff8",
    "dagmm_mnist": "5b94075c574de17a9393c1587f7a526535d47473e7d1f2b1c625f3079967e4a9",
    "em_digits": "aafa9d2c7c81da4db84e0ba84056199ed4af1aa3bd23601a859b2cc7c357db60",
    "gmmconv_digits":
        "30bd235fdc86b5a0b8d1aa0f97214cc4e2bf6db810ff2f9e3efff928245cbd5c",
    "lgm_cnn_mnist": "ccd78c02b0e39b7850d99a627ed6005d7bae8ced07d618d795d77f0bcaa9fd87",
    "mdn_inverse_sine":
        "0ade100a21c181a751360d05c19ea3c94c16bfadbde92e1297a187bd77081d7a",
    "soft_weight_sharing_digits":
        "a08267ddc89a5ad232e70b429490f640b9c3ed5cc2e5b49b2dffd4922c9b69b7",
    "soft_weight_sharing_mnist":
        "c940cf9aac25a3add270d4867bda1dabd13003314dfe556f674845633972b1c2",
    "vade_digits": "f7fd48ee9148cff66f288eb0b82d96ad828b7d475e9e6d04a403519b8d208d4a",
    "vade_mnist": "54836691ca4a476b628e96125ba92880c2deb08a563dfc357d0da0bf7b6652db",
}


class UnknownModelError(ZooError, ValueError):
    """A name that is not in the zoo's registry."""


def names():
    """The registered zoo model names, sorted."""
    return sorted(REGISTRY)


def check_name(name):
    """``name`` if registered, else :class:`UnknownModelError` listing the names."""
    if not isinstance(name, str) or name not in REGISTRY:
        raise UnknownModelError(
            f"Unknown zoo model {name!r}. Known models: {', '.join(names())}."
        )
    return name


def pinned_sha256(name):
    """The sha256 of zoo model ``name``'s shipped ``model.keras``."""
    return REGISTRY[check_name(name)]


def get_recipe(name):
    """The recipe module of zoo model ``name`` (imports TensorFlow)."""
    return importlib.import_module(f"keras_gmm.zoo.{check_name(name)}")
