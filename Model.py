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
from foundation.networks import architecture, mixing, optimisation
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

def learning_rate_schedule(optimisation, global_step, steps_per_epoch=None, scale=None):
    """The learning rate at `global_step` under the Optimisation's lr_schedule:
    exponential decay (the default), piecewise constant (times lr_factor after
    each epoch of lr_boundaries) or cosine decay to 0 at max_epochs (or
    max_steps, where that comes first); warmup_epochs of linear warmup in
    front of it; times `scale` (a tensor: reduce on plateau) where given."""
    rate = scheduled_rate(optimisation, global_step, steps_per_epoch)
    if optimisation.warmup_epochs:
        rate = rate * warmup_factor(global_step, warmup_steps(optimisation, steps_per_epoch))
    if scale is not None:
        rate = rate * scale
    return tf.identity(rate, name='learning_rate')


def warmup_steps(optimisation, steps_per_epoch):
    return max(1, round(optimisation.warmup_epochs * steps_per_epoch))


def warmup_factor(global_step, steps):
    """(step + 1) / steps over the first `steps` steps, then 1: the first
    step gets 1/steps of the rate, the last of the warmup all of it (as in
    tensorflow/models' r1 ResNet, less its step of rate 0)."""
    done = tf.cast(global_step, tf.float32) + 1.0
    return tf.minimum(1.0, done / float(steps))


def scheduled_rate(optimisation, global_step, steps_per_epoch):
    rate, schedule = optimisation.learning_rate, optimisation.lr_schedule
    if optimisation.warmup_epochs and not steps_per_epoch:
        raise ValueError('warmup_epochs counts in epochs: pass steps_per_epoch')
    if schedule == 'exponential':
        return v1.train.exponential_decay(rate, global_step, optimisation.decay_steps, optimisation.decay_base)
    if not steps_per_epoch:
        raise ValueError(f"lr_schedule={schedule!r} counts in epochs: pass steps_per_epoch")
    if schedule == 'piecewise':
        # piecewise_constant keeps a value up to and including its boundary:
        # the last step of the epoch, so the next epoch's first step gets the new one.
        boundaries = [tf.constant(epoch * steps_per_epoch - 1, tf.int64)
                      for epoch in optimisation.lr_boundaries]
        values = [rate * optimisation.lr_factor ** i for i in range(len(boundaries) + 1)]
        return v1.train.piecewise_constant(global_step, boundaries, values)
    # The decay spans what will be trained: max_epochs, or max_steps where that ends the run first.
    decay_steps = optimisation.max_epochs * steps_per_epoch
    if optimisation.max_steps is not None:
        decay_steps = min(decay_steps, optimisation.max_steps)
    return v1.train.cosine_decay(rate, global_step, decay_steps)


def make_optimizer(optimisation, learning_rate):
    """Adam (also for adamw, whose decay decoupled_decay applies), SGD with
    momentum or with Nesterov momentum; in float16 (a GPU's mixed precision),
    wrapped in dynamic loss scaling: float16 gradients underflow without it,
    and the scale skips a step whose gradients overflow and lowers itself."""
    if optimisation.optimizer in ('momentum', 'nesterov'):
        optimizer = v1.train.MomentumOptimizer(learning_rate, optimisation.momentum,
                                               use_nesterov=optimisation.optimizer == 'nesterov')
    else:
        optimizer = v1.train.AdamOptimizer(learning_rate)
    if optimisation.loss_scaling:
        optimizer = v1.mixed_precision.MixedPrecisionLossScaleOptimizer(optimizer, 'dynamic')
    return optimizer


def minimize(optimizer, objective, optimisation, learning_rate, weights, global_step):
    """The step that lowers `objective`: its gradients, clipped to a global
    norm of clip_grad_norm where set; AdamW's decoupled decay of `weights`
    (w -= learning_rate * weight_decay * w, PyTorch's AdamW order: after the
    gradients, before the update); the update."""
    pairs = [(g, v) for g, v in optimizer.compute_gradients(objective) if g is not None]
    gradients = [g for g, _ in pairs]
    if optimisation.clip_grad_norm:
        gradients, _ = tf.clip_by_global_norm(gradients, optimisation.clip_grad_norm)
    before_update = []
    if optimisation.decoupled_decay:
        with tf.control_dependencies(gradients):
            shrink = learning_rate * optimisation.decoupled_decay
            before_update = [v1.assign_sub(w, tf.cast(shrink, w.dtype) * w) for w in weights]
    with tf.control_dependencies(before_update):
        return optimizer.apply_gradients(zip(gradients, [v for _, v in pairs]), global_step=global_step)


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


def decayed_weights(variables_prefix):
    """The conv kernels and FC weights under `variables_prefix`, which weight
    decay shrinks; biases and batch norm are left alone."""
    return v1.get_collection(v1.GraphKeys.WEIGHTS, variables_prefix)


def weight_penalty(weight_decay, variables_prefix):
    """weight_decay * sum(w**2) / 2 over the decayed_weights: its gradient is
    weight_decay * w."""
    if not weight_decay:
        return tf.constant(0.0)
    return tf.multiply(weight_decay, tf.add_n([tf.nn.l2_loss(w) for w in decayed_weights(variables_prefix)]),
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
        optim = self.optimisation
        train_images, train_labels = images, labels
        if optim.mixup_alpha or optim.cutmix_alpha:  # drawn per step: the global step comes first
            train_images, train_labels = mixing.mixed_batch(images, labels, self._optimizer()[1], optim)
        updates_before = len(v1.get_collection(v1.GraphKeys.UPDATE_OPS))
        train_logits = self._copy(scope, train_images, True, 'training')
        training_updates = v1.get_collection(v1.GraphKeys.UPDATE_OPS)[updates_before:]
        train_loss = cross_entropy(train_logits, train_labels, 'train_loss', optim.label_smoothing)
        accuracy = accuracy_of(logits, labels, 'accuracy')
        # What the optimiser minimises: the training loss plus the L2 penalty,
        # this replica's share of it under a distribution strategy.
        penalty = weight_penalty(optim.loss_penalty, scope.name + '/')
        objective = replicas.share_of_replica(train_loss + penalty)
        optimizer, global_step = self._optimizer()
        with tf.control_dependencies(training_updates):  # batch norm's moving averages advance
            train_op = minimize(optimizer, objective, optim, self.learning_rate,
                                decayed_weights(scope.name + '/'), global_step)
        if optim.ema_decay:  # the shadow weights follow each step
            self.ema = v1.train.ExponentialMovingAverage(optim.ema_decay)
            with tf.control_dependencies([train_op]):
                train_op = self.ema.apply(v1.get_collection(v1.GraphKeys.TRAINABLE_VARIABLES, scope.name + '/'))
        # Built last, so that every op before it, and the random seeds drawn
        # from their count, are those of a graph without it.
        eval_logits = self._copy(scope, images, False, 'inference', self._averaged if optim.ema_decay else None)
        return {'logits': logits, 'loss': loss, 'accuracy': accuracy, 'train_loss': train_loss,
                'eval_logits': eval_logits, 'eval_loss': cross_entropy(eval_logits, labels, 'eval_loss'),
                'eval_accuracy': accuracy_of(eval_logits, labels, 'eval_accuracy'),
                'batch_size': tf.shape(images)[0], 'objective': objective, 'train_op': train_op,
                # Its full names, also when built inside another scope or replica.
                'prefixes': (scope.name + '/', scope.original_name_scope)}

    def _copy(self, scope, images, training, mode, getter=None):
        """Logits of another copy of the network (the variables of `scope`, no
        new ones, or what `getter` gives for them) with batch norm and dropout
        fixed in `training` mode, its ops under '<model>_<mode>/'."""
        with v1.variable_scope(scope, reuse=True, auxiliary_name_scope=False, custom_getter=getter), \
                tf.name_scope(f'{self.scope}_{mode}/'):
            return network(images, training, self.architecture)

    def _averaged(self, getter, *args, **kwargs):
        """A custom getter: a weight's moving average (ema_decay) in its place."""
        variable = getter(*args, **kwargs)
        average = self.ema.average(variable)
        return variable if average is None else average

    def _optimizer(self):
        """(optimiser, global step), made with the learning rate at their
        first use (by the first replica, under a strategy). With reduce on
        plateau, the rate is scaled by a variable of the checkpoint,
        `learning_rate_scale`, which the end of each epoch sets."""
        if not hasattr(self, 'optimizer'):
            self.global_step = v1.train.get_or_create_global_step()
            if self.optimisation.plateau:
                self.learning_rate_scale = v1.get_variable(
                    'learning_rate_scale', [], tf.float32, v1.initializers.ones(), trainable=False)
            self.learning_rate = learning_rate_schedule(self.optimisation, self.global_step, self.steps_per_epoch,
                                                        getattr(self, 'learning_rate_scale', None))
            self.optimizer = make_optimizer(self.optimisation, self.learning_rate)
        return self.optimizer, self.global_step

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
