"""The research knobs: dropout and alpha dropout, weight decay, learning-rate
schedules, SGD with momentum, label smoothing, SE integration and stages in
ResNet50, SELU's residual scale, and the settings rules of the new keys.
Checked against numpy references (float64), on small graphs."""
import functools
import itertools
import math
import types

import numpy as np
import pytest
import tensorflow as tf

import constant
import layers
from foundation.errors import ConfigError
from foundation.networks import architecture, optimisation
from Model import Model, bottleneck, learning_rate_schedule
from tests.test_model import make_config, network_only
from trainer.config import settings
from trainer.config.settings import load_config

v1 = tf.compat.v1

# SELU constants of Klambauer et al. (2017), written out here, not read from layers.
ALPHA = 1.6732632423543772848170429916717
LAMBDA = 1.0507009873554804934193349852946
DIGITS = (8, 8, 1)
# Device options fixed, so that the graphs are the same on any machine.
FIXED = {'data_format': 'NHWC', 'mixed_precision': False, 'xla': False}


def config(**overrides):
    return make_config(**{**FIXED, **overrides})


def custom_model(**overrides):
    """The custom model on 8x8x1 digits in the current graph, seeded."""
    v1.set_random_seed(0)
    return Model.from_config(config(model='custom_model', dataset_name='digits', **overrides), DIGITS)


def digits_feed(model, n=6, seed=0):
    rng = np.random.default_rng(seed)
    return {model.X: rng.normal(size=(n, *DIGITS)).astype(np.float32) * 2.0,
            model.Yoh: np.eye(10, dtype=np.float32)[rng.integers(0, 10, size=n)]}


def two_steps(session, model):
    """Two training steps on one digits batch: each variable's value before,
    after one and after two, and its gradient before each step."""
    variables = model.trainable_variables()
    grads = tf.gradients(model.objective, variables)
    v1.global_variables_initializer().run()
    feed = {**digits_feed(model, n=8), model.is_training: True}
    w0, g1 = session.run([variables, grads], feed)
    session.run(model.train_op, feed)
    w1, g2 = session.run([variables, grads], feed)
    session.run(model.train_op, feed)
    return zip(variables, w0, w1, session.run(variables), g1, g2)


def by_name(names, graph=None):
    graph = graph or v1.get_default_graph()
    found = {v.op.name: v for v in graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES)}
    return [found[n] for n in names]


def np_selu(x):
    x = np.asarray(x, np.float64)
    return np.where(x > 0, LAMBDA * x, LAMBDA * ALPHA * (np.exp(np.minimum(x, 0.0)) - 1.0))


def np_log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def np_alpha_dropout_map(rate):
    """The SELU paper's a, b and the dropped units' value a * (-lambda*alpha) + b."""
    sat = -LAMBDA * ALPHA
    a = ((1 - rate) * (1 + rate * sat ** 2)) ** -0.5
    b = -a * sat * rate
    return a, b, a * sat + b


# --- layers.dropout --------------------------------------------------------------------

def test_dropout_is_the_identity_when_off(session):
    x = tf.constant(np.arange(12, dtype=np.float32).reshape(3, 4))
    # Python-level off switches build no op at all.
    assert layers.dropout(x, 0.5, False) is x
    assert layers.dropout(x, 0.5, False, alpha=True) is x
    assert layers.dropout(x, 0.0, True) is x
    assert layers.dropout(x, 0.0, True, alpha=True) is x
    # A training tensor fed False: the input unchanged.
    training = v1.placeholder_with_default(False, [])
    plain = layers.dropout(x, 0.5, training, name='plain')
    alpha = layers.dropout(x, 0.5, training, alpha=True, name='alpha')
    x_value = session.run(x)
    for out in session.run([plain, alpha]):
        np.testing.assert_array_equal(out, x_value)
    # ... and fed True: dropped (with 48 units at rate 0.5, some are).
    big = tf.ones([48])
    dropped = session.run(layers.dropout(big, 0.5, training, name='big'), {training: True})
    assert set(np.unique(dropped)) == {0.0, 2.0}


@pytest.mark.parametrize('rate', [0.1, 0.5])
def test_plain_dropout_zeroes_a_fraction_and_scales_the_rest(session, rate):
    n = 1_000_000
    x = np.random.default_rng(3).uniform(0.5, 1.5, size=n).astype(np.float32)
    v1.set_random_seed(1)
    out = session.run(layers.dropout(tf.constant(x), rate, True, seed=2))
    dropped = out == 0.0
    assert abs(dropped.mean() - rate) < 0.003  # 5 sigma is 0.0025 at rate 0.5
    np.testing.assert_allclose(out[~dropped], x[~dropped] / (1 - rate), rtol=1e-6)
    assert abs(out.astype(np.float64).mean() / x.astype(np.float64).mean() - 1) < 0.005


@pytest.mark.parametrize('rate', [0.1, 0.2])
def test_alpha_dropout_keeps_zero_mean_and_unit_variance(session, rate):
    n = 1_000_000
    x = np.random.default_rng(4).normal(size=n).astype(np.float32)
    v1.set_random_seed(1)
    training = v1.placeholder_with_default(False, [])
    out = session.run(layers.dropout(tf.constant(x), rate, training, alpha=True, seed=5),
                      {training: True}).astype(np.float64)
    a, b, dropped_value = np_alpha_dropout_map(rate)
    dropped = np.isclose(out, dropped_value, rtol=0, atol=1e-6)
    assert abs(dropped.mean() - rate) < 0.003
    np.testing.assert_allclose(out[~dropped], a * x[~dropped] + b, rtol=1e-5, atol=1e-6)
    assert abs(out.mean()) < 0.005
    assert abs(out.var() - 1) < 0.01
    # Plain dropout would not keep the variance: the SELU fixed point needs alpha dropout.
    plain = session.run(layers.dropout(tf.constant(x), rate, True, seed=5)).astype(np.float64)
    assert plain.var() > 1 + rate / 2


@pytest.mark.parametrize('act', ['relu', 'selu'])
def test_custom_model_head_drops_in_training_copy_only(session, act):
    """dropout=0.5: the training copy's fc1 output is dropped (alpha dropout
    under SELU, plain under ReLU); the inference copy is not."""
    rate = 0.5
    model = custom_model(activation_fn=act, dropout=rate)
    graph = v1.get_default_graph()
    v1.global_variables_initializer().run()
    feed = digits_feed(model, n=64)
    copies = {}
    for scope in ('custom_model', 'custom_model_training'):
        before = graph.get_tensor_by_name(f'{scope}/head/fc1/{act}:0')
        after = graph.get_operation_by_name(f'{scope}/head/fc2/MatMul').inputs[0]
        copies[scope] = [v.astype(np.float64) for v in session.run([before, after], feed)]
    x, y = copies['custom_model']
    np.testing.assert_array_equal(y, x)
    x, y = copies['custom_model_training']
    if act == 'relu':
        kept = ~np.isclose(y, 0.0)
        np.testing.assert_allclose(y[kept], x[kept] / (1 - rate), rtol=1e-6)
        dropped = (y == 0) & (x > 0)
        assert abs(dropped.sum() / (x > 0).sum() - rate) < 0.05
    else:
        a, b, dropped_value = np_alpha_dropout_map(rate)
        dropped = np.isclose(y, dropped_value, rtol=0, atol=1e-6)
        np.testing.assert_allclose(y[~dropped], a * x[~dropped] + b, rtol=1e-5, atol=1e-6)
        assert abs(dropped.mean() - rate) < 0.05
    # Evaluation is deterministic, training is not.
    logits = [session.run(model.logits, feed) for _ in range(2)]
    np.testing.assert_array_equal(*logits)
    losses = [session.run(model.train_loss, feed) for _ in range(2)]
    assert losses[0] != losses[1]


# --- weight decay -----------------------------------------------------------------------

def test_weights_collection_holds_kernels_and_fc_weights_only(graph):
    x = v1.placeholder(tf.float32, [None, 4, 4, 3])
    y = layers.conv2d(x, 5, 3, name='conv')
    y = layers.batch_normalization(y, True, name='bn')
    layers.fc(layers.flatten(y), 7, name='fc')
    weights = [v.op.name for v in v1.get_collection(v1.GraphKeys.WEIGHTS)]
    trainable = [v.op.name for v in v1.trainable_variables()]
    assert weights == ['conv/kernel', 'fc/weights']
    assert sorted(trainable) == sorted(['conv/kernel', 'conv/bias', 'bn/gamma', 'bn/beta',
                                        'fc/weights', 'fc/bias'])
    assert [v.op.name for v in v1.global_variables() if not v.trainable] == \
        ['bn/moving_mean', 'bn/moving_variance']


def test_weight_penalty_is_half_the_decay_times_the_squared_weights(session):
    decay = 0.01
    model = custom_model(use_se=True, weight_decay=decay)
    p = 'custom_model/'
    weight_names = [p + n for n in ('conv1/kernel', 'conv2/kernel', 'conv3/kernel',
                                    'se/fc1/weights', 'se/fc2/weights', 'head/fc1/weights',
                                    'head/fc2/weights', 'head/logits/weights')]
    collected = v1.get_collection(v1.GraphKeys.WEIGHTS)
    assert sorted(v.op.name for v in collected) == sorted(weight_names)
    assert set(collected) <= set(model.trainable_variables())
    weights = by_name(weight_names)
    biases = by_name([p + 'conv2/bias', p + 'se/fc1/bias', p + 'head/logits/bias'])
    v1.global_variables_initializer().run()
    feed = digits_feed(model)
    objective, train_loss, w = session.run([model.objective, model.train_loss, weights], feed)
    penalty = decay * sum((x.astype(np.float64) ** 2).sum() for x in w) / 2
    assert penalty > 1e-3  # large enough to be seen in float32
    assert objective - train_loss == pytest.approx(penalty, rel=1e-4)
    # Gradients: biases are not decayed, weights get decay * w more.
    grads = session.run(tf.gradients(model.objective, biases + weights), feed)
    plain = session.run(tf.gradients(model.train_loss, biases + weights), feed)
    for g, h in zip(grads[:len(biases)], plain[:len(biases)]):
        assert np.any(h != 0)
        np.testing.assert_allclose(g, h, rtol=1e-5, atol=1e-8)
    for g, h, x in zip(grads[len(biases):], plain[len(biases):], w):
        np.testing.assert_allclose(g - h, decay * x, rtol=1e-3, atol=1e-7)


def test_no_weight_decay_minimises_the_training_loss_itself(session):
    model = custom_model(weight_decay=0.0)
    v1.global_variables_initializer().run()
    objective, train_loss = session.run([model.objective, model.train_loss], digits_feed(model))
    assert objective == train_loss


# --- learning-rate schedules ------------------------------------------------------------

def run_schedule(session, cfg, steps, steps_per_epoch=None):
    global_step = v1.train.get_or_create_global_step()
    rate = learning_rate_schedule(optimisation.from_config(cfg), global_step, steps_per_epoch)
    step = v1.placeholder(tf.int64, [])
    assign = global_step.assign(step)
    v1.global_variables_initializer().run()
    values = []
    for s in steps:
        session.run(assign, {step: s})
        values.append(session.run(rate))
    return np.array(values, np.float64)


def test_exponential_schedule(session):
    cfg = config(lr_schedule='exponential', learning_rate=0.3, decay_steps=10, decay_base=0.5)
    steps = np.array([0, 3, 10, 25, 100])
    np.testing.assert_allclose(run_schedule(session, cfg, steps), 0.3 * 0.5 ** (steps / 10),
                               rtol=1e-6)


def test_piecewise_schedule_multiplies_after_each_boundary_epoch(session):
    cfg = config(lr_schedule='piecewise', learning_rate=0.5, lr_boundaries=[2, 5],
                 lr_factor=0.1)
    # steps_per_epoch 10: epoch 3 starts at step 20 and epoch 6 at step 50
    steps = [0, 1, 18, 19, 20, 21, 48, 49, 50, 51, 1000]
    expected = [0.5] * 4 + [0.05] * 4 + [0.005] * 3
    np.testing.assert_allclose(run_schedule(session, cfg, steps, steps_per_epoch=10), expected,
                               rtol=1e-6)


def test_cosine_schedule_decays_to_zero_at_max_epochs(session):
    cfg = config(lr_schedule='cosine', learning_rate=0.2, max_epochs=3)
    total = 3 * 7
    steps = np.array([0, 1, 5, 10, 11, 20, 21, 22, 40])
    expected = 0.2 * 0.5 * (1 + np.cos(np.pi * np.minimum(steps, total) / total))
    got = run_schedule(session, cfg, steps, steps_per_epoch=7)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-9)
    assert got[-1] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize('schedule', ['exponential', 'piecewise', 'cosine'])
def test_every_schedule_takes_a_whole_number_learning_rate(session, schedule):
    """learning_rate=1 from the command line failed in the exponential
    decay's Pow op (int32 against float64); the config makes it 1.0."""
    cfg = config(lr_schedule=schedule, learning_rate=1, decay_steps=10, decay_base=1, lr_factor=1)
    assert run_schedule(session, cfg, [0], steps_per_epoch=100).tolist() == [1.0]


@pytest.mark.parametrize('schedule', ['piecewise', 'cosine'])
def test_epoch_schedules_need_steps_per_epoch(graph, schedule):
    cfg = config(lr_schedule=schedule)
    global_step = v1.train.get_or_create_global_step()
    for steps_per_epoch in (None, 0):
        with pytest.raises(ValueError, match='steps_per_epoch'):
            learning_rate_schedule(optimisation.from_config(cfg), global_step, steps_per_epoch)
    with pytest.raises(ValueError, match='steps_per_epoch'):
        Model.from_config(dict(cfg, model='custom_model'), DIGITS)


def test_model_learning_rate_follows_the_configured_schedule(session):
    model = Model.from_config(config(lr_schedule='piecewise', learning_rate=0.5, lr_boundaries=[1],
                         lr_factor=0.25), DIGITS, steps_per_epoch=2)
    v1.global_variables_initializer().run()
    feed = {**digits_feed(model), model.is_training: True}
    rates = []
    for _ in range(4):
        rates.append(session.run(model.learning_rate))
        session.run(model.train_op, feed)
    np.testing.assert_allclose(rates[:2] + rates[3:], [0.5, 0.5, 0.125], rtol=1e-6)


# --- SGD with momentum -------------------------------------------------------------------

def test_momentum_optimizer_steps(session):
    lr, momentum = 0.05, 0.9
    model = custom_model(optimizer='momentum', momentum=momentum, learning_rate=lr,
                         decay_base=1.0, weight_decay=1e-3)
    variables = model.trainable_variables()
    slots = [v.op.name for v in v1.global_variables() if v.op.name.endswith('/Momentum')]
    assert sorted(slots) == sorted(v.op.name + '/Momentum' for v in variables)
    assert not [v for v in v1.global_variables() if 'Adam' in v.op.name]
    steps = list(two_steps(session, model))
    assert session.run(model.global_step) == 2
    for v, a, b, c, d1, d2 in steps:
        assert np.any(d1 != 0), v.op.name
        # first step: velocity = g1; second: velocity = momentum * g1 + g2
        np.testing.assert_allclose(a - b, lr * d1, rtol=1e-3, atol=1e-7, err_msg=v.op.name)
        np.testing.assert_allclose(b - c, lr * (momentum * d1 + d2), rtol=1e-3, atol=1e-7,
                                   err_msg=v.op.name)


# --- label smoothing ---------------------------------------------------------------------

@pytest.mark.parametrize('smoothing', [0.0, 0.2])
def test_label_smoothing_changes_the_training_loss_only(session, smoothing):
    model = custom_model(label_smoothing=smoothing)
    v1.global_variables_initializer().run()
    feed = digits_feed(model, n=7, seed=2)
    logits, loss, train_loss = session.run([model.logits, model.loss, model.train_loss], feed)
    y = feed[model.Yoh].astype(np.float64)
    log_p = np_log_softmax(logits)
    targets = (1 - smoothing) * y + smoothing / 10
    assert loss == pytest.approx(-(y * log_p).sum(axis=1).mean(), rel=1e-5)
    assert train_loss == pytest.approx(-(targets * log_p).sum(axis=1).mean(), rel=1e-5)
    if smoothing:
        assert abs(train_loss - loss) > 1e-3


# --- SE integration and stages in ResNet50 ------------------------------------------------

ALL_STAGES = (2, 3, 4, 5)
BLOCKS = {2: 3, 3: 4, 4: 6, 5: 3}


@functools.cache
def se_resnet(integration, stages=ALL_STAGES, act='relu'):
    """The bare SE-ResNet50 network (no loss, no optimiser) on 8x8x1 digits."""
    graph = tf.Graph()
    with graph.as_default():
        cfg = config(model='resnet50', dataset_name='digits', use_se=True, activation_fn=act,
                     se_integration=integration, se_stages=list(stages))
        network_only(cfg, v1.placeholder(tf.float32, [None, *DIGITS]))
    graph.finalize()
    se = {v.op.name: tuple(v.shape.as_list())
          for v in graph.get_collection(v1.GraphKeys.TRAINABLE_VARIABLES) if '/se/' in v.op.name}
    return types.SimpleNamespace(graph=graph, cfg=cfg, se=se)


@pytest.fixture(scope='module', autouse=True)
def _free_cached_graphs():
    yield
    se_resnet.cache_clear()


# (integration, se_stages, activation): four graphs in all
SE_GRAPHS = {'standard': (ALL_STAGES, 'relu'), 'pre': (ALL_STAGES, 'relu'),
             'identity': (ALL_STAGES, 'selu'), 'post': ((4,), 'relu')}


def graph_for(integration):
    stages, act = SE_GRAPHS[integration]
    return se_resnet(integration, stages, act)


def se_channels_by_hand(integration, stage, block):
    """The channels an SE block scales: the block's input for 'pre' (64 after
    the stem, the previous stage's 4m after that), else the block's 4m."""
    width = 64 * 2 ** (stage - 2)
    if integration == 'pre' and block == 1:
        return 64 if stage == 2 else 2 * width
    return 4 * width


@pytest.mark.parametrize('integration', list(SE_GRAPHS))
def test_se_blocks_sit_in_the_configured_stages_with_their_sizes(integration):
    r = graph_for(integration)
    stages = SE_GRAPHS[integration][0]
    blocks = [(s, b) for s in stages for b in range(1, BLOCKS[s] + 1)]
    assert len(blocks) == (16 if stages == ALL_STAGES else 6)
    expected = {}
    for s, b in blocks:
        c = se_channels_by_hand(integration, s, b)
        prefix = f'resnet50/stage{s}/block{b}/se/'
        expected.update({prefix + 'fc1/weights': (c, c // 16), prefix + 'fc1/bias': (c // 16,),
                         prefix + 'fc2/weights': (c // 16, c), prefix + 'fc2/bias': (c,)})
    assert r.se == expected
    # architecture.se_block_channels predicts every SE block (the smallest bounds se_r)
    built = [shape[-1] for name, shape in sorted(r.se.items(), key=lambda item: block_order(item[0]))
             if name.endswith('fc2/bias')]
    assert architecture.se_block_channels('resnet50', architecture.squeeze_excite_of(r.cfg)) == built


def block_order(name):
    """resnet50/stage3/block2/se/... -> (3, 2): the network's order of blocks."""
    stage, block = name.split('/')[1:3]
    return int(stage[len('stage'):]), int(block[len('block'):])


def se_scaled(graph, block):
    """What the block's SE multiplies: the op producing the scaled tensor."""
    mul = graph.get_operation_by_name(f'{block}/se/mul')
    return mul.inputs[0].op.name


def consumers(graph, tensor_name):
    return {op.name for op in graph.get_tensor_by_name(tensor_name).consumers()}


def test_se_standard_scales_the_residual_before_the_addition():
    g = graph_for('standard').graph
    for block in ('resnet50/stage2/block1', 'resnet50/stage3/block2'):
        assert se_scaled(g, block).startswith(f'{block}/conv3/bn/')
        assert consumers(g, f'{block}/se/mul:0') == {f'{block}/add'}


def test_se_pre_scales_the_residual_branch_input_only():
    g = graph_for('pre').graph
    # first block: the stem's pool output; SE feeds conv1, the projection sees the raw input
    b = 'resnet50/stage2/block1'
    assert se_scaled(g, b) == 'resnet50/pool1'
    assert consumers(g, f'{b}/se/mul:0') == {f'{b}/conv1/conv/Conv2D'}
    assert g.get_operation_by_name(f'{b}/shortcut/conv/Conv2D').inputs[0].name == 'resnet50/pool1:0'
    # identity-shortcut block: the previous block's output goes unscaled to the addition
    b = 'resnet50/stage2/block2'
    assert se_scaled(g, b) == 'resnet50/stage2/block1/relu'
    assert {t.name for t in g.get_operation_by_name(f'{b}/add').inputs} >= \
        {'resnet50/stage2/block1/relu:0'}


def test_se_post_scales_the_block_output_after_the_activation():
    g = graph_for('post').graph
    b = 'resnet50/stage4/block1'
    assert se_scaled(g, b) == f'{b}/relu'
    # the next block reads the SE output, in both branches
    assert consumers(g, f'{b}/se/mul:0') == {'resnet50/stage4/block2/conv1/conv/Conv2D',
                                             'resnet50/stage4/block2/add'}
    # no SE outside stage 4
    assert not [op for op in g.get_operations()
                if '/se/' in op.name and not op.name.startswith('resnet50/stage4/')]


def test_se_identity_scales_the_shortcut():
    g = graph_for('identity').graph
    b = 'resnet50/stage3/block1'  # projection shortcut
    assert se_scaled(g, b).startswith(f'{b}/shortcut/bn/')
    add_inputs = [t.name for t in g.get_operation_by_name(f'{b}/add').inputs]
    assert f'{b}/se/mul:0' in add_inputs
    assert any(name.startswith(f'{b}/conv3/bn/') for name in add_inputs)
    b = 'resnet50/stage3/block2'  # identity shortcut: the previous block's output
    assert se_scaled(g, b) == 'resnet50/stage3/block1/selu'  # built with SELU


def test_weight_decay_covers_every_resnet50_kernel_and_weight():
    g = graph_for('standard').graph
    names = [v.op.name for v in g.get_collection(v1.GraphKeys.WEIGHTS)]
    # 53 conv kernels, 2 per SE block, 3 in the head
    assert len(names) == len(set(names)) == 53 + 2 * 16 + 3
    assert all(n.endswith(('/kernel', '/weights')) for n in names)
    trainable = {v.op.name for v in g.get_collection(v1.GraphKeys.TRAINABLE_VARIABLES)}
    assert set(names) <= trainable
    assert not [n for n in trainable - set(names) if not n.endswith(('/bias', '/gamma', '/beta'))]


# --- SELU residual scale ------------------------------------------------------------------

def test_selu_resnet50_scales_every_sum_before_the_activation():
    g = graph_for('identity').graph  # built with SELU, default selu_residual_scale
    scale = constant.config['selu_residual_scale']
    assert scale == pytest.approx(1 / math.sqrt(2), abs=1e-4)
    for s in ALL_STAGES:
        for b in range(1, BLOCKS[s] + 1):
            block = f'resnet50/stage{s}/block{b}'
            mul = g.get_operation_by_name(f'{block}/selu').inputs[0].op
            assert mul.type == 'Mul', block
            names = [t.name for t in mul.inputs]
            assert f'{block}/add:0' in names, block
            (const,) = [t for t in mul.inputs if t.name != f'{block}/add:0']
            assert tf.get_static_value(const) == pytest.approx(scale, rel=1e-6)


def resnet_architecture(**overrides):
    return architecture.from_config(config(model='resnet50', dataset_name='digits', **overrides))


def test_bottleneck_activation_of_the_scaled_sum(session):
    """AF(s * (residual + shortcut)) under SELU; the sum itself under ReLU or s = 1."""
    x = tf.constant(np.random.default_rng(7).normal(size=(2, 4, 4, 8)).astype(np.float32) * 2)
    v1.set_random_seed(0)
    cases = {'selu_half': dict(activation_fn='selu', selu_residual_scale=0.5),
             'selu_one': dict(activation_fn='selu', selu_residual_scale=1.0),
             'relu_half': dict(activation_fn='relu', selu_residual_scale=0.5)}
    outputs = {name: bottleneck(x, 2, 1, True, False, resnet_architecture(**kw), None, name)
               for name, kw in cases.items()}
    sums = {name: v1.get_default_graph().get_tensor_by_name(f'{name}/add:0') for name in cases}
    v1.global_variables_initializer().run()
    got, total = session.run([outputs, sums])
    for name in cases:
        assert (total[name] < 0).any() and (total[name] > 0).any()
    t = {k: v.astype(np.float64) for k, v in total.items()}
    np.testing.assert_allclose(got['selu_half'], np_selu(0.5 * t['selu_half']), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got['selu_one'], np_selu(t['selu_one']), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got['relu_half'], np.maximum(t['relu_half'], 0), rtol=1e-6)
    assert outputs['selu_one'].op.inputs[0].name == 'selu_one/add:0'
    assert outputs['relu_half'].op.inputs[0].name == 'relu_half/add:0'


# --- settings of the new keys ---------------------------------------------------------------

@pytest.mark.parametrize('args, message', [
    (['se_squeeze=mean'], "se_squeeze='mean' is not valid; choose one of: avg, max"),
    (['se_excitation=softmax'], "se_excitation='softmax' is not valid; choose one of: sigmoid, "
                                "tanh, relu"),
    (['se_integration=middle'], "se_integration='middle' is not valid; choose one of: standard, "
                                "pre, post, identity"),
    (['se_stages=[1]'], 'se_stages must be a list of distinct whole numbers from 2 to 5, got [1]'),
    (['se_stages=[6]'], 'se_stages must be a list of distinct whole numbers from 2 to 5'),
    (['se_stages=[2, 2]'], 'se_stages must be a list of distinct whole numbers from 2 to 5'),
    (['se_stages=[]'], 'se_stages must be a list of distinct whole numbers from 2 to 5, got []'),
    (['se_stages=3'], 'se_stages must be a list'),
    (['dropout=1.0'], 'dropout must be a number from 0 up to (not including) 1, got 1.0'),
    (['dropout=-0.1'], 'dropout must be a number from 0 up to (not including) 1'),
    (['label_smoothing=1'], 'label_smoothing must be a number from 0 up to (not including) 1'),
    (['momentum=1.0'], 'momentum must be a number from 0 up to (not including) 1'),
    (['optimizer=sgd'], "optimizer='sgd' is not valid; choose one of: adam, adamw, momentum, nesterov"),
    (['lr_schedule=step'], "lr_schedule='step' is not valid; choose one of: exponential, "
                           "piecewise, cosine"),
    (['lr_boundaries=[8, 5]'], 'lr_boundaries must be a list of distinct increasing whole numbers'),
    (['lr_boundaries=[5, 5]'], 'lr_boundaries must be a list of distinct increasing whole numbers'),
    (['lr_boundaries=[0, 5]'], 'lr_boundaries must be a list of distinct increasing whole numbers'),
    (['lr_boundaries=[]'], 'lr_boundaries must be a list of distinct increasing whole numbers'),
    (['lr_factor=0'], 'lr_factor must be greater than 0'),
    (['lr_factor=2'], 'lr_factor must be at least 0.0 and at most 1.0, got 2'),
    (['weight_decay=-1e-4'], 'weight_decay must be at least 0.0'),
    (['selu_residual_scale=0'], 'selu_residual_scale must be greater than 0'),
    (['selu_residual_scale=1.5'], 'selu_residual_scale must be at least 0.0 and at most 1.0'),
    (['run_name=a/b'], "run_name='a/b' may hold only letters, digits and . _ + -"),
    (['run_name=.hidden'], "run_name='.hidden' may hold only letters"),
    (['run_name=a b'], "run_name='a b' may hold only letters"),
    (['use_se=True', 'se_integration=pre'],
     "se_integration='pre' applies to resnet50's residual blocks and custom_model has none; "
     "set model=resnet50"),
    (['use_se=True', 'se_stages=[4]'],
     "se_stages=[4] applies to resnet50's residual blocks and custom_model has none"),
    (['model=resnet50', 'use_se=True', 'se_stages=[5]', 'se_r=2049'], 'choose se_r <= 2048'),
    (['model=resnet50', 'use_se=True', 'se_stages=[5]', 'se_integration=pre', 'se_r=1025'],
     'choose se_r <= 1024'),
    (['model=resnet50', 'use_se=True', 'se_stages=[3, 4]', 'se_integration=pre', 'se_r=257'],
     'choose se_r <= 256'),
])
def test_bad_new_keys_name_the_key_and_the_choices(args, message):
    with pytest.raises(ConfigError) as error:
        load_config(args)
    assert message in str(error.value)
    assert '\n' not in str(error.value)


@pytest.mark.parametrize('args', [
    ['model=resnet50', 'use_se=True', 'se_stages=[5]', 'se_r=2048'],
    ['model=resnet50', 'use_se=True', 'se_stages=[5]', 'se_integration=pre', 'se_r=1024'],
    ['model=resnet50', 'use_se=True', 'se_stages=[3, 5]', 'se_integration=post'],
    ['use_se=False', 'se_integration=pre', 'se_stages=[4]'],  # SE off: nothing to place
    ['dropout=0.5', 'label_smoothing=0.1', 'weight_decay=5e-4', 'optimizer=momentum',
     'lr_schedule=piecewise', 'lr_boundaries=[3, 6, 9]', 'selu_residual_scale=1'],
    ['run_name=my_run-1.2+se'],
])
def test_good_new_keys_are_accepted(args):
    cfg = load_config(args)
    for arg in args:
        key, _, text = arg.partition('=')
        assert cfg[key] == settings.parse_value(text)
    if 'run_name=my_run-1.2+se' in args:
        assert constant.run_name(cfg) == 'my_run-1.2+se'


def grids_config(grids, grid='mine'):
    return dict(constant.config, experiment_grids=grids, experiment_grid=grid)


@pytest.mark.parametrize('grids, message', [
    ({'mine': {'modle': ['resnet50']}}, "experiment_grids['mine'] varies 'modle', which cannot"),
    ({'mine': {'datasets': [['digits']]}}, "experiment_grids['mine'] varies 'datasets'"),
    ({'mine': {'model': []}}, 'none empty'),
    ({'mine': {'model': 'resnet50'}}, 'none empty'),
    ({'mine': [{}]}, 'none empty'),
    ({'mine': []}, 'empty list: it would run nothing'),
    ({'mine': [{'use_se': [True]}, {'se_r': []}]}, "experiment_grids['mine'] must be"),
    ({'mine': [{'use_se': [True]}, 'se_r']}, "experiment_grids['mine'] must be"),
    ({}, 'experiment_grids must map grid names to grids'),
])
def test_bad_experiment_grids(grids, message):
    with pytest.raises(ConfigError) as error:
        load_config([], base=grids_config(grids, grid=next(iter(grids), 'seed')))
    assert message in str(error.value)


def test_experiment_grid_must_name_one_of_the_grids():
    grids = {'mine': {'use_se': [False, True]}, 'other': [{'se_r': [4, 8]}]}
    assert load_config(['experiment_grid=other'], base=grids_config(grids))['experiment_grid'] \
        == 'other'
    with pytest.raises(ConfigError, match="experiment_grid='seed' is not valid; choose one of: "
                                          "mine, other"):
        load_config(['experiment_grid=seed'], base=grids_config(grids))
    # the grids are fixed in constant.py, not set on the command line
    with pytest.raises(ConfigError, match='experiment_grids lists the choices'):
        load_config(['experiment_grids={}'])


def test_every_point_of_the_shipped_grids_is_a_valid_config():
    for name, grid in constant.config['experiment_grids'].items():
        parts = grid if isinstance(grid, list) else [grid]
        points = [dict(zip(part, values)) for part in parts
                  for values in itertools.product(*part.values())]
        assert points, name
        for point in points:
            load_config([], base=dict(constant.config, **point))


def test_weight_penalty_covers_this_models_weights_when_built_inside_another_scope(graph):
    Model.from_config(config(), (8, 8, 1))  # a model of the same name at the top level
    with v1.variable_scope('other'):
        inner = Model.from_config(config(weight_decay=0.01), (8, 8, 1))
    penalised = {op.inputs[0].op.inputs[0].name for op in graph.get_operations()
                 if op.type == 'L2Loss'}  # L2Loss <- ReadVariableOp <- the variable
    assert penalised and all(name.startswith('other/custom_model/') for name in penalised)
    assert all(v.name.startswith('other/') for v in inner.trainable_variables())


def _augmented_batch(session, source, seed):
    source.start(session, 'train', training=True, seed=seed)
    images, _ = session.run(source.next_batch)
    data = source.data
    return np.rint(images * data.std + data.mean).astype(np.int64)  # back to pixel values


@pytest.mark.parametrize('flip', [False, True])
def test_augment_gives_reproducible_shifted_crops_of_the_padded_image(session, flip):
    from foundation.data import loaders
    from foundation.data.input_pipeline import ArrayInput
    data = loaders.load_digits(None, 0, False)
    source = ArrayInput(data, 64, 250, augmentation=(1, flip))
    batch = _augmented_batch(session, source, seed=7)
    order = np.random.default_rng(7).permutation(data.num_examples('train'))[:64]
    originals = data.train.images[order].astype(np.int64)
    shifted = flipped = 0
    for image, original in zip(batch, originals):
        padded = np.pad(original, [(1, 1), (1, 1), (0, 0)], mode='reflect')  # TF's REFLECT
        windows = {(dy, dx, mirrored) for dy in range(3) for dx in range(3) for mirrored in (0, 1)
                   if np.array_equal(image, padded[dy:dy + 8, dx:dx + 8][:, ::-1 if mirrored else 1])}
        assert windows, 'not a crop of the padded image'
        shifted += (1, 1, 0) not in windows
        flipped += all(mirrored for _, _, mirrored in windows)
    assert shifted > 32  # 8 of 9 offsets move the image
    assert (flipped > 16) if flip else (flipped == 0)
    np.testing.assert_array_equal(_augmented_batch(session, source, seed=7), batch)  # reproducible
    source.start(session, 'valid', training=False)  # evaluation is never augmented
    images, _ = session.run(source.next_batch)
    np.testing.assert_allclose(images[0] * data.std + data.mean, data.valid.images[0], atol=1e-3)
