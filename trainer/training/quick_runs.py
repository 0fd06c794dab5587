"""The end of a quick run (train_images, max_steps, overfit_batches: see
docs/experiments.md, "Quick runs"), as callbacks of main.py's loop: the
epoch of the final weights where max_steps ended the training early, and
the overfit check's verdict."""
from trainer.runs.records import OVERFIT
from trainer.training import passes
from trainer.training.callbacks import Callback

# The overfit check passes where the cross-entropy on its batches ends below
# this: the network then gives their right classes 95 % on average (geometric
# mean), which an untrained one (2.3 for 10 classes) is far from.
FITS_BELOW = 0.05


class StepLimitTest(Callback):
    """Where max_steps or early stopping ended a run before max_epochs, the
    final weights are those of the last epoch trained (TestEvaluation, just
    before this, counts the run's epochs as max_epochs)."""

    def after_train(self, run):
        epochs = run.record['epochs']
        if 'test' in run.record and epochs and len(epochs) < run.cfg['max_epochs']:
            run.record['test']['epoch'] = run.record['epochs'][-1]['epoch']


class OverfitCheck(Callback):
    """overfit_batches=N: the loss on the N batches before training (a fresh
    start) and after the last epoch (the epochs' train_loss, measured on
    exactly those batches), the verdict in record['overfit'] and one line."""

    def before_train(self, run):
        batches = run.cfg['overfit_batches']
        if batches is None:
            return
        print(start_line(run.cfg), flush=True)
        if run.done == 0 and run.skip == 0:
            loss, _ = passes.evaluate(run.session, run.built.model, run.built.source, 'train', run.stop)
            run.record[OVERFIT] = {'batches': batches, 'initial_loss': loss}

    def after_train(self, run):
        if run.cfg['overfit_batches'] is None or not run.record['epochs']:
            return
        run.record[OVERFIT] = outcome(run.record, run.cfg)
        print(verdict_line(run.record[OVERFIT]), flush=True)


def start_line(cfg):
    """What the overfit check trains on, said before it starts."""
    batches, batch_size = cfg['overfit_batches'], cfg['batch_size']
    augment = ', augment=True left off for it' if cfg['augment'] else ''
    return (f'Overfit check: training on the first {batches} batch(es) of the training split '
            f'({batches * batch_size} images), the same every epoch, unshuffled and unaugmented{augment}, '
            f"for {cfg['max_epochs']} epochs")


def outcome(record, cfg):
    """The overfit check's record: its batches, epochs, the loss on the
    batches before training and after the last epoch, and whether it fell
    below FITS_BELOW."""
    rows = record['epochs']
    # A run resumed from before the check recorded its start: the first epoch's running loss
    initial = record.get(OVERFIT, {}).get('initial_loss', rows[0]['train_running_loss'])
    final = rows[-1]['train_loss']
    return {'batches': cfg['overfit_batches'], 'images': cfg['overfit_batches'] * cfg['batch_size'],
            'epochs': rows[-1]['epoch'], 'initial_loss': initial, 'final_loss': final,
            'threshold': FITS_BELOW, 'fits': final < FITS_BELOW}


def verdict_line(result):
    """'Overfit check: training loss on 4 batches fell from 2.31 to 0.003 in
    30 epochs: it can fit them', or why it could not."""
    batches, initial, final = result['batches'], result['initial_loss'], result['final_loss']
    said = f"Overfit check: training loss on {batches} batch(es)"
    if result['fits']:
        return f"{said} fell from {initial:.2f} to {final:.3f} in {result['epochs']} epochs: it can fit them"
    moved = f'fell only to {final:.2f}' if final < initial else f'rose to {final:.2f}'
    return (f"{said} {moved} (from {initial:.2f}) in {result['epochs']} epochs, not below "
            f"{result['threshold']}: the network cannot fit {batches} batch(es); look at the learning "
            f"rate, the loss or the data")
