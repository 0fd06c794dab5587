"""What a main.py epoch costs beyond its training steps: logging, evaluation,
checkpoint, history and plot.

    python -m bench.epoch_overhead data_dir=../shared/datasets/mnist [fraction=0.1] [key=value ...]

Runs main.py's `train` on MNIST (custom model by default) for 1 and for 3
epochs into a temporary datasets_root; the difference over 2 epochs is what
one more epoch costs, start-up, the test evaluation and the filters cancelling
out. Against it: the bare training-step rate of the same graph and input
pipeline (no logging, evaluation or saving), measured before and after.
The history's own timings of the training loop and the evaluation come from
the same runs (separate runs: they need not add up to the whole).

`fraction` < 1 (for ResNet50, whose whole MNIST epochs take tens of minutes
here) trains on the first part of MNIST's images, written as a Keras
mnist.npz, with train_eval_images scaled alike: training, validation and
train-evaluation images keep their proportions, while the per-epoch fixed
costs (checkpoint, plot) weigh more than in a whole epoch, so the overhead
it reports is an upper bound of the whole epoch's. The bare rate's windows
shrink with it.

Prints a table and writes bench/results/epoch_overhead.json.
"""
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time

from foundation import tf_quiet

tf_quiet.import_tensorflow_quietly()

import numpy as np
import tensorflow as tf

import constant
import main
from bench import performance_docs
from bench.throughput import load_line, median_rate, option, project_steps
from trainer.config import settings
from trainer.runs import history
from trainer.training import input_source

v1 = tf.compat.v1
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')


def bare_rate(cfg, data, steps, windows=5):
    """Median images/s of the training step alone, after a warm-up of a fifth of a window."""
    with project_steps(cfg, data) as (step, _):
        return median_rate(step, cfg['batch_size'], max(1, steps // 5), windows, steps)


def mnist_part(data, fraction, out_dir):
    """Keras' mnist.npz in out_dir, of the first `fraction` of MNIST's official
    training images (validation held out first, as the loader does) and test images."""
    official = np.concatenate([data.valid.images, data.train.images])[..., 0]
    official_labels = np.concatenate([data.valid.labels, data.train.labels])
    train, test = round(len(official) * fraction), round(len(data.test) * fraction)
    os.makedirs(out_dir)
    np.savez(os.path.join(out_dir, 'mnist.npz'), x_train=official[:train],
             y_train=official_labels[:train], x_test=data.test.images[:test, ..., 0],
             y_test=data.test.labels[:test])


def config_for(root, fraction, argv):
    """The bench's config: MNIST, or its first `fraction` written under root."""
    cfg = settings.load_config(['dataset_name=mnist', f'datasets_root={root}', 'download=False',
                                *argv])
    if fraction == 1:
        return cfg
    part_dir = os.path.join(root, 'mnist_part')
    mnist_part(input_source.open_dataset(cfg, constant.derived_dirs(cfg)['DATA_DIR']), fraction, part_dir)
    train_eval = cfg['train_eval_images'] and round(cfg['train_eval_images'] * fraction)
    return settings.load_config(['dataset_name=mnist', f'datasets_root={root}', 'download=False',
                                 *argv, f'data_dir={part_dir}', f'train_eval_images={train_eval}'])


def timed_training(cfg, epochs):
    """Wall seconds of main.train for `epochs` epochs (output kept quiet), and
    the history it wrote."""
    cfg = dict(cfg, max_epochs=epochs)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        status = main.train(cfg)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f'main.train stopped with status {status}')
    run_dir = os.path.join(constant.derived_dirs(cfg)['RUNS_SAVE_DIR'], constant.run_name(cfg))
    return seconds, history.load(run_dir)


def run(argv):
    argv = list(argv)
    fraction = float(option(argv, 'fraction', '1'))
    bare_steps = max(5, round(100 * fraction))
    with tempfile.TemporaryDirectory(prefix='bench_epoch_') as root:
        cfg = config_for(root, fraction, argv)
        data = input_source.open_dataset(cfg, constant.derived_dirs(cfg)['DATA_DIR'])
        images = data.num_examples('train')
        rate_before = bare_rate(cfg, data, bare_steps)
        one, _ = timed_training(cfg, 1)
        three, record = timed_training(cfg, 3)
        rate_after = bare_rate(cfg, data, bare_steps)
    bare = statistics.mean([rate_before, rate_after])
    steps_seconds = images / bare
    epoch_seconds = (three - one) / 2
    later = record['epochs'][1:]  # epochs 2 and 3, as the difference counts them
    loop = statistics.mean(e['train_seconds'] for e in later)
    evaluation = statistics.mean(e['epoch_seconds'] - e['train_seconds'] for e in later)
    rows = [
        ('training steps alone (bare rate)', steps_seconds),
        ("main.py's training loop (steps + logging)", loop),
        ('evaluation (train subset + valid)', evaluation),
        ('whole epoch of main.py (checkpoint, history, plot included)', epoch_seconds),
    ]
    print(f"\n{cfg['dataset_name']}{f' (first {fraction:g} of it)' if fraction < 1 else ''}, "
          f"{cfg['model']}, {images} training images, {data.num_examples('valid')} validation, "
          f"train_eval_images={cfg['train_eval_images']}, batch {cfg['batch_size']}; bare step rate "
          f"{rate_before:.0f} img/s before, {rate_after:.0f} after; {load_line()}")
    print('\n| part of an epoch | seconds | / the steps alone |\n| --- | --- | --- |')
    for name, seconds in rows:
        print(f'| {name} | {seconds:.2f} | {100 * seconds / steps_seconds:.1f} % |')
    print(f'\nan epoch of main.py spends {100 * (epoch_seconds / steps_seconds - 1):+.1f} % '
          f'beyond its training steps')
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, 'epoch_overhead.json'), 'w') as f:
        json.dump({'dataset': cfg['dataset_name'], 'fraction': fraction, 'model': cfg['model'],
                   'images': images, 'load': load_line(),
                   'batch_size': cfg['batch_size'], 'bare_images_per_second': [rate_before, rate_after],
                   'seconds': dict(rows), 'overhead': epoch_seconds / steps_seconds - 1}, f, indent=1)


if __name__ == '__main__':
    v1.disable_eager_execution()  # as main.py runs
    argv = sys.argv[1:]
    with performance_docs.published(__file__, argv):
        run(argv)
