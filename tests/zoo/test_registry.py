"""keras_gmm.zoo._registry: the pinned hashes, and listing/reading without
TensorFlow."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import keras_gmm.zoo
from keras_gmm.zoo import _files, _registry

PACKAGE_DIR = Path(keras_gmm.zoo.__file__).resolve().parents[1]


@pytest.mark.parametrize("name", _registry.names())
def test_pin_matches_the_shipped_file_and_its_metadata(name):
    pinned = _registry.pinned_sha256(name)
    assert _files.sha256_file(keras_gmm.zoo.model_dir(name) / "model.keras") == pinned
    assert keras_gmm.zoo.info(name)["sha256"] == pinned


def test_unknown_names():
    for call in (_registry.pinned_sha256, _registry.get_recipe, keras_gmm.zoo.verify):
        with pytest.raises(keras_gmm.zoo.UnknownModelError, match="Known models: "):
            call("nope")
    with pytest.raises(AttributeError):
        keras_gmm.zoo.nope  # noqa: B018


# The zoo package alone (its parent package's face stubbed out, as the
# keras-gmm command's lazy face leaves it): list, info and verify import
# neither TensorFlow, Keras nor a recipe.
NO_TENSORFLOW = """
import json, sys, types
package = types.ModuleType("keras_gmm")
package.__path__ = [sys.argv[1]]
sys.modules["keras_gmm"] = package
import keras_gmm.zoo as zoo
names = zoo.list_models()
infos = [zoo.info(name)["name"] for name in names]
paths = [str(zoo.verify(name)) for name in names]
heavy = sorted(m for m in sys.modules if m.split(".")[0] in
               ("tensorflow", "keras", "tensorflow_probability")
               or m.startswith("keras_gmm.zoo.") and m.split(".")[2][0] != "_")
print(json.dumps({"names": names, "infos": infos, "heavy": heavy}))
"""


def test_list_info_verify_import_no_tensorflow():
    env = {k: v for k, v in os.environ.items() if k != _files.ZOO_DIR_ENV}
    out = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, str(PACKAGE_DIR)],
                         capture_output=True, text=True, timeout=60, env=env,
                         check=True)
    report = json.loads(out.stdout)
    assert report["names"] == report["infos"] == _registry.names()
    assert report["heavy"] == []
