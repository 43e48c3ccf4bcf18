"""Run exported SavedModels where keras_gmm and TFP cannot be imported.

A SavedModel written by :func:`keras_gmm.export_saved_model` must serve in
plain TensorFlow (TF Serving has neither keras_gmm nor TensorFlow
Probability). :func:`run_tf_only` checks that: it starts a fresh Python
process whose import system refuses ``keras_gmm`` and
``tensorflow_probability`` (and their submodules), asserts there that both
imports fail, loads each SavedModel with ``tf.saved_model.load``, calls the
requested signatures and sends their outputs back as NumPy arrays.

Each process pays TensorFlow's start-up (several seconds), so batch every
call a test module needs into one :func:`run_tf_only` call, e.g. from a
module-scoped fixture.

Example:

```python
path = keras_gmm.export_saved_model(model, tmp_path / "export")
[out] = run_tf_only([(path, "serving_default", {"x": x})])
np.testing.assert_allclose(out["mdn"], model(x), rtol=1e-5)
```
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

__all__ = [
    "BLOCKED_MODULES", "isolated_export_registry", "run_tf_only", "tf_only_outputs"
]

#: Packages the serving process must not be able to import.
BLOCKED_MODULES = ("keras_gmm", "tensorflow_probability")

_SCRIPT = r"""
import importlib.abc, json, sys

BLOCKED = tuple(json.loads(sys.argv[2]))


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"{name} is blocked in this TF-only process")
        return None


sys.meta_path.insert(0, _Blocker())
for name in BLOCKED:
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise AssertionError(f"{name} could be imported in the TF-only process")

import numpy as np
import tensorflow as tf

work = sys.argv[1]
with open(f"{work}/requests.json") as f:
    requests = json.load(f)
arrays = np.load(f"{work}/inputs.npz")
loaded, results = {}, {}
for i, (path, signature, names) in enumerate(requests):
    if path not in loaded:
        loaded[path] = tf.saved_model.load(path)
    fn = loaded[path].signatures[signature]
    outputs = fn(**{n: tf.constant(arrays[f"{i}/{n}"]) for n in names})
    for key, value in outputs.items():
        results[f"{i}/{key}"] = value.numpy()
leaked = [m for m in sys.modules if m.split(".")[0] in BLOCKED]
assert not leaked, f"blocked modules were imported: {leaked}"
np.savez(f"{work}/outputs.npz", **results)
"""


def run_tf_only(requests, blocked=BLOCKED_MODULES, timeout=300):
    """Call SavedModel signatures in a process without keras_gmm and TFP.

    Args:
        requests: sequence of ``(saved_model_dir, signature_name, inputs)``;
            ``inputs`` maps the signature's input names to array-likes (cast
            them to the signature's dtypes beforehand, e.g. float32, int64).
        blocked: top-level package names the process must fail to import.
        timeout: seconds before the process is killed.

    Returns:
        A list with, per request in order, ``{output name: np.ndarray}``.

    Raises:
        AssertionError: when the process fails (its stderr is included).
    """
    requests = list(requests)
    with tempfile.TemporaryDirectory() as work:
        manifest, arrays = [], {}
        for i, (path, signature, inputs) in enumerate(requests):
            manifest.append([os.fspath(path), signature, list(inputs)])
            for name, value in inputs.items():
                arrays[f"{i}/{name}"] = np.asarray(value)
        with open(os.path.join(work, "requests.json"), "w") as f:
            json.dump(manifest, f)
        np.savez(os.path.join(work, "inputs.npz"), **arrays)
        # Put the package on the path, so that only the blocker stops it.
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=path)
        proc = subprocess.run(
            [sys.executable, "-c", _SCRIPT, work, json.dumps(list(blocked))],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=work,
        )
        if proc.returncode != 0:
            raise AssertionError(
                f"The TF-only process failed (exit {proc.returncode}):\n"
                f"{proc.stderr[-6000:]}"
            )
        with np.load(os.path.join(work, "outputs.npz")) as data:
            results = [{} for _ in requests]
            for key in data.files:
                index, name = key.split("/", 1)
                results[int(index)][name] = data[key]
    return results


def tf_only_outputs(saved_model_dir, signature, inputs):
    """One signature call through :func:`run_tf_only`: ``{name: array}``."""
    return run_tf_only([(saved_model_dir, signature, inputs)])[0]


def isolated_export_registry(monkeypatch):
    """Let a test register export providers/checks without leaking them:
    the registry is a copy for the test's duration (pytest's ``monkeypatch``
    restores the original)."""
    from keras_gmm.export import _core

    monkeypatch.setattr(_core, "_REGISTRY", dict(_core._REGISTRY))
