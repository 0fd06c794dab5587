"""Streams batches from sharded TFRecords through tf.data, never holding the
dataset in memory: shuffled shard order, parallel interleaved reads, a shuffle
buffer, parse, check, decode, augment, batch, normalise, prefetch.

Two record formats: the 128 px CIFAR records of TFRecordsWriter (raw uint8
pixels with their declared shape) and the ImageNet records of TensorFlow's own
ImageNet scripts (JPEG bytes, labels 1..1000), which read unchanged.
"""
import dataclasses
import glob
import json
import os

import numpy as np
import tensorflow as tf

from trainer import imagenet
from trainer.errors import DataError
from trainer.input_pipeline import AUGMENTATION, batches, pass_iterator, random_shift_flip

v1 = tf.compat.v1
AUTOTUNE = tf.data.AUTOTUNE
METADATA = 'dataset.json'
# Pixel statistics of the ImageNet training set (the values used across frameworks).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
IMAGENET_COUNTS = {'train': 1281167, 'validation': 50000}
IMAGENET_SHARDS = {'train': 1024, 'validation': 128}  # TensorFlow's ImageNet scripts
IMAGENET_SIZE = 224
CENTRAL_FRACTION = 0.875  # evaluation crop of the ResNet papers: 224 of 256


@dataclasses.dataclass(frozen=True)
class RecordDataset:
    """What the reader needs to know about a folder of TFRecords."""
    format: str            # 'cifar_raw' or 'imagenet_jpeg'
    files: dict            # split -> [paths]; split in train, valid, test
    counts: dict           # split -> records
    image_shape: tuple     # what the model sees
    num_classes: int
    mean: np.ndarray
    std: np.ndarray
    record_split: dict     # split -> the prefix its records' features carry (cifar_raw)
    classes: tuple = ()    # imagenet_jpeg: the synset of each output

    def num_examples(self, split):
        return self.counts[split]


def split_files(data_dir, prefix, names=None):
    files = names and [os.path.join(data_dir, n) for n in names]
    files = files or sorted(glob.glob(os.path.join(data_dir, f'{prefix}-*-of-*')))
    missing = [f for f in files if not os.path.isfile(f)]
    if missing or not files:
        raise DataError(f'no complete {prefix} shards in {data_dir} (missing: '
                        f'{", ".join(os.path.basename(m) for m in missing) or prefix + "-*-of-*"})')
    return files


def read_metadata(data_dir):
    path = os.path.join(data_dir, METADATA)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise DataError(f'{path} is not readable ({error}); run TFRecordsWriter.py again') from None


def pixel_stats(metadata, split):
    """Per-channel mean and std of a split from the writer's per-shard sums."""
    shards = [metadata['shards'][n] for n in metadata['splits'][split]['shards']]
    pixels = sum(s['pixels'] for s in shards)
    total = np.sum([s['sum'] for s in shards], axis=0)
    total_sq = np.sum([s['sum_sq'] for s in shards], axis=0)
    mean = total / pixels
    std = np.sqrt(np.maximum(total_sq / pixels - mean ** 2, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def open_cifar_128(data_dir):
    """The 128 px CIFAR-10 TFRecords that TFRecordsWriter wrote into data_dir."""
    metadata = read_metadata(data_dir)
    if metadata is None:
        raise DataError(f'no 128 px CIFAR-10 TFRecords in {data_dir} ({METADATA} is missing): '
                        f'run python ImageResizer.py, then python TFRecordsWriter.py '
                        f'(or python TFRecordsWriter.py one_pass=True)')
    incomplete = [n for split in metadata['splits'].values() for n in split['shards']
                  if n not in metadata['shards']]
    if incomplete:
        raise DataError(f'{data_dir} holds {len(incomplete)} unfinished shard(s): run '
                        f'python TFRecordsWriter.py again to complete them')
    splits = ('train', 'valid', 'test')
    files = {s: split_files(data_dir, s, metadata['splits'][s]['shards']) for s in splits}
    mean, std = pixel_stats(metadata, 'train')
    description = metadata['description']
    return RecordDataset('cifar_raw', files, {s: metadata['splits'][s]['count'] for s in splits},
                         tuple(description['image_shape']), description['num_classes'], mean, std,
                         {s: s for s in splits})


def count_records(files):
    return sum(1 for f in files for _ in v1.io.tf_record_iterator(f))


def imagenet_classes(metadata, data_dir, classes):
    """The synset of each output: TF's 1000 ('official', whatever the records
    hold), or ('present') those the writer found, in the same order."""
    if classes == 'official':
        return imagenet.synsets()
    present = metadata.get('description', {}).get('synsets')
    if not present:
        raise DataError(f"imagenet_classes='present' needs the synsets the records hold: "
                        f"{os.path.join(data_dir, METADATA)}, written by TFRecordsWriter.py, "
                        f"lists them; without it, set imagenet_classes='official'")
    return tuple(present)


def open_imagenet(data_dir, classes='official'):
    """ImageNet shards train-*-of-* and validation-*-of-* (TensorFlow's format);
    the official validation set serves as validation and test split.
    `classes`: see imagenet_classes."""
    metadata = read_metadata(data_dir) or {}
    files = {p: split_files(data_dir, p) for p in ('train', 'validation')}
    counts = {}
    for prefix, paths in files.items():
        known = metadata.get('splits', {}).get(prefix, {}).get('count')
        full = len(paths) == IMAGENET_SHARDS[prefix]
        counts[prefix] = known or (IMAGENET_COUNTS[prefix] if full else count_records(paths))
    synsets = imagenet_classes(metadata, data_dir, classes)
    return RecordDataset(
        'imagenet_jpeg', {'train': files['train'], 'valid': files['validation'], 'test': files['validation']},
        {'train': counts['train'], 'valid': counts['validation'], 'test': counts['validation']},
        (IMAGENET_SIZE, IMAGENET_SIZE, 3), len(synsets),
        np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32),
        {'train': 'train', 'valid': 'validation', 'test': 'validation'}, synsets)


# --- parsing ---------------------------------------------------------------------

def parse_cifar_raw(data, split, strict):
    """serialized record, file -> (uint8 image, label, ok); ok is False for a
    record whose pixels do not match its declared shape or the dataset's."""
    prefix = data.record_split[split]
    height, width, channels = data.image_shape
    keys = {'image': tf.io.FixedLenFeature([], tf.string),
            'label': tf.io.FixedLenFeature([], tf.int64),
            'height': tf.io.FixedLenFeature([], tf.int64),
            'width': tf.io.FixedLenFeature([], tf.int64),
            'channels': tf.io.FixedLenFeature([], tf.int64)}

    def parse(index, record):
        serialized, filename = record
        f = tf.io.parse_single_example(serialized, {f'{prefix}/{k}': v for k, v in keys.items()})
        f = {k.split('/', 1)[1]: v for k, v in f.items()}
        declared = tf.stack([f['height'], f['width'], f['channels']])
        size = tf.cast(tf.strings.length(f['image']), tf.int64)
        ok = tf.logical_and(tf.reduce_all(tf.equal(declared, [height, width, channels])),
                            tf.equal(size, f['height'] * f['width'] * f['channels']))
        if strict:
            check = tf.debugging.Assert(ok, [
                'bad record in', filename, ': declared shape', declared, 'with', size,
                'bytes; expected', [height, width, channels]], summarize=4)
            with tf.control_dependencies([check]):
                ok = tf.identity(ok)
        pixels = tf.io.decode_raw(f['image'], tf.uint8)
        # A bad record is dropped by the filter (or stopped by the check) before
        # its pixels are used; this keeps the reshape valid meanwhile.
        pixels = tf.cond(ok, lambda: pixels, lambda: tf.zeros([height * width * channels], tf.uint8))
        return tf.reshape(pixels, [height, width, channels]), f['label'], ok
    return parse


def class_of_label(data, label, filename, strict):
    """(class, ok) of an official label 1..1000: its synset's place in
    data.classes; ok is False for a label of no class (TF's background 0, a
    synset left out), which strict stops with the file's name."""
    places = {wnid: i for i, wnid in enumerate(data.classes)}
    table = [-1] + [places.get(wnid, -1) for wnid in imagenet.synsets()]  # at labels 0..1000
    # Clipped into the table for the lookup; a label outside it is no class.
    inside = tf.logical_and(label >= 0, label < len(table))
    found = tf.where(inside, tf.gather(tf.constant(table, tf.int64),
                                       tf.clip_by_value(label, 0, len(table) - 1)), -1)
    ok = found >= 0
    if strict:
        message = tf.strings.join(['bad record in ', filename, ': label ', tf.strings.as_string(label),
                                   f' is not one of the {len(data.classes)} classes'])
        with tf.control_dependencies([tf.debugging.Assert(ok, [message])]):
            ok = tf.identity(ok)
    return tf.maximum(found, 0), ok


def parse_imagenet_jpeg(data, training, seed, strict):
    """serialized record, file -> (float image 224x224, class, ok): a random
    crop (8-100 % of the area, aspect 3/4-4/3) with flips for training, the
    central 87.5 % for evaluation, resized to 224. The randomness is stateless,
    seeded by the pass's seed and the record's index, like input_pipeline.random_shift_flip."""
    keys = {'image/encoded': tf.io.FixedLenFeature([], tf.string),
            'image/class/label': tf.io.FixedLenFeature([], tf.int64)}

    def parse(index, record):
        f = tf.io.parse_single_example(record[0], keys)
        label, ok = class_of_label(data, f['image/class/label'], record[1], strict)
        encoded = f['image/encoded']
        if training:
            pair = tf.stack([seed, index])
            begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
                tf.io.extract_jpeg_shape(encoded), bounding_boxes=tf.zeros([1, 0, 4]), seed=pair,
                min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
                max_attempts=10, use_image_if_no_bounding_boxes=True)
            window = tf.stack([begin[0], begin[1], size[0], size[1]])
            image = tf.io.decode_and_crop_jpeg(encoded, window, channels=3)
            image = tf.image.stateless_random_flip_left_right(image, seed=pair + 1)
        else:
            image = tf.image.central_crop(tf.io.decode_jpeg(encoded, channels=3), CENTRAL_FRACTION)
        image = tf.image.resize(image, [IMAGENET_SIZE, IMAGENET_SIZE], method='bilinear')
        return image, label, ok
    return parse


def is_good(image, label, ok):
    return ok


def without_flag(image, label, ok):
    return image, label


# --- the pipeline ------------------------------------------------------------------

def records(files, training, seed, skip_bad):
    """(serialized record, its file) from `files`: shuffled file order and
    interleaved parallel reads for training, files in order for evaluation."""
    names = tf.data.Dataset.from_tensor_slices(files)
    if training:
        names = names.shuffle(len(files), seed=seed)

    def read(filename):
        dataset = tf.data.TFRecordDataset(filename)
        if skip_bad:  # a corrupt or truncated file ends early instead of stopping the run
            dataset = dataset.apply(tf.data.experimental.ignore_errors())
        return dataset.map(lambda record: (record, filename))
    # Parallel, yet deterministic: equal seeds give equal orders (and crops).
    return names.interleave(read, cycle_length=min(len(files), 8), block_length=1,
                            num_parallel_calls=AUTOTUNE, deterministic=True)


def make_dataset(data, split, training, batch_size, cfg, seed=None, limit=None, skip=None,
                 shard=None):
    """The batched (normalised images, one-hot labels) of one split; a
    training pass leaves out its first `skip` images (resuming an epoch).

    `shard` (worker, workers) of a multi-worker job: the worker reads its own
    files (every workers-th) and takes exactly records / workers of them, its
    files read again from the start if they hold fewer: every worker then
    takes the same number of steps, which the all-reduce needs.
    """
    skip_bad = cfg['skip_bad_records']
    files = data.files[split][shard[0]::shard[1]] if shard else data.files[split]
    dataset = records(files, training, seed, skip_bad)
    if shard:
        dataset = dataset.repeat()
    if training:
        dataset = dataset.shuffle(cfg['shuffle_buffer'], seed=seed)
    if data.format == 'cifar_raw':
        parse = parse_cifar_raw(data, split, strict=not skip_bad)
    else:
        parse = parse_imagenet_jpeg(data, training, seed, strict=not skip_bad)
    dataset = dataset.enumerate().map(parse, num_parallel_calls=AUTOTUNE).filter(is_good).map(without_flag)
    if training and cfg['augment'] and data.format == 'cifar_raw':
        dataset = dataset.enumerate().map(random_shift_flip(seed, *AUGMENTATION['cifar_128']),
                                          num_parallel_calls=AUTOTUNE)
    if shard:
        limit = data.num_examples(split) // shard[1]
    if limit:
        dataset = dataset.take(limit)
    if skip is not None:
        dataset = dataset.skip(skip)
    return batches(dataset, batch_size, data.mean, data.std, data.num_classes)


class TFRecordInput:
    """The input source (as input_pipeline.ArrayInput) for TFRecords."""

    def __init__(self, data, cfg, shard=None):
        self.data = data
        self.workers = shard[1] if shard else 1
        self.seed = v1.placeholder_with_default(tf.constant(0, tf.int64), [], 'shuffle_seed')
        self.skip = v1.placeholder_with_default(tf.constant(0, tf.int64), [], 'skip_images')
        passes = {('train', True): make_dataset(data, 'train', True,
                                                cfg['batch_size'] // self.workers, cfg,
                                                self.seed, skip=self.skip, shard=shard),
                  ('train', False): make_dataset(data, 'train', False, cfg['eval_batch_size'], cfg,
                                                 limit=cfg['train_eval_images'])}
        for split in ('valid', 'test'):
            passes[split, False] = make_dataset(data, split, False, cfg['eval_batch_size'], cfg)
        self._initializers, self.next_batch = pass_iterator(passes)
        self.image_shape = data.image_shape

    def num_examples(self, split):
        return self.data.num_examples(split)

    def training_images(self):
        """Images of a whole training pass, over all workers of a job."""
        return self.num_examples('train') // self.workers * self.workers

    def start(self, session, split, training, seed=None, skip=0):
        # `skip` counts the whole job's images; each worker did its share of them.
        feed = {self.seed: seed or 0, self.skip: skip // self.workers} if training else {}
        session.run(self._initializers[split, training], feed)

    def explain(self, error):
        """A DataError naming the file behind a reading error, or None."""
        if isinstance(error, tf.errors.DataLossError):
            for files in self.data.files.values():
                unreadable = first_unreadable(files)
                if unreadable:
                    return DataError(f'{unreadable[0]} is truncated or corrupt ({unreadable[1]}); '
                                     f'write it again, or set skip_bad_records=True to skip what '
                                     f'cannot be read')
        message = getattr(error, 'message', '')
        if 'bad record in' in message:
            # the first line of the message, less the bracket tf.debugging.Assert closes its data with
            detail = message[message.index('bad record in'):].split('\n')[0].rstrip(']')
            return DataError(f'{detail}; write the file again, or set skip_bad_records=True to '
                             f'skip such records')
        return None


def first_unreadable(files):
    """(path, reason) of the first file whose records cannot all be read, or None."""
    for path in files:
        try:
            for _ in v1.io.tf_record_iterator(path):
                pass
        except tf.errors.DataLossError as error:
            return path, error.message.strip().split('\n')[-1]
    return None


# dataset -> (data_dir, cfg) -> RecordDataset
OPENERS = {'cifar_128': lambda data_dir, cfg: open_cifar_128(data_dir),
           'imagenet': lambda data_dir, cfg: open_imagenet(data_dir, cfg['imagenet_classes'])}
