"""Classifies image files with a trained run: one line per file, its path,
then the top_k most probable classes with their probabilities, best first.

    python predict.py digit.png photos/          # files, and the PNG / JPEG files of folders
    python predict.py dataset_name=mnist top_k=3 checkpoint=newest digit.png
    python predict.py --help                     # this, and every key with its default

The same constant.py and key=value arguments that named the run for training
name it here (checkpoint: 'best', 'newest' or a path). Any size, grey or
colour: each image is made the data's (channels; size as its images were
made, ImageNet's central view for ImageNet) and normalised by the run's
training statistics. Images are taken as they are: MNIST and the digits are
light digits on a dark ground, as in their data. A file that cannot be read
is one line on stderr; the others are classified, and the exit status is 2.
"""
import os
import sys

from trainer.config import command


def split_arguments(argv):
    """(key=value arguments, paths): an argument is a key=value one when
    what precedes its first '=' is a name (a path holds '/' or '.') and it
    is no existing file; --help and -h go with the key=value arguments."""
    keys, paths = [], []
    for arg in argv:
        key, sep, _ = arg.partition('=')
        is_key = (sep and key.isidentifier() and not os.path.exists(arg)) or arg in ('--help', '-h')
        (keys if is_key else paths).append(arg)
    return keys, paths


command.answer_early(__name__, __doc__, args=split_arguments(sys.argv[1:])[0])

import numpy as np
import tensorflow as tf

from foundation.errors import UserError
from trainer.after_training import data_summary, inference, trained_run

v1 = tf.compat.v1


def predict(cfg, paths):
    """Prints the classes of the images at `paths`; returns the exit status:
    2 where a file could not be classified, else 0."""
    if not paths:
        raise UserError('give the image files or folders to classify: python predict.py '
                        '[key=value ...] FILE_OR_FOLDER ...')
    trained = trained_run.find(cfg)
    cfg = trained_run.inference_config(cfg, trained)
    description = data_summary.of_run(trained.record, cfg, trained.run.dirs['DATA_DIR'])
    serving = inference.Serving(cfg, description)
    reader = inference.ImageReader(description)
    print(f'Classifying with {trained.describe()}', file=sys.stderr, flush=True)
    failed = 0
    try:
        with serving.graph.as_default(), v1.Session() as session:
            trained_run.restore_trained(session, serving.saver, trained)
            for chunk in chunks(inference.listed_images(paths), cfg['eval_batch_size']):
                failed += classify(session, serving, reader, chunk, cfg['top_k'], description)
    finally:
        reader.close()
    return 2 if failed else 0


def chunks(items, size):
    """Lists of at most `size` of `items`: a folder of any size, in bounded memory."""
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def classify(session, serving, reader, files, k, description):
    """Prints a line per file of `files` ((path, None or its error)); the
    files that cannot be read are lines on stderr, and a warning there for a
    file unlike the training images (inference.unlike_training). Returns
    how many failed."""
    images, readable, failed = [], [], 0
    for path, error in files:
        try:
            if error:
                raise error
            image, source = reader.read_with_size(path)
            unlike = inference.unlike_training(source, image, description)
            if unlike:
                print(f'warning: {inference.shown_name(path)}: {unlike}', file=sys.stderr, flush=True)
            images.append(image)
            readable.append(path)
        except inference.UnreadableImage as unreadable:
            command.report(unreadable)
            failed += 1
    if images:
        for path, probabilities in zip(readable, serving.probabilities_of(session, np.stack(images))):
            top = inference.top_classes(probabilities, serving.classes, k)
            print(f"{inference.shown_name(path)}: {', '.join(f'{name} ({p:.4f})' for name, p in top)}",
                  flush=True)
    return failed


def main(argv):
    """python predict.py [key=value ...] FILE_OR_FOLDER ...: the exit status."""
    keys, paths = split_arguments(argv)
    return trained_run.script_status(predict, keys, paths)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
