"""Several processes sharing one sweep. The run lock is the coordination:
a worker trains a run only while it holds the run's lock, and decides what
the run needs (start, resume, nothing) under it, so no run is trained twice
and one left by a dead worker is resumed by the next that reaches it.

Three ways to have several: `python experiments.py ...` started by hand
any number of times (each takes the next run nobody holds), `workers=N`
(this module starts N such workers pinned to a GPU or to their share of the
CPU cores, and shows the sweep's progress), and fixed shares
(`worker_index` of `num_workers`, or a Slurm array's task of its tasks).
"""
import contextlib
import fcntl
import os
import socket
import subprocess
import sys
import time

from foundation.errors import ConfigError
from trainer.runs import folder

RESULTS_LOCK = '.results.lock'  # in a sweep's results folder: one worker writes the tables at a time
POLL_SECONDS = 2.0  # workers=N: how often the sweep's progress is looked at


# --- fixed shares: worker_index / num_workers, or a Slurm array -------------------

def fixed_share(cfg, environ=os.environ):
    """(index, count) of this worker's fixed share of the runs, or None:
    worker_index / num_workers where given, else the Slurm array task's
    place among its tasks (SLURM_ARRAY_TASK_ID, _MIN, _STEP, _COUNT)."""
    if cfg['worker_index'] is not None:
        return cfg['worker_index'], cfg['num_workers']
    if 'SLURM_ARRAY_TASK_ID' not in environ or cfg['workers'] > 1:
        return None
    task, low, step, count = (_slurm_number(environ, name, default) for name, default in (
        ('SLURM_ARRAY_TASK_ID', None), ('SLURM_ARRAY_TASK_MIN', 0), ('SLURM_ARRAY_TASK_STEP', 1),
        ('SLURM_ARRAY_TASK_COUNT', None)))
    index = (task - low) // max(step, 1)
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f'SLURM_ARRAY_TASK_ID={task} is not one of the {count} tasks of the array '
                          f'(from {low}, step {step}); set worker_index and num_workers instead')
    return index, count


def _slurm_number(environ, name, default):
    text = environ.get(name)
    if text is None and default is not None:
        return default
    if text is None or not text.isascii() or not text.isdigit() or len(text) > 9:
        shown = 'unset' if text is None else repr(text[:20])
        raise ConfigError(f'{name} ({shown}) is not a Slurm array task number; set worker_index '
                          f'and num_workers instead')
    return int(text)


def share_of(runs, share):
    """The runs of a fixed share (every count-th from index), or all."""
    if share is None:
        return list(runs)
    index, count = share
    return list(runs)[index::count]


def share_line(share, mine, runs):
    if share is None:
        return ''
    index, count = share
    return f'This worker takes share {index} of {count}: {len(mine)} of the {len(runs)} runs'


# --- claiming a run ----------------------------------------------------------------

@contextlib.contextmanager
def claimed(cfg):
    """Yields '' with cfg's run lock held by this process, or the text of
    its holder where another process holds it (nothing held then)."""
    run = folder.locate(cfg)
    try:
        lock = folder.Lock(run).__enter__()
    except folder.RunInUse:
        yield folder.holder(os.path.dirname(run.directory), run.name) or 'another process'
        return
    try:
        yield ''
    finally:
        lock.__exit__(None, None, None)


def held_elsewhere(cfg):
    """Whether another live process holds cfg's run: its lock names a holder
    other than this process, and not a process of this host that has ended
    (a killed holder leaves its name; the system has freed its lock)."""
    run = folder.locate(cfg)
    text = folder.holder(os.path.dirname(run.directory), run.name)
    if not text.startswith('process '):
        return False
    pid, host, _ = folder.parsed_holder(text)
    if pid is None:
        return True
    if host != socket.gethostname():
        return True  # another machine's: its lock alone tells, and it is held or about to be
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


@contextlib.contextmanager
def results_lock(out_dir):
    """One worker at a time writes a sweep's tables and report."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, RESULTS_LOCK), 'a', encoding='utf-8') as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        yield  # closing the file releases it


# --- workers=N on one machine ------------------------------------------------------

def pins(count, gpus, cpus):
    """[(environment, CPU set)] of each of `count` workers: one GPU each
    (round robin where there are fewer GPUs than workers), else the CPU cores
    split in contiguous parts (shared round robin where fewer than workers),
    with as many TensorFlow threads as a lone run has."""
    cpus = sorted(cpus)
    result = []
    for i in range(count):
        env = {folder.WORKER_ENV: f'{i + 1} of {count}'}
        if gpus:
            env['CUDA_VISIBLE_DEVICES'] = str(i % gpus)
            part = cpus
        elif count <= len(cpus):
            size, extra = divmod(len(cpus), count)
            start = i * size + min(i, extra)
            part = cpus[start:start + size + (i < extra)]
        else:
            part = [cpus[i % len(cpus)]]
        # TensorFlow splits its reductions by its thread count: a lone run's
        # count keeps each run's figures bit-equal to a lone run's.
        env.update(TF_NUM_INTRAOP_THREADS=str(len(cpus)), TF_NUM_INTEROP_THREADS=str(len(cpus)))
        result.append((env, part))
    return result


def pin_line(index, env, part):
    where = f"GPU {env['CUDA_VISIBLE_DEVICES']}" if 'CUDA_VISIBLE_DEVICES' in env else \
        f"CPU core{'s' if len(part) > 1 else ''} {','.join(map(str, part))}"
    return f'worker {index + 1}: {where}'


def start_workers(script, argv, count, gpus, log_dir):
    """Starts `count` workers of `script` with argv (workers=1), each pinned
    (pins) and writing to <log_dir>/worker-<i>.log; returns [(Popen, log path, line)]."""
    os.makedirs(log_dir, exist_ok=True)
    started = []
    for index, (env, part) in enumerate(pins(count, gpus, os.sched_getaffinity(0))):
        log = os.path.join(log_dir, f'worker-{index + 1}.log')
        with open(log, 'w', encoding='utf-8') as out:
            process = subprocess.Popen(
                [sys.executable, script, *argv, 'workers=1'], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env={**os.environ, **env},
                preexec_fn=lambda cpus=part: os.sched_setaffinity(0, cpus))
        started.append((process, log, pin_line(index, env, part)))
    return started


def wait_for(started, progress, poll=POLL_SECONDS):
    """Waits for the workers, printing progress() whenever it changes;
    stops them (SIGTERM, so that their runs checkpoint) where this process is
    interrupted. Returns the first non-zero exit status, else 0."""
    shown = None
    try:
        while any(p.poll() is None for p, _, _ in started):
            line = progress()
            if line != shown:
                print(line, flush=True)
                shown = line
            time.sleep(poll)
    finally:
        for process, _, _ in started:
            if process.poll() is None:
                process.terminate()
        for process, _, _ in started:
            process.wait()
    line = progress()
    if line != shown:
        print(line, flush=True)
    statuses = [128 - p.returncode if p.returncode < 0 else p.returncode for p, _, _ in started]
    for (_, log, _), status in zip(started, statuses):
        if status:
            print(f'worker with log {log} ended with exit status {status}; its last line: '
                  f'{last_line(log)}', file=sys.stderr, flush=True)
    return next((s for s in statuses if s), 0)


def last_line(path):
    with open(path, encoding='utf-8', errors='replace') as f:
        lines = [line.strip() for line in f if line.strip()]
    return lines[-1] if lines else '(none)'
