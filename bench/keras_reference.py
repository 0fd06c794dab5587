"""A Keras 3 twin of Model.py, trained with `fit`, for benchmarks only.

The project itself does not depend on Keras; this file is the one place that
uses it, so a bench can compare the graph-mode training step with Keras' own
loop on exactly the same architecture (layers, order, shapes, initialisers,
batch norm settings, loss and optimiser). Layer names follow Model.py's
variable scopes with '_' for '/' (Keras refuses '/' in names).
"""
import time

import keras
import numpy as np

from foundation.networks.architecture import CUSTOM_FILTERS, RESNET50_STAGES

DATA_FORMAT = 'channels_last'  # Model.py is NHWC throughout
BN_MOMENTUM = 0.9  # layers.BN_DECAY
BN_EPSILON = 1.001e-5  # layers.BN_EPSILON
ADAM_EPSILON = 1e-8  # tf.compat.v1.train.AdamOptimizer's default (Keras' is 1e-7)


# --- building blocks -------------------------------------------------------------

def _initializer(scale):
    """Variance scaling, fan_in, untruncated normal, as layers.he_normal/lecun_normal.

    A fresh instance per layer: Keras warns about reusing one unseeded instance.
    """
    return keras.initializers.VarianceScaling(scale, 'fan_in', 'untruncated_normal')


def _initializer_scale(activation):
    """layers.initializer_for: LeCun-normal (1.0) for SELU, He-normal (2.0) otherwise."""
    return 1.0 if activation == 'selu' else 2.0


def _dense(x, units, activation, scale, name):
    return keras.layers.Dense(units, activation=activation,
                              kernel_initializer=_initializer(scale), name=name)(x)


def _squeeze_excite(x, r, name):
    """SE: global avg pool -> FC C/r relu -> FC C sigmoid -> x * s.

    Model.squeeze_excite calls layers.fc without an initializer, so both FCs
    get he_normal (scale 2) and ReLU whatever the network's activation is.
    """
    channels = x.shape[-1]
    s = keras.layers.GlobalAveragePooling2D(data_format=DATA_FORMAT, name=f'{name}_pool')(x)
    s = _dense(s, channels // r, 'relu', 2.0, f'{name}_fc1')
    s = _dense(s, channels, 'sigmoid', 2.0, f'{name}_fc2')
    s = keras.layers.Reshape((1, 1, channels), name=f'{name}_reshape')(s)
    return keras.layers.Multiply(name=f'{name}_scale')([x, s])


def _conv_bn(x, filters, kernel_size, strides, activation, scale, name, padding='same'):
    """conv (no bias: BN's beta replaces it) + BN (+ activation when given)."""
    x = keras.layers.Conv2D(filters, kernel_size, strides, padding=padding,
                            data_format=DATA_FORMAT, use_bias=False,
                            kernel_initializer=_initializer(scale), name=f'{name}_conv')(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                        name=f'{name}_bn')(x)
    return keras.layers.Activation(activation, name=f'{name}_act')(x) if activation else x


def _bottleneck(x, width, strides, projection, cfg, name):
    """[1x1 m (stride); 3x3 m; 1x1 4m] + BN each, SE on the residual, act(res + shortcut)."""
    act, scale = cfg['activation_fn'], _initializer_scale(cfg['activation_fn'])
    residual = _conv_bn(x, width, 1, strides, act, scale, f'{name}_conv1')
    residual = _conv_bn(residual, width, 3, 1, act, scale, f'{name}_conv2')
    residual = _conv_bn(residual, 4 * width, 1, 1, None, scale, f'{name}_conv3')
    if cfg['use_se']:
        residual = _squeeze_excite(residual, cfg['se_r'], f'{name}_se')
    shortcut = x
    if projection:
        shortcut = _conv_bn(x, 4 * width, 1, strides, None, scale, f'{name}_shortcut')
    x = keras.layers.Add(name=f'{name}_add')([residual, shortcut])
    return keras.layers.Activation(act, name=f'{name}_act')(x)


def _classifier(x, hidden_units, cfg):
    """FC + activation per hidden size, then FC to the classes (logits)."""
    act, scale = cfg['activation_fn'], _initializer_scale(cfg['activation_fn'])
    for i, units in enumerate(hidden_units, start=1):
        x = _dense(x, units, act, scale, f'head_fc{i}')
    return _dense(x, cfg['output_shape'], None, scale, 'head_logits')


# --- the two networks ------------------------------------------------------------

def _custom_model(x, cfg):
    """Model.model_net: 3 x (conv 5x5 + act, max pool), [SE], flatten, FC 256, 128, c."""
    act, scale = cfg['activation_fn'], _initializer_scale(cfg['activation_fn'])
    for i, filters in enumerate(CUSTOM_FILTERS, start=1):
        x = keras.layers.Conv2D(filters, 5, padding='same', data_format=DATA_FORMAT,
                                activation=act, kernel_initializer=_initializer(scale),
                                name=f'conv{i}')(x)
        x = keras.layers.MaxPooling2D(tuple(cfg['pool_size']), cfg['strides'], padding='same',
                                      data_format=DATA_FORMAT, name=f'pool{i}')(x)
    if cfg['use_se']:
        x = _squeeze_excite(x, cfg['se_r'], 'se')
    x = keras.layers.Flatten(data_format=DATA_FORMAT, name='flatten')(x)
    return _classifier(x, (256, 128), cfg)


def _resnet50(x, cfg):
    """Model.resnet50: conv 7x7/2 + BN + act, max pool 3x3/2, bottlenecks, avg pool, head."""
    act, scale = cfg['activation_fn'], _initializer_scale(cfg['activation_fn'])
    # The stem pads symmetrically, as Model.resnet50 (its pool pads -inf, these
    # zeros: the same after ReLU).
    x = keras.layers.ZeroPadding2D(3, data_format=DATA_FORMAT, name='conv1_pad')(x)
    x = _conv_bn(x, 64, 7, 2, act, scale, 'conv1', padding='valid')
    x = keras.layers.ZeroPadding2D(1, data_format=DATA_FORMAT, name='pool1_pad')(x)
    x = keras.layers.MaxPooling2D(3, 2, data_format=DATA_FORMAT, name='pool1')(x)
    for stage, width, blocks in RESNET50_STAGES:
        for block in range(blocks):
            first = block == 0
            strides = 2 if first and stage > 2 else 1
            x = _bottleneck(x, width, strides, first, cfg, f'stage{stage}_block{block + 1}')
    x = keras.layers.GlobalAveragePooling2D(data_format=DATA_FORMAT, name='global_pool')(x)
    hidden = (512,) if cfg['dataset_name'] == 'imagenet' else (512, 256)
    return _classifier(x, hidden, cfg)


# --- public API ----------------------------------------------------------------

def build(cfg, image_shape):
    """An uncompiled keras.Model with Model.Model(cfg, image_shape)'s architecture."""
    network = {'custom_model': _custom_model, 'resnet50': _resnet50}[cfg['model']]
    images = keras.Input(shape=tuple(image_shape), dtype='float32', name='X')
    return keras.Model(images, network(images, cfg), name=cfg['model'])


def compile_model(model, cfg):
    """Adam on v1.train.exponential_decay's schedule, softmax cross-entropy on logits."""
    schedule = keras.optimizers.schedules.ExponentialDecay(
        cfg['learning_rate'], cfg['decay_steps'], cfg['decay_base'], staircase=False)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=schedule, epsilon=ADAM_EPSILON),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        # XLA is slower on this CPU; one step per call, as one session.run per step.
        jit_compile=False, steps_per_execution=1)
    return model


def count_parameters(model, trainable=True):
    """Trainable parameters (or, trainable=False, BN's moving mean and variance)."""
    weights = model.trainable_weights if trainable else model.non_trainable_weights
    return int(sum(np.prod(w.shape) for w in weights))


class _BatchEndTimes(keras.callbacks.Callback):
    """time.perf_counter() at the end of every training batch.

    Overriding on_train_batch_end makes Keras call it synchronously, after the
    step's loss has been converted to a Python float, so each time stamp
    follows a finished step, as session.run's return does.
    """

    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())


def fit_window(model, dataset, batch_size, steps):
    """Images/s of `steps` fit steps, timed from the end of one untimed first
    step (which also absorbs fit's start-up) to the end of the last."""
    timer = _BatchEndTimes()
    model.fit(dataset, epochs=1, steps_per_epoch=steps + 1, verbose=0, callbacks=[timer],
              shuffle=False)  # a Dataset shuffles itself
    return steps * batch_size / (timer.times[-1] - timer.times[0])
