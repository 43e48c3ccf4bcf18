"""The one doctest runner: every docstring example of the package runs.

Each module of ``keras_gmm`` is collected with pkgutil (the zoo's recipes
included) and its docstring examples are run with ELLIPSIS and
NORMALIZE_WHITESPACE; a module whose examples fail names itself in the
failure. The modules that must have examples (every public layer, loss,
regularizer and the validation and covariance modules) are checked to have
at least one, so an example cannot silently disappear.
"""

import doctest
import importlib
import pkgutil
import tempfile

import pytest

import keras_gmm

_MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(keras_gmm.__path__, prefix="keras_gmm.")
)

# Modules whose public classes promise "an Example: that runs" (DESIGN.md).
_MUST_HAVE_EXAMPLES = {
    "keras_gmm._validation",
    "keras_gmm.ops.covariance",
    "keras_gmm.ops.em_driver",
    "keras_gmm.ops.bayesian",
    "keras_gmm.ops.init",
    "keras_gmm.mixture",
    "keras_gmm.metrics",
    "keras_gmm.export._core",
    "keras_gmm.losses",
    "keras_gmm.layers.gaussian_mixture_classifier",
    "keras_gmm.layers.bayesian_gaussian_mixture_em",
    "keras_gmm.layers.gaussian_mixture_em",
    "keras_gmm.layers.gmm_conv2d",
    "keras_gmm.layers.gmm_energy",
    "keras_gmm.layers.gmm_prior_sampling",
    "keras_gmm.layers.mixture_density_head",
    "keras_gmm.regularizers",
    "keras_gmm.sklearn",
}


@pytest.mark.parametrize("name", _MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    # examples that write files (exports, plots) write them here
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    tests = [
        t for t in finder.find(module, name, globs=dict(vars(module)))
        if t.examples
    ]
    if name in _MUST_HAVE_EXAMPLES:
        assert tests, f"{name} lost its docstring examples"
    for test in tests:
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} docstring example(s) of {name} failed"


def test_the_runner_sees_every_package_module():
    assert set(_MUST_HAVE_EXAMPLES) <= set(_MODULES)
    assert "keras_gmm.ops.covariance" in _MODULES
