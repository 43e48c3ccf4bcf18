"""Test configuration shared by the whole suite.

Two logical CPU devices are configured before TensorFlow initialises its
devices, so tests can run ``tf.distribute.MirroredStrategy`` on one machine.
Smoke tests of the example and benchmark scripts get their subprocess runs
from the ``script_run`` fixture (see tests/script_utils.py).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0],
        [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
    )
except RuntimeError:  # devices already initialised (e.g. in a plugin)
    pass


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Each test starts from float32 policy and a fixed global seed."""
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(1234)
    yield
    keras.mixed_precision.set_global_policy("float32")


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "script(args): the test's script run (``python *args``, ``{out}`` its "
        "output folder), started with the other marked tests' runs, two at a "
        "time, and read through the script_run fixture",
    )


@pytest.fixture(scope="session")
def _script_pool(request, tmp_path_factory):
    from tests.script_utils import ScriptPool

    pool = ScriptPool(request.session.items,
                      lambda name: tmp_path_factory.mktemp(name[:30]))
    yield pool
    pool.close()


@pytest.fixture(scope="session", autouse=True)
def _scripts_start_with_the_session(_script_pool):
    """The marked script runs start with the session's first test, in the
    background of the in-process tests."""
    return _script_pool


@pytest.fixture
def script_run(request, _script_pool):
    """This test's script run (its ``@pytest.mark.script``): a ScriptRun with
    ``stdout`` (exit status 0 asserted) and its output folder ``out``."""
    return _script_pool.result(request.node.nodeid)
