"""SE excitations and self-normalisation of a trained run (SPEC 10), on demand.

    python instruments.py                                  # the run constant.py names
    python instruments.py use_se=True activation_fn=selu   # the run these keys name, as for main.py
    python instruments.py use_se=True excitation_split=test instruments_checkpoint=best

For the run that the same constant.py and key=value arguments name for
training, writes into its folder (datasets/<dataset>/save_dir/runs/<run>/):

* with SE blocks, the excitation of every block per class of the split
  excitation_split, with the weights of instruments_checkpoint ('newest',
  'best' or a checkpoint's path): excitation_<split>.npz (every number),
  excitation_<split>_blocks.csv (the class-specificity of each block, also
  printed) and excitation_<split>.pdf (the SE paper's Fig. 6 and 7);
* the self-normalisation figure of what training recorded per epoch
  (activation_statistics.csv and .pdf), or for a run trained before it was
  recorded, of the checkpoint's weights, measured now.
"""
import sys

from trainer import command

command.answer_early(__name__, __doc__)  # --help and mistakes answered before TensorFlow loads

import os  # noqa: E402

import tensorflow as tf  # noqa: E402

from trainer import (checkpoints, inputs, probes, runs, self_normalisation, settings,  # noqa: E402
                     study, training_graph)
from trainer.errors import DataError, UserError  # noqa: E402

v1 = tf.compat.v1


def trained_record(run):
    """The run's record; UserError naming the runs there are if it has no checkpoint."""
    if checkpoints.found(run.directory):
        return runs.saved_record(run.directory)
    runs_dir = os.path.dirname(run.directory)
    present = sorted(name for name in (os.listdir(runs_dir) if os.path.isdir(runs_dir) else [])
                     if checkpoints.found(os.path.join(runs_dir, name)))
    raise UserError(f"no trained run {run.name} in {runs_dir} (no checkpoint); runs there: "
                    f"{', '.join(present) or 'none'}; name a run with the keys it was trained "
                    f"with (model, use_se, activation_fn, run_name, ...)")


def restore(session, saver, run, record, choice):
    """Restores the checkpoint instruments_checkpoint names; returns the
    epochs its weights trained (None if its name does not say)."""
    if choice == 'newest':
        return runs.restore_newest_readable(session, saver, run.directory).epochs
    if choice == 'best':
        if 'best' not in record:
            raise UserError(f'run {run.name} has no best checkpoint yet; use '
                            f'instruments_checkpoint=newest')
        prefix = os.path.join(run.directory, record['best']['checkpoint'])
    else:
        prefix = choice
    try:
        saver.restore(session, prefix)
    except (tf.errors.OpError, ValueError) as error:
        raise DataError(f'checkpoint {prefix} cannot be restored ({runs.error_reason(error)})') from None
    match = checkpoints.PATTERN.match(os.path.basename(prefix) + '.index')
    return int(match[1]) if match else None


def measured_now(run, epoch):
    """Self-normalisation statistics of the session's weights, as one epoch."""
    recorder = self_normalisation.Recorder(run.built.model, run.cfg['eval_batch_size'])
    images = self_normalisation.fixed_batch(run.session, run.built.model, run.built.source)
    holder = {}
    self_normalisation.add(holder, recorder.layers, len(images), epoch or 0,
                           recorder.measure(run.session, images))
    return holder[self_normalisation.KEY]


def instruments(cfg):
    """Writes the run's instruments; returns the exit status."""
    run = runs.locate(cfg)
    record = trained_record(run)
    changes = runs.graph_changes(record, cfg)
    if changes:
        raise UserError(f'{run.directory} holds another network ({changes}); give the keys it '
                        f'was trained with')
    data = inputs.open_dataset(cfg, run.dirs['DATA_DIR'])
    run.built = training_graph.build_graph(cfg, data)
    with run.built.graph.as_default(), \
            v1.Session(config=training_graph.session_config(cfg)) as run.session:
        epoch = restore(run.session, run.built.saver, run, record, cfg['instruments_checkpoint'])
        if probes.se_gates(run.built.model):
            study.write_excitations(run, cfg['excitation_split'], epoch)
        else:
            print(f'{run.name} has no SE blocks: no excitations to measure')
        statistics = record.get(self_normalisation.KEY) or measured_now(run, epoch)
        study.write_self_normalisation(run, statistics)
    return 0


def main(argv):
    v1.disable_eager_execution()
    return command.run(lambda: instruments(settings.load_config(argv)))


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
