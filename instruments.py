"""SE excitations and self-normalisation of a trained run (the instruments of the study), on demand.

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
  recorded, of the checkpoint's weights, measured now;
* the class activation maps (Grad-CAM) of the predicted class at the last
  stage, with the weights of `checkpoint`, for the first cam_images images
  of the validation split: class_activation_maps.npz and .pdf.
"""
import sys

from trainer.config import command

command.answer_early(__name__, __doc__)  # --help and mistakes answered before TensorFlow loads


import tensorflow as tf

from trainer.after_training import trained_run, writes
from trainer.study import cam, excitation, instrument_files, probes, self_normalisation
from trainer.training import training_graph

v1 = tf.compat.v1


def measured_now(session, built, batch_size, epoch):
    """Self-normalisation statistics of the session's weights, as one epoch."""
    recorder = self_normalisation.Recorder(built.model, batch_size)
    images = self_normalisation.fixed_batch(session, built.model, built.source)
    holder = {}
    self_normalisation.add(holder, recorder.layers, len(images), epoch or 0,
                           recorder.measure(session, images))
    return holder[self_normalisation.KEY]


def instruments(cfg):
    """Writes the run's instruments; returns the exit status."""
    trained = trained_run.find(cfg)
    cfg = trained_run.inference_config(cfg, trained)
    name, directory = trained.run.name, trained.run.directory
    data, description = trained_run.open_data(cfg, trained)
    built = training_graph.build_graph(cfg, data)
    with built.graph.as_default(), v1.Session(config=training_graph.session_config(built.devices)) as session:
        trained_run.restore_trained(session, built.saver, trained)
        measured = None
        if probes.se_gates(built.model):
            measured = excitation.measure(session, built.model, built.source, cfg['excitation_split'],
                                          cfg['output_shape'])
            measured.epoch = trained.epoch
        statistics = (trained.record.get(self_normalisation.KEY)
                      or measured_now(session, built, cfg['eval_batch_size'], trained.epoch))
        maps = cam.measure(session, built.model, built.source, cfg['cam_images'],
                           cfg['eval_batch_size'], description)
        maps.epoch = trained.epoch
    title = instrument_files.title(name, cfg['dataset_name'], trained.epoch)
    with writes.into_run(directory, trained.run):
        told = (instrument_files.write_excitations(measured, directory, title) if measured
                else [f'{name} has no SE blocks: no excitations to measure'])
        told += instrument_files.write_self_normalisation(statistics, directory,
                                                          f"{name} on {cfg['dataset_name']}")
        told += instrument_files.write_class_activation_maps(maps, directory, title,
                                                             description['classes'],
                                                             description['pixel_max'])
    instrument_files.print_lines(told)  # once every file is in place
    return 0


def main(argv):
    return trained_run.script_status(instruments, argv)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
