"""Soak: a run killed with SIGKILL at random moments, resumed after each kill,
against the same run uninterrupted.

    python -m bench.kill_soak [kills=20] [max_epochs=40] [key=value ...]

Trains digits (by default) with `python main.py ... resume=True`, kills the
process after a random number of its output lines (mid-epoch, mid-evaluation,
while writing checkpoints or history), `kills` times, then lets the last
resume finish. Then trains the same run once without interruption. Prints a
table: the epochs the history holds, and the test loss of both runs, which a
seeded run reproduces, and every figure of every epoch's row that differs
between them (their timings and the running mean of an epoch's training loss
aside: a resumed epoch's mean is of the images trained after the resume).
Writes bench/results/kill_soak.json.
"""
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

from bench import performance_docs

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(PROJECT_DIR, 'bench', 'results')


def main_command(root, args):
    return [sys.executable, os.path.join(PROJECT_DIR, 'main.py'), f'datasets_root={root}', *args]


def killed_after(root, args, lines):
    """Runs main.py and kills it with SIGKILL after `lines` lines of output;
    returns the last line it printed (None if it ended first)."""
    process = subprocess.Popen(main_command(root, args), stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    read = []
    try:
        read = [line for _, line in zip(range(lines), process.stdout)]
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    return read[-1].strip() if len(read) == lines else None  # None: it ended first


def history_of(root, dataset):
    path = os.path.join(root, dataset, 'save_dir', 'runs', 'custom_model_relu', 'history.json')
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def unreproducible(key):
    """A row's figures that differ between a killed and an uninterrupted run by nature."""
    return 'seconds' in key or 'running' in key


def differing_figures(killed, alone):
    """[(epoch, figure, killed's value, uninterrupted's)] of the rows' figures that differ."""
    differing = []
    for mine, theirs in zip(killed['epochs'], alone['epochs']):
        for key in sorted(set(mine) | set(theirs)):
            if not unreproducible(key) and mine.get(key) != theirs.get(key):
                differing.append((mine.get('epoch'), key, mine.get(key), theirs.get(key)))
    return differing


def run(argv):
    options = dict(arg.split('=', 1) for arg in argv if arg.startswith(('kills=', 'max_epochs=')))
    kills, epochs = int(options.get('kills', 20)), int(options.get('max_epochs', 40))
    rest = [a for a in argv if not a.startswith(('kills=', 'max_epochs='))]
    args = [f'max_epochs={epochs}', 'log_every=500', *rest]
    dataset = next((a.split('=', 1)[1] for a in rest if a.startswith('dataset_name=')), 'digits')
    rng = random.Random(0)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix='kill_soak_') as root:
        moments = []
        for kill in range(kills):
            # About 8 lines an epoch, and a resume trains again what a kill lost:
            # kills about epochs / kills epochs apart spread over the whole run.
            lines = rng.randint(2, epochs * 8 // kills + 2)
            moments.append(killed_after(os.path.join(root, 'killed'), [*args, 'resume=True'], lines))
            print(f'kill {kill + 1}: after {lines} lines, at: {moments[-1]}', flush=True)
        final = subprocess.run(main_command(os.path.join(root, 'killed'), [*args, 'resume=True']),
                               capture_output=True, text=True)
        alone = subprocess.run(main_command(os.path.join(root, 'alone'), args), capture_output=True,
                               text=True)
        if final.returncode or alone.returncode:
            raise SystemExit(f'a run failed: {final.stderr[-2000:]} {alone.stderr[-2000:]}')
        killed, uninterrupted = (history_of(os.path.join(root, r), dataset) for r in ('killed', 'alone'))
    result = {'kills': kills, 'max_epochs': epochs, 'kill_moments': moments,
              'epochs_in_history': [e['epoch'] for e in killed['epochs']],
              'test_loss_killed': killed['test']['loss'],
              'test_loss_uninterrupted': uninterrupted['test']['loss'],
              'figures_compared': sum(sum(not unreproducible(k) for k in row) for row in uninterrupted['epochs']),
              'differing_figures': differing_figures(killed, uninterrupted),
              'seconds': time.perf_counter() - started}
    contiguous = result['epochs_in_history'] == list(range(1, epochs + 1))
    differing = result['differing_figures']
    print(f"\n{dataset}, {epochs} epochs: killed with SIGKILL {kills} times at random lines of its output, "
          f"resumed after each, against the same run uninterrupted (`python -m bench.kill_soak`)")
    print(f"| run | epochs in history | test loss | figures of the epochs' rows differing |\n"
          f"| --- | --- | --- | --- |\n"
          f"| killed {kills} times, resumed | 1..{epochs} {'exactly' if contiguous else 'NOT: '}"
          f"{'' if contiguous else result['epochs_in_history']} | {result['test_loss_killed']:.6f} | "
          f"{len(differing)} of {result['figures_compared']} |\n"
          f"| uninterrupted | 1..{epochs} | {result['test_loss_uninterrupted']:.6f} | |")
    for epoch, key, mine, theirs in differing[:20]:
        print(f'  epoch {epoch} {key}: {mine} killed, {theirs} uninterrupted')
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, 'kill_soak.json'), 'w') as f:
        json.dump(result, f, indent=1)
    return 0 if contiguous and not differing else 1


if __name__ == '__main__':
    argv = sys.argv[1:]
    with performance_docs.published(__file__, argv):
        status = run(argv)
    sys.exit(status)
