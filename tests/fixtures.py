"""Small datasets written in the official on-disk formats, for tests.

Written from the format descriptions, independently of loaders.py. Every
writer returns the arrays it wrote as a dict of numpy arrays:

    x_train, y_train, x_test, y_test   images NHWC uint8, labels int64

CIFAR writers also return `data_train` / `data_test`: the raw [N, 3072] rows as
stored (1024 red, 1024 green, 1024 blue, each row-major 32x32).

API
    mnist_arrays(n_train=120, n_test=40, seed=0) -> dict
    idx_bytes(array, magic=None, shape=None) -> bytes   uncompressed idx file
    write_gz(path, raw) -> path
    zeros_gz(size) -> bytes                        gzip data (concatenated members) that
        inflates to `size` zero bytes: ~1 KB per MiB, for decompression bombs
    write_gz_bomb(path, header, size) -> path      `header` then `size` zeros, gzipped
    npy_bytes(array, version=(1, 0), shape=None) -> bytes
        an .npy file; `shape` declares another shape than the data has
    write_npz(path, members) -> path               a zip of {name: .npy bytes}, as np.savez
    write_mnist_gz(directory, n_train=120, n_test=40, seed=0) -> dict
        the four train-/t10k-*-idx?-ubyte.gz files
    write_mnist_npz(directory, n_train=120, n_test=40, seed=0) -> dict
        Keras' mnist.npz (x_* as [N, 28, 28], no channel axis on disk)
    MNIST_GZ_NAMES: {'train_images' | 'train_labels' | 'test_images' | 'test_labels': file name}

    cifar_arrays(n_per_batch=20, seed=0) -> dict   (5 * n_per_batch training rows)
    cifar_batch_bytes(data, labels, batch_label=b'...', style='py2') -> bytes
        one pickled batch; style 'py2' writes what Python 2 / numpy 1 wrote (the
        official files), 'py3' is plain pickle.dumps(protocol=2) under numpy 2
    write_cifar_batches(directory, n_per_batch=20, seed=0, style='py2') -> dict
        directory/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    write_cifar_tar_gz(directory, n_per_batch=20, seed=0, omit=(), replace=None,
                       extra=()) -> dict
        directory/cifar-10-python.tar.gz with the same members under
        cifar-10-batches-py/; `omit` batch names to leave out, `replace`
        {batch name: bytes} to substitute, `extra` [(TarInfo or name, bytes)]
        appended as-is (for hostile archives)
    write_cifar_tar_gz_bomb(directory, member, size, n_per_batch=2) -> path
        a .tar.gz whose first member, cifar-10-batches-py/<member>, holds `size`
        zero bytes (a multiple of 512), the other real members after it
    allocating_batch_bytes(data, labels=(0, 1)) -> bytes   a pickled batch whose data
        (and labels, if a call) come from calls: (callable, args) pickled as they stand
    CIFAR_BATCHES: ('data_batch_1', ..., 'data_batch_5', 'test_batch')

    md5_file(path) -> hex digest
    serve_directory(directory) -> context manager yielding a Server with
        .url (http://127.0.0.1:PORT/, serving `directory`) and .requests (list of
        request paths); shut down on exit
    closed_port_url(name='x') -> an http://127.0.0.1 URL nobody listens on
    Job(root, args, workers=2)                     a multi-worker job of main.py on
        loopback: start(index), wait_for(index, text, timeout), wait(timeout), kill_all()
"""
import contextlib
import functools
import gzip
import hashlib
import http.server
import io
import json
import os
import pickle
import socket
import struct
import subprocess
import sys
import tarfile
import threading
import time
import zipfile

import numpy as np

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The start of a script for a child process whose CPU is split into two
# logical devices, so that two replicas run without GPUs; str.format it with
# project=PROJECT_DIR (the rest of such a script doubles its braces).
TWO_CPU_SCRIPT = """
import json, os, sys
sys.path.insert(0, {project!r})
os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
import numpy as np
import tensorflow as tf
v1 = tf.compat.v1
v1.disable_eager_execution()
cpu = tf.config.list_physical_devices('CPU')[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
"""

MNIST_GZ_NAMES = {
    'train_images': 'train-images-idx3-ubyte.gz',
    'train_labels': 'train-labels-idx1-ubyte.gz',
    'test_images': 't10k-images-idx3-ubyte.gz',
    'test_labels': 't10k-labels-idx1-ubyte.gz',
}
CIFAR_FOLDER = 'cifar-10-batches-py'
CIFAR_ARCHIVE = 'cifar-10-python.tar.gz'
CIFAR_BATCHES = tuple(f'data_batch_{i}' for i in range(1, 6)) + ('test_batch',)


# --- MNIST --------------------------------------------------------------------

def mnist_arrays(n_train=120, n_test=40, seed=0):
    rng = np.random.default_rng(seed)
    return {
        'x_train': rng.integers(0, 256, (n_train, 28, 28, 1), dtype=np.uint8),
        'y_train': rng.integers(0, 10, n_train).astype(np.int64),
        'x_test': rng.integers(0, 256, (n_test, 28, 28, 1), dtype=np.uint8),
        'y_test': rng.integers(0, 10, n_test).astype(np.int64),
    }


def idx_bytes(array, magic=None, shape=None):
    """An idx file of unsigned bytes: magic 0x0000 08 <ndim>, big-endian uint32 dims, data;
    `shape` declares other dimensions than the data has."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    shape = array.shape if shape is None else shape
    if magic is None:
        magic = 0x00000800 | len(shape)
    header = struct.pack('>I', magic) + b''.join(struct.pack('>I', d) for d in shape)
    return header + array.tobytes()


def write_gz(path, raw):
    with gzip.open(path, 'wb') as f:
        f.write(raw)
    return path


def zeros_gz(size):
    # Identical gzip members, one per MiB: built in no time, inflated as one stream.
    mib = gzip.compress(bytes(1 << 20), compresslevel=9)
    whole, rest = divmod(size, 1 << 20)
    return mib * whole + (gzip.compress(bytes(rest), compresslevel=9) if rest else b'')


def write_gz_bomb(path, header, size):
    with open(path, 'wb') as f:
        f.write(gzip.compress(header) + zeros_gz(size))
    return path


def npy_bytes(array, version=(1, 0), shape=None):
    array = np.asarray(array)  # tobytes() below writes C order
    out = io.BytesIO()
    header = {'descr': np.lib.format.dtype_to_descr(array.dtype), 'fortran_order': False,
              'shape': tuple(array.shape if shape is None else shape)}
    write = np.lib.format.write_array_header_2_0 if version == (2, 0) else \
        np.lib.format.write_array_header_1_0
    write(out, header)
    raw = out.getvalue()
    if version not in ((1, 0), (2, 0)):  # a version numpy does not write: its magic, a 1.0 header
        raw = np.lib.format.magic(*version) + raw[8:]
    return raw + array.tobytes()


def write_npz(path, members):
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as z:
        for name, raw in members.items():
            z.writestr(name, raw)
    return path


def write_mnist_gz(directory, n_train=120, n_test=40, seed=0):
    os.makedirs(directory, exist_ok=True)
    a = mnist_arrays(n_train, n_test, seed)
    for key, array in (('train_images', a['x_train'][..., 0]), ('train_labels', a['y_train']),
                       ('test_images', a['x_test'][..., 0]), ('test_labels', a['y_test'])):
        write_gz(os.path.join(directory, MNIST_GZ_NAMES[key]), idx_bytes(array))
    return a


def write_mnist_npz(directory, n_train=120, n_test=40, seed=0):
    os.makedirs(directory, exist_ok=True)
    a = mnist_arrays(n_train, n_test, seed)
    np.savez(os.path.join(directory, 'mnist.npz'),
             x_train=a['x_train'][..., 0], y_train=a['y_train'].astype(np.uint8),
             x_test=a['x_test'][..., 0], y_test=a['y_test'].astype(np.uint8))
    return a


# --- CIFAR-10 -----------------------------------------------------------------

def rows_to_nhwc(data):
    """[N, 3072] rows (R plane, G plane, B plane) -> [N, 32, 32, 3]."""
    return np.stack([data[:, c * 1024:(c + 1) * 1024].reshape(-1, 32, 32) for c in range(3)], -1)


def cifar_arrays(n_per_batch=20, seed=0):
    rng = np.random.default_rng(seed)
    data_train = rng.integers(0, 256, (5 * n_per_batch, 3072), dtype=np.uint8)
    data_test = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
    return {
        'data_train': data_train, 'data_test': data_test,
        'x_train': rows_to_nhwc(data_train), 'x_test': rows_to_nhwc(data_test),
        'y_train': rng.integers(0, 10, 5 * n_per_batch).astype(np.int64),
        'y_test': rng.integers(0, 10, n_per_batch).astype(np.int64),
    }


class _Py2Pickler(pickle._Pickler):
    """Writes bytes and str as Python 2 strings and numpy 1 module names."""
    dispatch = dict(pickle._Pickler.dispatch)

    def _save_str8(self, obj):
        raw = obj.encode('latin-1') if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack('<i', len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = _save_str8
    dispatch[str] = _save_str8

    def save_global(self, obj, name=None):
        module = getattr(obj, '__module__', None)
        name = name or obj.__qualname__
        if module and module.startswith('numpy._core'):
            module = 'numpy.core' + module[len('numpy._core'):]
            self.write(pickle.GLOBAL + module.encode() + b'\n' + name.encode() + b'\n')
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def cifar_batch_bytes(data, labels, batch_label=b'training batch 1 of 5', style='py2'):
    batch = {
        b'batch_label': batch_label,
        b'labels': [int(v) for v in labels],
        b'data': np.ascontiguousarray(data, dtype=np.uint8),
        b'filenames': [f'img_{i:05d}.png'.encode() for i in range(len(labels))],
    }
    if style == 'py3':
        return pickle.dumps(batch, protocol=2)
    out = io.BytesIO()
    _Py2Pickler(out, protocol=2).dump(batch)
    return out.getvalue()


def _meta_bytes():
    names = [b'airplane', b'automobile', b'bird', b'cat', b'deer',
             b'dog', b'frog', b'horse', b'ship', b'truck']
    return pickle.dumps({b'num_cases_per_batch': 10000, b'label_names': names,
                         b'num_vis': 3072}, protocol=2)


def _cifar_members(a, n_per_batch, style):
    members = {}
    for i in range(5):
        rows = slice(i * n_per_batch, (i + 1) * n_per_batch)
        members[f'data_batch_{i + 1}'] = cifar_batch_bytes(
            a['data_train'][rows], a['y_train'][rows], f'training batch {i + 1} of 5'.encode(), style)
    members['test_batch'] = cifar_batch_bytes(a['data_test'], a['y_test'], b'testing batch 1 of 1', style)
    members['batches.meta'] = _meta_bytes()
    return members


def write_cifar_batches(directory, n_per_batch=20, seed=0, style='py2'):
    a = cifar_arrays(n_per_batch, seed)
    folder = os.path.join(directory, CIFAR_FOLDER)
    os.makedirs(folder, exist_ok=True)
    for name, raw in _cifar_members(a, n_per_batch, style).items():
        with open(os.path.join(folder, name), 'wb') as f:
            f.write(raw)
    return a


def write_cifar_tar_gz(directory, n_per_batch=20, seed=0, omit=(), replace=None, extra=()):
    a = cifar_arrays(n_per_batch, seed)
    members = _cifar_members(a, n_per_batch, 'py2')
    members.update(replace or {})
    os.makedirs(directory, exist_ok=True)
    with tarfile.open(os.path.join(directory, CIFAR_ARCHIVE), 'w:gz') as tar:
        folder = tarfile.TarInfo(CIFAR_FOLDER)
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        for name, raw in members.items():
            if name not in omit:
                _add(tar, f'{CIFAR_FOLDER}/{name}', raw)
        for info, raw in extra:
            _add(tar, info, raw)
    return a


def write_cifar_tar_gz_bomb(directory, member, size, n_per_batch=2):
    assert size % tarfile.BLOCKSIZE == 0
    bomb = tarfile.TarInfo(f'{CIFAR_FOLDER}/{member}')
    bomb.size = size
    rest = io.BytesIO()
    with tarfile.open(fileobj=rest, mode='w') as tar:
        for name, raw in _cifar_members(cifar_arrays(n_per_batch), n_per_batch, 'py2').items():
            if name != member:
                _add(tar, f'{CIFAR_FOLDER}/{name}', raw)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, CIFAR_ARCHIVE)
    with open(path, 'wb') as f:  # header, zeros, the rest: one tar stream in gzip members
        f.write(gzip.compress(bomb.tobuf(tarfile.GNU_FORMAT)) + zeros_gz(size)
                + gzip.compress(rest.getvalue()))
    return path


class _Call:
    def __init__(self, call):
        self.call = call

    def __reduce__(self):
        return self.call


def allocating_batch_bytes(data, labels=(0, 1)):
    """A pickled batch whose data (and labels, if given so) are built by
    calls: (callable, args) pairs, pickled as they stand."""
    labels = _Call(labels) if callable(labels[0]) else [int(v) for v in labels]
    return pickle.dumps({b'batch_label': b'x', b'labels': labels, b'data': _Call(data),
                         b'filenames': []}, protocol=2)


def _add(tar, info, raw):
    if isinstance(info, str):
        info = tarfile.TarInfo(info)
    if info.isfile():
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    else:
        tar.addfile(info)


# --- download helpers ---------------------------------------------------------

def md5_file(path):
    with open(path, 'rb') as f:
        return hashlib.md5(f.read()).hexdigest()


class Server:
    def __init__(self, url):
        self.url = url
        self.requests = []


@contextlib.contextmanager
def serve_directory(directory):
    """A ThreadingHTTPServer on 127.0.0.1 (free port) serving `directory`."""
    server_info = Server(None)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            server_info.requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0), functools.partial(Handler, directory=str(directory)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    server_info.url = f'http://127.0.0.1:{httpd.server_address[1]}/'
    try:
        yield server_info
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def closed_port_url(name='x'):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    return f'http://127.0.0.1:{port}/{name}'


class Job:
    """Workers of one multi-worker job on loopback, as child processes
    running `python main.py`, their output in files."""
    SECONDS = 240  # a job of two workers on a test dataset must end by itself within this

    def __init__(self, root, args, workers=2):
        self.root, self.args = root, args
        self.addresses = loopback_addresses(workers)
        self.processes = {}

    def log(self, index):
        return self.root / f'worker{index}.log'

    def start(self, index):
        env = {**os.environ, 'TF_CONFIG': tf_config(self.addresses, index)}
        env.pop('TF_CPP_MIN_LOG_LEVEL', None)
        with open(self.log(index), 'a') as out:
            self.processes[index] = subprocess.Popen(
                [sys.executable, os.path.join(PROJECT_DIR, 'main.py'),
                 f'datasets_root={self.root / "datasets"}', *self.args],
                cwd=self.root, env=env, stdout=out, stderr=subprocess.STDOUT)

    def wait_for(self, index, text, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log(index).read_text():
                return
            time.sleep(0.05)
        raise AssertionError(f'worker {index} never printed {text!r}:\n{self.log(index).read_text()[-3000:]}')

    def wait(self, timeout):
        deadline = time.monotonic() + timeout
        codes = {}
        for index, process in self.processes.items():
            codes[index] = process.wait(timeout=max(deadline - time.monotonic(), 1))
        return codes

    def kill_all(self):
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


# --- multi-worker jobs on one machine ------------------------------------------

def tf_config(addresses, index):
    """The TF_CONFIG text of worker `index` of a job on `addresses`."""
    return json.dumps({'cluster': {'worker': list(addresses)},
                       'task': {'type': 'worker', 'index': index}})


def loopback_addresses(count):
    """`count` addresses on 127.0.0.1 with ports free now, for a job on one
    machine (tests, benchmarks, trying a job out)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(('127.0.0.1', 0))
        return [f'127.0.0.1:{s.getsockname()[1]}' for s in sockets]
    finally:
        for s in sockets:
            s.close()
