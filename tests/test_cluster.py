"""Several workers on loopback: TF_CONFIG, each worker's part of the data,
chief-only writes, and a worker killed mid-epoch and started again."""
import json
import os
import signal
import time

import numpy as np
import pytest

from trainer import cluster
from trainer.input_pipeline import worker_part
from tests.fixtures import Job


def test_role_comes_from_tf_config():
    two = ['127.0.0.1:1', '127.0.0.1:2']
    assert cluster.role_from_environment({}) is None
    role = cluster.role_from_environment({'TF_CONFIG': cluster.tf_config(two, 1)})
    assert role == cluster.Role(two, 1) and not cluster.is_chief(role)
    assert cluster.is_chief(cluster.role_from_environment({'TF_CONFIG': cluster.tf_config(two, 0)}))
    assert cluster.role_from_environment({'TF_CONFIG': cluster.tf_config(two[:1], 0)}) is None
    for text, message in [('{"cluster": {}}', 'not valid'),
                          ('not json', 'not valid'),
                          (cluster.tf_config(two, 2), 'task index 2 is not in the 2 workers'),
                          (json.dumps({'cluster': {'worker': ['a:1'], 'ps': ['b:1']},
                                       'task': {'type': 'ps', 'index': 0}}), 'workers only')]:
        with pytest.raises(cluster.ClusterError, match=message):
            cluster.role_from_environment({'TF_CONFIG': text})


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
