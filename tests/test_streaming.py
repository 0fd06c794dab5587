"""The streamed datasets: ImageResizer, TFRecordsWriter, TFRecordsReader.

Records are parsed back with tf_record_iterator + tf.train.Example, independently
of TFRecordsReader; the bicubic reference is plain numpy.
"""
import collections
import hashlib
import io
import json
import os
import re
import resource
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import ImageResizer
import main
import predict
import TFRecordsReader
import TFRecordsWriter
from foundation.data import image_files, loaders
from foundation.errors import DataError
from Model import Model
from tests import fixtures
from trainer.config import settings
from trainer.training import training_graph
from trainer.training.input_source import make_input

v1 = tf.compat.v1
PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 128
N_PER_BATCH = 30  # 150 training rows: 135 train, 15 valid; 30 test
SHARDS = {'train': 3, 'valid': 2, 'test': 2}
SPLITS = ('train', 'valid', 'test')
WNIDS = ('n01440764', 'n01443537', 'n01484850')


# --- helpers -----------------------------------------------------------------------

def keys_kernel(x, a=-0.5):
    x = np.abs(x)
    return np.where(x <= 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a, 0.0))


def bicubic_matrix(n_in, n_out):
    """[n_out, n_in] weights of TensorFlow's bicubic resize (half-pixel centers,
    Keys a=-0.5). As in TF's resize_bicubic_op.cc (checked below against
    tf.image.resize): taps outside the image get weight 0 and the remaining
    weights are renormalised to sum 1; the fraction is looked up in a
    1024-entry table (a no-op at 4x, where fractions are multiples of 1/8)."""
    m = np.zeros((n_out, n_in))
    scale = np.float32(n_in) / np.float32(n_out)
    for d in range(n_out):
        src = float(np.float32((d + 0.5) * scale - 0.5))
        base = int(np.floor(src))
        delta = np.round((src - base) * 1024) / 1024
        for k in range(-1, 3):
            if 0 <= base + k < n_in:
                m[d, base + k] = keys_kernel(delta - k)
        m[d] /= m[d].sum()
    return m


def bicubic_reference(images, out_h, out_w):
    """float64 [N, out_h, out_w, C] of uint8/float [N, H, W, C]."""
    _, h, w, _ = images.shape
    return np.einsum('ah,bw,nhwc->nabc', bicubic_matrix(h, out_h), bicubic_matrix(w, out_w),
                     np.asarray(images, np.float64))


def tf_resize_float(images, out_h, out_w):
    g = tf.Graph()
    with g.as_default():
        out = tf.image.resize(tf.constant(images, tf.float32), [out_h, out_w], method='bicubic')
        with v1.Session(graph=g) as s:
            return s.run(out)


def read_examples(path):
    return [tf.train.Example.FromString(r) for r in v1.io.tf_record_iterator(path)]


def feature(example, key):
    f = example.features.feature[key]
    kind = f.WhichOneof('kind')
    values = list(getattr(f, kind).value)
    assert len(values) == 1, (key, values)
    return values[0]


def digest(image_uint8):
    return hashlib.sha1(np.ascontiguousarray(image_uint8, np.uint8).tobytes()).hexdigest()


def shard_names(split, n, suffix='.tfrecords'):
    return [f'{split}-{i:05d}-of-{n:05d}{suffix}' for i in range(n)]


def all_shard_names():
    return [name for s in SPLITS for name in shard_names(s, SHARDS[s])]


def writer_args(root, *extra):
    return [f'datasets_root={root}', 'resize_batch_size=16', f'tfrecord_shards={SHARDS!r}', *extra]


def data_dir(root, name='cifar_128'):
    return os.path.join(str(root), name, 'data_dir')


def copy_dataset(src_root, dst_root, resized=True):
    """A copy of a written cifar_128 data_dir (shards, dataset.json, resized/)."""
    ignore = None if resized else shutil.ignore_patterns('resized')
    shutil.copytree(data_dir(src_root), data_dir(dst_root), ignore=ignore)
    return data_dir(dst_root)


def load_json(path):
    with open(path) as f:
        return json.load(f)


def partial_files(directory):
    return [p for p in os.listdir(directory) if '.partial' in p]


def reader_cfg(root, *extra, dataset='cifar_128'):
    return settings.load_config([f'dataset_name={dataset}', f'datasets_root={root}',
                                 'batch_size=16', 'eval_batch_size=32', *extra])


def read_pass(session, source, split, training, seed=None, skip=0):
    """All (images, one-hot labels) batches of one pass, concatenated."""
    source.start(session, split, training=training, seed=seed, skip=skip)
    images, labels, sizes = [], [], []
    while True:
        try:
            x, y = session.run(source.next_batch)
        except tf.errors.OutOfRangeError:
            break
        images.append(x)
        labels.append(y)
        sizes.append(len(x))
    return np.concatenate(images), np.concatenate(labels), sizes


# --- module fixtures: one two-step run on CIFAR fixtures ------------------------------

@pytest.fixture(scope='module')
def cifar(tmp_path_factory):
    """Fixture batches, their cifar_32 split and its 128 px resize (expected)."""
    root = tmp_path_factory.mktemp('cifar')
    a = fixtures.write_cifar_batches(data_dir(root, 'cifar_32'), n_per_batch=N_PER_BATCH)
    n_valid = round(len(a['y_train']) * 0.1)  # first tenth of the concatenated batches
    split32 = {'train': (a['x_train'][n_valid:], a['y_train'][n_valid:]),
               'valid': (a['x_train'][:n_valid], a['y_train'][:n_valid]),
               'test': (a['x_test'], a['y_test'])}
    resizer = ImageResizer.BicubicResizer(SIZE)
    expected = {s: (resizer(x), y) for s, (x, y) in split32.items()}
    resizer.close()
    return {'root': root, 'split32': split32, 'expected': expected}


@pytest.fixture(scope='module')
def two_step(cifar, tmp_path_factory):
    """ImageResizer then TFRecordsWriter on the fixture batches."""
    root = cifar['root']
    assert ImageResizer.main(writer_args(root)) == 0
    assert TFRecordsWriter.main(writer_args(root)) == 0
    out = data_dir(root)
    shard_bytes = {}
    for name in all_shard_names():
        with open(os.path.join(out, name), 'rb') as f:
            shard_bytes[name] = f.read()
    with open(os.path.join(out, 'dataset.json')) as f:
        metadata = json.load(f)
    return {'root': root, 'dir': out, 'bytes': shard_bytes, 'metadata': metadata}


def assert_same_as_reference(directory, two_step):
    for name, data in two_step['bytes'].items():
        with open(os.path.join(directory, name), 'rb') as f:
            assert f.read() == data, name
    with open(os.path.join(directory, 'dataset.json')) as f:
        assert json.load(f) == two_step['metadata']


# --- 1. BicubicResizer -----------------------------------------------------------------

@pytest.mark.parametrize('shape', [(32, 32, 128, 128), (7, 11, 20, 9), (32, 32, 10, 13)])
def test_numpy_reference_is_tensorflows_bicubic(shape):
    h, w, oh, ow = shape
    images = np.random.default_rng(1).integers(0, 256, (2, h, w, 3)).astype(np.float32)
    np.testing.assert_allclose(bicubic_reference(images, oh, ow), tf_resize_float(images, oh, ow),
                               atol=1e-3, rtol=0)


def test_bicubic_resizer_rounds_reference():
    images = np.random.default_rng(2).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    resizer = ImageResizer.BicubicResizer(SIZE, batch_size=4)
    out = resizer(images)
    resizer.close()
    assert out.dtype == np.uint8 and out.shape == (6, SIZE, SIZE, 3)
    ref = bicubic_reference(images, SIZE, SIZE)
    diff = np.abs(out.astype(np.int64) - np.clip(np.round(ref), 0, 255).astype(np.int64))
    # TF's float32 sums may land on the other side of a .5 tie than float64
    # (a handful of the 295k values): off by one, and only at a tie.
    assert diff.max() <= 1
    assert np.count_nonzero(diff) <= 1e-4 * diff.size
    assert (np.abs(ref - np.floor(ref) - 0.5)[diff != 0] < 1e-3).all()


def test_bicubic_resizer_clips_checkerboard_overshoot():
    board = (np.indices((32, 32)).sum(0) % 2 * 255).astype(np.uint8)
    board = np.repeat(board[None, :, :, None], 3, axis=-1)
    ref = bicubic_reference(board, SIZE, SIZE)
    assert ref.min() == pytest.approx(-63.48, abs=0.1) and ref.max() == pytest.approx(318.48, abs=0.1)
    resizer = ImageResizer.BicubicResizer(SIZE)
    out = resizer(board)
    resizer.close()
    assert (ref < 0).any() and (ref > 255).any()
    assert (out[ref < 0] == 0).all()  # a wrapping cast would give 255 / 194
    assert (out[ref > 255] == 255).all()
    inside = (ref >= 0) & (ref <= 255)
    assert np.abs(out[inside].astype(int) - np.round(ref[inside])).max() <= 1


# --- 2. two-step flow ------------------------------------------------------------------

def test_two_step_writes_expected_shards(two_step):
    names = sorted(n for n in os.listdir(two_step['dir']) if n.endswith('.tfrecords'))
    assert names == sorted(all_shard_names())
    assert partial_files(two_step['dir']) == []


def test_two_step_records_are_the_resized_split_in_order(two_step, cifar):
    for split in SPLITS:
        images, labels = cifar['expected'][split]
        examples = [e for name in shard_names(split, SHARDS[split])
                    for e in read_examples(os.path.join(two_step['dir'], name))]
        assert len(examples) == len(labels)
        for i, example in enumerate(examples):
            raw = feature(example, f'{split}/image')
            assert len(raw) == SIZE * SIZE * 3
            assert raw == images[i].tobytes(), (split, i)
            assert feature(example, f'{split}/label') == labels[i]
            assert feature(example, f'{split}/height') == SIZE
            assert feature(example, f'{split}/width') == SIZE
            assert feature(example, f'{split}/channels') == 3
            assert set(example.features.feature) == {f'{split}/{k}' for k in
                                                      ('image', 'label', 'height', 'width', 'channels')}


def test_two_step_shard_sizes_are_balanced(two_step):
    counts = {name: sum(1 for _ in v1.io.tf_record_iterator(os.path.join(two_step['dir'], name)))
              for name in all_shard_names()}
    assert [counts[n] for n in shard_names('train', 3)] == [45, 45, 45]
    assert sorted(counts[n] for n in shard_names('valid', 2)) == [7, 8]
    assert [counts[n] for n in shard_names('test', 2)] == [15, 15]


def test_dataset_json_counts_and_pixel_stats(two_step, cifar):
    metadata = two_step['metadata']
    assert {s: metadata['splits'][s]['count'] for s in SPLITS} == {'train': 135, 'valid': 15, 'test': 30}
    assert {s: metadata['splits'][s]['shards'] for s in SPLITS} == \
        {s: shard_names(s, SHARDS[s]) for s in SPLITS}
    pixels = cifar['expected']['train'][0].reshape(-1, 3).astype(np.float64)
    mean, std = TFRecordsReader.pixel_stats(metadata, 'train')
    np.testing.assert_allclose(mean, pixels.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(std, pixels.std(axis=0), rtol=1e-4)


# --- 3. one pass -----------------------------------------------------------------------

def test_one_pass_writes_identical_shards(two_step, cifar, tmp_path):
    shutil.copytree(data_dir(cifar['root'], 'cifar_32'), data_dir(tmp_path, 'cifar_32'))
    assert TFRecordsWriter.main(writer_args(tmp_path, 'one_pass=True')) == 0
    assert_same_as_reference(data_dir(tmp_path), two_step)
    assert not os.path.exists(os.path.join(data_dir(tmp_path), 'resized'))


def test_shard_counts_must_name_every_split(cifar, tmp_path, capsys):
    shutil.copytree(data_dir(cifar['root'], 'cifar_32'), data_dir(tmp_path, 'cifar_32'))
    args = [f'datasets_root={tmp_path}', 'one_pass=True', "tfrecord_shards={'train': 2}"]
    assert TFRecordsWriter.main(args) == 2
    assert 'tfrecord_shards must give a shard count for each of train, valid, test' in capsys.readouterr().err
    assert not os.path.exists(data_dir(tmp_path))


# --- 4. resumability -------------------------------------------------------------------

def test_rerun_rewrites_only_missing_shards(two_step, tmp_path, monkeypatch):
    out = copy_dataset(two_step['root'], tmp_path)
    os.remove(os.path.join(out, 'train-00001-of-00003.tfrecords'))
    with open(os.path.join(out, 'test-00000-of-00002.tfrecords'), 'r+b') as f:
        f.truncate(1000)  # a damaged shard, no longer recorded as complete
    metadata = load_json(os.path.join(out, 'dataset.json'))
    del metadata['shards']['test-00000-of-00002.tfrecords']
    with open(os.path.join(out, 'dataset.json'), 'w') as f:
        json.dump(metadata, f)
    stale = os.path.join(out, '.train-00001-of-00003.xyz.partial.tfrecords')
    with open(stale, 'wb') as f:
        f.write(b'half a record')
    old = 1_000_000_000 * 10**9
    for name in all_shard_names():
        if os.path.exists(os.path.join(out, name)):
            os.utime(os.path.join(out, name), ns=(old, old))
    made = []
    real = TFRecordsWriter.cifar_records
    monkeypatch.setattr(TFRecordsWriter, 'cifar_records',
                        lambda split, images, labels: made.append((split, len(labels))) or
                        real(split, images, labels))

    assert TFRecordsWriter.main(writer_args(tmp_path)) == 0
    rewritten = {n for n in all_shard_names() if os.stat(os.path.join(out, n)).st_mtime_ns != old}
    assert rewritten == {'train-00001-of-00003.tfrecords', 'test-00000-of-00002.tfrecords'}
    assert {s for s, _ in made} == {'train', 'test'}
    assert sum(n for _, n in made) < 135  # only the chunks of the two missing shards
    assert partial_files(out) == []
    assert_same_as_reference(out, two_step)


@pytest.mark.parametrize('error', [RuntimeError, KeyboardInterrupt])
def test_interrupted_write_leaves_no_incomplete_shard(two_step, tmp_path, monkeypatch, error):
    out = copy_dataset(two_step['root'], tmp_path)
    for name in os.listdir(out):
        if name != 'resized':
            os.remove(os.path.join(out, name))
    calls = []
    real = TFRecordsWriter.cifar_records

    def failing(split, images, labels):
        calls.append(split)
        if len(calls) == 5:  # mid-way through train-00001 (chunks of 16, shards of 45)
            raise error('stop')
        return real(split, images, labels)
    monkeypatch.setattr(TFRecordsWriter, 'cifar_records', failing)
    if error is KeyboardInterrupt:  # Ctrl-C: one line and 128 + SIGINT, as every command answers it
        assert TFRecordsWriter.main(writer_args(tmp_path)) == 130
    else:
        with pytest.raises(error):
            TFRecordsWriter.main(writer_args(tmp_path))
    assert partial_files(out) == []
    metadata = load_json(os.path.join(out, 'dataset.json'))
    finals = sorted(n for n in os.listdir(out) if n.endswith('.tfrecords'))
    assert finals == ['train-00000-of-00003.tfrecords']
    for name in finals:
        assert name in metadata['shards']
        with open(os.path.join(out, name), 'rb') as f:
            assert f.read() == two_step['bytes'][name]
    with pytest.raises(DataError, match='unfinished'):
        TFRecordsReader.open_cifar_128(out)

    monkeypatch.setattr(TFRecordsWriter, 'cifar_records', real)
    assert TFRecordsWriter.main(writer_args(tmp_path)) == 0
    assert_same_as_reference(out, two_step)


# --- 5. TFRecordsReader ----------------------------------------------------------------

@pytest.fixture
def cifar_source(two_step, graph):
    def build(*extra, directory=None):
        data = TFRecordsReader.open_cifar_128(directory or two_step['dir'])
        return data, make_input(data, reader_cfg(two_step['root'], *extra))
    return build


def expected_lookup(cifar, split):
    images, labels = cifar['expected'][split]
    return {digest(img): (img, int(lab)) for img, lab in zip(images, labels)}


def check_normalised(images, labels, lookup, mean, std, num_classes=10):
    """Every image is (uint8 - mean) / std of an expected one, with its one-hot
    label; returns the digests in pass order."""
    keys = []
    for x, y in zip(images, labels):
        key = digest(np.clip(np.round(x * std + mean), 0, 255).astype(np.uint8))
        assert key in lookup
        img, label = lookup[key]
        np.testing.assert_allclose(x, (img.astype(np.float32) - mean) / std, atol=1e-4)
        assert y.shape == (num_classes,) and y[label] == 1 and y.sum() == 1
        keys.append(key)
    return keys


def pass_options(graph):
    """The tf.data options of every dataset the graph's iterators can start on."""
    from tensorflow.core.framework import dataset_options_pb2
    starts = [op for op in graph.get_operations() if op.type == 'MakeIterator']
    found = []
    for start in starts:
        dataset = start.inputs[0].op
        assert dataset.type == 'OptionsDataset', dataset.type
        options = dataset_options_pb2.Options()
        options.ParseFromString(dataset.get_attr('serialized_options'))
        found.append(options)
    return found


def test_every_pass_runs_without_tf_data_autotuning(cifar_source, graph):
    """With autotuning, starting a pass after a whole one waited for the old
    pass's tuning thread, up to 16 s (bench/pass_restart.py)."""
    cifar_source()
    data = loaders.DATASETS['digits'].load(None, 0, False)
    make_input(data, settings.load_config(['augment=True']))  # the array source too
    options = pass_options(graph)
    assert len(options) == 4 + 2  # train, train evaluation, valid, test; arrays: train, evaluation
    assert all(o.HasField('autotune_options') and not o.autotune_options.enabled for o in options)


def test_reader_dataset_description(cifar_source, cifar):
    data, _ = cifar_source()
    assert data.counts == {'train': 135, 'valid': 15, 'test': 30}
    assert data.image_shape == (SIZE, SIZE, 3) and data.num_classes == 10
    pixels = cifar['expected']['train'][0].reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(data.mean, pixels.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(data.std, pixels.std(axis=0), rtol=1e-4)


def test_reader_evaluation_passes(cifar_source, cifar, session):
    data, source = cifar_source()
    mean, std = data.mean, data.std
    for split in ('valid', 'test'):
        images, labels, sizes = read_pass(session, source, split, training=False)
        assert images.dtype == np.float32 and images.shape[1:] == (SIZE, SIZE, 3)
        lookup = expected_lookup(cifar, split)
        keys = check_normalised(images, labels, lookup, mean, std)
        assert sorted(keys) == sorted(lookup)  # each record exactly once
        assert sizes[:-1] == [32] * (len(sizes) - 1)
        again = read_pass(session, source, split, training=False)[0]
        np.testing.assert_array_equal(images, again)  # deterministic


def training_orders(cifar_source, cifar, session, seeds):
    data, source = cifar_source()
    lookup = expected_lookup(cifar, 'train')
    orders = []
    for seed in seeds:
        images, labels, sizes = read_pass(session, source, 'train', training=True, seed=seed)
        keys = check_normalised(images, labels, lookup, data.mean, data.std)
        assert sorted(keys) == sorted(lookup)  # every training image once per epoch
        assert sizes == [16] * 8 + [7]
        orders.append(keys)
    return orders, list(lookup)


def test_reader_training_pass_yields_every_image_once_shuffled(cifar_source, cifar, session):
    (one, two), file_order = training_orders(cifar_source, cifar, session, (1, 2))
    assert one != two
    assert one != file_order and two != file_order


def test_reader_training_order_is_the_same_for_the_same_seed(cifar_source, cifar, session):
    orders, _ = training_orders(cifar_source, cifar, session, (1, 1, 1))
    assert orders[0] == orders[1] == orders[2]


@pytest.mark.parametrize('options', [(), ('augment=True',)])
def test_resumed_training_pass_is_the_rest_of_the_same_order(cifar_source, session, options):
    _, source = cifar_source(*options)
    full, _, _ = read_pass(session, source, 'train', training=True, seed=3)
    rest, _, sizes = read_pass(session, source, 'train', training=True, seed=3, skip=40)
    assert sizes[0] == 16 and len(rest) == len(full) - 40
    np.testing.assert_array_equal(rest, full[40:])  # same images, same crops


def test_reader_augment_changes_training_images(cifar_source, cifar, session):
    data, source = cifar_source('augment=True')
    images, labels, _ = read_pass(session, source, 'train', training=True, seed=1)
    assert images.shape == (135, SIZE, SIZE, 3)
    assert collections.Counter(labels.argmax(1).tolist()) == \
        collections.Counter(cifar['expected']['train'][1].tolist())
    lookup = expected_lookup(cifar, 'train')
    restored = np.clip(np.round(images * data.std + data.mean), 0, 255).astype(np.uint8)
    changed = sum(digest(img) not in lookup for img in restored)
    assert changed > 135 // 2
    ev_images, ev_labels, _ = read_pass(session, source, 'valid', training=False)
    check_normalised(ev_images, ev_labels, expected_lookup(cifar, 'valid'), data.mean, data.std)


def test_reader_train_eval_images_limits_the_evaluation_pass(cifar_source, cifar, session):
    data, source = cifar_source('train_eval_images=20')
    images, labels, _ = read_pass(session, source, 'train', training=False)
    keys = check_normalised(images, labels, expected_lookup(cifar, 'train'), data.mean, data.std)
    assert len(keys) == 20 and len(set(keys)) == 20
    assert len(read_pass(session, source, 'train', training=True, seed=1)[0]) == 135


# --- 6. bad input ----------------------------------------------------------------------

def rewrite_shard(path, change):
    examples = read_examples(path)
    with tf.io.TFRecordWriter(path) as w:
        for i, example in enumerate(examples):
            w.write(change(i, example).SerializeToString())
    return examples


def assert_error_names_file(session, source, split, error_type, name):
    """Reading `split` fails with `error_type`; explain() names the file."""
    with pytest.raises(tf.errors.OpError) as caught:
        read_pass(session, source, split, training=False)
    assert isinstance(caught.value, error_type)
    explained = source.explain(caught.value)
    assert isinstance(explained, DataError)
    assert name in str(explained)


def test_short_image_record_is_reported_or_skipped(two_step, cifar, tmp_path, cifar_source, session):
    out = copy_dataset(two_step['root'], tmp_path, resized=False)
    bad_name = 'valid-00001-of-00002.tfrecords'

    def shorten(i, example):
        if i == 3:
            image = example.features.feature['valid/image'].bytes_list
            image.value[0] = image.value[0][:-100]
        return example
    bad = rewrite_shard(os.path.join(out, bad_name), shorten)[3]
    bad_label = feature(bad, 'valid/label')

    _, source = cifar_source(directory=out)
    assert_error_names_file(session, source, 'valid', tf.errors.InvalidArgumentError, bad_name)

    data, source = cifar_source('skip_bad_records=True', directory=out)
    images, labels, _ = read_pass(session, source, 'valid', training=False)
    lookup = expected_lookup(cifar, 'valid')
    keys = check_normalised(images, labels, lookup, data.mean, data.std)
    missing = set(lookup) - set(keys)
    assert len(keys) == 14 and len(missing) == 1
    assert lookup[missing.pop()][1] == bad_label


def test_truncated_shard_is_reported_or_skipped(two_step, tmp_path, cifar_source, session):
    out = copy_dataset(two_step['root'], tmp_path, resized=False)
    name = 'test-00000-of-00002.tfrecords'
    path = os.path.join(out, name)
    size = os.path.getsize(path)
    with open(path, 'r+b') as f:
        f.truncate(size // 2 + size // 60)  # inside the 8th of 15 records

    _, source = cifar_source(directory=out)
    assert_error_names_file(session, source, 'test', tf.errors.DataLossError, name)

    _, source = cifar_source('skip_bad_records=True', directory=out)
    images, _, _ = read_pass(session, source, 'test', training=False)
    assert 15 <= len(images) < 30


def empty_file(out, name):
    open(os.path.join(out, name), 'wb').close()


def valid_records_as_train(out, name):
    shutil.copy(os.path.join(out, 'valid-00000-of-00002.tfrecords'), os.path.join(out, name))


def label_out_of_range(out, name):
    def relabel(i, example):
        if i == 5:
            example.features.feature['train/label'].int64_list.value[0] = 12
        return example
    rewrite_shard(os.path.join(out, name), relabel)


def one_more_record_declared(out, name):
    """dataset.json edited consistently (counts, pixels and labels) for 46 records in a shard of 45."""
    path = os.path.join(out, 'dataset.json')
    metadata = load_json(path)
    metadata['splits']['train']['count'] += 1
    shard = metadata['shards'][name]
    shard['count'] += 1
    shard['pixels'] += SIZE * SIZE  # as if it held one white image more
    shard['sum'] = [t + 255.0 * SIZE * SIZE for t in shard['sum']]
    shard['sum_sq'] = [q + 255.0 ** 2 * SIZE * SIZE for q in shard['sum_sq']]
    shard['labels'] += '0'
    with open(path, 'w') as f:
        json.dump(metadata, f)


BAD_TRAIN_SHARD = {  # case: (damage to train-00001-of-00003, what the line says after the file's
    # name, images read with skip_bad_records=True)
    # read as 45 of 135 records skipped, exit 0, although not skip_bad_records
    'empty': (empty_file, ' holds 0 records, dataset.json says 45; ', 90),
    # InvalidArgumentError traceback from parse_single_example, skip_bad_records or not
    'valid_shard_renamed': (valid_records_as_train, ' holds 7 records, dataset.json says 45; ', 90),
    # trained with an all-zero one-hot target
    'label_out_of_range': (label_out_of_range, ': its train/* features give shape 128x128x3, 49152 '
                           'bytes, label 12; expected shape 128x128x3 and a label in 0..9; ', 134),
    'count_larger_than_held': (one_more_record_declared, ' holds 45 records, dataset.json says 46; ',
                               135),
}


@pytest.mark.parametrize('case', BAD_TRAIN_SHARD)
def test_a_training_shard_that_is_not_what_dataset_json_says_stops_or_is_skipped(
        two_step, tmp_path, cifar_source, session, case):
    damage, message, read_if_skipped = BAD_TRAIN_SHARD[case]
    out = copy_dataset(two_step['root'], tmp_path, resized=False)
    name = 'train-00001-of-00003.tfrecords'
    damage(out, name)
    _, source = cifar_source(directory=out)
    with pytest.raises(tf.errors.OpError) as caught:
        read_pass(session, source, 'train', training=True, seed=1)
    bad_record = TFRecordsReader.BAD_RECORD if case == 'label_out_of_range' else ''
    assert str(source.explain(caught.value)).startswith(f'{bad_record}{os.path.join(out, name)}{message}')
    _, source = cifar_source('skip_bad_records=True', directory=out)
    assert len(read_pass(session, source, 'train', training=True, seed=1)[0]) == read_if_skipped


def test_records_of_another_split_are_bad_records_when_counts_agree(two_step, tmp_path, cifar_source,
                                                                    session):
    out = copy_dataset(two_step['root'], tmp_path, resized=False)
    name = 'test-00000-of-00002.tfrecords'  # 15 records, as test-00001
    shutil.copy(os.path.join(out, 'test-00001-of-00002.tfrecords'), os.path.join(out, name))
    rewrite_shard(os.path.join(out, name), lambda i, example: tf.train.Example(features=tf.train.Features(
        feature={k.replace('test/', 'valid/'): v for k, v in example.features.feature.items()})))
    _, source = cifar_source(directory=out)
    assert_error_names_file(session, source, 'test', tf.errors.InvalidArgumentError, name)
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        read_pass(session, source, 'test', training=False)
    assert 'its test/* features give shape 0x0x0, 0 bytes, label -1' in str(source.explain(caught.value))
    _, source = cifar_source('skip_bad_records=True', directory=out)
    assert len(read_pass(session, source, 'test', training=False)[0]) == 15


def test_an_empty_training_shard_stops_main_with_one_line(two_step, tmp_path, capsys):
    """The README: a truncated file stops the run unless skip_bad_records=True."""
    out = copy_dataset(two_step['root'], tmp_path, resized=False)
    empty_file(out, 'train-00002-of-00003.tfrecords')
    assert main.main(['dataset_name=cifar_128', f'datasets_root={tmp_path}', 'batch_size=16',
                      'train_eval_images=20', 'max_epochs=1']) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {os.path.join(out, 'train-00002-of-00003.tfrecords')} holds 0 records, "
                   f"dataset.json says 45; write it again (python TFRecordsWriter.py), or set "
                   f"skip_bad_records=True to skip what cannot be read\n")


RESIZED_BAD = {  # case: (file of the train split, its bytes from the good array, the line)
    'doubled_rows': ('images', lambda a: fixtures.npy_bytes(a, shape=(2 * len(a), *a.shape[1:])),
                     'its header declares 13271040 bytes of data, the file holds 6635520'),
    'unknown_version': ('images', lambda a: fixtures.npy_bytes(a, version=(3, 1)),
                        '.npy format version 3.1 is not one this reads'),
    'no_rows': ('images', lambda a: fixtures.npy_bytes(a[0, 0, 0, 0]),
                'its header declares shape [], expected [N, 128, 128, 3]'),
    'float_pixels': ('images', lambda a: fixtures.npy_bytes(a.astype(np.float32)),
                     'holds float32 values, expected uint8'),
    'label_out_of_range': ('labels', lambda a: fixtures.npy_bytes(np.where(a == a[7], 12, a)),
                           'labels must lie in 0..9, found 0..12'),
    'fewer_labels': ('labels', lambda a: fixtures.npy_bytes(a[:-1]), '135 train images but 134 labels'),
}


@pytest.mark.parametrize('case', RESIZED_BAD)
def test_resized_npy_that_is_not_what_its_header_says_is_one_line(two_step, tmp_path, capsys, case):
    """ImageResizer's .npy files are checked header first, against the file's
    size and each other, before any image is read: one line, not a traceback."""
    kind, make, message = RESIZED_BAD[case]
    out = copy_dataset(two_step['root'], tmp_path)
    path = os.path.join(out, 'resized', f'train_{kind}.npy')
    raw = make(np.load(path))
    with open(path, 'wb') as f:
        f.write(raw)
    assert TFRecordsWriter.main(writer_args(tmp_path)) == 2
    err = capsys.readouterr().err
    named = os.path.dirname(path) if case == 'fewer_labels' else path  # counts: the folder's
    assert err.startswith(f'error: {named}') and message in err and err.count('\n') == 1


FIRST_TRAIN = 'train-00000-of-00003.tfrecords'


def flat_training_images(metadata):
    """Every training pixel 100: sums that fit, but no variance to normalise by."""
    for name in shard_names('train', SHARDS['train']):
        shard = metadata['shards'][name]
        shard['sum'], shard['sum_sq'] = [100.0 * shard['pixels']] * 3, [10000.0 * shard['pixels']] * 3


def scaled_sum_sq(metadata, factor):
    shard = metadata['shards'][FIRST_TRAIN]
    shard['sum_sq'] = [float(int(v * factor)) for v in shard['sum_sq']]


BAD_METADATA = {  # case: (edit of dataset.json's dict, or its new text; what the line says)
    'empty_object': (lambda m: {}, 'description is null, expected a JSON object'),
    'list': (lambda m: [], 'the file is [], expected a JSON object of description, splits and shards'),
    'not_json': ('{"description": ', 'is not readable'),
    'count_as_text': (lambda m: m['splits']['train'].update(count='135'),
                      'splits.train.count is "135", expected a whole number >= 0'),
    'image_shape_2d': (lambda m: m['description'].update(image_shape=[128, 128]),
                       'description.image_shape is [128, 128], expected [height, width, channels]'),
    'no_test_split': (lambda m: m['splits'].__delitem__('test'), 'expected the splits train, valid, test'),
    'shard_elsewhere': (lambda m: m['splits']['valid']['shards'].append('../../etc/passwd'),
                        'splits.valid.shards is ["valid-00000-of-00002.tfrecords", '),
    # a run trained on these: "weights became NaN ... lower learning_rate"
    'no_pixels': (lambda m: m['shards'][FIRST_TRAIN].update(pixels=0),
                  f'shards.{FIRST_TRAIN}.pixels is 0, expected count x height x width = 45 x 128 x '
                  f'128 = 737280'),
    # test loss 161 and exit 0 (std from a negative variance clipped to 1e-6)
    'sum_sq_too_small': (lambda m: scaled_sum_sq(m, 0.01), f'shards.{FIRST_TRAIN}.sum and .sum_sq of '
                         f'channel 0'),
    'sum_sq_too_large': (lambda m: scaled_sum_sq(m, 300), 'are not those of 737280 pixels of 0..255'),
    # broadcast to three channels without a word
    'one_channel': (lambda m: m['shards'][FIRST_TRAIN].update(sum=[1.0], sum_sq=[1.0]),
                    f'shards.{FIRST_TRAIN}.sum is [1.0], expected one whole number per channel (3)'),
    'no_variance': (flat_training_images, "the train split's pixel sums give channel 0 no variance"),
    # "skipped 8910 records that could not be read"
    'count_too_large': (lambda m: m['splits']['train'].update(count=9000),
                        'splits.train.count is 9000 but its shards hold 135 records'),
}


def edit_metadata(directory, edit):
    path = os.path.join(directory, 'dataset.json')
    if isinstance(edit, str):
        text = edit
    else:
        metadata = load_json(path)
        edited = edit(metadata)
        text = json.dumps(metadata if edited is None else edited)
    with open(path, 'w') as f:
        f.write(text)
    return path


@pytest.mark.parametrize('case', BAD_METADATA)
def test_dataset_json_that_cannot_be_trusted_is_one_line_naming_the_field(two_step, tmp_path, capsys,
                                                                         case):
    edit, message = BAD_METADATA[case]
    path = edit_metadata(copy_dataset(two_step['root'], tmp_path, resized=False), edit)
    assert main.main(['dataset_name=cifar_128', f'datasets_root={tmp_path}']) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'error: {path}') and message in err and err.count('\n') == 1


def test_the_writer_rewrites_every_shard_when_dataset_json_cannot_be_trusted(two_step, tmp_path,
                                                                             capsys):
    out = copy_dataset(two_step['root'], tmp_path)
    edit_metadata(out, lambda m: [])
    assert TFRecordsWriter.main(writer_args(tmp_path)) == 0
    assert 'warning: ' in capsys.readouterr().err
    assert_same_as_reference(out, two_step)


def test_missing_dataset_json_says_how_to_make_it(tmp_path):
    with pytest.raises(DataError) as caught:
        TFRecordsReader.open_cifar_128(str(tmp_path))
    assert 'ImageResizer' in str(caught.value) and 'TFRecordsWriter' in str(caught.value)


def test_writer_without_resized_images_says_what_to_run(tmp_path, capsys):
    assert TFRecordsWriter.main(writer_args(tmp_path)) == 2
    assert 'ImageResizer' in capsys.readouterr().err


# --- 7. ImageNet -----------------------------------------------------------------------

def smooth_image(rng, width, height):
    small = rng.integers(0, 256, (height // 10 + 2, width // 10 + 2, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.BILINEAR)


@pytest.fixture(scope='module')
def imagenet(tmp_path_factory):
    """A tiny train/<wnid>/*.JPEG, val/<wnid>/*.JPEG tree, written as TFRecords."""
    root = tmp_path_factory.mktemp('imagenet')
    src = root / 'imagenet_src'
    rng = np.random.default_rng(3)
    sources = {}  # (split, filename) -> (wnid, PIL RGB image, kind)
    for folder, split, per_class in (('train', 'train', 4), ('val', 'validation', 2)):
        for wnid in WNIDS:
            os.makedirs(src / folder / wnid)
            for i in range(per_class):
                name = f'{wnid}_{folder}_{i}.JPEG'
                image = smooth_image(rng, *rng.integers(40, 71, 2))
                image.save(src / folder / wnid / name, format='JPEG', quality=90)
                sources[split, name] = (wnid, image, 'jpeg')
    png = smooth_image(rng, 50, 44)
    png.save(src / 'train' / WNIDS[1] / 'png_in_disguise.JPEG', format='PNG')
    sources['train', 'png_in_disguise.JPEG'] = (WNIDS[1], png, 'png')
    cmyk = smooth_image(rng, 45, 61).convert('CMYK')
    cmyk.save(src / 'train' / WNIDS[2] / 'cmyk.JPEG', format='JPEG', quality=95)
    sources['train', 'cmyk.JPEG'] = (WNIDS[2], cmyk, 'cmyk')
    args = ['dataset_name=imagenet', 'output_shape=1000', f'imagenet_dir={src}',
            f'datasets_root={root}', "tfrecord_shards={'train': 2, 'validation': 1}"]
    assert TFRecordsWriter.main(args) == 0
    return {'root': root, 'src': src, 'dir': data_dir(root, 'imagenet'), 'sources': sources}


def test_imagenet_writer_shards_and_records(imagenet):
    names = sorted(n for n in os.listdir(imagenet['dir']) if not n.startswith('.'))
    assert names == ['dataset.json', 'train-00000-of-00002', 'train-00001-of-00002',
                     'validation-00000-of-00001']
    seen = collections.Counter()
    for shard in names[1:]:
        split = shard.split('-')[0]
        examples = read_examples(os.path.join(imagenet['dir'], shard))
        assert len(examples) == {'train': 7, 'validation': 6}[split]
        for example in examples:
            filename = feature(example, 'image/filename').decode()
            wnid, source_image, kind = imagenet['sources'][split, filename]
            seen[split, filename] += 1
            encoded = feature(example, 'image/encoded')
            with Image.open(io.BytesIO(encoded)) as image:
                assert image.format == 'JPEG' and image.mode == 'RGB'
                decoded = np.asarray(image, np.float64)
            assert feature(example, 'image/class/label') == 1 + sorted(WNIDS).index(wnid)
            assert feature(example, 'image/class/synset') == wnid.encode()
            assert (feature(example, 'image/width'), feature(example, 'image/height')) == source_image.size
            assert decoded.shape == (source_image.size[1], source_image.size[0], 3)
            original = np.asarray(source_image.convert('RGB'), np.float64)
            assert np.abs(decoded - original).mean() < 6, filename  # the same picture
            if kind == 'jpeg':  # RGB JPEGs are stored as they are
                path = imagenet['src'] / ('train' if split == 'train' else 'val') / wnid / filename
                assert encoded == path.read_bytes()
    assert seen == collections.Counter(imagenet['sources'].keys())


def test_imagenet_reader_passes(imagenet, graph, session):
    data = TFRecordsReader.open_imagenet(imagenet['dir'])
    assert data.counts == {'train': 14, 'valid': 6, 'test': 6}
    cfg = reader_cfg(imagenet['root'], 'output_shape=1000', 'batch_size=4', 'eval_batch_size=4',
                     dataset='imagenet')
    source = make_input(data, cfg)
    records = {split: [e for f in data.files[split] for e in read_examples(f)]
               for split in ('train', 'valid')}
    for split, training in (('train', True), ('valid', False)):
        images, labels, sizes = read_pass(session, source, split, training, seed=1)
        assert images.dtype == np.float32 and images.shape == (len(records[split]), 224, 224, 3)
        assert sizes[0] == 4
        assert np.isfinite(images).all()
        # one-hot of the dataset's classes (3 from dataset.json), at label - 1
        assert labels.shape == (len(images), data.num_classes) and (labels.sum(1) == 1).all()
        wanted = [feature(e, 'image/class/label') - 1 for e in records[split]]
        assert sorted(labels.argmax(1).tolist()) == sorted(wanted)
    # evaluation: one file, records in order, central crop normalised by ImageNet stats
    assert labels.argmax(1).tolist() == wanted
    for image, example in zip(images, records['valid']):
        stored = np.asarray(Image.open(io.BytesIO(feature(example, 'image/encoded'))), np.float64)
        h, w, _ = stored.shape
        top, left = int((h - h * 0.875) / 2), int((w - w * 0.875) / 2)
        centre = stored[top:h - top, left:w - left]
        restored = image * TFRecordsReader.IMAGENET_STD + TFRecordsReader.IMAGENET_MEAN
        np.testing.assert_allclose(restored.mean(axis=(0, 1)), centre.mean(axis=(0, 1)), atol=2)


def test_main_trains_on_a_written_imagenet_subset(imagenet, capsys):
    args = ['dataset_name=imagenet', 'output_shape=1000', f"datasets_root={imagenet['root']}",
            'batch_size=7', 'eval_batch_size=8', 'max_epochs=1']
    assert main.main(args) == 0
    assert 'Validation error: epoch 1' in capsys.readouterr().out
    # predict.py shows the network a validation JPEG as evaluation does (its central view)
    first = read_examples(os.path.join(imagenet['dir'], 'validation-00000-of-00001'))[0]
    wnid = feature(first, 'image/class/synset').decode()
    path = imagenet['src'] / 'val' / wnid / feature(first, 'image/filename').decode()
    assert predict.main(args + ['top_k=3', str(path)]) == 0
    printed = re.findall(r'(n\d{8}) \((\d\.\d{4})\)', capsys.readouterr().out)
    run = imagenet['root'] / 'imagenet' / 'save_dir' / 'runs' / 'custom_model_relu'
    record = load_json(run / 'history.json')
    cfg = settings.load_config(args)
    with tf.Graph().as_default(), v1.Session() as session:
        model = Model.from_config(cfg, (224, 224, 3))
        # the best epoch's checkpoint holds the network, not the optimiser's slots
        best = str(run / record['best']['checkpoint'])
        v1.train.Saver(training_graph.inference_variables(model)).restore(session, best)
        images, _, _ = read_pass(session, make_input(TFRecordsReader.open_imagenet(imagenet['dir']), cfg),
                                 'valid', training=False)
        probabilities = session.run(tf.nn.softmax(model.logits), {model.X: images[:1]})[0]
    top = np.argsort(-probabilities, kind='stable')[:3]
    assert [name for name, _ in printed] == [record['data']['classes'][i] for i in top]
    assert [float(p) for _, p in printed] == pytest.approx(probabilities[top], abs=5.1e-5)


def jpeg_bytes(width=48, height=40):
    out = io.BytesIO()
    smooth_image(np.random.default_rng(5), width, height).save(out, format='JPEG', quality=90)
    return out.getvalue()


def jpeg_claiming(width, height):
    """A small JPEG whose frame header (SOF0) claims width x height pixels."""
    data = jpeg_bytes()
    sof = data.index(b'\xff\xc0') + 5  # marker, length (2), precision (1), then height, width
    return data[:sof] + height.to_bytes(2, 'big') + width.to_bytes(2, 'big') + data[sof + 4:]


def write_hostile(path, case):
    if case == 'sparse_huge_file':  # 65 MB that take no disk: refused by its size, never read
        with open(path, 'wb') as f:
            f.truncate(image_files.IMAGE_MAX_BYTES + 1)
        return
    data = {'header_65000x65000': lambda: jpeg_claiming(65000, 65000),  # Pillow's bomb error
            'header_9000x9000': lambda: jpeg_claiming(9000, 9000),  # Pillow would decode 243 MB
            'truncated': lambda: jpeg_bytes()[:-400],
            'text': lambda: b'not an image at all'}[case]()
    with open(path, 'wb') as f:
        f.write(data)


HOSTILE_IMAGES = {  # case: what the line says after the file's name
    # DecompressionBombError traceback from the writer
    'header_65000x65000': ' is not a readable image (Image size (4225000000 pixels) exceeds limit',
    'header_9000x9000': ' declares 9000 x 9000 pixels, more than an image of the dataset (67108864 '
                        'at most)',
    # written, then an InvalidArgumentError traceback mid-epoch, skip_bad_records or not
    'truncated': ' is not a readable JPEG (jpeg::Uncompress failed. Invalid JPEG data',
    'text': ' is not a readable image (cannot identify image file',
    'sparse_huge_file': f' holds {image_files.IMAGE_MAX_BYTES + 1} bytes, more than an image of '
                        f'the dataset',
}


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize('case', HOSTILE_IMAGES)
def test_the_imagenet_writer_decodes_every_image_and_stops_or_leaves_out_a_bad_one(
        imagenet, tmp_path, capsys, case):
    """Sizes are checked from the file and the image header before anything
    is read or decoded; every image is decoded by TensorFlow, as the reader
    will, before its record is written."""
    src = tmp_path / 'src'
    shutil.copytree(imagenet['src'], src)
    bad = src / 'train' / WNIDS[0] / 'hostile.JPEG'
    write_hostile(bad, case)
    args = ['dataset_name=imagenet', 'output_shape=1000', f'imagenet_dir={src}',
            f'datasets_root={tmp_path}', "tfrecord_shards={'train': 2, 'validation': 1}"]
    before = peak_rss_mb()
    assert TFRecordsWriter.main(args) == 2
    assert peak_rss_mb() - before < 100  # the process's peak: no image was allocated
    err = capsys.readouterr().err
    assert err.startswith(f'error: {bad}{HOSTILE_IMAGES[case]}') and err.count('\n') == 1
    assert err.endswith('; remove it, or set skip_bad_records=True to leave such images out\n')

    assert TFRecordsWriter.main([*args, 'skip_bad_records=True']) == 0
    assert f'warning: {bad}{HOSTILE_IMAGES[case]}' in capsys.readouterr().err
    out = data_dir(tmp_path, 'imagenet')
    data = TFRecordsReader.open_imagenet(out)
    assert data.counts['train'] == 14 and sum(data.shard_counts.values()) == 14 + 6
    names = [feature(e, 'image/filename') for f in data.files['train'] for e in read_examples(f)]
    assert len(names) == 14 and b'hostile.JPEG' not in names


def test_records_holding_a_jpeg_that_does_not_decode_stop_or_are_skipped(imagenet, tmp_path, graph,
                                                                         session):
    """Records written by other tools: a truncated JPEG failed training with
    an InvalidArgumentError traceback even with skip_bad_records=True."""
    out = tmp_path / 'records'
    shutil.copytree(imagenet['dir'], out)

    def truncate_image(i, example):
        if i == 2:
            encoded = example.features.feature['image/encoded'].bytes_list
            encoded.value[0] = encoded.value[0][:len(encoded.value[0]) * 2 // 3]
        return example
    rewrite_shard(str(out / 'train-00001-of-00002'), truncate_image)

    def source(*extra):
        return make_input(TFRecordsReader.open_imagenet(str(out)), reader_cfg(
            imagenet['root'], 'output_shape=1000', 'batch_size=4', 'eval_batch_size=4', *extra,
            dataset='imagenet'))
    strict = source()
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        read_pass(session, strict, 'train', training=True, seed=1)
    assert str(strict.explain(caught.value)) == (
        f'an image of the records in {out} is not a readable JPEG (jpeg::Uncompress failed. Invalid '
        f'JPEG data or crop window.); write them again with python TFRecordsWriter.py, which decodes '
        f'every image it writes, or set skip_bad_records=True to skip such records')
    skipping = source('skip_bad_records=True')
    assert len(read_pass(session, skipping, 'train', training=True, seed=1)[0]) == 13


def test_imagenet_records_without_dataset_json_open(imagenet, tmp_path):
    out = tmp_path / 'records'
    shutil.copytree(imagenet['dir'], out)
    os.remove(out / 'dataset.json')
    data = TFRecordsReader.open_imagenet(str(out))
    assert data.num_classes == 1000
    assert data.counts == {'train': 14, 'valid': 6, 'test': 6}
    assert [os.path.basename(f) for f in data.files['train']] == ['train-00000-of-00002',
                                                                  'train-00001-of-00002']


# --- 8. end to end through main.py ----------------------------------------------------

TRAIN_LINE = re.compile(r'^Train error: epoch (\d+) loss=\d+\.\d{4} accuracy=\d\.\d{4}$', re.M)
VALID_LINE = re.compile(r'^Validation error: epoch (\d+) loss=\d+\.\d{4} accuracy=\d\.\d{4}$', re.M)


def run_main(root, *args):
    env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
    return subprocess.run(
        [sys.executable, os.path.join(PROJECT_DIR, 'main.py'), 'dataset_name=cifar_128',
         f'datasets_root={root}', 'batch_size=16', 'train_eval_images=20', *args],
        cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_main_trains_and_resumes_on_cifar_128(two_step, tmp_path):
    copy_dataset(two_step['root'], tmp_path, resized=False)
    first = run_main(tmp_path, 'max_epochs=1')
    assert first.returncode == 0, first.stderr
    assert first.stderr == ''  # no TensorFlow or AutoGraph noise for the user
    assert 'EPOCH STATISTICS :' in first.stdout
    assert TRAIN_LINE.findall(first.stdout) == ['1'] and VALID_LINE.findall(first.stdout) == ['1']
    assert re.search(r'^epoch 1, step 135 / 135, ', first.stdout, re.M)
    assert 'Plotting in: cifar_128/save_dir/plot_training/custom_model_relu.pdf' in first.stdout
    save = tmp_path / 'cifar_128' / 'save_dir'
    assert (save / 'plot_training' / 'custom_model_relu.pdf').read_bytes().startswith(b'%PDF')
    run = save / 'runs' / 'custom_model_relu'
    assert [e['epoch'] for e in json.loads((run / 'history.json').read_text())['epochs']] == [1]
    assert (run / 'model.ckpt-1.index').is_file()

    second = run_main(tmp_path, 'max_epochs=2', 'resume=True')
    assert second.returncode == 0, second.stderr
    assert 'Resuming from' in second.stdout
    assert TRAIN_LINE.findall(second.stdout) == ['2'] and VALID_LINE.findall(second.stdout) == ['2']
    assert [e['epoch'] for e in json.loads((run / 'history.json').read_text())['epochs']] == [1, 2]
    assert (run / 'model.ckpt-2.index').is_file()


def test_two_workers_read_their_own_shards_and_train_the_epoch_in_equal_steps(two_step, tmp_path, job):
    """Each worker reads every other training file and takes half of the
    records; the chief trains, evaluates and writes as alone."""
    copy_dataset(two_step['root'], tmp_path, resized=False)
    two = job([f'datasets_root={tmp_path}', 'dataset_name=cifar_128', 'batch_size=16',
               'train_eval_images=20', 'max_epochs=1', 'log_every=1000'])
    for index in (0, 1):
        two.start(index)
    assert two.wait(two.SECONDS) == {0: 0, 1: 0}, two.log(0).read_text()[-3000:]
    for index in (0, 1):  # 135 records: 67 per worker, the whole job 134 a pass
        assert 'epoch 1, step 134 / 135' in two.log(index).read_text()
    assert 'skipped' not in two.log(0).read_text()
    record = json.loads((tmp_path / 'cifar_128' / 'save_dir' / 'runs' / 'custom_model_relu' /
                         'history.json').read_text())
    assert [e['epoch'] for e in record['epochs']] == [1] and 'test' in record
