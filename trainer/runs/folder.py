"""A run's folder: where it is, who uses it (one process at a time), and
starting it afresh (the earlier run of the same name kept beside it once the
new one has a checkpoint) or resuming it from its newest readable checkpoint."""
import contextlib
import dataclasses
import datetime
import fcntl
import itertools
import os
import socket
import sys

import tensorflow as tf

import constant
from foundation import safe_io
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
FRESH = '.fresh'  # .<run>.fresh: a fresh start's folder until its first checkpoint puts it in the run's place


class RunInUse(UserError):
    """Another process trains the run."""


@dataclasses.dataclass
class Run:
    """What the training loop and its callbacks share about one run."""
    cfg: dict
    name: str          # names its outputs: constant.run_name
    dirs: dict         # constant.derived_dirs
    directory: str     # checkpoints, history, TensorBoard events (a fresh start's staging folder first)
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


def place_of(run):
    """The run's own folder, <runs>/<run>, wherever it trains now."""
    return os.path.join(os.path.dirname(run.directory), run.name)


def staging_path(run):
    return os.path.join(os.path.dirname(run.directory), f'.{run.name}{FRESH}')


class Lock:
    """Holds <runs>/.<run>.lock while a process uses the run: an flock, which
    the system releases when the process ends, however it ends. The file
    says who holds it. A process that holds a run's lock enters it again
    freely (a sweep worker claims a run, then trains it). Whoever takes the
    lock first, and whoever gives it up, finishes what a fresh start that
    ended midway left (settle), so every holder finds the run whole."""

    _held = {}  # path -> [open file, depth] of the locks this process holds

    def __init__(self, run):
        self.path = lock_path(os.path.dirname(run.directory), run.name)
        self.name = run.name
        self.run = run

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
        started = datetime.datetime.now().isoformat(timespec='seconds')
        said = (f"{holder_label()} since {started} "
                f"({' '.join([os.path.basename(sys.argv[0])] + sys.argv[1:])})")
        try:  # unbuffered: a full disk fails here, and leaves nothing for close() to write later
            os.ftruncate(file.fileno(), 0)
            os.write(file.fileno(), said.encode())
        except OSError as error:
            file.close()
            raise OSError(error.errno, error.strerror, self.path) from None  # os.write names no file
        Lock._held[self.path] = [file, 1]
        try:
            settle(self.run)
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, kind, *exc):
        held = Lock._held[self.path]
        held[1] -= 1
        if not held[1]:
            try:
                with contextlib.suppress(*((OSError,) if kind else ())):  # the block's error is the one to say
                    settle(self.run)
            finally:
                self._release()

    def _release(self):
        file = Lock._held.pop(self.path)[0]
        file.truncate(0)
        file.close()  # closing releases the flock


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

    A fresh start over a folder that holds anything trains in a staging
    folder (staging_path) and leaves the earlier run whole in its place
    until the new one commits its first checkpoint (commit_files). Only the
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
            run.directory = staging_path(run)
            safe_io.remove_folder(run.directory)  # what no lock holder settled (a test, a notebook)
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
    .csv. A fresh start's first checkpoint then puts its staging folder in
    the run's place, the earlier run set aside."""
    present = keep if keep is not None else checkpoints.found(run.directory)
    kept = checkpoints.retain(run.directory, present[-run.cfg['keep_checkpoints']:])
    best_dir = os.path.join(run.directory, BEST_DIR)
    named = {os.path.join(run.directory, r['best']['checkpoint'])
             for r in [run.record] + [c.record() or {} for c in kept] if 'best' in r}
    checkpoints.retain(best_dir, [c for c in checkpoints.found(best_dir) if c.prefix in named])
    history.save(run.directory, run.record)
    if run.directory == staging_path(run) and kept:
        run.directory = put_in_place(run)


# --- a fresh start's staging folder and the earlier runs -----------------------------

def holds_checkpoint(directory):
    """Whether `directory` holds a trained run: a complete checkpoint, in it
    or in its best/."""
    return bool(checkpoints.found(directory) or checkpoints.found(os.path.join(directory, BEST_DIR)))


def put_in_place(run):
    """Sets aside the run in the place of `run` (which trains in its staging
    folder and holds a checkpoint) and puts the staging folder there; returns
    that place. Every step is a rename, or a removal that begins with one:
    after a kill between any two, settle finishes the rest."""
    place = place_of(run)
    if os.path.lexists(place):
        set_aside(run)
    os.replace(run.directory, place)
    return place


def settle(run):
    """Finishes a fresh start of `run` that ended midway (killed, or failed
    before its first checkpoint); called under the run's lock. A staging
    folder with a checkpoint takes the run's place, the earlier run set
    aside; one without is removed, the run in place left as it was."""
    staging = staging_path(run)
    safe_io.remove_folder(staging + safe_io.REMOVING)
    if os.path.isdir(os.path.dirname(staging)):
        prune_earlier(run, bound=False)
    if not os.path.isdir(staging):
        return
    if holds_checkpoint(staging):
        put_in_place(dataclasses.replace(run, directory=staging))
        return
    safe_io.remove_folder(staging)
    if os.path.isdir(place_of(run)):
        print(f'The fresh start of {run.name} committed no epoch: the run in '
              f'{console.shown_path(place_of(run))} stays as it was', flush=True)


def set_aside(run):
    """Moves the run in the place of `run` (with its plot and filter images)
    to <run>.earlier-<time>, keeping the newest keep_earlier_runs such; a
    folder that holds no checkpoint is no trained run: it is removed, and
    never counts among those kept."""
    place = place_of(run)
    if not holds_checkpoint(place):
        safe_io.remove_folder(place)
        print(f'Removed {console.shown_path(place)}: it held no checkpoint, so no trained run to keep',
              flush=True)
        prune_earlier(run)
        return
    plot = os.path.join(run.dirs['PLOT_TRAINING_SAVE_DIR'], f'{run.name}.pdf')
    filters = os.path.join(run.dirs['FILTERS_SAVE_DIR'], run.name)
    for path, name in ((plot, 'plot.pdf'), (filters, 'filters')):  # into the folder first: it then moves whole
        if os.path.exists(path):
            if os.path.isdir(os.path.join(place, name)):  # moved there by a set-aside killed next
                safe_io.remove_folder(os.path.join(place, name))
            os.replace(path, os.path.join(place, name))
    earlier = f"{place}{EARLIER}{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    earlier += next(f'-{n}' for n in itertools.count(1) if not os.path.exists(f'{earlier}-{n}')) \
        if os.path.exists(earlier) else ''
    os.replace(place, earlier)
    print(f'The earlier run {run.name} is kept in {console.shown_path(earlier)} (with its plot and '
          f'filters)', flush=True)
    prune_earlier(run)


def prune_earlier(run, bound=True):
    """Removes the earlier folders of `run`'s name that hold no checkpoint
    and what a removal killed midway left; with `bound`, keeps the newest
    keep_earlier_runs of the others, removing the older ones."""
    runs_dir = os.path.dirname(place_of(run))
    earlier = [os.path.join(runs_dir, n) for n in os.listdir(runs_dir) if n.startswith(run.name + EARLIER)]
    trained = sorted((p for p in earlier if not p.endswith(safe_io.REMOVING) and holds_checkpoint(p)),
                     key=lambda p: os.stat(p).st_mtime_ns)
    for path in earlier:
        if path not in trained:
            safe_io.remove_folder(path)
    keep = run.cfg['keep_earlier_runs'] if bound else len(trained)
    for path in trained[:max(len(trained) - keep, 0)]:
        safe_io.remove_folder(path)
        print(f'Removed the oldest earlier run {os.path.basename(path)} (keep_earlier_runs={keep})', flush=True)
