"""The record a run's files hold (history.json, each checkpoint's own
record), reconciled after a crash, whether a record's network is the
one the config builds now (resume compatibility), and whether a record is
of a complete run (main.py has nothing left to do, a sweep skips it)."""
import math

import tensorflow as tf

from foundation.errors import DataError, ResumeError
from trainer.config import settings
from trainer.runs import checkpoints, history, patience

v1 = tf.compat.v1


# --- the record a run's files hold -------------------------------------------------

def saved_record(directory):
    """The run's record as its files hold it, every one checked
    (record_schema): history.json where it holds the same epochs as the
    newest checkpoint with a sound record (it may hold the test result too),
    else that checkpoint's own record (history.json missing, damaged, edited
    into an unsound record, or behind after a crash). {'epochs': []} for a
    folder without either; DataError naming history.json's fault where no
    checkpoint's record is sound."""
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


# Keys that shape the graph but are newer than some runs: a record saved
# before them was trained without what they add.
ABSENT_MEANS_OFF = {'plateau_patience': None, 'ema_decay': None}


def precision_of(record):
    """The precision a run computed in, as its record says: 'float32',
    'bfloat16' (mixed precision on a CPU), 'float16' (on a GPU); None where
    it does not say."""
    mixed = record.get('config', {}).get('mixed_precision')
    if mixed is None or mixed == 'auto':
        return None
    if not mixed:
        return 'float32'
    return 'float16' if str(record.get('device', '')).startswith('GPU') else 'bfloat16'


def graph_changes(record, cfg):
    """'key: value in the checkpoint, value now' for every key that shapes
    the network (settings.graph_signature) and differs between the config a
    record saved and cfg; '' where none does."""
    saved = {**ABSENT_MEANS_OFF, **record.get('config', {})}
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
        raise DataError(f'{error} (the checkpoint {checkpoint.prefix} holds no sound record of its '
                        f'own; without resume=True the run starts afresh)') from None
    written['epochs'] = [e for e in written['epochs'] if e['epoch'] <= checkpoint.epochs]
    return written


# --- how far a run has come ----------------------------------------------------------

OVERFIT = 'overfit'  # the record's field of the overfit check (trainer/training/quick_runs.py)


def steps_trained(record, batch_size, skip=0):
    """The optimiser steps a run's record has trained in all: those of its
    epochs' rows, and those of the `skip` images of an epoch begun. A row of
    a run from before rows counted their steps counts a whole epoch's, as
    the record's cost gives its images."""
    whole_epoch = math.ceil(record.get('cost', {}).get('train_images', 0) / batch_size)
    return (sum(row.get('train_steps', whole_epoch) for row in record.get('epochs', []))
            + math.ceil(skip / batch_size))


def steps_left(record, cfg, skip=0):
    """The optimiser steps a run may still train under max_steps; None
    without max_steps."""
    if cfg.get('max_steps') is None:
        return None
    return max(0, cfg['max_steps'] - steps_trained(record, cfg['batch_size'], skip))


def training_done(record, cfg, skip=0):
    """Whether a run has trained all that cfg asks: max_epochs epochs, or
    max_steps steps, or until early stopping's patience ran out."""
    rows = record.get('epochs', [])
    return (len(rows) >= cfg['max_epochs'] or steps_left(record, cfg, skip) == 0
            or patience.stopped_at(rows, cfg) is not None)


def is_complete(record, cfg):
    """Whether the finished run `record` is complete for cfg: trained as far
    as cfg asks (max_epochs or max_steps), tested, and for the overfit check
    (overfit_batches), its outcome recorded."""
    if 'test' not in record or not training_done(record, cfg):
        return False
    return cfg.get('overfit_batches') is None or 'fits' in record.get(OVERFIT, {})
