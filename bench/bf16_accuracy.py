"""Does bfloat16 train as well as float32? The measurement behind
mixed_precision='auto' on a CPU with native bfloat16 (foundation/machine.py's
CPU_BFLOAT16_AUTO), to be answered for a network before 'auto' turns it on.

    python -m bench.bf16_accuracy data_dir=../shared/datasets/mnist [seeds=1,2,3]
        [networks=resnet50,resnet50_se] [activations=relu,selu] [key=value ...]

Trains main.py runs of max_epochs=1 on MNIST (dataset_name=... for another)
on the CPU: every network and activation once per seed in float32 and once
per seed in bfloat16 (mixed_precision=True: oneDNN's bfloat16, reductions,
gates and softmax in float32, no loss scale on a CPU); equal seeds give
equal initial weights and batches. From each run's
history: validation accuracy and loss, and the final training loss (the
running mean of the epoch). The seed-to-seed spread of a figure is its range
(max - min) over the float32 seeds. bfloat16 falls short where its mean is
worse than float32's mean by more than that spread, or where a run diverged;
a network keeps 'auto' off where any activation falls short. One seed gives
no spread and so no verdict.

Prints a table and the verdicts, writes bench/results/bf16_accuracy.json.
Time: a 1-epoch ResNet50 run on MNIST is several minutes per run on a CPU;
the default (2 networks x 2 activations x 2 precisions x 3 seeds) is 24 runs.
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

import tensorflow as tf

import constant
import main
from bench import performance_docs
from bench.throughput import RESULTS, option
from foundation import machine
from trainer.config import settings
from trainer.runs import history

NETWORKS = {'resnet50': ('resnet50', False), 'resnet50_se': ('resnet50', True),
            'custom_model': ('custom_model', False), 'custom_model_se': ('custom_model', True)}
PRECISIONS = {'float32': False, 'bfloat16': True}
# figure -> +1 where higher is better, -1 where lower is
FIGURES = {'valid_accuracy': 1, 'valid_loss': -1, 'train_running_loss': -1}


def run_config(argv, network, activation, precision, seed, root):
    model, use_se = NETWORKS[network]
    return settings.load_config([
        'dataset_name=mnist', 'max_epochs=1', 'download=False', *argv,
        f'model={model}', f'use_se={use_se}', f'activation_fn={activation}',
        f'mixed_precision={PRECISIONS[precision]}', f'seed={seed}',
        # oneDNN's bfloat16 is the CPU's: on a GPU machine mixed_precision means float16
        'device=/device:CPU:0', f'datasets_root={root}',
        f'run_name={network}_{activation}_{precision}_seed{seed}'])


def train_once(cfg):
    """One main.py run; its figures (None for a run that did not finish), the
    precision line it printed and its seconds."""
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) as out:
        status = main.train(cfg)
    seconds = time.perf_counter() - started
    said = [line for line in out.getvalue().splitlines() if line.startswith('precision: ')]
    run_dir = os.path.join(constant.derived_dirs(cfg)['RUNS_SAVE_DIR'], cfg['run_name'])
    record = history.load(run_dir) or {'epochs': []}
    last = record['epochs'][-1] if status == 0 and record['epochs'] else None
    return {'figures': {k: last[k] for k in FIGURES} if last else None,
            'precision_line': said[0] if said else None, 'seconds': seconds, 'status': status,
            'diverged': record.get('diverged')}


def summary(runs, figure):
    """(mean, range) of a figure over the finished runs; None if none finished."""
    values = [r['figures'][figure] for r in runs if r['figures']]
    return (statistics.mean(values), max(values) - min(values)) if values else None


def shortfalls(float32_runs, bfloat16_runs):
    """What bfloat16 falls short in against float32: [] if nothing, None if
    there is no spread to judge by (fewer than two float32 seeds)."""
    if any(r['figures'] is None for r in bfloat16_runs):
        return ['a bfloat16 run did not finish']
    if len([r for r in float32_runs if r['figures']]) < 2:
        return None
    short = []
    for figure, better in FIGURES.items():
        (f32, spread), (bf16, _) = summary(float32_runs, figure), summary(bfloat16_runs, figure)
        if better * (f32 - bf16) > spread:
            short.append(f'{figure} {bf16:.4f} against {f32:.4f} (spread {spread:.4f})')
    return short


def verdicts(results, networks, activations):
    """network -> (keep bfloat16 under 'auto': True / False / None for no
    verdict, the reasons)."""
    out = {}
    for network in networks:
        reasons, judged = [], True
        for act in activations:
            short = shortfalls(results[network][act]['float32'], results[network][act]['bfloat16'])
            judged = judged and short is not None
            reasons += [f'{act}: {s}' for s in short or []]
        out[network] = (False if reasons else (True if judged else None), reasons)
    return out


def cell(runs, figure, scale=1.0, digits=4):
    found = summary(runs, figure)
    if found is None:
        return 'did not finish'
    mean, spread = found
    return f'{scale * mean:.{digits}f} (range {scale * spread:.{digits}f})'


def report(results, networks, activations, seeds):
    print(f'\nfloat32 against bfloat16, 1 epoch, seeds {seeds}: mean (range over the seeds)')
    print('\n| network | activation | precision | valid accuracy % | valid loss | '
          'final training loss | seconds per run |')
    print('| --- | --- | --- | --- | --- | --- | --- |')
    for network in networks:
        for act in activations:
            for precision in PRECISIONS:
                runs = results[network][act][precision]
                seconds = statistics.mean(r['seconds'] for r in runs)
                print(f"| {network} | {act} | {precision} | "
                      f"{cell(runs, 'valid_accuracy', 100, 2)} | {cell(runs, 'valid_loss')} | "
                      f"{cell(runs, 'train_running_loss')} | {seconds:.0f} |")
    print()
    for network, (keep, reasons) in verdicts(results, networks, activations).items():
        if keep is None:
            print(f'{network}: no verdict: one float32 seed gives no seed-to-seed spread')
        else:
            print(f"{network}: bfloat16 {'as good as float32: may be on' if keep else 'falls short: off'}"
                  + ''.join(f'\n  {r}' for r in reasons))


def run(argv):
    argv = list(argv)
    seeds = [int(s) for s in option(argv, 'seeds', '1,2,3').split(',')]
    networks = option(argv, 'networks', 'resnet50,resnet50_se').split(',')
    activations = option(argv, 'activations', 'relu,selu').split(',')
    if not machine.cpu_native_bfloat16():
        print('warning: this CPU has no native bfloat16 (avx512_bf16 or amx_bf16): oneDNN '
              'emulates it, so the accuracy is bfloat16\'s but the runs are slow', flush=True)
    results = {n: {a: {p: [] for p in PRECISIONS} for a in activations} for n in networks}
    with tempfile.TemporaryDirectory(prefix='bench_bf16_') as root:
        for network in networks:
            for act in activations:
                for seed in seeds:
                    for precision in PRECISIONS:
                        got = train_once(run_config(argv, network, act, precision, seed, root))
                        results[network][act][precision].append(got)
                        print(f'{network} {act} {precision} seed {seed}: {got["figures"]} '
                              f'({got["seconds"]:.0f} s; {got["precision_line"]})', flush=True)
    report(results, networks, activations, seeds)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, 'bf16_accuracy.json'), 'w') as f:
        json.dump({'seeds': seeds, 'argv': argv, 'results': results,
                   'verdicts': verdicts(results, networks, activations)}, f, indent=1)


if __name__ == '__main__':
    tf.compat.v1.disable_eager_execution()  # as main.py runs
    argv = sys.argv[1:]
    with performance_docs.published(__file__, argv):
        run(argv)
