"""Building blocks of the networks, as plain functions on tensors.

Built from tf.compat.v1.get_variable and tf.nn ops only: Keras 3 removed
tf.compat.v1.layers and this project does not depend on Keras.
Image tensors are NHWC (channels last, the CPU's fast layout) unless a
function is given data_format="NCHW" (channels first, often faster with cuDNN).
"""
from foundation.tf_quiet import OnFirstUse

# TensorFlow loads at the first layer built, not when constant.py imports this
# file for its activation functions: a config is checked before it loads.
tf = OnFirstUse()
v1 = OnFirstUse('compat.v1')

# SELU constants of Klambauer et al. (2017); tf.nn.selu uses the same values.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_LAMBDA = 1.0507009873554804934193349852946

BN_DECAY = 0.9      # moving-average momentum of batch norm
BN_EPSILON = 1.001e-5  # fused batch norm refuses anything below 1.001e-5


def channel_axis(data_format):
    return 1 if data_format == "NCHW" else -1


def spatial_axes(data_format):
    return [2, 3] if data_format == "NCHW" else [1, 2]


def to_data_format(images, data_format):
    """NHWC images (as every input pipeline gives them) in `data_format`."""
    return tf.transpose(images, [0, 3, 1, 2]) if data_format == "NCHW" else images


def _window(size, data_format):
    """[1, size, size, 1] or [1, 1, size, size]: a window or stride over H, W."""
    size = [size, size] if isinstance(size, int) else list(size)
    return [1, 1, *size] if data_format == "NCHW" else [1, *size, 1]


def relu(x, name="relu"):
    return tf.nn.relu(x, name=name)


def selu(x, name="selu"):
    """lambda*x for x > 0, lambda*alpha*(exp(x) - 1) otherwise.

    tf.nn.selu has its own gradient kernel, finite (= lambda) for any
    positive input; the original where(x > 0, x, alpha*exp(x) - alpha) was not:
    exp overflowed in the discarded branch and its 0 * inf gradient was NaN.
    """
    return tf.nn.selu(x, name=name)


def sigmoid(x, name="sigmoid"):
    return tf.nn.sigmoid(x, name=name)


def tanh(x, name="tanh"):
    return tf.nn.tanh(x, name=name)


def dropout(x, rate, training, alpha=False, seed=None, name="dropout"):
    """Drops a fraction `rate` of x's units while `training` (a bool or a
    boolean tensor); the identity otherwise.

    Plain dropout zeroes units and scales the rest by 1 / (1 - rate). Alpha
    dropout (the SELU paper's) sets dropped units to SELU's negative
    saturation -lambda*alpha and then applies the affine map a*x + b that
    restores zero mean and unit variance, which zeroing would break.
    """
    if not rate or training is False:
        return x

    def drop():
        keep = tf.random.uniform(tf.shape(x), seed=seed) >= rate
        if not alpha:
            return tf.where(keep, x / (1.0 - rate), tf.zeros_like(x))
        saturation = -SELU_LAMBDA * SELU_ALPHA
        a = ((1.0 - rate) * (1.0 + rate * saturation ** 2)) ** -0.5
        b = -a * saturation * rate
        return a * tf.where(keep, x, tf.fill(tf.shape(x), saturation)) + b

    with tf.name_scope(name):
        return drop() if training is True else tf.cond(training, drop, lambda: tf.identity(x))


def he_normal():
    """stddev sqrt(2 / fan_in): keeps activations' scale through ReLU layers."""
    return v1.variance_scaling_initializer(scale=2.0, mode="fan_in",
                                           distribution="untruncated_normal")


def lecun_normal():
    """stddev sqrt(1 / fan_in): the SELU paper's initialisation."""
    return v1.variance_scaling_initializer(scale=1.0, mode="fan_in",
                                           distribution="untruncated_normal")


def initializer_for(activation_name):
    """Weight initialiser that suits an activation (SELU needs LeCun-normal)."""
    return lecun_normal() if activation_name == "selu" else he_normal()


def weight_variable(shape, initializer):
    """A conv kernel or FC weight matrix, also listed under GraphKeys.WEIGHTS:
    what weight decay penalises (biases and batch-norm parameters are not)."""
    return v1.get_variable("kernel" if len(shape) == 4 else "weights", shape,
                           initializer=initializer or he_normal(),
                           collections=[v1.GraphKeys.GLOBAL_VARIABLES, v1.GraphKeys.WEIGHTS])


def conv2d(x, filters, kernel_size, strides=1, padding="SAME", use_bias=True,
           activation=None, initializer=None, data_format="NHWC", name="conv"):
    """2-D convolution; kernel [k, k, in, filters] in either data format (so a
    checkpoint fits both), optional bias and activation."""
    in_channels = x.shape[channel_axis(data_format)]
    with v1.variable_scope(name):
        kernel = weight_variable([kernel_size, kernel_size, in_channels, filters], initializer)
        y = tf.nn.conv2d(x, kernel, strides=_window(strides, data_format), padding=padding,
                         data_format=data_format)
        if use_bias:
            bias = v1.get_variable("bias", [filters], initializer=v1.zeros_initializer())
            y = tf.nn.bias_add(y, bias, data_format=data_format)
        return activation(y) if activation else y


def pad(x, amount, data_format="NHWC", value=0.0, name="pad"):
    """x with `amount` pixels of `value` on every side of H and W."""
    spatial = [[amount, amount]] * 2
    paddings = [[0, 0], [0, 0], *spatial] if data_format == "NCHW" else [[0, 0], *spatial, [0, 0]]
    return tf.pad(x, paddings, constant_values=value, name=name)


def max_pool2d(x, pool_size, strides, padding="SAME", data_format="NHWC", name="max_pool"):
    return tf.nn.max_pool2d(x, ksize=_window(pool_size, data_format),
                            strides=_window(strides, data_format), padding=padding,
                            data_format=data_format, name=name)


def global_pool(x, kind="avg", data_format="NHWC", name="global_pool"):
    """Feature maps -> [batch, C] by average (default) or max over H, W."""
    reduce = {"avg": tf.reduce_mean, "max": tf.reduce_max}[kind]
    return reduce(x, axis=spatial_axes(data_format), name=name)


def flatten(x, data_format="NHWC", name="flatten"):
    """[batch, ...] -> [batch, features], features in NHWC order in either data
    format, so that the next layer's weights mean the same in both."""
    if data_format == "NCHW" and x.shape.rank == 4:
        x = tf.transpose(x, [0, 2, 3, 1])
    size = 1
    for dim in x.shape[1:]:
        size *= int(dim)
    return tf.reshape(x, [-1, size], name=name)


def fc(x, units, activation=None, use_bias=True, initializer=None, name="fc"):
    """Fully connected layer: x @ W + b, then the activation if given."""
    with v1.variable_scope(name):
        weights = weight_variable([x.shape[-1], units], initializer)
        y = tf.matmul(x, weights)
        if use_bias:
            bias = v1.get_variable("bias", [units], initializer=v1.zeros_initializer())
            y = tf.nn.bias_add(y, bias)
        return activation(y) if activation else y


def batch_normalization(x, is_training, decay=BN_DECAY, epsilon=BN_EPSILON,
                        data_format="NHWC", name="bn"):
    """Batch norm over all axes but the channels', for NHWC, NCHW or [N, C].

    `is_training` is a bool, or a boolean tensor deciding at run time.
    Training normalises with the batch's statistics and adds the ops that
    update the moving averages to UPDATE_OPS (the train_op runs them);
    inference normalises with the moving averages. The moving variance gets
    the unbiased batch variance, as in TensorFlow's and Keras' own layers.
    """
    if x.shape.rank != 4:
        data_format = "NHWC"  # [N, C] is reshaped to [N, 1, 1, C] below
    channels = x.shape[channel_axis(data_format)]
    with v1.variable_scope(name):
        gamma = v1.get_variable("gamma", [channels], initializer=v1.ones_initializer())
        beta = v1.get_variable("beta", [channels], initializer=v1.zeros_initializer())
        # Under several replicas (foundation/replicas.py), each replica's update counts
        # for its share: the moving averages follow the mean over replicas.
        moving_mean = v1.get_variable("moving_mean", [channels], trainable=False,
                                      initializer=v1.zeros_initializer(),
                                      aggregation=v1.VariableAggregation.MEAN)
        moving_variance = v1.get_variable("moving_variance", [channels], trainable=False,
                                          initializer=v1.ones_initializer(),
                                          aggregation=v1.VariableAggregation.MEAN)
        # Fused batch norm is several times faster, and takes 4-D input only.
        x4 = x if x.shape.rank == 4 else tf.reshape(x, [-1, 1, 1, channels])

        def train_branch():
            return v1.nn.fused_batch_norm(x4, gamma, beta, epsilon=epsilon,
                                          data_format=data_format, is_training=True)

        def inference_branch():
            y, _, _ = v1.nn.fused_batch_norm(
                x4, gamma, beta, mean=moving_mean, variance=moving_variance,
                epsilon=epsilon, data_format=data_format, is_training=False)
            return y, tf.identity(moving_mean), tf.identity(moving_variance)

        if is_training is False:
            y, _, _ = inference_branch()
        else:
            # A bool builds one mode; a tensor switches between the two at run
            # time, inside the branches, so only one normalisation runs.
            y, mean, variance = (train_branch() if is_training is True else
                                 tf.cond(is_training, train_branch, inference_branch))
            for moving, batch in ((moving_mean, mean), (moving_variance, variance)):
                update = v1.assign_sub(moving, (1.0 - decay) * (moving - batch))
                v1.add_to_collection(v1.GraphKeys.UPDATE_OPS, update)
        return y if x.shape.rank == 4 else tf.reshape(y, tf.shape(x))
