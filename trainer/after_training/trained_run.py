"""A trained run as evaluate.py, predict.py and export.py find it: the run the
config names (as training names it), the checkpoint the key `checkpoint`
picks ('best': of the best validation epoch, 'newest', or a path), checked
to be one of the configured network before anything is built."""
import dataclasses
import os
import sys

import tensorflow as tf

from foundation import regular_files, tf_errors
from foundation.errors import UserError
from trainer import console
from trainer.after_training import data_summary
from trainer.config import command, settings
from trainer.runs import checkpoints, folder, records, weights
from trainer.training import input_source, interruption

v1 = tf.compat.v1
NAMED_RUNS_SHOWN = 12  # a folder of many runs: the first this many are named


class NoSuchRun(UserError):
    """The config names a run that was never trained."""


class CheckpointError(UserError):
    """A checkpoint that is missing, of another network, or unreadable."""


@dataclasses.dataclass
class TrainedRun:
    run: folder.Run   # its directory is the folder of the checkpoint's run
    prefix: str     # the checkpoint's path, without .index
    label: str      # 'best', 'newest' or the checkpoint's file name: names the outputs
    record: dict    # the run's record as it stands for this checkpoint
    epoch: int      # epochs the checkpoint's weights had trained

    def describe(self):
        """'the best validation epoch's checkpoint (epoch 7) of <run>: <path>'."""
        what = {'best': "the best validation epoch's checkpoint",
                'newest': 'the newest checkpoint'}.get(self.label, 'checkpoint')
        return f'{what} (epoch {self.epoch}) of {self.run.name}: {console.shown_path(self.prefix)}'


def find(cfg):
    """The TrainedRun that cfg names; NoSuchRun or CheckpointError, in one
    line, where there is none to use or it is of another network."""
    found = located(cfg)
    changes = records.graph_changes(found.record, cfg)
    if changes:
        raise CheckpointError(f'{found.prefix} is a checkpoint of another network ({changes}); '
                              "leave those keys out: the run's record gives them")
    return found


def with_network_of_run(cfg, given):
    """cfg with the keys that shape the network (settings.GRAPH) taken from
    the record of the run it names, but for the keys `given` on the command
    line, which find then checks against it: a run is found by its name
    alone. cfg as it is where no run is found (find says so)."""
    try:
        record = located(cfg).record
    except UserError:
        return cfg
    saved = record.get('config', {})
    taken = {k: saved[k] for k in settings.keys_tagged(settings.GRAPH)
             if k in saved and k not in given and saved[k] != cfg.get(k)}
    merged = {**cfg, **taken}
    if taken and not records.graph_changes(record, merged):  # else find's one line says what contradicts it
        # stderr, as predict's other lines but its answers: its stdout stays the classes alone
        print('The network as the run was trained: ' + ', '.join(f'{k}={v!r}' for k, v in taken.items()),
              file=sys.stderr, flush=True)
    return merged


def located(cfg):
    """The TrainedRun of cfg's run and checkpoint, its network unchecked."""
    choice = cfg['checkpoint']
    run = folder.locate(cfg)
    if choice in ('best', 'newest'):
        newest = checkpoints.found(run.directory)
        if not newest:
            raise NoSuchRun(no_run_message(run, cfg))
        record = records.saved_record(run.directory)
        if choice == 'newest':
            found = TrainedRun(run, newest[-1].prefix, 'newest', newest[-1].record() or record,
                               newest[-1].epochs)
        else:
            found = best_of(run, record)
    else:
        found = named_checkpoint(run, choice)
    return found


def no_run_message(run, cfg):
    runs_dir = os.path.dirname(run.directory)
    trained = sorted(name for name in (os.listdir(runs_dir) if os.path.isdir(runs_dir) else ())
                     if checkpoints.found(os.path.join(runs_dir, name)))
    where = f"no trained run {run.name} of {cfg['dataset_name']} in {console.shown_path(runs_dir)}"
    if not trained:
        return (f'{where}: train it first (python main.py with the same key=value arguments), '
                f'or set datasets_root / dataset_name to where it was trained')
    shown = ', '.join(trained[:NAMED_RUNS_SHOWN])
    more = f' and {len(trained) - NAMED_RUNS_SHOWN} more' if len(trained) > NAMED_RUNS_SHOWN else ''
    return (f'{where}; the trained runs there: {shown}{more}; name one as training did (model, '
            f'use_se, activation_fn, or run_name=...)')


def best_of(run, record):
    best = record.get('best')
    prefix = best and os.path.join(run.directory, best['checkpoint'])
    if not prefix or not os.path.isfile(prefix + '.index'):
        raise CheckpointError(f'run {run.name} keeps no checkpoint of its best validation epoch '
                              f'(in {os.path.join(run.directory, folder.BEST_DIR)}); '
                              f'checkpoint=newest uses its newest')
    return TrainedRun(run, prefix, 'best', record, best['epoch'])


def named_checkpoint(run, path):
    """The checkpoint at `path` (a prefix, one of its files, or a folder:
    its newest), as given or inside the configured run's folder; its run is
    the folder that holds it."""
    candidates = [path, os.path.join(run.directory, path)]
    for candidate in candidates:
        prefix = checkpoint_prefix(candidate)
        if prefix:
            directory = os.path.dirname(os.path.abspath(prefix))
            if os.path.basename(directory) == folder.BEST_DIR:
                directory = os.path.dirname(directory)
            owner = dataclasses.replace(run, name=os.path.basename(directory), directory=directory)
            record = checkpoints.Checkpoint(0, 0, prefix).record() or records.saved_record(directory)
            return TrainedRun(owner, prefix, os.path.basename(prefix), record,
                              epochs_of(prefix, record))
    present = [c.name for c in checkpoints.found(run.directory)]
    hint = f"; {run.name}'s are {', '.join(present)}" if present else ''
    raise CheckpointError(f"no checkpoint {path}: checkpoint takes 'best', 'newest' or a "
                          f"checkpoint's path (.../model.ckpt-<epochs>, without .index){hint}")


def checkpoint_prefix(path):
    """The prefix of the checkpoint that `path` names, or None."""
    if os.path.isdir(path):
        found = checkpoints.found(path)
        return found[-1].prefix if found else None
    prefix = path.rsplit('.index', 1)[0] if path.endswith('.index') else path.split('.data-')[0]
    return prefix if regular_files.present(prefix + '.index') else None  # a FIFO: one line


def epochs_of(prefix, record):
    match = checkpoints.PATTERN.match(os.path.basename(prefix) + '.index')
    return int(match[1]) if match else len(record.get('epochs', []))


def restore_trained(session, saver, trained):
    """Restores the checkpoint's weights with `saver`; CheckpointError
    naming what does not fit."""
    try:
        weights.restore(session, saver, trained.prefix)
    except (tf.errors.OpError, ValueError) as error:
        raise CheckpointError(f'{trained.prefix} does not restore into this network '
                              f'({tf_errors.error_reason(error)}); set the key=value arguments it was '
                              f'trained with') from None


def inference_config(cfg, trained):
    """The config that evaluates or serves the trained network: float32
    (the weights are float32 whatever the training's precision), one device,
    every image of a split, and the training's seed, which chose the digits'
    splits (a test split is the run's, not the one the current seed would give)."""
    saved = trained.record.get('config', {})
    return {**cfg, 'mixed_precision': False, 'num_gpus': 1, 'train_eval_images': None,
            'seed': saved.get('seed', cfg['seed'])}


def open_data(cfg, trained):
    """The dataset as the trained network saw it, normalised by the run's
    training statistics, and its description (run_data)."""
    data = input_source.open_dataset(cfg, trained.run.dirs['DATA_DIR'])
    description = data_summary.saved(trained.record) or data_summary.summary_of(data, cfg['dataset_name'])
    return data_summary.with_run_statistics(data, description), description


def script_status(task, args, *extra):
    """The exit status of a script after training (evaluate.py, predict.py,
    export.py, instruments.py): task(the config of the key=value `args`,
    *extra), in TensorFlow's graph mode as the run was trained, a mistake
    answered in one line (command.run), as is Ctrl-C or SIGTERM, which
    stop it where it is (interruption.stop_at_once), its files all or none."""
    v1.disable_eager_execution()
    given = {arg.partition('=')[0] for arg in args}
    return command.run(lambda: interruption.stop_at_once(
        lambda: task(with_network_of_run(settings.load_config(args), given), *extra)))
