"""A run's folder: where it is, who uses it (one process at a time), and
starting it afresh (the earlier run of the same name kept beside it) or
resuming it from its newest readable checkpoint."""
import dataclasses
import datetime
import fcntl
import itertools
import os
import shutil
import socket
import sys

import tensorflow as tf

import constant
from foundation.errors import UserError
from foundation.networks import pretrained
from trainer import console
from trainer.runs import checkpoints, history, record_schema
from trainer.runs.records import check_same_graph, record_of, saved_record
from trainer.runs.weights import restore_newest_readable

v1 = tf.compat.v1


BEST_DIR = 'best'  # in a run's folder: the checkpoint of its best validation epoch
EVALUATION_DIR = 'evaluation'  # in a run's folder: one folder <split>-<checkpoint> per evaluation
EARLIER = '.earlier-'  # <run>.earlier-<when it was set aside>: an earlier run of the same name


class RunInUse(UserError):
    """Another process trains the run."""


@dataclasses.dataclass
class Run:
    """What the training loop and its callbacks share about one run."""
    cfg: dict
    name: str          # names its outputs: constant.run_name
    dirs: dict         # constant.derived_dirs
    directory: str     # checkpoints, history, TensorBoard events
    built: object = None    # training_graph.TrainingGraph
    session: object = None
    stop: object = None     # interruption.StopRequests
    record: dict = None     # the history: epochs, best, test, config
    done: int = 0           # epochs completed
    skip: int = 0           # images of the next epoch already trained
    cost: dict = None       # training_graph.network_cost
    trace: object = None    # profiling.StepTrace of profile_steps


def locate(cfg):
    """The Run that cfg names, before anything is built."""
    dirs = constant.derived_dirs(cfg)
    name = constant.run_name(cfg)
    return Run(cfg, name, dirs, os.path.join(dirs['RUNS_SAVE_DIR'], name))


# --- one process per run -----------------------------------------------------------

WORKER_ENV = 'TRAINER_WORKER'  # 'i of N': set by experiments.py workers=N for the workers it starts


def holder_label(environ=os.environ):
    """Who this process is, as a run's lock and record say it: process,
    host, and the sweep worker or Slurm array task it is."""
    label = f'process {os.getpid()} on {socket.gethostname()}'
    if environ.get(WORKER_ENV):
        label += f', worker {environ[WORKER_ENV]}'
    if environ.get('SLURM_ARRAY_TASK_ID'):
        label += f", Slurm job {environ.get('SLURM_ARRAY_JOB_ID', '?')} task {environ['SLURM_ARRAY_TASK_ID']}"
    return label


def parsed_holder(text):
    """(pid, host, label) of a lock's holder text as Lock writes it
    (holder_label, then ' since ...'); pid and host None where the text is
    not of that form."""
    label = text.split(' since ', 1)[0]
    if not label.startswith('process '):
        return None, None, label
    pid, _, rest = label[len('process '):].partition(' on ')
    return (int(pid) if pid.isascii() and pid.isdigit() else None), rest.split(',', 1)[0], label


def lock_path(runs_dir, name):
    return os.path.join(runs_dir, f'.{name}.lock')


class Lock:
    """Holds <runs>/.<run>.lock while a process uses the run: an flock, which
    the system releases when the process ends, however it ends. The file
    says who holds it. A process that holds a run's lock enters it again
    freely (a sweep worker claims a run, then trains it)."""

    _held = {}  # path -> [open file, depth] of the locks this process holds

    def __init__(self, run):
        self.path = lock_path(os.path.dirname(run.directory), run.name)
        self.name = run.name

    def __enter__(self):
        held = Lock._held.get(self.path)
        if held:
            held[1] += 1
            return self
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        file = open(self.path, 'a+', encoding='utf-8')
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            file.seek(0)
            holder = file.read().strip() or 'another process'
            file.close()
            raise RunInUse(f'run {self.name} is in use by {holder}; wait for it to end, or '
                           f'set run_name=... to train another run') from None
        file.truncate(0)
        started = datetime.datetime.now().isoformat(timespec='seconds')
        file.write(f"{holder_label()} since {started} "
                   f"({' '.join([os.path.basename(sys.argv[0])] + sys.argv[1:])})")
        file.flush()
        Lock._held[self.path] = [file, 1]
        return self

    def __exit__(self, *exc):
        held = Lock._held[self.path]
        held[1] -= 1
        if not held[1]:
            del Lock._held[self.path]
            held[0].truncate(0)
            held[0].close()  # closing releases the flock


def holder(runs_dir, name):
    """What the lock file of run `name` says of its holder ('' when none
    wrote, or the holder ended cleanly); read without taking the lock."""
    try:
        with open(lock_path(runs_dir, name), encoding='utf-8', errors='replace') as f:
            return f.read(1000).strip()
    except OSError:
        return ''


# --- starting and resuming --------------------------------------------------------

def start_or_resume(run, chief=True):
    """Restores the run's newest readable checkpoint when resuming, else
    starts afresh; sets run.record, run.done (epochs done) and run.skip
    (images done of the next epoch).

    A fresh start keeps the earlier run of the same name beside it. Only the
    `chief` of a multi-worker job touches the files.
    """
    cfg, session, built = run.cfg, run.session, run.built
    present = checkpoints.found(run.directory)
    if cfg['resume'] and present:
        check_same_graph(saved_record(run.directory), cfg, run.directory)
        checkpoint = restore_newest_readable(session, built.saver, run.directory)
        run.done, run.skip = built.progress.get(session)
        run.record = record_of(checkpoint, run.directory)
        if chief:
            commit_files(run, keep=[c for c in present if c <= checkpoint])
        into = f', {run.skip} images into epoch {run.done + 1}' if run.skip else ''
        print(f'Resuming from {checkpoint.prefix}: {run.done} epoch(s) done{into}', flush=True)
        note_trainer(run, chief)
        return
    if cfg['resume']:
        print(f'No checkpoint in {run.directory}: starting from epoch 1', flush=True)
    if chief:
        if os.path.isdir(run.directory) and os.listdir(run.directory):
            set_aside(run)
        os.makedirs(run.directory, exist_ok=True)
    session.run(v1.global_variables_initializer())
    pretrained.start_from(run)  # init_weights: a fresh start only, never over a checkpoint
    run.record, run.done, run.skip = {'epochs': []}, 0, 0
    note_trainer(run, chief)


def note_trainer(run, chief):
    """Adds to the record who trains the run from which epoch (a sweep's
    workers share runs: the record says which trained what)."""
    if chief:
        trainers = run.record.get(record_schema.TRAINED_BY, [])
        run.record[record_schema.TRAINED_BY] = [*trainers, f'{holder_label()} from epoch {run.done + 1}']


def commit_files(run, keep=None):
    """Makes the run's files agree with run.record: the newest
    keep_checkpoints checkpoints (of `keep`, when given: those of the
    restored run), the best checkpoints their records name, history.json and
    .csv."""
    present = keep if keep is not None else checkpoints.found(run.directory)
    kept = checkpoints.retain(run.directory, present[-run.cfg['keep_checkpoints']:])
    best_dir = os.path.join(run.directory, BEST_DIR)
    named = {os.path.join(run.directory, r['best']['checkpoint'])
             for r in [run.record] + [c.record() or {} for c in kept] if 'best' in r}
    checkpoints.retain(best_dir, [c for c in checkpoints.found(best_dir) if c.prefix in named])
    history.save(run.directory, run.record)


def set_aside(run):
    """Moves the run of this name (with its plot and filter images) to
    <run>.earlier-<time>, keeping the newest keep_earlier_runs such."""
    earlier = f"{run.directory}{EARLIER}{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    earlier += next(f'-{n}' for n in itertools.count(1) if not os.path.exists(f'{earlier}-{n}')) \
        if os.path.exists(earlier) else ''
    os.replace(run.directory, earlier)
    plot = os.path.join(run.dirs['PLOT_TRAINING_SAVE_DIR'], f'{run.name}.pdf')
    filters = os.path.join(run.dirs['FILTERS_SAVE_DIR'], run.name)
    for path, name in ((plot, 'plot.pdf'), (filters, 'filters')):
        if os.path.exists(path):
            os.replace(path, os.path.join(earlier, name))
    print(f'The earlier run {run.name} is kept in {console.shown_path(earlier)} (with its plot and '
          f'filters)', flush=True)
    keep = run.cfg['keep_earlier_runs']
    runs_dir = os.path.dirname(run.directory)
    older = sorted((n for n in os.listdir(runs_dir) if n.startswith(run.name + EARLIER)),
                   key=lambda n: os.stat(os.path.join(runs_dir, n)).st_mtime_ns)
    for name in older[:max(len(older) - keep, 0)]:
        shutil.rmtree(os.path.join(runs_dir, name))
        print(f'Removed the oldest earlier run {name} (keep_earlier_runs={keep})', flush=True)
