"""Runs every configuration of a grid from constant.py, each as a normal
main.py run with its own outputs, then writes the results table and one plot
of all validation curves.

    python experiments.py                                  # constant.config['experiment_grid']
    python experiments.py dataset_name=mnist max_epochs=3  # key=value applies to every run
    python experiments.py experiment_grid=se_integration

Runs already complete are skipped and an interrupted one resumes, so running
the same command again continues a stopped sweep.
"""
import json
import os
import shutil
import sys

from trainer.config import command

command.answer_early(__name__, __doc__)  # --help and mistakes answered before TensorFlow loads

import numpy as np
import tensorflow as tf

import main
from foundation import machine, safe_io
from foundation.data import loaders
from foundation.errors import DataError, UserError
from trainer import console
from trainer.config import settings
from trainer.runs import disk, folder
from trainer.runs.records import saved_record
from trainer.study import excitation, figures, instrument_files, run_curves, self_normalisation
from trainer.sweeps import report, report_figures, results, workers
from trainer.sweeps.names import NOT_RESULT_KEYS, configuration_name, without_activation
from trainer.sweeps.plan import checked_plan, one_precision_per_network, results_dir, run_dir
from trainer.training import training_graph


def plan(argv):
    """(grid name, [config of each run]) for the chosen grid with the
    key=value overrides of argv on top, each point once per seed of
    experiment_seeds; the sweep's size, then every config, checked before
    any runs."""
    grid, runs = checked_plan(argv)
    fitted, changed = one_precision_per_network(runs, [machine.fit_to_machine(cfg) for cfg in runs])
    if changed and not os.environ.get(folder.WORKER_ENV):  # said by the sweep, not again by each of its workers
        print(changed, flush=True)
    return grid, fitted


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
    return 'done' if main.is_complete(record, cfg) else 'resume'


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


def run_all(runs, share=None):
    """Trains every run (of this worker's fixed share) not done yet and not
    held by another worker; returns 0, or the exit status of an interrupted
    run (the sweep stops there). Each run's state is decided with its lock
    held, so a run another worker has just completed is not started again."""
    mine = runs if share is None else workers.share_of(runs, share)
    numbered = [(number, cfg) for number, cfg in enumerate(runs, start=1) if cfg in mine]
    finished, in_use = set(), {}
    trained = True
    while trained:  # once more after training: a worker that held a run may have ended since
        trained = False
        for number, cfg in numbered:
            if number in finished:
                continue
            with workers.claimed(cfg) as holder:
                if holder:
                    if in_use.get(number) != holder:
                        print(f"=== run {number} / {len(runs)}: {cfg['run_name']}: in use by {holder}: "
                              f"left to it", flush=True)
                    in_use[number] = holder
                    continue
                status = run_one(number, cfg, runs)
            finished.add(number)
            if status is None:
                continue
            trained = True
            if status >= 128:
                print('The sweep stopped; run the same command again to continue it.',
                      file=sys.stderr, flush=True)
                return status
    return 0


def run_one(number, cfg, runs):
    """Trains the run whose lock this process holds, if it needs it;
    returns its exit status, or None where it was complete."""
    state = run_state(record_of_run(cfg), cfg)
    print(f"=== run {number} / {len(runs)}: {cfg['run_name']}: "
          f"{ {'done': 'complete, skipped', 'resume': 'resuming', 'start': 'starting'}[state]}",
          flush=True)
    if state == 'done':
        return None
    try:
        return main.train({**cfg, 'resume': state == 'resume'})
    except UserError as error:  # said as the run's, in one line
        raise type(error)(f"run {number} / {len(runs)}, {cfg['run_name']}: {error}") from None


def sweep_run(cfg, record):
    """What the sweep's figure shows of a run: its curves and instruments."""
    numbers, _, _ = excitation.paths(run_dir(cfg), instrument_files.TRAINING_SPLIT)
    return run_curves.SweepRun(
        cfg['run_name'], without_activation(cfg), cfg['activation_fn'], cfg['use_se'],
        record['epochs'], record.get(self_normalisation.KEY),
        excitation.load(numbers) if os.path.isfile(numbers) else None)


def write_results(grid, runs):
    """results.md, results.csv, validation.pdf, report.md and report.pdf of
    the runs that have trained, in SAVE_DIR/experiments/<grid>, all or none
    of them; returns (that directory, the results markdown)."""
    out_dir = results_dir(grid, runs)
    records = [(cfg, record_of_run(cfg)) for cfg in runs]
    records = [(cfg, record) for cfg, record in records if record['epochs'] or record.get('diverged')]
    trained = [cfg for cfg, _ in records]
    rows = [results.result_row(cfg, record) for cfg, record in records]
    title = f"{grid} grid on {runs[0]['dataset_name']}"
    markdown = results.results_markdown(rows, title, trained)
    with safe_io.all_or_none():  # the tables and the report never disagree
        safe_io.write_text(os.path.join(out_dir, 'results.md'), markdown)
        safe_io.write_text(os.path.join(out_dir, 'results.csv'), results.results_csv(rows))
        figures.sweep_figure([sweep_run(cfg, record) for cfg, record in records],
                             os.path.join(out_dir, 'validation.pdf'), title)
        if records:
            write_report(grid, records, out_dir)
    return out_dir, markdown


def write_report(grid, records, out_dir):
    """report.md and report.pdf of the [(config, record)] of the trained runs."""
    found = report.build(grid, [report.report_run(cfg, record, run_dir(cfg)) for cfg, record in records])
    safe_io.write_text(os.path.join(out_dir, report.MARKDOWN_NAME), report.markdown(found, report_figures.PAGES))
    report_figures.write_pdf(found, os.path.join(out_dir, report.PDF_NAME))


def run_experiments(argv):
    """The whole sweep, or this worker's part of it; returns the process exit status."""
    grid, runs = plan(argv)
    first = runs[0]
    share = workers.fixed_share(first)
    print(sweep_line(grid, runs), flush=True)
    if not os.environ.get(folder.WORKER_ENV):
        _, states = states_of(runs)
        left = [cfg for cfg, state in zip(runs, states) if state != 'done']
        if left:
            print(disk_line(left, len(runs)), flush=True)
    line = workers.share_line(share, workers.share_of(runs, share), runs)
    if line:
        print(line, flush=True)
    if first['workers'] > 1:
        return run_workers(argv, grid, runs)
    try:
        return run_all(runs, share)
    finally:  # a run that failed costs its own row, not the table of the others
        if not os.environ.get(folder.WORKER_ENV):  # workers=N: the one that started the workers writes them
            write_results_unless_running(grid, runs)


def disk_line(runs, planned):
    """'Disk: about 0.8 GB a run of resnet50, ...: 3.2 GB for the 4 runs left of 8; 41 GB free there'
    for the `runs` still to train of the `planned` number (said once)."""
    sizes, per_network = [], {}
    for cfg in runs:
        key = (cfg['model'], cfg['use_se'], cfg['dataset_name'], cfg['optimizer'], cfg['keep_checkpoints'],
               cfg['ema_decay'])
        if key not in per_network:
            shape = loaders.DATASETS[cfg['dataset_name']].image_shape
            per_network[key] = training_graph.disk_estimate(cfg, shape)
        sizes.append(per_network[key])
    each = ', '.join(f"{disk.size_text(size)} a run of {model}{' with SE' if se else ''}"
                     for (model, se, *_), size in per_network.items())
    free = shutil.disk_usage(safe_io.nearest_folder(runs[0]['datasets_root'])).free
    return (f"Disk: about {each} (keep_checkpoints={runs[0]['keep_checkpoints']}); {disk.size_text(sum(sizes))} "
            f"for the {len(runs)} runs{f' left of {planned}' if len(runs) < planned else ''}; "
            f"{disk.size_text(free)} free there")


def run_workers(argv, grid, runs):
    """workers=N: N worker processes share the sweep; their progress is
    shown here, and the tables are written once they have all ended."""
    count = runs[0]['workers']
    log_dir = os.path.join(results_dir(grid, runs), 'workers')
    started = workers.start_workers(os.path.abspath(__file__), argv, count, len(tf.config.list_physical_devices('GPU')),
                                    log_dir)
    print(f"{count} workers ({'; '.join(line for _, _, line in started)}), their consoles in "
          f"{console.shown_path(log_dir)}", flush=True)
    try:
        return workers.wait_for(started, lambda: progress_line(runs, count))
    finally:
        write_results_unless_running(grid, runs)


def progress_line(runs, count):
    """'Sweep: 3 / 8 complete; training: <run> (worker 1 of 2, epoch 2 / 3); 3 waiting; ...'"""
    records, states = states_of(runs)
    running = training_elsewhere(runs, records, states)
    held = [f"{cfg['run_name']} ({worker_of(cfg)}, epoch {len(record['epochs'])} / {cfg['max_epochs']} done)"
            for cfg, record in running]
    done = states.count('done')
    waiting = len(runs) - done - len(running)
    to_train = [(cfg, epochs_to_train(state, record, cfg))
                for cfg, record, state in zip(runs, records, states) if state != 'done']
    line = f"Sweep: {done} / {len(runs)} complete; training: {', '.join(held) or 'none'}; {waiting} waiting"
    if to_train:
        line += f'; {time_estimate(to_train, seconds_per_epoch(runs, records, states))}, shared by {count} workers'
    return line


def states_of(runs):
    """(records, states) of the runs as their files hold them now."""
    records = [record_of_run(cfg, warn=False) for cfg in runs]
    return records, [run_state(record, cfg) for record, cfg in zip(records, runs)]


def training_elsewhere(runs, records, states):
    """[(config, record)] of the runs not complete whose lock another live
    process holds (a complete run's lock is held only while a worker looks at it)."""
    return [(cfg, record) for cfg, record, state in zip(runs, records, states)
            if state != 'done' and workers.held_elsewhere(cfg)]


def worker_of(cfg):
    run = folder.locate(cfg)
    _, _, label = folder.parsed_holder(folder.holder(os.path.dirname(run.directory), run.name))
    found = label.partition(', worker ')[2].split(',')[0]
    return f'worker {found}' if found else label


def write_results_unless_running(grid, runs):
    """The tables and report, by one worker at a time (a lock), and not while
    another worker still trains a run of the grid: the one that finds the
    grid complete, or nothing running, writes them."""
    busy = [cfg['run_name'] for cfg, _ in training_elsewhere(runs, *states_of(runs))]
    if busy:
        print(f"{len(busy)} run(s) still training in other workers ({', '.join(busy[:3])}"
              f"{', ...' if len(busy) > 3 else ''}): the worker that ends last writes the tables",
              flush=True)
        return
    with workers.results_lock(results_dir(grid, runs)):
        out_dir, markdown = write_results(grid, runs)
    print(markdown)
    print(f'Results in: {console.shown_path(out_dir)} (results.md, results.csv, validation.pdf, '
          f'{report.MARKDOWN_NAME}, {report.PDF_NAME})',
          flush=True)


def cli(argv):
    tf.compat.v1.disable_eager_execution()
    return command.run(run_experiments, argv)


if __name__ == '__main__':
    sys.exit(cli(sys.argv[1:]))
