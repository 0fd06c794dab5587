"""A sweep's plan: the runs of a grid with the command's overrides on top,
each config checked and named, and where their files go. No TensorFlow, so
that a mistake in the grid is found at once and the notebook API
(trainer/api/) knows a sweep's folders without building anything."""
import itertools
import os

import constant
from foundation.errors import ConfigError
from trainer.config import settings
from trainer.sweeps.names import experiment_name

# The sweep's own keys: the same for every run, checked once for the sweep.
SWEEP_KEYS = ('experiment_grids', 'experiment_grid', 'experiment_seeds', 'max_runs', 'workers', 'worker_index',
              'num_workers')


def grid_points(grid):
    """The configurations of a grid ({key: [values]} or a list of such) as
    {key: value} dicts, in order, each once."""
    points = []
    for part in grid if isinstance(grid, (list, tuple)) else [grid]:
        keys = list(part)
        for values in itertools.product(*(part[key] for key in keys)):
            point = dict(zip(keys, values))
            if point not in points:
                points.append(point)
    return points


def checked_plan(argv):
    """plan's runs, their 'auto' options left undecided: in time linear in
    the runs, without TensorFlow."""
    chosen = settings.checked_config(argv)
    overrides = settings.parse_overrides(argv, set(constant.config))
    if 'run_name' in overrides:
        raise ConfigError('run_name is chosen for each run by experiments.py; '
                                   'leave it out')
    grid = chosen['experiment_grid']
    points = grid_points(chosen['experiment_grids'][grid])
    seeds = chosen['experiment_seeds']
    sweep = {key: chosen[key] for key in SWEEP_KEYS}
    configurations = distinct_names(named_points(points, overrides, sweep))
    if seeds:
        if 'seed' in overrides or any('seed' in point for point in points):
            raise ConfigError(f"experiment_seeds={seeds} sets the seed of every run; "
                                       f"leave seed out of the arguments and of grid {grid!r}")
        points = [{**point, 'seed': seed} for point in points for seed in seeds]
    named = named_points(points, overrides, sweep)
    check_size(distinct_names(named), grid, configurations, seeds, chosen['max_runs'])
    runs, names = [], set()
    for point, (name, raw) in zip(points, named):
        try:  # the very config the run gets, its name included
            cfg = settings.checked_config([], base={**raw, 'run_name': name}, checked=SWEEP_KEYS)
        except ConfigError as error:
            raise ConfigError(f'grid {grid!r}, configuration {point}: {error}') from None
        if name not in names:  # overrides can merge points
            names.add(name)
            runs.append(cfg)
    return grid, runs


def named_points(points, overrides, sweep):
    """(run name, raw config) of each point: constant.config, the point,
    the overrides and the sweep's own keys on top."""
    raws = [{**constant.config, **point, **overrides, **sweep} for point in points]
    return [(experiment_name(raw), raw) for raw in raws]


def distinct_names(named):
    """How many runs named points make: points of the same name are one run."""
    return len({name for name, _ in named})


def check_size(runs, grid, configurations, seeds, max_runs):
    """ConfigError where the sweep has more runs than max_runs allows."""
    if max_runs is None or runs <= max_runs:
        return
    parts = f'{configurations} configurations' + (f' x {len(seeds)} seeds' if seeds else '')
    raise ConfigError(f'the sweep is {runs} runs (grid {grid}: {parts}), more than '
                      f'max_runs={max_runs}; set max_runs={runs} (or None) to run them all')


def run_dir(cfg):
    """The folder of a planned run (its config names it)."""
    return os.path.join(constant.derived_dirs(cfg)['RUNS_SAVE_DIR'], cfg['run_name'])


def results_dir(grid, runs):
    """Where a sweep's tables and report go: SAVE_DIR/experiments/<grid>."""
    return os.path.join(constant.derived_dirs(runs[0])['SAVE_DIR'], 'experiments', grid)


def one_precision_per_network(planned, fitted):
    """The fitted configs of a sweep's runs (`fitted`, from the `planned`
    ones, 'auto' undecided), with every run of a model in one precision: the
    arms of a comparison (SE or not, one activation or another) differ in
    nothing else. Where 'auto' picked bfloat16 for some runs of a model and
    float32 for others, all of that model's take float32, the precision every
    network is measured in; a precision the user set is kept. Returns the
    configs and a line saying what changed, or None."""
    by_model = {}
    for raw, cfg in zip(planned, fitted):
        if raw['mixed_precision'] == 'auto':
            by_model.setdefault(cfg['model'], set()).add(bool(cfg['mixed_precision']))
    mixed = sorted(model for model, chosen in by_model.items() if len(chosen) > 1)
    if not mixed:
        return fitted, None
    fitted = [{**cfg, 'mixed_precision': False}
              if raw['mixed_precision'] == 'auto' and cfg['model'] in mixed else cfg
              for raw, cfg in zip(planned, fitted)]
    return fitted, (f"precision: float32 for every run of {', '.join(mixed)}: 'auto' would train some of "
                    f"them in a low precision and others not, and the arms of a comparison must share one "
                    f"(mixed_precision=True trains them all in it)")
