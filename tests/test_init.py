"""The package face: eager registration for ``import keras_gmm``, a lazy
zoo, and a lazy face inside the ``keras-gmm`` command."""

import pytest

import keras_gmm

PUBLIC_CLASSES = [
    "GMMConv2D", "GMMEnergy", "GMMNegLogLik", "GMMPriorSampling",
    "GMMRegularizer", "GaussianMixtureEM", "MixtureDensityHead",
]


EVERY_CLASS_REGISTERED = (
    f"names = {PUBLIC_CLASSES!r}\n"
    "missing = [n for n in names\n"
    "           if keras.saving.get_registered_object('keras_gmm>' + n) is None]\n"
    "assert missing == [], missing\n"
)

# Each runs in a fresh interpreter (``python -c CODE`` from the repository
# root, keras_gmm importable from the checkout): what an import registers or
# imports is only seen in a process that has not imported anything yet. The
# runs start with the other script runs of the session (tests/script_utils.py).
IMPORT_REGISTERS = (
    "import sys, keras, keras_gmm\n"
    + EVERY_CLASS_REGISTERED
    + "assert 'keras_gmm.zoo' not in sys.modules\n"
    "assert keras_gmm.zoo.list_models()\n"  # the lazy zoo, on first access
    "assert 'keras_gmm.zoo' in sys.modules\n"
    "print('ok')\n"
)
COMMAND_MODE = (
    "import sys\n"
    "sys.argv[0] = '/somewhere/bin/keras-gmm'\n"
    "import keras_gmm\n"
    "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules\n"
    "assert keras_gmm.zoo.info('mdn_inverse_sine')['name']\n"
    "assert 'tensorflow' not in sys.modules, 'the zoo imported TensorFlow'\n"
    "layer = keras_gmm.GaussianMixtureEM\n"
    "import keras\n"
    + EVERY_CLASS_REGISTERED
    + "assert keras.saving.get_registered_object('keras_gmm>GaussianMixtureEM')"
    " is layer\n"
    "print('ok')\n"
)


@pytest.mark.script(["-c", IMPORT_REGISTERS])
def test_import_registers_every_layer_eagerly_and_not_the_zoo(script_run):
    assert script_run.stdout.strip() == "ok"


@pytest.mark.script(["-c", COMMAND_MODE])
def test_command_mode_is_lazy_and_resolves_the_whole_api_on_first_access(script_run):
    assert script_run.stdout.strip() == "ok"


@pytest.mark.parametrize(
    "argv, orig_argv, expected",
    [
        (["/usr/local/bin/keras-gmm", "zoo", "list"], None, True),
        (["keras-gmm"], None, True),
        (["/venv/Scripts/keras-gmm.exe"], None, True),
        (["/venv/Scripts/KERAS-GMM.EXE"], None, True),
        (["/venv/Scripts/keras-gmm-script.py"], None, True),
        (["-m"], ["python", "-m", "keras_gmm.cli", "zoo"], True),
        (["-m"], ["python", "-X", "importtime", "-m", "keras_gmm.cli"], True),
        (["-m"], ["python", "-mkeras_gmm.cli"], True),
        (["-m"], ["python", "-I", "-m", "keras_gmm.cli"], True),
        (["-m"], ["python", "-m", "pytest", "keras_gmm.cli"], False),
        (["-m"], ["python", "-m", "keras_gmm.cli_other"], False),
        (["/home/me/train.py"], None, False),
        (["/home/me/keras-gmm-tools"], None, False),
        (["-c"], ["python", "-c", "import keras_gmm"], False),
        ([""], None, False),
        ([], None, False),
    ],
)
def test_is_command(argv, orig_argv, expected):
    assert keras_gmm._is_command(argv, orig_argv or []) is expected


def test_public_names_resolve_and_are_listed():
    for name in keras_gmm.__all__:
        assert getattr(keras_gmm, name) is not None, name
    assert set(keras_gmm.__all__) <= set(dir(keras_gmm))
    import keras_gmm.zoo as zoo_module

    assert keras_gmm.zoo is zoo_module
    from keras_gmm import zoo

    assert zoo is zoo_module
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        keras_gmm.nope  # noqa: B018


def test_import_public_api_is_idempotent():
    before = keras_gmm.GaussianMixtureEM
    keras_gmm._import_public_api()
    assert keras_gmm.GaussianMixtureEM is before


def test_version_is_the_one_in_pyproject():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    declared = re.search(r'^version = "([^"]+)"', text, re.MULTILINE).group(1)
    assert keras_gmm.__version__ == declared
