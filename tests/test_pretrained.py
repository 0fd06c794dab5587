"""ResNet50 against Keras' own: the same features with Keras' weights copied
in (SPEC 5.2), and init_weights, which starts a run's trunk from Keras'
ImageNet weights file (trainer/pretrained.py).

No download: the weights file is written here from a
keras.applications.ResNet50(weights=None) in the layout of the published
one (Keras 2's legacy HDF5: a group per layer, `conv1_conv/conv1_conv/kernel:0`),
and Keras' own legacy loader reads it back. Keras runs eagerly inside
`context.eager_mode()`; the project's graphs run as main.py runs them.
"""
import functools
import types

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.legacy.saving import legacy_h5_format
from tensorflow.python.eager import context

import constant
from Model import network
from trainer import architecture, pretrained, settings

v1 = tf.compat.v1
FEATURE_SIZES = (64, 224)


def make_config(*args, **overrides):
    return settings.load_config(list(args), base=dict(constant.config, **overrides))


# --- Keras' ResNet50 and its weights file ---------------------------------------------

def randomise(model, seed=0):
    """Batch-norm statistics and conv biases drawn at random (Keras starts
    them at 0 and 1, which would hide a misplaced mean or bias)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.2, 0.5, n), rng.normal(0, 0.1, n),
                               rng.normal(0, 0.2, n), rng.uniform(0.5, 2.0, n)])
        elif isinstance(layer, keras.layers.Conv2D):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape)])


@functools.lru_cache(maxsize=None)
def keras_resnet(seed=0):
    """keras.applications.ResNet50, no top, average-pooled features, any
    image size, its statistics randomised."""
    with context.eager_mode():
        keras.utils.set_random_seed(seed)
        model = keras.applications.ResNet50(weights=None, include_top=False, pooling='avg',
                                            input_shape=(None, None, 3))
        randomise(model, seed)
    return model


def keras_features(model, images):
    with context.eager_mode():
        return model(images, training=False).numpy()


def write_keras_h5(model, path):
    """The model's weights in the layout of Keras' published
    resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 (Keras 2's
    save_weights): root attributes layer_names (every layer), backend and
    keras_version; per layer a group with attribute weight_names
    ('conv1_conv/kernel:0', ...) and a dataset at that path inside it."""
    with context.eager_mode(), h5py.File(path, 'w') as f:
        f.attrs['layer_names'] = [layer.name.encode() for layer in model.layers]
        f.attrs['backend'] = b'tensorflow'
        f.attrs['keras_version'] = b'2.2.4'
        for layer in model.layers:
            group = f.create_group(layer.name)
            names = [f'{w.path}:0'.encode() for w in layer.weights]
            group.attrs['weight_names'] = names
            for name, value in zip(names, layer.get_weights()):
                group.create_dataset(name.decode(), data=value)
    return path


@pytest.fixture(scope='module')
def weights_file(tmp_path_factory):
    return str(write_keras_h5(keras_resnet(), tmp_path_factory.mktemp('keras') / pretrained.KERAS_FILE))


@pytest.fixture(scope='module', autouse=True)
def _free_cached_models():
    yield
    keras_resnet.cache_clear()
    project_resnet.cache_clear()


def test_the_written_file_is_what_keras_own_legacy_loader_reads(weights_file):
    """Keras' loaders (by layer order, and by name) take the file into a
    fresh ResNet50: the layout is Keras'."""
    source = keras_resnet()
    with context.eager_mode(), h5py.File(weights_file, 'r') as f:
        for load in (legacy_h5_format.load_weights_from_hdf5_group,
                     legacy_h5_format.load_weights_from_hdf5_group_by_name):
            fresh = keras.applications.ResNet50(weights=None, include_top=False)
            load(f, fresh)
            for mine, theirs in zip(fresh.weights, source.weights):
                assert mine.path == theirs.path
                np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


# --- the features: project's network against Keras' ------------------------------------

@functools.lru_cache(maxsize=None)
def project_resnet():
    """Model.resnet50 (3 channels, any image size) in inference mode, and
    its average-pooled features."""
    graph = tf.Graph()
    with graph.as_default():
        cfg = make_config(model='resnet50', dataset_name='cifar_32')
        images = v1.placeholder(tf.float32, [None, None, None, 3])
        with v1.variable_scope('resnet50') as scope:
            network(images, False, architecture.from_config(cfg))
        prefix = scope.name + '/'
        variables = {v.op.name[len(prefix):]: v for v in v1.global_variables()}
    return types.SimpleNamespace(graph=graph, images=images, variables=variables,
                                 features=graph.get_tensor_by_name(prefix + 'global_pool:0'))


def largest_relative_differences(values):
    """{image size: max |ours - Keras'| / max |Keras'|} of the features of
    random images, with `values` (Keras' weights as the project names them)
    in the project's network."""
    net, model = project_resnet(), keras_resnet()
    found = {}
    with v1.Session(graph=net.graph) as session:
        pretrained.assign(session, [(net.variables[name], value) for name, value in values.items()])
        for size in FEATURE_SIZES:
            images = np.random.default_rng(size).normal(0, 50, (2, size, size, 3)).astype(np.float32)
            ours = session.run(net.features, {net.images: images})
            theirs = keras_features(model, images)
            found[size] = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
    return found


def test_resnet50_gives_keras_features_with_keras_weights(weights_file):
    """SPEC 5.2: the stem pads as Keras' (3, then a 'valid' 7x7/2 conv; 1,
    then a 'valid' 3x3/2 pool), so Keras' weights give Keras' features, at
    even sizes too (TF's 'SAME' padded 2 before and 3 after there)."""
    found = largest_relative_differences(pretrained.read_trunk(weights_file))
    print('largest relative difference of the features, by image size:', found)
    assert all(difference < 1e-5 for difference in found.values()), found
