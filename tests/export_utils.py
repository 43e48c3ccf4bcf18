"""Run exported SavedModels where keras_gmm and TFP cannot be imported.

A SavedModel written by :func:`keras_gmm.export_saved_model` must serve in
plain TensorFlow (TF Serving has neither keras_gmm nor TensorFlow
Probability). :func:`run_tf_only` checks that: it sends the requests to a
separate Python process whose import system refuses ``keras_gmm`` and
``tensorflow_probability`` (and their submodules), which asserts at start-up
that both imports fail, loads each SavedModel with ``tf.saved_model.load``,
calls the requested signatures, asserts that no blocked module got imported
and sends the outputs back as NumPy arrays.

TensorFlow's start-up takes several seconds, so the process is started once,
on first use, and serves every later call of the test session (it ends with
the session); a call that fails or times out stops it and the next call
starts a new one.

Example:

```python
path = keras_gmm.export_saved_model(model, tmp_path / "export")
[out] = run_tf_only([(path, "serving_default", {"x": x})])
np.testing.assert_allclose(out["mdn"], model(x), rtol=1e-5)
```
"""

import atexit
import json
import os
import selectors
import subprocess
import sys
import tempfile

import numpy as np

__all__ = [
    "BLOCKED_MODULES", "isolated_export_registry", "run_tf_only", "tf_only_outputs"
]

#: Packages the serving process must not be able to import.
BLOCKED_MODULES = ("keras_gmm", "tensorflow_probability")

# The serving process: refuses the blocked packages, asserts that it cannot
# import them, imports TensorFlow once, then serves requests until its stdin
# closes. Each request is a line naming a folder holding ``requests.json``
# and ``inputs.npz``; the process writes ``outputs.npz`` (or ``error.txt``,
# the traceback) there and answers ``done`` on its own channel (fd 3's
# duplicate of the original stdout; anything else printed goes to stderr).
_SERVER = r"""
import importlib.abc, json, os, sys, traceback

BLOCKED = tuple(json.loads(sys.argv[1]))
_reply = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)


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


def serve(work):
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


_reply.write("ready\n")
_reply.flush()
for line in sys.stdin:
    work = line.strip()
    try:
        serve(work)
    except BaseException:
        with open(f"{work}/error.txt", "w") as f:
            f.write(traceback.format_exc())
    _reply.write("done\n")
    _reply.flush()
"""


class _Server:
    """One TF-only process, started on first use and reused by every later
    :func:`run_tf_only` call of this test process (TensorFlow's start-up,
    several seconds, is paid once per session instead of once per call)."""

    def __init__(self, blocked):
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        # Put the package on the path, so that only the blocker stops it.
        path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=path)
        # closed in close()
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self._cwd = tempfile.TemporaryDirectory(prefix="tf_only_")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER, json.dumps(list(blocked))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            text=True, env=env, cwd=self._cwd.name,
        )
        self._reader = selectors.DefaultSelector()
        self._reader.register(self.proc.stdout, selectors.EVENT_READ)
        self._ready = False

    def _answer(self, timeout):
        """The server's next line, or an AssertionError (and the server
        stopped) when it dies or takes longer than ``timeout`` seconds."""
        if self._reader.select(timeout):
            line = self.proc.stdout.readline().strip()
            if line:
                return line
        stderr = self.close()
        raise AssertionError(
            f"The TF-only process failed (exit {self.proc.returncode}, no answer "
            f"within {timeout} s or it ended):\n{stderr}"
        )

    def request(self, work, timeout):
        if not self._ready:
            assert self._answer(timeout) == "ready"
            self._ready = True
        try:
            self.proc.stdin.write(work + "\n")
            self.proc.stdin.flush()
        except OSError:  # it died: _answer reports its stderr
            pass
        assert self._answer(timeout) == "done"

    def alive(self):
        return self.proc.poll() is None

    def close(self):
        """Stop the process and clean up; returns the tail of its stderr."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self._stderr.seek(0)
        stderr = self._stderr.read()[-6000:]
        self._reader.close()
        self._stderr.close()
        self._cwd.cleanup()
        return stderr


_SERVERS = {}


@atexit.register
def _close_servers():
    for server in _SERVERS.values():
        if server.alive():
            server.close()
    _SERVERS.clear()


def run_tf_only(requests, blocked=BLOCKED_MODULES, timeout=300):
    """Call SavedModel signatures in a process without keras_gmm and TFP.

    The process (one per ``blocked`` set, reused by later calls) asserts at
    start-up that the blocked packages cannot be imported, and after each call
    that none of them was imported by loading or running the SavedModels.

    Args:
        requests: sequence of ``(saved_model_dir, signature_name, inputs)``;
            ``inputs`` maps the signature's input names to array-likes (cast
            them to the signature's dtypes beforehand, e.g. float32, int64).
        blocked: top-level package names the process must fail to import.
        timeout: seconds before the process is killed.

    Returns:
        A list with, per request in order, ``{output name: np.ndarray}``.

    Raises:
        AssertionError: when the process fails (its stderr or the request's
        traceback is included).
    """
    requests = list(requests)
    key = tuple(blocked)
    if key not in _SERVERS or not _SERVERS[key].alive():
        _SERVERS[key] = _Server(key)
    with tempfile.TemporaryDirectory() as work:
        manifest, arrays = [], {}
        for i, (path, signature, inputs) in enumerate(requests):
            manifest.append([os.path.abspath(os.fspath(path)), signature, list(inputs)])
            for name, value in inputs.items():
                arrays[f"{i}/{name}"] = np.asarray(value)
        with open(os.path.join(work, "requests.json"), "w") as f:
            json.dump(manifest, f)
        np.savez(os.path.join(work, "inputs.npz"), **arrays)
        _SERVERS[key].request(work, timeout)
        error = os.path.join(work, "error.txt")
        if os.path.exists(error):
            with open(error) as f:
                raise AssertionError(f"The TF-only process failed:\n{f.read()[-6000:]}")
        with np.load(os.path.join(work, "outputs.npz")) as data:
            results = [{} for _ in requests]
            for key_ in data.files:
                index, name = key_.split("/", 1)
                results[int(index)][name] = data[key_]
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
