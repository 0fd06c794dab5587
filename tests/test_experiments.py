"""experiments.py: grids, run names, skipping and resuming, the results table."""
import csv
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import constant
import experiments
from foundation.data import loaders
from trainer.config import settings
from trainer.runs import folder, weights
from trainer.sweeps import plan, results
from trainer.training import callbacks, passes, training_graph

v1 = tf.compat.v1
PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_grid_points_are_every_combination_of_a_dict_and_the_union_of_a_list():
    assert plan.grid_points({'model': ['a', 'b'], 'use_se': [False, True]}) == [
        {'model': 'a', 'use_se': False}, {'model': 'a', 'use_se': True},
        {'model': 'b', 'use_se': False}, {'model': 'b', 'use_se': True}]
    assert plan.grid_points([{'use_se': [False, True]}, {'use_se': [True]},
                                    {'use_se': [True], 'se_squeeze': ['max']}]) == [
        {'use_se': False}, {'use_se': True}, {'use_se': True, 'se_squeeze': 'max'}]


def test_the_default_grid_is_the_seeds_eight_runs_under_main_pys_names():
    grid, runs = experiments.plan([])
    assert grid == 'seed'
    assert [cfg['run_name'] for cfg in runs] == [
        f'{model}{se}_{af}' for model in ('custom_model', 'resnet50') for se in ('', '_se')
        for af in ('relu', 'selu')]
    # the same names main.py gives, so a sweep reuses main.py runs of the same config
    assert all(cfg['run_name'] == constant.run_name({**cfg, 'run_name': None}) for cfg in runs)


@pytest.mark.parametrize('grid, size', [('seed', 8), ('se_ablation', 5), ('se_ratio', 6),
                                        ('se_stages', 5), ('se_integration', 5)])
def test_every_grid_of_constant_py_plans_the_runs_the_readme_lists(grid, size):
    """A grid with a configuration settings refuses, or two points that name
    the same run, would fail only when a user starts it."""
    _, runs = experiments.plan([f'experiment_grid={grid}'])
    names = [cfg['run_name'] for cfg in runs]
    assert len(names) == size and len(set(names)) == size, names


def test_overrides_apply_to_every_run_and_win_over_the_grid():
    _, runs = experiments.plan(['dataset_name=mnist', 'max_epochs=3', 'model=resnet50'])
    assert len(runs) == 4  # model=resnet50 merged the custom_model points into these
    assert {cfg['model'] for cfg in runs} == {'resnet50'}
    assert all(cfg['dataset_name'] == 'mnist' and cfg['max_epochs'] == 3 for cfg in runs)


def test_run_names_carry_the_knobs_that_differ_from_constant_py():
    _, runs = experiments.plan(['experiment_grid=se_integration'])
    assert [cfg['run_name'] for cfg in runs] == [
        'resnet50_relu', 'resnet50_se_relu', 'resnet50_se_relu_se_integration-pre',
        'resnet50_se_relu_se_integration-post', 'resnet50_se_relu_se_integration-identity']
    _, runs = experiments.plan(['learning_rate=0.01', 'se_squeeze=max', 'max_epochs=2'])
    names = [cfg['run_name'] for cfg in runs]
    assert 'custom_model_relu_learning_rate-0.01' in names  # SE knobs only where SE is used
    assert 'resnet50_se_relu_se_squeeze-max_learning_rate-0.01' in names


def test_a_configuration_of_the_grid_that_cannot_work_is_refused_before_any_run():
    # r = 128 suits SE on 256 maps and more, not SE-PRE on stage 2's 64 input maps
    with pytest.raises(settings.ConfigError, match=r"grid 'se_integration', configuration "
                       r".*'se_integration': 'pre'}: se_r=128 .* choose se_r <= 64"):
        experiments.plan(['experiment_grid=se_integration', 'se_r=128'])
    with pytest.raises(settings.ConfigError, match='run_name is chosen for each run'):
        experiments.plan(['run_name=mine'])
    with pytest.raises(settings.ConfigError, match="experiment_grid='nope' is not valid"):
        experiments.plan(['experiment_grid=nope'])


def test_run_names_too_long_for_a_file_keep_their_start_and_a_digest_of_the_whole():
    """lr_boundaries=[1, ..., 79] made a 260-character name: 'File name too
    long' in the first run; the plan now checks each run's config with its name."""
    boundaries = list(range(1, 80))
    _, planned = experiments.plan(['experiment_grid=se_ablation', 'lr_schedule=piecewise',
                                   f'lr_boundaries={boundaries}'])
    names = [cfg['run_name'] for cfg in planned]
    assert all(len(name) == settings.RUN_NAME_MAX for name in names)
    assert len(set(names)) == 5 and names[0].startswith('custom_model_relu_lr_schedule-piecewise_')
    _, again = experiments.plan(['experiment_grid=se_ablation', 'lr_schedule=piecewise',
                                 f'lr_boundaries={boundaries[:-1] + [80]}'])
    assert [cfg['run_name'] for cfg in again] != names  # the digest is of the whole name
    short = experiments.plan(['experiment_grid=se_ablation', 'lr_schedule=piecewise'])[1]
    assert short[0]['run_name'] == 'custom_model_relu_lr_schedule-piecewise'


def test_a_run_that_fails_keeps_the_table_of_the_runs_before_it(tmp_path, monkeypatch, capsys):
    """The second run's batch is larger than the data (found when the run
    opens it): one line naming the run, exit 2, and results.md with the
    first run's row."""
    monkeypatch.setitem(constant.config, 'experiment_grids', {'two': {'batch_size': [50, 5000]}})
    status = experiments.cli([f'datasets_root={tmp_path}', 'experiment_grid=two', 'max_epochs=1',
                              'log_every=100000'])
    err = capsys.readouterr().err
    assert status == 2 and err.count('\n') == 1
    assert err.startswith('error: run 2 / 2, custom_model_relu_batch_size-5000: batch_size=5000 is '
                          'larger than the training split (1437 images)')
    results = (tmp_path / 'digits' / 'save_dir' / 'experiments' / 'two' / 'results.md').read_text()
    assert results.count('| custom_model_relu |') == 1


def test_experiment_seeds_run_every_configuration_once_per_seed():
    _, runs = experiments.plan(['experiment_grid=se_ablation', 'experiment_seeds=[42, 7]'])
    assert len(runs) == 10
    assert [(cfg['run_name'], cfg['seed']) for cfg in runs[:6]] == [
        ('custom_model_relu', 42), ('custom_model_relu_seed-7', 7),  # seed 42 is main.py's run
        ('custom_model_se_relu', 42), ('custom_model_se_relu_seed-7', 7),
        ('custom_model_se_relu_se_squeeze-max', 42), ('custom_model_se_relu_se_squeeze-max_seed-7', 7)]
    assert [experiments.configuration_name(cfg) for cfg in runs[:4]] == [
        'custom_model_relu', 'custom_model_relu', 'custom_model_se_relu', 'custom_model_se_relu']
    with pytest.raises(settings.ConfigError, match=r'experiment_seeds=\[1, 2\] sets the seed of '
                       r'every run; leave seed out of the arguments'):
        experiments.plan(['experiment_seeds=[1, 2]', 'seed=3'])


def record_for(cfg, epochs, **extra):
    saved = json.loads(json.dumps({k: v for k, v in cfg.items() if k not in settings.MENU_KEYS}))
    rows = [{'epoch': e, 'train_loss': 1.0, 'train_accuracy': 0.5, 'valid_loss': 1.0,
             'valid_accuracy': 0.5, 'epoch_seconds': 1.0} for e in range(1, epochs + 1)]
    return {'config': saved, 'epochs': rows, **extra}


def test_run_state_skips_complete_runs_resumes_partial_ones_and_restarts_others():
    _, runs = experiments.plan(['max_epochs=3'])
    cfg = runs[0]
    state = experiments.run_state
    assert state({'epochs': []}, cfg) == 'start'
    assert state(record_for(cfg, 3, test={}), cfg) == 'done'
    assert state(record_for(cfg, 3), cfg) == 'resume'  # stopped before the test evaluation
    assert state(record_for(cfg, 2), cfg) == 'resume'
    assert state(record_for(cfg, 1, diverged='loss became nan'), cfg) == 'done'
    assert state(record_for(cfg, 4, test={}), cfg) == 'done'  # more than asked: never restarted
    assert state(record_for({**cfg, 'learning_rate': 0.5}, 3, test={}), cfg) == 'start'
    # how a run is reported or where its data came from does not matter
    assert state(record_for({**cfg, 'log_every': 7, 'data_dir': '/x'}, 3, test={}), cfg) == 'done'
    # a cosine schedule spans max_epochs: more epochs is another run
    cosine = {**cfg, 'lr_schedule': 'cosine'}
    assert state(record_for({**cosine, 'max_epochs': 2}, 2, test={}), cosine) == 'start'


def test_result_row_takes_the_best_of_every_column_over_the_epochs():
    _, runs = experiments.plan(['max_epochs=3'])
    epochs = [{'epoch': 1, 'train_loss': 0.9, 'train_accuracy': 0.7, 'valid_loss': 0.5,
               'valid_accuracy': 0.80, 'epoch_seconds': 100.0},
              {'epoch': 2, 'train_loss': 0.4, 'train_accuracy': 0.9, 'valid_loss': 0.6,
               'valid_accuracy': 0.85, 'epoch_seconds': 3600.0}]
    record = {'epochs': epochs, 'device': 'CPU (2 cores)',
              'best': {'epoch': 2, 'test_accuracy': 0.83}, 'diverged': 'loss became nan'}
    row = results.result_row(runs[0], record)
    assert row['best train loss'] == 0.4 and row['best valid loss'] == 0.5
    assert row['best train acc %'] == pytest.approx(90) and row['best valid acc %'] == pytest.approx(85)
    assert row['test acc % (best epoch)'] == pytest.approx(83)
    assert row['epochs'] == 2 and row['note'] == 'diverged: loss became nan'
    line = results.results_markdown([row], 't').splitlines()[4]
    assert line == ('| custom_model_relu | 0.4000 | 0.5000 | 90.00 | 85.00 | 2 | 83.00 | - | - | - | 1850.00 | 1:01:40 '
                    '| CPU (2 cores) | - | 2 | diverged: loss became nan |')


def test_results_csv_keeps_the_float32_digits_of_the_metrics_and_nothing_more():
    accuracy = float(np.float32(0.9896))  # as history.json holds a float32 metric
    row = {**dict.fromkeys(results.COLUMNS), 'run': 'r', 'best valid acc %': 100 * accuracy,
           'best train loss': float(np.float32(0.01719644499826245)), 'best valid loss': float('nan'),
           'time': 50.036960441999966, 'epochs': 3, 'device': 'CPU (2 cores)', 'note': ''}
    line = dict(next(csv.DictReader(results.results_csv([row]).splitlines()[1:],
                                    fieldnames=results.COLUMNS)))
    assert line['best valid acc %'] == '98.96' and line['time'] == '50.03696'
    assert float(line['best train loss']) == pytest.approx(row['best train loss'], rel=1e-6)
    assert line['best valid loss'] == 'nan' and line['best epoch'] == '' and line['epochs'] == '3'


def test_results_compare_activations_side_by_side_in_the_seeds_layout():
    _, runs = experiments.plan(['max_epochs=2'])
    trained = [cfg for cfg in runs if cfg['run_name'] != 'resnet50_se_selu']  # one not run
    rows = []
    for number, cfg in enumerate(trained):
        epochs = [{'epoch': e, 'train_loss': number + e / 10, 'train_accuracy': 0.5 + e / 10,
                   'valid_loss': number + e / 5, 'valid_accuracy': 0.4 + e / 10,
                   'epoch_seconds': 60.0 * (number + 1)} for e in (1, 2)]
        rows.append(results.result_row(cfg, {'epochs': epochs, 'device': 'CPU'}))
    text = results.results_markdown(rows, 'seed grid', trained)
    layout = text.split('## Activations side by side')[1].strip().splitlines()
    # the original table's columns: each activation's loss, then its accuracy
    assert layout[0] == '| network | relu loss | relu acc % | selu loss | selu acc % | time | epochs |'
    # custom_model_relu is row 0 (losses 0.1, 0.2), custom_model_selu row 1
    assert layout[2] == ('| custom_model | 0.1000 / 0.2000 | 70.00 / 60.00 | 1.1000 / 1.2000 '
                         '| 70.00 / 60.00 | 0:02:00 / 0:04:00 | 2 / 2 |')
    assert [line.split(' | ')[0] for line in layout[2:6]] == [
        '| custom_model', '| custom_model_se', '| resnet50', '| resnet50_se']
    assert layout[5].endswith('| 0:14:00 / - | 2 / - |') and '| - |' in layout[5]
    # one activation only: nothing to put side by side
    _, ablation = experiments.plan(['experiment_grid=se_ablation'])
    assert 'Activations side by side' not in results.results_markdown(rows[:5], 't', ablation)
    # knobs in the name stay, the activation goes
    cfg = {**runs[0], 'activation_fn': 'selu', 'use_se': True,
           'run_name': 'custom_model_se_selu_se_excitation-relu'}
    assert experiments.without_activation(cfg) == 'custom_model_se_se_excitation-relu'


def test_results_give_the_mean_and_spread_of_each_configuration_over_its_seeds():
    _, runs = experiments.plan(['experiment_grid=se_ablation', 'experiment_seeds=[1, 2, 3]'])
    runs = runs[:5]  # custom_model_relu with 3 seeds, custom_model_se_relu with 2 (one not run)
    accuracies = [0.91, 0.95, 0.96, 0.80, 0.84]
    rows = []
    for cfg, accuracy in zip(runs, accuracies):
        epochs = [{'epoch': 1, 'train_loss': 0.5, 'train_accuracy': 0.9, 'valid_loss': 1 - accuracy,
                   'valid_accuracy': accuracy, 'epoch_seconds': 60.0}]
        rows.append(results.result_row(cfg, {'epochs': epochs, 'device': 'CPU',
                                                 'best': {'epoch': 1, 'test_accuracy': accuracy}}))
    rows[4]['test acc % (best epoch)'] = None  # no test figure: left out of the mean
    text = results.results_markdown(rows, 'se_ablation grid', runs)
    lines = text.split('## Over seeds')[1].strip().splitlines()
    assert lines[0] == ('| configuration | seeds | best valid acc % | test acc % (best epoch) '
                        '| best valid loss | img/s | s/epoch | time |')
    mean, sd = np.mean([91, 95, 96]), np.std([91, 95, 96], ddof=1)
    loss_sd = np.std([0.09, 0.05, 0.04], ddof=1)
    assert lines[2] == (f'| custom_model_relu | 1, 2, 3 | {mean:.2f} ± {sd:.2f} | {mean:.2f} ± {sd:.2f} '
                        f'| {0.06:.4f} ± {loss_sd:.4f} | - | 60.00 ± 0.00 | 0:01:00 ± 0:00:00 |')
    assert lines[3] == ('| custom_model_se_relu | 1, 2 | 82.00 ± 2.83 | 80.00 | 0.1800 ± 0.0283 '
                        '| - | 60.00 ± 0.00 | 0:01:00 ± 0:00:00 |')
    # one seed per configuration: nothing to summarise
    assert '## Over seeds' not in results.results_markdown(rows[:1] + rows[3:4], 't',
                                                               [runs[0], runs[3]])


def test_the_best_epochs_weights_are_restored_and_tested(tmp_path):
    """The test figure of a sweep comes from the best validation epoch, not the last."""
    cfg = settings.load_config([f'datasets_root={tmp_path}', 'max_epochs=2'])
    data = loaders.DATASETS['digits'].load(None, 0, False)
    built = training_graph.build_graph(cfg, data)
    kernel = built.model.first_conv_kernel
    with built.graph.as_default(), v1.Session(config=training_graph.session_config(built.devices)) as session:
        session.run(v1.global_variables_initializer())
        best_weights = session.run(kernel)
        run = folder.Run(cfg, 'r', {}, str(tmp_path), built, session, record={'epochs': []})
        rows = [{'epoch': 1, 'valid_accuracy': 0.9, 'valid_loss': 0.3},
                {'epoch': 2, 'valid_accuracy': 0.9, 'valid_loss': 0.4}]  # a tie: lower loss wins
        for row in rows:
            callbacks.BestCheckpoint().after_epoch(run, row)
            run.record['epochs'].append(row)
            session.run(kernel.assign(kernel + 1.0))
        record = run.record
        assert record['best']['epoch'] == 1
        record['test'] = {'epoch': 2, 'loss': 9.0, 'accuracy': 0.0}  # the final weights'
        callbacks.TestEvaluation.test_best(run, weights.best_weights_into_session(run))
        assert record['best']['checkpoint'] == os.path.join('best', 'model.ckpt-1')
        np.testing.assert_array_equal(session.run(kernel), best_weights)
        expected = passes.evaluate(session, built.model, built.source, 'test')
    assert (record['best']['test_loss'], record['best']['test_accuracy']) == expected
    assert expected != (9.0, 0.0)


def run_experiments(root, *args):
    env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
    return subprocess.run(
        [sys.executable, os.path.join(PROJECT_DIR, 'experiments.py'), f'datasets_root={root}',
         'experiment_grid=se_ablation', 'log_every=100000', *args],
        cwd=root, env=env, capture_output=True, text=True, timeout=600)


def test_a_sweep_writes_its_table_and_plot_skips_what_is_done_and_resumes(tmp_path):
    first = run_experiments(tmp_path, 'max_epochs=1')
    assert first.returncode == 0, first.stderr
    out = tmp_path / 'digits' / 'save_dir' / 'experiments' / 'se_ablation'
    assert f'Results in: {os.path.relpath(out, tmp_path)}' in first.stdout
    names = ['custom_model_relu', 'custom_model_se_relu', 'custom_model_se_relu_se_squeeze-max',
             'custom_model_se_relu_se_excitation-tanh', 'custom_model_se_relu_se_excitation-relu']
    assert [line.split(': ')[1] for line in first.stdout.splitlines()
            if line.startswith('=== run')] == names
    with open(out / 'results.csv') as f:
        rows = list(csv.DictReader(f))
    assert [r['run'] for r in rows] == names
    for row in rows:
        record = json.loads((tmp_path / 'digits' / 'save_dir' / 'runs' / row['run'] /
                             'history.json').read_text())
        assert float(row['best valid acc %']) == pytest.approx(
            100 * max(e['valid_accuracy'] for e in record['epochs']))
        assert float(row['test acc % (best epoch)']) == pytest.approx(100 * record['best']['test_accuracy'])
        assert row['epochs'] == '1' and row['device'].startswith('CPU')
    assert (out / 'results.md').read_text().count('| custom_model_') == 5
    assert (out / 'validation.pdf').read_bytes().startswith(b'%PDF')

    again = run_experiments(tmp_path, 'max_epochs=1')
    assert again.returncode == 0, again.stderr
    assert again.stdout.count('complete, skipped') == 5 and 'EPOCH STATISTICS' not in again.stdout
    assert 'Disk: about' in first.stdout and 'Disk: about' not in again.stdout  # nothing left to write

    more = run_experiments(tmp_path, 'max_epochs=2')
    assert more.returncode == 0, more.stderr
    assert more.stdout.count('resuming') == 5
    assert more.stdout.count('Train error: epoch 2 ') == 5 and 'Train error: epoch 1 ' not in more.stdout
    with open(out / 'results.csv') as f:
        assert {r['epochs'] for r in csv.DictReader(f)} == {'2'}


def test_an_interrupted_sweep_writes_what_it_has_and_the_same_command_resumes_it(tmp_path):
    args = [sys.executable, os.path.join(PROJECT_DIR, 'experiments.py'), f'datasets_root={tmp_path}',
            'experiment_grid=se_ablation', 'max_epochs=1000', 'log_every=100000']
    env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
    sweep = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        for line in sweep.stdout:  # stop it inside its first run, after an epoch
            if line.startswith('Train error: epoch 2 '):
                sweep.send_signal(signal.SIGINT)
                break
        out, err = sweep.communicate(timeout=120)
    finally:
        sweep.kill()
    assert sweep.returncode == 130, err
    assert 'run the same command again to continue it' in err
    with open(tmp_path / 'digits' / 'save_dir' / 'experiments' / 'se_ablation' / 'results.csv') as f:
        rows = list(csv.DictReader(f))
    assert [r['run'] for r in rows] == ['custom_model_relu'] and rows[0]['note'] == 'incomplete'
    done = int(rows[0]['epochs'])  # 2 or more, by when the signal came
    again = subprocess.run(args[:-2] + [f'max_epochs={done + 1}', 'log_every=100000'], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[1].startswith('Disk: about ')
    assert 'for the 5 runs;' in again.stdout.splitlines()[1]  # the interrupted one is left to train too
    assert again.stdout.splitlines()[2] == '=== run 1 / 5: custom_model_relu: resuming'
    first_run = again.stdout.split('=== run 2')[0]
    assert f'Train error: epoch {done + 1} ' in first_run and 'Train error: epoch 1 ' not in first_run
