"""Test configuration shared by the whole suite.

Two logical CPU devices are configured before TensorFlow initialises its
devices, so tests can run ``tf.distribute.MirroredStrategy`` on one machine.
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
