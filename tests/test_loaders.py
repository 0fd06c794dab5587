"""loaders.py: digits, MNIST and CIFAR-10 (32 px) from their official formats."""
import os
import pickle
import resource
import subprocess
import sys
import tarfile
import textwrap
import time

import numpy as np
import pytest

from foundation.data import download, loaders
from foundation.errors import DataError
from tests import fixtures

MAIN = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


MEMORY_BOUND_MB = 600  # a loader refusing a hostile file stays far below this


def load_in_child(loader, data_dir, limit_mb=MEMORY_BOUND_MB):
    """Runs loaders.<loader>(data_dir) in a child process whose address
    space is limited to `limit_mb`; returns (what it printed: 'DataError
    <message>' or 'loaded', its peak RSS in MB, seconds)."""
    script = textwrap.dedent(f"""
        import resource
        from foundation.data import loaders
        try:
            loaders.{loader}({str(data_dir)!r}, 0, False)
            print('loaded')
        except loaders.DataError as error:
            print('DataError', error)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    """)
    limit = limit_mb << 20
    started = time.monotonic()
    result = subprocess.run([sys.executable, '-c', script], cwd=MAIN, capture_output=True, text=True,
                            timeout=120, preexec_fn=lambda: resource.setrlimit(
                                resource.RLIMIT_AS, (limit, limit)))
    assert result.returncode == 0, result.stderr[-2000:]
    printed, peak = result.stdout.rstrip().rsplit('\n', 1)
    return printed, int(peak), time.monotonic() - started


def image_label_multiset(images, labels):
    return sorted((img.tobytes(), int(lab)) for img, lab in zip(images, labels))


# --- digits -------------------------------------------------------------------

@pytest.fixture(scope='module')
def digits():
    return loaders.load_digits(None, 0, False)


def test_digits_split_sizes_shape_and_dtype(digits):
    assert (len(digits.train), len(digits.valid), len(digits.test)) == (1437, 180, 180)
    for split in (digits.train, digits.valid, digits.test):
        assert split.images.shape[1:] == (8, 8, 1)
        assert split.images.dtype == np.uint8
        assert split.labels.dtype == np.int64
    assert digits.num_classes == 10
    assert digits.image_shape == (8, 8, 1)


def test_digits_splits_are_a_partition_of_the_bundled_set(digits):
    from sklearn.datasets import load_digits
    full = load_digits()
    whole = image_label_multiset(full.images.astype(np.uint8)[..., None], full.target)
    parts = []
    for split in (digits.train, digits.valid, digits.test):
        parts += image_label_multiset(split.images, split.labels)
    assert sorted(parts) == whole


def test_digits_stratified(digits):
    from sklearn.datasets import load_digits
    counts = np.bincount(load_digits().target, minlength=10)
    for split in (digits.valid, digits.test):
        got = np.bincount(split.labels, minlength=10)
        assert (got > 0).all()
        np.testing.assert_array_less(np.abs(got - counts * len(split) / counts.sum()), 1.0 + 1e-9)


def test_digits_deterministic_per_seed(digits):
    again = loaders.load_digits(None, 0, False)
    other = loaders.load_digits(None, 1, False)
    for a, b in ((digits.train, again.train), (digits.valid, again.valid), (digits.test, again.test)):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(digits.test.labels, other.test.labels) or \
        not np.array_equal(digits.test.images, other.test.images)


def test_digits_mean_std_are_training_channel_stats(digits):
    pixels = digits.train.images.reshape(-1, 1).astype(np.float64)
    np.testing.assert_allclose(digits.mean, pixels.mean(0), rtol=1e-6)
    np.testing.assert_allclose(digits.std, pixels.std(0), rtol=1e-6)
    assert digits.mean.dtype == np.float32 and digits.std.dtype == np.float32
    assert not np.allclose(digits.mean, digits.test.images.reshape(-1, 1).mean(0), rtol=1e-9, atol=0)


# --- MNIST --------------------------------------------------------------------

def check_split_dataset(data, a, n_valid, image_shape):
    """Validation = the first n_valid official training images; stats of train."""
    np.testing.assert_array_equal(data.valid.images, a['x_train'][:n_valid])
    np.testing.assert_array_equal(data.valid.labels, a['y_train'][:n_valid])
    np.testing.assert_array_equal(data.train.images, a['x_train'][n_valid:])
    np.testing.assert_array_equal(data.train.labels, a['y_train'][n_valid:])
    np.testing.assert_array_equal(data.test.images, a['x_test'])
    np.testing.assert_array_equal(data.test.labels, a['y_test'])
    for split in (data.train, data.valid, data.test):
        assert split.images.dtype == np.uint8 and split.images.shape[1:] == image_shape
        assert split.labels.dtype == np.int64
    pixels = data.train.images.reshape(-1, image_shape[-1]).astype(np.float64)
    np.testing.assert_allclose(data.mean, pixels.mean(0), rtol=1e-6)
    np.testing.assert_allclose(data.std, pixels.std(0), rtol=1e-6)


def check_mnist(data, a):
    check_split_dataset(data, a, round(len(a['y_train']) / 12), (28, 28, 1))


def test_mnist_from_gz(tmp_path):
    a = fixtures.write_mnist_gz(tmp_path, n_train=120, n_test=40)
    data = loaders.load_mnist(str(tmp_path), 0, False)
    assert (len(data.train), len(data.valid), len(data.test)) == (110, 10, 40)
    check_mnist(data, a)


def test_mnist_from_npz_when_gz_absent(tmp_path):
    a = fixtures.write_mnist_npz(tmp_path, n_train=96, n_test=30, seed=3)
    data = loaders.load_mnist(str(tmp_path), 0, False)
    assert (len(data.train), len(data.valid), len(data.test)) == (88, 8, 30)
    check_mnist(data, a)


def test_mnist_gz_preferred_over_npz(tmp_path):
    a = fixtures.write_mnist_gz(tmp_path, seed=1)
    fixtures.write_mnist_npz(tmp_path, seed=2)
    check_mnist(loaders.load_mnist(str(tmp_path), 0, False), a)


def test_mnist_missing_files_lists_names_and_directory(tmp_path, monkeypatch):
    fixtures.write_mnist_gz(tmp_path)
    kept = fixtures.MNIST_GZ_NAMES['train_images'], fixtures.MNIST_GZ_NAMES['test_labels']
    gone = fixtures.MNIST_GZ_NAMES['train_labels'], fixtures.MNIST_GZ_NAMES['test_images']
    for name in gone:
        os.remove(tmp_path / name)
    monkeypatch.setattr(download, 'fetch', lambda *a, **k: pytest.fail('network used'))
    with pytest.raises(DataError) as info:
        loaders.load_mnist(str(tmp_path), 0, False)
    message = str(info.value)
    assert str(tmp_path) in message
    for name in gone:
        assert name in message
    for name in kept:
        assert name not in message


def test_mnist_empty_dir_lists_all_four(tmp_path):
    with pytest.raises(DataError) as info:
        loaders.load_mnist(str(tmp_path), 0, False)
    for name in fixtures.MNIST_GZ_NAMES.values():
        assert name in str(info.value)
    assert str(tmp_path) in str(info.value)


def corrupt_mnist(directory, case):
    """Rewrites one MNIST file of a valid fixture; returns the name of the bad file."""
    a = fixtures.write_mnist_gz(directory)
    names = fixtures.MNIST_GZ_NAMES
    if case == 'truncated_gz':
        path = os.path.join(directory, names['train_images'])
        raw = open(path, 'rb').read()
        open(path, 'wb').write(raw[:len(raw) // 2])
        return names['train_images']
    if case == 'not_gzip':
        path = os.path.join(directory, names['test_images'])
        open(path, 'wb').write(fixtures.idx_bytes(a['x_test'][..., 0]))
        return names['test_images']
    if case == 'wrong_magic':  # a float idx
        fixtures.write_gz(os.path.join(directory, names['train_images']),
                          fixtures.idx_bytes(a['x_train'][..., 0], magic=0x00000D03))
        return names['train_images']
    if case == 'wrong_ndim':  # labels where images belong
        fixtures.write_gz(os.path.join(directory, names['test_images']), fixtures.idx_bytes(a['y_test']))
        return names['test_images']
    if case == 'size_short':
        raw = fixtures.idx_bytes(a['x_train'][..., 0])
        fixtures.write_gz(os.path.join(directory, names['train_images']), raw[:-784])
        return names['train_images']
    if case == 'size_long':
        raw = fixtures.idx_bytes(a['y_test'])
        fixtures.write_gz(os.path.join(directory, names['test_labels']), raw + b'\x00')
        return names['test_labels']
    if case == 'header_truncated':
        fixtures.write_gz(os.path.join(directory, names['train_labels']), b'\x00\x00\x08')
        return names['train_labels']
    if case == 'count_mismatch':
        fixtures.write_gz(os.path.join(directory, names['train_labels']),
                          fixtures.idx_bytes(a['y_train'][:-1]))
        return names['train_labels']
    if case == 'dims_overflow':  # 2^31 x 2^31 x 4 wraps to 0 in an int64 product
        fixtures.write_gz(os.path.join(directory, names['train_images']),
                          fixtures.idx_bytes(np.zeros(0, np.uint8), shape=(2**31, 2**31, 4)))
        return names['train_images']
    if case == 'count_implausible':
        fixtures.write_gz(os.path.join(directory, names['test_labels']),
                          fixtures.idx_bytes(a['y_test'], shape=(10**9,)))
        return names['test_labels']
    if case == 'label_out_of_range':
        y = a['y_test'].copy()
        y[5] = 10
        fixtures.write_gz(os.path.join(directory, names['test_labels']), fixtures.idx_bytes(y))
        return names['test_labels']
    raise ValueError(case)


MNIST_BAD = ['truncated_gz', 'not_gzip', 'wrong_magic', 'wrong_ndim', 'size_short', 'size_long',
             'header_truncated', 'count_mismatch', 'label_out_of_range', 'dims_overflow',
             'count_implausible']


@pytest.mark.parametrize('case', MNIST_BAD)
def test_mnist_bad_input_raises_data_error(tmp_path, case):
    corrupt_mnist(str(tmp_path), case)
    with pytest.raises(DataError):
        loaders.load_mnist(str(tmp_path), 0, False)


@pytest.mark.parametrize('case', MNIST_BAD)
def test_mnist_bad_input_message_names_the_file(tmp_path, case):
    bad = corrupt_mnist(str(tmp_path), case)
    with pytest.raises(DataError, match=bad.replace('.', r'\.')):
        loaders.load_mnist(str(tmp_path), 0, False)


def test_mnist_gzip_bomb_costs_no_more_than_its_header_declares(tmp_path):
    """3 MB of gzip with a true header (60000 x 28 x 28) and 3 GiB of zeros:
    reading stops one byte after the 47 MB the header declares."""
    fixtures.write_mnist_gz(tmp_path)
    header = fixtures.idx_bytes(np.zeros(0, np.uint8), shape=(60000, 28, 28))
    fixtures.write_gz_bomb(tmp_path / fixtures.MNIST_GZ_NAMES['train_images'], header, 3 << 30)
    printed, peak_mb, seconds = load_in_child('load_mnist', tmp_path)
    assert printed.startswith('DataError') and fixtures.MNIST_GZ_NAMES['train_images'] in printed
    assert 'declares 47040000 bytes of data, the file holds more' in printed
    assert peak_mb < MEMORY_BOUND_MB and seconds < 30


@pytest.mark.parametrize('member', ['x_train', 'y_test'])
def test_mnist_npz_declaring_a_billion_images_is_refused_before_allocating(tmp_path, member):
    a = fixtures.mnist_arrays()
    arrays = {'x_train': a['x_train'][..., 0], 'y_train': a['y_train'].astype(np.uint8),
              'x_test': a['x_test'][..., 0], 'y_test': a['y_test'].astype(np.uint8)}
    fixtures.write_npz(tmp_path / 'mnist.npz', {
        f'{name}.npy': fixtures.npy_bytes(array, shape=(10**9, *array.shape[1:]) if name == member else None)
        for name, array in arrays.items()})
    printed, peak_mb, _ = load_in_child('load_mnist', tmp_path)
    assert printed.startswith(f'DataError {tmp_path / "mnist.npz"}:{member}.npy: its header declares '
                              f'shape [1000000000')
    assert peak_mb < MEMORY_BOUND_MB


@pytest.mark.parametrize('case', [
    'truncated',
    'missing_key', 'object_array', 'count_mismatch'])
def test_mnist_bad_npz_raises_data_error(tmp_path, case):
    a = fixtures.write_mnist_npz(tmp_path)
    path = tmp_path / 'mnist.npz'
    arrays = dict(x_train=a['x_train'][..., 0], y_train=a['y_train'],
                  x_test=a['x_test'][..., 0], y_test=a['y_test'])
    if case == 'truncated':
        path.write_bytes(path.read_bytes()[:-100])
    elif case == 'missing_key':
        del arrays['y_test']
        np.savez(path, **arrays)
    elif case == 'object_array':
        arrays['y_train'] = np.array(list(a['y_train']), dtype=object)
        np.savez(path, **arrays)
    elif case == 'count_mismatch':
        arrays['y_train'] = arrays['y_train'][:-2]
        np.savez(path, **arrays)
    with pytest.raises(DataError):
        loaders.load_mnist(str(tmp_path), 0, False)


@pytest.mark.parametrize('case', ['npz_flat', 'npz_float', 'idx_20x20'])
def test_mnist_rejects_images_that_are_not_28x28_uint8(tmp_path, case):
    a = fixtures.mnist_arrays()
    x_train = a['x_train'][..., 0]
    if case == 'idx_20x20':
        fixtures.write_mnist_gz(tmp_path)
        fixtures.write_gz(tmp_path / fixtures.MNIST_GZ_NAMES['train_images'],
                          fixtures.idx_bytes(x_train[:, :20, :20]))
    else:
        x_train = x_train.reshape(len(x_train), -1) if case == 'npz_flat' else x_train.astype(np.float32)
        np.savez(tmp_path / 'mnist.npz', x_train=x_train, y_train=a['y_train'],
                 x_test=a['x_test'][..., 0], y_test=a['y_test'])
    with pytest.raises(DataError):
        loaders.load_mnist(str(tmp_path), 0, False)


# --- CIFAR-10 -----------------------------------------------------------------

def check_cifar(data, a):
    check_split_dataset(data, a, len(a['y_train']) // 10, (32, 32, 3))


@pytest.mark.parametrize('style', ['py2', 'py3'])
def test_cifar_from_folder(tmp_path, style):
    a = fixtures.write_cifar_batches(tmp_path, n_per_batch=20, style=style)
    data = loaders.load_cifar_32(str(tmp_path), 0, False)
    assert (len(data.train), len(data.valid), len(data.test)) == (90, 10, 20)
    check_cifar(data, a)


def test_cifar_channel_layout_explicit(tmp_path):
    a = fixtures.write_cifar_batches(tmp_path, n_per_batch=20)
    data = loaders.load_cifar_32(str(tmp_path), 0, False)
    images = np.concatenate([data.valid.images, data.train.images])
    rng = np.random.default_rng(0)
    for _ in range(300):
        i, y, x, c = rng.integers(100), rng.integers(32), rng.integers(32), rng.integers(3)
        assert images[i, y, x, c] == a['data_train'][i, c * 1024 + y * 32 + x]
    i, y, x, c = 7, 3, 29, 2
    assert data.test.images[i, y, x, c] == a['data_test'][i, c * 1024 + y * 32 + x]


def test_cifar_from_tar_gz_equals_folder(tmp_path):
    folder_dir, tar_dir = tmp_path / 'folder', tmp_path / 'tar'
    a = fixtures.write_cifar_batches(folder_dir, seed=5)
    b = fixtures.write_cifar_tar_gz(tar_dir, seed=5)
    np.testing.assert_array_equal(a['data_train'], b['data_train'])
    from_folder = loaders.load_cifar_32(str(folder_dir), 0, False)
    from_tar = loaders.load_cifar_32(str(tar_dir), 0, False)
    check_cifar(from_tar, b)
    for name in ('train', 'valid', 'test'):
        np.testing.assert_array_equal(getattr(from_folder, name).images, getattr(from_tar, name).images)
        np.testing.assert_array_equal(getattr(from_folder, name).labels, getattr(from_tar, name).labels)
    np.testing.assert_array_equal(from_folder.mean, from_tar.mean)
    assert os.listdir(tar_dir) == [fixtures.CIFAR_ARCHIVE]  # read in memory, nothing extracted


def test_cifar_missing_lists_archive_and_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(download, 'fetch', lambda *a, **k: pytest.fail('network used'))
    with pytest.raises(DataError) as info:
        loaders.load_cifar_32(str(tmp_path), 0, False)
    assert fixtures.CIFAR_ARCHIVE in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_cifar_folder_missing_batch_names_it(tmp_path):
    fixtures.write_cifar_batches(tmp_path)
    os.remove(tmp_path / fixtures.CIFAR_FOLDER / 'data_batch_4')
    with pytest.raises(DataError, match='data_batch_4'):
        loaders.load_cifar_32(str(tmp_path), 0, False)


def test_cifar_tar_missing_batch_names_it(tmp_path):
    fixtures.write_cifar_tar_gz(tmp_path, omit=('data_batch_3',))
    with pytest.raises(DataError, match='data_batch_3'):
        loaders.load_cifar_32(str(tmp_path), 0, False)


def test_cifar_truncated_tar_names_it(tmp_path):
    fixtures.write_cifar_tar_gz(tmp_path)
    path = tmp_path / fixtures.CIFAR_ARCHIVE
    path.write_bytes(path.read_bytes()[:-2000])
    with pytest.raises(DataError, match=fixtures.CIFAR_ARCHIVE.replace('.', r'\.')):
        loaders.load_cifar_32(str(tmp_path), 0, False)


def write_tampered_batch(tmp_path, name, raw):
    fixtures.write_cifar_batches(tmp_path)
    (tmp_path / fixtures.CIFAR_FOLDER / name).write_bytes(raw)


def batch_dict_bytes(**overrides):
    a = fixtures.cifar_arrays(2)
    batch = {b'batch_label': b'x', b'labels': [int(v) for v in a['y_test']],
             b'data': a['data_test'], b'filenames': [b'a', b'b']}
    batch.update({k.encode(): v for k, v in overrides.items()})
    return pickle.dumps(batch, protocol=2)


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


@pytest.mark.parametrize('where', ['top_level', 'labels', 'data'])
def test_cifar_pickle_that_runs_code_is_refused(tmp_path, where):
    marker = tmp_path / 'pwned_marker'
    payload = RunsCode(marker)
    if where == 'top_level':
        raw = pickle.dumps(payload, protocol=2)
    else:
        raw = batch_dict_bytes(**{where: payload})
    write_tampered_batch(tmp_path, 'data_batch_2', raw)
    with pytest.raises(DataError, match='data_batch_2'):
        loaders.load_cifar_32(str(tmp_path), 0, False)
    assert not marker.exists()


def test_cifar_pickle_that_runs_code_in_tar_is_refused(tmp_path):
    marker = tmp_path / 'pwned_marker'
    fixtures.write_cifar_tar_gz(tmp_path, replace={'test_batch': pickle.dumps(RunsCode(marker), protocol=2)})
    with pytest.raises(DataError, match='test_batch'):
        loaders.load_cifar_32(str(tmp_path), 0, False)
    assert not marker.exists()


class ObjectArrayFromBytes:
    """numpy.ndarray(shape, dtype=object, buffer=raw): raw bytes become PyObject pointers."""

    def __reduce__(self):
        return np.ndarray, ((2,), np.dtype(object), b'\x41' * 16)


def test_cifar_pickle_forging_object_pointers_is_refused(tmp_path):
    write_tampered_batch(tmp_path, 'data_batch_1', batch_dict_bytes(labels=ObjectArrayFromBytes()))
    script = textwrap.dedent(f"""
        from foundation.data import loaders
        try:
            loaders.load_cifar_32({str(tmp_path)!r}, 0, False)
        except loaders.DataError as error:
            print('DataError', error)
    """)
    # In a child process: the bug crashes the interpreter.
    result = subprocess.run([sys.executable, '-c', script], cwd=MAIN, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, (result.returncode, result.stderr[-500:])
    assert 'DataError' in result.stdout and 'data_batch_1' in result.stdout


RECONSTRUCT = np._core.multiarray._reconstruct
ALLOCATING = {  # (data, labels) of a batch, as (callable, args[, state]) calls
    'ndarray_huge': ((np.ndarray, ((10**6, 3072), np.dtype('u1'))),
                     (np.ndarray, ((10**6,), np.dtype('i8')))),  # 2.9 GB without data
    'ndarray_batch_sized': ((np.ndarray, ((100, 3072), np.dtype('u1'))), range(100)),  # garbage
    'reconstruct_with_shape': ((RECONSTRUCT, (np.ndarray, (100, 3072), b'B')), range(100)),
    'state_larger_than_a_batch': ((RECONSTRUCT, (np.ndarray, (0,), b'b'), (
        1, (10001, 3072), np.dtype('u1'), False, bytes(10))), range(2)),
}


@pytest.mark.parametrize('case', ALLOCATING)
def test_cifar_pickle_allocating_arrays_without_their_data_is_refused(tmp_path, case):
    """A pickle may rebuild arrays only from data of their declared size, at
    most a batch's: numpy's ndarray(shape) would allocate gigabytes from a
    286-byte file, or hand uninitialised memory to training."""
    data, labels = ALLOCATING[case]
    write_tampered_batch(tmp_path, 'data_batch_3', fixtures.allocating_batch_bytes(data, labels))
    printed, peak_mb, _ = load_in_child('load_cifar_32', tmp_path)
    assert printed.startswith('DataError') and 'data_batch_3' in printed and 'refusing' in printed
    assert peak_mb < MEMORY_BOUND_MB


@pytest.mark.parametrize('where', ['tar', 'folder'])
def test_cifar_file_of_3_gib_is_refused_before_it_is_read(tmp_path, where):
    if where == 'tar':  # 3 MB of gzip
        fixtures.write_cifar_tar_gz_bomb(tmp_path, 'data_batch_1', 3 << 30)
    else:  # a sparse file
        fixtures.write_cifar_batches(tmp_path)
        with open(tmp_path / fixtures.CIFAR_FOLDER / 'data_batch_1', 'r+b') as f:
            f.truncate(3 << 30)
    printed, peak_mb, seconds = load_in_child('load_cifar_32', tmp_path)
    assert printed.startswith('DataError') and 'data_batch_1 holds 3221225472 bytes' in printed
    assert peak_mb < MEMORY_BOUND_MB and seconds < 30


@pytest.mark.parametrize('case', ['truncated', 'not_a_dict', 'no_labels', 'wrong_width',
                                  'wrong_dtype', 'count_mismatch'])
def test_cifar_malformed_batch_raises_data_error_naming_it(tmp_path, case):
    a = fixtures.cifar_arrays(2)
    if case == 'truncated':
        raw = fixtures.cifar_batch_bytes(a['data_test'], a['y_test'])[:-100]
    elif case == 'not_a_dict':
        raw = pickle.dumps([1, 2, 3], protocol=2)
    elif case == 'no_labels':
        raw = pickle.dumps({b'data': a['data_test']}, protocol=2)
    elif case == 'wrong_width':
        raw = batch_dict_bytes(data=a['data_test'][:, :3000])
    elif case == 'wrong_dtype':
        raw = batch_dict_bytes(data=a['data_test'].astype(np.float32))
    else:
        raw = batch_dict_bytes(labels=[1])
    write_tampered_batch(tmp_path, 'data_batch_5', raw)
    with pytest.raises(DataError, match='data_batch_5'):
        loaders.load_cifar_32(str(tmp_path), 0, False)


def test_cifar_label_out_of_range_raises(tmp_path):
    write_tampered_batch(tmp_path, 'test_batch', batch_dict_bytes(labels=[3, 10]))
    with pytest.raises(DataError):
        loaders.load_cifar_32(str(tmp_path), 0, False)


def test_cifar_label_out_of_range_message_names_batch(tmp_path):
    write_tampered_batch(tmp_path, 'test_batch', batch_dict_bytes(labels=[3, 10]))
    with pytest.raises(DataError, match='test_batch'):
        loaders.load_cifar_32(str(tmp_path), 0, False)


def escaping_members(tmp_path):
    outside = tmp_path / 'outside'
    return outside, [
        ('../evil', b'evil'),
        (f'{fixtures.CIFAR_FOLDER}/../../evil2', b'evil'),
        (str(outside / 'abs_evil'), b'evil'),
        ('../data_batch_1', b'not a pickle'),  # escaping path with a batch's name
    ]


def links(target_dir):
    sym = tarfile.TarInfo(f'{fixtures.CIFAR_FOLDER}/data_batch_1')
    sym.type, sym.linkname = tarfile.SYMTYPE, str(target_dir / 'secret')
    hard = tarfile.TarInfo(f'{fixtures.CIFAR_FOLDER}/test_batch')
    hard.type, hard.linkname = tarfile.LNKTYPE, '../../etc/passwd'
    return [(sym, b''), (hard, b'')]


def test_cifar_tar_with_escaping_paths_writes_nothing_outside(tmp_path):
    data_dir = tmp_path / 'data'
    outside, extra = escaping_members(tmp_path)
    outside.mkdir()
    extra = [(n, r) for n, r in extra if n != '../data_batch_1']
    a = fixtures.write_cifar_tar_gz(data_dir, extra=extra)
    with tarfile.open(data_dir / fixtures.CIFAR_ARCHIVE) as tar:
        assert '../evil' in tar.getnames()
    before = sorted(p for p in tmp_path.rglob('*'))
    check_cifar(loaders.load_cifar_32(str(data_dir), 0, False), a)
    assert sorted(p for p in tmp_path.rglob('*')) == before
    assert not list(outside.iterdir())


def test_cifar_tar_with_escaping_batch_name_fails_cleanly_or_loads(tmp_path):
    data_dir = tmp_path / 'data'
    outside, extra = escaping_members(tmp_path)
    outside.mkdir()
    fixtures.write_cifar_tar_gz(data_dir, omit=fixtures.CIFAR_BATCHES, extra=extra + links(outside))
    before = sorted(p for p in tmp_path.rglob('*'))
    with pytest.raises(DataError):
        loaders.load_cifar_32(str(data_dir), 0, False)
    assert sorted(p for p in tmp_path.rglob('*')) == before


def test_cifar_tar_links_named_like_batches_are_not_followed(tmp_path):
    data_dir = tmp_path / 'data'
    outside = tmp_path / 'outside'
    outside.mkdir()
    (outside / 'secret').write_bytes(pickle.dumps({b'data': 1}, protocol=2))
    fixtures.write_cifar_tar_gz(data_dir, omit=('data_batch_1', 'test_batch'), extra=links(outside))
    with pytest.raises(DataError, match='data_batch_1'):
        loaders.load_cifar_32(str(data_dir), 0, False)


# --- DATASETS -----------------------------------------------------------------

def test_datasets_table_matches_loaders(tmp_path):
    fixtures.write_mnist_gz(tmp_path / 'mnist')
    fixtures.write_cifar_batches(tmp_path / 'cifar')
    dirs = {'digits': None, 'mnist': str(tmp_path / 'mnist'), 'cifar_32': str(tmp_path / 'cifar')}
    assert set(loaders.DATASETS) == set(dirs) | {'cifar_128', 'imagenet'}  # streamed: test_streaming
    for name in dirs:
        info = loaders.DATASETS[name]
        data = info.load(dirs[name], 0, False)
        assert isinstance(data, loaders.ArrayDataset)
        assert data.num_classes == info.num_classes == 10
        assert tuple(data.image_shape) == tuple(info.image_shape)
        for split in (data.train, data.valid, data.test):
            assert split.images.shape[1:] == tuple(info.image_shape)
            assert split.labels.max() < info.num_classes
        assert data.mean.shape == data.std.shape == (info.image_shape[-1],)


def test_empty_dataset_is_refused(tmp_path):
    fixtures.write_mnist_gz(tmp_path, n_train=0, n_test=40)
    with pytest.raises(DataError, match='the train split is empty'):
        loaders.load_mnist(str(tmp_path), 0, False)
