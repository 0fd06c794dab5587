"""Self-normalisation (SELU paper; an instrument of the study): the mean and variance of every
activation layer's output, and of every max pool's, on a fixed batch of
validation images, at initialisation and after each epoch.

SELU's claim is a fixed point, mean 0 and variance 1, that activations keep
from layer to layer; ReLU runs are measured alike, for comparison. Networks
with batch norm are measured in both of its modes: inference (moving
averages, as evaluation runs) and training (the statistics of the batch).

The figures go into the run's record under KEY, so that they are saved and
restored with every checkpoint (a resumed run keeps its earlier epochs):

    {'layers': [[name, kind], ...], 'images': 256,
     'epochs': [{'epoch': 0, 'inference': {'mean': [...], 'variance': [...]},
                 'training': {...}}, ...]}

and as CSV_NAME in the run's folder, one row per epoch, mode and layer.
"""
import csv
import io
import math
import os
import re

import numpy as np
import tensorflow as tf

from foundation import safe_io
from foundation.errors import DataError
from trainer.runs import record_schema
from trainer.study import probes
from trainer.training import passes

v1 = tf.compat.v1
KEY = record_schema.ACTIVATION_STATISTICS  # of the shape record_schema checks when it is read back
CSV_NAME = 'activation_statistics.csv'
FIGURE_NAME = 'activation_statistics.pdf'
SAMPLE_SPLIT = 'valid'
SAMPLE_IMAGES = 256  # the fixed batch: the first images of SAMPLE_SPLIT
MODES = record_schema.STATISTICS_MODES  # batch norm's: moving averages, the batch's statistics


def fixed_batch(session, model, source, images=SAMPLE_IMAGES):
    """The first `images` images of the validation split as the network
    receives them (normalised): the same every epoch and every resume."""
    batch, = passes.first_of_split(session, source, SAMPLE_SPLIT, [model.X], images)
    if not len(batch):
        raise DataError(f'the {SAMPLE_SPLIT} split gave no images to measure activations on')
    return batch


def combined(means, variances, weights):
    """Mean and variance of the union of chunks from their own means and
    variances (arrays [chunks, layers]) and sizes [chunks]."""
    weights = np.asarray(weights, np.float64)[:, None] / np.sum(weights)
    mean = np.sum(weights * means, axis=0)
    return mean, np.sum(weights * (variances + (means - mean) ** 2), axis=0)


class Recorder:
    """Measures a Model's layer outputs on a batch of images: their moments
    computed in the graph (activations of 128 px images never leave it), in
    chunks of at most `chunk_images` (the memory of an evaluation batch)."""

    def __init__(self, model, chunk_images):
        self.model, self.chunk_images = model, chunk_images
        self.probes = probes.layer_outputs(model)
        self.modes = MODES if probes.has_batch_norm(model) else MODES[:1]
        with model.X.graph.as_default(), tf.name_scope('self_normalisation'):
            self.moments = [tf.nn.moments(tf.cast(p.tensor, tf.float32),
                                          list(range(p.tensor.shape.rank)))
                            for p in self.probes]

    @property
    def layers(self):
        return [[p.name, p.kind] for p in self.probes]

    def measure(self, session, images):
        """{mode: {'mean': [per layer], 'variance': [per layer]}} over `images`."""
        # Equal chunks: in training mode each chunk is a batch norm's batch.
        chunks = np.array_split(images, math.ceil(len(images) / self.chunk_images))
        measured = {}
        for mode in self.modes:
            feed = {self.model.is_training: mode == 'training'}
            moments = [session.run(self.moments, {**feed, self.model.X: chunk}) for chunk in chunks]
            means, variances = (np.array([[m[i] for m in chunk] for chunk in moments], np.float64)
                                for i in (0, 1))
            mean, variance = combined(means, variances, [len(c) for c in chunks])
            measured[mode] = {'mean': mean.tolist(), 'variance': variance.tolist()}
        return measured


def add(record, layers, images, epoch, measured):
    """Puts one epoch's figures into the run's record (epoch 0: at
    initialisation), replacing what it held for that epoch or later."""
    kept = record.get(KEY)
    if not kept or kept['layers'] != layers or kept.get('images') != images:
        kept = record[KEY] = {'layers': layers, 'images': images, 'epochs': []}
    kept['epochs'] = [e for e in kept['epochs'] if e['epoch'] < epoch] + [{'epoch': epoch, **measured}]


def rows(statistics):
    """The record's figures as flat rows: epoch, mode, layer, kind, mean, variance."""
    for entry in statistics['epochs']:
        for mode in MODES:
            if mode in entry:
                for index, ((name, kind), mean, variance) in enumerate(zip(
                        statistics['layers'], entry[mode]['mean'], entry[mode]['variance'])):
                    yield {'epoch': entry['epoch'], 'mode': mode, 'index': index, 'layer': name,
                           'kind': kind, 'mean': mean, 'variance': variance}


def write_csv(directory, statistics):
    """CSV_NAME in `directory`; returns its path."""
    text = io.StringIO()
    writer = csv.DictWriter(text, ['epoch', 'mode', 'index', 'layer', 'kind', 'mean', 'variance'])
    writer.writeheader()
    writer.writerows(rows(statistics))
    path = os.path.join(directory, CSV_NAME)
    safe_io.write_text(path, text.getvalue())
    return path


def network_part(name):
    """ResNet50's part a layer belongs to: 'stem', 'stage2' .. 'stage5', 'head'."""
    match = re.match(r'(stage\d)/', name)
    return match[1] if match else 'head' if name.startswith('head/') else 'stem'


def table_markdown(statistics, epochs=None):
    """Markdown lines: a row per layer, or per part of a network with stages
    (ResNet50's 52 layers: mean [min, max] over the part's layers), with the
    mean and variance of each mode measured at each of `epochs` (default:
    the first and the last recorded)."""
    entries = {e['epoch']: e for e in statistics['epochs']}
    epochs = epochs or sorted({min(entries), max(entries)})
    modes = [m for m in MODES if m in entries[epochs[0]]]
    names = [name for name, _ in statistics['layers']]
    by_part = any(network_part(n).startswith('stage') for n in names)
    group = network_part if by_part else (lambda name: name)
    header = ['part (layers)' if by_part else 'layer (kind)'] + [
        f'{stat} ({mode}), epoch {e}' if len(modes) > 1 else f'{stat}, epoch {e}'
        for e in epochs for mode in modes for stat in ('mean', 'variance')]
    lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
    for part in dict.fromkeys(group(n) for n in names):
        members = [i for i, n in enumerate(names) if group(n) == part]
        label = (f'{part} ({len(members)})' if by_part else
                 f'{part} ({statistics["layers"][members[0]][1]})')
        cells = []
        for e in epochs:
            for mode in modes:
                for stat, sign in (('mean', '+'), ('variance', '')):  # a mean's sign matters
                    v = [entries[e][mode][stat][i] for i in members]
                    cells.append(f'{np.mean(v):{sign}.2f} [{np.min(v):{sign}.2f}, '
                                 f'{np.max(v):{sign}.2f}]' if by_part else f'{v[0]:{sign}.3f}')
        lines.append('| ' + ' | '.join([label, *cells]) + ' |')
    return lines
