"""Test configuration shared by the whole suite.

Two logical CPU devices are configured before TensorFlow initialises its
devices, so tests can run ``tf.distribute.MirroredStrategy`` on one machine.
Smoke tests of the example and benchmark scripts get their subprocess runs
from the ``script_run`` fixture, tests with other subprocess work (README
blocks, scikit-learn's suites, the wheel install) theirs from
``background_result``; both run in the background of the in-process tests
(see tests/script_utils.py).
"""

import functools
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tests.script_utils import REPO_ROOT, ScriptPool  # noqa: E402

#: Set by pytest-xdist in its worker processes ("gw0", "gw1", ...).
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if XDIST_WORKER is not None:
    # One test process per core (pyproject's ``-n``): each runs its ops on one
    # thread. Two processes whose thread pools each span both cores spent a
    # third more CPU time in all (33 against 22 CPU-minutes for the suite),
    # their idle threads spinning on the cores the other process needed. Two
    # inter-op threads stay, for the collectives between this process's two
    # logical devices (MirroredStrategy tests).
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(2)

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


#: Test files that run tf.distribute strategies in this process (their text
#: names one). Under pytest-xdist they share one worker, in their usual order:
#: spread over two workers in another combination, a Keras fit under
#: MirroredStrategy failed with "Collective ops is aborted by: Collective
#: instance 100 expected ... data_type 2 but got ... data_type 1" (keys of an
#: earlier strategy's collectives met in the same process).
_STRATEGY_WORDS = ("tf.distribute", "MirroredStrategy")
#: A file whose strategies all run in subprocesses says so with this line
#: (it then is a unit of its own, balanced like any other file).
_SUBPROCESS_STRATEGIES = "# xdist: tf.distribute only in subprocesses"


@functools.cache
def _xdist_group(path):
    """The xdist work unit of the test file at ``path`` (relative to the
    repository root): "tf-distribute" for the files that run strategies, else
    the file itself."""
    text = (REPO_ROOT / path).read_text()
    if _SUBPROCESS_STRATEGIES not in text and any(
            word in text for word in _STRATEGY_WORDS):
        return "tf-distribute"
    return Path(path).as_posix()


class _FileGroupScheduling:
    """Makes pytest-xdist's scheduler for ``--dist loadfile`` (pyproject's
    addopts): each test file is one work unit, run in order on one worker
    (module fixtures are built once), and the files that run tf.distribute
    strategies together form one unit. The grouping is the scheduler's own
    rather than ``xdist_group`` marks: pytest 9 ignores the node-id suffix
    through which pytest-xdist 3.8 passes those marks from a worker to the
    controller, so marked groups were spread over both workers."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_make_scheduler(self, config, log):
        if config.getvalue("dist") != "loadfile":
            return None  # another --dist asked for on the command line
        from xdist.scheduler import LoadFileScheduling

        class FileGroups(LoadFileScheduling):
            def _split_scope(self, nodeid):
                return _xdist_group(nodeid.split("::", 1)[0])

        return FileGroups(config, log)


def pytest_configure(config):
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_FileGroupScheduling(), "keras-gmm-file-groups")
    config.addinivalue_line(
        "markers",
        "script(args): the test's script run (``python *args``, ``{out}`` its "
        "output folder), started with the other marked tests' runs, two at a "
        "time, and read through the script_run fixture",
    )
    config.addinivalue_line(
        "markers",
        "background(job, *args): the test's subprocess work, ``job(out, *args)`` "
        "(``out`` its own empty folder), started with the script runs and read "
        "through the background_result fixture",
    )


@pytest.fixture(scope="session")
def _script_pool(request, tmp_path_factory):
    pool = ScriptPool(request.session.items,
                      lambda name: tmp_path_factory.mktemp(name[:30]),
                      lazy=XDIST_WORKER is not None)
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


@pytest.fixture
def background_result(request, _script_pool):
    """What this test's ``@pytest.mark.background`` job returned (its
    exception is raised here)."""
    return _script_pool.background_result(request.node.nodeid)
