"""The training graph of a run, and the session that runs it: the input
source, the model reading from it, the run's progress, its savers; the
session's device options (soft placement, GPU memory, mixed precision, XLA)."""
import collections
import contextlib
import math
import os

import tensorflow as tf
from tensorflow.core.protobuf import rewriter_config_pb2

from foundation import machine, replicas
from foundation.networks import architecture, optimisation
from Model import Model, count_parameters, network
from trainer.training import cluster, input_source

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
    'TrainingGraph', 'graph source model progress saver best_saver agreement devices')


def build_model(cfg, image_shape, images, labels, steps_per_epoch, strategy=None, devices=None):
    """A Model on the device of `devices` (machine.Devices; decided from cfg
    when None), or replicated over replicas.replica_devices, or over the
    workers of a multi-worker `strategy` (cluster.py)."""
    devices = devices or machine.decide(cfg)
    net, optim = architecture.from_config(cfg), optimisation.from_config(cfg, devices.on_gpu)
    if strategy is None:
        placed = replicas.replica_devices(devices)
        strategy = replicas.strategy_for(placed)
        if strategy is None:
            with tf.device(placed[0]):
                return Model(net, optim, image_shape, images, labels, steps_per_epoch)
    with strategy.scope():
        return Model(net, optim, image_shape, images, labels, steps_per_epoch, strategy)


def build_graph(cfg, data, strategy=None, role=None, devices=None):
    """A TrainingGraph in a new graph, on `devices` (machine.Devices; decided
    from cfg when None); in a multi-worker job (`strategy`, this worker's
    `role`), also the op that averages the progress over the workers
    (`agreement`)."""
    devices = devices or machine.decide(cfg)
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(cfg['seed'])
        shard = (role.index, len(role.workers)) if role else None
        source = input_source.make_input(data, cfg, shard)
        images, labels = source.next_batch
        steps_per_epoch = math.ceil(data.num_examples('train') / cfg['batch_size'])
        progress = RunProgress()
        model = build_model(cfg, data.image_shape, images, labels, steps_per_epoch, strategy, devices)
        agreement = (cluster.mean_over_workers(strategy, tf.stack([progress.epochs, progress.images]))
                     if strategy else None)
        # trainer/runs/checkpoints.py keeps the checkpoints a run needs: the savers keep none
        saver = v1.train.Saver(max_to_keep=None, save_relative_paths=True)
        # The best epoch is for evaluation, never resumed from: its checkpoint
        # holds the network (and its averages), not the optimiser's slots, a
        # third of the size with Adam.
        best_saver = v1.train.Saver(inference_variables(model), max_to_keep=None, save_relative_paths=True)
    return TrainingGraph(graph, source, model, progress, saver, best_saver, agreement, devices)


def inference_variables(model):
    """The graph's variables but those of the model's optimiser (Adam's or
    momentum's slots and powers, the loss scale)."""
    optimiser = {v.name for v in model.optimizer.variables()}
    return [v for v in v1.global_variables() if v.name not in optimiser]


@contextlib.contextmanager
def determinism(on):
    """TensorFlow's op determinism for the block where `on` (deterministic=True),
    off again after it: a process that goes on (a sweep, a test, a notebook)
    builds its next graphs as it would have, random ops without a seed
    among them, which determinism refuses."""
    if not on:
        yield
        return
    from tensorflow.python.framework import config as framework_config  # no public switch off
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        framework_config.disable_op_determinism()


def recipe_line(cfg):
    """The training recipe's keys that are on, said before training
    ('Recipe: warmup 2 epoch(s), EMA of the weights (decay 0.999), ...'), or None."""
    parts = []
    if cfg['warmup_epochs']:
        parts.append(f"warmup {cfg['warmup_epochs']:g} epoch(s)")
    if cfg['optimizer'] == 'adamw':
        parts.append(f"AdamW (decoupled weight decay {cfg['weight_decay']:g})")
    if cfg['clip_grad_norm'] is not None:
        parts.append(f"gradients clipped to a global norm of {cfg['clip_grad_norm']:g}")
    if cfg['ema_decay'] is not None:
        parts.append(f"EMA of the weights (decay {cfg['ema_decay']:g}), evaluated and tested instead of them")
    mixing = [f"{name} (alpha {cfg[key]:g})" for key, name in (('mixup_alpha', 'mixup'), ('cutmix_alpha', 'cutmix'))
              if cfg[key] is not None]
    if mixing:
        parts.append(' and '.join(mixing) + (', each batch one of the two at even odds' if len(mixing) == 2 else ''))
    if cfg['plateau_patience'] is not None:
        parts.append(f"reduce on plateau (x{cfg['plateau_factor']:g} after {cfg['plateau_patience']} epoch(s))")
    if cfg['early_stopping_patience'] is not None:
        parts.append(f"early stopping (patience {cfg['early_stopping_patience']})")
    if cfg['deterministic']:
        parts.append("TensorFlow's deterministic ops")
    return 'Recipe: ' + '; '.join(parts) if parts else None


def session_config(devices):
    """The session of machine.Devices: soft placement, so that
    '/device:GPU:0' falls back to the CPU; GPU memory options, which a
    machine without a GPU ignores; mixed precision and XLA as decided."""
    proto = v1.ConfigProto(allow_soft_placement=True,
                           log_device_placement=devices.log_device_placement)
    proto.gpu_options.allow_growth = devices.gpu_memory_growth
    if devices.gpu_memory_fraction is not None:
        proto.gpu_options.per_process_gpu_memory_fraction = devices.gpu_memory_fraction
    if devices.mixed_precision:
        # Grappler casts what is safe to float16 on a GPU, to bfloat16 on a CPU,
        # but for the ops machine.FLOAT32_OPS names.
        machine.keep_in_float32()
        rewrites = proto.graph_options.rewrite_options
        if devices.on_gpu:
            rewrites.auto_mixed_precision = rewriter_config_pb2.RewriterConfig.ON
        else:
            rewrites.auto_mixed_precision_onednn_bfloat16 = rewriter_config_pb2.RewriterConfig.ON
    if devices.xla:
        proto.graph_options.optimizer_options.global_jit_level = v1.OptimizerOptions.ON_1
    return proto


def network_cost(built):
    """What a built network costs: its trainable parameters, the multiply-adds
    of one image's forward pass (convolutions and matrix products, the figure
    papers quote as FLOPs) and the images of a training pass, for the record."""
    model = built.model
    return {'parameters': count_parameters(model.trainable_variables()),
            'multiply_adds': model.forward_multiply_adds(),
            'train_images': int(built.source.num_examples('train'))}


# Values a checkpoint keeps per trainable weight: the weight, and the optimiser's slots
SLOTS_PER_WEIGHT = {'adam': 2, 'adamw': 2, 'momentum': 1, 'nesterov': 1}


def disk_estimate(cfg, image_shape):
    """About the bytes a run of cfg keeps on disk: keep_checkpoints
    checkpoints of the network, its optimiser's slots and averages, and as
    many of the best epoch's network alone, in float32. From the variables of
    one forward pass built in a throwaway graph (no session, seconds)."""
    with tf.Graph().as_default():
        images = v1.placeholder(tf.float32, [None, *image_shape])
        with v1.variable_scope(cfg['model']):
            network(images, False, architecture.from_config(cfg))
        trainable = sum(v.shape.num_elements() for v in v1.trainable_variables())
        other = sum(v.shape.num_elements() for v in v1.global_variables()) - trainable
    averaged = trainable if cfg['ema_decay'] is not None else 0
    network_values = trainable + other + averaged
    newest = network_values + SLOTS_PER_WEIGHT[cfg['optimizer']] * trainable
    return 4 * cfg['keep_checkpoints'] * (newest + network_values)


def cost_line(cost):
    """'Network: 0.42 M parameters, 1.23 M multiply-adds per image'."""
    return (f"Network: {cost['parameters'] / 1e6:.2f} M parameters, "
            f"{cost['multiply_adds'] / 1e6:.2f} M multiply-adds per image")


def building_line(cfg, data, devices):
    """Says what is built before a build that can take half a minute."""
    se = ' with SE' if cfg['use_se'] else ''
    shape = 'x'.join(map(str, data.image_shape))
    return (f"Building {cfg['model']}{se} ({cfg['activation_fn']}) for {cfg['dataset_name']} "
            f"({shape} images, {cfg['output_shape']} classes) on {device_name(devices)}")


def device_name(devices):
    """What trains: 'GPU (NVIDIA H100 ...)' or 'CPU (AMD EPYC 9R14, 2 cores)', for the record."""
    if devices.on_gpu:
        details = tf.config.experimental.get_device_details(tf.config.list_physical_devices('GPU')[0])
        return f"GPU ({details.get('device_name', 'unknown')})"
    return f'CPU ({machine.cpu_name()}, {os.cpu_count()} cores)'
