"""Data-parallel training on several devices of one machine: config['num_gpus']
replicas of the model under tf.compat.v1.distribute.MirroredStrategy, in
graph mode (and, through cluster.py, on several machines).

Every step splits the global batch (batch_size images) into one slice per
replica; each replica computes its gradients on its slice, the gradients are
all-reduced (summed, with each replica's loss divided by the replica count,
which makes their mean) and one optimiser step updates every copy of the
variables alike. Batch norm normalises each replica's slice with that slice's
statistics; its moving averages take the mean over the replicas.

Model.py builds its per-device part (a "tower") through `run_towers` and
combines the towers' figures with `batch_mean` and `concatenated`.
"""
import sys

import tensorflow as tf

v1 = tf.compat.v1


def replica_devices(devices):
    """The devices to train on (of a machine.Devices): the first num_gpus
    GPUs; else as many logical CPU devices if the process has split its CPU
    so (the tests do); else one device, with a warning (a machine with fewer
    GPUs than asked)."""
    wanted = devices.num_gpus
    if wanted <= 1:
        return [devices.placement]
    for kind in ('GPU', 'CPU'):
        found = tf.config.list_logical_devices(kind)
        if len(found) >= wanted:
            return [device.name for device in found[:wanted]]
    gpus = len(tf.config.list_logical_devices('GPU'))
    print(f"warning: num_gpus={wanted} but this machine has {gpus} GPU(s); training on one "
          f"device", file=sys.stderr, flush=True)
    return [devices.placement]


def strategy_for(devices):
    """None for one device (the model is built on it), else a MirroredStrategy."""
    return v1.distribute.MirroredStrategy(devices) if len(devices) > 1 else None


def _slice(tensor, replica, replicas):
    """The replica's part of a batch: rows [i n / r, (i + 1) n / r)."""
    n = tf.shape(tensor)[0]
    return tensor[replica * n // replicas:(replica + 1) * n // replicas]


def run_towers(strategy, tower, images, labels):
    """Runs tower(images, labels) on every replica of this process, each on
    its slice of the batch; returns (the towers' dicts, the images of a step
    summed over all replicas of the job)."""
    towers = []
    local = len(strategy.extended.worker_devices)  # this process's replicas

    def replica_step(images, labels):
        index = tf.distribute.get_replica_context().replica_id_in_sync_group % local
        towers.append(tower(_slice(images, index, local), _slice(labels, index, local)))
        return towers[-1]['batch_size']

    with strategy.scope():
        sizes = strategy.run(replica_step, args=(images, labels))
        return towers, strategy.reduce(tf.distribute.ReduceOp.SUM, sizes, axis=None)


def share_of_replica(objective):
    """What one replica minimises of the global batch's objective: the
    replicas' gradients are summed, so each takes its 1 / replicas."""
    replicas = tf.distribute.get_replica_context().num_replicas_in_sync
    return objective / replicas if replicas > 1 else objective


def batch_mean(towers, name):
    """The mean over the whole batch of the towers' per-slice means `name`."""
    if len(towers) == 1:
        return towers[0][name]
    sizes = [tf.cast(t['batch_size'], tf.float32) for t in towers]
    total = tf.add_n([t[name] * size for t, size in zip(towers, sizes)])
    return tf.math.divide_no_nan(total, tf.add_n(sizes), name=f'{name}_all_replicas')


def concatenated(towers, name):
    """The towers' tensors `name` as one, their rows in batch order."""
    if len(towers) == 1:
        return towers[0][name]
    return tf.concat([t[name] for t in towers], 0, name=name)


def summed(towers, name):
    """The sum of the towers' tensors `name` (of their shares, a whole)."""
    if len(towers) == 1:
        return towers[0][name]
    return tf.add_n([t[name] for t in towers], name=name)


def grouped(towers, name):
    """The towers' ops `name` as one op that runs them all."""
    if len(towers) == 1:
        return towers[0][name]
    return tf.group([t[name] for t in towers], name=name)
