"""The per-run bookkeeping of main.py's training loop, as small callbacks
(after tensorpack's): each is called at fixed points of the loop with the
Run (trainer/runs/folder.py) and does one job. The loop calls them in list order, so a
callback sees what the ones before it added to the epoch's row.

A new per-epoch instrument is one more subclass of Callback, added to
main.py's `chief_callbacks()`; the loop does not change. Callbacks that add to the epoch's row
come before EpochCheckpoint, which commits the row with the checkpoint.
"""
import os
import sys
import time

import numpy as np
import tensorflow as tf

import util
from foundation import safe_io
from trainer import console
from trainer.runs import checkpoints, disk, folder, history, patience
from trainer.training import passes

v1 = tf.compat.v1


class Callback:
    """Override what you need; every method does nothing by default."""

    def before_train(self, run):
        """The session is ready: restored from a checkpoint or initialised."""

    def after_epoch(self, run, row):
        """An epoch was trained; `row` is its history row (epoch, the
        running training loss, training seconds, the learning rate, and
        what the callbacks before this one added)."""

    def after_train(self, run):
        """Every epoch is done (also when there was none left to train); the
        session holds the final weights."""

    def with_best_weights(self, run, label):
        """After every after_train: the session holds the weights `label`
        names ('best': of the best validation epoch; 'newest': the final
        ones, for a record without a best epoch), or label is None where no
        epoch's weights could be restored (a warning said so)."""

    def close(self):
        """The run ends, whichever way: release what the callback holds."""


class Callbacks(Callback):
    """Several callbacks, called in order."""

    def __init__(self, callbacks):
        self.callbacks = list(callbacks)

    def _each(self, hook, *args):
        for callback in self.callbacks:
            getattr(callback, hook)(*args)

    def before_train(self, run):
        self._each('before_train', run)

    def after_epoch(self, run, row):
        self._each('after_epoch', run, row)

    def after_train(self, run):
        self._each('after_train', run)

    def with_best_weights(self, run, label):
        self._each('with_best_weights', run, label)

    def close(self):
        self._each('close')


# --- every epoch -----------------------------------------------------------------

class Evaluation(Callback):
    """Loss and accuracy of the epoch's weights on the training split (its
    first train_eval_images) and the validation split, batch norm in
    inference mode, into the row; also the epoch's whole time."""

    def after_epoch(self, run, row):
        started = time.perf_counter()
        for split in ('train', 'valid'):
            row[f'{split}_loss'], row[f'{split}_accuracy'] = passes.evaluate(
                run.session, run.built.model, run.built.source, split, run.stop)
        row['epoch_seconds'] = row['train_seconds'] + time.perf_counter() - started


class ReduceOnPlateau(Callback):
    """plateau_patience: the learning rate's scale is the one the history's
    rows give (trainer/runs/patience.py), set before the first epoch and
    after each epoch's evaluation, before its checkpoint keeps it."""

    def before_train(self, run):
        if run.cfg['plateau_patience'] is not None:
            run.built.model.learning_rate_scale.load(patience.plateau(run.record['epochs'], run.cfg).scale,
                                                     run.session)

    def after_epoch(self, run, row):
        if run.cfg['plateau_patience'] is None:
            return
        before, after = (patience.plateau(rows, run.cfg) for rows in (run.record['epochs'],
                                                                      run.record['epochs'] + [row]))
        if after.scale != before.scale:
            run.built.model.learning_rate_scale.load(after.scale, run.session)
            print(f"Epoch {row['epoch']}, reduce on plateau: the validation loss fell by no more than "
                  f"min_delta={run.cfg['min_delta']:g} "
                  f"for {run.cfg['plateau_patience']} epoch(s): learning rate x{run.cfg['plateau_factor']:g} from "
                  f"epoch {row['epoch'] + 1} on ({after.scale:g} of the schedule's)", flush=True)


class EpochCheckpoint(Callback):
    """Commits the epoch: its row joins the record, which is saved with the
    epoch's checkpoint (progress: the epoch complete); then the run's files
    follow (older checkpoints go, history.json and .csv are rewritten)."""

    def after_epoch(self, run, row):
        run.record['epochs'].append(row)
        run.built.progress.set(run.session, row['epoch'], 0)
        checkpoints.save(run.session, run.built.saver, run.directory, row['epoch'], 0, run.record)
        folder.commit_files(run)


def better(row, best):
    """Whether an epoch's row beats the best so far: higher validation
    accuracy, and lower validation loss among equals."""
    return best is None or ((row['valid_accuracy'], -row['valid_loss'])
                            > (best['valid_accuracy'], -best['valid_loss']))


class BestCheckpoint(Callback):
    """Keeps the checkpoint of the best validation epoch in <run>/best, and
    what it scored in record['best'] (the one it replaces goes once the
    epoch is committed)."""

    def after_epoch(self, run, row):
        if better(row, run.record.get('best')):
            prefix = checkpoints.prefix_for(os.path.join(run.directory, folder.BEST_DIR), row['epoch'])
            run.built.best_saver.save(run.session, prefix, write_state=False)
            run.record['best'] = {'epoch': row['epoch'], 'valid_loss': row['valid_loss'],
                                  'valid_accuracy': row['valid_accuracy'],
                                  'checkpoint': os.path.relpath(prefix, run.directory)}  # the run may move


class TensorBoardScalars(Callback):
    """Every figure of the row as a TensorBoard scalar at step = epoch, in
    the run's folder (with the graph, on a fresh start). The events file is
    opened at the first write, after the first epoch is committed: a fresh
    start's folder has then taken the run's place (folder.commit_files)."""

    def before_train(self, run):
        self.start = run.done

    def after_epoch(self, run, row):
        self.write({tag: value for tag, value in row.items() if tag != 'epoch'}, row['epoch'], run)

    def with_best_weights(self, run, label):
        """The test results (TestEvaluation comes first), at the step of their epoch."""
        test, best = run.record.get('test'), run.record.get('best', {})
        if test:
            scalars = {'test_loss': test['loss'], 'test_accuracy': test['accuracy']}
            scalars.update({f'best_epoch_{k}': best[k] for k in ('test_loss', 'test_accuracy') if k in best})
            self.write(scalars, test['epoch'], run)

    def write(self, scalars, step, run):
        if not hasattr(self, 'writer'):
            self.writer = v1.summary.FileWriter(run.directory, run.built.graph if self.start == 0 else None)
            # TensorBoard drops what earlier processes logged after this step: the
            # epochs a crash lost and that are trained again.
            self.writer.add_session_log(v1.SessionLog(status=v1.SessionLog.START), self.start)
        values = [v1.Summary.Value(tag=tag, simple_value=float(value)) for tag, value in scalars.items()]
        self.writer.add_summary(v1.Summary(value=values), step)
        self.writer.flush()

    def close(self):
        if hasattr(self, 'writer'):
            self.writer.close()


class EpochStatistics(Callback):
    """The console report of an epoch, in the original format."""

    def after_epoch(self, run, row):
        epoch = row['epoch']
        print('EPOCH STATISTICS :')
        print(f"Train error: epoch {epoch} loss={row['train_loss']:.4f} "
              f"accuracy={row['train_accuracy']:.4f}")
        print(f"Validation error: epoch {epoch} loss={row['valid_loss']:.4f} "
              f"accuracy={row['valid_accuracy']:.4f}")
        print(f"Total epoch time training: {row['train_seconds']:.1f}", flush=True)  # the training pass alone


def plot_path(run):
    return os.path.join(run.dirs['PLOT_TRAINING_SAVE_DIR'], f'{run.name}.pdf')


class ProgressPlot(Callback):
    """The PDF of all completed epochs, after every epoch, so that a long run
    can be watched and a stopped one keeps its plot; again at the end, with
    the test results (it comes after TestEvaluation)."""

    def after_epoch(self, run, row):
        path = plot_path(run)
        print(f'Plotting in: {console.shown_path(path)}', flush=True)
        self.draw(run)

    def with_best_weights(self, run, label):
        if run.record['epochs']:
            self.draw(run)

    @staticmethod
    def draw(run):
        util.plot_training_progress(run.record['epochs'], plot_path(run),
                                    util.progress_title(run.name, run.cfg['dataset_name']),
                                    run.record.get('best'), run.record.get('test'))


# --- at the end ------------------------------------------------------------------

class TestEvaluation(Callback):
    """The test split, once with the final weights and once with those of
    the best validation epoch, into the record."""

    def after_train(self, run):
        loss, accuracy = passes.evaluate(run.session, run.built.model, run.built.source, 'test',
                                         run.stop)
        run.record['test'] = {'epoch': max(run.done, run.cfg['max_epochs']), 'loss': loss,
                              'accuracy': accuracy}
        print(f'Test error: loss={loss:.4f} accuracy={accuracy:.4f}')

    def with_best_weights(self, run, label):
        self.test_best(run, label)
        history.save(run.directory, run.record)
        best = run.record.get('best', {})
        if 'test_accuracy' in best:
            print(f"Test error of the best validation epoch ({best['epoch']}): "
                  f"loss={best['test_loss']:.4f} accuracy={best['test_accuracy']:.4f}")

    @staticmethod
    def test_best(run, label):
        """Test loss and accuracy of the best validation epoch's weights, in
        the session when `label` is 'best', into record['best'] (the final
        weights' test result when the last epoch was the best)."""
        best = run.record.get('best')
        if best is None or label != 'best':
            return
        if best['epoch'] == run.record['epochs'][-1]['epoch']:
            test = run.record['test']
            best['test_loss'], best['test_accuracy'] = test['loss'], test['accuracy']
            return
        best['test_loss'], best['test_accuracy'] = passes.evaluate(
            run.session, run.built.model, run.built.source, 'test', run.stop)


START_KERNEL_FILE = 'first_conv_at_start.npy'  # in a run's folder: its first conv kernel before training


class FilterImages(Callback):
    """The first conv layer's filters as images, as they are after the last
    epoch, into FILTERS_SAVE_DIR/<run>, and their change from the start of
    training into its change_from_start/: after a few epochs the filters
    mostly show their initialisation, the same for every run of a seed."""

    def before_train(self, run):
        self.kernel = run.session.run(run.built.model.first_conv_kernel)
        start = os.path.join(run.directory, START_KERNEL_FILE)
        if run.done == 0 and run.skip == 0:
            with safe_io.atomic_path(start) as tmp, open(tmp, 'wb') as f:
                np.save(f, self.kernel)

    def after_epoch(self, run, row):
        self.kernel = run.session.run(run.built.model.first_conv_kernel)

    def after_train(self, run):
        directory = os.path.join(run.dirs['FILTERS_SAVE_DIR'], run.name)
        util.draw_filters(self.kernel, directory)
        start = start_kernel(run.directory, self.kernel.shape)
        if start is None:
            print(f'First-layer filters in: {console.shown_path(directory)} (their start was not kept: '
                  'no change from it drawn)')
            return
        util.draw_filters(self.kernel - start, os.path.join(directory, 'change_from_start'))
        moved = np.linalg.norm(self.kernel - start) / max(np.linalg.norm(start), 1e-12)
        print(f'First-layer filters in: {console.shown_path(directory)}, their change from the start of '
              f'training in change_from_start/ (they moved {100 * moved:.0f} % of their initial norm)')


def start_kernel(directory, shape):
    """The first conv kernel a run started from, None where it was not kept
    (a run from before it was) or does not read as an array of `shape`."""
    try:
        with open(os.path.join(directory, START_KERNEL_FILE), 'rb') as f:
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(np.lib.format.read_magic(f))
            if read_header is None:
                return None
            header_shape, _, _ = read_header(f)
            if header_shape != tuple(shape):  # checked before anything is allocated
                return None
            f.seek(0)
            return np.load(f, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None


class RunSummary(Callback):
    """The end of a run: where its files are, and its time."""

    def before_train(self, run):
        self.started = time.perf_counter()

    def with_best_weights(self, run, label):
        epochs = run.record['epochs']
        spent = sum(row.get('epoch_seconds', 0) for row in epochs)
        newest = checkpoints.found(run.directory)
        best = run.record.get('best')
        here = console.shown_path
        files = [('checkpoint', here(newest[-1].prefix) if newest else 'none'),
                 ('best epoch', f"{best['epoch']}: {here(os.path.join(run.directory, best['checkpoint']))}"
                  if best else 'none'),
                 ('history', here(os.path.join(run.directory, history.JSON_FILE)) + ', .csv'),
                 ('TensorBoard', f'tensorboard --logdir {here(os.path.dirname(run.directory))}'),
                 ('plot', here(plot_path(run))),
                 ('filters', here(os.path.join(run.dirs['FILTERS_SAVE_DIR'], run.name))),
                 ('evaluation', evaluations(run.directory)),
                 ('disk', disk_line(run.directory, newest, run.cfg['keep_checkpoints']))]
        in_process = console.process_seconds()
        took = (f'this process took {console.clock(in_process)}' if in_process is not None else
                f'the loop took {console.clock(time.perf_counter() - self.started)}')
        stopped = patience.stop_line(epochs, run.cfg)
        print(f'Run {run.name} done: {len(epochs)} epoch(s){f" ({stopped})" if stopped else ""}, '
              f'{console.clock(spent)} of training and evaluation in all; {took}')
        for what, where in files:
            print(f'  {what + ":":<13}{where}')
        sys.stdout.flush()


def disk_line(run_directory, newest, keep):
    """'807 MB in its folder, of which 593 MB in 2 checkpoints (keep_checkpoints=2) and 198 MB best'."""
    checkpoint_bytes = sum(os.path.getsize(p) for c in newest for p in checkpoints.files_of(c.prefix)
                           if os.path.isfile(p))
    best = disk.folder_bytes(os.path.join(run_directory, folder.BEST_DIR))
    return (f'{disk.size_text(disk.folder_bytes(run_directory))} in its folder, of which '
            f'{disk.size_text(checkpoint_bytes)} in {len(newest)} checkpoint(s) (keep_checkpoints={keep}) '
            f'and {disk.size_text(best)} for the best epoch')


def evaluations(run_directory):
    """'<run>/evaluation: test-best, valid-newest': the folder of the run's
    evaluations (confusion matrix, per-class figures) and what it holds."""
    directory = os.path.join(run_directory, folder.EVALUATION_DIR)
    held = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    return f"{console.shown_path(directory)}: {', '.join(held)}" if held else 'none'

