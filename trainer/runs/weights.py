"""Weights put into a session from a run's checkpoints: the newest that
reads back, the best epoch's, and checkpoints written in the other
precision."""
import os
import sys

import tensorflow as tf

from foundation.errors import ResumeError
from foundation.tf_errors import error_reason
from trainer.runs import checkpoints

v1 = tf.compat.v1


# The variables of the optimiser's state (tf.compat.v1's Adam and momentum
# slots and powers, mixed precision's dynamic loss scale), by the last part of
# their names: the only ones a checkpoint may lack. One of the other
# precision lacks the loss scale, the weights being float32 in both; the best
# epoch's holds the network alone.
OPTIMISER_STATE = ('current_loss_scale', 'good_steps', 'Adam', 'Adam_1', 'Momentum', 'beta1_power', 'beta2_power')


def restore(session, saver, prefix):
    """saver.restore of a checkpoint, also of one without the optimiser's
    state: a checkpoint of the other precision (a mixed-precision graph's
    loss scale starts afresh: it is dynamic and finds its level within a few
    steps; in float32 the loss scale a checkpoint holds is left unread), or
    the best epoch's, which evaluation reads. Any other variable missing
    fails as in saver.restore."""
    saved = {name for name, _ in tf.train.list_variables(prefix)}
    variables = session.graph.get_collection(v1.GraphKeys.GLOBAL_VARIABLES)
    missing = [v for v in variables if v.op.name not in saved]
    if not missing or not all(v.op.name.split('/')[-1] in OPTIMISER_STATE for v in missing):
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


def best_weights_into_session(run):
    """The end of a run's one change of weights: puts the best validation
    epoch's into the session (they are there already when it was the last
    epoch) and returns 'best'; 'newest' for a record without a best epoch
    (the final weights stay); None (with a warning) for a run without epochs
    or where the best checkpoint does not read."""
    best = run.record.get('best')
    if not run.record['epochs']:
        return None
    if best is None:
        return 'newest'
    if best['epoch'] != run.record['epochs'][-1]['epoch'] and \
            not restore_best(run, 'no test figure or confusion matrix for it'):
        return None
    return 'best'
