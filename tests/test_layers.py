"""layers.py against independent numpy references (float64)."""
import numpy as np
import pytest
import tensorflow as tf

import layers

v1 = tf.compat.v1

ALPHA = 1.6732632423543772848170429916717
LAMBDA = 1.0507009873554804934193349852946


def np_selu(x):
    x = np.asarray(x, np.float64)
    neg = LAMBDA * ALPHA * (np.exp(np.minimum(x, 0.0)) - 1.0)
    return np.where(x > 0, LAMBDA * x, neg)


def np_sigmoid(x):
    return 0.5 * (1.0 + np.tanh(np.asarray(x, np.float64) / 2.0))


def same_pads(size, k, s):
    """TF 'SAME': output ceil(size / s), the extra pad goes after."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return out, total // 2, total - total // 2


def np_conv2d_same(x, w, s):
    """Cross-correlation, NHWC x, HWIO w, SAME padding."""
    n, h, wd, _ = x.shape
    k = w.shape[0]
    oh, pt, pb = same_pads(h, k, s)
    ow, pl, pr = same_pads(wd, k, s)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    out = np.zeros((n, oh, ow, w.shape[3]))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, i * s:i * s + k, j * s:j * s + k, :]
            out[:, i, j, :] = np.einsum('nhwc,hwco->no', patch, w)
    return out


def np_max_pool_same(x, k, s):
    n, h, wd, c = x.shape
    oh, pt, pb = same_pads(h, k, s)
    ow, pl, pr = same_pads(wd, k, s)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=-np.inf)
    out = np.zeros((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            out[:, i, j, :] = xp[:, i * s:i * s + k, j * s:j * s + k, :].max(axis=(1, 2))
    return out


def var(name):
    (v,) = [v for v in v1.global_variables() if v.op.name == name]
    return v


def init(session):
    session.run(v1.global_variables_initializer())


# --- activations ---------------------------------------------------------------

SELU_INPUTS = [-1000.0, -100.0, -20.0, -5.0, -1.0, -0.5, -1e-3, 0.0,
               1e-3, 0.5, 1.0, 5.0, 20.0, 88.0, 89.0, 100.0, 1000.0]


def test_selu_constants_match_spec():
    assert layers.SELU_ALPHA == ALPHA
    assert layers.SELU_LAMBDA == LAMBDA


def test_selu_values(session):
    x = np.array(SELU_INPUTS, np.float32)
    got = session.run(layers.selu(tf.constant(x)))
    np.testing.assert_allclose(got, np_selu(x), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('x0', [0.5, 1.0, 20.0, 89.0, 100.0, 1000.0])
def test_selu_gradient_positive_is_lambda(session, x0):
    x = tf.constant([x0], tf.float32)
    (g,) = session.run(tf.gradients(tf.reduce_sum(layers.selu(x)), x))
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, [LAMBDA], rtol=1e-6)


@pytest.mark.parametrize('x0', [-1e-3, -0.5, -1.0, -5.0, -20.0])
def test_selu_gradient_negative(session, x0):
    x = tf.constant([x0], tf.float32)
    (g,) = session.run(tf.gradients(tf.reduce_sum(layers.selu(x)), x))
    # tf's SELU gradient is output + lambda*alpha in float32: absolute error
    # up to ~1 ulp of lambda*alpha (2e-7), e.g. 0 instead of 3.6e-9 at -20
    np.testing.assert_allclose(g, [LAMBDA * ALPHA * np.exp(x0)], rtol=1e-5, atol=2.5e-7)


def test_selu_gradient_finite_for_large_negative(session):
    x = tf.constant([-1000.0, -100.0], tf.float32)
    (g,) = session.run(tf.gradients(tf.reduce_sum(layers.selu(x)), x))
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, [0.0, 0.0], atol=1e-30)


def test_relu_and_sigmoid_values(session):
    x = np.linspace(-30, 30, 121).astype(np.float32)
    r, s = session.run([layers.relu(tf.constant(x)), layers.sigmoid(tf.constant(x))])
    np.testing.assert_array_equal(r, np.maximum(x, 0))
    np.testing.assert_allclose(s, np_sigmoid(x), rtol=1e-6, atol=1e-7)


# --- conv, pooling, flatten, fc ---------------------------------------------------

@pytest.mark.parametrize('size, k, s, expected', [
    (7, 3, 1, 7), (7, 3, 2, 4), (8, 5, 2, 4), (8, 4, 1, 8), (1, 3, 2, 1)])
def test_conv2d_same_output_shape(graph, size, k, s, expected):
    x = v1.placeholder(tf.float32, [None, size, size, 3])
    y = layers.conv2d(x, 6, k, s)
    assert y.shape.as_list() == [None, expected, expected, 6]


@pytest.mark.parametrize('k, s', [(3, 1), (3, 2), (4, 1), (4, 2), (5, 2)])
def test_conv2d_values_against_numpy(session, k, s):
    rng = np.random.default_rng(k * 10 + s)
    x = rng.normal(size=(2, 7, 7, 3)).astype(np.float32)
    y = layers.conv2d(tf.constant(x), 4, k, s, name='c')
    kernel = var('c/kernel')
    bias = var('c/bias')
    init(session)
    b = rng.normal(size=4).astype(np.float32)
    session.run(bias.assign(b))  # non-zero bias, so its addition is checked
    got, w = session.run([y, kernel])
    ref = np_conv2d_same(x.astype(np.float64), w.astype(np.float64), s) + b
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_conv2d_activation_applied(session):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 5, 5, 2)).astype(np.float32)
    y = layers.conv2d(tf.constant(x), 3, 3, activation=layers.relu, name='c')
    init(session)
    got, w = session.run([y, var('c/kernel')])
    ref = np.maximum(np_conv2d_same(x.astype(np.float64), w.astype(np.float64), 1), 0)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    assert (got == 0).any() and (got > 0).any()


def test_conv2d_variables(graph):
    x = v1.placeholder(tf.float32, [None, 8, 8, 3])
    layers.conv2d(x, 16, 5, name='with_bias')
    layers.conv2d(x, 32, 3, use_bias=False, name='no_bias')
    shapes = {v.op.name: v.shape.as_list() for v in v1.global_variables()}
    assert shapes == {'with_bias/kernel': [5, 5, 3, 16], 'with_bias/bias': [16],
                      'no_bias/kernel': [3, 3, 3, 32]}


@pytest.mark.parametrize('size, pool, s', [(6, 2, 2), (7, 2, 2), (7, 3, 2), (5, [2, 2], 2),
                                           (6, 3, 1)])
def test_max_pool2d(session, size, pool, s):
    x = np.random.default_rng(size).normal(size=(2, size, size, 3)).astype(np.float32)
    y = layers.max_pool2d(tf.constant(x), pool, s)
    k = pool if isinstance(pool, int) else pool[0]
    ref = np_max_pool_same(x, k, s)
    assert y.shape.as_list() == list(ref.shape)
    np.testing.assert_array_equal(session.run(y), ref)


@pytest.mark.parametrize('kind', ['avg', 'max'])
def test_global_pool(session, kind):
    x = np.random.default_rng(0).normal(size=(3, 4, 5, 6)).astype(np.float32)
    y = layers.global_pool(tf.constant(x), kind)
    ref = x.mean(axis=(1, 2)) if kind == 'avg' else x.max(axis=(1, 2))
    assert y.shape.as_list() == [3, 6]
    np.testing.assert_allclose(session.run(y), ref, rtol=1e-5, atol=1e-6)


def test_global_pool_default_is_avg(session):
    x = np.random.default_rng(0).normal(size=(2, 3, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(session.run(layers.global_pool(tf.constant(x))),
                               x.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


def test_flatten(session):
    x = v1.placeholder(tf.float32, [None, 3, 4, 5])
    y = layers.flatten(x)
    assert y.shape.as_list() == [None, 60]
    data = np.arange(2 * 60, dtype=np.float32).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(session.run(y, {x: data}), data.reshape(2, 60))


def test_fc_values(session):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 7)).astype(np.float32)
    y = layers.fc(tf.constant(x), 5, name='fc')
    y_act = layers.fc(tf.constant(x), 5, activation=layers.relu, name='fc_relu')
    init(session)
    b = rng.normal(size=5).astype(np.float32)
    session.run([var('fc/bias').assign(b), var('fc_relu/bias').assign(b)])
    got, got_act, w, w_act = session.run(
        [y, y_act, var('fc/weights'), var('fc_relu/weights')])
    assert w.shape == (7, 5)
    np.testing.assert_allclose(got, x.astype(np.float64) @ w + b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_act, np.maximum(x.astype(np.float64) @ w_act + b, 0),
                               rtol=1e-5, atol=1e-5)


def test_fc_without_bias(session):
    x = np.random.default_rng(4).normal(size=(3, 6)).astype(np.float32)
    y = layers.fc(tf.constant(x), 2, use_bias=False, name='fc')
    assert [v.op.name for v in v1.global_variables()] == ['fc/weights']
    init(session)
    got, w = session.run([y, v1.global_variables()[0]])
    np.testing.assert_allclose(got, x.astype(np.float64) @ w, rtol=1e-5, atol=1e-5)


# --- batch normalisation -----------------------------------------------------------

DECAY = 0.9
EPS = 1.001e-5


def test_bn_constants():
    assert layers.BN_DECAY == DECAY
    assert layers.BN_EPSILON == EPS


def _bn_setup(session, shape, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[-1]
    x = (rng.normal(size=shape) * rng.uniform(0.5, 3, c) + rng.normal(0, 2, c)).astype(np.float32)
    ph = v1.placeholder(tf.float32, [None, *shape[1:]])
    is_training = v1.placeholder_with_default(False, [])
    y = layers.batch_normalization(ph, is_training, name='bn')
    var = {n: globals()['var'](f'bn/{n}')
           for n in ('gamma', 'beta', 'moving_mean', 'moving_variance')}
    init(session)
    gamma = rng.uniform(0.5, 2, c).astype(np.float32)
    beta = rng.normal(size=c).astype(np.float32)
    session.run([var['gamma'].assign(gamma), var['beta'].assign(beta)])
    return x, ph, is_training, y, var, gamma, beta


@pytest.mark.parametrize('shape', [(4, 5, 5, 3), (6, 4)])
def test_bn_training_uses_batch_statistics(session, shape):
    x, ph, is_training, y, _, gamma, beta = _bn_setup(session, shape)
    axes = tuple(range(len(shape) - 1))
    x64 = x.astype(np.float64)
    ref = (x64 - x64.mean(axes)) / np.sqrt(x64.var(axes) + EPS) * gamma + beta
    got = session.run(y, {ph: x, is_training: True})
    assert got.shape == x.shape
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('shape', [(4, 5, 5, 3), (6, 4)])
def test_bn_update_ops_move_averages(session, shape):
    x, ph, is_training, _, var, _, _ = _bn_setup(session, shape)
    updates = v1.get_collection(v1.GraphKeys.UPDATE_OPS)
    assert len(updates) == 2
    session.run(updates, {ph: x, is_training: True})
    axes = tuple(range(len(shape) - 1))
    x64 = x.astype(np.float64)
    n = x64.size // shape[-1]
    unbiased = x64.var(axes) * n / (n - 1)
    mm, mv = session.run([var['moving_mean'], var['moving_variance']])
    np.testing.assert_allclose(mm, (1 - DECAY) * x64.mean(axes), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mv, DECAY * 1.0 + (1 - DECAY) * unbiased, rtol=1e-4, atol=1e-5)


def test_bn_update_ops_in_inference_leave_averages(session):
    x, ph, _, _, var, _, _ = _bn_setup(session, (4, 3, 3, 2))
    known_mean, known_var = np.array([0.3, -2.0], np.float32), np.array([4.0, 0.25], np.float32)
    session.run([var['moving_mean'].assign(known_mean), var['moving_variance'].assign(known_var)])
    session.run(v1.get_collection(v1.GraphKeys.UPDATE_OPS), {ph: x})  # is_training False
    mm, mv = session.run([var['moving_mean'], var['moving_variance']])
    np.testing.assert_allclose(mm, known_mean, rtol=1e-6)
    np.testing.assert_allclose(mv, known_var, rtol=1e-6)


@pytest.mark.parametrize('shape', [(4, 5, 5, 3), (6, 4)])
def test_bn_inference_uses_moving_averages(session, shape):
    x, ph, is_training, y, var, gamma, beta = _bn_setup(session, shape)
    c = shape[-1]
    rng = np.random.default_rng(9)
    mean = rng.normal(0, 2, c).astype(np.float32)
    variance = rng.uniform(0.2, 5, c).astype(np.float32)
    session.run([var['moving_mean'].assign(mean), var['moving_variance'].assign(variance)])
    ref = (x.astype(np.float64) - mean) / np.sqrt(variance.astype(np.float64) + EPS) * gamma + beta
    got_default = session.run(y, {ph: x})
    got_false = session.run(y, {ph: x, is_training: False})
    np.testing.assert_allclose(got_default, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_false, ref, rtol=1e-4, atol=1e-4)
    # and it is not the batch-statistics result
    got_train = session.run(y, {ph: x, is_training: True})
    assert not np.allclose(got_train, ref, atol=1e-2)


def test_bn_variables_and_static_shape(graph):
    x4 = v1.placeholder(tf.float32, [None, 5, 5, 3])
    x2 = v1.placeholder(tf.float32, [None, 4])
    is_training = v1.placeholder_with_default(False, [])
    y4 = layers.batch_normalization(x4, is_training, name='bn4')
    y2 = layers.batch_normalization(x2, is_training, name='bn2')
    assert y4.shape.as_list() == [None, 5, 5, 3]
    assert y2.shape.as_list() == [None, 4]
    trainable = sorted(v.op.name for v in v1.trainable_variables())
    assert trainable == ['bn2/beta', 'bn2/gamma', 'bn4/beta', 'bn4/gamma']
    assert len(v1.global_variables()) == 8


# --- initialisers --------------------------------------------------------------

FAN_IN_SHAPE = [3, 3, 256, 256]  # fan_in 2304, 589,824 weights


@pytest.mark.parametrize('make, scale', [(layers.lecun_normal, 1.0), (layers.he_normal, 2.0),
                                         (lambda: layers.initializer_for('selu'), 1.0),
                                         (lambda: layers.initializer_for('relu'), 2.0)])
def test_initializer_std(session, make, scale):
    v1.set_random_seed(1)
    w = v1.get_variable('w', FAN_IN_SHAPE, initializer=make())
    init(session)
    w = session.run(w)
    expected = np.sqrt(scale / (3 * 3 * 256))
    assert abs(w.std() / expected - 1) < 0.05
    assert abs(w.mean()) < 0.05 * expected
    # untruncated normal: about 4.6 % lie beyond 2 standard deviations
    assert 0.03 < np.mean(np.abs(w) > 2 * expected) < 0.06


# --- data formats: NCHW against the NHWC path -----------------------------------------
# The NHWC layers are checked against numpy above; here each NCHW layer gets the
# same data (transposed) and the very same variables, and must give the same
# values (transposed back), so a checkpoint means the same in either format.

def to_nchw(x):
    return np.transpose(x, (0, 3, 1, 2))


def to_nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


def reusing():
    """The current variable scope with reuse: the second layer gets the first's variables
    (and get_variable refuses a shape that differs)."""
    return v1.variable_scope(v1.get_variable_scope(), reuse=True)


def test_channel_and_spatial_axes():
    assert layers.channel_axis('NHWC') == -1 and layers.channel_axis('NCHW') == 1
    assert layers.spatial_axes('NHWC') == [1, 2] and layers.spatial_axes('NCHW') == [2, 3]


def test_to_data_format_transposes_nhwc_images(session):
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    nchw, nhwc = session.run([layers.to_data_format(tf.constant(x), 'NCHW'),
                              layers.to_data_format(tf.constant(x), 'NHWC')])
    np.testing.assert_array_equal(nchw, to_nchw(x))
    np.testing.assert_array_equal(nhwc, x)


@pytest.mark.nchw
@pytest.mark.parametrize('size, k, s', [(7, 3, 1), (7, 3, 2), (8, 5, 2), (6, 1, 2)])
def test_conv2d_nchw_matches_nhwc(session, size, k, s):
    rng = np.random.default_rng(size * 100 + k * 10 + s)
    x = rng.normal(size=(2, size, size, 3)).astype(np.float32)
    nhwc = layers.conv2d(tf.constant(x), 4, k, s, activation=layers.relu, name='c')
    with reusing():
        nchw = layers.conv2d(tf.constant(to_nchw(x)), 4, k, s, activation=layers.relu,
                             data_format='NCHW', name='c')
    assert sorted(v.op.name for v in v1.global_variables()) == ['c/bias', 'c/kernel']
    out = -(-size // s)
    assert nchw.shape.as_list() == [2, 4, out, out]
    init(session)
    # a non-zero bias, so that it must be added along the channel axis
    session.run(var('c/bias').assign(rng.normal(size=4).astype(np.float32)))
    got_nhwc, got_nchw = session.run([nhwc, nchw])
    assert (got_nhwc == 0).any() and (got_nhwc > 0).any()  # the ReLU acted
    np.testing.assert_allclose(to_nhwc(got_nchw), got_nhwc, rtol=1e-5, atol=1e-5)


@pytest.mark.nchw
def test_conv2d_nchw_gradients_match_nhwc(session):
    """Training in NCHW moves the shared weights as NHWC training does."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 7, 7, 3)).astype(np.float32)
    target = rng.normal(size=(2, 4, 4, 4)).astype(np.float32)
    nhwc = layers.conv2d(tf.constant(x), 4, 3, 2, name='c')
    with reusing():
        nchw = layers.conv2d(tf.constant(to_nchw(x)), 4, 3, 2, data_format='NCHW', name='c')
    weights = [var('c/kernel'), var('c/bias')]
    grads_nhwc = tf.gradients(tf.reduce_sum(tf.square(nhwc - target)), weights)
    grads_nchw = tf.gradients(tf.reduce_sum(tf.square(nchw - to_nchw(target))), weights)
    init(session)
    for a, b in zip(*session.run([grads_nhwc, grads_nchw])):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)


@pytest.mark.nchw
@pytest.mark.parametrize('size, pool, s', [(6, 2, 2), (7, 2, 2), (7, 3, 2), (5, [2, 2], 2),
                                           (6, 3, 1)])
def test_max_pool2d_nchw_matches_nhwc(session, size, pool, s):
    x = np.random.default_rng(size).normal(size=(2, size, size, 3)).astype(np.float32)
    nhwc = layers.max_pool2d(tf.constant(x), pool, s)
    nchw = layers.max_pool2d(tf.constant(to_nchw(x)), pool, s, data_format='NCHW')
    out = -(-size // s)
    assert nchw.shape.as_list() == [2, 3, out, out]
    got_nhwc, got_nchw = session.run([nhwc, nchw])
    np.testing.assert_array_equal(to_nhwc(got_nchw), got_nhwc)  # a max is exact


@pytest.mark.parametrize('kind', ['avg', 'max'])
def test_global_pool_nchw_matches_nhwc(session, kind):
    x = np.random.default_rng(0).normal(size=(3, 4, 5, 6)).astype(np.float32)
    nhwc = layers.global_pool(tf.constant(x), kind)
    nchw = layers.global_pool(tf.constant(to_nchw(x)), kind, data_format='NCHW')
    assert nchw.shape.as_list() == [3, 6]
    got_nhwc, got_nchw = session.run([nhwc, nchw])
    np.testing.assert_allclose(got_nchw, got_nhwc, rtol=1e-6, atol=1e-6)
    ref = x.mean(axis=(1, 2)) if kind == 'avg' else x.max(axis=(1, 2))
    np.testing.assert_allclose(got_nchw, ref, rtol=1e-5, atol=1e-6)


def test_flatten_nchw_gives_features_in_nhwc_order(session):
    """The FC layer after flatten must see the same feature order in both formats."""
    data = np.arange(2 * 60, dtype=np.float32).reshape(2, 3, 4, 5)  # NHWC
    x_nchw = v1.placeholder(tf.float32, [None, 5, 3, 4])
    y_nchw = layers.flatten(x_nchw, data_format='NCHW')
    y_nhwc = layers.flatten(tf.constant(data))
    assert y_nchw.shape.as_list() == [None, 60]
    got_nchw, got_nhwc = session.run([y_nchw, y_nhwc], {x_nchw: to_nchw(data)})
    np.testing.assert_array_equal(got_nchw, got_nhwc)
    np.testing.assert_array_equal(got_nchw, data.reshape(2, 60))
    # not just a reshape of the NCHW data, which would be another order
    assert not np.array_equal(got_nchw, to_nchw(data).reshape(2, 60))


def test_flatten_nchw_leaves_rank_2_input_alone(session):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(
        session.run(layers.flatten(tf.constant(x), data_format='NCHW')), x)


def _bn_pair(session, x, data_format_of_second, seed=0):
    """Batch norm 'bn' on x (NHWC or [N, C]) and, on the same variables, on x in
    the second format; random gamma, beta and moving averages."""
    c = x.shape[-1]
    is_training = v1.placeholder_with_default(False, [])
    first = layers.batch_normalization(tf.constant(x), is_training, name='bn')
    n_updates = len(v1.get_collection(v1.GraphKeys.UPDATE_OPS))
    x2 = to_nchw(x) if x.ndim == 4 and data_format_of_second == 'NCHW' else x
    with reusing():
        second = layers.batch_normalization(tf.constant(x2), is_training,
                                            data_format=data_format_of_second, name='bn')
    second_updates = v1.get_collection(v1.GraphKeys.UPDATE_OPS)[n_updates:]
    init(session)
    rng = np.random.default_rng(seed)
    values = {'gamma': rng.uniform(0.5, 2, c), 'beta': rng.normal(size=c),
              'moving_mean': rng.normal(0, 2, c), 'moving_variance': rng.uniform(0.2, 5, c)}
    session.run([var(f'bn/{n}').assign(v.astype(np.float32)) for n, v in values.items()])
    return is_training, first, second, second_updates


def _bn_input(shape, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[-1]
    x = rng.normal(size=shape) * rng.uniform(0.5, 3, c) + rng.normal(0, 2, c)
    return x.astype(np.float32)


@pytest.mark.parametrize('training', [True, False])
def test_bn_nchw_matches_nhwc(session, training):
    x = _bn_input((4, 5, 5, 3))
    is_training, nhwc, nchw, _ = _bn_pair(session, x, 'NCHW')
    assert nchw.shape.as_list() == [4, 3, 5, 5]
    assert sorted(v.op.name for v in v1.global_variables()) == [
        'bn/beta', 'bn/gamma', 'bn/moving_mean', 'bn/moving_variance']
    got_nhwc, got_nchw = session.run([nhwc, nchw], {is_training: training})
    np.testing.assert_allclose(to_nhwc(got_nchw), got_nhwc, rtol=1e-4, atol=1e-4)
    # training normalises by the batch: each channel has mean beta then
    ch_mean = to_nhwc(got_nchw).mean(axis=(0, 1, 2))
    beta = session.run(var('bn/beta'))
    assert np.allclose(ch_mean, beta, atol=1e-3) == training


def test_bn_nchw_update_ops_average_over_the_right_axes(session):
    x = _bn_input((4, 5, 5, 3))
    is_training, _, _, nchw_updates = _bn_pair(session, x, 'NCHW')
    assert len(nchw_updates) == 2
    mm0, mv0 = session.run([var('bn/moving_mean'), var('bn/moving_variance')])
    session.run(nchw_updates, {is_training: True})
    mm, mv = session.run([var('bn/moving_mean'), var('bn/moving_variance')])
    # statistics per channel over N, H, W; NCHW data are the same numbers transposed
    x64 = x.astype(np.float64)
    n = x64.size // 3
    np.testing.assert_allclose(mm, DECAY * mm0 + (1 - DECAY) * x64.mean((0, 1, 2)),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mv, DECAY * mv0 + (1 - DECAY) * x64.var((0, 1, 2)) * n / (n - 1),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('training', [True, False])
def test_bn_rank_2_input_with_nchw_behaves_as_nhwc(session, training):
    """[N, C] (after a global pool or an FC layer) has its channels last in either format."""
    x = _bn_input((6, 4))
    is_training, nhwc, nchw, _ = _bn_pair(session, x, 'NCHW')
    assert nchw.shape.as_list() == [6, 4]
    assert var('bn/gamma').shape.as_list() == [4]
    got_nhwc, got_nchw = session.run([nhwc, nchw], {is_training: training})
    np.testing.assert_allclose(got_nchw, got_nhwc, rtol=1e-5, atol=1e-5)
    x64 = x.astype(np.float64)
    gamma, beta, mean, variance = session.run(
        [var(f'bn/{n}') for n in ('gamma', 'beta', 'moving_mean', 'moving_variance')])
    if training:
        mean, variance = x64.mean(0), x64.var(0)
    ref = (x64 - mean) / np.sqrt(variance + EPS) * gamma + beta
    np.testing.assert_allclose(got_nchw, ref, rtol=1e-4, atol=1e-4)
