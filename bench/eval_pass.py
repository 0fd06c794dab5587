"""ResNet50's evaluation pass before and after issue 22: through the network
whose batch norms switch on is_training (a tf.cond each, what evaluation ran
before) and through the copy fixed in inference mode (what it runs now).

    python -m bench.eval_pass [sizes=32,64] [valid=500] [windows=5] [key=value ...]

Both go through passes.evaluate over the same validation split of synthetic
images, in one graph and one session, alternating pass by pass after a warm-up
pass each, so that load from elsewhere on this shared machine hits both
alike. Prints a table (median seconds per pass; the speed-up is the median of
the ratios within pairs) and writes bench/results/eval_pass.json.
"""
import json
import os
import statistics
import sys
import time
import types

from trainer import tf_quiet  # noqa: E402

tf_quiet.import_tensorflow_quietly()

import tensorflow as tf  # noqa: E402

from bench.throughput import RESULTS, load_line, option, project_session, synthetic_arrays  # noqa: E402
from trainer import passes, settings  # noqa: E402


def switchable_path(model):
    """The model as passes.evaluate saw it before the inference copy: its
    figures from the network that follows is_training (False by default)."""
    return types.SimpleNamespace(eval_loss=model.loss, eval_accuracy=model.accuracy,
                                 batch_size=model.batch_size)


def timed_pass(session, model, source):
    """(seconds, (loss, accuracy)) of one evaluation of the validation split."""
    started = time.perf_counter()
    figures = passes.evaluate(session, model, source, 'valid')
    return time.perf_counter() - started, figures


def compare(cfg, size, valid, windows):
    """One row: both paths on `valid` images of size x size x 3."""
    arrays = synthetic_arrays((size, size, 3), 10 * valid, cfg['output_shape'], seed=0)
    with project_session(cfg, arrays) as (session, source, model):
        paths = {'switchable': switchable_path(model), 'inference copy': model}
        for path in paths.values():
            timed_pass(session, path, source)  # warm-up: grappler, oneDNN's kernel choices
        pairs = [{name: timed_pass(session, path, source) for name, path in paths.items()}
                 for _ in range(windows)]
    seconds = {name: statistics.median(p[name][0] for p in pairs) for name in paths}
    return {'image_size': size, 'images': arrays.num_examples('valid'),
            'batch_size': cfg['eval_batch_size'], 'seconds': seconds,
            'speedup': statistics.median(p['switchable'][0] / p['inference copy'][0] for p in pairs),
            # both paths must agree on what they measure
            'figures': {name: pairs[-1][name][1] for name in paths}}


def report(rows, cfg):
    print(f"\nResNet50 evaluation pass ({'SE, ' if cfg['use_se'] else ''}{cfg['activation_fn']}, "
          f"mixed_precision={cfg['mixed_precision']}), median seconds per pass; {load_line()}")
    print('\n| image size | images | batch | switchable (tf.cond per BN) s | inference copy s | '
          'speed-up | loss / accuracy (both) |')
    print('| --- | --- | --- | --- | --- | --- | --- |')
    for r in rows:
        (loss, acc), (loss2, acc2) = r['figures'].values()
        print(f"| {r['image_size']} px | {r['images']} | {r['batch_size']} | "
              f"{r['seconds']['switchable']:.2f} | {r['seconds']['inference copy']:.2f} | "
              f"{r['speedup']:.2f}x | {loss:.4f} / {acc:.3f}, {loss2:.4f} / {acc2:.3f} |")


def run(argv):
    argv = list(argv)
    sizes = [int(s) for s in option(argv, 'sizes', '32,64').split(',')]
    valid, windows = int(option(argv, 'valid', '500')), int(option(argv, 'windows', '5'))
    cfg = settings.load_config(['model=resnet50', 'dataset_name=cifar_32', *argv])
    rows = []
    for size in sizes:
        rows.append(compare(cfg, size, valid, windows))
        print(f"{size} px: {rows[-1]['speedup']:.2f}x", flush=True)
    report(rows, cfg)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, 'eval_pass.json'), 'w') as f:
        json.dump({'config': {k: cfg[k] for k in ('use_se', 'activation_fn', 'mixed_precision')},
                   'rows': rows}, f, indent=1)


if __name__ == '__main__':
    tf.compat.v1.disable_eager_execution()  # as main.py runs
    run(sys.argv[1:])
