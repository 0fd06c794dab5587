"""Training throughput of every model configuration against Keras 3 `fit` of
the same architecture, and how much of the machine's matmul rate ResNet50 uses.

    python -m bench.throughput [only=custom_28,resnet50_128] [variants=relu,se_selu]
                               [schedule=WARMUP,WINDOWS,STEPS] [options=False] [key=value ...]

For each architecture (custom model at 28x28x1 and 32x32x3, ResNet50 at 32 and
128 px), with and without SE, with ReLU and SELU: images per second of the
project's own training step as main.py runs it (its input pipeline: arrays, or
TFRecords written by TFRecordsWriter at 128 px; its train_op), against a Keras
model with the same parameters trained by `fit` on the same images in the same
process. Where the project computes in mixed precision (mixed_precision=True,
or 'auto' deciding so), Keras runs twice, in float32 (what a Keras user gets by
default) and under its own mixed policy (mixed_bfloat16 on a CPU,
mixed_float16 on a GPU), and the project's step in float32 runs too: two
ratios against Keras and the project's gain from its precision, like with
like. The contenders run in alternating timed windows after a warm-up, so
that load from elsewhere on a shared machine hits them alike; figures are
medians, each ratio the median of the ratios within rounds of windows.

Then ResNet50 at 128 px with each GPU-minded option (mixed precision, XLA,
NCHW) against the defaults, the matmul rate of this machine in each precision
that ran, and the share of it that ResNet50 training at 128 px reaches in
that precision, counting 6 FLOPs per forward multiply-add per image (forward,
input gradients, weight gradients).

`variants` picks among relu, selu, se_relu, se_selu (default all four),
`schedule` replaces every architecture's warm-up steps, window pairs and steps
per window (fewer: minutes instead of tens of minutes, looser figures), and
`options=False` leaves out the options at 128 px.

Prints a table and writes bench/results/throughput.json.
"""
import contextlib
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

import TFRecordsReader
import TFRecordsWriter
from bench import performance_docs
from foundation import machine
from foundation.data import loaders
from Model import count_parameters
from trainer.config import settings
from trainer.training import passes, training_graph

v1 = tf.compat.v1
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results')
TRAINING_FLOPS_PER_MULTIPLY_ADD = 6  # forward, input gradients, weight gradients: 2 FLOPs each

# name -> (config overrides, image shape, images in the synthetic set,
#          (warm-up steps, window pairs, steps per window))
ARCHITECTURES = {
    'custom_28': (dict(model='custom_model', dataset_name='mnist'), (28, 28, 1), 5000, (20, 7, 50)),
    'custom_32': (dict(model='custom_model', dataset_name='cifar_32'), (32, 32, 3), 5000, (20, 7, 50)),
    'resnet50_32': (dict(model='resnet50', dataset_name='cifar_32'), (32, 32, 3), 2000, (3, 5, 5)),
    'resnet50_128': (dict(model='resnet50', dataset_name='cifar_128'), (128, 128, 3), 600, (2, 3, 3)),
}
OPTIONS = ['mixed_precision=True', 'xla=True', 'data_format=NCHW']
VARIANTS = {f"{'se_' if se else ''}{act}": dict(use_se=se, activation_fn=act)
            for se in (False, True) for act in ('relu', 'selu')}


def option(argv, name, default):
    """The value of `name=...` in argv (removed from it), else `default`."""
    for arg in list(argv):
        if arg.startswith(f'{name}='):
            argv.remove(arg)
            return arg.split('=', 1)[1]
    return default


def load_line():
    """This machine's load while a bench ran: on a shared machine, the figures' context."""
    one, five, _ = os.getloadavg()
    return f'load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs'


def timed_rate(run_step, batch_size, steps):
    """Images/s of `steps` calls of run_step."""
    started = time.perf_counter()
    for _ in range(steps):
        run_step()
    return steps * batch_size / (time.perf_counter() - started)


def median_rate(run_step, batch_size, warmup, windows, steps):
    """Median images/s over `windows` timed windows of `steps` steps, after `warmup`."""
    for _ in range(warmup):
        run_step()
    return statistics.median(timed_rate(run_step, batch_size, steps) for _ in range(windows))


def interleaved(contenders, warmup, windows):
    """Alternates timed windows of the contenders ({name: function(steps)
    giving images/s}, the first one first), so that load from other processes
    on this shared machine hits them alike; returns the median images/s of
    each, and the rounds of windows ({name: images/s} each) for median_ratio."""
    for run_window in contenders.values():
        run_window(warmup)
    rounds = [{name: run_window() for name, run_window in contenders.items()}
              for _ in range(windows)]
    return {name: statistics.median(r[name] for r in rounds) for name in contenders}, rounds


def median_ratio(rounds, faster, slower):
    """The median over rounds of one contender's rate over another's within
    the round: steadier than the ratio of the medians under drifting load."""
    return statistics.median(r[faster] / r[slower] for r in rounds)


def synthetic_arrays(image_shape, count, num_classes, seed):
    """Random uint8 images and labels split 80/10/10, in the loaders' form."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, *image_shape), dtype=np.uint8)
    labels = rng.integers(0, num_classes, count).astype(np.int64)
    cut = [int(count * 0.8), int(count * 0.9)]
    splits = [loaders.Split(x, y) for x, y in zip(np.split(images, cut), np.split(labels, cut))]
    mean, std = loaders.channel_stats(splits[0].images)
    return loaders.ArrayDataset(*splits, num_classes, mean, std)


def as_records(arrays, out_dir):
    """The same images as cifar_128 TFRecords, written by the project's writer."""
    counts = {split: arrays.num_examples(split) for split in ('train', 'valid', 'test')}
    stream = [(split, part.images, part.labels)
              for split, part in (('train', arrays.train), ('valid', arrays.valid),
                                  ('test', arrays.test))]
    description = {'format': 'cifar_raw', 'image_shape': list(arrays.image_shape),
                   'num_classes': arrays.num_classes}
    TFRecordsWriter.write_splits(out_dir, stream, counts, {'train': 2, 'valid': 1, 'test': 1},
                                 '.tfrecords', TFRecordsWriter.cifar_records, description)
    return TFRecordsReader.open_cifar_128(out_dir)


@contextlib.contextmanager
def project_session(cfg, data, strategy=None):
    """The project's training graph of cfg on `data` (under a distribution
    `strategy` if given), initialised in its own session as main.py configures
    it; yields (session, input source, Model)."""
    graph, source, model, *_ = training_graph.build_graph(cfg, data, strategy)
    with graph.as_default():
        initialize = v1.global_variables_initializer()
    # Not `with session`: that would make this graph the default one, and Keras'
    # eager code run between our steps would try to build into it.
    session = v1.Session(graph=graph, config=training_graph.session_config(machine.decide(cfg)))
    try:
        session.run(initialize)
        yield session, source, model
    finally:
        session.close()


@contextlib.contextmanager
def project_steps(cfg, data, strategy=None):
    """The project's training step, fed by its input pipeline, as main.py runs
    it; yields (run_step, the Model). run_step() returns (loss, images)."""
    with project_session(cfg, data, strategy) as (session, source, model):
        source.start(session, 'train', training=True, seed=1)

        def step():
            try:
                return passes.train_step(session, model)
            except tf.errors.OutOfRangeError:  # the pass ended: start another
                source.start(session, 'train', training=True, seed=1)
                return passes.train_step(session, model)
        yield step, model


def keras_policy(cfg):
    """Keras' dtype policy for the precision the project computes in under cfg."""
    if not cfg['mixed_precision']:
        return 'float32'
    return 'mixed_float16' if machine.gpu_found(cfg['device']) else 'mixed_bfloat16'


def keras_models(cfg, arrays, policies):
    """Keras 3 twins of the architecture, one per dtype policy, compiled, and
    the same images in a tf.data pipeline normalised the same way."""
    # Here, not at the top: other benches use this module without Keras.
    import keras

    from bench import keras_reference
    keras.backend.clear_session()
    models = []
    for policy in policies:
        keras.config.set_dtype_policy(policy)  # the layers built next take it
        keras.utils.set_random_seed(cfg['seed'])
        models.append(keras_reference.compile_model(keras_reference.build(cfg, arrays.image_shape),
                                                    cfg))
    keras.config.set_dtype_policy('float32')
    images = tf.data.Dataset.from_tensor_slices((arrays.train.images, arrays.train.labels))
    dataset = (images.shuffle(len(arrays.train), seed=1).repeat().batch(cfg['batch_size'])
               .map(lambda x, y: ((tf.cast(x, tf.float32) - arrays.mean) / arrays.std,
                                  tf.one_hot(y, arrays.num_classes)))
               .prefetch(2))
    return models, dataset


def check_same_architecture(keras_model, params, cfg):
    from bench import keras_reference  # here: other benches use this module without Keras
    if keras_reference.count_parameters(keras_model) != params:
        raise SystemExit(f"{cfg['model']}: the Keras twin has "
                         f"{keras_reference.count_parameters(keras_model)} parameters, ours "
                         f"{params}: not the same architecture")


def compare(cfg, data, arrays, warmup, windows, steps):
    """The project's step against Keras fit in float32 and, if the project
    computes in mixed precision, against Keras in the same precision and the
    project's own float32 step, in interleaved windows; returns a row."""
    from bench import keras_reference
    mixed = bool(cfg['mixed_precision'])
    policies = ['float32', keras_policy(cfg)] if mixed else ['float32']
    models, dataset = keras_models(cfg, arrays, policies)
    batch = cfg['batch_size']
    float32_cfg = dict(cfg, mixed_precision=False)
    with contextlib.ExitStack() as stack:
        step, ours = stack.enter_context(project_steps(cfg, data))
        params = count_parameters(ours.trainable_variables())
        contenders = {'project': lambda n=steps: timed_rate(step, batch, n)}
        for name, model in zip(('keras', 'keras_same_precision'), models):
            check_same_architecture(model, params, cfg)
            contenders[name] = lambda n=steps, m=model: keras_reference.fit_window(m, dataset, batch, n)
        if mixed:
            float32_step, _ = stack.enter_context(project_steps(float32_cfg, data))
            contenders['project_float32'] = lambda n=steps: timed_rate(float32_step, batch, n)
        rates, rounds = interleaved(contenders, warmup, windows)
    row = {'batch_size': batch, 'parameters': params, 'precision': keras_policy(cfg),
           'forward_multiply_adds': ours.forward_multiply_adds(),
           'project_images_per_second': rates['project'],
           'keras_images_per_second': rates['keras'],
           'ratio': median_ratio(rounds, 'project', 'keras')}
    if mixed:
        row.update({f'{name}_images_per_second': rates[name] for name in
                    ('keras_same_precision', 'project_float32')},
                   ratio_same_precision=median_ratio(rounds, 'project', 'keras_same_precision'),
                   ratio_to_project_float32=median_ratio(rounds, 'project', 'project_float32'),
                   # what float32 (the default where bfloat16 is not turned on) gets against Keras
                   float32_ratio=median_ratio(rounds, 'project_float32', 'keras'))
    return row


def matmul_rate(dtype='float32', size=2048, warmup=3, windows=5, steps=10):
    """FLOP/s of a square matrix product in `dtype` in a graph, on this machine."""
    graph = tf.Graph()
    with graph.as_default():
        # A variable, not a constant: grappler would fold a product of constants away.
        start = np.random.default_rng(0).standard_normal((size, size), np.float32)
        a = v1.Variable(tf.cast(start, dtype))
        product = tf.reduce_sum(tf.cast(tf.matmul(a, a), tf.float32))  # a scalar, not 16 MB
        with v1.Session(graph=graph) as session:
            session.run(a.initializer)
            rate = median_rate(lambda: session.run(product), 1, warmup, windows, steps)
    return rate * 2 * size ** 3


def compute_dtype(precision):
    """The dtype the matmuls of a row's precision run in: 'mixed_bfloat16' -> 'bfloat16'."""
    return precision.split('_')[-1]


def option_rows(argv, data, schedule):
    """ResNet50 at 128 px with each GPU-minded option on, against the
    defaults, in interleaved windows: what each does on this machine."""
    base = [*argv, 'model=resnet50', 'dataset_name=cifar_128']
    warmup, windows, steps = schedule
    rows = []
    for option in OPTIONS:
        default_cfg, option_cfg = settings.load_config(base), settings.load_config([*base, option])
        with project_steps(default_cfg, data) as (default_step, model), \
                project_steps(option_cfg, data) as (option_step, _):
            rates, rounds = interleaved(
                {'option': lambda n=steps, s=option_step, c=option_cfg: timed_rate(s, c['batch_size'], n),
                 'default': lambda n=steps, s=default_step, c=default_cfg: timed_rate(s, c['batch_size'], n)},
                warmup, windows)
        with_option, without = rates['option'], rates['default']
        ratio = median_ratio(rounds, 'option', 'default')
        rows.append({'option': option, 'precision': keras_policy(option_cfg),
                     'images_per_second': with_option,
                     'default_images_per_second': without, 'ratio': ratio,
                     'forward_multiply_adds': model.forward_multiply_adds()})
        print(f'ResNet50 128 px {option:22s} {with_option:7.1f} img/s, defaults {without:7.1f}: '
              f'{ratio:.2f}x', flush=True)
    return rows


def measure(only, variants, schedule, with_options, argv):
    """Rows of the Keras comparison, and of the options at 128 px.
    `schedule` (warm-up, windows, steps), if given, replaces each architecture's."""
    rows, options = [], []
    with tempfile.TemporaryDirectory(prefix='bench_records_') as records_dir:
        for name, (overrides, shape, count, own_schedule) in ARCHITECTURES.items():
            if only and name not in only:
                continue
            arrays = synthetic_arrays(shape, count, 10, seed=0)
            data = as_records(arrays, os.path.join(records_dir, name)) if shape[0] == 128 else arrays
            for variant in variants:
                args = [f'{k}={v}' for k, v in {**overrides, **VARIANTS[variant]}.items()]
                row = {'architecture': name, **VARIANTS[variant],
                       **compare(settings.load_config([*argv, *args]), data, arrays,
                                 *(schedule or own_schedule))}
                rows.append(row)
                print(f"{name:13s} {variant:7s} {row['precision']:14s} "
                      f"ours {row['project_images_per_second']:8.1f}  "
                      f"keras {row['keras_images_per_second']:8.1f}  ratio {row['ratio']:.2f}"
                      + same_precision_text(row), flush=True)
            if name == 'resnet50_128' and with_options:
                options = option_rows(argv, data, schedule or own_schedule)
    return rows, options


def add_matmul_share(row, images_per_second, matmul_flops, dtype):
    """Training FLOP/s at `images_per_second`, against the matmul rate in the
    dtype it computes in (stored in row under that dtype)."""
    flops = images_per_second * row['forward_multiply_adds'] * TRAINING_FLOPS_PER_MULTIPLY_ADD
    share = flops / matmul_flops[dtype]
    row.setdefault('share_of_matmul_rate', {})[dtype] = share
    return f"{flops / 1e9:.1f} GFLOP/s = {100 * share:.0f} % of the {dtype} rate"


def same_precision_text(row):
    """The like-with-like figures of a mixed-precision row, for its progress line."""
    if 'ratio_same_precision' not in row:
        return ''
    return (f"  keras {row['precision']} {row['keras_same_precision_images_per_second']:.1f}"
            f" ratio {row['ratio_same_precision']:.2f}"
            f"  ours float32 {row['project_float32_images_per_second']:.1f}"
            f" gain {row['ratio_to_project_float32']:.2f}")


def cell(row, key, text):
    return text.format(row[key]) if key in row else '-'


def report(rows, options, matmul_flops, schedule):
    if schedule:
        print('\nreduced schedule: {} warm-up steps, {} rounds of windows of {} steps'
              .format(*schedule))
    print('\n| architecture | SE | activation | precision | project img/s | Keras fit img/s '
          '(float32) | ratio | Keras img/s, same precision | ratio, same precision | '
          'project in float32 img/s | gain over float32 | project float32 / Keras float32 |')
    print('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |')
    for r in rows:
        print(f"| {r['architecture']} | {'yes' if r['use_se'] else 'no'} | {r['activation_fn']} | "
              f"{r['precision']} | {r['project_images_per_second']:.1f} | "
              f"{r['keras_images_per_second']:.1f} | {r['ratio']:.2f}x | "
              f"{cell(r, 'keras_same_precision_images_per_second', '{:.1f}')} | "
              f"{cell(r, 'ratio_same_precision', '{:.2f}x')} | "
              f"{cell(r, 'project_float32_images_per_second', '{:.1f}')} | "
              f"{cell(r, 'ratio_to_project_float32', '{:.2f}x')} | "
              f"{cell(r, 'float32_ratio', '{:.2f}x')} |")
    print('\nmatmul rate of this machine: ' + ', '.join(
        f'{dtype} {flops / 1e9:.1f} GFLOP/s' for dtype, flops in matmul_flops.items())
        + f'; {load_line()}')
    print('\n| ResNet50 128 px | precision | img/s | training FLOP/s = share of the matmul rate |')
    print('| --- | --- | --- | --- |')
    for r in rows:
        if r['architecture'] != 'resnet50_128':
            continue
        rates = {compute_dtype(r['precision']): r['project_images_per_second']}
        if 'project_float32_images_per_second' in r:
            rates['float32'] = r['project_float32_images_per_second']
        for dtype, rate in rates.items():
            print(f"| {'SE, ' if r['use_se'] else ''}{r['activation_fn']} | {dtype} | {rate:.1f} | "
                  f"{add_matmul_share(r, rate, matmul_flops, dtype)} |")
    for r in options:
        dtype = compute_dtype(r['precision'])
        print(f"| relu, {r['option']} ({r['ratio']:.2f}x the defaults) | {dtype} | "
              f"{r['images_per_second']:.1f} | "
              f"{add_matmul_share(r, r['images_per_second'], matmul_flops, dtype)} |")


def run(argv):
    argv = list(argv)
    only = [name for name in option(argv, 'only', '').split(',') if name]
    variants = option(argv, 'variants', ','.join(VARIANTS)).split(',')
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f'variants: {unknown} unknown; known: {", ".join(VARIANTS)}')
    schedule = option(argv, 'schedule', '')
    schedule = tuple(int(n) for n in schedule.split(',')) if schedule else None
    with_options = option(argv, 'options', 'True') != 'False'
    rows, options = measure(only, variants, schedule, with_options, argv)
    dtypes = {'float32', *(compute_dtype(r['precision']) for r in rows + options)}
    matmul_flops = {dtype: matmul_rate(dtype) for dtype in sorted(dtypes)}
    report(rows, options, matmul_flops, schedule)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, 'throughput.json'), 'w') as f:
        json.dump({'matmul_flops_per_second': matmul_flops, 'schedule': schedule, 'load': load_line(),
                   'rows': rows, 'options': options}, f, indent=1)


if __name__ == '__main__':
    argv = sys.argv[1:]
    with performance_docs.published(__file__, argv):
        run(argv)
