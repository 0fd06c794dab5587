"""Building blocks of the networks, as plain functions on tensors.

Built from tf.compat.v1.get_variable and tf.nn ops only: Keras 3 removed
tf.compat.v1.layers and this project does not depend on Keras.
All image tensors are NHWC.
"""
import tensorflow as tf

v1 = tf.compat.v1

# SELU constants of Klambauer et al. (2017); tf.nn.selu uses the same values.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_LAMBDA = 1.0507009873554804934193349852946

BN_DECAY = 0.9      # moving-average momentum of batch norm
BN_EPSILON = 1.001e-5  # fused batch norm refuses anything below 1.001e-5


def relu(x, name="relu"):
    return tf.nn.relu(x, name=name)


def selu(x, name="selu"):
    """lambda*x for x > 0, lambda*alpha*(exp(x) - 1) otherwise.

    tf.nn.selu has its own gradient kernel, finite (= lambda) for any
    positive input; the seed's where(x > 0, x, alpha*exp(x) - alpha) was not:
    exp overflowed in the discarded branch and its 0 * inf gradient was NaN.
    """
    return tf.nn.selu(x, name=name)


def sigmoid(x, name="sigmoid"):
    return tf.nn.sigmoid(x, name=name)


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


def conv2d(x, filters, kernel_size, strides=1, padding="SAME", use_bias=True,
           activation=None, initializer=None, name="conv"):
    """2-D convolution; kernel [k, k, in, filters], optional bias and activation."""
    in_channels = x.shape[-1]
    with v1.variable_scope(name):
        kernel = v1.get_variable(
            "kernel", [kernel_size, kernel_size, in_channels, filters],
            initializer=initializer or he_normal())
        y = tf.nn.conv2d(x, kernel, strides=[1, strides, strides, 1], padding=padding)
        if use_bias:
            bias = v1.get_variable("bias", [filters], initializer=v1.zeros_initializer())
            y = tf.nn.bias_add(y, bias)
        return activation(y) if activation else y


def max_pool2d(x, pool_size, strides, padding="SAME", name="max_pool"):
    if isinstance(pool_size, int):
        pool_size = [pool_size, pool_size]
    return tf.nn.max_pool2d(x, ksize=[1, *pool_size, 1],
                            strides=[1, strides, strides, 1], padding=padding, name=name)


def global_pool(x, kind="avg", name="global_pool"):
    """[batch, H, W, C] -> [batch, C] by average (default) or max over H, W."""
    reduce = {"avg": tf.reduce_mean, "max": tf.reduce_max}[kind]
    return reduce(x, axis=[1, 2], name=name)


def flatten(x, name="flatten"):
    size = 1
    for dim in x.shape[1:]:
        size *= int(dim)
    return tf.reshape(x, [-1, size], name=name)


def fc(x, units, activation=None, use_bias=True, initializer=None, name="fc"):
    """Fully connected layer: x @ W + b, then the activation if given."""
    with v1.variable_scope(name):
        weights = v1.get_variable("weights", [x.shape[-1], units],
                                  initializer=initializer or he_normal())
        y = tf.matmul(x, weights)
        if use_bias:
            bias = v1.get_variable("bias", [units], initializer=v1.zeros_initializer())
            y = tf.nn.bias_add(y, bias)
        return activation(y) if activation else y


def batch_normalization(x, is_training, decay=BN_DECAY, epsilon=BN_EPSILON,
                        name="bn"):
    """Batch norm over all axes but the last (channels), for NHWC or [N, C].

    Training normalises with the batch's statistics and adds the ops that
    update the moving averages to UPDATE_OPS (the train_op runs them);
    inference normalises with the moving averages. The moving variance gets
    the unbiased batch variance, as in TensorFlow's and Keras' own layers.
    """
    channels = x.shape[-1]
    with v1.variable_scope(name):
        gamma = v1.get_variable("gamma", [channels], initializer=v1.ones_initializer())
        beta = v1.get_variable("beta", [channels], initializer=v1.zeros_initializer())
        moving_mean = v1.get_variable("moving_mean", [channels], trainable=False,
                                      initializer=v1.zeros_initializer())
        moving_variance = v1.get_variable("moving_variance", [channels], trainable=False,
                                          initializer=v1.ones_initializer())
        # Fused batch norm is several times faster, and takes 4-D input only.
        x4 = x if x.shape.rank == 4 else tf.reshape(x, [-1, 1, 1, channels])

        def train_branch():
            return v1.nn.fused_batch_norm(x4, gamma, beta, epsilon=epsilon,
                                          is_training=True)

        def inference_branch():
            y, _, _ = v1.nn.fused_batch_norm(
                x4, gamma, beta, mean=moving_mean, variance=moving_variance,
                epsilon=epsilon, is_training=False)
            return y, tf.identity(moving_mean), tf.identity(moving_variance)

        # Inside the branches, so only one of the two normalisations runs.
        y, mean, variance = tf.cond(is_training, train_branch, inference_branch)
        for moving, batch in ((moving_mean, mean), (moving_variance, variance)):
            update = v1.assign_sub(moving, (1.0 - decay) * (moving - batch))
            v1.add_to_collection(v1.GraphKeys.UPDATE_OPS, update)
        return y if x.shape.rank == 4 else tf.reshape(y, tf.shape(x))
