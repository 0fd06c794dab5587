"""experiments.py before its first run: the sweep's size checked against
max_runs (in one line, before TensorFlow is asked anything), a plan made in
time linear in its runs, and how many runs there are and about how long they
take said first."""
import json

import pytest

import constant
import experiments
import main
from foundation import machine
from trainer.config import settings
from trainer.runs import history

SEEDS = f'experiment_seeds={list(range(1, 3001))}'


def test_a_sweep_beyond_max_runs_is_refused_in_one_line_before_anything_is_built(tmp_path, capsys,
                                                                                 monkeypatch):
    def never(*args):
        raise AssertionError('the sweep went on')
    monkeypatch.setattr(machine, 'fit_to_machine', never)  # asks TensorFlow for the GPU
    monkeypatch.setattr(main, 'train', never)
    assert experiments.cli([SEEDS, f'datasets_root={tmp_path}']) == 2
    assert capsys.readouterr().err == (
        'error: the sweep is 24000 runs (grid seed: 8 configurations x 3000 seeds), more than '
        'max_runs=100; set max_runs=24000 (or None) to run them all\n')
    assert list(tmp_path.iterdir()) == []


def test_max_runs_counts_runs_not_points_and_none_lifts_the_bound(monkeypatch):
    monkeypatch.setitem(constant.config, 'experiment_grids', {
        'big': {'learning_rate': [0.001 * i for i in range(1, 13)], 'batch_size': list(range(10, 20))},
        'merging': {'use_se': [False, True], 'max_epochs': list(range(1, 200))}})  # max_epochs: one run
    with pytest.raises(settings.ConfigError, match=r'^the sweep is 120 runs \(grid big: 120 '
                       r'configurations\), more than max_runs=100; set max_runs=120 \(or None\)'):
        experiments.plan(['experiment_grid=big'])
    assert len(experiments.plan(['experiment_grid=big', 'max_runs=120'])[1]) == 120
    assert len(experiments.plan(['experiment_grid=big', 'max_runs=None'])[1]) == 120
    assert len(experiments.plan(['experiment_grid=merging', 'max_runs=2'])[1]) == 2


@pytest.mark.parametrize('value, said', [('0', 'max_runs must be at least 1'),
                                         ('2.5', 'max_runs must be a whole number')])
def test_max_runs_is_a_whole_number_of_one_or_more(value, said):
    with pytest.raises(settings.ConfigError, match=said):
        settings.checked_config([f'max_runs={value}'])


def test_the_plan_checks_the_seeds_once_not_once_per_run(monkeypatch):
    """Each run's config was checked with the sweep's list of seeds in it:
    runs x seeds checks, quadratic in the seeds."""
    checks = []
    real = settings._is_whole
    monkeypatch.setattr(settings, '_is_whole', lambda *args: checks.append(1) or real(*args))

    def checks_for(seeds):
        checks.clear()
        runs = experiments.plan([f'experiment_seeds={list(range(1, seeds + 1))}', 'max_runs=None'])[1]
        assert len(runs) == 8 * seeds
        return len(checks)
    assert checks_for(200) <= 2.2 * checks_for(100)  # twice the runs, twice the checks


def write_record(cfg, epochs, seconds, done):
    saved = json.loads(json.dumps(settings.saved_config(cfg)))
    rows = [{'epoch': e, 'train_loss': 1.0, 'train_accuracy': 0.5, 'valid_loss': 1.0,
             'valid_accuracy': 0.5, 'epoch_seconds': seconds} for e in range(1, epochs + 1)]
    tested = {'test': {'epoch': epochs, 'loss': 1.0, 'accuracy': 0.5}} if done else {}
    record = {'config': saved, 'epochs': rows, **tested}
    history.save(experiments.run_dir(cfg), record)


def test_the_sweep_says_how_many_runs_and_how_long_from_the_epochs_of_earlier_runs(tmp_path):
    args = [f'datasets_root={tmp_path}', 'experiment_grid=se_ablation', 'max_epochs=3']
    grid, runs = experiments.plan(args)
    assert experiments.sweep_line(grid, runs) == (
        "Grid 'se_ablation': 5 runs on digits: 5 to train, time unknown (no run of their "
        "configurations has trained yet)")
    write_record(runs[0], 3, 2.0, done=True)
    write_record(runs[1], 1, 4.0, done=False)  # to resume: 2 epochs of 4 s
    assert experiments.sweep_line(grid, runs) == (
        "Grid 'se_ablation': 5 runs on digits: 1 complete, 4 to train, about 0:00:08 of epochs for "
        "1 of them (as earlier runs of their configurations timed them), time unknown for the other 3")

    grid, seeded = experiments.plan(args + ['experiment_grid=seed', 'experiment_seeds=[42, 7]',
                                            'use_se=False', 'model=custom_model'])
    assert [cfg['run_name'] for cfg in seeded] == ['custom_model_relu', 'custom_model_relu_seed-7',
                                                   'custom_model_selu', 'custom_model_selu_seed-7']
    write_record(seeded[2], 3, 10.0, done=True)
    assert experiments.sweep_line(grid, seeded) == (  # seed 7 timed by the runs of seed 42
        "Grid 'seed': 4 runs on digits: 2 complete, 2 to train, about 0:00:36 of epochs (as earlier "
        "runs of their configurations timed them)")
    for cfg in seeded[1::2]:
        write_record(cfg, 3, 1.0, done=True)
    assert experiments.sweep_line(grid, seeded) == "Grid 'seed': 4 runs on digits: all complete"
