"""What it costs to start an evaluation pass right after a whole training
epoch, with tf.data's autotuning on and off (input_pipeline.pass_iterator).

    python -m bench.pass_restart                                  # digits + 6000 cifar_128 records
    python -m bench.pass_restart data_dir=../shared/datasets/mnist  # MNIST instead of digits

For the array input (digits, or MNIST with data_dir) and the TFRecords input
(cifar_128 records written by the project's TFRecordsWriter into a temporary
folder), in one process and back to back: the custom model trains `epochs`
whole epochs as main.py does, and after each the start of the evaluation pass
is timed. Also the training epoch's seconds, to show that switching
autotuning off does not slow training. Prints a table and writes
bench/results/pass_restart.json.
"""
import json
import os
import statistics
import sys
import tempfile
import time

from foundation import tf_quiet

tf_quiet.import_tensorflow_quietly()

import tensorflow as tf

import constant
from bench import performance_docs, throughput
from foundation import malloc_tuning
from foundation.data import input_pipeline, loaders
from trainer.config import settings
from trainer.training import input_source, interruption, passes, training_graph

v1 = tf.compat.v1
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')
EPOCHS = 3


def epochs_and_restarts(cfg, autotune):
    """([seconds of each training epoch], [seconds to start the evaluation
    pass after it]) with tf.data autotuning on or off."""
    input_pipeline.AUTOTUNE_PASSES = autotune
    data_dir = constant.derived_dirs(cfg)['DATA_DIR']
    data = input_source.open_dataset(dict(cfg, download=False), data_dir)
    built = training_graph.build_graph(cfg, data)
    epochs, restarts = [], []
    with built.graph.as_default(), v1.Session(config=training_graph.session_config(built.devices)) as session, \
            interruption.stop_requests() as stop:
        session.run(v1.global_variables_initializer())
        for epoch in range(1, EPOCHS + 1):
            started = time.perf_counter()
            passes.train_epoch(session, built.model, built.source, cfg, epoch, stop)
            epochs.append(time.perf_counter() - started)
            started = time.perf_counter()
            built.source.start(session, 'valid', training=False)
            restarts.append(time.perf_counter() - started)
    return epochs, restarts


def measure(name, cfg):
    rows = []
    for autotune in (True, False):
        epochs, restarts = epochs_and_restarts(cfg, autotune)
        rows.append({'input': name, 'autotune': autotune, 'epoch_s': epochs, 'restart_s': restarts})
        print(f"{name:24s} autotune {'on ' if autotune else 'off'}: epochs "
              f"{', '.join(f'{s:.1f}' for s in epochs)} s; evaluation starts "
              f"{', '.join(f'{s:.2f}' for s in restarts)} s", flush=True)
    return rows


def run(argv):
    data_dirs = [a for a in argv if a.startswith('data_dir=')]  # of MNIST: the records are made
    common = ['log_every=1000000', *(a for a in argv if a not in data_dirs)]
    arrays = settings.load_config([f"dataset_name={'mnist' if data_dirs else 'digits'}", *common,
                                   *data_dirs])
    malloc_tuning.set_mmap_threshold(arrays['malloc_mmap_threshold'])  # as main.py runs
    rows = measure(f"arrays ({arrays['dataset_name']})", arrays)
    with tempfile.TemporaryDirectory(prefix='bench_pass_restart_') as root:
        records = settings.load_config(['dataset_name=cifar_128', f'datasets_root={root}',
                                        *common])
        images = throughput.synthetic_arrays(loaders.DATASETS['cifar_128'].image_shape, 6000, 10, 0)
        throughput.as_records(images, constant.derived_dirs(records)['DATA_DIR'])
        del images
        rows += measure('TFRecords (cifar_128)', records)
    print('\n| input | autotune | training epoch s (median) | evaluation start s (median) '
          '| evaluation start s (max) |\n| --- | --- | --- | --- | --- |')
    for row in rows:
        print(f"| {row['input']} | {'on' if row['autotune'] else 'off'} | "
              f"{statistics.median(row['epoch_s']):.1f} | {statistics.median(row['restart_s']):.2f} | "
              f"{max(row['restart_s']):.2f} |")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, 'pass_restart.json'), 'w') as f:
        json.dump({'args': argv, 'epochs': EPOCHS, 'rows': rows}, f, indent=1)


if __name__ == '__main__':
    v1.disable_eager_execution()
    argv = sys.argv[1:]
    with performance_docs.published(__file__, argv):
        run(argv)
