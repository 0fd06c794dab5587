"""Shared test set-up: graph mode, as in main.py, and a fresh graph per test."""
from foundation import tf_quiet

# pytest-xdist's workers print what fd 2 gets at start-up, TensorFlow's C++ notices too
tf_quiet.import_tensorflow_quietly()

import pytest
import tensorflow as tf

from foundation import machine

tf.compat.v1.disable_eager_execution()


def pytest_collection_modifyitems(config, items):
    """Tests marked nchw run NCHW kernels on the CPU: skipped where it has none
    (TensorFlow's plain CPU kernels take NHWC only; oneDNN's take both)."""
    nchw = [item for item in items if item.get_closest_marker('nchw')]
    if nchw and not machine.cpu_runs_nchw():
        skip = pytest.mark.skip(reason="this CPU's TensorFlow kernels run NHWC only")
        for item in nchw:
            item.add_marker(skip)


@pytest.fixture
def graph():
    """A new default graph for the test, so tests never share variables."""
    g = tf.Graph()
    with g.as_default():
        yield g


@pytest.fixture
def session(graph):
    with tf.compat.v1.Session(graph=graph) as s:
        yield s


@pytest.fixture
def job(tmp_path):
    """Makes multi-worker jobs (tests.fixtures.Job); kills what is left of them at the end."""
    jobs = []

    def make(args):
        from tests.fixtures import Job
        jobs.append(Job(tmp_path, args))
        return jobs[-1]
    yield make
    for j in jobs:
        j.kill_all()
