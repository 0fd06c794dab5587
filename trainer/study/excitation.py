"""SE excitations per class (SE paper, Fig. 6 and 7; an instrument of the study): for every SE
block, the gate's output s per channel, averaged over the images of each
class of a split, with its standard deviation within the class, and a
number per block that says how class-specific the block is.

The paper found early blocks class-agnostic (every class excites the same
channels alike) and late ones class-specific; `specificity` checks that
with numbers: the mean over channels of the variance across classes of the
class means. `explained` is its scale-free companion: the share of the
gate's variance over all images that the class accounts for (eta squared,
averaged over channels).

Written into the run's folder as excitation_<split>.npz (every number) and
excitation_<split>_blocks.csv (the table); drawn by study_figures.
"""
import csv
import dataclasses
import io
import os
import re

import numpy as np

from foundation import safe_io
from foundation.errors import DataError
from trainer.study import probes
from trainer.training import passes

MAX_CHANNELS_DRAWN = 64  # the paper's figures sample channels evenly beyond this
BLOCK = re.compile(r'^stage(\d+)/block(\d+)$')


@dataclasses.dataclass
class Excitations:
    """Per SE block b (in network order): means[b] and sds[b] of shape
    [classes, channels] (NaN for a class without images), all_means[b] and
    all_sds[b] over every image; counts: images per class."""
    split: str
    blocks: list
    counts: np.ndarray
    means: list
    sds: list
    all_means: list
    all_sds: list
    epoch: int = None  # the weights of which epoch

    def specificity(self):
        """Per block: mean over channels of the variance across classes
        (those with images) of the class means."""
        return [float(np.mean(np.var(m[self.counts > 0], axis=0))) for m in self.means]

    def explained(self):
        """Per block: mean over channels (of those that vary) of the
        between-class share of the gate's variance over all images."""
        shares = []
        present = self.counts > 0
        weights = self.counts[present, None] / self.counts.sum()
        for means, all_means, all_sds in zip(self.means, self.all_means, self.all_sds):
            between = np.sum(weights * (means[present] - all_means) ** 2, axis=0)
            varies = all_sds > 0
            shares.append(float(np.mean(between[varies] / all_sds[varies] ** 2)) if varies.any()
                          else 0.0)
        return shares


def measure(session, model, source, split, num_classes, stop=None):
    """Excitations of every SE block of `model` over a whole split (batch
    norm in inference mode)."""
    gates = probes.se_gates(model)
    sums = [np.zeros((num_classes, int(g.tensor.shape[-1]))) for g in gates]
    squares = [np.zeros_like(s) for s in sums]
    counts = np.zeros(num_classes)
    fetches = [[g.tensor for g in gates], model.Yoh]
    for values, labels in passes.evaluation_batches(session, source, split, fetches, stop):
        # The gates of the first replica's tower see the first rows of the batch.
        labels = labels[:len(values[0])].astype(np.float64)
        counts += labels.sum(axis=0)
        for total, square, value in zip(sums, squares, values):
            value = value.astype(np.float64)
            total += labels.T @ value
            square += labels.T @ value ** 2
    if not counts.sum():
        raise DataError(f'the {split} split gave no images to measure the SE excitations on')
    return statistics(split, [g.name for g in gates], counts, sums, squares)


def statistics(split, blocks, counts, sums, squares):
    """Excitations from per-class sums and sums of squares of the gates."""
    with np.errstate(invalid='ignore', divide='ignore'):
        per_class = counts[:, None]
        means = [s / per_class for s in sums]
        sds = [np.sqrt(np.maximum(q / per_class - m ** 2, 0)) for q, m in zip(squares, means)]
    total = counts.sum()
    all_means = [s.sum(axis=0) / total for s in sums]
    all_sds = [np.sqrt(np.maximum(q.sum(axis=0) / total - m ** 2, 0))
               for q, m in zip(squares, all_means)]
    return Excitations(split, blocks, counts.astype(np.int64), means, sds, all_means, all_sds)


# --- which blocks and channels the figures show ---------------------------------------

def paper_name(block):
    """'stage4/block6' -> 'SE_4_6', as the SE paper names its blocks."""
    match = BLOCK.match(block)
    return f'SE_{match[1]}_{match[2]}' if match else 'SE'


def paper_blocks(blocks):
    """The blocks of the SE paper's Fig. 6: the last block of every stage
    and the first two of the last stage (SE-ResNet-50: SE_2_3, SE_3_4,
    SE_4_6, SE_5_1, SE_5_2, SE_5_3); every block of a network without stages."""
    stages = {}
    for block in blocks:
        match = BLOCK.match(block)
        if not match:
            return list(blocks)
        stages.setdefault(int(match[1]), []).append(block)
    chosen = {members[-1] for members in stages.values()} | set(stages[max(stages)][:2])
    return [block for block in blocks if block in chosen]


def sampled_channels(channels, at_most=MAX_CHANNELS_DRAWN):
    """Channel indices in network order, at most `at_most` spread evenly."""
    return np.unique(np.linspace(0, channels - 1, min(channels, at_most)).round().astype(int))


# --- files ------------------------------------------------------------------------------

def paths(directory, split):
    """(numbers .npz, table .csv, figure .pdf) of a split's excitations."""
    stem = os.path.join(directory, f'excitation_{split}')
    return stem + '.npz', stem + '_blocks.csv', stem + '.pdf'


def save(directory, excitations):
    """The .npz of every number and the .csv table of the blocks."""
    npz_path, csv_path, _ = paths(directory, excitations.split)
    arrays = {'blocks': np.array(excitations.blocks), 'counts': excitations.counts,
              'split': np.array(excitations.split),
              'epoch': np.array(-1 if excitations.epoch is None else excitations.epoch),
              'specificity': np.array(excitations.specificity()),
              'explained': np.array(excitations.explained())}
    for field in ('means', 'sds', 'all_means', 'all_sds'):
        arrays.update({f'{field}_{b}': a for b, a in enumerate(getattr(excitations, field))})
    with safe_io.atomic_path(npz_path) as tmp:
        with open(tmp, 'wb') as f:
            np.savez(f, **arrays)
    safe_io.write_text(csv_path, table_csv(excitations))


def load(path):
    """The Excitations an .npz of `save` holds."""
    with np.load(path) as f:
        blocks = [str(b) for b in f['blocks']]
        epoch = int(f['epoch'])
        fields = {field: [f[f'{field}_{b}'] for b in range(len(blocks))]
                  for field in ('means', 'sds', 'all_means', 'all_sds')}
        return Excitations(str(f['split']), blocks, f['counts'], **fields,
                           epoch=None if epoch < 0 else epoch)


def table_rows(excitations):
    """Per block: its name, the paper's name, channels, specificity, explained."""
    return [{'block': block, 'paper name': paper_name(block), 'channels': means.shape[1],
             'class-specificity': specificity, 'variance explained by class': explained}
            for block, means, specificity, explained in zip(
                excitations.blocks, excitations.means, excitations.specificity(),
                excitations.explained())]


def table_csv(excitations):
    text = io.StringIO()
    rows = table_rows(excitations)
    writer = csv.DictWriter(text, list(rows[0]))
    writer.writeheader()
    writer.writerows({k: f'{v:.6g}' if isinstance(v, float) else v for k, v in row.items()}
                     for row in rows)
    return text.getvalue()


def table_markdown(excitations):
    rows = table_rows(excitations)
    lines = ['| ' + ' | '.join(rows[0]) + ' |', '|' + ' --- |' * len(rows[0])]
    lines += ['| ' + ' | '.join(f'{v:.4g}' if isinstance(v, float) else str(v)
                                for v in row.values()) + ' |' for row in rows]
    return '\n'.join(lines)
