"""Reader alone against training: can the cifar_128 pipeline keep the model fed?

    python bench/streaming.py datasets_root=PATH [key=value ...]

needs 128 px CIFAR TFRecords under PATH/cifar_128/data_dir (ImageResizer +
TFRecordsWriter). Measures, in one process and back to back, images per second
of: the training pipeline alone (no model), with and without augmentation;
training steps of the custom model and of ResNet50 fed by that pipeline. Each
figure is the median of timed windows after a warm-up. Prints a table and
writes bench/results/streaming.json.
"""
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tf_quiet  # noqa: E402

tf_quiet.import_tensorflow_quietly()

import tensorflow as tf  # noqa: E402

import loaders  # noqa: E402
import main  # noqa: E402
import malloc_tuning  # noqa: E402
import settings  # noqa: E402

v1 = tf.compat.v1
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')


def images_per_second(session, fetch, feed, batch_size, warmup, windows, steps):
    for _ in range(warmup):
        session.run(fetch, feed)
    rates = []
    for _ in range(windows):
        started = time.perf_counter()
        for _ in range(steps):
            session.run(fetch, feed)
        rates.append(steps * batch_size / (time.perf_counter() - started))
    return statistics.median(rates)


def measure(cfg, data, with_model, warmup, windows, steps):
    graph, source, model, _, _ = main.build_graph(cfg, data)
    with graph.as_default(), v1.Session(config=main.session_config(cfg)) as session:
        session.run(v1.global_variables_initializer())
        source.start(session, 'train', training=True, seed=1)
        if with_model:
            fetch, feed = model.train_op, {model.is_training: True}
        else:
            fetch, feed = source.next_batch, None
        return images_per_second(session, fetch, feed, cfg['batch_size'], warmup, windows, steps)


def run(argv):
    cfg = settings.load_config(['dataset_name=cifar_128', *argv])
    malloc_tuning.set_mmap_threshold(cfg['malloc_mmap_threshold'])  # as main.py runs
    data_dir = main.constant.derived_dirs(cfg)['DATA_DIR']
    data = loaders.DATASETS['cifar_128'].load(data_dir, cfg['seed'], False)
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
    run(sys.argv[1:])
