"""Several workers on loopback: TF_CONFIG, each worker's part of the data,
chief-only writes, and a worker killed mid-epoch and started again."""
import json
import os
import signal
import time

import numpy as np
import pytest

from foundation.data.input_pipeline import worker_part
from tests import fixtures
from tests.fake_peers import SETTINGS_FRAME, fake_peer
from tests.fixtures import Job
from trainer.training import cluster


def test_role_comes_from_tf_config():
    two = ['127.0.0.1:1', '127.0.0.1:2']
    assert cluster.role_from_environment({}) is None
    role = cluster.role_from_environment({'TF_CONFIG': fixtures.tf_config(two, 1)})
    assert role == cluster.Role(two, 1) and not cluster.is_chief(role)
    assert cluster.is_chief(cluster.role_from_environment({'TF_CONFIG': fixtures.tf_config(two, 0)}))
    assert cluster.role_from_environment({'TF_CONFIG': fixtures.tf_config(two[:1], 0)}) is None


def job_config(workers, index=0, kind='worker'):
    return json.dumps({'cluster': {'worker': workers}, 'task': {'type': kind, 'index': index}})


TWO = ['127.0.0.1:1', '127.0.0.1:2']
BAD_TF_CONFIGS = {  # TF_CONFIG: what its one line says
    '{"cluster": {}}': 'TF_CONFIG must give "cluster" and "task" as JSON objects',
    '{"cluster": {}, "task": {"type": "worker", "index": 0}}': '"worker" must be a list of '
                                                               '"host:port" addresses, got null',
    'not json': 'TF_CONFIG is not JSON',
    '{"a": 1}': 'TF_CONFIG must give "cluster" and "task" as JSON objects',
    '[1, 2]': 'TF_CONFIG must give "cluster" and "task" as JSON objects',
    # a string was read as one worker per character: 15 workers
    job_config('127.0.0.1:23456'): '"worker" must be a list of "host:port" addresses, got "127.0.0.1:23456"',
    job_config([]): '"worker" must be a list',
    job_config(['127.0.0.1:abc', TWO[1]]): 'worker address "127.0.0.1:abc" is not "host:port" with a '
                                           'port from 1 to 65535',
    job_config(['127.0.0.1:99999', TWO[1]]): 'worker address "127.0.0.1:99999"',  # hung
    job_config(['127.0.0.1:0', TWO[1]]): 'worker address "127.0.0.1:0"',
    job_config(['2222', TWO[1]]): 'worker address "2222"',
    job_config([2222, TWO[1]]): 'worker address 2222',
    job_config([TWO[0], TWO[0]]): 'repeat an address',
    job_config(TWO, 2): 'task index 2 is not one of the 2 workers (0 to 1)',
    job_config(TWO, '1'): "task index '1' is not one of the 2 workers",
    job_config(TWO, True): 'task index True',
    job_config(TWO, None): 'task index None',
    json.dumps({'cluster': {'worker': ['a:1'], 'ps': ['b:1']},
                'task': {'type': 'ps', 'index': 0}}): 'workers only',
}


@pytest.mark.parametrize('text', BAD_TF_CONFIGS)
def test_a_tf_config_that_cannot_work_is_one_line(text):
    with pytest.raises(cluster.ClusterError) as caught:
        cluster.role_from_environment({'TF_CONFIG': text})
    assert BAD_TF_CONFIGS[text] in str(caught.value) and '\n' not in str(caught.value)


def test_waiting_for_peers_ends_when_they_listen_or_names_those_missing(capsys):
    from trainer.training import interruption
    with fake_peer(SETTINGS_FRAME) as listening:  # answers as a gRPC server does
        closed = fixtures.loopback_addresses(1)[0]
        stop = interruption.StopRequests()
        cluster.wait_for_peers(cluster.Role([closed, listening], 0), 0, stop)  # worker 1 is up
        started = time.monotonic()
        with pytest.raises(cluster.ClusterError) as caught:
            cluster.wait_for_peers(cluster.Role([listening, closed, listening], 0), 1.0, stop)
        waited = time.monotonic() - started
    assert str(caught.value).startswith(f'worker 1 ({closed}) of the job did not start within 1 s;')
    assert 'raise peer_wait_seconds' in str(caught.value) and 1.0 <= waited < 3
    assert capsys.readouterr().out == f'Waiting up to 1 s for worker 1 ({closed}) of the job\n'


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_a_chief_waiting_for_a_worker_that_never_starts_stops_at_a_signal(tmp_path, signum):
    """TensorFlow's own wait for the worker, inside the first step, heard
    neither signal: only SIGKILL ended the chief."""
    lone = Job(tmp_path, ['max_epochs=1'])
    try:
        lone.start(0)
        lone.wait_for(0, 'Waiting up to 600 s for worker 1', 120)
        lone.processes[0].send_signal(signum)
        assert lone.wait(15) == {0: 128 + signum}
    finally:
        lone.kill_all()
    lines = [line for line in lone.log(0).read_text().splitlines() if line.strip()]
    assert lines[-1] == (f'Interrupted (stopped by {signal.Signals(signum).name}) while waiting for '
                         f'the workers of the job; nothing was trained')


def test_every_worker_gets_its_part_of_every_global_batch():
    order = np.random.default_rng(0).permutation(1437)
    parts = [worker_part(order, 50, worker, 2) for worker in range(2)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(1437))  # each image once
    assert parts[0][:25].tolist() == order[:25].tolist()
    assert parts[1][:25].tolist() == order[25:50].tolist()
    steps = [-(-len(part) // 25) for part in parts]  # local batches of 25
    assert steps[0] == steps[1] == 29  # equal steps: the all-reduce never waits for nobody
    # a last global batch too small to split is left out rather than make an empty step
    assert len(np.concatenate([worker_part(order[:101], 50, w, 3) for w in range(3)])) == 100


def chief_record(root):
    run = root / 'datasets' / 'digits' / 'save_dir' / 'runs' / 'custom_model_relu'
    return json.loads((run / 'history.json').read_text())


def test_two_workers_train_an_epoch_and_only_the_chief_writes(job, tmp_path):
    started = time.monotonic()
    two = job(['max_epochs=1', 'log_every=500'])
    for index in (0, 1):
        two.start(index)
    assert two.wait(Job.SECONDS) == {0: 0, 1: 0}, two.log(0).read_text()[-3000:]
    print(f'two workers: {time.monotonic() - started:.1f} s')
    record = chief_record(tmp_path)
    assert [e['epoch'] for e in record['epochs']] == [1] and 'test' in record
    assert record['epochs'][0]['valid_accuracy'] > 0.7
    worker = two.log(1).read_text()
    assert 'epoch 1, step 1437 / 1437' in worker  # progress counts the whole job's images
    assert 'Worker done' in worker and 'Plotting' not in worker and 'Test error' not in worker
    run = tmp_path / 'datasets' / 'digits' / 'save_dir' / 'runs' / 'custom_model_relu'
    assert len([p for p in os.listdir(run) if p.startswith('events')]) == 1  # the chief's


def test_a_worker_killed_mid_epoch_and_started_again_lets_the_job_finish(job, tmp_path):
    two = job(['max_epochs=3', 'log_every=100'])
    for index in (0, 1):
        two.start(index)
    two.wait_for(1, 'epoch 2, step 500 / 1437', Job.SECONDS)
    two.processes[1].send_signal(signal.SIGKILL)
    two.processes[1].wait()
    two.start(1)  # the same command again
    assert two.wait(Job.SECONDS) == {0: 0, 1: 0}, two.log(0).read_text()[-3000:]
    chief = two.log(0).read_text()
    assert 'a worker of the job was lost' in chief and 'starting again' in chief
    assert 'Resuming from' in chief and '1 epoch(s) done' in chief
    assert 'Resuming from' in two.log(1).read_text()
    record = chief_record(tmp_path)
    assert [e['epoch'] for e in record['epochs']] == [1, 2, 3] and 'test' in record
