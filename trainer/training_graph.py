"""The training graph of a run, and the session that runs it: the input
source, the model reading from it, the run's progress, its savers; the
session's device options (soft placement, GPU memory, mixed precision, XLA)."""
import collections
import math
import os

import tensorflow as tf
from tensorflow.core.protobuf import rewriter_config_pb2

from Model import Model
from trainer import cluster, inputs, machine, replicas

v1 = tf.compat.v1


class RunProgress:
    """Epochs completed and images into the next one, saved with every
    checkpoint, so that a run stopped mid-epoch resumes where it stood."""

    def __init__(self):
        self.epochs = v1.Variable(0, dtype=tf.int64, trainable=False, name='epochs_done')
        self.images = v1.Variable(0, dtype=tf.int64, trainable=False, name='epoch_images')
        self._values = v1.placeholder(tf.int64, [2], 'progress')
        self._assign = tf.group(self.epochs.assign(self._values[0]),
                                self.images.assign(self._values[1]))

    def set(self, session, epochs, images):
        session.run(self._assign, {self._values: [epochs, images]})

    def get(self, session):
        return tuple(int(v) for v in session.run([self.epochs, self.images]))


TrainingGraph = collections.namedtuple(
    'TrainingGraph', 'graph source model progress saver best_saver agreement')


def build_model(cfg, image_shape, images, labels, steps_per_epoch, strategy=None):
    """A Model on cfg['device'], or replicated over replicas.replica_devices,
    or over the workers of a multi-worker `strategy` (cluster.py)."""
    if strategy is None:
        devices = replicas.replica_devices(cfg)
        strategy = replicas.strategy_for(devices)
        if strategy is None:
            with tf.device(devices[0]):
                return Model(cfg, image_shape, images, labels, steps_per_epoch)
    with strategy.scope():
        return Model(cfg, image_shape, images, labels, steps_per_epoch, strategy)


def build_graph(cfg, data, strategy=None, role=None):
    """A TrainingGraph in a new graph; in a multi-worker job (`strategy`,
    this worker's `role`), also the op that averages the progress over the
    workers (`agreement`)."""
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(cfg['seed'])
        shard = (role.index, len(role.workers)) if role else None
        source = inputs.make_input(data, cfg, shard)
        images, labels = source.next_batch
        steps_per_epoch = math.ceil(data.num_examples('train') / cfg['batch_size'])
        progress = RunProgress()
        model = build_model(cfg, data.image_shape, images, labels, steps_per_epoch, strategy)
        agreement = (cluster.mean_over_workers(strategy, tf.stack([progress.epochs, progress.images]))
                     if strategy else None)
        # trainer/checkpoints.py keeps the checkpoints a run needs: the savers keep none
        saver = v1.train.Saver(max_to_keep=None, save_relative_paths=True)
        best_saver = v1.train.Saver(max_to_keep=None, save_relative_paths=True)
    return TrainingGraph(graph, source, model, progress, saver, best_saver, agreement)


def session_config(cfg):
    """Soft placement, so that '/device:GPU:0' falls back to the CPU; GPU
    memory options, which a machine without a GPU ignores; mixed precision
    and XLA as the config decided them."""
    proto = v1.ConfigProto(allow_soft_placement=True,
                           log_device_placement=cfg['log_device_placement'])
    proto.gpu_options.allow_growth = cfg['gpu_memory_growth']
    if cfg['gpu_memory_fraction'] is not None:
        proto.gpu_options.per_process_gpu_memory_fraction = cfg['gpu_memory_fraction']
    if cfg['mixed_precision']:
        # Grappler casts what is safe to float16 on a GPU, to bfloat16 on a CPU.
        rewrites = proto.graph_options.rewrite_options
        if machine.gpu_found(cfg['device']):
            rewrites.auto_mixed_precision = rewriter_config_pb2.RewriterConfig.ON
        else:
            rewrites.auto_mixed_precision_onednn_bfloat16 = rewriter_config_pb2.RewriterConfig.ON
    if cfg['xla']:
        proto.graph_options.optimizer_options.global_jit_level = v1.OptimizerOptions.ON_1
    return proto


def building_line(cfg, data):
    """Says what is built before a build that can take half a minute."""
    se = ' with SE' if cfg['use_se'] else ''
    shape = 'x'.join(map(str, data.image_shape))
    return (f"Building {cfg['model']}{se} ({cfg['activation_fn']}) for {cfg['dataset_name']} "
            f"({shape} images, {cfg['output_shape']} classes) on {device_name(cfg)}")


def device_name(cfg):
    """What trains: 'GPU (NVIDIA H100 ...)' or 'CPU (2 cores)', for the record."""
    if machine.gpu_found(cfg['device']):
        details = tf.config.experimental.get_device_details(tf.config.list_physical_devices('GPU')[0])
        return f"GPU ({details.get('device_name', 'unknown')})"
    return f'CPU ({os.cpu_count()} cores)'
