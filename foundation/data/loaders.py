"""The datasets. In memory: digits, MNIST and 32 px CIFAR-10 as uint8 numpy
arrays; streamed: cifar_128 and imagenet, opened by TFRecordsReader.

Each loader returns an ArrayDataset with deterministic train / valid / test
splits (docs/data.md), the per-channel mean and std of the training split, which
the input pipeline uses to normalise images, and the names of its classes.
"""
import codecs
import dataclasses
import gzip
import io
import math
import os
import pickle
import sys
import tarfile
import zipfile
import zlib

import numpy as np

from foundation import regular_files
from foundation.data import subsets
from foundation.data.bounded_read import (
    NUMBER_KINDS,
    check_declared,
    npy_data_size,
    read_exact,
    read_npy_header,
)
from foundation.data.download import RemoteFile, ensure_files
from foundation.errors import DataError


@dataclasses.dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8, [N, H, W, C]
    labels: np.ndarray  # int64, [N], 0 .. classes-1

    def __len__(self):
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
    train: Split
    valid: Split
    test: Split
    num_classes: int
    mean: np.ndarray  # float32 [C], of the training split
    std: np.ndarray   # float32 [C]
    classes: tuple = ()  # the name of each class, label order

    @property
    def image_shape(self):
        return self.train.images.shape[1:]

    def num_examples(self, split):
        return len(getattr(self, split))


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    num_classes: int
    image_shape: tuple
    load: callable = None  # (data_dir, seed, download) -> ArrayDataset; None: streamed TFRecords
    pixel_max: int = 255  # the brightest pixel value the images hold (digits: 16)


def channel_stats(images):
    """Per-channel mean and std of uint8 NHWC images, as float32."""
    pixels = images.reshape(-1, images.shape[-1])
    mean = pixels.mean(axis=0, dtype=np.float64)
    std = pixels.std(axis=0, dtype=np.float64)
    # A constant channel carries no information; keep it at zero, not NaN.
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def dataset_of_splits(train, valid, test, num_classes, classes=None):
    """The dataset of three splits; `classes` names the labels ('0', '1', ...
    where the data names none: the digits)."""
    for name, split in (('train', train), ('valid', valid), ('test', test)):
        if len(split) == 0:
            raise DataError(f'the {name} split is empty')
    mean, std = channel_stats(train.images)
    classes = tuple(classes) if classes else tuple(str(i) for i in range(num_classes))
    return ArrayDataset(train, valid, test, num_classes, mean, std, classes)


def with_training_sample(data, total, seed):
    """The dataset with only a stratified sample of `total` training images
    (subsets.stratified_sample), in their stored order; the validation and
    test splits as they are. The mean and std are the sample's own: what the
    network of a quick run trains on."""
    chosen = subsets.stratified_sample(data.train.labels, total, seed)
    train = Split(data.train.images[chosen], data.train.labels[chosen])
    return dataset_of_splits(train, data.valid, data.test, data.num_classes, data.classes)


def with_first_training_images(data, count):
    """The dataset with only the first `count` training images (the overfit
    check's batches); the statistics stay the whole split's, so that the
    check feeds the network as a full run does."""
    train = Split(data.train.images[:count], data.train.labels[:count])
    return dataclasses.replace(data, train=train)


def hold_out(images, labels, fraction):
    """Splits off the first `fraction` of the official training set as validation."""
    n_valid = int(round(len(labels) * fraction))
    return Split(images[n_valid:], labels[n_valid:]), Split(images[:n_valid], labels[:n_valid])


def checked_split(images, labels, source, image_shape, num_classes=10):
    """(images, int64 labels) once both are what `source` must hold: uint8
    images of `image_shape`, one label in 0..num_classes-1 per image."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8 or images.shape[1:] != tuple(image_shape):
        raise DataError(f'{source}: images must be uint8 of shape [N, '
                        f'{", ".join(map(str, image_shape))}], found {images.dtype} {list(images.shape)}')
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f'{source}: labels must be a list of whole numbers, found '
                        f'{labels.dtype} {list(labels.shape)}')
    if len(images) != len(labels):
        raise DataError(f'{source}: {len(images)} images but {len(labels)} labels')
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f'{source}: labels must lie in 0..{num_classes - 1}, found '
                        f'{labels.min()}..{labels.max()}')
    return images, labels.astype(np.int64)


# --- digits -------------------------------------------------------------------

def load_digits(data_dir, seed, download):
    """scikit-learn's bundled 8x8 digits: 1437 / 180 / 180, stratified."""
    # Here, not at the top: scikit-learn takes seconds to import, and a config
    # check imports this module for its table of datasets.
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split
    digits = sklearn_digits()
    images = digits.images.astype(np.uint8)[..., np.newaxis]  # values 0..16
    labels = digits.target.astype(np.int64)
    rest_x, test_x, rest_y, test_y = train_test_split(
        images, labels, test_size=180, stratify=labels, random_state=seed)
    train_x, valid_x, train_y, valid_y = train_test_split(
        rest_x, rest_y, test_size=180, stratify=rest_y, random_state=seed)
    return dataset_of_splits(Split(train_x, train_y), Split(valid_x, valid_y),
                        Split(test_x, test_y), 10)


# --- MNIST --------------------------------------------------------------------

MNIST_URLS = ('https://yann.lecun.com/exdb/mnist/',
              'https://storage.googleapis.com/cvdf-datasets/mnist/')
MNIST_FILES = {
    'train_images': ('train-images-idx3-ubyte.gz', 'f68b3c2dcbeaaa9fbdd348bbdeb94873'),
    'train_labels': ('train-labels-idx1-ubyte.gz', 'd53e105ee54ea40749a09fcbcd1e9432'),
    'test_images': ('t10k-images-idx3-ubyte.gz', '9fb629c4189551a2d022fa330f9573f3'),
    'test_labels': ('t10k-labels-idx1-ubyte.gz', 'ec29112dd5afa0611ce80d1b7f02629c'),
}
MNIST_REMOTES = {key: RemoteFile(name, tuple(u + name for u in MNIST_URLS), md5)
                 for key, (name, md5) in MNIST_FILES.items()}
MNIST_VALID_FRACTION = 5000 / 60000
IDX_UBYTE = 0x08


MNIST_ITEM_SHAPES = {'images': (28, 28), 'labels': ()}
# 5 times MNIST's 60000 training images: room for EMNIST digits (240000) in
# the same format, and a bound on what a header can make this allocate.
MNIST_MAX_COUNT = 300_000


def read_idx(path, item_shape, max_count=MNIST_MAX_COUNT):
    """Reads a gzipped idx file of unsigned bytes: N items of `item_shape`,
    N at most `max_count`. Reads no more than its header declares (and one
    byte to tell whether it holds more), so a gzip bomb costs nothing."""
    ndim = 1 + len(item_shape)
    try:
        with gzip.open(path, 'rb') as f:
            header = f.read(4 + 4 * ndim)
            shape = idx_header(header, path, ndim)
            check_declared(shape, item_shape, max_count, path)
            body = read_exact(f, math.prod(shape), path)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f'{path} is not a complete gzip file ({error}); delete it and '
                        f'download it again') from None
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def idx_header(header, path, ndim):
    """The dimensions an idx header of `ndim`-D unsigned bytes declares."""
    if len(header) < 4 + 4 * ndim:
        raise DataError(f'{path}: idx header is truncated')
    zero, kind, dims = int.from_bytes(header[:2], 'big'), header[2], header[3]
    if zero != 0 or kind != IDX_UBYTE or dims != ndim:
        raise DataError(f'{path}: wrong magic number 0x{header[:4].hex()}, expected '
                        f'0x0000{IDX_UBYTE:02x}{ndim:02x} (an idx file of {ndim}-D unsigned bytes)')
    return tuple(int.from_bytes(header[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))


def read_npz_array(archive, name, item_shape, npz):
    """The array `name` of an open .npz (zip) archive, its .npy header
    checked against `item_shape` before its data is read."""
    source = f'{npz}:{name}.npy'
    try:
        member = archive.open(f'{name}.npy')
    except KeyError:
        raise DataError(f'{npz} lacks {name}: a Keras mnist.npz holds x_train, y_train, '
                        f'x_test and y_test') from None
    with member as f:
        shape, dtype = read_npy_header(f, source)
        check_declared(shape, item_shape, MNIST_MAX_COUNT, source)
        data = read_exact(f, npy_data_size(shape, dtype), source)
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def read_mnist_npz(npz):
    """(x_train, y_train, x_test, y_test) of Keras' mnist.npz."""
    kinds = {'x_train': 'images', 'y_train': 'labels', 'x_test': 'images', 'y_test': 'labels'}
    try:
        with zipfile.ZipFile(npz) as archive:
            return tuple(read_npz_array(archive, name, MNIST_ITEM_SHAPES[kind], npz)
                         for name, kind in kinds.items())
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as error:
        raise DataError(f'{npz} is not a readable Keras mnist.npz ({error})') from None


def load_mnist(data_dir, seed, download):
    """The four official idx .gz files, or Keras' mnist.npz: 55000 / 5000 / 10000."""
    npz = os.path.join(data_dir, 'mnist.npz')
    have_idx = any(regular_files.present(os.path.join(data_dir, r.name)) for r in MNIST_REMOTES.values())
    if regular_files.present(npz) and not have_idx:
        train_x, train_y, test_x, test_y = read_mnist_npz(npz)
        train_source = test_source = npz
    else:
        paths = dict(zip(MNIST_REMOTES, ensure_files(
            list(MNIST_REMOTES.values()), data_dir, download,
            "Keras' mnist.npz in that directory works too; data_dir=PATH reads another directory.")))
        train_x, test_x = (read_idx(paths[k], MNIST_ITEM_SHAPES['images'])
                           for k in ('train_images', 'test_images'))
        train_y, test_y = (read_idx(paths[k], MNIST_ITEM_SHAPES['labels'])
                           for k in ('train_labels', 'test_labels'))
        train_source, test_source = (f"{paths[f'{s}_images']} + {os.path.basename(paths[f'{s}_labels'])}"
                                     for s in ('train', 'test'))
    train_x, train_y = checked_split(train_x, train_y, train_source, (28, 28))
    test_x, test_y = checked_split(test_x, test_y, test_source, (28, 28))
    train, valid = hold_out(train_x[..., np.newaxis], train_y, MNIST_VALID_FRACTION)
    return dataset_of_splits(train, valid, Split(test_x[..., np.newaxis], test_y), 10)


# --- CIFAR-10 -----------------------------------------------------------------

CIFAR_ARCHIVE = RemoteFile('cifar-10-python.tar.gz',
                           ('https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz',),
                           'c58f30108f718f92721af3b95e74349a')
CIFAR_FOLDER = 'cifar-10-batches-py'
CIFAR_TRAIN_BATCHES = tuple(f'data_batch_{i}' for i in range(1, 6))
CIFAR_TEST_BATCH = 'test_batch'
CIFAR_VALID_FRACTION = 5000 / 50000


# A batch's data, 10000 x 3072 bytes, is the largest array a CIFAR-10 file holds.
CIFAR_ARRAY_MAX_BYTES = 10000 * 3072
# Every file of the archive is smaller (a batch file is 31 MB): a larger one is
# refused before any of it is read.
CIFAR_FILE_MAX_BYTES = 64 << 20
CIFAR_ARCHIVE_MAX_MEMBERS = 100  # the archive holds 8


def _refuse(what):
    raise pickle.UnpicklingError(f'refusing {what}')


def plain_dtype(*args):
    """np.dtype of plain numbers: an array of Python objects built from raw
    bytes would hold forged pointers."""
    dtype = np.dtype(*args)
    if dtype.hasobject or dtype.kind not in NUMBER_KINDS:
        _refuse(f'an array of {dtype}: a CIFAR batch holds numbers')
    return dtype


class CheckedArray(np.ndarray):
    """The class a CIFAR pickle's arrays are rebuilt as: only from data of
    the size they declare, at most a batch's, never allocated from a shape."""

    def __new__(cls, *args, **kwargs):
        _refuse('numpy.ndarray(shape) called directly: it allocates memory without data')

    def __setstate__(self, state):
        shape, dtype, data = state[-4], state[-3], state[-1]  # (version,) shape, dtype, fortran, data
        if not (isinstance(dtype, np.dtype) and dtype.kind in NUMBER_KINDS and dtype.fields is None
                and isinstance(data, bytes) and isinstance(shape, tuple)
                and all(isinstance(d, int) and d >= 0 for d in shape)):
            _refuse('an array that is not plain numbers with their bytes')
        size = npy_data_size(shape, dtype)
        if size > CIFAR_ARRAY_MAX_BYTES or len(data) != size:
            _refuse(f'a {dtype} array of shape {shape} ({size} bytes) with {len(data)} bytes of '
                    f'data: a CIFAR batch holds at most {CIFAR_ARRAY_MAX_BYTES} bytes per array')
        super().__setstate__(state)


def reconstruct(subtype, shape, dtype):
    """numpy's _reconstruct, as pickles call it: an empty array that
    __setstate__ then fills; anything else would allocate without data."""
    if subtype is not CheckedArray or math.prod(shape) != 0:
        _refuse('an array allocated without its data')
    return np._core.multiarray._reconstruct(CheckedArray, shape, dtype)


def scalar(dtype, data):
    """numpy's scalar(dtype, bytes) for plain numbers, from exactly their bytes."""
    if not isinstance(data, bytes) or len(data) != plain_dtype(dtype).itemsize:
        _refuse('a numpy scalar without its bytes')
    return np._core.multiarray.scalar(dtype, data)


class SafeUnpickler(pickle.Unpickler):
    """Rebuilds only numpy arrays of plain numbers from their own bytes: a
    tampered pickle can neither call anything else nor allocate memory that
    its data does not fill."""
    # (module, name) as pickles written by numpy 1 and 2 and Python 2 and 3 name them.
    ALLOWED = {
        ('numpy.core.multiarray', '_reconstruct'): reconstruct,
        ('numpy._core.multiarray', '_reconstruct'): reconstruct,
        ('numpy.core.multiarray', 'scalar'): scalar,
        ('numpy._core.multiarray', 'scalar'): scalar,
        ('numpy', 'ndarray'): CheckedArray,
        ('numpy', 'dtype'): plain_dtype,
        ('_codecs', 'encode'): codecs.encode,  # Python 3's protocol-2 bytes
    }

    def find_class(self, module, name):
        try:
            return self.ALLOWED[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f'refusing to load {module}.{name}: a CIFAR batch '
                                         f'holds only numpy arrays and lists') from None


def read_cifar_batch(data, source):
    """Unpickles one CIFAR-10 python batch -> (images [N, 32, 32, 3] uint8, labels)."""
    try:
        batch = SafeUnpickler(io.BytesIO(data), encoding='bytes').load()
    except Exception as error:  # any failure of a foreign pickle is bad input
        raise DataError(f'{source} is not a valid CIFAR-10 batch ({error})') from None
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()} \
        if isinstance(batch, dict) else {}
    if 'data' not in batch or 'labels' not in batch:
        raise DataError(f'{source} is not a CIFAR-10 batch: it lacks data or labels')
    if any(isinstance(v, np.ndarray) and v.dtype.hasobject for v in batch.values()):
        raise DataError(f'{source} holds an array of Python objects: refused')
    pixels = np.asarray(batch['data'])
    if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != 3 * 32 * 32:
        raise DataError(f'{source}: data must be uint8 [N, 3072], got {pixels.dtype} {pixels.shape}')
    images = pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # stored channel-major
    return checked_split(images, batch['labels'], source, (32, 32, 3))


def cifar_batch_bytes(data_dir, download):
    """Yields (name, where it came from, bytes) for data_batch_1..5 and
    test_batch in that order, from the extracted folder, else from the .tar.gz;
    one batch in memory at a time."""
    names = CIFAR_TRAIN_BATCHES + (CIFAR_TEST_BATCH,)
    folder = os.path.join(data_dir, CIFAR_FOLDER)
    if os.path.isdir(folder):
        for name in names:
            path = os.path.join(folder, name)
            if not regular_files.present(path):
                raise DataError(f'{path} is missing: {folder} must hold {", ".join(names)}')
            check_cifar_file_size(path, os.path.getsize(path))
            with open(path, 'rb') as f:
                yield name, path, f.read()
        return
    archive, = ensure_files(
        [CIFAR_ARCHIVE], data_dir, download,
        f'The extracted {CIFAR_FOLDER}/ folder works too; data_dir=PATH reads another directory.')
    # Members are read in memory, never extracted: no path in the archive can
    # write anywhere.
    try:
        with tarfile.open(archive, 'r:gz') as tar:
            members = cifar_archive_files(tar, archive)
            missing = [n for n in names if n not in members]
            if missing:
                raise DataError(f'{archive} lacks {", ".join(missing)}')
            for name in names:
                yield name, f'{archive}:{members[name].name}', tar.extractfile(members[name]).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise DataError(f'{archive} is not a complete .tar.gz ({error}); delete it and '
                        f'download it again') from None


def check_cifar_file_size(source, size):
    if size > CIFAR_FILE_MAX_BYTES:
        raise DataError(f'{source} holds {size} bytes, more than any file of CIFAR-10 '
                        f'({CIFAR_FILE_MAX_BYTES} at most): not a CIFAR-10 batch; delete it '
                        f'and download CIFAR-10 again')


def cifar_archive_files(tar, archive):
    """{file name: TarInfo} of an open CIFAR-10 archive, each member's size
    checked as the scan reaches its header: a huge member is refused before
    it is read, or even skipped over."""
    files = {}
    for count, member in enumerate(tar, start=1):
        if count > CIFAR_ARCHIVE_MAX_MEMBERS:
            raise DataError(f'{archive} holds more than {CIFAR_ARCHIVE_MAX_MEMBERS} members: not '
                            f'the CIFAR-10 archive; delete it and download it again')
        check_cifar_file_size(f'{archive}:{member.name}', member.size)
        if member.isfile():
            files[member.name.rsplit('/', 1)[-1]] = member
    return files


CIFAR_META = 'batches.meta'
# The names CIFAR-10's batches.meta gives its labels: used where a folder of
# batches lacks that file, and for the 128 px records made from those batches.
CIFAR_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
                 'truck')


def cifar_meta_bytes(data_dir):
    """(where, bytes) of batches.meta in the extracted folder or the archive
    of data_dir; None where neither holds it."""
    path = os.path.join(data_dir, CIFAR_FOLDER, CIFAR_META)
    if regular_files.present(path):
        check_cifar_file_size(path, os.path.getsize(path))
        with open(path, 'rb') as f:
            return path, f.read()
    archive = os.path.join(data_dir, CIFAR_ARCHIVE.name)
    if not regular_files.present(archive):
        return None
    try:
        with tarfile.open(archive, 'r:gz') as tar:
            member = cifar_archive_files(tar, archive).get(CIFAR_META)
            return (f'{archive}:{member.name}', tar.extractfile(member).read()) if member else None
    except (tarfile.TarError, OSError, EOFError, zlib.error):
        return None  # the batches' own reading names a broken archive


def cifar_class_names(data_dir):
    """The label names of batches.meta; CIFAR_CLASSES (with a warning for a
    file that does not hold ten names) where there is none to read."""
    found = cifar_meta_bytes(data_dir)
    if found is None:
        return CIFAR_CLASSES
    source, data = found
    try:
        meta = SafeUnpickler(io.BytesIO(data), encoding='bytes').load()
        names = tuple(n.decode() if isinstance(n, bytes) else n
                      for n in meta.get(b'label_names', meta.get('label_names', ())))
    except Exception:  # any failure of a foreign pickle is bad input
        names = ()
    if len(names) != 10 or not all(isinstance(n, str) and n for n in names):
        print(f"warning: {source} does not hold CIFAR-10's ten label names; naming the classes "
              f"{', '.join(CIFAR_CLASSES)}", file=sys.stderr, flush=True)
        return CIFAR_CLASSES
    return names


def cifar_split_counts(data_dir, download):
    """{split: images} of the CIFAR-10 split, from one pass over the batches."""
    sizes = {name: len(read_cifar_batch(data, source)[1])
             for name, source, data in cifar_batch_bytes(data_dir, download)}
    n_test = sizes.pop(CIFAR_TEST_BATCH)
    n_valid = int(round(sum(sizes.values()) * CIFAR_VALID_FRACTION))
    return {'train': sum(sizes.values()) - n_valid, 'valid': n_valid, 'test': n_test}


def cifar_split_stream(data_dir, download, counts=None):
    """Yields (split, images, labels) batch by batch: the first tenth of the
    training images is the validation split, test_batch the test split. The
    streamed 128 px CIFAR uses exactly the split of cifar_32. `counts`, when
    the caller has them (cifar_split_counts), saves a pass over the batches."""
    n_valid, seen = (counts or cifar_split_counts(data_dir, download))['valid'], 0
    for name, source, data in cifar_batch_bytes(data_dir, download):
        images, labels = read_cifar_batch(data, source)
        if name == CIFAR_TEST_BATCH:
            yield 'test', images, labels
            continue
        cut = min(max(n_valid - seen, 0), len(labels))
        if cut:
            yield 'valid', images[:cut], labels[:cut]
        if cut < len(labels):
            yield 'train', images[cut:], labels[cut:]
        seen += len(labels)


def load_cifar_32(data_dir, seed, download):
    """CIFAR-10 python batches: 45000 / 5000 / 10000 at 32x32x3."""
    parts = {'train': [], 'valid': [], 'test': []}
    for split, images, labels in cifar_split_stream(data_dir, download):
        parts[split].append((images, labels))
    train, valid, test = (Split(np.concatenate([p[0] for p in parts[s]]),
                                np.concatenate([p[1] for p in parts[s]]))
                          for s in ('train', 'valid', 'test'))
    return dataset_of_splits(train, valid, test, 10, cifar_class_names(data_dir))


DATASETS = {
    'digits': DatasetInfo(10, (8, 8, 1), load_digits, pixel_max=16),  # scikit-learn's levels 0..16
    'mnist': DatasetInfo(10, (28, 28, 1), load_mnist),
    'cifar_32': DatasetInfo(10, (32, 32, 3), load_cifar_32),
    'cifar_128': DatasetInfo(10, (128, 128, 3)),  # TFRecords, opened by TFRecordsReader
    'imagenet': DatasetInfo(1000, (224, 224, 3)),  # TFRecords, opened by TFRecordsReader
}
