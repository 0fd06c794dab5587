"""The networks: the custom "Sample" CNN (SPEC 5.1) and ResNet50 (SPEC 5.2),
each optionally with Squeeze-and-Excitation blocks (SPEC 5.3), with their loss,
accuracy, learning-rate schedule and training op (Adam or SGD with momentum)."""
import numpy as np
import tensorflow as tf

import layers

v1 = tf.compat.v1

RESNET50_STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))  # (bottleneck width m, blocks)
CUSTOM_FILTERS = (16, 32, 64)


def _input(default, dtype, shape, name):
    """A placeholder; with `default`, one that reads the input pipeline unless fed."""
    if default is None:
        return v1.placeholder(dtype, shape, name)
    return v1.placeholder_with_default(default, shape, name)


SE_GATES = {'sigmoid': layers.sigmoid, 'tanh': layers.tanh, 'relu': layers.relu}


def learning_rate_schedule(config, global_step, steps_per_epoch=None):
    """The learning rate at `global_step` under config['lr_schedule']:
    exponential decay (the seed's), piecewise constant (times lr_factor after
    each epoch of lr_boundaries) or cosine decay to 0 at max_epochs."""
    rate, schedule = config['learning_rate'], config['lr_schedule']
    if schedule == 'exponential':
        return v1.train.exponential_decay(rate, global_step, config['decay_steps'],
                                          config['decay_base'], name='learning_rate')
    if not steps_per_epoch:
        raise ValueError(f"lr_schedule={schedule!r} counts in epochs: pass steps_per_epoch")
    if schedule == 'piecewise':
        # piecewise_constant keeps a value up to and including its boundary:
        # the last step of the epoch, so the next epoch's first step gets the new one.
        boundaries = [tf.constant(epoch * steps_per_epoch - 1, tf.int64)
                      for epoch in config['lr_boundaries']]
        values = [rate * config['lr_factor'] ** i for i in range(len(boundaries) + 1)]
        return tf.identity(v1.train.piecewise_constant(global_step, boundaries, values),
                           name='learning_rate')
    return tf.identity(v1.train.cosine_decay(rate, global_step, config['max_epochs'] * steps_per_epoch),
                       name='learning_rate')


def make_optimizer(config, learning_rate):
    if config['optimizer'] == 'momentum':
        return v1.train.MomentumOptimizer(learning_rate, config['momentum'])
    return v1.train.AdamOptimizer(learning_rate)


def count_parameters(variables):
    return int(sum(np.prod(v.shape.as_list()) for v in variables))


class Model:
    """Builds the network named by config['model'] into the current graph.

    `images` and `labels` (optional) are the input pipeline's tensors: X and
    Yoh read them unless a feed_dict overrides them. `logits`, `loss` and
    `accuracy` follow is_training, which defaults to False: evaluation needs
    no feed and batch norm uses its moving averages. `train_op` minimises
    `train_loss`, from a second copy of the network (same variables) with batch
    norm fixed in training mode: no switch between the two modes in every
    batch-norm layer, which cost ResNet50 10 % of its speed at 128 px and a
    third at 32 px on the CPU.
    """

    def __init__(self, config, image_shape, images=None, labels=None, steps_per_epoch=None):
        self.config = config
        self.activation = config['activation_functions'][config['activation_fn']]
        self.initializer = layers.initializer_for(config['activation_fn'])
        num_classes = config['output_shape']
        self.X = _input(images, tf.float32, [None, *image_shape], 'X')
        self.Yoh = _input(labels, tf.float32, [None, num_classes], 'Yoh')
        self.is_training = v1.placeholder_with_default(False, [], 'is_training')
        self.scope = config['model']
        self.data_format = config['data_format']
        with v1.variable_scope(self.scope) as scope:
            # Its full names, also when built inside another scope.
            self.variables_prefix, self.ops_prefix = scope.name + '/', scope.original_name_scope
            self.logits = self.network(self.X, self.is_training)
        self.loss = self.cross_entropy(self.logits, 'loss')
        updates_before = len(v1.get_collection(v1.GraphKeys.UPDATE_OPS))
        with v1.variable_scope(scope, reuse=True, auxiliary_name_scope=False), \
                tf.name_scope(f'{self.scope}_training/'):
            self.train_loss = self.cross_entropy(self.network(self.X, True), 'train_loss',
                                                 config['label_smoothing'])
        training_updates = v1.get_collection(v1.GraphKeys.UPDATE_OPS)[updates_before:]
        correct = tf.equal(tf.argmax(self.logits, 1), tf.argmax(self.Yoh, 1))
        self.accuracy = tf.reduce_mean(tf.cast(correct, tf.float32), name='accuracy')
        self.batch_size = tf.shape(self.X)[0]
        self.train_batch_size = self.batch_size  # all replicas' in replicas.ReplicatedModel
        self.weights_finite = tf.reduce_all(
            [tf.reduce_all(tf.math.is_finite(v)) for v in self.trainable_variables()],
            name='weights_finite')

        self.global_step = v1.train.get_or_create_global_step()
        self.learning_rate = learning_rate_schedule(config, self.global_step, steps_per_epoch)
        # What the optimiser minimises: the training loss plus the L2 penalty;
        # under a distribution strategy, divided by the replicas, whose
        # gradients are summed: the step then follows the global batch's mean.
        self.objective = self.train_loss + self.weight_penalty()
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        if replicas > 1:
            self.objective = self.objective / replicas
        optimizer = make_optimizer(config, self.learning_rate)
        if config['mixed_precision']:
            # float16 gradients underflow without loss scaling; the dynamic
            # scale skips a step whose gradients overflow and lowers the scale.
            optimizer = v1.mixed_precision.MixedPrecisionLossScaleOptimizer(optimizer, 'dynamic')
        # Batch norm's moving averages advance with every training step.
        with tf.control_dependencies(training_updates):
            self.train_op = optimizer.minimize(self.objective, global_step=self.global_step)

    def network(self, images, training):
        """Logits of config['model'] for NHWC `images`, in the current variable
        scope; batch norm in training mode if `training` (a bool, or a boolean
        tensor that decides at run time)."""
        x = layers.to_data_format(images, self.data_format)
        if self.scope == 'resnet50':
            return self.resnet50(x, training)
        return self.model_net(x, training)

    def cross_entropy(self, logits, name, label_smoothing=0.0):
        """Mean softmax cross-entropy of `logits` against Yoh, smoothed towards
        the uniform distribution by `label_smoothing`."""
        labels = self.Yoh
        if label_smoothing:
            labels = labels * (1.0 - label_smoothing) + label_smoothing / self.config['output_shape']
        return tf.reduce_mean(
            tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits), name=name)

    def weight_penalty(self):
        """weight_decay * sum(w**2) / 2 over conv kernels and FC weights: its
        gradient is weight_decay * w. Biases and batch norm are left alone."""
        if not self.config['weight_decay']:
            return tf.constant(0.0)
        weights = self.X.graph.get_collection(v1.GraphKeys.WEIGHTS, self.variables_prefix)
        return tf.multiply(self.config['weight_decay'], tf.add_n([tf.nn.l2_loss(w) for w in weights]),
                           name='weight_penalty')

    # --- building blocks ------------------------------------------------------

    def classifier(self, x, hidden_units, training):
        """FC + activation (+ dropout while training) for each of
        `hidden_units`, then FC to the classes. Dropout is alpha dropout
        under SELU, which plain dropout would pull off its fixed point."""
        rate, alpha = self.config['dropout'], self.config['activation_fn'] == 'selu'
        with v1.variable_scope('head'):
            for i, units in enumerate(hidden_units, start=1):
                x = layers.fc(x, units, self.activation, initializer=self.initializer, name=f'fc{i}')
                x = layers.dropout(x, rate, training, alpha, name=f'dropout{i}')
            return layers.fc(x, self.config['output_shape'], initializer=self.initializer,
                             name='logits')

    def squeeze_excite(self, x, name='se'):
        """SE(U) = gate(W2 relu(W1 squeeze(U))) * U, with W1: C -> C/r, W2: C/r -> C;
        squeeze is a global average (or max) pool, gate a sigmoid (or tanh, relu)."""
        axis = layers.channel_axis(self.data_format)
        channels = int(x.shape[axis])
        gate = SE_GATES[self.config['se_excitation']]
        with v1.variable_scope(name):
            z = layers.global_pool(x, self.config['se_squeeze'], self.data_format)
            s = layers.fc(z, channels // self.config['se_r'], layers.relu, name='fc1')
            s = layers.fc(s, channels, gate, name='fc2')
            return x * tf.reshape(s, [-1, channels, 1, 1] if axis == 1 else [-1, 1, 1, channels])

    def conv_bn(self, x, filters, kernel_size, strides, activate, training, name):
        """conv (no bias: batch norm's beta replaces it) + BN (+ activation)."""
        with v1.variable_scope(name):
            x = layers.conv2d(x, filters, kernel_size, strides, use_bias=False,
                              initializer=self.initializer, data_format=self.data_format)
            x = layers.batch_normalization(x, training, data_format=self.data_format)
            return self.activation(x) if activate else x

    def bottleneck(self, x, width, strides, projection, training, se, name):
        """[1x1, m; 3x3, m; 1x1, 4m] with the stride on the first 1x1 and a
        projection shortcut on first blocks; with `se`, an SE block where
        se_integration puts it (SE paper, Fig. 5): on the residual before the
        addition (standard), on the residual branch's input (pre), after the
        addition and activation (post), or on the shortcut (identity)."""
        se = se and self.config['se_integration']
        with v1.variable_scope(name):
            residual = self.squeeze_excite(x) if se == 'pre' else x
            residual = self.conv_bn(residual, width, 1, strides, True, training, 'conv1')
            residual = self.conv_bn(residual, width, 3, 1, True, training, 'conv2')
            residual = self.conv_bn(residual, 4 * width, 1, 1, False, training, 'conv3')
            if se == 'standard':
                residual = self.squeeze_excite(residual)
            shortcut = (self.conv_bn(x, 4 * width, 1, strides, False, training, 'shortcut')
                        if projection else x)
            if se == 'identity':
                shortcut = self.squeeze_excite(shortcut)
            total = residual + shortcut
            if self.config['activation_fn'] == 'selu' and self.config['selu_residual_scale'] != 1:
                # The sum of two unit-variance branches has variance 2; SELU's
                # self-normalisation wants 1 at its input.
                total = total * self.config['selu_residual_scale']
            y = self.activation(total)
            return self.squeeze_excite(y) if se == 'post' else y

    # --- the two networks -----------------------------------------------------

    def model_net(self, x, training):
        """The custom "Sample" CNN: 3 x (conv 5x5 + AF, max pool), [SE], FC 256, 128, c."""
        for i, filters in enumerate(CUSTOM_FILTERS, start=1):
            x = layers.conv2d(x, filters, 5, activation=self.activation, initializer=self.initializer,
                              data_format=self.data_format, name=f'conv{i}')
            x = layers.max_pool2d(x, self.config['pool_size'], self.config['strides'],
                                  data_format=self.data_format, name=f'pool{i}')
        if self.config['use_se']:
            x = self.squeeze_excite(x)
        return self.classifier(layers.flatten(x, self.data_format), (256, 128), training)

    def resnet50(self, x, training):
        """ResNet50 (He et al. 2015), [SE-]bottlenecks 3, 4, 6, 3, then the SPEC head."""
        x = self.conv_bn(x, 64, 7, 2, True, training, 'conv1')
        x = layers.max_pool2d(x, 3, 2, data_format=self.data_format, name='pool1')
        for stage, (width, blocks) in enumerate(RESNET50_STAGES, start=2):
            for block in range(blocks):
                first = block == 0
                strides = 2 if first and stage > 2 else 1
                se = self.config['use_se'] and stage in self.config['se_stages']
                x = self.bottleneck(x, width, strides, first, training, se,
                                    f'stage{stage}/block{block + 1}')
        x = layers.global_pool(x, 'avg', self.data_format)
        hidden = (512,) if self.config['dataset_name'] == 'imagenet' else (512, 256)
        return self.classifier(x, hidden, training)

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
