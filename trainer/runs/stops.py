"""What a run leaves when it stops early: interrupted (a checkpoint of the
step it reached) or diverged (the divergence kept in its history)."""
import os
import sys

import tensorflow as tf

from trainer import console
from trainer.runs import checkpoints, history
from trainer.runs.folder import commit_files

v1 = tf.compat.v1


# --- what a run leaves when it stops early ---------------------------------------------

def save_interrupted(run, epoch, stopped):
    """Checkpoints a run stopped in `epoch` (None: after its last epoch, whose
    checkpoint stands); returns the exit status 128 + signal number."""
    if epoch is not None:
        images = run.built.source.num_examples('train') if stopped.images is None else stopped.images
        run.built.progress.set(run.session, epoch - 1, images)
        saved = checkpoints.save(run.session, run.built.saver, run.directory, epoch - 1, images,
                                 run.record)
        commit_files(run)  # a fresh start's folder now in the run's place: name the checkpoint there
        print(f'Interrupted ({stopped}) at epoch {epoch}, step {images}: saved '
              f'{os.path.join(run.directory, saved.name)}; '
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
    decay = run.cfg['weight_decay']  # its part of each step (weight_decay x w) may be what grew
    also = f' or weight_decay (now {decay:g})' if decay else ''
    remedy = divergence.remedy or f'Lower learning_rate (now {run.cfg["learning_rate"]}){also} and run again.'
    print(f'error: {divergence}; training stopped, {kept}. {remedy}', file=sys.stderr, flush=True)
    run.record['diverged'] = str(divergence)
    history.save(run.directory, run.record)
    if run.record['epochs']:
        print(f"The plot of epochs 1-{run.record['epochs'][-1]['epoch']} is in "
              f"{console.shown_path(plot)}", file=sys.stderr)
    return 1
