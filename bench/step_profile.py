"""Where a training step's time goes, per precision: TensorFlow's trace of the
project's ResNet50 step at 128 px (the step main.py runs, fed by its
TFRecords pipeline), op types grouped and timed.

    python -m bench.step_profile [precisions=float32,bfloat16] [use_se=True]
                                 [steps=3] [warmup=3] [publish=True] [key=value ...]

For each precision, `steps` steps are run with a full trace
(v1.RunOptions.FULL_TRACE) after `warmup` plain ones; every op's time is read
from the trace's step stats and summed per group: convolutions and their
gradients, matrix products, batch norm and its gradient, casts (what the
bfloat16 rewrite inserts), element-wise and activation ops, reductions,
layout changes (transposes, oneDNN's layout conversions), the optimiser's
updates, the rest. Times are summed over the executor's threads, so a group's
share is of the busy time, not of the wall time; the wall time of an
untraced step is measured beside (the median of `steps` steps). Then the
matmul rate in each precision and the share of it the step reaches,
counting 6 FLOPs per forward multiply-add.

Prints a table and writes bench/results/step_profile.json.
"""
import collections
import json
import os
import statistics
import sys
import tempfile
import time

from foundation import tf_quiet

tf_quiet.import_tensorflow_quietly()

import tensorflow as tf

from bench import performance_docs, throughput
from trainer.config import settings

v1 = tf.compat.v1

# (group, op-type prefixes), first match wins; op types are the kernels'
# names in the trace, oneDNN's prefixed with _Mkl / _MklNative.
GROUPS = [
    ('convolutions', ('Conv2D', 'FusedConv2D', 'Conv2DBackprop', 'FusedPadConv2D')),
    ('matrix products', ('MatMul', 'FusedMatMul', 'BatchMatMul')),
    ('batch norm', ('FusedBatchNorm',)),
    ('casts', ('Cast',)),
    ('layout changes', ('Transpose', 'ToTf', 'MklToTf', 'Reorder')),
    ('optimiser updates', ('ApplyAdam', 'ResourceApply', 'ApplyGradientDescent', 'ApplyMomentum', 'AssignSub',
                           'AssignAdd', 'Assign')),
    ('reductions', ('Mean', 'Sum', 'Max', 'Min', 'Prod', 'BiasAddGrad', 'L2Loss')),
    ('pooling', ('MaxPool', 'AvgPool')),
    ('element-wise and activations', ('Relu', 'Selu', 'Sigmoid', 'Add', 'Mul', 'Sub', 'RealDiv', 'BiasAdd',
                                      'Square', 'Rsqrt', 'Sqrt', 'Neg', 'Exp', 'Log', 'Softmax', 'Tile',
                                      'Maximum', 'Minimum', 'Select', 'Fill', 'ZerosLike', 'OnesLike',
                                      'SparseSoftmaxCrossEntropyWithLogits', 'Softplus', 'Elu')),
    ('input pipeline', ('IteratorGetNext', 'Iterator')),
]
PRECISIONS = {'float32': 'mixed_precision=False', 'bfloat16': 'mixed_precision=True'}


def op_type(node_stats):
    """The kernel's type of a traced node: the text in its timeline label after
    '= ' and before '(' ('conv1/Conv2D = _MklNativeConv2D(...)' -> '_MklNativeConv2D')."""
    label = node_stats.timeline_label
    if ' = ' in label:
        return label.split(' = ', 1)[1].split('(', 1)[0].strip()
    return node_stats.node_name.split(':')[0].rsplit('/', 1)[-1]


def group_of(kind):
    """The group of an op type, oneDNN's prefixes dropped."""
    bare = kind
    for prefix in ('_MklNative', '_MklFused', '_Mkl', '_Fused', '_'):
        if bare.startswith(prefix):
            bare = bare[len(prefix):]
            break
    for group, prefixes in GROUPS:
        if bare.startswith(prefixes) or kind.startswith(prefixes):
            return group
    return 'other'


def traced_times(step_stats):
    """{op type: (microseconds, count)} of one traced step's CPU device."""
    times = collections.defaultdict(lambda: [0, 0])
    for device in step_stats.dev_stats:
        if 'CPU' not in device.device and 'cpu' not in device.device:
            continue
        for node in device.node_stats:
            if node.node_name in ('_SOURCE', '_SINK'):
                continue
            entry = times[op_type(node)]
            entry[0] += node.op_end_rel_micros - node.op_start_rel_micros
            entry[1] += 1
    return times


def profile(cfg, data, steps, warmup):
    """Per op type the mean microseconds and count per traced step, and the
    median wall seconds of an untraced step."""
    with throughput.project_session(cfg, data) as (session, source, model):
        source.start(session, 'train', training=True, seed=1)
        fetches = [model.train_op, model.train_loss]
        for _ in range(warmup):
            session.run(fetches)
        walls = []
        for _ in range(steps):
            started = time.perf_counter()
            session.run(fetches)
            walls.append(time.perf_counter() - started)
        totals = collections.defaultdict(lambda: [0, 0])
        for _ in range(steps):
            metadata = v1.RunMetadata()
            session.run(fetches, options=v1.RunOptions(trace_level=v1.RunOptions.FULL_TRACE),
                        run_metadata=metadata)
            for kind, (micros, count) in traced_times(metadata.step_stats).items():
                totals[kind][0] += micros / steps
                totals[kind][1] += count / steps
        return dict(totals), statistics.median(walls), model.forward_multiply_adds()


def grouped(op_times):
    """{group: (milliseconds per step, ops per step)}, largest first."""
    groups = collections.defaultdict(lambda: [0.0, 0.0])
    for kind, (micros, count) in op_times.items():
        entry = groups[group_of(kind)]
        entry[0] += micros / 1000
        entry[1] += count
    return dict(sorted(groups.items(), key=lambda item: -item[1][0]))


def run(argv):
    argv = list(argv)
    precisions = throughput.option(argv, 'precisions', 'float32,bfloat16').split(',')
    steps = int(throughput.option(argv, 'steps', '3'))
    warmup = int(throughput.option(argv, 'warmup', '3'))
    base = ['model=resnet50', 'dataset_name=cifar_128', *argv]
    arrays = throughput.synthetic_arrays((128, 128, 3), 600, 10, seed=0)
    rows = {}
    with tempfile.TemporaryDirectory(prefix='bench_profile_') as records_dir:
        data = throughput.as_records(arrays, records_dir)
        for precision in precisions:
            cfg = settings.load_config([*base, PRECISIONS[precision]])
            op_times, wall, multiply_adds = profile(cfg, data, steps, warmup)
            matmul = throughput.matmul_rate(precision)
            flops = cfg['batch_size'] / wall * multiply_adds * throughput.TRAINING_FLOPS_PER_MULTIPLY_ADD
            rows[precision] = {'groups': grouped(op_times), 'wall_seconds': wall,
                               'images_per_second': cfg['batch_size'] / wall,
                               'matmul_flops': matmul, 'share_of_matmul_rate': flops / matmul,
                               'top_ops': sorted(((k, v[0] / 1000, v[1]) for k, v in op_times.items()),
                                                 key=lambda item: -item[1])[:15]}
            print(f"{precision}: {cfg['batch_size'] / wall:.1f} img/s, {flops / 1e9:.0f} GFLOP/s of "
                  f"{matmul / 1e9:.0f} ({100 * flops / matmul:.0f} %)", flush=True)
    report(rows, base, steps)


def report(rows, base, steps):
    names = sorted({group for row in rows.values() for group in row['groups']},
                   key=lambda g: -max(r['groups'].get(g, (0, 0))[0] for r in rows.values()))
    head = '| op group | ' + ' | '.join(f'{p} ms/step (share of busy time) | {p} ops' for p in rows) + ' |'
    lines = [head, '|' + ' --- |' * (1 + 2 * len(rows))]
    for group in names:
        cells = []
        for row in rows.values():
            busy = sum(ms for ms, _ in row['groups'].values())
            ms, count = row['groups'].get(group, (0.0, 0))
            cells += [f'{ms:.0f} ({100 * ms / busy:.0f} %)', f'{count:.0f}']
        lines.append(f'| {group} | ' + ' | '.join(cells) + ' |')
    cells = []
    for row in rows.values():
        cells += [f"**{1000 * row['wall_seconds']:.0f} wall** ({row['images_per_second']:.1f} img/s, "
                  f"{100 * row['share_of_matmul_rate']:.0f} % of the {row['matmul_flops'] / 1e9:.0f} GFLOP/s "
                  "matmul rate)", '']
    lines.append('| step | ' + ' | '.join(cells) + ' |')
    table = '\n'.join(lines)
    heading = (f"ResNet50 at 128 px, batch 50, {throughput.load_line()}; "
               f"`python -m bench.step_profile {' '.join(base[2:])}`, {steps} traced steps:")
    print(heading)
    print(table)
    for precision, row in rows.items():
        print(f'\n{precision}, op types by time (ms per step, count):')
        for kind, ms, count in row['top_ops']:
            print(f'  {kind:40s} {ms:8.1f} {count:6.0f}')
    os.makedirs(throughput.RESULTS, exist_ok=True)
    with open(os.path.join(throughput.RESULTS, 'step_profile.json'), 'w') as f:
        json.dump({'heading': heading, 'table': table, 'rows': rows,
                   'machine': performance_docs.machine_line(tf.__version__)}, f, indent=1)


if __name__ == '__main__':
    arguments = sys.argv[1:]
    with performance_docs.published(__file__, arguments):
        run(arguments)
