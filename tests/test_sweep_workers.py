"""Several workers on one sweep: started by hand at the same moment,
workers=N, a worker killed with SIGKILL and its run resumed by the next,
workers finishing together, fixed shares and Slurm arrays."""
import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import experiments
from foundation import safe_io
from tests.test_experiments import PROJECT_DIR
from trainer.config import settings
from trainer.runs import folder
from trainer.sweeps import workers

GRID = ['dataset_name=digits', 'model=custom_model', 'experiment_grid=se', 'experiment_seeds=[1,2,3,4]',
        'max_epochs=1', 'log_every=100000']
NAMES = [f'custom_model_{arm}relu_seed-{seed}' for arm in ('', 'se_') for seed in (1, 2, 3, 4)]
TIMING_COLUMNS = ('img/s', 's/epoch', 'time')


def sweep(root, *args, env=None):
    """A worker of experiments.py on `root` (Popen)."""
    environ = {k: v for k, v in os.environ.items() if k not in ('TF_CPP_MIN_LOG_LEVEL', folder.WORKER_ENV)
               and not k.startswith('SLURM_')}
    return subprocess.Popen([sys.executable, os.path.join(PROJECT_DIR, 'experiments.py'), f'datasets_root={root}',
                             *GRID, *args], cwd=root, env={**environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finished(process, timeout=600):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return out


def table(root):
    """results.csv without the columns of timing, which differ between runs."""
    with open(root / 'digits' / 'save_dir' / 'experiments' / 'se' / 'results.csv') as f:
        return [{k: v for k, v in row.items() if not k.startswith(TIMING_COLUMNS)} for row in csv.DictReader(f)]


def record(root, name):
    return json.loads((root / 'digits' / 'save_dir' / 'runs' / name / 'history.json').read_text())


def started_runs(out):
    return [line.split(': ')[1] for line in out.splitlines() if line.startswith('=== run') and
            line.endswith(('starting', 'resuming'))]


def test_two_workers_at_once_train_each_run_once_and_table_as_one_worker(tmp_path):
    (tmp_path / 'two').mkdir()
    (tmp_path / 'one').mkdir()
    pair = [sweep(tmp_path / 'two'), sweep(tmp_path / 'two')]
    outs = [finished(p) for p in pair]
    trained = [started_runs(out) for out in outs]
    assert sorted(trained[0] + trained[1]) == sorted(NAMES) and all(trained)  # once each, both worked
    pids = {p.pid for p in pair}
    for name in NAMES:
        by, = record(tmp_path / 'two', name)['trained_by']
        assert int(by.split()[1]) in pids and by.endswith('from epoch 1')
    assert sum('Results in:' in out for out in outs) >= 1
    alone = finished(sweep(tmp_path / 'one'))
    assert sorted(started_runs(alone)) == sorted(NAMES)
    assert table(tmp_path / 'two') == table(tmp_path / 'one') and len(table(tmp_path / 'one')) == 8


def test_workers_n_pins_them_shows_progress_and_writes_the_table_once(tmp_path):
    out = finished(sweep(tmp_path, 'workers=2', 'experiment_seeds=[1,2]'))
    assert '2 workers (worker 1: CPU core' in out and 'Sweep: 4 / 4 complete' in out
    assert out.count('Results in:') == 1
    logs = sorted((tmp_path / 'digits' / 'save_dir' / 'experiments' / 'se' / 'workers').iterdir())
    trained = [started_runs(log.read_text()) for log in logs]
    assert len(logs) == 2 and sorted(trained[0] + trained[1]) == sorted(n for n in NAMES if n[-1] in '12')
    assert all('Results in:' not in log.read_text() for log in logs)  # the starting process writes it
    assert len(table(tmp_path)) == 4


def test_a_worker_killed_mid_run_leaves_it_to_the_next_which_resumes_it(tmp_path):
    first = sweep(tmp_path, 'experiment_seeds=[1]', 'max_epochs=40')
    history = tmp_path / 'digits' / 'save_dir' / 'runs' / 'custom_model_relu_seed-1' / 'history.json'
    deadline = time.time() + 300
    while not (history.exists() and len(json.loads(history.read_text() or '{"epochs": []}')['epochs']) >= 2):
        assert time.time() < deadline and first.poll() is None
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    out = finished(sweep(tmp_path, 'experiment_seeds=[1]', 'max_epochs=40'))
    assert '=== run 1 / 2: custom_model_relu_seed-1: resuming' in out
    assert '=== run 2 / 2: custom_model_se_relu_seed-1: starting' in out
    kept = record(tmp_path, 'custom_model_relu_seed-1')
    assert [row['epoch'] for row in kept['epochs']] == list(range(1, 41))
    assert len(kept['trained_by']) == 2 and kept['trained_by'][0].endswith('from epoch 1')
    assert int(kept['trained_by'][1].split()[-1]) > 2  # resumed after the epochs the first committed
    assert len(table(tmp_path)) == 2


def test_three_workers_finishing_together_leave_one_whole_table(tmp_path):
    finished(sweep(tmp_path, 'experiment_seeds=[1,2]'))
    expected = table(tmp_path)
    three = [sweep(tmp_path, 'experiment_seeds=[1,2]') for _ in range(3)]
    for out in map(finished, three):
        assert out.count('complete, skipped') == 4 and 'Results in:' in out
    assert table(tmp_path) == expected
    out_dir = tmp_path / 'digits' / 'save_dir' / 'experiments' / 'se'
    assert sorted(p.name for p in out_dir.iterdir() if not p.name.startswith('.')) == [
        'report.md', 'report.pdf', 'results.csv', 'results.md', 'validation.pdf']


def test_a_mistake_in_the_grid_is_said_once_before_any_worker_starts(tmp_path):
    process = sweep(tmp_path, 'workers=3', 'experiment_grids={"se": {"use_se": [False, "maybe"]}}')
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2 and err.count('error:') == 1 and '\n' == err[-1] and err.count('\n') == 1
    assert not (tmp_path / 'digits' / 'save_dir').exists()


def test_a_slurm_array_task_trains_its_share_only(tmp_path):
    env = {'SLURM_ARRAY_JOB_ID': '77', 'SLURM_ARRAY_TASK_ID': '3', 'SLURM_ARRAY_TASK_MIN': '2',
           'SLURM_ARRAY_TASK_COUNT': '2'}
    out = finished(sweep(tmp_path, 'experiment_seeds=[1,2]', env=env))
    assert 'This worker takes share 1 of 2: 2 of the 4 runs' in out
    assert started_runs(out) == ['custom_model_relu_seed-2', 'custom_model_se_relu_seed-2']
    assert record(tmp_path, 'custom_model_relu_seed-2')['trained_by'][0].endswith(
        ', Slurm job 77 task 3 from epoch 1')


# --- the parts ---------------------------------------------------------------------

def cfg(**keys):
    return settings.load_config([f'{k}={v}' for k, v in keys.items()])


@pytest.mark.parametrize('env, share', [
    ({}, None),
    ({'SLURM_ARRAY_TASK_ID': '0', 'SLURM_ARRAY_TASK_COUNT': '4'}, (0, 4)),
    ({'SLURM_ARRAY_TASK_ID': '9', 'SLURM_ARRAY_TASK_MIN': '1', 'SLURM_ARRAY_TASK_STEP': '4',
      'SLURM_ARRAY_TASK_COUNT': '3'}, (2, 3)),
])
def test_a_fixed_share_is_read_from_slurm(env, share):
    assert workers.fixed_share(cfg(), env) == share
    assert workers.fixed_share(cfg(worker_index=1, num_workers=5), env) == (1, 5)  # the keys first


@pytest.mark.parametrize('env, message', [
    ({'SLURM_ARRAY_TASK_ID': '٣', 'SLURM_ARRAY_TASK_COUNT': '4'}, r"SLURM_ARRAY_TASK_ID \('٣'\) is not"),
    ({'SLURM_ARRAY_TASK_ID': '5', 'SLURM_ARRAY_TASK_COUNT': '4'}, 'SLURM_ARRAY_TASK_ID=5 is not one of the 4'),
    ({'SLURM_ARRAY_TASK_ID': '1'}, r'SLURM_ARRAY_TASK_COUNT \(unset\) is not'),
])
def test_a_wrong_slurm_variable_is_one_line(env, message):
    with pytest.raises(settings.ConfigError, match=message):
        workers.fixed_share(cfg(), env)


@pytest.mark.parametrize('args, message', [
    (['worker_index=1'], 'worker_index=1 and num_workers=None go together'),
    (['worker_index=2', 'num_workers=2'], "worker_index=2 is not one of num_workers=2's shares; choose 0 to 1"),
    (['worker_index=0', 'num_workers=2', 'workers=2'], 'workers=2 starts workers that share every run'),
    (['workers=0'], 'workers must be at least 1'),
])
def test_bad_worker_keys_are_one_line(args, message):
    with pytest.raises(settings.ConfigError, match=message):
        settings.load_config(args)


def test_shares_cover_every_run_once():
    runs = list(range(10))
    shares = [workers.share_of(runs, (i, 3)) for i in range(3)]
    assert sorted(sum(shares, [])) == runs and workers.share_of(runs, None) == runs


def test_pins_split_the_cores_or_give_one_gpu_each():
    cpu = workers.pins(3, 0, range(8))
    assert [part for _, part in cpu] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert {env['TF_NUM_INTRAOP_THREADS'] for env, _ in cpu} == {'8'}  # a lone run's threads: equal figures
    assert [env[folder.WORKER_ENV] for env, _ in cpu] == ['1 of 3', '2 of 3', '3 of 3']
    assert [part for _, part in workers.pins(3, 0, [0, 1])] == [[0], [1], [0]]
    gpu = workers.pins(3, 2, range(4))
    assert [env['CUDA_VISIBLE_DEVICES'] for env, _ in gpu] == ['0', '1', '0']


def test_a_process_holding_a_runs_lock_enters_it_again_and_others_cannot(tmp_path):
    run = folder.locate(cfg(datasets_root=tmp_path))
    with folder.Lock(run):
        with folder.Lock(run):
            pass
        other = subprocess.run([sys.executable, '-c', (
            'import fcntl, sys; f = open(sys.argv[1], "a");\n'
            'try: fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB); print("taken")\n'
            'except OSError: print("held")'), folder.lock_path(os.path.dirname(run.directory), run.name)],
            capture_output=True, text=True)
        assert other.stdout.strip() == 'held'  # still held after the inner exit
        assert folder.holder(os.path.dirname(run.directory), run.name).startswith(f'process {os.getpid()} on ')
        assert not workers.held_elsewhere(run.cfg)
    assert folder.holder(os.path.dirname(run.directory), run.name) == ''


def test_a_lock_named_by_a_dead_process_of_this_host_is_free(tmp_path):
    run = folder.locate(cfg(datasets_root=tmp_path))
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    path = folder.lock_path(os.path.dirname(run.directory), run.name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(f'process {dead.stdout.strip()} on {os.uname().nodename} since 2026-01-01T00:00:00 (x)')
    assert not workers.held_elsewhere(run.cfg)
    with open(path, 'w') as f:
        f.write('process 1 on another-host since 2026-01-01T00:00:00 (x)')
    assert workers.held_elsewhere(run.cfg)
    assert experiments.worker_of(run.cfg) == 'process 1 on another-host'


def test_workers_probing_one_folder_at_once_never_fail_each_other(tmp_path):
    """Each worker checks that save_dir is writable as it starts: with one
    probe file for all, one removed the other's, which was then told
    "cannot write to ... (No such file or directory)"."""
    failures = []

    def probe_often():
        for _ in range(300):
            try:
                safe_io.check_writable(str(tmp_path / 'save_dir'))
            except Exception as error:  # noqa: BLE001 - what a worker would have been told
                failures.append(error)
    threads = [threading.Thread(target=probe_often) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and os.listdir(tmp_path / 'save_dir') == []
