"""keras_gmm: Gaussian mixture models for Keras 3, on TensorFlow Probability.

The public API:

- :class:`MixtureDensityHead` and :class:`GMMNegLogLik`: mixture density
  networks trained by negative log-likelihood.
- :class:`GaussianMixtureEM` and :class:`BayesianGaussianMixtureEM`:
  mixtures fitted by (variational) EM, compiled, streamed and distributed;
  :mod:`keras_gmm.sklearn` wraps them as scikit-learn estimators.
- :class:`GMMConv2D`: convolutions whose kernels are Gaussian mixtures.
- :class:`GMMPriorSampling`: a VAE latent with a learnable Gaussian-mixture
  prior (VaDE): deep clustering and generation.
- :class:`GMMEnergy`: DAGMM's sample energy -log p(z) under a mixture
  estimated from soft memberships (deep anomaly detection).
- :class:`GaussianMixtureClassifier` and :class:`GMMClassificationLoss`: a
  classifier whose features are one Gaussian per class, trained with the
  large-margin Gaussian mixture (L-GM) loss; the feature likelihood is an
  out-of-distribution score.
- :class:`GMMRegularizer`: a learned Gaussian-mixture prior on weights (soft
  weight sharing); :mod:`keras_gmm.regularizers` quantizes and reports the
  compression.
- :func:`export_saved_model`: SavedModel export in the TF Serving layout.
- :mod:`keras_gmm.mixture`: the mixture parameterization every layer shares.
- :mod:`keras_gmm.metrics`: clustering scores (Hungarian accuracy, NMI).
- :mod:`keras_gmm.zoo`: pretrained models; :mod:`keras_gmm.datasets`: the
  embedded data they are trained and evaluated on.

What ``import keras_gmm`` imports
---------------------------------
**In a Python program (always, unless the program is the ``keras-gmm``
command): everything but the zoo, at once.** Every public layer, loss and
regularizer is then registered with Keras, so a ``.keras`` file that uses
them loads with ``keras.saving.load_model(path)`` and no ``custom_objects``.
This imports Keras, hence TensorFlow (a few seconds).

**The zoo is always imported on first use** (PEP 562 module ``__getattr__``):
``keras_gmm.zoo`` (or ``from keras_gmm import zoo``) imports it then. Its
registry and metadata need no TensorFlow; the recipes import the layers they
use themselves, so no module below the package face imports it back.

**In the ``keras-gmm`` command nothing is imported up front**, so that
``keras-gmm --help``, ``zoo list`` and ``zoo info`` answer without loading
TensorFlow. The command is recognised from the program being run, never from
the environment (nothing leaks into child processes or later programs):

- the console script pip generates: ``sys.argv[0]`` is its path (``.../bin/
  keras-gmm``; ``keras-gmm.exe`` or ``keras-gmm-script.py`` on Windows)
  while it imports the package;
- ``python -m keras_gmm.cli``: ``sys.argv[0]`` is ``"-m"`` while the package
  is imported and ``sys.orig_argv`` names ``keras_gmm.cli``.

In that mode the first access of a public class or function
(``keras_gmm.GaussianMixtureEM``, ``keras_gmm.export_saved_model``, ...)
imports the whole API, exactly as the eager mode does (every layer then
registered), and a public submodule (``keras_gmm.mixture``, ...) is imported
on its first access, as ``import keras_gmm.mixture`` would. The command calls
:func:`_import_public_api` itself before any subcommand that loads a model.
A script of yours that happens to be named ``keras-gmm`` gets the lazy mode:
touch any public name (or call ``keras_gmm._import_public_api()``) before
loading a ``.keras`` file there.
"""

import importlib
import os
import sys
from typing import TYPE_CHECKING

__version__ = "0.2.0"

__all__ = [
    "BayesianGaussianMixtureEM",
    "GMMClassificationLoss",
    "GMMConv2D",
    "GMMEnergy",
    "GMMNegLogLik",
    "GMMPriorSampling",
    "GMMRegularizer",
    "GaussianMixtureClassifier",
    "GaussianMixtureEM",
    "MixtureDensityHead",
    "datasets",
    "export_saved_model",
    "metrics",
    "mixture",
    "regularizers",
    "ops",
    "zoo",
    "__version__",
]

#: public class or function -> the module that defines it.
_PUBLIC_OBJECTS = {
    "BayesianGaussianMixtureEM": "keras_gmm.layers",
    "GMMConv2D": "keras_gmm.layers",
    "GMMEnergy": "keras_gmm.layers",
    "GMMPriorSampling": "keras_gmm.layers",
    "GaussianMixtureClassifier": "keras_gmm.layers",
    "GaussianMixtureEM": "keras_gmm.layers",
    "MixtureDensityHead": "keras_gmm.layers",
    "GMMClassificationLoss": "keras_gmm.losses",
    "GMMNegLogLik": "keras_gmm.losses",
    "GMMRegularizer": "keras_gmm.regularizers",
    "export_saved_model": "keras_gmm.export",
}
#: public submodules imported by the eager mode.
_EAGER_SUBMODULES = ("datasets", "metrics", "mixture", "ops", "regularizers")
#: public submodules always imported on first access.
_LAZY_SUBMODULES = ("zoo",)

#: the console script's name (``[project.scripts]`` in pyproject.toml).
_COMMAND_NAME = "keras-gmm"
_COMMAND_MODULE = "keras_gmm.cli"
_SCRIPT_SUFFIXES = (".exe", "-script.pyw", "-script.py")


def _module_run_with_dash_m(orig_argv):
    """The module named after ``-m`` in ``orig_argv`` (None if there is none)."""
    for i, arg in enumerate(orig_argv[1:], start=1):
        if not arg.startswith("-") or arg.startswith("--"):
            continue
        if arg.startswith("-m") and len(arg) > 2:
            return arg[2:]  # -mkeras_gmm.cli
        if arg.endswith("m") and i + 1 < len(orig_argv):
            return orig_argv[i + 1]  # -m keras_gmm.cli, -Im keras_gmm.cli
    return None


def _is_command(argv=None, orig_argv=None):
    """Whether the running program is the ``keras-gmm`` command (see the
    module docstring); ``argv``/``orig_argv`` default to ``sys``'s."""
    argv = sys.argv if argv is None else argv
    if not argv:  # embedded interpreters may have no argv
        return False
    program = os.path.basename(str(argv[0])).lower()
    for suffix in _SCRIPT_SUFFIXES:
        if program.endswith(suffix):
            program = program[: -len(suffix)]
            break
    if program == _COMMAND_NAME:
        return True
    if argv[0] == "-m":  # python -m ...: the module is being located
        orig_argv = getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv
        return _module_run_with_dash_m(orig_argv) == _COMMAND_MODULE
    return False


def _import_public_api():
    """Import every public name (registering every layer, loss and
    regularizer with Keras); idempotent. Raises ImportError off the
    TensorFlow backend."""
    import keras

    if keras.backend.backend() != "tensorflow":  # pragma: no cover - env guard
        raise ImportError(
            "keras_gmm runs on the TensorFlow backend of Keras 3 (it builds on "
            "TensorFlow Probability); found KERAS_BACKEND="
            f"{keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow."
        )
    namespace = globals()
    for name in _EAGER_SUBMODULES:
        namespace[name] = importlib.import_module(f"{__name__}.{name}")
    for name, module in _PUBLIC_OBJECTS.items():
        namespace[name] = getattr(importlib.import_module(module), name)


def __getattr__(name):
    if name in _LAZY_SUBMODULES or name in _EAGER_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _PUBLIC_OBJECTS:
        _import_public_api()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static analysers and IDEs see the names
    from keras_gmm import datasets, metrics, mixture, ops, regularizers, zoo
    from keras_gmm.export import export_saved_model
    from keras_gmm.layers import (
        BayesianGaussianMixtureEM,
        GaussianMixtureClassifier,
        GaussianMixtureEM,
        GMMConv2D,
        GMMEnergy,
        GMMPriorSampling,
        MixtureDensityHead,
    )
    from keras_gmm.losses import GMMClassificationLoss, GMMNegLogLik
    from keras_gmm.regularizers import GMMRegularizer
elif not _is_command():
    _import_public_api()
