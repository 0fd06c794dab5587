"""A trained network's results on a split, image by image: loss and accuracy
(the same pass as training's evaluation), top-5 accuracy, the confusion
matrix and per-class precision, recall and accuracy (scikit-learn's
metrics), and the most confidently misclassified images; written beside the
run as CSV / JSON and drawn (trainer/after_training/evaluation_figures.py).

evaluate.py analyses any checkpoint of a run on any split; TestAnalysis does
it for the test split at the end of every training run.
"""
import csv
import dataclasses
import io
import json
import math
import os

import numpy as np
import tensorflow as tf
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from foundation import safe_io
from trainer import console
from trainer.after_training import data_summary, evaluation_figures
from trainer.runs import folder
from trainer.training import passes
from trainer.training.callbacks import Callback

TOP = 5  # top-5 accuracy, where there are at least 10 classes (as ImageNet results are quoted)
SPLIT_NAMES = {'train': 'Train', 'valid': 'Validation', 'test': 'Test'}  # as the epoch statistics say
TABLE_CLASSES = 30  # the console shows the per-class table of at most this many classes


@dataclasses.dataclass
class Misclassified:
    confidence: float  # the probability the network gave its wrong answer
    index: int         # the image's place in the split
    image: np.ndarray  # as the network saw it (normalised)
    label: int
    predicted: int


@dataclasses.dataclass
class Outcome:
    """A split as the network classified it, image by image, in the split's order."""
    split: str
    loss: float
    accuracy: float
    labels: np.ndarray             # [N] true classes
    top: np.ndarray                # [N, k] the k most probable classes, best first
    top_probabilities: np.ndarray  # [N, k]
    worst: list                    # Misclassified, the most confident first

    @property
    def predicted(self):
        return self.top[:, 0]

    def top_k_accuracy(self, k):
        return float(np.mean(np.any(self.top[:, :k] == self.labels[:, None], axis=1)))


class Collector:
    """Gathers the batches of an evaluation pass: the top classes of every
    image, and the `keep` most confidently misclassified images."""

    def __init__(self, keep):
        self.keep, self.parts, self.worst, self.seen = keep, [], [], 0

    def add(self, values):
        probabilities, classes, labels, *images = values
        self.parts.append((labels, classes, probabilities))
        wrong = np.flatnonzero(classes[:, 0] != labels)
        if self.keep and len(wrong):
            self.worst += [Misclassified(float(probabilities[i, 0]), self.seen + int(i), images[0][i],
                                         int(labels[i]), int(classes[i, 0])) for i in wrong]
            self.worst = sorted(self.worst, key=lambda m: -m.confidence)[:self.keep]
        self.seen += len(labels)


def analyse(session, model, source, split, keep, stop=None):
    """The Outcome of one pass over `split` with the session's weights;
    `keep`: how many misclassified images to keep."""
    with model.X.graph.as_default():
        top = tf.math.top_k(tf.nn.softmax(model.eval_logits), k=min(TOP, int(model.eval_logits.shape[-1])))
        fetches = [top.values, top.indices, tf.argmax(model.Yoh, 1)] + ([model.X] if keep else [])
    collector = Collector(keep)
    loss, accuracy = passes.evaluate(session, model, source, split, stop, fetches, collector.add)
    labels, classes, probabilities = (np.concatenate(part) for part in zip(*collector.parts))
    return Outcome(split, loss, accuracy, labels, classes, probabilities, collector.worst)


# --- the figures of a split -------------------------------------------------------

def summary(outcome, classes):
    """Loss, accuracy, top-5 accuracy (10 classes or more), the confusion
    matrix (rows: true classes, columns: predicted) and the per-class table,
    as plain JSON values. A class's accuracy is the share of its images
    classified as it, which is its recall; a figure without images to
    measure it on (a class never predicted has no precision) is None."""
    ids = np.arange(len(classes))
    predicted = outcome.predicted
    matrix = confusion_matrix(outcome.labels, predicted, labels=ids)
    precision, recall, f1, support = precision_recall_fscore_support(
        outcome.labels, predicted, labels=ids, zero_division=np.nan)
    table = [{'class': name, 'images': int(support[i]), 'predicted': int(matrix[:, i].sum()),
              'correct': int(matrix[i, i]), 'accuracy': figure(recall[i]),
              'precision': figure(precision[i]), 'recall': figure(recall[i]), 'f1': figure(f1[i])}
             for i, name in enumerate(classes)]
    result = {'split': outcome.split, 'images': int(len(outcome.labels)), 'loss': outcome.loss,
              'accuracy': outcome.accuracy}
    if len(classes) >= 10:
        result['top5_accuracy'] = outcome.top_k_accuracy(TOP)
    return {**result, 'classes': list(classes), 'confusion_matrix': matrix.tolist(),
            'per_class': table}


def figure(value):
    value = float(value)
    return None if math.isnan(value) else value


def result_line(result):
    """'Test error: loss=0.0412 accuracy=0.9871', as the training console says it."""
    line = (f"{SPLIT_NAMES[result['split']]} error: loss={result['loss']:.4f} "
            f"accuracy={result['accuracy']:.4f}")
    return line + (f" top5_accuracy={result['top5_accuracy']:.4f}" if 'top5_accuracy' in result else '')


TABLE_COLUMNS = ('class', 'images', 'predicted', 'correct', 'accuracy', 'precision', 'recall', 'f1')


def table_lines(result):
    """The per-class table as console lines (the classes of lowest accuracy
    first where there are more than TABLE_CLASSES)."""
    rows = result['per_class']
    if len(rows) > TABLE_CLASSES:
        rows = sorted(rows, key=lambda r: (r['accuracy'] is None, r['accuracy'] or 0))[:TABLE_CLASSES]
    width = max(12, *(len(r['class']) for r in rows))
    lines = [f"{'class':<{width}} {'images':>7} {'predicted':>9} {'correct':>7} {'accuracy':>8} "
             f"{'precision':>9} {'recall':>7} {'f1':>7}"]
    for r in rows:
        shown = {k: '-' if r[k] is None else f'{r[k]:.4f}' for k in ('accuracy', 'precision', 'recall', 'f1')}
        lines.append(f"{r['class']:<{width}} {r['images']:>7} {r['predicted']:>9} {r['correct']:>7} "
                     f"{shown['accuracy']:>8} {shown['precision']:>9} {shown['recall']:>7} "
                     f"{shown['f1']:>7}")
    if len(rows) < len(result['per_class']):
        lines.append(f"(the {len(rows)} classes of lowest accuracy of {len(result['per_class'])}; "
                     f"all in per_class.csv)")
    return lines


def csv_text(header, rows):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator='\n')
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def write(directory, result, outcome, description, title):
    """The evaluation's files in `directory`: summary.json, confusion.csv and
    .json, per_class.csv, misclassified.csv, and the figures confusion.png
    and misclassified.png; all of them or, where one fails, none (an earlier
    evaluation there stays whole)."""
    classes, matrix = result['classes'], result['confusion_matrix']
    shown = {k: v for k, v in result.items() if k != 'confusion_matrix'}  # in confusion.json
    with safe_io.all_or_none():
        safe_io.write_text(os.path.join(directory, 'summary.json'), json.dumps(shown, indent=1))
        safe_io.write_text(os.path.join(directory, 'confusion.json'), json.dumps(
            {'rows': 'true class', 'columns': 'predicted class', 'classes': classes, 'matrix': matrix}))
        safe_io.write_text(os.path.join(directory, 'confusion.csv'), csv_text(
            ['true \\ predicted', *classes], [[name, *row] for name, row in zip(classes, matrix)]))
        safe_io.write_text(os.path.join(directory, 'per_class.csv'), csv_text(
            TABLE_COLUMNS, [['' if r[k] is None else r[k] for k in TABLE_COLUMNS]
                            for r in result['per_class']]))
        safe_io.write_text(os.path.join(directory, 'misclassified.csv'), csv_text(
            ('index', 'true', 'predicted', 'probability'),
            [(m.index, classes[m.label], classes[m.predicted], f'{m.confidence:.6f}')
             for m in outcome.worst]))
        evaluation_figures.draw_confusion(np.array(matrix), classes,
                                          os.path.join(directory, 'confusion.png'), title)
        evaluation_figures.draw_misclassified(outcome.worst, classes, description,
                                              os.path.join(directory, 'misclassified.png'), title)


def evaluation_folder(run_directory, split, label):
    """<run>/evaluation/<split>-<checkpoint label>: where one evaluation is written."""
    return os.path.join(run_directory, folder.EVALUATION_DIR, f'{split}-{label}')


def analyse_and_write(session, model, source, split, keep, description, directory, title,
                      stop=None):
    """analyse + summary + write; returns the summary."""
    outcome = analyse(session, model, source, split, keep, stop)
    result = summary(outcome, description['classes'])
    write(directory, result, outcome, description, title)
    return result


# --- at the end of training -------------------------------------------------------

class TestAnalysis(Callback):
    """The test split's confusion matrix, per-class figures and misclassified
    images, as `python evaluate.py` writes them: with the weights of the
    best validation epoch, into <run>/evaluation/test-best."""

    def with_best_weights(self, run, label):
        if label is None:
            return
        description = run.record[data_summary.KEY]
        epoch = run.record['best']['epoch'] if label == 'best' else run.record['epochs'][-1]['epoch']
        directory = evaluation_folder(run.directory, 'test', label)
        result = analyse_and_write(run.session, run.built.model, run.built.source, 'test',
                                   run.cfg['misclassified_images'], description, directory,
                                   f"{run.name}, epoch {epoch}, test split", run.stop)
        print(f"Confusion matrix and per-class figures of the test split (epoch {epoch}, "
              f"accuracy {result['accuracy']:.4f}) in: {console.shown_path(directory)}", flush=True)

