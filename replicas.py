"""Data-parallel training on several devices of one machine: config['num_gpus']
replicas of the model under tf.compat.v1.distribute.MirroredStrategy, in
graph mode.

Every step splits the global batch (batch_size images) into one slice per
replica; each replica computes its gradients on its slice, the gradients are
all-reduced (summed, with each replica's loss divided by the replica count,
which makes their mean) and one optimiser step updates every copy of the
variables alike. Batch norm normalises each replica's slice with that slice's
statistics; its moving averages take the mean over the replicas.
"""
import sys

import tensorflow as tf

from Model import Model

v1 = tf.compat.v1


def replica_devices(cfg):
    """The devices to train on: the first num_gpus GPUs; else as many logical
    CPU devices if the process has split its CPU so (the tests do); else one
    device, with a warning (a machine with fewer GPUs than asked)."""
    wanted = cfg['num_gpus']
    if wanted <= 1:
        return [cfg['device']]
    for kind in ('GPU', 'CPU'):
        found = tf.config.list_logical_devices(kind)
        if len(found) >= wanted:
            return [device.name for device in found[:wanted]]
    gpus = len(tf.config.list_logical_devices('GPU'))
    print(f"warning: num_gpus={wanted} but this machine has {gpus} GPU(s); training on one "
          f"device", file=sys.stderr, flush=True)
    return [cfg['device']]


def build_model(cfg, image_shape, images, labels, steps_per_epoch, strategy=None):
    """A Model on cfg['device'], or a ReplicatedModel over replica_devices,
    or over the workers of `strategy` (cluster.py)."""
    if strategy is None:
        devices = replica_devices(cfg)
        if len(devices) == 1:
            with tf.device(devices[0]):
                return Model(cfg, image_shape, images, labels, steps_per_epoch)
        strategy = v1.distribute.MirroredStrategy(devices)
    return ReplicatedModel(cfg, image_shape, images, labels, steps_per_epoch, strategy)


def _slice(tensor, replica, replicas):
    """The replica's part of a batch: rows [i n / r, (i + 1) n / r)."""
    n = tf.shape(tensor)[0]
    return tensor[replica * n // replicas:(replica + 1) * n // replicas]


class ReplicatedModel:
    """One Model per device of this process, sharing mirrored variables (with
    the other workers' too, under a multi-worker strategy), with what main.py
    uses of a Model: train_op, train_loss, loss, accuracy, batch_size,
    learning_rate, weights_finite, first_conv_kernel, replicas."""

    def __init__(self, cfg, image_shape, images, labels, steps_per_epoch, strategy):
        self.strategy = strategy
        self.replicas = []
        local = len(strategy.extended.worker_devices)  # this process's replicas

        def replica_step(images, labels):
            index = tf.distribute.get_replica_context().replica_id_in_sync_group % local
            model = Model(cfg, image_shape, _slice(images, index, local),
                          _slice(labels, index, local), steps_per_epoch)
            self.replicas.append(model)
            return model.train_op, model.batch_size

        with self.strategy.scope():
            train_ops, sizes = self.strategy.run(replica_step, args=(images, labels))
            self.train_op = self.strategy.group(train_ops)
            # Images of the step over all replicas of the job (across workers:
            # all-reduced, so fetch it only along with train_op).
            self.train_batch_size = self.strategy.reduce(tf.distribute.ReduceOp.SUM, sizes,
                                                         axis=None)
        first = self.replicas[0]
        self.batch_size = tf.add_n([m.batch_size for m in self.replicas])
        self.train_loss = self._batch_mean('train_loss')
        self.loss = self._batch_mean('loss')
        self.accuracy = self._batch_mean('accuracy')
        self.learning_rate = first.learning_rate
        self.global_step = first.global_step
        self.weights_finite = first.weights_finite  # every replica holds the same weights
        self.first_conv_kernel = first.first_conv_kernel

    def mean_over_workers(self, tensor):
        """An op giving the mean of `tensor` over all replicas of the job
        (all-reduced across workers), e.g. to check that they agree."""
        with self.strategy.scope():
            per_replica = self.strategy.run(lambda: tf.identity(tf.cast(tensor, tf.float32)))
            return self.strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

    def _batch_mean(self, name):
        """The mean of a per-replica mean over the whole batch."""
        sizes = [tf.cast(m.batch_size, tf.float32) for m in self.replicas]
        total = tf.add_n([getattr(m, name) * size for m, size in zip(self.replicas, sizes)])
        return tf.math.divide_no_nan(total, tf.add_n(sizes), name=f'{name}_all_replicas')
