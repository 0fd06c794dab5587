"""The same epochs trained by one process and by a loopback job of two
workers (cluster.py), back to back: wall time of the whole command and the
chief's training seconds per epoch. The job runs twice: with TensorFlow's
default thread pools (each worker sizes them to every core of the machine)
and with one intra-op thread per worker (TF_NUM_INTRAOP_THREADS=1: a core
each), which tells the cores' contention from the all-reduce's cost.

    python -m bench.loopback_job                                   # digits, 3 epochs
    python -m bench.loopback_job dataset_name=mnist data_dir=../shared/datasets/mnist max_epochs=1

Prints a table and writes bench/results/loopback_job.json.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from foundation import tf_quiet

tf_quiet.import_tensorflow_quietly()

import constant
from bench import performance_docs
from tests import fixtures
from trainer.config import settings


def run_job(args, workers, root, threads=None):
    """Runs `python main.py args` as `workers` processes (1: alone), each with
    `threads` intra-op threads (None: TensorFlow's default); returns (wall
    seconds, the chief's history record)."""
    addresses = fixtures.loopback_addresses(workers)
    command = [sys.executable, os.path.join(PROJECT_DIR, 'main.py'), f'datasets_root={root}', *args]
    started = time.perf_counter()
    processes = []
    for index in range(workers):
        env = dict(os.environ)
        if threads:
            env['TF_NUM_INTRAOP_THREADS'] = str(threads)
        if workers > 1:
            env['TF_CONFIG'] = fixtures.tf_config(addresses, index)
        processes.append(subprocess.Popen(command, env=env, cwd=PROJECT_DIR, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, text=True))
    try:
        for process in processes:
            _, err = process.communicate(timeout=3600)
            if process.returncode:
                raise RuntimeError(f'{" ".join(command)} failed:\n{err[-2000:]}')
    finally:
        for process in processes:
            process.kill()
    wall = time.perf_counter() - started
    cfg = settings.load_config(args + [f'datasets_root={root}'])
    run = os.path.join(constant.derived_dirs(cfg)['RUNS_SAVE_DIR'], constant.run_name(cfg))
    with open(os.path.join(run, 'history.json')) as f:
        return wall, json.load(f)


def main(argv):
    args = argv or ['max_epochs=3']
    rows = []
    for workers, threads in ((1, None), (2, None), (2, 1)):
        with tempfile.TemporaryDirectory() as root:
            wall, record = run_job(args, workers, root, threads)
        epochs = record['epochs']
        train = [e['train_seconds'] for e in epochs]
        rows.append({'workers': workers, 'intra_op_threads': threads or 'default', 'wall_s': wall,
                     'train_s_per_epoch': sum(train) / len(train), 'last_train_s': train[-1],
                     'valid_accuracy': epochs[-1]['valid_accuracy'], 'epochs': len(epochs)})
    base = rows[0]['train_s_per_epoch']
    print(f"{'workers':>7} | {'threads':>7} | {'wall s':>7} | {'train s/epoch':>13} | {'vs one':>6} | "
          f"{'last epoch s':>12} | {'valid acc':>9}")
    for row in rows:
        print(f"{row['workers']:>7} | {row['intra_op_threads']:>7} | {row['wall_s']:7.1f} | "
              f"{row['train_s_per_epoch']:13.2f} | {base / row['train_s_per_epoch']:5.2f}x | "
              f"{row['last_train_s']:12.2f} | {row['valid_accuracy']:9.4f}")
    os.makedirs(os.path.join(PROJECT_DIR, 'bench', 'results'), exist_ok=True)
    with open(os.path.join(PROJECT_DIR, 'bench', 'results', 'loopback_job.json'), 'w') as f:
        json.dump({'args': args, 'rows': rows}, f, indent=1)


if __name__ == '__main__':
    argv = sys.argv[1:]
    with performance_docs.published(__file__, argv):
        main(argv)
