"""ResNet50's evaluation pass two ways. The earlier way: through the
network whose batch norms switch on is_training (a tf.cond each), in float32.
The current way: through the copy fixed in inference mode, in the precision the config
computes in (mixed_precision='auto' decides: bfloat16 on a CPU that has it,
for the networks measured to gain, foundation/machine.py). Where that precision
is not float32, the switchable network in it runs too, so that the table
parts the inference copy's share from the precision's.

    python -m bench.eval_pass [sizes=32,64] [valid=500] [windows=5] [key=value ...]

All go through passes.evaluate over the same validation split of synthetic
images, alternating pass by pass after a warm-up pass each, so that load from
elsewhere on this shared machine hits them alike. Prints a table (median
seconds per pass; a speed-up is the median of the ratios within rounds) and
writes bench/results/eval_pass.json.
"""
import contextlib
import json
import os
import statistics
import sys
import time
import types

from foundation import tf_quiet

tf_quiet.import_tensorflow_quietly()

import tensorflow as tf

from bench import performance_docs
from bench.throughput import RESULTS, load_line, option, project_session, synthetic_arrays
from foundation import machine
from trainer.config import settings
from trainer.training import passes


def switchable_path(model):
    """The model as passes.evaluate saw it before the inference copy: its
    figures from the network that follows is_training (False by default)."""
    return types.SimpleNamespace(eval_loss=model.loss, eval_accuracy=model.accuracy,
                                 batch_size=model.batch_size)


def timed_pass(session, source, model):
    """(seconds, (loss, accuracy)) of one evaluation of the validation split."""
    started = time.perf_counter()
    figures = passes.evaluate(session, model, source, 'valid')
    return time.perf_counter() - started, figures


def contenders(cfg, arrays, stack):
    """name -> (session, source, model-or-path) of each way to evaluate."""
    before = dict(cfg, mixed_precision=False)
    session, source, model = stack.enter_context(project_session(before, arrays))
    found = {'before: switchable, float32': (session, source, switchable_path(model))}
    if cfg['mixed_precision']:
        session, source, model = stack.enter_context(project_session(cfg, arrays))
        precision = 'float16' if machine.gpu_found(cfg['device']) else 'bfloat16'
        found[f'switchable, {precision}'] = (session, source, switchable_path(model))
    found['after: inference copy'] = (session, source, model)
    return found


def compare(cfg, size, valid, windows):
    """One row: every contender on `valid` images of size x size x 3."""
    arrays = synthetic_arrays((size, size, 3), 10 * valid, cfg['output_shape'], seed=0)
    with contextlib.ExitStack() as stack:
        ways = contenders(cfg, arrays, stack)
        for way in ways.values():
            timed_pass(*way)  # warm-up: grappler, oneDNN's kernel choices
        rounds = [{name: timed_pass(*way) for name, way in ways.items()} for _ in range(windows)]
    names = list(ways)
    return {'image_size': size, 'images': arrays.num_examples('valid'),
            'batch_size': cfg['eval_batch_size'],
            'seconds': {n: statistics.median(r[n][0] for r in rounds) for n in names},
            # after against before; and, in mixed precision, the copy against the
            # switchable network in that precision
            'speedup': statistics.median(r[names[0]][0] / r[names[-1]][0] for r in rounds),
            'copy_speedup': statistics.median(r[names[-2]][0] / r[names[-1]][0] for r in rounds),
            # what each measures: equal in float32, close in mixed precision
            'figures': {n: rounds[-1][n][1] for n in names}}


def report(rows, cfg):
    print(f"\nResNet50 evaluation pass ({'SE, ' if cfg['use_se'] else ''}{cfg['activation_fn']}, "
          f"mixed_precision={cfg['mixed_precision']} after), median seconds per pass; {load_line()}")
    names = list(rows[0]['seconds'])
    print('\n| image size | images | batch | ' + ' | '.join(f'{n} s' for n in names)
          + ' | after / before | inference copy / switchable, same precision | loss / accuracy |')
    print('| --- ' * (len(names) + 6) + '|')
    for r in rows:
        figures = ', '.join(f'{loss:.4f} / {acc:.3f}' for loss, acc in r['figures'].values())
        print(f"| {r['image_size']} px | {r['images']} | {r['batch_size']} | "
              + ' | '.join(f"{r['seconds'][n]:.2f}" for n in names)
              + f" | {r['speedup']:.2f}x | {r['copy_speedup']:.2f}x | {figures} |")


def run(argv):
    argv = list(argv)
    sizes = [int(s) for s in option(argv, 'sizes', '32,64').split(',')]
    valid, windows = int(option(argv, 'valid', '500')), int(option(argv, 'windows', '5'))
    cfg = settings.load_config(['model=resnet50', 'dataset_name=cifar_32', *argv])
    rows = []
    for size in sizes:
        rows.append(compare(cfg, size, valid, windows))
        print(f"{size} px: after / before {rows[-1]['speedup']:.2f}x", flush=True)
    report(rows, cfg)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, 'eval_pass.json'), 'w') as f:
        json.dump({'config': {k: cfg[k] for k in ('use_se', 'activation_fn', 'mixed_precision')},
                   'rows': rows}, f, indent=1)


if __name__ == '__main__':
    tf.compat.v1.disable_eager_execution()  # as main.py runs
    argv = sys.argv[1:]
    with performance_docs.published(__file__, argv):
        run(argv)
