"""A run's folder: where it is, starting it afresh or resuming it from its
newest readable checkpoint, and checking that a checkpoint fits the network."""
import dataclasses
import os
import shutil
import sys

import tensorflow as tf

import constant
from trainer import history, pretrained, settings
from trainer.errors import ResumeError

v1 = tf.compat.v1
CHECKPOINT_NAME = 'model.ckpt'
BEST_DIR = 'best'  # in a run's folder: the checkpoint of its best validation epoch


@dataclasses.dataclass
class Run:
    """What the training loop and its callbacks share about one run."""
    cfg: dict
    name: str          # names its outputs: constant.run_name
    dirs: dict         # constant.derived_dirs
    directory: str     # checkpoints, history, TensorBoard events
    built: object = None    # graph.TrainingGraph
    session: object = None
    stop: object = None     # interruption.StopRequests
    record: dict = None     # the history: epochs, best, test, config
    done: int = 0           # epochs completed
    skip: int = 0           # images of the next epoch already trained

    @property
    def checkpoint_prefix(self):
        return os.path.join(self.directory, CHECKPOINT_NAME)


def locate(cfg):
    """The Run that cfg names, before anything is built."""
    dirs = constant.derived_dirs(cfg)
    name = constant.run_name(cfg)
    return Run(cfg, name, dirs, os.path.join(dirs['RUNS_SAVE_DIR'], name))


def error_reason(error):
    """The first line of what a TensorFlow or Python error says."""
    return str(getattr(error, 'message', error)).strip().split('\n')[0]


def check_same_graph(record, cfg, run_dir):
    saved = record.get('config', {})
    differing = [k for k, v in settings.graph_signature(cfg).items() if k in saved and saved[k] != v]
    if differing:
        changes = ', '.join(f'{k}: {saved[k]!r} in the checkpoint, {cfg[k]!r} now' for k in differing)
        raise ResumeError(f'cannot resume {run_dir} with another network ({changes}); set the '
                          f'same values, or drop resume=True to start afresh')


def restore_newest_readable(session, saver, run_dir):
    """Restores the newest checkpoint that reads back; returns its path or None.

    A truncated or corrupt checkpoint is named and skipped for the one before.
    """
    state = tf.train.get_checkpoint_state(run_dir)
    for checkpoint in reversed(list(state.all_model_checkpoint_paths) if state else []):
        try:
            saver.restore(session, checkpoint)
            return checkpoint
        except (tf.errors.OpError, ValueError) as error:
            print(f'warning: checkpoint {checkpoint} is unreadable ({error_reason(error)}); trying '
                  f'the one before', file=sys.stderr, flush=True)
    return None


def start_or_resume(run, chief=True):
    """Restores the run's last good checkpoint when resuming, else starts
    afresh; sets run.record, run.done (epochs done) and run.skip (images done
    of the next epoch).

    A fresh start keeps the previous run of the same name as <run>.previous.
    Only the `chief` of a multi-worker job touches the files.
    """
    cfg, session, built = run.cfg, run.session, run.built
    if cfg['resume'] and os.path.isdir(run.directory):
        record = history.load(run.directory)
        check_same_graph(record, cfg, run.directory)
        checkpoint = restore_newest_readable(session, built.saver, run.directory)
        if checkpoint:
            run.done, run.skip = built.progress.get(session)
            record['epochs'] = [e for e in record['epochs'] if e['epoch'] <= run.done]
            into = f', {run.skip} images into epoch {run.done + 1}' if run.skip else ''
            print(f'Resuming from {checkpoint}: {run.done} epoch(s) done{into}', flush=True)
            run.record = record
            return
    if cfg['resume']:
        print(f'No readable checkpoint in {run.directory}: starting from epoch 1', flush=True)
    if chief:
        if os.path.isdir(run.directory):
            shutil.rmtree(run.directory + '.previous', ignore_errors=True)
            os.replace(run.directory, run.directory + '.previous')
        os.makedirs(run.directory)
    session.run(v1.global_variables_initializer())
    pretrained.start_from(run)  # init_weights: a fresh start only, never over a checkpoint
    run.record, run.done, run.skip = {'epochs': []}, 0, 0


def save_interrupted(run, epoch, stopped):
    """Checkpoints a run stopped in `epoch` (None: after its last epoch, whose
    checkpoint stands); returns the exit status 128 + signal number."""
    if epoch is not None:
        images = run.built.source.num_examples('train') if stopped.images is None else stopped.images
        run.built.progress.set(run.session, epoch - 1, images)
        path = run.built.saver.save(run.session, f'{run.checkpoint_prefix}-{epoch - 1}-{images}img')
        print(f'Interrupted ({stopped}) at epoch {epoch}, step {images}: saved {path}; '
              f'python main.py ... resume=True continues from there', file=sys.stderr, flush=True)
    else:
        print(f'Interrupted ({stopped}) after the last epoch; its checkpoint stands',
              file=sys.stderr, flush=True)
    return 128 + stopped.signum


def record_divergence(run, divergence, plot):
    """Says where a diverged run stopped and what to do, and keeps the
    divergence in its history (a sweep shows it); returns the exit status 1."""
    last = tf.train.latest_checkpoint(run.directory)
    kept = f'the last good checkpoint is {last}' if last else 'no epoch completed, so no checkpoint'
    print(f'error: {divergence}; training stopped, {kept}. Lower learning_rate '
          f'(now {run.cfg["learning_rate"]}) and run again.', file=sys.stderr, flush=True)
    run.record['diverged'] = str(divergence)
    history.save(run.directory, run.record)
    if run.record['epochs']:
        print(f"The plot of epochs 1-{run.record['epochs'][-1]['epoch']} is in "
              f"{os.path.relpath(plot)}", file=sys.stderr)
    return 1
