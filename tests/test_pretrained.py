"""ResNet50 against Keras' own: the same features with Keras' weights copied
in (docs/models.md, ResNet50's stem), and init_weights, which starts a run's trunk from Keras'
ImageNet weights file (foundation/networks/pretrained.py).

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
import main
from foundation.data import loaders
from foundation.errors import ConfigError, DataError
from foundation.networks import architecture, pretrained
from Model import network
from trainer.config import settings
from trainer.runs import checkpoints, folder
from trainer.training import training_graph

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


@functools.cache
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
    """Keras' legacy loader, which ResNet50(weights='imagenet') uses on the
    published file, takes this one into a fresh ResNet50: Keras' layout."""
    source = keras_resnet()
    with context.eager_mode(), h5py.File(weights_file, 'r') as f:
        fresh = keras.applications.ResNet50(weights=None, include_top=False)
        legacy_h5_format.load_weights_from_hdf5_group(f, fresh)
        for mine, theirs in zip(fresh.weights, source.weights, strict=True):
            assert mine.path == theirs.path
            np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


# --- the features: project's network against Keras' ------------------------------------

@functools.cache
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
    """The stem pads as Keras' (3, then a 'valid' 7x7/2 conv; 1,
    then a 'valid' 3x3/2 pool), so Keras' weights give Keras' features, at
    even sizes too (TF's 'SAME' padded 2 before and 3 after there)."""
    found = largest_relative_differences(pretrained.read_trunk(weights_file))
    print('largest relative difference of the features, by image size:', found)
    assert all(difference < 1e-5 for difference in found.values()), found


# --- init_weights ---------------------------------------------------------------------

@pytest.mark.parametrize('channels', [3, 1])
def test_the_first_kernel_takes_the_projects_standardised_input(channels):
    """Keras' conv1 on BGR pixels less Caffe's means equals the fitted conv1
    on (x - mean) / std, RGB or gray (a gray pixel is B = G = R), once batch
    norm subtracts the fitted moving mean ('VALID': no border)."""
    rng = np.random.default_rng(channels)
    values = {pretrained.STEM_KERNEL: rng.normal(0, 0.1, (7, 7, 3, 4)).astype(np.float32),
              pretrained.STEM_MEAN: rng.normal(0, 1, 4).astype(np.float32)}
    mean, std = rng.uniform(20, 200, channels), rng.uniform(30, 80, channels)
    fitted = pretrained.fit_input(values, mean, std)
    pixels = rng.uniform(0, 255, (1, 12, 12, channels))
    bgr = np.broadcast_to(pixels, (1, 12, 12, 3))[..., ::-1] - pretrained.CAFFE_MEAN_BGR
    with tf.Graph().as_default(), v1.Session() as session:
        keras_side, ours = session.run([
            tf.nn.conv2d(bgr, values[pretrained.STEM_KERNEL].astype(np.float64), 1, 'VALID')
            - values[pretrained.STEM_MEAN],
            tf.nn.conv2d((pixels - mean) / std, fitted[pretrained.STEM_KERNEL].astype(np.float64),
                         1, 'VALID') - fitted[pretrained.STEM_MEAN]])
    assert fitted[pretrained.STEM_KERNEL].shape == (7, 7, channels, 4)
    np.testing.assert_allclose(ours, keras_side, rtol=1e-4, atol=1e-3)


def digits_network(cfg):
    """What folder.start_or_resume uses of a TrainingGraph, for the network
    alone (a third of a training graph's build time): the model's input and
    variables, the data, the progress and a saver."""
    graph = tf.Graph()
    with graph.as_default():
        data = loaders.load_digits(None, cfg['seed'], False)
        images = v1.placeholder(tf.float32, [None, *data.image_shape])
        with v1.variable_scope(cfg['model']) as scope:
            network(images, False, architecture.from_config(cfg))
        progress = training_graph.RunProgress()
        saver = v1.train.Saver()
    return types.SimpleNamespace(
        graph=graph, model=types.SimpleNamespace(X=images, variables_prefix=scope.name + '/'),
        source=types.SimpleNamespace(data=data), progress=progress, saver=saver)


def test_a_fresh_start_takes_the_trunk_and_a_resume_keeps_its_checkpoint(weights_file, tmp_path,
                                                                         capsys):
    """SE-ResNet50 on 1-channel digits: the trunk is the file's (the first
    kernel fitted to the input), the SE blocks and the head start fresh, and
    the console says so; resuming restores the checkpoint, not the file."""
    cfg = make_config(model='resnet50', use_se=True, dataset_name='digits',
                      datasets_root=str(tmp_path), init_weights=weights_file)
    run = folder.locate(cfg)
    run.built = digits_network(cfg)
    data = run.built.source.data
    expected = pretrained.fit_input(pretrained.read_trunk(weights_file), data.mean, data.std)
    with run.built.graph.as_default(), v1.Session() as session:
        run.session = session
        folder.start_or_resume(run)
        variables = pretrained.network_variables(run.built.model)
        found = session.run({name: variables[name] for name in expected})
        for name, value in expected.items():
            np.testing.assert_array_equal(found[name], value, err_msg=name)
        head = session.run(variables['head/fc1/weights'])
        assert np.abs(head).max() > 0  # initialised as without init_weights
        kernel = variables[pretrained.STEM_KERNEL]
        pretrained.assign(session, [(kernel, np.ones(kernel.shape.as_list(), np.float32))])
        checkpoints.save(session, run.built.saver, run.directory, 1, 0,
                         {'epochs': [], 'config': settings.saved_config(cfg)})
        resumed = folder.locate({**cfg, 'resume': True})
        resumed.built, resumed.session = run.built, session
        folder.start_or_resume(resumed)
        assert (session.run(kernel) == 1).all()
    out = capsys.readouterr().out
    assert out.count('Initial weights from') == 1 and 'Resuming from' in out
    assert (f"Initial weights from {weights_file}: ResNet-50's trunk, 53 convolutions with their "
            f"batch norms (23,501,760 parameters, its first kernel summed over RGB); starting "
            f"fresh: the SE blocks (2,530,992 parameters), the head (1,182,986 parameters)") in out


# --- files that do not fit: one line, before anything is built --------------------------

def write_layout(path, shapes):
    """A file in Keras' legacy layout whose datasets have `shapes`
    ({(layer, weight): shape}) and no data (HDF5 allocates none until written)."""
    layers = sorted({layer for layer, _ in shapes})
    with h5py.File(path, 'w') as f:
        f.attrs['layer_names'] = [layer.encode() for layer in layers]
        for layer in layers:
            names = [f'{layer}/{weight}:0' for (owner, weight) in shapes if owner == layer]
            group = f.create_group(layer)
            group.attrs['weight_names'] = [name.encode() for name in names]
            for name in names:
                group.create_dataset(name, shapes[layer, name.split('/')[1][:-2]], 'float32')
    return str(path)


def resnet101_like():
    """ResNet-50's layers and 17 more blocks in stage 4, as ResNet-101's file has."""
    shapes = pretrained.expected_weights()
    for block in range(7, 24):
        for (layer, weight), shape in list(shapes.items()):
            if layer.startswith('conv4_block6_'):
                shapes[layer.replace('block6', f'block{block}'), weight] = shape
    return shapes


def text_file(path):
    path.write_text('not HDF5')
    return str(path)


def empty_hdf5(path):  # as a Keras 3 .weights.h5 file, which lists no layer_names
    h5py.File(path, 'w').close()
    return str(path)


def without(prefix):
    return lambda path: write_layout(path, {key: shape for key, shape in
                                            pretrained.expected_weights().items()
                                            if not key[0].startswith(prefix)})


def with_shape(layer, weight, shape):
    return lambda path: write_layout(path, {**pretrained.expected_weights(), (layer, weight): shape})


WRONG_FILES = {  # what the file holds -> (its writer, what the line says)
    'text': (text_file, 'is not a readable HDF5 weights file'),
    'no layer list': (empty_hdf5, "is not Keras' legacy HDF5 weights file"),
    'no stage 5': (without('conv5'), "is not Keras' ResNet50: it lacks 20 of ResNet-50's 106 layers"),
    'ResNet-101': (lambda path: write_layout(path, resnet101_like()),
                   r'holds 102 layers ResNet-50 has not \(conv4_block10_1_bn, '),
    'narrower': (with_shape('conv2_block1_2_conv', 'kernel', (3, 3, 64, 32)),
                 r'conv2_block1_2_conv/kernel is \(3, 3, 64, 32\) where ResNet-50 has \(3, 3, 64, 64\)'),
}


@pytest.mark.parametrize('kind', WRONG_FILES)
def test_a_file_of_another_network_or_format_is_one_line(kind, tmp_path):
    write, says = WRONG_FILES[kind]
    path = write(tmp_path / 'weights.h5')
    with pytest.raises(DataError, match=says):
        settings.checked_config(['model=resnet50', f'init_weights={path}'])


def test_init_weights_wants_resnet50_and_an_existing_file(weights_file, tmp_path, capsys):
    with pytest.raises(ConfigError, match="no such file; download Keras' resnet50_weights"):
        settings.checked_config(['model=resnet50', f"init_weights={tmp_path / 'nothing.h5'}"])
    with pytest.raises(ConfigError, match='set model=resnet50, or init_weights=None'):
        settings.checked_config([f'init_weights={weights_file}'])
    narrower = WRONG_FILES['narrower'][0](tmp_path / 'narrower.h5')
    assert main.main(['model=resnet50', f'init_weights={narrower}']) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1
