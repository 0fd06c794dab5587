"""Model.py: output shapes, parameter counts, SE, training step, device, SELU."""
import contextlib
import functools
import itertools
import json
import os
import types

import numpy as np
import pytest
import tensorflow as tf

import constant
from foundation.data import loaders
from foundation.networks import architecture
from Model import Model, count_parameters, network, squeeze_excite
from trainer.config import settings
from trainer.training import training_graph

v1 = tf.compat.v1

SHAPES = {'digits': (8, 8, 1), 'mnist': (28, 28, 1), 'cifar_32': (32, 32, 3)}
COMBOS = list(itertools.product(SHAPES, (False, True), ('relu', 'selu')))
# ResNet50 combinations built as a full Model and run forward (every dataset,
# SE on/off and activation at least once); all twelve get a static shape check.
RESNET_RUN = [('cifar_32', False, 'relu'), ('mnist', True, 'selu'), ('digits', False, 'selu')]

RESNET50_CONV_PARAMS = 25_557_032 - 2_049_000  # torchvision resnet50 minus its fc
RESNET50_BLOCKS = ((256, 3), (512, 4), (1024, 6), (2048, 3))  # (C, blocks)


def make_config(**overrides):
    """constant.config with overrides, checked and with its 'auto' options
    (data_format, mixed_precision, xla) decided, as main.py does it: Model
    needs concrete values."""
    for key in overrides:
        assert key in constant.config, key
    return settings.load_config([], base=dict(constant.config, **overrides))


def session_config():
    return v1.ConfigProto(allow_soft_placement=True)


def fast_session_config():
    """Soft placement and no grappler: on ResNet50 grappler takes seconds per run."""
    config = session_config()
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    return config


def build(cfg, shape, device=None, seed=0):
    """A Model in the current graph, with a graph seed."""
    v1.set_random_seed(seed)
    with tf.device(device) if device else contextlib.nullcontext():
        return Model.from_config(cfg, shape)


@functools.cache
def resnet(dataset, use_se, act):
    """Cached full ResNet50 Models (building one takes seconds), on
    constant.config['device'] as main.py builds them; tests open own sessions."""
    graph = tf.Graph()
    with graph.as_default():
        cfg = make_config(model='resnet50', use_se=use_se, activation_fn=act,
                          dataset_name=dataset)
        model = build(cfg, SHAPES[dataset], device=constant.config['device'])
        init_op = v1.global_variables_initializer()
    graph.finalize()  # tests must not add ops to a shared graph
    return types.SimpleNamespace(graph=graph, model=model, init=init_op, logits=model.logits)


@functools.cache
def resnet_network(dataset, use_se, act, dataset_name=None, classes=10, shape=None):
    """Only the network (no loss, no Adam): about a third of the build time,
    for static checks."""
    graph = tf.Graph()
    with graph.as_default():
        cfg = make_config(model='resnet50', use_se=use_se, activation_fn=act,
                          dataset_name=dataset_name or dataset, output_shape=classes)
        x = v1.placeholder(tf.float32, [None, *(shape or SHAPES[dataset])])
        prefix, logits = network_only(cfg, x)
    graph.finalize()
    return types.SimpleNamespace(graph=graph, prefix=prefix, logits=logits)


def network_only(cfg, x):
    """The network of cfg['model'] on NHWC images x through Model.network, as
    Model builds it (in variable scope cfg['model']), without loss or Adam;
    returns (its variables' prefix, its logits)."""
    with v1.variable_scope(cfg['model']) as scope:
        logits = network(x, v1.placeholder_with_default(False, []), architecture.from_config(cfg))
    return scope.name + '/', logits


@pytest.fixture(scope='module', autouse=True)
def _free_cached_graphs():
    yield
    resnet.cache_clear()
    resnet_network.cache_clear()
    se_resnet_network.cache_clear()


def trainable(r, part=''):
    """Trainable variables of a cached network or Model, or of a part ('head')."""
    prefix = r.model.variables_prefix if hasattr(r, 'model') else r.prefix
    return r.graph.get_collection(v1.GraphKeys.TRAINABLE_VARIABLES, prefix + part)


def conv_part(r):
    head = set(trainable(r, 'head'))
    assert head
    return [v for v in trainable(r) if v not in head]


def var(name, graph=None):
    graph = graph or v1.get_default_graph()
    (v,) = [v for v in graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES)
            if v.op.name == name]
    return v


def shapes(variables, prefix):
    return {v.op.name[len(prefix):]: tuple(v.shape.as_list()) for v in variables}


def init(session):
    session.run(v1.global_variables_initializer())


def random_images(shape, n=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32)


def np_sigmoid(x):
    return 0.5 * (1.0 + np.tanh(x / 2.0))


# --- configuration ---------------------------------------------------------------

def test_config_menus():
    assert set(constant.config['datasets']) == set(SHAPES) | {'cifar_128', 'imagenet'}
    assert set(constant.config['models']) == {'custom_model', 'resnet50'}
    assert set(constant.config['activation_functions']) == {'relu', 'selu'}
    assert constant.config['se_r'] == 16
    assert constant.config['output_shape'] == 10


# --- output shapes -----------------------------------------------------------------

@pytest.mark.parametrize('dataset, use_se, act', COMBOS)
def test_custom_model_logits_shape(session, dataset, use_se, act):
    cfg = make_config(model='custom_model', use_se=use_se, activation_fn=act, dataset_name=dataset)
    model = build(cfg, SHAPES[dataset])
    assert model.logits.shape.as_list() == [None, 10]
    init(session)
    logits = session.run(model.logits, {model.X: random_images(SHAPES[dataset])})
    assert logits.shape == (2, 10)
    assert np.all(np.isfinite(logits))


@pytest.mark.parametrize('dataset, use_se, act', RESNET_RUN)
def test_resnet50_forward_and_init(dataset, use_se, act):
    r = resnet(dataset, use_se, act)
    assert r.logits.shape.as_list() == [None, 10]
    with v1.Session(graph=r.graph, config=fast_session_config()) as s:
        s.run(r.init)
        logits = s.run(r.logits, {r.model.X: random_images(SHAPES[dataset])})
        kernel = s.run(var('resnet50/stage4/block2/conv2/conv/kernel', r.graph))
        se_weights = s.run(var('resnet50/stage5/block1/se/fc1/weights', r.graph)) if use_se else None
    assert logits.shape == (2, 10)
    assert np.all(np.isfinite(logits))
    # LeCun normal for SELU, He normal for ReLU; fan_in 3*3*256
    scale = 1.0 if act == 'selu' else 2.0
    expected = np.sqrt(scale / (3 * 3 * 256))
    assert kernel.shape == (3, 3, 256, 256)
    assert abs(kernel.std() / expected - 1) < 0.05
    if use_se:  # the SE block's FC layers too; fan_in 2048
        assert abs(se_weights.std() / np.sqrt(scale / 2048) - 1) < 0.05


@pytest.mark.parametrize('dataset, use_se, act', COMBOS)
def test_resnet50_static_logits_shape(dataset, use_se, act):
    r = resnet_network(dataset, use_se, act)
    assert r.logits.shape.as_list() == [None, 10]
    assert len(trainable(r, 'head')) == 6
    assert any('/se/' in v.op.name for v in trainable(r)) == use_se


def test_resnet50_downsampling():
    graph = resnet('cifar_32', False, 'relu').graph
    size = {name: graph.get_tensor_by_name(f'resnet50/{name}/conv/Conv2D:0').shape.as_list()[1:]
            for name in ('conv1', 'stage2/block1/conv1', 'stage3/block1/conv1',
                         'stage3/block1/conv2', 'stage4/block1/conv1', 'stage5/block1/conv1',
                         'stage5/block1/shortcut')}
    # 32 -> conv1 /2 -> 16 -> pool /2 -> 8; stride on the first 1x1 of stages 3-5
    assert size == {'conv1': [16, 16, 64], 'stage2/block1/conv1': [8, 8, 64],
                    'stage3/block1/conv1': [4, 4, 128], 'stage3/block1/conv2': [4, 4, 128],
                    'stage4/block1/conv1': [2, 2, 256], 'stage5/block1/conv1': [1, 1, 512],
                    'stage5/block1/shortcut': [1, 1, 2048]}


# --- parameter counts --------------------------------------------------------------

def test_resnet50_conv_parameters_match_torchvision():
    r = resnet('cifar_32', False, 'relu')
    assert count_parameters(conv_part(r)) == RESNET50_CONV_PARAMS == 23_508_032
    assert not any('/se/' in v.op.name for v in trainable(r))
    # 1-channel input: conv1 has 7*7*64 weights per input channel
    gray = resnet('digits', False, 'selu')
    assert count_parameters(conv_part(gray)) == RESNET50_CONV_PARAMS - 2 * 7 * 7 * 64


def test_resnet50_head():
    r = resnet('cifar_32', False, 'relu')
    assert shapes(trainable(r, 'head'), 'resnet50/head/') == {
        'fc1/weights': (2048, 512), 'fc1/bias': (512,), 'fc2/weights': (512, 256),
        'fc2/bias': (256,), 'logits/weights': (256, 10), 'logits/bias': (10,)}


def test_resnet50_imagenet_head():
    # other classes and image size: the same convolutional part
    r = resnet_network('cifar_32', False, 'relu', dataset_name='imagenet', classes=1000,
                       shape=(16, 16, 3))
    assert r.logits.shape.as_list() == [None, 1000]
    assert shapes(trainable(r, 'head'), 'resnet50/head/') == {
        'fc1/weights': (2048, 512), 'fc1/bias': (512,),
        'logits/weights': (512, 1000), 'logits/bias': (1000,)}
    assert count_parameters(conv_part(r)) == RESNET50_CONV_PARAMS


def test_se_resnet50_parameters():
    plain = resnet('cifar_32', False, 'relu')
    se = resnet_network('cifar_32', True, 'relu')
    r = 16
    expected = sum(n * (c * c // r + c // r + c // r * c + c) for c, n in RESNET50_BLOCKS)
    assert expected == 2_530_992
    assert count_parameters(conv_part(se)) - count_parameters(conv_part(plain)) == expected
    assert count_parameters(trainable(se, 'head')) == count_parameters(trainable(plain, 'head'))
    # exactly two FC layers in every bottleneck's SE block
    se_vars = [v for v in trainable(se) if '/se/' in v.op.name]
    assert len(se_vars) == 4 * 16
    for stage, (c, n) in enumerate(RESNET50_BLOCKS, start=2):
        for b in range(1, n + 1):
            prefix = f'resnet50/stage{stage}/block{b}/se/'
            got = shapes([v for v in se_vars if v.op.name.startswith(prefix)], prefix)
            assert got == {'fc1/weights': (c, c // r), 'fc1/bias': (c // r,),
                           'fc2/weights': (c // r, c), 'fc2/bias': (c,)}, prefix
    # the full SE Model has the same parameters as its network
    assert count_parameters(trainable(resnet('mnist', True, 'selu'))) == \
        count_parameters(trainable(resnet_network('mnist', True, 'selu')))


def custom_params_by_hand(channels, flat):
    convs = [(channels, 16), (16, 32), (32, 64)]
    n = sum(5 * 5 * i * o + o for i, o in convs)
    fcs = [(flat, 256), (256, 128), (128, 10)]
    return n + sum(i * o + o for i, o in fcs)


@pytest.mark.parametrize('dataset, flat', [('mnist', 4 * 4 * 64), ('digits', 1 * 1 * 64),
                                           ('cifar_32', 4 * 4 * 64)])
def test_custom_model_parameters(graph, dataset, flat):
    shape = SHAPES[dataset]
    model = build(make_config(model='custom_model', dataset_name=dataset), shape)
    expected = custom_params_by_hand(shape[2], flat)
    if dataset == 'mnist':
        assert expected == 361_098
    assert count_parameters(model.trainable_variables()) == expected


def test_custom_model_se_parameters(graph):
    model = build(make_config(model='custom_model', use_se=True, dataset_name='mnist'),
                  SHAPES['mnist'])
    se = shapes(model.trainable_variables('se'), 'custom_model/se/')
    assert se == {'fc1/weights': (64, 4), 'fc1/bias': (4,),
                  'fc2/weights': (4, 64), 'fc2/bias': (64,)}
    assert count_parameters(model.trainable_variables()) == \
        361_098 + 64 * 4 + 4 + 4 * 64 + 64


# --- squeeze and excitation --------------------------------------------------------

NP_GATES = {'sigmoid': lambda a: np_sigmoid(a), 'tanh': np.tanh, 'relu': lambda a: np.maximum(a, 0)}


def np_se(u, w1, b1, w2, b2, squeeze='avg', excitation='sigmoid'):
    z = u.mean(axis=(1, 2)) if squeeze == 'avg' else u.max(axis=(1, 2))
    s = NP_GATES[excitation](np.maximum(z @ w1 + b1, 0) @ w2 + b2)
    return u * s[:, None, None, :]


def randomise_biases(session, names, seed=0):
    rng = np.random.default_rng(seed)
    for name in names:
        v = var(name)
        session.run(v.assign(rng.normal(size=v.shape.as_list()).astype(np.float32)))


@pytest.mark.parametrize('squeeze, excitation', [('avg', 'sigmoid'), ('max', 'sigmoid'),
                                                 ('avg', 'tanh'), ('avg', 'relu')])
def test_squeeze_excite_values(session, squeeze, excitation):
    se = architecture.SqueezeExcite(ratio=4, squeeze=squeeze, excitation=excitation)
    u = np.random.default_rng(1).normal(size=(3, 5, 6, 8)).astype(np.float32)
    out = squeeze_excite(tf.constant(u), se, 'NHWC', name='se')
    assert out.shape.as_list() == [3, 5, 6, 8]
    init(session)
    randomise_biases(session, ['se/fc1/bias', 'se/fc2/bias'])
    got, w1, b1, w2, b2 = session.run(
        [out] + [var(f'se/{n}') for n in ('fc1/weights', 'fc1/bias', 'fc2/weights', 'fc2/bias')])
    assert w1.shape == (8, 2) and w2.shape == (2, 8)
    np.testing.assert_allclose(got, np_se(u.astype(np.float64), w1, b1, w2, b2, squeeze, excitation),
                               rtol=1e-5, atol=1e-6)


def test_custom_model_se_feeds_head(session):
    """SE acts on the last pool's maps and its output is what the head sees."""
    model = build(make_config(model='custom_model', use_se=True, dataset_name='mnist'),
                  SHAPES['mnist'])
    init(session)
    p = 'custom_model/'
    randomise_biases(session, [p + 'se/fc1/bias', p + 'se/fc2/bias', p + 'head/fc1/bias',
                               p + 'head/fc2/bias', p + 'head/logits/bias'])
    names = ['se/fc1/weights', 'se/fc1/bias', 'se/fc2/weights', 'se/fc2/bias',
             'head/fc1/weights', 'head/fc1/bias', 'head/fc2/weights', 'head/fc2/bias',
             'head/logits/weights', 'head/logits/bias']
    u_t = v1.get_default_graph().get_tensor_by_name(p + 'pool3:0')
    assert u_t.shape.as_list() == [None, 4, 4, 64]
    u, logits, *w = session.run([u_t, model.logits] + [var(p + n) for n in names],
                                {model.X: random_images(SHAPES['mnist'], n=3)})
    w = [x.astype(np.float64) for x in w]
    out = np_se(u.astype(np.float64), *w[:4])
    h = np.maximum(out.reshape(3, -1) @ w[4] + w[5], 0)
    h = np.maximum(h @ w[6] + w[7], 0)
    np.testing.assert_allclose(logits, h @ w[8] + w[9], rtol=1e-4, atol=1e-4)


# --- training -----------------------------------------------------------------------

def test_custom_model_training_and_learning_rate(session):
    cfg = make_config(model='custom_model', dataset_name='digits', learning_rate=1e-3,
                      decay_steps=2, decay_base=0.5)
    model = build(cfg, SHAPES['digits'])
    assert v1.get_collection(v1.GraphKeys.UPDATE_OPS) == []
    init(session)
    feed = {model.X: random_images(SHAPES['digits'], n=4), model.is_training: True,
            model.Yoh: np.eye(10, dtype=np.float32)[[0, 3, 9, 3]]}
    variables = model.trainable_variables()
    before = session.run(variables)
    assert session.run([model.global_step, model.learning_rate]) == [0, pytest.approx(1e-3)]
    for _ in range(3):
        session.run(model.train_op, feed)
    after = session.run(variables)
    assert session.run(model.global_step) == 3
    assert session.run(model.learning_rate) == pytest.approx(1e-3 * 0.5 ** 1.5, rel=1e-6)
    for v, b, a in zip(variables, before, after):
        assert not np.array_equal(b, a), v.op.name


def test_training_copy_shares_the_variables_and_trains_in_batch_norm_training_mode():
    """train_op minimises train_loss, from a second copy of the network with
    batch norm fixed in training mode: no variables of its own, and the same
    loss as the switchable network gives with is_training fed True."""
    r = resnet('cifar_32', True, 'relu')
    graph, model = r.graph, r.model
    names = [v.op.name for v in graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES)]
    assert not [n for n in names if n.startswith('resnet50_training')]
    assert len([n for n in names if n.startswith('resnet50/')]) == 3 * (53 + 2 * 53 + 4 * 16 + 6) + 2 * 53
    x = random_images(SHAPES['cifar_32'], n=4, seed=8) * 3 + 1
    feed = {model.X: x, model.Yoh: np.eye(10, dtype=np.float32)[[1, 4, 1, 0]]}
    with v1.Session(graph=graph, config=fast_session_config()) as s:
        s.run(r.init)
        train_loss = s.run(model.train_loss, feed)
        switched = s.run(model.loss, {**feed, model.is_training: True})
        inference = s.run(model.loss, feed)
    assert train_loss == pytest.approx(switched, rel=1e-5)
    # Fresh moving averages (0, 1) differ from this batch's statistics.
    assert abs(inference - train_loss) > 1e-3


def _ops_under(graph, prefix):
    return [op for op in graph.get_operations() if op.name.startswith(prefix)]


def test_evaluation_copy_shares_the_variables_and_gives_the_switchable_networks_eval_outputs():
    """Evaluation reads a third copy of the network, fixed in inference mode:
    no variables, batch-norm switches or updates of its own, and the logits,
    loss and accuracy of the switchable network with is_training False, also
    after training moved the moving averages and after one is changed."""
    r = resnet('cifar_32', True, 'relu')
    graph, model = r.graph, r.model
    names = [v.op.name for v in graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES)]
    assert not [n for n in names if n.startswith('resnet50_inference')]
    copy = _ops_under(graph, 'resnet50_inference/')
    assert not [op for op in copy if op.type in ('Switch', 'Merge', 'If', 'StatelessIf')]
    assert len([op for op in copy if op.type == 'FusedBatchNormV3']) == 53  # 1 + 16 * 3 + 4
    assert not [op for op in copy if op.type.startswith('Assign')]
    x = random_images(SHAPES['cifar_32'], n=4, seed=9) * 3 + 1
    feed = {model.X: x, model.Yoh: np.eye(10, dtype=np.float32)[[1, 4, 1, 0]]}
    switchable = [model.logits, model.loss, model.accuracy]
    copied = [model.eval_logits, model.eval_loss, model.eval_accuracy]
    mean = var('resnet50/stage3/block1/conv2/bn/moving_mean', graph)
    with v1.Session(graph=graph, config=fast_session_config()) as s:
        s.run(r.init)
        for _ in range(2):  # moving averages away from their initial (0, 1)
            s.run(model.train_op, feed)
        train_logits = s.run(model.logits, {**feed, model.is_training: True})
        trained = s.run([switchable, copied], feed)
        mean.load(s.run(mean) + 0.5, s)
        changed = s.run([switchable, copied], feed)
    for (expected, got) in (trained, changed):
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-5, atol=1e-5)
        assert got[1] == pytest.approx(expected[1], rel=1e-5) and got[2] == expected[2]
    assert np.abs(changed[1][0] - trained[1][0]).max() > 1e-4  # the copy reads the variable
    assert np.abs(trained[1][0] - train_logits).max() > 1e-3  # moving averages, not the batch's


def test_evaluation_copy_of_the_custom_model_leaves_dropout_out():
    cfg = make_config(model='custom_model', dataset_name='digits', dropout=0.5)
    graph = tf.Graph()
    with graph.as_default():
        model = build(cfg, SHAPES['digits'])
        init = v1.global_variables_initializer()
    assert not [op for op in _ops_under(graph, 'custom_model_inference/')
                if op.type in ('Switch', 'Merge', 'RandomUniform')]
    feed = {model.X: random_images(SHAPES['digits'], n=6, seed=3)}
    with v1.Session(graph=graph) as s:
        s.run(init)
        first, second = s.run(model.eval_logits, feed), s.run(model.eval_logits, feed)
        switchable = s.run(model.logits, feed)
        dropped = s.run(model.logits, {**feed, model.is_training: True})
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, switchable, rtol=1e-6, atol=1e-6)
    assert np.abs(dropped - first).max() > 1e-3


def test_resnet50_training_step():
    r = resnet('cifar_32', False, 'relu')
    graph, model = r.graph, r.model
    x = random_images(SHAPES['cifar_32'], n=3, seed=5) * 2 + 1
    feed = {model.X: x, model.Yoh: np.eye(10, dtype=np.float32)[[1, 4, 1]], model.is_training: True}
    p = 'resnet50/'
    watched = [var(p + n, graph) for n in ('conv1/conv/kernel', 'conv1/bn/gamma',
                                           'stage5/block3/conv3/conv/kernel',
                                           'head/logits/weights')]
    moving = [v for v in graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES)
              if v.op.name.endswith(('/moving_mean', '/moving_variance'))]
    assert len(moving) == 2 * 53  # 1 + 16 * 3 + 4 batch norms
    pre_bn = graph.get_tensor_by_name(p + 'conv1/conv/Conv2D:0')
    with v1.Session(graph=graph, config=fast_session_config()) as s:
        s.run(r.init)
        conv1 = s.run(pre_bn, feed).astype(np.float64)
        w_before, m_before = s.run(watched), s.run(moving)
        _, loss = s.run([model.train_op, model.loss], feed)
        w_after, m_after = s.run(watched), s.run(moving)
        step = s.run(model.global_step)
        mm, mv = s.run([var(p + 'conv1/bn/moving_mean', graph),
                        var(p + 'conv1/bn/moving_variance', graph)])
    assert np.isfinite(loss)
    assert step == 1
    for v, b, a in zip(watched, w_before, w_after):
        assert not np.array_equal(b, a), v.op.name
    for v, b, a in zip(moving, m_before, m_after):
        assert not np.array_equal(b, a), v.op.name
    np.testing.assert_allclose(mm, 0.1 * conv1.mean(axis=(0, 1, 2)), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(mv, 0.9 + 0.1 * conv1.var(axis=(0, 1, 2), ddof=1),
                               rtol=1e-3, atol=1e-5)


# --- initialisation -------------------------------------------------------------------

@pytest.mark.parametrize('act, scale', [('selu', 1.0), ('relu', 2.0)])
def test_custom_model_initialisation(session, act, scale):
    model = build(make_config(model='custom_model', activation_fn=act, dataset_name='mnist',
                              use_se=True), SHAPES['mnist'])
    init(session)
    for name, fan_in in (('conv2/kernel', 5 * 5 * 16), ('conv3/kernel', 5 * 5 * 32),
                         ('head/fc1/weights', 1024)):
        w = session.run(var('custom_model/' + name))
        expected = np.sqrt(scale / fan_in)
        assert abs(w.std() / expected - 1) < 0.05, name
    # The SE block's FC layers like every other: LeCun-normal under SELU. Their
    # 256 weights each tell sqrt(1/fan_in) from sqrt(2/fan_in) (41 % apart).
    for name, fan_in in (('se/fc1/weights', 64), ('se/fc2/weights', 4)):
        w = session.run(var('custom_model/' + name))
        assert abs(w.std() / np.sqrt(scale / fan_in) - 1) < 0.15, name
    assert model.first_conv_kernel.op.name == 'custom_model/conv1/kernel'


# --- device ----------------------------------------------------------------------------

def test_gpu_device_falls_back_to_cpu():
    """Built on GPU:0 with soft placement it runs here; same weights, same logits."""
    cfg = make_config(model='custom_model', dataset_name='mnist', use_se=True)
    x = random_images(SHAPES['mnist'], n=3)
    logits, weights = {}, None
    for device in ('/device:GPU:0', None):
        with tf.Graph().as_default():
            model = build(cfg, SHAPES['mnist'], device=device, seed=3)
            assert ('GPU' in model.logits.op.device) == bool(device)
            variables = v1.global_variables()
            with v1.Session(config=session_config()) as s:
                init(s)
                if weights is None:
                    weights = s.run(variables)
                else:  # the CPU copy gets the GPU-built model's weights
                    for v, w in zip(variables, weights):
                        v.load(w, s)
                logits[device] = s.run(model.logits, {model.X: x})
    assert np.all(np.isfinite(logits['/device:GPU:0']))
    # TF32 on a real GPU rounds convolutions to ~1e-3
    rtol = 2e-2 if tf.config.list_physical_devices('GPU') else 1e-5
    np.testing.assert_allclose(logits['/device:GPU:0'], logits[None], rtol=rtol, atol=rtol)


# --- SELU with raw pixels --------------------------------------------------------------------

def test_selu_training_step_with_raw_pixels_stays_finite(session):
    model = build(make_config(model='custom_model', activation_fn='selu', dataset_name='mnist'),
                  SHAPES['mnist'])
    x = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28, 1)).astype(np.float32)
    x[:, 8:20, 8:20, :] = 255.0
    feed = {model.X: x, model.Yoh: np.eye(10, dtype=np.float32)[[0, 1, 2, 3]], model.is_training: True}
    init(session)
    pre = session.run(v1.get_default_graph().get_tensor_by_name('custom_model/conv1/BiasAdd:0'),
                      feed)
    assert pre.max() > 89  # exp overflows float32 here: the original selu's NaN regime
    _, loss = session.run([model.train_op, model.loss], feed)
    assert np.isfinite(loss)
    for v, value in zip(v1.global_variables(), session.run(v1.global_variables())):
        assert np.all(np.isfinite(value)), v.op.name


# --- data formats: a checkpoint moves between NHWC and NCHW ------------------------------

def randomise_zero_initialised(session, variables, seed=0):
    """Biases, beta and the moving averages start at 0 or 1, where a bias added on the
    wrong axis or a per-channel statistic of the wrong channel would go unnoticed."""
    rng = np.random.default_rng(seed)
    ops = []
    for v in variables:
        shape, name = v.shape.as_list(), v.op.name
        if name.endswith(('/bias', '/beta', '/moving_mean')):
            value = rng.normal(0, 0.1, shape)
        elif name.endswith(('/gamma', '/moving_variance')):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            continue
        ops.append(v.assign(value.astype(np.float32)))
    assert ops
    session.run(ops)


def conv_data_format(graph, name):
    return graph.get_operation_by_name(name).get_attr('data_format').decode()


@pytest.mark.nchw
@pytest.mark.parametrize('use_se', [False, True])
def test_custom_model_checkpoint_gives_the_same_logits_in_nchw(tmp_path, use_se):
    """Saved from an NHWC model, restored into an NCHW one: same variables, same logits."""
    shape, path = SHAPES['mnist'], str(tmp_path / 'model.ckpt')
    x = random_images(shape, n=3, seed=4)
    variables, logits = {}, {}
    for seed, data_format in enumerate(('NHWC', 'NCHW')):
        cfg = make_config(model='custom_model', dataset_name='mnist', use_se=use_se,
                          data_format=data_format)
        with tf.Graph().as_default() as graph:
            model = build(cfg, shape, seed=seed)  # another seed: only the restore can match
            assert conv_data_format(graph, 'custom_model/conv2/Conv2D') == data_format
            variables[data_format] = shapes(v1.global_variables(), '')
            saver = v1.train.Saver()
            with v1.Session(config=session_config()) as s:
                init(s)
                if data_format == 'NHWC':
                    randomise_zero_initialised(s, v1.global_variables())
                    saver.save(s, path)
                else:
                    unrestored = s.run(model.logits, {model.X: x})
                    saver.restore(s, path)
                logits[data_format] = s.run(model.logits, {model.X: x})
    assert variables['NCHW'] == variables['NHWC']
    assert ('custom_model/se/fc1/weights' in variables['NCHW']) == use_se
    assert not np.allclose(unrestored, logits['NHWC'], rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(logits['NCHW'], logits['NHWC'], rtol=1e-4, atol=1e-4)


@pytest.mark.nchw
def test_se_resnet50_gives_the_same_logits_in_nchw_with_nhwc_weights():
    """Both networks in one graph (bare: no Adam, which would triple the variables),
    NCHW variables loaded from the NHWC ones; inference, so batch norm uses the
    (randomised) moving averages of each channel."""
    x = random_images(SHAPES['cifar_32'], n=2, seed=6)
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(0)
        images = tf.constant(x)
        logits, variables = {}, {}
        for data_format in ('NHWC', 'NCHW'):
            cfg = make_config(model='resnet50', dataset_name='cifar_32', use_se=True,
                              data_format=data_format)
            with v1.variable_scope(data_format):
                _, logits[data_format] = network_only(cfg, images)
            prefix = f'{data_format}/'
            variables[data_format] = {v.op.name[len(prefix):]: v for v in v1.global_variables()
                                      if v.op.name.startswith(prefix)}
        assert conv_data_format(graph, 'NCHW/resnet50/stage3/block1/conv2/conv/Conv2D') == 'NCHW'
        nhwc, nchw = variables['NHWC'], variables['NCHW']
        assert {k: v.shape.as_list() for k, v in nchw.items()} == \
            {k: v.shape.as_list() for k, v in nhwc.items()}
        # 53 conv kernels (no bias: BN's beta), 4 per batch norm, 4 per SE block, 6 in the head
        assert len(nhwc) == 53 + 4 * 53 + 4 * 16 + 6
        copy = tf.group(*[nchw[k].assign(v) for k, v in nhwc.items()])
        with v1.Session(config=fast_session_config()) as s:
            s.run(v1.variables_initializer(list(nhwc.values())))
            randomise_zero_initialised(s, list(nhwc.values()))
            s.run(copy)
            got = s.run(logits)
    assert np.all(np.isfinite(got['NHWC']))
    scale = np.abs(got['NHWC']).max()
    np.testing.assert_allclose(got['NCHW'], got['NHWC'], rtol=1e-4, atol=1e-4 * scale)


# --- multiply-adds -------------------------------------------------------------------------

# The custom model on 28x28x1 by hand: 'same' 5x5 convolutions keep the size and
# 'same' 2x2 pools of stride 2 round up: 28 -> 14 -> 7 -> 4.
CUSTOM_MNIST_MULTIPLY_ADDS = (28 * 28 * 16 * 5 * 5 * 1      # conv1, 1 -> 16 at 28x28
                              + 14 * 14 * 32 * 5 * 5 * 16   # conv2, 16 -> 32 at 14x14
                              + 7 * 7 * 64 * 5 * 5 * 32     # conv3, 32 -> 64 at 7x7
                              + 4 * 4 * 64 * 256 + 256 * 128 + 128 * 10)  # FC layers
SE_MULTIPLY_ADDS = 64 * 4 + 4 * 64  # SE on 64 channels, r=16: FC 64 -> 4 -> 64


def test_custom_model_pooled_sizes_are_the_hand_counts(graph):
    build(make_config(model='custom_model', dataset_name='mnist'), SHAPES['mnist'])
    sizes = [graph.get_tensor_by_name(f'custom_model/pool{i}:0').shape.as_list()[1:3]
             for i in (1, 2, 3)]
    assert sizes == [[14, 14], [7, 7], [4, 4]]


@pytest.mark.parametrize('use_se', [False, True])
def test_custom_model_multiply_adds_match_the_hand_count(graph, use_se):
    model = build(make_config(model='custom_model', dataset_name='mnist', use_se=use_se),
                  SHAPES['mnist'])
    assert CUSTOM_MNIST_MULTIPLY_ADDS == 5_627_392
    assert model.forward_multiply_adds() == CUSTOM_MNIST_MULTIPLY_ADDS + use_se * SE_MULTIPLY_ADDS


@pytest.mark.parametrize('use_se', [False, True])
def test_multiply_adds_do_not_depend_on_the_data_format(use_se):
    counts = set()
    for data_format in ('NHWC', 'NCHW'):
        with tf.Graph().as_default():
            cfg = make_config(model='custom_model', dataset_name='mnist', use_se=use_se,
                              data_format=data_format)
            counts.add(build(cfg, SHAPES['mnist']).forward_multiply_adds())
    assert counts == {CUSTOM_MNIST_MULTIPLY_ADDS + use_se * SE_MULTIPLY_ADDS}


def test_multiply_adds_count_one_image_and_not_the_training_ops(graph):
    """The full Model holds gradient convolutions and matmuls too: not counted,
    nor is a second model's network."""
    cfg = make_config(model='custom_model', dataset_name='mnist')
    model = build(cfg, SHAPES['mnist'])
    assert any(op.type == 'Conv2DBackpropInput' for op in graph.get_operations())
    with v1.variable_scope('other'):
        Model.from_config(cfg, (32, 32, 1))
    assert model.forward_multiply_adds() == CUSTOM_MNIST_MULTIPLY_ADDS


def test_resnet50_multiply_adds_at_224_match_the_papers(graph):
    """3.86 G multiply-adds (He et al. 2015; Hu et al., SE paper, table 2) for
    ResNet-50 on 224x224x3; its head here differs by 0.5 M, 0.01 %."""
    cfg = make_config(model='resnet50', dataset_name='imagenet', output_shape=1000)
    count = build(cfg, (224, 224, 3)).forward_multiply_adds()
    assert count == pytest.approx(3.86e9, rel=0.01)


# --- checkpoints of earlier versions ---------------------------------------------------

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'expected_variables.json')) as f:
    EXPECTED_VARIABLES = json.load(f)


def listed(variables):
    return [f'{v.op.name} {v.shape.as_list()}' for v in variables]


@pytest.mark.parametrize('use_se, act', [(False, 'relu'), (True, 'selu')])
def test_a_custom_model_run_holds_the_variables_of_earlier_checkpoints(use_se, act):
    """Every variable a run saves (network, Adam's slots, progress) keeps its
    name and shape: checkpoints written by earlier versions restore."""
    cfg = make_config(model='custom_model', use_se=use_se, activation_fn=act, dataset_name='digits')
    built = training_graph.build_graph(cfg, loaders.load_digits(None, 42, False))
    with built.graph.as_default():
        found = sorted(listed(v1.global_variables()))
    assert found == EXPECTED_VARIABLES[f'custom_model|se={use_se}|{act}|standard']['all_global']


@pytest.mark.parametrize('integration', ['standard', 'pre', 'post', 'identity'])
def test_se_resnet50_holds_the_variables_of_earlier_checkpoints(integration):
    plain = resnet_network('digits', False, 'relu')
    se = se_resnet_network(integration)
    plain_names = sorted(listed(trainable_and_moving(plain)))
    assert plain_names == sorted(EXPECTED_VARIABLES['resnet50|se=False|relu|standard']['network'])
    added = sorted(set(listed(trainable_and_moving(se))) - set(plain_names))
    assert added == EXPECTED_VARIABLES[f'resnet50|se=True|selu|{integration}']['added_to_plain_resnet50']


@functools.cache
def se_resnet_network(integration):
    graph = tf.Graph()
    with graph.as_default():
        cfg = make_config(model='resnet50', use_se=True, activation_fn='selu', dataset_name='digits',
                          se_integration=integration)
        prefix, logits = network_only(cfg, v1.placeholder(tf.float32, [None, *SHAPES['digits']]))
    return types.SimpleNamespace(graph=graph, prefix=prefix, logits=logits)


def trainable_and_moving(r):
    return r.graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES, r.prefix)
