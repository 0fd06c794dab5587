"""Evaluates a trained run on a split: loss, accuracy, top-5 accuracy (10
classes or more), the confusion matrix, per-class precision / recall /
accuracy and the most confidently misclassified images.

    python evaluate.py                         # the run constant.py names: best checkpoint, test split
    python evaluate.py use_se=True eval_split=valid
    python evaluate.py checkpoint=newest       # or checkpoint=PATH of a checkpoint (model.ckpt-<epochs>)
    python evaluate.py --help                  # this, and every key with its default

The same constant.py and key=value arguments that named the run for training
name it here. Writes <run>/evaluation/<split>-<checkpoint>/: confusion.csv
and .json (rows: true class, columns: predicted class), per_class.csv,
summary.json, misclassified.csv and the figures confusion.png and
misclassified.png.
"""
import sys

from trainer.config import command

command.answer_early(__name__, __doc__)  # --help and mistakes answered before TensorFlow loads

import tensorflow as tf

from trainer import console
from trainer.after_training import evaluation, trained_run, writes
from trainer.training import training_graph

v1 = tf.compat.v1


def evaluate(cfg):
    """Evaluates the checkpoint cfg names on cfg['eval_split'] and writes
    the files beside its run; returns the summary (evaluation.summary)."""
    trained = trained_run.find(cfg)
    cfg = trained_run.inference_config(cfg, trained)
    split = cfg['eval_split']
    data, description = trained_run.open_data(cfg, trained)
    print(f'Evaluating {trained.describe()}, on the {split} split ({data.num_examples(split)} '
          f'images)', flush=True)
    built = training_graph.build_graph(cfg, data)
    directory = evaluation.evaluation_folder(trained.run.directory, split, trained.label)
    title = f'{trained.run.name}, epoch {trained.epoch}, {split} split'
    with built.graph.as_default(), v1.Session(config=training_graph.session_config(built.devices)) as session:
        trained_run.restore_trained(session, built.saver, trained)
        try:
            outcome = evaluation.analyse(session, built.model, built.source, split,
                                         cfg['misclassified_images'])
        except (OSError, tf.errors.OpError) as error:  # reading the data
            explained = built.source.explain(error)
            if explained is None:
                raise
            raise explained from None
    result = evaluation.summary(outcome, description['classes'])
    with writes.into_run(directory, trained.run):
        evaluation.write(directory, result, outcome, description, title)
    print(evaluation.result_line(result))
    print('\n'.join(evaluation.table_lines(result)))
    print(f'Confusion matrix, per-class figures and misclassified images in: '
          f'{console.shown_path(directory)}', flush=True)
    return result


def main(argv):
    """python evaluate.py [key=value ...]: the exit status."""
    return trained_run.script_status(lambda cfg: evaluate(cfg) and 0, argv)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
