"""Runs every configuration of a grid from constant.py, each as a normal
main.py run with its own outputs, then writes the results table and one plot
of all validation curves.

    python experiments.py                                  # constant.config['experiment_grid']
    python experiments.py dataset_name=mnist max_epochs=3  # key=value applies to every run
    python experiments.py experiment_grid=se_integration

Runs already complete are skipped and an interrupted one resumes, so running
the same command again continues a stopped sweep.
"""
import collections
import csv
import hashlib
import io
import itertools
import json
import math
import os
import re
import sys

from trainer.config import command

command.answer_early(__name__, __doc__)  # --help and mistakes answered before TensorFlow loads

import numpy as np
import tensorflow as tf

import constant
import main
from foundation import machine, safe_io
from foundation.errors import ConfigError, DataError, UserError
from trainer import console
from trainer.config import settings
from trainer.runs.records import saved_record
from trainer.study import excitation, figures, instrument_files, paired, self_normalisation
from trainer.training.callbacks import better

# Keys that change how a run goes or where its files are, not its results: a
# finished run that differs only in these counts as done.
NOT_RESULT_KEYS = settings.keys_tagged(settings.HOW)
# Keys a run's name leaves out: those above, those already in its base name
# (resnet50_se_selu), those decided for the machine and those of the dataset,
# whose folder holds the run.
NOT_IN_NAME = NOT_RESULT_KEYS + sum((settings.keys_tagged(tag) for tag in (
    settings.NAME, settings.AUTO, settings.DATASET)), ())
COLUMNS = ('run', 'best train loss', 'best valid loss', 'best train acc %', 'best valid acc %',
           'best epoch', 'test acc % (best epoch)', 'M params', 'M mult-adds', 'img/s', 'time', 'device',
           'epochs', 'note')
SEED_COLUMNS = ('best valid acc %', 'test acc % (best epoch)', 'best valid loss', 'img/s', 'time')


def grid_points(grid):
    """The configurations of a grid ({key: [values]} or a list of such) as
    {key: value} dicts, in order, each once."""
    points = []
    for part in grid if isinstance(grid, (list, tuple)) else [grid]:
        keys = list(part)
        for values in itertools.product(*(part[key] for key in keys)):
            point = dict(zip(keys, values))
            if point not in points:
                points.append(point)
    return points


def _name_part(value):
    text = '+'.join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return re.sub(r'[^A-Za-z0-9.+-]', '', text)


def experiment_name(raw):
    """The run's base name (resnet50_se_selu), plus key-value for every key
    that shapes results and differs from constant.py, so that two
    configurations never share outputs: resnet50_se_relu_se_squeeze-max.
    A name too long for a file name keeps its start and ends in a digest
    of the whole, so that it stays distinct and the same on every rerun."""
    name = constant.run_name({**raw, 'run_name': None})
    for key, value in raw.items():
        irrelevant = key in NOT_IN_NAME or key in settings.MENU_KEYS or (
            settings.SE in settings.KEYS[key].tags and not raw['use_se'])
        if not irrelevant and value != constant.config[key]:
            name += f'_{key}-{_name_part(value)}'
    if len(name) > settings.RUN_NAME_MAX:
        digest = hashlib.sha1(name.encode()).hexdigest()[:12]
        name = f'{name[:settings.RUN_NAME_MAX - len(digest) - 1]}-{digest}'
    return name


def configuration_name(cfg):
    """The run's name without its seed: what runs that repeat one
    configuration with other seeds share."""
    return experiment_name({**cfg, 'seed': constant.config['seed']})


# The sweep's own keys: the same for every run, checked once for the sweep.
SWEEP_KEYS = ('experiment_grids', 'experiment_grid', 'experiment_seeds', 'max_runs')


def plan(argv):
    """(grid name, [config of each run]) for the chosen grid with the
    key=value overrides of argv on top, each point once per seed of
    experiment_seeds; the sweep's size, then every config, checked before
    any runs."""
    grid, runs = checked_plan(argv)
    return grid, [machine.fit_to_machine(cfg) for cfg in runs]


def checked_plan(argv):
    """plan's runs, their 'auto' options left undecided: in time linear in
    the runs, without TensorFlow."""
    chosen = settings.checked_config(argv)
    overrides = settings.parse_overrides(argv, set(constant.config))
    if 'run_name' in overrides:
        raise ConfigError('run_name is chosen for each run by experiments.py; '
                                   'leave it out')
    grid = chosen['experiment_grid']
    points = grid_points(chosen['experiment_grids'][grid])
    seeds = chosen['experiment_seeds']
    sweep = {key: chosen[key] for key in SWEEP_KEYS}
    configurations = distinct_names(named_points(points, overrides, sweep))
    if seeds:
        if 'seed' in overrides or any('seed' in point for point in points):
            raise ConfigError(f"experiment_seeds={seeds} sets the seed of every run; "
                                       f"leave seed out of the arguments and of grid {grid!r}")
        points = [{**point, 'seed': seed} for point in points for seed in seeds]
    named = named_points(points, overrides, sweep)
    check_size(distinct_names(named), grid, configurations, seeds, chosen['max_runs'])
    runs, names = [], set()
    for point, (name, raw) in zip(points, named):
        try:  # the very config the run gets, its name included
            cfg = settings.checked_config([], base={**raw, 'run_name': name}, checked=SWEEP_KEYS)
        except ConfigError as error:
            raise ConfigError(f'grid {grid!r}, configuration {point}: {error}') from None
        if name not in names:  # overrides can merge points
            names.add(name)
            runs.append(cfg)
    return grid, runs


def named_points(points, overrides, sweep):
    """(run name, raw config) of each point: constant.config, the point,
    the overrides and the sweep's own keys on top."""
    raws = [{**constant.config, **point, **overrides, **sweep} for point in points]
    return [(experiment_name(raw), raw) for raw in raws]


def distinct_names(named):
    """How many runs named points make: points of the same name are one run."""
    return len({name for name, _ in named})


def check_size(runs, grid, configurations, seeds, max_runs):
    """ConfigError where the sweep has more runs than max_runs allows."""
    if max_runs is None or runs <= max_runs:
        return
    parts = f'{configurations} configurations' + (f' x {len(seeds)} seeds' if seeds else '')
    raise ConfigError(f'the sweep is {runs} runs (grid {grid}: {parts}), more than '
                      f'max_runs={max_runs}; set max_runs={runs} (or None) to run them all')


def _comparable(value):
    return json.loads(json.dumps(value))  # tuples as lists, as the saved record has them


def run_state(record, cfg):
    """What to do with a run whose saved record is `record`: 'done' (complete,
    or diverged: rerunning would diverge again), 'resume' or 'start'."""
    saved = record.get('config')
    if not saved:
        return 'start'
    keys = [k for k in cfg if k not in NOT_RESULT_KEYS and k not in settings.MENU_KEYS]
    if cfg['lr_schedule'] == 'cosine':
        keys.append('max_epochs')  # its decay spans max_epochs
    if any(_comparable(saved.get(k)) != _comparable(cfg[k]) for k in keys):
        return 'start'
    if record.get('diverged'):
        return 'done'
    # A run with more epochs than asked is done too: never trained again from the start.
    return 'done' if len(record['epochs']) >= cfg['max_epochs'] and 'test' in record else 'resume'


def run_dir(cfg):
    return os.path.join(constant.derived_dirs(cfg)['RUNS_SAVE_DIR'], cfg['run_name'])


def record_of_run(cfg, warn=True):
    """The record of cfg's run as its files hold it (records.saved_record); an
    empty one where they hold none that can be read (the run then starts
    afresh, its folder kept beside it; `warn`: says so)."""
    try:
        return saved_record(run_dir(cfg))
    except DataError as error:
        if warn:
            print(f'warning: {error}; the run starts afresh', file=sys.stderr, flush=True)
        return {'epochs': []}


def epochs_to_train(state, record, cfg):
    """The epochs a run in `state` (run_state) has still to train."""
    if state == 'done':
        return 0
    return max(0, cfg['max_epochs'] - (len(record['epochs']) if state == 'resume' else 0))


def seconds_per_epoch(runs, records, states):
    """{configuration name: the mean of the epoch seconds its runs recorded},
    of the runs whose record is of their config (not about to start afresh)."""
    timed = {}
    for cfg, record, state in zip(runs, records, states):
        if state != 'start':
            timed.setdefault(configuration_name(cfg), []).extend(
                row['epoch_seconds'] for row in record['epochs'] if 'epoch_seconds' in row)
    return {name: float(np.mean(seconds)) for name, seconds in timed.items() if seconds}


def time_estimate(to_train, per_epoch):
    """'about 0:01:30 (...)' for [(config, epochs to train)], from
    seconds_per_epoch; 'time unknown' for configurations never timed."""
    known = [epochs * per_epoch[configuration_name(cfg)] for cfg, epochs in to_train
             if configuration_name(cfg) in per_epoch]
    if not known:
        return 'time unknown (no run of their configurations has trained yet)'
    about = f'about {console.clock(sum(known))} of epochs'  # building and testing each run on top
    source = '(as earlier runs of their configurations timed them)'
    if len(known) == len(to_train):
        return f'{about} {source}'
    return f'{about} for {len(known)} of them {source}, time unknown for the other {len(to_train) - len(known)}'


def sweep_line(grid, runs):
    """What the sweep will do, said before its first run: how many runs,
    how many are complete, about how long the others take."""
    records = [record_of_run(cfg, warn=False) for cfg in runs]  # run_all warns at the run's turn
    states = [run_state(record, cfg) for record, cfg in zip(records, runs)]
    to_train = [(cfg, epochs_to_train(state, record, cfg))
                for cfg, record, state in zip(runs, records, states) if state != 'done']
    said = f"Grid {grid!r}: {len(runs)} runs on {runs[0]['dataset_name']}"
    if not to_train:
        return f'{said}: all complete'
    done = len(runs) - len(to_train)
    counts = f'{done} complete, {len(to_train)} to train' if done else f'{len(to_train)} to train'
    return f'{said}: {counts}, {time_estimate(to_train, seconds_per_epoch(runs, records, states))}'


def run_all(runs):
    """Trains every run not done yet; returns 0, or the exit status of an
    interrupted run (the sweep stops there)."""
    for number, cfg in enumerate(runs, start=1):
        state = run_state(record_of_run(cfg), cfg)
        print(f"=== run {number} / {len(runs)}: {cfg['run_name']}: "
              f"{ {'done': 'complete, skipped', 'resume': 'resuming', 'start': 'starting'}[state]}",
              flush=True)
        if state == 'done':
            continue
        try:
            status = main.train({**cfg, 'resume': state == 'resume'})
        except UserError as error:  # said as the run's, in one line
            raise type(error)(f"run {number} / {len(runs)}, {cfg['run_name']}: {error}") from None
        if status >= 128:
            print('The sweep stopped; run the same command again to continue it.',
                  file=sys.stderr, flush=True)
            return status
    return 0


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
    the measured training speed, images/s over the median epoch."""
    cost = record.get('cost') or {}
    seconds = [e['train_seconds'] for e in epochs if e.get('train_seconds')]
    speed = cost['train_images'] / float(np.median(seconds)) if cost and seconds else None
    return {'M params': cost['parameters'] / 1e6 if cost else None,
            'M mult-adds': cost['multiply_adds'] / 1e6 if cost else None, 'img/s': speed}


def result_row(cfg, record):
    """A run's row of the results table (numbers, not yet formatted), read
    at the sweep's max_epochs."""
    epochs, best, notes = read_at_sweep_length(record, cfg['max_epochs'])
    if record.get('diverged'):
        notes.append(f"diverged: {record['diverged']}")
    if len(epochs) < cfg['max_epochs'] and not record.get('diverged'):
        notes.append('incomplete')
    row = {'run': cfg['run_name'], 'best epoch': best.get('epoch'),
           'test acc % (best epoch)': 100 * best['test_accuracy'] if 'test_accuracy' in best else None,
           'time': sum(e['epoch_seconds'] for e in epochs), 'device': record.get('device'),
           'epochs': len(epochs), 'note': '; '.join(notes), **cost_columns(record, epochs)}
    for split in ('train', 'valid'):
        losses = [e[f'{split}_loss'] for e in epochs]
        accuracies = [e[f'{split}_accuracy'] for e in epochs]
        row[f'best {split} loss'] = min(losses) if losses else None
        row[f'best {split} acc %'] = 100 * max(accuracies) if accuracies else None
    return row


def _formatted(column, value):
    if value is None:
        return '-'
    if column == 'time':
        return console.clock(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return 'NaN'
        if column == 'img/s':
            return f'{value:.0f}'
        return f'{value:.2f}' if '%' in column or column.startswith('M ') else f'{value:.4f}'
    return str(value)


def _markdown_table(header, lines):
    return ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)] + [
        '| ' + ' | '.join(line) + ' |' for line in lines]


def without_activation(cfg):
    """The run's name with its activation left out: resnet50_se_relu_se_r-8
    -> resnet50_se_se_r-8 (experiment_name puts the activation after the
    model and SE parts)."""
    base = constant.run_name({**cfg, 'run_name': None})
    return base[:-len(cfg['activation_fn']) - 1] + cfg['run_name'][len(base):]


def activations_side_by_side_lines(runs, rows):
    """The table in the original layout: one line per network, train / valid figures of
    each activation side by side; [] unless the runs compare activations."""
    activations = list(dict.fromkeys(cfg['activation_fn'] for cfg in runs))
    if len(activations) < 2:
        return []
    networks = {}  # network -> activation -> row
    for cfg, row in zip(runs, rows):
        networks.setdefault(without_activation(cfg), {})[cfg['activation_fn']] = row

    def cells(by_activation, *columns):
        """Per activation, its row's `columns` joined by ' / ' ('-' if not run)."""
        return [' / '.join(_formatted(c, by_activation[af][c]) for c in columns)
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
    return ['', '## Activations side by side', '', *_markdown_table(header, lines), '',
            f"Train / valid, best over the epochs; time and epochs per activation "
            f"({' / '.join(activations)}); '-': not run."]


def _mean_and_spread(column, values):
    """'mean ± sample standard deviation' of a column's values ('-' if none)."""
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return _formatted(column, values[0] if values else None)
    mean, spread = float(np.mean(values)), float(np.std(values, ddof=1))  # NaN stays NaN
    return f'{_formatted(column, mean)} ± {_formatted(column, spread)}'


def over_seeds_lines(runs, rows):
    """Per configuration, the mean and spread of its runs with other seeds;
    [] unless some configuration ran with several seeds."""
    groups = {}  # configuration -> [(seed, row)]
    for cfg, row in zip(runs, rows):
        groups.setdefault(configuration_name(cfg), []).append((cfg['seed'], row))
    if all(len(members) < 2 for members in groups.values()):
        return []
    lines = [[name, ', '.join(str(seed) for seed, _ in members),
              *(_mean_and_spread(c, [row[c] for _, row in members]) for c in SEED_COLUMNS)]
             for name, members in groups.items()]
    return ['', '## Over seeds', '', *_markdown_table(['configuration', 'seeds', *SEED_COLUMNS], lines),
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
    return ['', '## Paired over seeds', '', *_markdown_table(paired.TABLE_HEADER, paired.table_rows(found)),
            '', f'Treatment - baseline over the runs of equal seed; {paired.CONFIDENCE:.0%} confidence '
            f'interval of the mean difference (Student t), paired t-test and Wilcoxon signed-rank p; '
            f'fewer than {paired.MIN_PAIRS} pairs give no p.', '', *readings]


def results_markdown(rows, title, runs=None):
    """The results table; with the runs' configs, also the mean and spread
    over seeds where configurations repeat with several, the paired
    comparisons over seeds, and the original layout where the runs compare
    activations."""
    lines = [f'# {title}', '',
             *_markdown_table(COLUMNS, [[_formatted(c, row[c]) for c in COLUMNS] for row in rows]),
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


def sweep_run(cfg, record):
    """What the sweep's figure shows of a run: its curves and instruments."""
    numbers, _, _ = excitation.paths(run_dir(cfg), instrument_files.TRAINING_SPLIT)
    return figures.SweepRun(
        cfg['run_name'], without_activation(cfg), cfg['activation_fn'], cfg['use_se'],
        record['epochs'], record.get(self_normalisation.KEY),
        excitation.load(numbers) if os.path.isfile(numbers) else None)


def write_results(grid, runs):
    """results.md, results.csv and validation.pdf of the runs that have
    trained, in SAVE_DIR/experiments/<grid>; returns (that directory, the
    markdown)."""
    out_dir = os.path.join(constant.derived_dirs(runs[0])['SAVE_DIR'], 'experiments', grid)
    records = [(cfg, record_of_run(cfg)) for cfg in runs]
    records = [(cfg, record) for cfg, record in records if record['epochs'] or record.get('diverged')]
    trained = [cfg for cfg, _ in records]
    rows = [result_row(cfg, record) for cfg, record in records]
    title = f"{grid} grid on {runs[0]['dataset_name']}"
    markdown = results_markdown(rows, title, trained)
    safe_io.write_text(os.path.join(out_dir, 'results.md'), markdown)
    safe_io.write_text(os.path.join(out_dir, 'results.csv'), results_csv(rows))
    figures.sweep_figure([sweep_run(cfg, record) for cfg, record in records],
                               os.path.join(out_dir, 'validation.pdf'), title)
    return out_dir, markdown


def run_experiments(argv):
    """The whole sweep; returns the process exit status."""
    grid, runs = plan(argv)
    print(sweep_line(grid, runs), flush=True)
    try:
        return run_all(runs)
    finally:  # a run that failed costs its own row, not the table of the others
        out_dir, markdown = write_results(grid, runs)
        print(markdown)
        print(f'Results in: {console.shown_path(out_dir)} (results.md, results.csv, validation.pdf)',
              flush=True)


def cli(argv):
    tf.compat.v1.disable_eager_execution()
    return command.run(run_experiments, argv)


if __name__ == '__main__':
    sys.exit(cli(sys.argv[1:]))
