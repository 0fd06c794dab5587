"""Several machines: synchronous data-parallel training across processes on
TensorFlow's own runtime, with collective all-reduce
(tf.compat.v1.distribute.experimental.MultiWorkerMirroredStrategy) in graph
mode. Each process learns its place from TF_CONFIG, as TensorFlow jobs do:

    TF_CONFIG='{"cluster": {"worker": ["host0:2222", "host1:2222"]},
                "task": {"type": "worker", "index": 0}}' python main.py ...

Worker 0 is the chief: it alone evaluates and writes checkpoints, history,
plots and filters. Every worker trains on its own slice of every global batch.
Each waits for the others' servers before its first step, in Python, where
Ctrl-C and SIGTERM are heard (TensorFlow's own wait inside a step heard
neither and never ended), for at most peer_wait_seconds; a server is one
that answers as gRPC does, not merely a port that accepts connections
(TensorFlow waited on a silent one for ever). A worker that loses
a peer mid-step starts itself afresh (same command) and, like a worker
started again by hand, continues from the chief's newest checkpoint once all
workers are back.
"""
import collections
import json
import os
import re
import socket
import sys
import time

import tensorflow as tf

from foundation import bounded_json
from foundation.errors import ClusterError

v1 = tf.compat.v1

RESTART_DELAY_SECONDS = 2
PEER_POLL_SECONDS = 0.2  # how often a waiting worker looks for its peers, and hears a signal
# A port as TensorFlow parses it: ASCII digits only (int() takes '٢٢٢٢' too, and
# refuses 5000 digits with a ValueError of its own), 1 to 65535.
PORT = re.compile(r'[0-9]{1,5}')
EXAMPLE = ('{"cluster": {"worker": ["host0:2222", "host1:2222"]}, '
           '"task": {"type": "worker", "index": 0}}')
# What a lost peer looks like to the collective ops.
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.AbortedError,
               tf.errors.DeadlineExceededError, tf.errors.CancelledError)


class PeerLost(RuntimeError):
    """A worker of the job stopped answering, or the workers disagree on
    where the job stands: this process must start again to rejoin."""


Role = collections.namedtuple('Role', 'workers index')  # addresses, this task's index
# A process's part in training: role None (training alone) or its Role, the
# job's strategy, the server target and session config of this worker.
Job = collections.namedtuple('Job', 'role strategy target session_proto')


def is_chief(role):
    return role is None or role.index == 0


def role_from_environment(environ=os.environ):
    """This process's Role from TF_CONFIG; None when it trains alone (no
    TF_CONFIG, or a cluster of one worker). Every part is checked here:
    TensorFlow read a string of workers as one worker per character, and
    hung on a port it could not use."""
    text = environ.get('TF_CONFIG')
    if not text:
        return None
    try:
        config = bounded_json.loads(text, holder='TF_CONFIG')  # nested 100000 deep: a RecursionError
    except ValueError as error:
        raise ClusterError(f'TF_CONFIG is not JSON ({error}); expected {EXAMPLE}') from None
    try:  # bytes that are no UTF-8 reach os.environ as lone surrogates, which TensorFlow cannot encode
        json.dumps(config, ensure_ascii=False).encode('utf-8')
    except UnicodeEncodeError:
        raise ClusterError(f'TF_CONFIG holds bytes that are not UTF-8 (or a \\u escape of no character); '
                           f'expected {EXAMPLE}') from None
    if not (isinstance(config, dict) and isinstance(config.get('cluster'), dict)
            and isinstance(config.get('task'), dict)):
        raise ClusterError(f'TF_CONFIG must give "cluster" and "task" as JSON objects; expected {EXAMPLE}')
    cluster_spec, task = config['cluster'], config['task']
    others = sorted(set(cluster_spec) - {'worker'})
    if others or task.get('type') != 'worker':
        raise ClusterError(f"TF_CONFIG: this trainer runs jobs of workers only (collective "
                           f"all-reduce; worker 0 is the chief), not {others or [task.get('type')]}")
    workers = checked_workers(cluster_spec.get('worker'))
    index = task.get('index')
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(workers):
        raise ClusterError(f'TF_CONFIG: task index {index!r} is not one of the {len(workers)} '
                           f'workers (0 to {len(workers) - 1})')
    return Role(workers, index) if len(workers) > 1 else None


def checked_workers(workers):
    """The "worker" list of TF_CONFIG: distinct "host:port" texts, ports 1-65535."""
    if not isinstance(workers, list) or not workers:
        raise ClusterError(f'TF_CONFIG: "worker" must be a list of "host:port" addresses, got '
                           f'{json.dumps(workers)[:80]}; expected {EXAMPLE}')
    for address in workers:
        host, _, port = address.rpartition(':') if isinstance(address, str) else ('', '', '')
        if not host or not PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
            raise ClusterError(f'TF_CONFIG: worker address {json.dumps(address)[:80]} is not '
                               f'"host:port" with a port from 1 to 65535 in ASCII digits')
    if len(set(workers)) != len(workers):
        raise ClusterError(f'TF_CONFIG: the workers {workers} repeat an address; each needs its own')
    return workers


def check_config(cfg, role, train_files=None):
    """What a multi-worker run needs of the config (and of the training
    files, for streamed datasets: one at least for every worker)."""
    count = len(role.workers)
    if cfg['batch_size'] % count:
        raise ClusterError(f"batch_size={cfg['batch_size']} (the global batch) does not split "
                           f"evenly among {count} workers; choose a multiple of {count}")
    if train_files is not None and len(train_files) < count:
        raise ClusterError(f"the training split has {len(train_files)} file(s) for {count} "
                           f"workers, which read one part of the files each; write at least "
                           f"{count} training shards (tfrecord_shards)")
    # Quick runs train on one machine: a job's workers stop after the chief's
    # epochs only, and each reads its own files, which a sample can leave empty.
    for key in ('max_steps', 'overfit_batches'):
        if cfg[key] is not None:
            raise ClusterError(f"{key}={cfg[key]} is for a run on one machine; leave it out of a "
                               f"job of {count} workers (TF_CONFIG)")
    if cfg['train_images'] is not None and train_files is not None:
        raise ClusterError(f"train_images={cfg['train_images']} of streamed records is for a run on one "
                           f"machine (each worker reads its own files); leave it out of a job of "
                           f"{count} workers (TF_CONFIG)")


def join(cfg, train_files, session_proto, stop):
    """This process's Job: alone, or (from TF_CONFIG) a worker of a job,
    its config checked against the job, its server started and the other
    workers' servers found (raises Interrupted if `stop` hears a signal
    meanwhile)."""
    role = role_from_environment()
    if role is None:
        return Job(None, None, '', session_proto)
    check_config(cfg, role, train_files)
    strategy, server, proto = start(role, session_proto)
    wait_for_peers(role, cfg['peer_wait_seconds'], stop)
    return Job(role, strategy, server.target, proto)


# An HTTP/2 client's opening (the preface and an empty SETTINGS frame): a gRPC
# server, as TensorFlow's is, answers with a SETTINGS frame of its own.
HTTP2_OPENING = b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
HTTP2_SETTINGS = 4  # the frame type, byte 3 of a frame's 9-byte header
LISTENING, SILENT = 'listening', 'silent'  # what a probe of a worker's address found, beside None


def probe(address, timeout=1.0):
    """What is at "host:port": None where nothing accepts connections,
    SILENT where something does but does not answer as a gRPC server
    (another program holds the port: TensorFlow would wait on it in C++,
    deaf to signals, for ever), LISTENING for a gRPC server."""
    host, _, port = address.rpartition(':')
    try:
        with socket.create_connection((host.strip('[]'), int(port)), timeout=timeout) as connection:
            try:
                connection.sendall(HTTP2_OPENING)
                return LISTENING if answers_http2(connection, time.monotonic() + timeout) else SILENT
            except OSError:  # accepted, then reset or timed out: not a server to train with
                return SILENT
    except OSError:
        return None


def answers_http2(connection, deadline):
    """Whether the first frame `connection` receives before `deadline` is SETTINGS."""
    header = b''
    while len(header) < 4:
        connection.settimeout(max(deadline - time.monotonic(), 0.01))
        received = connection.recv(9 - len(header))
        if not received:  # closed without a word
            return False
        header += received
    return header[3] == HTTP2_SETTINGS


def workers_named(role, indices):
    """'1 (host:port), 2 (host:port)': the workers of `indices`, for a message."""
    return ', '.join(f'{i} ({role.workers[i]})' for i in indices)


def wait_for_peers(role, seconds, stop):
    """Returns once every other worker's server answers as a gRPC server;
    ClusterError naming those that do not after `seconds`, Interrupted at
    a signal."""
    deadline = time.monotonic() + seconds
    found = {i: None for i in range(len(role.workers)) if i != role.index}
    told = False
    while True:
        found = {i: probe(role.workers[i]) for i, was in found.items() if was != LISTENING}
        missing = [i for i, what in found.items() if what != LISTENING]
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise ClusterError(not_started_message(role, found, seconds))
        if not told:
            print(f'Waiting up to {seconds:g} s for worker {workers_named(role, missing)} of the job',
                  flush=True)
            told = True
        stop.check()
        time.sleep(PEER_POLL_SECONDS)


def not_started_message(role, found, seconds):
    """The one line for the workers of `found` (index: what probe found)
    that are not servers of the job after `seconds`."""
    silent = [i for i, what in found.items() if what == SILENT]
    absent = [i for i, what in found.items() if what is None]
    parts = []
    if absent:
        parts.append(f'worker {workers_named(role, absent)} of the job did not start within {seconds:g} s; '
                     f'start it with the same command and its TF_CONFIG task index, or raise peer_wait_seconds')
    if silent:
        parts.append(f'worker {workers_named(role, silent)}: a program that is not TensorFlow holds that port '
                     f'(it accepts connections but does not answer as a TensorFlow server); stop it, or '
                     f'give the worker a free port in TF_CONFIG')
    return '; '.join(parts)


def start(role, session_proto):
    """The strategy and this task's server; returns (strategy, server, proto)."""
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec({'worker': role.workers}), task_type='worker', task_id=role.index)
    strategy = v1.distribute.experimental.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    proto = strategy.update_config_proto(session_proto)
    server = tf.distribute.Server(resolver.cluster_spec(), job_name='worker',
                                  task_index=role.index, config=proto, start=True)
    return strategy, server, proto


def mean_over_workers(strategy, tensor):
    """An op giving the mean of `tensor` over all replicas of the job
    (all-reduced across workers), e.g. to check that they agree."""
    with strategy.scope():
        per_replica = strategy.run(lambda: tf.identity(tf.cast(tensor, tf.float32)))
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)


def check_agreement(session, agreement, done, images):
    """Raises PeerLost unless every worker of the job restored the same
    progress (the chief's newest checkpoint)."""
    mean = session.run(agreement)
    if abs(mean[0] - done) > 1e-6 or abs(mean[1] - images) > 1e-3:
        raise PeerLost(f'the workers restored different checkpoints (this one: {done} epochs '
                       f'and {images} images; the mean: {mean[0]:g} and {mean[1]:g})')


def restart_process(reason):
    """Replaces this process by a fresh run of the same command (same PID):
    the only way to reset TensorFlow's collective runtime after a lost peer."""
    print(f'{reason}; starting again to rejoin the job from the newest checkpoint',
          file=sys.stderr, flush=True)
    time.sleep(RESTART_DELAY_SECONDS)  # lets the chief write what it was writing
    os.execv(sys.executable, [sys.executable] + sys.argv)
