"""A run's folder: where it is, who uses it (one process at a time), starting
it afresh (the earlier run of the same name kept beside it) or resuming it
from its newest readable checkpoint, and what a run that stops early leaves.
The checkpoints themselves: trainer/checkpoints.py."""
import dataclasses
import datetime
import errno
import fcntl
import itertools
import os
import shutil
import socket
import sys

import tensorflow as tf

import constant
from trainer import checkpoints, console, history, pretrained, settings
from trainer.errors import DataError, ResumeError, UserError

v1 = tf.compat.v1
BEST_DIR = 'best'  # in a run's folder: the checkpoint of its best validation epoch
EVALUATION_DIR = 'evaluation'  # in a run's folder: one folder <split>-<checkpoint> per evaluation
EARLIER = '.earlier-'  # <run>.earlier-<when it was set aside>: an earlier run of the same name


class RunInUse(UserError):
    """Another process trains the run."""


class OutOfSpace(UserError):
    """A disk filled up while the run wrote to it."""


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


def locate(cfg):
    """The Run that cfg names, before anything is built."""
    dirs = constant.derived_dirs(cfg)
    name = constant.run_name(cfg)
    return Run(cfg, name, dirs, os.path.join(dirs['RUNS_SAVE_DIR'], name))


def error_reason(error):
    """The line of a TensorFlow or Python error that says what went wrong:
    its last line that is not indented, since TensorFlow wraps the reason of
    an error in a graph in lines of where it happened ('Graph execution
    error:', 'Node: ...', '\t [[{{node ...}}]]')."""
    lines = str(getattr(error, 'message', error)).strip().split('\n')
    said = [line for line in lines if line.strip() and not line[0].isspace()]
    return (said or lines)[-1].strip()


# --- one process per run -----------------------------------------------------------

class Lock:
    """Holds <runs>/.<run>.lock while a process uses the run: an flock, which
    the system releases when the process ends, however it ends. The file
    says who holds it."""

    def __init__(self, run):
        self.path = os.path.join(os.path.dirname(run.directory), f'.{run.name}.lock')
        self.name, self.file = run.name, None

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.file = open(self.path, 'a+', encoding='utf-8')
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            holder = self.file.read().strip() or 'another process'
            self.file.close()
            raise RunInUse(f'run {self.name} is in use by {holder}; wait for it to end, or '
                           f'set run_name=... to train another run') from None
        self.file.truncate(0)
        started = datetime.datetime.now().isoformat(timespec='seconds')
        self.file.write(f"process {os.getpid()} on {socket.gethostname()} since {started} "
                        f"({' '.join([os.path.basename(sys.argv[0])] + sys.argv[1:])})")
        self.file.flush()
        return self

    def __exit__(self, *exc):
        self.file.truncate(0)
        self.file.close()  # closing releases the flock


# --- the record a run's files hold -------------------------------------------------

def saved_record(directory):
    """The run's record as its files hold it: history.json where it holds
    the same epochs as the newest checkpoint (it may hold the test result
    too), else that checkpoint's own record (history.json missing, damaged,
    or behind after a crash). {'epochs': []} for a folder without either;
    DataError for a damaged history.json and no checkpoint's record."""
    newest = next((r for r in (c.record() for c in reversed(checkpoints.found(directory))) if r), None)
    try:
        written = history.load(directory)
    except DataError:
        if newest is None:
            raise
        written = None
    if newest is None or (written and epochs_of(written) == epochs_of(newest)):
        return written or {'epochs': []}
    return newest


def epochs_of(record):
    return [row.get('epoch') for row in record.get('epochs', [])]


# The variables mixed precision's dynamic loss scaling adds to a graph
# (tf.compat.v1.mixed_precision): the only ones a checkpoint of the other
# precision lacks, the weights being float32 in both.
LOSS_SCALE_VARIABLES = ('current_loss_scale', 'good_steps')


def restore(session, saver, prefix):
    """saver.restore of a checkpoint, also of one written in the other
    precision: from a float32 checkpoint a mixed-precision graph's loss scale
    starts afresh (it is dynamic: it finds its level within a few steps), and
    in float32 the loss scale a checkpoint holds is left unread. Any other
    variable missing fails as in saver.restore."""
    saved = {name for name, _ in tf.train.list_variables(prefix)}
    variables = session.graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES)
    missing = [v for v in variables if v.op.name not in saved]
    if not missing or not all(v.op.name.split('/')[-1] in LOSS_SCALE_VARIABLES for v in missing):
        saver.restore(session, prefix)
        return
    session.run(v1.variables_initializer(missing))
    v1.train.Saver([v for v in variables if v not in missing]).restore(session, prefix)


def restore_best(run, without):
    """Puts the checkpoint of the run's best validation epoch into its
    session; False, with a warning that says what goes `without` it, where
    that checkpoint does not read."""
    checkpoint = os.path.join(run.directory, run.record['best']['checkpoint'])
    try:
        restore(run.session, run.built.best_saver, checkpoint)
        return True
    except (tf.errors.OpError, ValueError) as error:
        print(f"warning: the best epoch's checkpoint {checkpoint} is unreadable "
              f"({error_reason(error)}); {without}", file=sys.stderr, flush=True)
        return False


def restore_newest_readable(session, saver, directory):
    """Restores the newest checkpoint that reads back and returns it; None
    if there is none. A damaged checkpoint is named and skipped for the one
    before; ResumeError if none reads."""
    candidates = checkpoints.found(directory)
    for checkpoint in reversed(candidates):
        try:
            restore(session, saver, checkpoint.prefix)
            return checkpoint
        except (tf.errors.OpError, ValueError) as error:
            print(f'warning: checkpoint {checkpoint.prefix} is unreadable ({error_reason(error)}); '
                  f'trying the one before', file=sys.stderr, flush=True)
    if candidates:
        raise ResumeError(f'no checkpoint of {directory} can be read '
                          f'({", ".join(c.name for c in candidates)}); restore them from a copy, '
                          f'or drop resume=True to start afresh (the run is then kept beside '
                          f'the new one)')
    return None


def graph_changes(record, cfg):
    """'key: value in the checkpoint, value now' for every key that shapes
    the network (settings.graph_signature) and differs between the config a
    record saved and cfg; '' where none does."""
    saved = record.get('config', {})
    differing = [k for k, v in settings.graph_signature(cfg).items() if k in saved and saved[k] != v]
    return ', '.join(f'{k}: {saved[k]!r} in the checkpoint, {cfg[k]!r} now' for k in differing)


def check_same_graph(record, cfg, run_dir):
    changes = graph_changes(record, cfg)
    if changes:
        raise ResumeError(f'cannot resume {run_dir} with another network ({changes}); set the '
                          f'same values, or drop resume=True to start afresh')


def record_of(checkpoint, directory):
    """The record a restored checkpoint stands for: its own, or for a
    checkpoint of a version that saved none, history.json cut to its epochs."""
    record = checkpoint.record()
    if record is not None:
        return record
    try:
        written = history.load(directory) or {'epochs': []}
    except DataError as error:
        raise DataError(f'{error}, and the checkpoints of {directory} hold no history of their '
                        f'own (written before they did); restore history.json from a copy, or '
                        f'start afresh without resume=True') from None
    written['epochs'] = [e for e in written['epochs'] if e['epoch'] <= checkpoint.epochs]
    return written


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


# --- what a run leaves when it stops early ---------------------------------------------

def save_interrupted(run, epoch, stopped):
    """Checkpoints a run stopped in `epoch` (None: after its last epoch, whose
    checkpoint stands); returns the exit status 128 + signal number."""
    if epoch is not None:
        images = run.built.source.num_examples('train') if stopped.images is None else stopped.images
        run.built.progress.set(run.session, epoch - 1, images)
        saved = checkpoints.save(run.session, run.built.saver, run.directory, epoch - 1, images,
                                 run.record)
        commit_files(run)
        print(f'Interrupted ({stopped}) at epoch {epoch}, step {images}: saved {saved.prefix}; '
              f'python main.py ... resume=True continues from there', file=sys.stderr, flush=True)
    else:
        print(f'Interrupted ({stopped}) after the last epoch; its checkpoint stands',
              file=sys.stderr, flush=True)
    return 128 + stopped.signum


def record_divergence(run, divergence, plot):
    """Says where a diverged run stopped and what to do, and keeps the
    divergence in its history (a sweep shows it); returns the exit status 1."""
    newest = checkpoints.found(run.directory)
    kept = (f'the last good checkpoint is {newest[-1].prefix}' if newest
            else 'no epoch completed, so no checkpoint')
    print(f'error: {divergence}; training stopped, {kept}. Lower learning_rate '
          f'(now {run.cfg["learning_rate"]}) and run again.', file=sys.stderr, flush=True)
    run.record['diverged'] = str(divergence)
    history.save(run.directory, run.record)
    if run.record['epochs']:
        print(f"The plot of epochs 1-{run.record['epochs'][-1]['epoch']} is in "
              f"{console.shown_path(plot)}", file=sys.stderr)
    return 1


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def out_of_space(error, directory):
    """An OutOfSpace naming the disk if `error` (an OSError or a TensorFlow
    error) says that the disk is full, else None."""
    text = str(getattr(error, 'message', error))
    if getattr(error, 'errno', None) not in NO_SPACE and not any(
            message in text for message in ('No space left on device', 'Disk quota exceeded')):
        return None
    folder = directory if os.path.isdir(directory) else os.path.dirname(directory)
    free = shutil.disk_usage(folder).free / 2 ** 20
    return OutOfSpace(f'the disk of {directory} is full ({free:.1f} MB free): the last complete '
                      f'epoch is kept; free space there (or set datasets_root to another disk) '
                      f'and run again with resume=True')
