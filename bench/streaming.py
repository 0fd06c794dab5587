"""Reader alone against training: can the cifar_128 pipeline keep the model fed?

    python -m bench.streaming [datasets_root=PATH] [key=value ...]

reads 128 px CIFAR TFRecords under PATH/cifar_128/data_dir (ImageResizer +
TFRecordsWriter); without datasets_root, 6000 random images written by the
project's TFRecordsWriter into a temporary folder. Measures, in one process and back to back, images per second
of: the training pipeline alone (no model), with and without augmentation;
training steps of the custom model and of ResNet50 fed by that pipeline. Each
figure is the median of timed windows after a warm-up. Prints a table and
writes bench/results/streaming.json.
"""
import json
import os
import sys
import tempfile

from foundation import tf_quiet

tf_quiet.import_tensorflow_quietly()

import tensorflow as tf

import constant
import TFRecordsReader
from bench import performance_docs, throughput
from foundation import malloc_tuning
from foundation.data import loaders
from trainer.config import settings
from trainer.training import training_graph

v1 = tf.compat.v1
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')


def measure(cfg, data, with_model, warmup, windows, steps):
    """Images/s of training steps, or (with_model False) of the input pipeline alone."""
    if with_model:
        with throughput.project_steps(cfg, data) as (step, _):
            return throughput.median_rate(step, cfg['batch_size'], warmup, windows, steps)
    built = training_graph.build_graph(cfg, data)
    graph, source = built.graph, built.source
    with graph.as_default(), v1.Session(config=training_graph.session_config(built.devices)) as session:
        session.run(v1.global_variables_initializer())
        source.start(session, 'train', training=True, seed=1)

        def read_batch():
            try:
                session.run(source.next_batch)
            except tf.errors.OutOfRangeError:  # the pass ended: start another
                source.start(session, 'train', training=True, seed=1)
                session.run(source.next_batch)
        return throughput.median_rate(read_batch, cfg['batch_size'], warmup, windows, steps)


def run(argv):
    if any(arg.startswith('datasets_root=') for arg in argv):
        return measure_all(argv)
    with tempfile.TemporaryDirectory(prefix='bench_streaming_') as root:
        cfg = settings.load_config(['dataset_name=cifar_128', f'datasets_root={root}'])
        arrays = throughput.synthetic_arrays(loaders.DATASETS['cifar_128'].image_shape, 6000, 10, 0)
        throughput.as_records(arrays, constant.derived_dirs(cfg)['DATA_DIR'])
        del arrays
        return measure_all([f'datasets_root={root}', *argv])


def measure_all(argv):
    cfg = settings.load_config(['dataset_name=cifar_128', *argv])
    malloc_tuning.set_mmap_threshold(cfg['malloc_mmap_threshold'])  # as main.py runs
    data_dir = constant.derived_dirs(cfg)['DATA_DIR']
    data = TFRecordsReader.open_cifar_128(data_dir)
    cases = [
        ('reader, no model', dict(cfg), False, (5, 5, 40)),
        ('reader + augment, no model', dict(cfg, augment=True), False, (5, 5, 40)),
        ('custom model training', dict(cfg), True, (3, 3, 10)),
        ('ResNet50 training', dict(cfg, model='resnet50'), True, (2, 3, 3)),
    ]
    rows = []
    for name, case_cfg, with_model, (warmup, windows, steps) in cases:
        rate = measure(case_cfg, data, with_model, warmup, windows, steps)
        rows.append({'case': name, 'images_per_second': rate})
        print(f'{name:32s} {rate:10.1f} img/s', flush=True)
    reader = rows[0]['images_per_second']
    print('\n| case | images/s | reader / case |\n| --- | --- | --- |')
    for row in rows:
        print(f"| {row['case']} | {row['images_per_second']:.1f} | "
              f"{reader / row['images_per_second']:.1f}x |")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, 'streaming.json'), 'w') as f:
        json.dump({'records': data.counts, 'batch_size': cfg['batch_size'], 'rows': rows}, f, indent=1)


if __name__ == '__main__':
    v1.disable_eager_execution()
    argv = sys.argv[1:]
    with performance_docs.published(__file__, argv):
        run(argv)
