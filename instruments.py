"""SE excitations and self-normalisation of a trained run (SPEC 10), on demand.

    python instruments.py                                  # the run constant.py names
    python instruments.py use_se=True activation_fn=selu   # the run these keys name, as for main.py
    python instruments.py use_se=True excitation_split=test checkpoint=newest

For the run that the same constant.py and key=value arguments name for
training, writes into its folder (datasets/<dataset>/save_dir/runs/<run>/):

* with SE blocks, the excitation of every block per class of the split
  excitation_split, with the weights of `checkpoint` ('best', 'newest'
  or a checkpoint's path, as for evaluate.py): excitation_<split>.npz (every number),
  excitation_<split>_blocks.csv (the class-specificity of each block, also
  printed) and excitation_<split>.pdf (the SE paper's Fig. 6 and 7);
* the self-normalisation figure of what training recorded per epoch
  (activation_statistics.csv and .pdf), or for a run trained before it was
  recorded, of the checkpoint's weights, measured now.
"""
import sys

from trainer import command

command.answer_early(__name__, __doc__)  # --help and mistakes answered before TensorFlow loads

import dataclasses  # noqa: E402

import tensorflow as tf  # noqa: E402

from trainer import probes, self_normalisation, study, trained_runs, training_graph  # noqa: E402

v1 = tf.compat.v1


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
    trained = trained_runs.find(cfg)
    run = dataclasses.replace(trained.run, cfg=trained_runs.inference_config(cfg, trained))
    data = trained_runs.open_data(run.cfg, trained)[0]
    run.built = training_graph.build_graph(run.cfg, data)
    with run.built.graph.as_default(), \
            v1.Session(config=training_graph.session_config(run.cfg)) as run.session:
        trained_runs.restore(run.built.saver, run.session, trained)
        if probes.se_gates(run.built.model):
            study.write_excitations(run, run.cfg['excitation_split'], trained.epoch)
        else:
            print(f'{run.name} has no SE blocks: no excitations to measure')
        statistics = trained.record.get(self_normalisation.KEY) or measured_now(run, trained.epoch)
        study.write_self_normalisation(run, statistics)
    return 0


def main(argv):
    return trained_runs.script_status(instruments, argv)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
