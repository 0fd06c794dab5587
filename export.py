"""Exports a trained run's network as a TensorFlow SavedModel, for anyone to
load without this project's code.

    python export.py                      # the run constant.py names, its best checkpoint
    python export.py use_se=True checkpoint=newest
    python export.py --help               # this, and every key with its default

The same constant.py and key=value arguments that named the run for training
name it here. Writes <run>/saved_model/<checkpoint>/ (tag 'serve') and
prints where. The network is in inference mode (batch norm's moving
averages), the run's normalisation inside; signatures:

    serving_default   images: float32 [N, height, width, channels], raw pixels 0..255
                      -> probabilities: float32 [N, classes]
    serving_uint8     the same from uint8 images
    class_names       (no input) -> class_names: the class of each probability

    model = tf.saved_model.load('.../saved_model/best')
    probabilities = model.signatures['serving_default'](images=tf.constant(images, tf.float32))['probabilities']
"""
import sys

from trainer.config import command

command.answer_early(__name__, __doc__)  # --help and mistakes answered before TensorFlow loads

import os

import tensorflow as tf

from trainer import console
from trainer.after_training import data_summary, inference, trained_run, writes

v1 = tf.compat.v1
FOLDER = 'saved_model'  # in a run's folder: one SavedModel per checkpoint exported


def export(cfg):
    """Writes the SavedModel of the checkpoint cfg names; returns its folder."""
    trained = trained_run.find(cfg)
    cfg = trained_run.inference_config(cfg, trained)
    description = data_summary.of_run(trained.record, cfg, trained.run.dirs['DATA_DIR'])
    serving = inference.Serving(cfg, description)
    directory = os.path.join(trained.run.directory, FOLDER, trained.label)
    with serving.graph.as_default(), v1.Session() as session:
        trained_run.restore_trained(session, serving.saver, trained)
        with writes.into_run(directory, trained.run):
            inference.export(serving, session, directory)
    shape = ', '.join(map(str, description['image_shape']))
    print(f'Exported {trained.describe()}\nas a SavedModel into: {console.shown_path(directory)}\n'
          f"serving_default: images, float32 [N, {shape}] of raw pixels 0..255 -> probabilities, "
          f"float32 [N, {len(description['classes'])}]; serving_uint8: the same from uint8; "
          f'class_names: the class of each probability', flush=True)
    return directory


def main(argv):
    """python export.py [key=value ...]: the exit status."""
    return trained_run.script_status(lambda cfg: export(cfg) and 0, argv)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
