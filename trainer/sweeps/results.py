"""A sweep's results table: one row per run, read at the sweep's max_epochs
so that runs compare like with like, each configuration's cost, and, where
the runs allow, the mean and spread over seeds, the paired comparisons over
seeds and the original study's layout (activations side by side). Markdown
and CSV."""
import collections
import csv
import io
import math

import numpy as np

from trainer import console
from trainer.runs import patience, records
from trainer.study import paired
from trainer.sweeps.names import configuration_name, without_activation
from trainer.training.callbacks import better

COLUMNS = ('run', 'best train loss', 'best valid loss', 'best train acc %', 'best valid acc %',
           'best epoch', 'test acc % (best epoch)', 'M params', 'M mult-adds', 'img/s', 's/epoch', 'time', 'device',
           'precision', 'epochs', 'note')
SEED_COLUMNS = ('best valid acc %', 'test acc % (best epoch)', 'best valid loss', 'img/s', 's/epoch', 'time')


def read_at_sweep_length(record, max_epochs):
    """(the epochs, the best epoch's figures, notes) of a record read at the
    sweep's max_epochs: a longer run is compared like with like, its best
    epoch among the first max_epochs; its best-epoch test figure stays where
    that is still its best epoch (another's would need a checkpoint the run
    no longer keeps)."""
    epochs, best = record['epochs'], record.get('best', {})
    if len(epochs) <= max_epochs:
        return epochs, best, []
    kept, read_best = epochs[:max_epochs], None
    for row in kept:
        if better(row, read_best):
            read_best = row
    notes = [f'read at epoch {max_epochs} of its {len(epochs)}']
    if read_best['epoch'] == best.get('epoch'):
        return kept, best, notes
    return kept, {'epoch': read_best['epoch']}, notes + [
        f"no test figure: epoch {read_best['epoch']}'s checkpoint is not kept"]


def cost_columns(record, epochs):
    """The network's cost from the record (runs before it was kept: None) and
    the measured training speed: images/s over the median epoch's training,
    and the median epoch's seconds, training and evaluation."""
    cost = record.get('cost') or {}
    seconds = [e['train_seconds'] for e in epochs if e.get('train_seconds')]
    speed = cost['train_images'] / float(np.median(seconds)) if cost and seconds else None
    per_epoch = [e['epoch_seconds'] for e in epochs if 'epoch_seconds' in e]
    return {'M params': cost['parameters'] / 1e6 if cost else None,
            'M mult-adds': cost['multiply_adds'] / 1e6 if cost else None, 'img/s': speed,
            's/epoch': float(np.median(per_epoch)) if per_epoch else None}


def result_row(cfg, record):
    """A run's row of the results table (numbers, not yet formatted), read
    at the sweep's max_epochs."""
    epochs, best, notes = read_at_sweep_length(record, cfg['max_epochs'])
    if record.get('diverged'):
        notes.append(f"diverged: {record['diverged']}")
    stopped = patience.stopped_at(epochs, cfg)
    if stopped is not None:
        notes.append(f'stopped early at {stopped}')
    elif len(epochs) < cfg['max_epochs'] and not record.get('diverged') and records.steps_left(record, cfg) != 0:
        notes.append('incomplete')
    row = {'run': cfg['run_name'], 'best epoch': best.get('epoch'),
           'test acc % (best epoch)': 100 * best['test_accuracy'] if 'test_accuracy' in best else None,
           'time': sum(e['epoch_seconds'] for e in epochs), 'device': record.get('device'),
           'precision': records.precision_of(record), 'epochs': len(epochs), 'note': '; '.join(notes),
           **cost_columns(record, epochs)}
    for split in ('train', 'valid'):
        losses = [e[f'{split}_loss'] for e in epochs]
        accuracies = [e[f'{split}_accuracy'] for e in epochs]
        row[f'best {split} loss'] = min(losses) if losses else None
        row[f'best {split} acc %'] = 100 * max(accuracies) if accuracies else None
    return row


def formatted(column, value):
    if value is None:
        return '-'
    if column == 'time':
        return console.clock(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return 'NaN'
        if column == 'img/s':
            return f'{value:.0f}'
        if column.startswith('M '):  # four figures: an SE block adds well under 1 % to a network
            return f'{value:.4g}'
        return f'{value:.2f}' if '%' in column or column == 's/epoch' else f'{value:.4f}'
    return str(value)


def markdown_table(header, lines):
    return ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)] + [
        '| ' + ' | '.join(line) + ' |' for line in lines]


def activations_side_by_side(runs, rows):
    """(header, lines) of the table in the original layout: one line per
    network, train / valid figures of each activation side by side."""
    activations = list(dict.fromkeys(cfg['activation_fn'] for cfg in runs))
    networks = {}  # network -> activation -> row
    for cfg, row in zip(runs, rows):
        networks.setdefault(without_activation(cfg), {})[cfg['activation_fn']] = row

    def cells(by_activation, *columns):
        """Per activation, its row's `columns` joined by ' / ' ('-' if not run)."""
        return [' / '.join(formatted(c, by_activation[af][c]) for c in columns)
                if af in by_activation else '-' for af in activations]

    def loss_and_accuracy(by_activation):
        """Per activation, as the original table ordered them: its losses, then its accuracies."""
        losses = cells(by_activation, 'best train loss', 'best valid loss')
        accuracies = cells(by_activation, 'best train acc %', 'best valid acc %')
        return [cell for pair in zip(losses, accuracies) for cell in pair]

    header = ['network', *(f'{af} {what}' for af in activations for what in ('loss', 'acc %')),
              'time', 'epochs']
    lines = [[network, *loss_and_accuracy(by_activation),
              ' / '.join(cells(by_activation, 'time')), ' / '.join(cells(by_activation, 'epochs'))]
             for network, by_activation in networks.items()]
    return header, lines


def activations_side_by_side_lines(runs, rows):
    """The original layout's section; [] unless the runs compare activations."""
    activations = list(dict.fromkeys(cfg['activation_fn'] for cfg in runs))
    if len(activations) < 2:
        return []
    return ['', '## Activations side by side', '', *markdown_table(*activations_side_by_side(runs, rows)), '',
            f"Train / valid, best over the epochs; time and epochs per activation "
            f"({' / '.join(activations)}); '-': not run."]


def mean_and_spread(column, values):
    """'mean ± sample standard deviation' of a column's values ('-' if none)."""
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return formatted(column, values[0] if values else None)
    mean, spread = float(np.mean(values)), float(np.std(values, ddof=1))  # NaN stays NaN
    return f'{formatted(column, mean)} ± {formatted(column, spread)}'


def over_seeds_lines(runs, rows):
    """Per configuration, the mean and spread of its runs with other seeds;
    [] unless some configuration ran with several seeds."""
    groups = {}  # configuration -> [(seed, row)]
    for cfg, row in zip(runs, rows):
        groups.setdefault(configuration_name(cfg), []).append((cfg['seed'], row))
    if all(len(members) < 2 for members in groups.values()):
        return []
    lines = [[name, ', '.join(str(seed) for seed, _ in members),
              *(mean_and_spread(c, [row[c] for _, row in members]) for c in SEED_COLUMNS)]
             for name, members in groups.items()]
    return ['', '## Over seeds', '', *markdown_table(['configuration', 'seeds', *SEED_COLUMNS], lines),
            '', 'Mean ± sample standard deviation over the seeds of each configuration.']


def paired_lines(runs, rows):
    """The paired comparisons over seeds (trainer/study/paired.py): a table
    and a plain reading per contrast; [] unless some configuration ran with
    several seeds and another differs from it in one key."""
    if max(collections.Counter(configuration_name(cfg) for cfg in runs).values(), default=0) < 2:
        return []
    found = paired.comparisons(runs, rows, configuration=configuration_name)
    if not found:
        return []
    readings = [f'* {paired.reading(c)} ({c.figure}, against {c.network})' for c in found]
    return ['', '## Paired over seeds', '', *markdown_table(paired.TABLE_HEADER, paired.table_rows(found)),
            '', f'Treatment - baseline over the runs of equal seed; {paired.CONFIDENCE:.0%} confidence '
            f'interval of the mean difference (Student t), paired t-test and Wilcoxon signed-rank p; '
            f'fewer than {paired.MIN_PAIRS} pairs give no p.', '', *readings]


def results_markdown(rows, title, runs=None):
    """The results table; with the runs' configs, also the mean and spread
    over seeds where configurations repeat with several, the paired
    comparisons over seeds, and the original layout where the runs compare
    activations."""
    lines = [f'# {title}', '',
             *markdown_table(COLUMNS, [[formatted(c, row[c]) for c in COLUMNS] for row in rows]),
             '', 'Best value over all epochs. Test accuracy with the weights of the epoch '
             'of best validation accuracy.']
    if runs:
        lines += (over_seeds_lines(runs, rows) + paired_lines(runs, rows)
                  + activations_side_by_side_lines(runs, rows))
    return '\n'.join(lines) + '\n'


def _csv_value(value):
    """Floats to the 7 significant digits float32 metrics hold (98.96, not
    98.9599996805191); the rest as csv writes it (None: an empty cell)."""
    return f'{value:.7g}' if isinstance(value, float) else value


def results_csv(rows):
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows({c: _csv_value(row[c]) for c in COLUMNS} for row in rows)
    return text.getvalue()
