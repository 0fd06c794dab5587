"""Passes over the data: a training epoch, step by step with its progress
lines, and the evaluation of a whole split."""
import collections
import math

import numpy as np
import tensorflow as tf

from foundation.errors import DataError
from trainer import console


class Divergence(RuntimeError):
    """The loss or the weights stopped being finite numbers; `remedy`: what
    to change, where the learning rate is known not to be the cause."""

    def __init__(self, message, remedy=None):
        super().__init__(message)
        self.remedy = remedy


def train_step(session, model):
    """One optimiser step on the next training batch; returns (loss, images)."""
    return objective_step(session, model)[:2]


def objective_step(session, model):
    """train_step, and what the step minimised (the loss plus the weight
    penalty): (loss, images, objective)."""
    _, loss, batch, objective = session.run([model.train_op, model.train_loss, model.train_batch_size,
                                             model.objective])
    return loss, batch, objective


def divergence(loss, objective, cfg, where, first):
    """The Divergence of a step whose loss or objective is not finite; `first`:
    the run's first step, whose loss comes from its starting weights alone
    (computed before the update), so no learning rate made it overflow."""
    start = f"init_weights={cfg['init_weights']}" if cfg['init_weights'] else 'the initial weights'
    if math.isfinite(loss):  # the penalty alone: weight_decay x sum(w²) / 2 beyond float32
        weights = f' (or smaller weights than {start})' if first and cfg['init_weights'] else ''
        return Divergence(f'the loss with its weight penalty became {objective} {where} (the loss '
                          f'alone: {loss:.4g})', f"Lower weight_decay (now {cfg['weight_decay']:g}){weights}: "
                          f"its penalty on the weights overflows float32.")
    if first:
        return Divergence(f'loss was {loss} {where}, before any update',
                          f'The weights it starts from ({start}) or its input make the loss overflow, '
                          f'whatever the learning rate; give weights that fit this data.')
    return Divergence(f'loss became {loss} {where}')


# What a training pass did: the mean training loss of its images, its images and its optimiser steps.
Trained = collections.namedtuple('Trained', 'loss images steps')


def train_epoch(session, model, source, cfg, epoch, stop, skip=0, steps=None, trace=None):
    """One shuffled pass over the training split, less its first `skip`
    images, and ended after `steps` optimiser steps where that comes first
    (max_steps); returns what it Trained. `trace` (profiling.StepTrace)
    profiles the steps it names.

    Prints progress lines (console.ProgressLog). Raises Divergence at the
    first non-finite loss and Interrupted (with the images done) when a stop
    was requested.
    """
    total, last = source.num_examples('train'), source.training_images()
    if steps is not None:  # every step but an epoch's last takes a whole batch
        last = min(last, skip + steps * cfg['batch_size'])
    progress = console.ProgressLog(epoch, total, last, console.log_interval(cfg['log_every'], last), skip)
    source.start(session, 'train', training=True, seed=cfg['seed'] * 100_003 + epoch, skip=skip)
    seen, loss_sum, taken = skip, 0.0, 0
    while steps is None or taken < steps:
        stop.check(images=seen)
        if trace:
            trace.before_step()
        try:
            loss, batch, objective = objective_step(session, model)
        except tf.errors.OutOfRangeError:
            break
        if trace:
            trace.after_step()
        seen, taken = seen + batch, taken + 1
        if not (math.isfinite(loss) and math.isfinite(objective)):
            raise divergence(loss, objective, cfg, f'at epoch {epoch}, step {seen}',
                             first=epoch == 1 and skip == 0 and taken == 1)
        loss_sum += loss * batch
        progress.step(seen, loss, batch)
    if seen < last:
        print(f'epoch {epoch}: skipped {last - seen} of {total} training records that could '
              f'not be read', flush=True)
    if not session.run(model.weights_finite):
        raise Divergence(f'weights became NaN or infinite during epoch {epoch}')
    return Trained(float(loss_sum / max(seen - skip, 1)), int(seen - skip), taken)


def evaluation_batches(session, source, split, fetches, stop=None):
    """Yields session.run(fetches) for each batch of a pass over the whole
    split in its order, batch norm in inference mode."""
    source.start(session, split, training=False)
    while True:
        if stop:
            stop.check()
        try:
            yield session.run(fetches)
        except tf.errors.OutOfRangeError:
            return


def first_of_split(session, source, split, fetches, count):
    """The values of `fetches` (tensors whose first axis is the batch's
    images) for the first `count` images of `split` in its order, fewer
    where it holds fewer: the same images every time, as evaluation passes
    do not shuffle."""
    parts, seen = [], 0
    for values in evaluation_batches(session, source, split, fetches):
        parts.append(values)
        seen += len(values[0])
        if seen >= count:
            break
    if not parts:
        return [np.empty(0) for _ in fetches]
    return [np.concatenate(column)[:count] for column in zip(*parts)]


def evaluate(session, model, source, split, stop=None, also=(), each_batch=None):
    """Mean loss and accuracy over a whole split, through the copy of the
    network fixed in inference mode (batch norm's moving averages, no
    dropout); the values of the tensors `also` (of that copy: eval_logits)
    of every batch go to each_batch(values), in the split's order."""
    loss_sum = correct = count = 0.0
    fetches = [model.eval_loss, model.eval_accuracy, model.batch_size, *also]
    for loss, accuracy, n, *values in evaluation_batches(session, source, split, fetches, stop):
        loss_sum, correct, count = loss_sum + loss * n, correct + accuracy * n, count + n
        if each_batch:
            each_batch(values)
    if not count:
        raise DataError(f'the {split} split gave no images to evaluate (all skipped as bad?)')
    return float(loss_sum / count), float(correct / count)
