"""A worker's address held by a program that is not TensorFlow (told in one
line, never waited on inside TensorFlow), a second signal heard while
TensorFlow's call does not return, and Ctrl-C or SIGTERM in the commands
after training: one line, exit status 128 + the signal, nothing written."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import tensorflow as tf

import evaluate
import export
import instruments
from tests import fixtures
from tests.fake_peers import SETTINGS_FRAME, fake_peer
from tests.fixtures import Job
from tests.trained_runs import file_tree, train_digits
from trainer.after_training import evaluation, inference
from trainer.study import cam, instrument_files
from trainer.training import cluster, interruption

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS_SECONDS = 120  # bounds each child process; not a claim on how fast it stops


# --- what holds a worker's address ---------------------------------------------------------

def test_a_probe_tells_a_tensorflow_server_from_a_port_that_only_accepts():
    with fake_peer() as silent, fake_peer(b'') as closing, fake_peer(b'HTTP/1.1 400 Bad\r\n\r\n') as http1, \
            fake_peer(SETTINGS_FRAME) as grpc_like:
        assert cluster.probe(silent, timeout=0.5) == cluster.SILENT
        assert cluster.probe(closing, timeout=0.5) == cluster.SILENT
        assert cluster.probe(http1, timeout=0.5) == cluster.SILENT
        assert cluster.probe(grpc_like, timeout=0.5) == cluster.LISTENING
    assert cluster.probe(fixtures.loopback_addresses(1)[0]) is None  # nothing there
    address = fixtures.loopback_addresses(1)[0]
    tf.distribute.Server(tf.train.ClusterSpec({'probe': [address]}), job_name='probe', task_index=0, start=True)
    assert cluster.probe(address) == cluster.LISTENING  # TensorFlow's own server


def test_waiting_for_a_port_that_never_answers_names_it_as_not_tensorflow(capsys):
    absent = fixtures.loopback_addresses(1)[0]
    with fake_peer() as silent, fake_peer(SETTINGS_FRAME) as up:
        with pytest.raises(cluster.ClusterError) as caught:
            cluster.wait_for_peers(cluster.Role([up, silent, absent], 0), 0.5, interruption.StopRequests())
        cluster.wait_for_peers(cluster.Role([silent, up], 0), 0, interruption.StopRequests())  # worker 1 is up
    said = str(caught.value)
    assert said.startswith(f'worker 2 ({absent}) of the job did not start within 0.5 s;')
    assert (f'; worker 1 ({silent}): a program that is not TensorFlow holds that port (it accepts connections '
            f'but does not answer as a TensorFlow server); stop it, or give the worker a free port in '
            f'TF_CONFIG') in said and '\n' not in said


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_a_chief_whose_peer_is_not_tensorflow_stops_at_a_signal(tmp_path, signum):
    """The chief took a listener that never answers for the worker, went on
    into TensorFlow's wait, and heard no signal: only SIGKILL ended it."""
    with fake_peer() as silent:
        chief = Job(tmp_path, ['max_epochs=1'])
        chief.addresses = [chief.addresses[0], silent]
        try:
            chief.start(0)
            chief.wait_for(0, f'Waiting up to 600 s for worker 1 ({silent})', HARNESS_SECONDS)
            chief.processes[0].send_signal(signum)
            assert chief.wait(HARNESS_SECONDS) == {0: 128 + signum}
        finally:
            chief.kill_all()
    lines = [line for line in chief.log(0).read_text().splitlines() if line.strip()]
    assert lines[-1] == (f'Interrupted (stopped by {signal.Signals(signum).name}) while waiting for '
                         f'the workers of the job; nothing was trained')


def test_a_chief_whose_peer_is_not_tensorflow_ends_in_one_line(tmp_path):
    with fake_peer() as silent:
        chief = Job(tmp_path, ['max_epochs=1', 'peer_wait_seconds=1'])
        chief.addresses = [chief.addresses[0], silent]
        try:
            chief.start(0)
            assert chief.wait(HARNESS_SECONDS) == {0: 2}
        finally:
            chief.kill_all()
    lines = [line for line in chief.log(0).read_text().splitlines() if line.strip()]
    assert lines[-1].startswith(f'error: worker 1 ({silent}): a program that is not TensorFlow holds that port')
    assert 'Traceback' not in chief.log(0).read_text() and 'Building' not in chief.log(0).read_text()


# --- a signal while TensorFlow's call does not return ----------------------------------------

# A TensorFlow call that never returns (a dequeue of a queue nobody fills), under the handlers of `how`.
BLOCKED = textwrap.dedent('''
    import sys
    import tensorflow as tf
    from trainer.training import interruption
    tf.compat.v1.disable_eager_execution()
    queue = tf.queue.FIFOQueue(1, tf.float32)
    with tf.control_dependencies([tf.print('inside TensorFlow')]):  # printed from within the call
        taken = queue.dequeue()
    def blocked():
        with tf.compat.v1.Session() as session:
            session.run(taken)
    if sys.argv[1] == 'at_once':
        interruption.stop_at_once(blocked)
    else:
        with interruption.stop_requests():
            blocked()
''')


@pytest.mark.parametrize('how', ['stop_requests', 'at_once'])
def test_a_second_signal_ends_a_process_whose_tensorflow_call_does_not_return(how):
    """Python runs a handler only once the call returns: two SIGTERMs did
    nothing, only SIGKILL ended it."""
    child = subprocess.Popen([sys.executable, '-c', BLOCKED, how], cwd=PROJECT_DIR, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        read_line_with(child.stderr, 'inside TensorFlow')
        child.send_signal(signal.SIGTERM)
        told = read_line_with(child.stderr, 'SIGTERM heard')
        assert told == ('SIGTERM heard; TensorFlow has not returned yet: it stops when it does, or at once at a '
                        'second Ctrl-C or SIGTERM\n')
        child.send_signal(signal.SIGTERM)
        assert child.wait(HARNESS_SECONDS) == 128 + signal.SIGTERM
        rest = child.stderr.read()
    finally:
        child.kill()
        child.wait()
    assert rest.splitlines()[-1] == ('Stopped at once by a second SIGTERM, inside a TensorFlow call that had '
                                     'not returned')


def read_line_with(stream, text):
    """The first line of `stream` holding `text` (TensorFlow's log lines come before it)."""
    for line in stream:
        if text in line:
            return line
    raise AssertionError(f'{text!r} never came')


# --- Ctrl-C and SIGTERM in the commands after training ----------------------------------------

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A one-epoch SE run of digits."""
    root = tmp_path_factory.mktemp('interrupts')
    return {'root': root, 'args': train_digits(root, 'use_se=True')}


def signalled_on_entry(real, signum):
    """`real`, but it first sends this process `signum`, as Ctrl-C or kill would meanwhile."""
    def call(*args, **kwargs):
        os.kill(os.getpid(), signum)
        return real(*args, **kwargs)
    return call


POINTS = {  # command: where the signal comes, as it measures and as it writes
    'evaluate': (evaluate.main, [(evaluation, 'analyse'), (evaluation, 'write')]),
    'export': (export.main, [(inference.Serving, '__init__'), (inference, 'export')]),
    'instruments': (instruments.main, [(cam, 'measure'), (instrument_files, 'write_self_normalisation')]),
}


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize('point', [0, 1])
@pytest.mark.parametrize('command', POINTS)
def test_a_signal_in_a_command_after_training_is_one_line_and_writes_nothing(trained, capsys, monkeypatch,
                                                                             command, point, signum):
    task, points = POINTS[command]
    holder, name = points[point]
    monkeypatch.setattr(holder, name, signalled_on_entry(getattr(holder, name), signum))
    previous = signal.getsignal(signum)
    before = file_tree(trained['root'])
    assert task(trained['args']) == 128 + signum
    err = capsys.readouterr().err
    assert err == (f'Interrupted (stopped by {signal.Signals(signum).name}): python {os.path.basename(sys.argv[0])} '
                   f'stopped before it finished\n')
    assert file_tree(trained['root']) == before
    assert signal.getsignal(signum) is previous  # the handlers are this command's alone
