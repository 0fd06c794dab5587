"""The networks described in docs/models.md as functions, and `Model`, which composes one of
them with its loss, accuracy, learning-rate schedule and training op.

    logits = network(images, training, architecture)

builds, in the current variable scope, the network that an Architecture
(foundation.networks.architecture.from_config(cfg)) describes: the custom "Sample" CNN
(`model_net`) or ResNet50 (`resnet50`, of `bottleneck` blocks), each with
optional Squeeze-and-Excitation blocks (`squeeze_excite`) and ReLU or SELU.
"""
import numpy as np
import tensorflow as tf

import layers
from foundation import replicas
from foundation.networks import architecture, optimisation
from foundation.networks.architecture import CUSTOM_FILTERS, EXPANSION, RESNET50_STAGES, STEM_CHANNELS

v1 = tf.compat.v1

SE_GATES = {'sigmoid': layers.sigmoid, 'tanh': layers.tanh, 'relu': layers.relu}


# --- building blocks ----------------------------------------------------------

def squeeze_excite(x, se, data_format='NHWC', name='se', initializer=None):
    """SE(U) = gate(W2 relu(W1 squeeze(U))) * U, with W1: C -> C/r, W2: C/r -> C;
    `se` (an architecture.SqueezeExcite) gives r, the squeeze (global average
    or max pool) and the gate (sigmoid, tanh or relu); W1 and W2 start from
    `initializer` (He-normal if None), the network's own."""
    axis = layers.channel_axis(data_format)
    channels = int(x.shape[axis])
    with v1.variable_scope(name):
        z = layers.global_pool(x, se.squeeze, data_format)
        s = layers.fc(z, channels // se.ratio, layers.relu, initializer=initializer, name='fc1')
        s = layers.fc(s, channels, SE_GATES[se.excitation], initializer=initializer, name='fc2')
        return x * tf.reshape(s, [-1, channels, 1, 1] if axis == 1 else [-1, 1, 1, channels])


def conv_bn(x, filters, kernel_size, strides, training, arch, activate=True, padding='SAME',
            name='conv'):
    """conv (no bias: batch norm's beta replaces it) + BN (+ the activation)."""
    with v1.variable_scope(name):
        x = layers.conv2d(x, filters, kernel_size, strides, padding, use_bias=False,
                          initializer=layers.initializer_for(arch.activation_name), data_format=arch.data_format)
        x = layers.batch_normalization(x, training, data_format=arch.data_format)
        return arch.activation(x) if activate else x


def bottleneck(x, width, strides, projection, training, arch, se=None, name='block'):
    """[1x1, m; 3x3, m; 1x1, 4m] with the stride on the first 1x1 and, if
    `projection`, a projection shortcut; `se` (an architecture.SqueezeExcite
    or None) puts an SE block where its integration says (SE paper, Fig. 5):
    on the residual before the addition (standard), on the residual branch's
    input (pre), after the addition and activation (post), or on the
    shortcut (identity)."""
    where = se.integration if se else None

    def excite(tensor):
        return squeeze_excite(tensor, se, arch.data_format,
                              initializer=layers.initializer_for(arch.activation_name))

    with v1.variable_scope(name):
        residual = excite(x) if where == 'pre' else x
        residual = conv_bn(residual, width, 1, strides, training, arch, name='conv1')
        residual = conv_bn(residual, width, 3, 1, training, arch, name='conv2')
        residual = conv_bn(residual, EXPANSION * width, 1, 1, training, arch, activate=False,
                           name='conv3')
        if where == 'standard':
            residual = excite(residual)
        shortcut = (conv_bn(x, EXPANSION * width, 1, strides, training, arch, activate=False,
                            name='shortcut') if projection else x)
        if where == 'identity':
            shortcut = excite(shortcut)
        total = residual + shortcut
        if arch.selu_residual_scale != 1:
            # The sum of two unit-variance branches has variance 2; SELU's
            # self-normalisation wants 1 at its input.
            total = total * arch.selu_residual_scale
        y = arch.activation(total)
        return excite(y) if where == 'post' else y


def classifier(x, training, arch):
    """FC + activation (+ dropout while training) for each of arch.head's
    hidden layers, then FC to the classes. Dropout is alpha dropout under
    SELU, which plain dropout would pull off its fixed point."""
    initializer = layers.initializer_for(arch.activation_name)
    with v1.variable_scope('head'):
        for i, units in enumerate(arch.head, start=1):
            x = layers.fc(x, units, arch.activation, initializer=initializer, name=f'fc{i}')
            x = layers.dropout(x, arch.dropout, training, arch.selu, name=f'dropout{i}')
        return layers.fc(x, arch.num_classes, initializer=initializer, name='logits')


# --- the two networks -----------------------------------------------------------

def model_net(x, training, arch):
    """The custom "Sample" CNN: 3 x (conv 5x5 + AF, max pool), [SE], FC 256, 128, c."""
    for i, filters in enumerate(CUSTOM_FILTERS, start=1):
        x = layers.conv2d(x, filters, 5, activation=arch.activation,
                          initializer=layers.initializer_for(arch.activation_name),
                          data_format=arch.data_format, name=f'conv{i}')
        x = layers.max_pool2d(x, arch.pool_size, arch.pool_strides, data_format=arch.data_format,
                              name=f'pool{i}')
    if arch.se:
        x = squeeze_excite(x, arch.se, arch.data_format,
                           initializer=layers.initializer_for(arch.activation_name))
    return classifier(layers.flatten(x, arch.data_format), training, arch)


def resnet50(x, training, arch):
    """ResNet50 (He et al. 2015): conv 7x7/2, max pool 3x3/2, [SE-]bottlenecks
    3, 4, 6, 3 (RESNET50_STAGES), global average pool, then the FC head (classifier).

    The stem pads symmetrically, as Keras' ResNet50 and the SE reference do
    (docs/models.md): TF's 'SAME' pads 2 before and 3 after at even sizes, which
    shifts the sampling grid by a pixel, and ported weights would see other
    features. The pool's padding is -inf, as Caffe's and PyTorch's: it is
    never the maximum (Keras' zeros are the same after ReLU, not after SELU)."""
    x = layers.pad(x, 3, arch.data_format, name='conv1_pad')
    x = conv_bn(x, STEM_CHANNELS, 7, 2, training, arch, padding='VALID', name='conv1')
    x = layers.pad(x, 1, arch.data_format, value=-np.inf, name='pool1_pad')
    x = layers.max_pool2d(x, 3, 2, 'VALID', data_format=arch.data_format, name='pool1')
    for stage, width, blocks in RESNET50_STAGES:
        se = arch.se if arch.se and stage in arch.se.stages else None
        for block in range(blocks):
            first = block == 0
            x = bottleneck(x, width, 2 if first and stage > 2 else 1, first, training, arch, se,
                           f'stage{stage}/block{block + 1}')
    x = layers.global_pool(x, 'avg', arch.data_format)
    return classifier(x, training, arch)


NETWORKS = {'custom_model': model_net, 'resnet50': resnet50}


def network(images, training, arch):
    """Logits of the network `arch` describes, for NHWC `images`, built in the
    current variable scope; batch norm in training mode if `training` (a bool,
    or a boolean tensor that decides at run time)."""
    return NETWORKS[arch.model](layers.to_data_format(images, arch.data_format), training, arch)


# --- training ---------------------------------------------------------------------

def learning_rate_schedule(optimisation, global_step, steps_per_epoch=None):
    """The learning rate at `global_step` under the Optimisation's lr_schedule:
    exponential decay (the default), piecewise constant (times lr_factor after
    each epoch of lr_boundaries) or cosine decay to 0 at max_epochs (or
    max_steps, where that comes first)."""
    rate, schedule = optimisation.learning_rate, optimisation.lr_schedule
    if schedule == 'exponential':
        return v1.train.exponential_decay(rate, global_step, optimisation.decay_steps,
                                          optimisation.decay_base, name='learning_rate')
    if not steps_per_epoch:
        raise ValueError(f"lr_schedule={schedule!r} counts in epochs: pass steps_per_epoch")
    if schedule == 'piecewise':
        # piecewise_constant keeps a value up to and including its boundary:
        # the last step of the epoch, so the next epoch's first step gets the new one.
        boundaries = [tf.constant(epoch * steps_per_epoch - 1, tf.int64)
                      for epoch in optimisation.lr_boundaries]
        values = [rate * optimisation.lr_factor ** i for i in range(len(boundaries) + 1)]
        return tf.identity(v1.train.piecewise_constant(global_step, boundaries, values),
                           name='learning_rate')
    # The decay spans what will be trained: max_epochs, or max_steps where that ends the run first.
    decay_steps = optimisation.max_epochs * steps_per_epoch
    if optimisation.max_steps is not None:
        decay_steps = min(decay_steps, optimisation.max_steps)
    return tf.identity(v1.train.cosine_decay(rate, global_step, decay_steps), name='learning_rate')


def make_optimizer(optimisation, learning_rate):
    """Adam or SGD with momentum; with mixed precision, wrapped in dynamic
    loss scaling: float16 gradients underflow without it, and the scale skips
    a step whose gradients overflow and lowers itself."""
    if optimisation.optimizer == 'momentum':
        optimizer = v1.train.MomentumOptimizer(learning_rate, optimisation.momentum)
    else:
        optimizer = v1.train.AdamOptimizer(learning_rate)
    if optimisation.loss_scaling:
        optimizer = v1.mixed_precision.MixedPrecisionLossScaleOptimizer(optimizer, 'dynamic')
    return optimizer


def cross_entropy(logits, labels, name, label_smoothing=0.0):
    """Mean softmax cross-entropy of `logits` against one-hot `labels`,
    smoothed towards the uniform distribution by `label_smoothing`."""
    if label_smoothing:
        labels = labels * (1.0 - label_smoothing) + label_smoothing / int(labels.shape[-1])
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits),
                          name=name)


def accuracy_of(logits, labels, name):
    """The fraction of rows whose largest logit is at the one-hot label."""
    correct = tf.equal(tf.argmax(logits, 1), tf.argmax(labels, 1))
    return tf.reduce_mean(tf.cast(correct, tf.float32), name=name)


def weight_penalty(weight_decay, variables_prefix):
    """weight_decay * sum(w**2) / 2 over the conv kernels and FC weights under
    `variables_prefix`: its gradient is weight_decay * w. Biases and batch norm
    are left alone."""
    if not weight_decay:
        return tf.constant(0.0)
    weights = v1.get_collection(v1.GraphKeys.WEIGHTS, variables_prefix)
    return tf.multiply(weight_decay, tf.add_n([tf.nn.l2_loss(w) for w in weights]),
                       name='weight_penalty')


def count_parameters(variables):
    return int(sum(np.prod(v.shape.as_list()) for v in variables))


def _input(default, dtype, shape, name):
    """A placeholder; with `default`, one that reads the input pipeline unless fed."""
    if default is None:
        return v1.placeholder(dtype, shape, name)
    return v1.placeholder_with_default(default, shape, name)


class Model:
    """The network an Architecture describes, with its loss, accuracy and,
    as its Optimisation says, learning-rate schedule and train_op, in the
    current graph (Model.from_config: both from a checked config).

    `images` and `labels` (optional) are the input pipeline's tensors: X and
    Yoh read them unless a feed_dict overrides them. `logits`, `loss` and
    `accuracy` follow is_training, which defaults to False. `train_op`
    minimises `train_loss`, from a second copy of the network (same variables)
    with batch norm fixed in training mode, and evaluation reads `eval_logits`,
    `eval_loss` and `eval_accuracy`, from a third copy fixed in inference mode
    (moving averages, no dropout): no switch between the two modes in every
    batch-norm layer, which cost ResNet50 a measurable share of its training
    speed on the CPU (docs/performance.md). Under a distribution `strategy`
    (foundation.replicas), every replica computes both on its slice of the batch
    and the figures are their means over the whole batch.
    """

    def __init__(self, arch, optim, image_shape, images=None, labels=None,
                 steps_per_epoch=None, strategy=None):
        self.architecture, self.optimisation = arch, optim
        self.scope = arch.model
        self.steps_per_epoch = steps_per_epoch
        self.X = _input(images, tf.float32, [None, *image_shape], 'X')
        self.Yoh = _input(labels, tf.float32, [None, arch.num_classes], 'Yoh')
        self.is_training = v1.placeholder_with_default(False, [], 'is_training')
        # Nothing else before the network: its random initial weights follow
        # the ops created before them, and equal seeds give equal runs.
        if strategy:
            # train_batch_size: images of the step over all replicas of the job
            # (across workers: all-reduced, so fetch it only along with train_op).
            towers, self.train_batch_size = replicas.run_towers(strategy, self.tower, self.X,
                                                                self.Yoh)
        else:
            towers = [self.tower(self.X, self.Yoh)]
            self.train_batch_size = towers[0]['batch_size']
        self.replica_count = len(towers)
        self.batch_size = tf.shape(self.X)[0] if strategy else towers[0]['batch_size']
        self.variables_prefix, self.ops_prefix = towers[0]['prefixes']
        self.logits = replicas.concatenated(towers, 'logits')
        self.eval_logits = replicas.concatenated(towers, 'eval_logits')
        self.loss, self.accuracy, self.train_loss, self.eval_loss, self.eval_accuracy = (
            replicas.batch_mean(towers, name)
            for name in ('loss', 'accuracy', 'train_loss', 'eval_loss', 'eval_accuracy'))
        self.train_op = replicas.grouped(towers, 'train_op')
        self.objective = replicas.summed(towers, 'objective')  # what train_op minimises
        self.weights_finite = tf.reduce_all(
            [tf.reduce_all(tf.math.is_finite(v)) for v in self.trainable_variables()],
            name='weights_finite')

    @classmethod
    def from_config(cls, config, image_shape, *inputs, **options):
        """The Model of a checked config: its Architecture and Optimisation."""
        return cls(architecture.from_config(config), optimisation.from_config(config), image_shape,
                   *inputs, **options)

    def tower(self, images, labels):
        """The network on one device's `images`, three times (batch norm
        following is_training; fixed in training mode for the train_op; fixed
        in inference mode for evaluation), with losses, accuracies and the step
        that minimises the training loss."""
        with v1.variable_scope(self.scope) as scope:
            logits = network(images, self.is_training, self.architecture)
        loss = cross_entropy(logits, labels, 'loss')
        updates_before = len(v1.get_collection(v1.GraphKeys.UPDATE_OPS))
        train_logits = self._copy(scope, images, True, 'training')
        training_updates = v1.get_collection(v1.GraphKeys.UPDATE_OPS)[updates_before:]
        train_loss = cross_entropy(train_logits, labels, 'train_loss', self.optimisation.label_smoothing)
        accuracy = accuracy_of(logits, labels, 'accuracy')
        # What the optimiser minimises: the training loss plus the L2 penalty,
        # this replica's share of it under a distribution strategy.
        penalty = weight_penalty(self.optimisation.weight_decay, scope.name + '/')
        objective = replicas.share_of_replica(train_loss + penalty)
        optimizer = self._optimizer()
        with tf.control_dependencies(training_updates):  # batch norm's moving averages advance
            train_op = optimizer.minimize(objective, global_step=self.global_step)
        # Built last, so that every op before it, and the random seeds drawn
        # from their count, are those of a graph without it.
        eval_logits = self._copy(scope, images, False, 'inference')
        return {'logits': logits, 'loss': loss, 'accuracy': accuracy, 'train_loss': train_loss,
                'eval_logits': eval_logits, 'eval_loss': cross_entropy(eval_logits, labels, 'eval_loss'),
                'eval_accuracy': accuracy_of(eval_logits, labels, 'eval_accuracy'),
                'batch_size': tf.shape(images)[0], 'objective': objective, 'train_op': train_op,
                # Its full names, also when built inside another scope or replica.
                'prefixes': (scope.name + '/', scope.original_name_scope)}

    def _copy(self, scope, images, training, mode):
        """Logits of another copy of the network (the variables of `scope`, no
        new ones) with batch norm and dropout fixed in `training` mode, its ops
        under '<model>_<mode>/'."""
        with v1.variable_scope(scope, reuse=True, auxiliary_name_scope=False), \
                tf.name_scope(f'{self.scope}_{mode}/'):
            return network(images, training, self.architecture)

    def _optimizer(self):
        """The optimiser, made with the global step and learning rate at its
        first use (by the first replica, under a strategy)."""
        if not hasattr(self, 'optimizer'):
            self.global_step = v1.train.get_or_create_global_step()
            self.learning_rate = learning_rate_schedule(self.optimisation, self.global_step,
                                                        self.steps_per_epoch)
            self.optimizer = make_optimizer(self.optimisation, self.learning_rate)
        return self.optimizer

    # --- introspection --------------------------------------------------------

    def trainable_variables(self, part=''):
        """Trainable variables of the network, or of a part of it ('head', 'stage3')."""
        scope = self.variables_prefix + part
        return self.X.graph.get_collection(v1.GraphKeys.TRAINABLE_VARIABLES, scope)

    def forward_multiply_adds(self):
        """Multiply-adds of one image's forward pass through the network's
        convolutions and matrix products: the figure papers quote as FLOPs
        (ResNet-50 at 224 px: 3.86 G). A training step costs about 3 times this
        per image (forward, gradients of inputs and of weights), 2 FLOPs each."""
        total = 0
        for op in self.X.graph.get_operations():
            if not op.name.startswith(self.ops_prefix) or op.type not in ('Conv2D', 'MatMul'):
                continue
            output = op.outputs[0].shape.as_list()[1:]
            weights = op.inputs[1].shape.as_list()
            # Per image: every output element sums one product per kernel weight feeding it.
            per_output = int(np.prod(weights[:-1]))
            total += int(np.prod(output)) * per_output
        return total

    @property
    def first_conv_kernel(self):
        return self.X.graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES,
                                           self.variables_prefix + 'conv1/')[0]
