"""train() and sweep(): main.py and experiments.py in a child process, its
console lines streamed, its result read back from the files it wrote."""
import collections
import csv
import dataclasses
import os
import signal
import subprocess
import sys
import threading

import constant
from trainer.config import settings
from trainer.runs import history
from trainer.sweeps import plan

KEPT_LINES = 2000  # of a child's console, kept with its result (the newest): bounded however long it runs
INTERRUPT_WAIT_S = 120  # after the first interrupt, for the child to save its checkpoint; a second one kills it
SWEEP_FILES = ('results.md', 'results.csv', 'validation.pdf', 'report.md', 'report.pdf')


class RunFailed(RuntimeError):
    """A child command ended with an exit status other than 0: its one-line
    error where it gave one (exit status 2: something the user can fix).
    `exit_status`, `console` (its last lines) and `result` (the Run or Sweep
    as its files hold it, e.g. a diverged run's history) come with it."""

    def __init__(self, message, exit_status, console, result):
        super().__init__(message)
        self.exit_status, self.console, self.result = exit_status, console, result


@dataclasses.dataclass
class Run:
    """A trained run as its files hold it. `record`: its history.json (epochs,
    config, best, test, data, cost, who trained it); `files`: the paths of
    what it wrote that exist (directory, history, plot, filters, evaluation,
    class activation maps); `console`: the newest lines the child printed."""
    name: str
    dataset_name: str
    directory: str
    record: dict
    files: dict
    console: list = dataclasses.field(default_factory=list, repr=False)

    @property
    def history(self):
        """One row per epoch: train / valid loss and accuracy, learning rate, times."""
        return self.record.get('epochs', [])

    @property
    def best(self):
        """The best validation epoch: epoch, valid and test loss and accuracy, checkpoint."""
        return self.record.get('best', {})

    @property
    def test(self):
        """The final weights on the test split: epoch, loss, accuracy."""
        return self.record.get('test', {})

    @property
    def config(self):
        """The settings the run was trained with."""
        return self.record.get('config', {})


@dataclasses.dataclass
class Sweep:
    """A sweep's results as its files hold them: `table` (the rows of
    results.csv, as text), `runs` (a Run per configuration and seed, in the
    grid's order), `files` (results and report files that exist)."""
    grid: str
    directory: str
    table: list
    runs: list
    files: dict
    console: list = dataclasses.field(default_factory=list, repr=False)


# --- the commands --------------------------------------------------------------------

def train(echo=True, **overrides):
    """Runs main.py with `overrides` as key=value; returns the Run. `echo`:
    print the child's console lines. RunFailed where it failed (a wrong
    input, a diverged run), KeyboardInterrupt after an interrupted run has
    saved its checkpoint."""
    args = arguments(overrides)
    cfg = settings.checked_config(args)
    status, lines = run_child(script('main.py'), args, echo)
    found = run_of(cfg, constant.run_name(cfg), lines)
    return finished('main.py', status, lines, found)


def sweep(grid=None, echo=True, **overrides):
    """Runs experiments.py on `grid` (a name of constant.py's
    experiment_grids; None: experiment_grid's) with `overrides` as
    key=value; returns the Sweep. The whole grid is checked here first."""
    if grid is not None:
        overrides = {'experiment_grid': grid, **overrides}
    args = arguments(overrides)
    grid, runs = plan.checked_plan(args)
    status, lines = run_child(script('experiments.py'), args, echo)
    return finished('experiments.py', status, lines, sweep_of(grid, runs, lines))


def arguments(overrides):
    """{key: value} as the key=value arguments the commands take: each value
    as a Python literal, which they read back as the same value."""
    return [f'{key}={os.fspath(value) if isinstance(value, os.PathLike) else value!r}'
            for key, value in overrides.items()]


def script(name):
    return os.path.join(constant.PROJECT_DIR, name)


def finished(command, status, lines, result):
    """`result`, or RunFailed saying why the command did not end well."""
    if status == 0:
        return result
    errors = [index for index, line in enumerate(lines) if line.startswith('error: ')]
    if status == 2 and errors:  # the error and what follows it (a list of files to provide)
        message = '\n'.join(lines[errors[-1]:])[len('error: '):]
    else:
        tail = ' | '.join(lines[-3:]) or 'no output'
        message = f'{command} ended with exit status {status}; its last lines: {tail}'
    raise RunFailed(message, status, lines, result)


def run_child(path, args, echo, environ=None):
    """(exit status, its newest console lines) of `python path args...`,
    stdout and stderr as one stream, each line printed as it comes where
    `echo`. The child has a session of its own, so a notebook's interrupt
    reaches it once, forwarded here: it saves its checkpoint and ends,
    then KeyboardInterrupt goes on."""
    env = {**(os.environ if environ is None else environ), 'PYTHONUNBUFFERED': '1'}
    kept = collections.deque(maxlen=KEPT_LINES)
    with subprocess.Popen([sys.executable, path, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, env=env, text=True, errors='replace', bufsize=1,
                          start_new_session=True) as child:
        try:
            copy_lines(child.stdout, kept, echo)
        except KeyboardInterrupt:
            stop_child(child, kept, echo)
            raise
        status = child.wait()
    return status, list(kept)


def copy_lines(stream, kept, echo):
    for line in stream:
        line = line.rstrip('\n')
        kept.append(line)
        if echo:
            print(line, flush=True)


def stop_child(child, kept, echo):
    """Asks the child to stop as Ctrl-C would, shows what it says while it
    saves its checkpoint, and kills it on a second interrupt or after
    INTERRUPT_WAIT_S."""
    child.send_signal(signal.SIGINT)
    deadline = threading.Timer(INTERRUPT_WAIT_S, child.kill)
    deadline.start()
    try:
        copy_lines(child.stdout, kept, echo)
    except KeyboardInterrupt:
        child.kill()
    finally:
        deadline.cancel()
        child.wait()
    if echo:
        print(f'Interrupted: the run saved its checkpoint where it stood (exit status {child.returncode}); '
              f'resume=True continues it', flush=True)


# --- what the runs wrote -------------------------------------------------------------

def run_of(cfg, name, lines=()):
    """The Run of config `cfg` named `name`, from its files."""
    dirs = constant.derived_dirs(cfg)
    directory = os.path.join(dirs['RUNS_SAVE_DIR'], name)
    record = history.load(directory) or {'epochs': []}
    candidates = {
        'directory': directory,
        'history': history.paths(directory)[0],
        'plot': os.path.join(dirs['PLOT_TRAINING_SAVE_DIR'], f'{name}.pdf'),
        'filters': os.path.join(dirs['FILTERS_SAVE_DIR'], name, 'filters.png'),
        'evaluation': os.path.join(directory, 'evaluation', 'test-best'),
        'class_activation_maps': os.path.join(directory, 'class_activation_maps.pdf'),
    }
    files = {key: path for key, path in candidates.items() if os.path.exists(path)}
    return Run(name, cfg['dataset_name'], directory, record, files, list(lines))


def sweep_of(grid, runs, lines=()):
    """The Sweep of the planned `runs` of `grid`, from their files."""
    directory = plan.results_dir(grid, runs)
    files = {name: os.path.join(directory, name) for name in SWEEP_FILES
             if os.path.isfile(os.path.join(directory, name))}
    table = []
    if 'results.csv' in files:
        with open(files['results.csv'], encoding='utf-8', newline='') as table_file:
            table = list(csv.DictReader(table_file))
    members = [run_of(cfg, cfg['run_name']) for cfg in runs]
    return Sweep(grid, directory, table, members, files, list(lines))
