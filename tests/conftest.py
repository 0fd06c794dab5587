"""Shared test set-up: graph mode, as in main.py, and a fresh graph per test."""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.compat.v1.disable_eager_execution()


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
