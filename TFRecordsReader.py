"""Streams batches from sharded TFRecords through tf.data, never holding the
dataset in memory: shuffled shard order, parallel interleaved reads, a shuffle
buffer, parse, check, decode, augment, batch, normalise, prefetch.

Two record formats: the 128 px CIFAR records of TFRecordsWriter (raw uint8
pixels with their declared shape) and the ImageNet records of TensorFlow's own
ImageNet scripts (JPEG bytes, labels 1..1000), which read unchanged.

A quick run's training split (train_images, overfit_batches) is a mask over
the records of the training files, each known by its file and its place in
it, applied as they are read, before anything is decoded.
"""
import dataclasses
import glob
import os

import numpy as np
import tensorflow as tf

from foundation import regular_files, tf_errors
from foundation.data import imagenet, loaders, subsets
from foundation.data.input_pipeline import batches, pass_iterator, random_shift_flip
from foundation.data.record_metadata import (
    METADATA,
    check_complete,
    incomplete_shards,
    labels_of_text,
    pixel_stats,
    read_metadata,
)
from foundation.errors import DataError

v1 = tf.compat.v1
AUTOTUNE = tf.data.AUTOTUNE
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
    shard_counts: dict = dataclasses.field(default_factory=dict)  # path -> records, from dataset.json
    classes: tuple = ()    # the name of each output: CIFAR-10's labels, ImageNet's synsets
    shard_labels: dict = dataclasses.field(default_factory=dict)  # path -> its records' labels, from dataset.json
    # A training split cut down (train_images, overfit_batches): path -> whether
    # each of its records, in file order, is one of those trained; None: all are.
    train_keep: dict = None
    train_sample: str = ''  # how train_keep was drawn: 'stratified', 'uniform' or 'first'

    def num_examples(self, split):
        return self.counts[split]


def shard_counts(data_dir, metadata):
    """{path: records} of the shards a complete dataset.json records."""
    return {os.path.join(data_dir, name): shard['count'] for name, shard in metadata['shards'].items()}


def shard_labels(data_dir, metadata):
    """{path: int64 labels of its records in file order} of the shards whose
    labels dataset.json records (TFRecordsWriter's 128 px CIFAR-10 since it
    records them)."""
    return {os.path.join(data_dir, name): labels_of_text(shard['labels'])
            for name, shard in metadata['shards'].items() if 'labels' in shard}


def split_files(data_dir, prefix, names=None):
    files = names and [os.path.join(data_dir, n) for n in names]
    files = files or sorted(glob.glob(os.path.join(data_dir, f'{prefix}-*-of-*')))
    missing = [f for f in files if not regular_files.present(f)]  # a FIFO there: one line saying so
    if missing or not files:
        raise DataError(f'no complete {prefix} shards in {data_dir} (missing: '
                        f'{", ".join(os.path.basename(m) for m in missing) or prefix + "-*-of-*"})')
    return files


def open_cifar_128(data_dir):
    """The 128 px CIFAR-10 TFRecords that TFRecordsWriter wrote into data_dir."""
    metadata = read_metadata(data_dir)
    if metadata is None:
        raise DataError(f'no 128 px CIFAR-10 TFRecords in {data_dir} ({METADATA} is missing): '
                        f'run python ImageResizer.py, then python TFRecordsWriter.py '
                        f'(or python TFRecordsWriter.py one_pass=True)')
    incomplete = incomplete_shards(metadata)
    if incomplete:
        raise DataError(f'{data_dir} holds {len(incomplete)} unfinished shard(s): run '
                        f'python TFRecordsWriter.py again to complete them')
    path = os.path.join(data_dir, METADATA)
    check_complete(metadata, path)
    splits = ('train', 'valid', 'test')
    files = {s: split_files(data_dir, s, metadata['splits'][s]['shards']) for s in splits}
    mean, std = pixel_stats(metadata, 'train', path)
    description = metadata['description']
    return RecordDataset('cifar_raw', files, {s: metadata['splits'][s]['count'] for s in splits},
                         tuple(description['image_shape']), description['num_classes'], mean, std,
                         {s: s for s in splits}, shard_counts(data_dir, metadata),
                         loaders.CIFAR_CLASSES,  # the writer writes CIFAR-10 only
                         shard_labels(data_dir, metadata))


def count_records(files):
    return sum(1 for f in files for _ in v1.io.tf_record_iterator(f))


# --- a training split cut down (train_images, overfit_batches) -----------------------

def with_training_sample(data, total, seed):
    """The dataset whose training passes take `total` of its training
    records, the same on every pass and every rerun of `seed`: a
    stratified sample (subsets.stratified_sample) where dataset.json holds
    the labels of every training shard, else a uniform one of exactly
    `total` records. The mean and std stay the whole split's (dataset.json
    sums pixels per shard, not per record)."""
    files = data.files['train']
    if all(f in data.shard_labels for f in files):
        labels = np.concatenate([data.shard_labels[f] for f in files])
        return with_training_records(data, subsets.stratified_sample(labels, total, seed), 'stratified')
    sizes = [records_of_file(data, f) for f in files]
    return with_training_records(data, subsets.uniform_sample(sum(sizes), total, seed), 'uniform', sizes)


def with_first_training_records(data, count):
    """The dataset whose training passes take its first `count` training
    records in file order (the overfit check's batches)."""
    files = data.files['train']
    sizes, left = [], count
    for f in files:  # the files past the first `count` records need no count
        sizes.append(records_of_file(data, f) if left > 0 else 0)
        left -= sizes[-1]
    return with_training_records(data, np.arange(count), 'first', sizes)


def records_of_file(data, path):
    """The records of a training file: dataset.json's count, else counted."""
    if path in data.shard_counts:
        return data.shard_counts[path]
    count = records_in(path)
    if count is None:
        raise DataError(f'{path} ends inside a record; write it again, or leave train_images and '
                        f'overfit_batches out')
    return count


def with_training_records(data, chosen, how, sizes=None):
    """The dataset trained on the records at the sorted positions `chosen`
    of its training files taken one after the other (their records:
    `sizes`, or dataset.json's counts)."""
    files = data.files['train']
    sizes = sizes or [data.shard_counts[f] for f in files]
    bounds = np.cumsum([0, *sizes])
    chosen = np.asarray(chosen)
    keep = {}
    for f, start, end in zip(files, bounds[:-1], bounds[1:]):
        mask = np.zeros(end - start, bool)
        mask[chosen[(chosen >= start) & (chosen < end)] - start] = True
        keep[f] = mask
    return dataclasses.replace(data, counts={**data.counts, 'train': len(chosen)}, train_keep=keep,
                               train_sample=how)


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
    the official validation set serves as validation and test split. The
    counts are dataset.json's where TFRecordsWriter completed it.
    `classes`: see imagenet_classes."""
    metadata = read_metadata(data_dir)
    if metadata is None or incomplete_shards(metadata):
        metadata = {'splits': {}, 'shards': {}}
    else:
        check_complete(metadata, os.path.join(data_dir, METADATA))
    files = {p: split_files(data_dir, p) for p in ('train', 'validation')}
    counts = {}
    for prefix, paths in files.items():
        known = metadata['splits'].get(prefix, {}).get('count')
        full = len(paths) == IMAGENET_SHARDS[prefix]
        counts[prefix] = known or (IMAGENET_COUNTS[prefix] if full else count_records(paths))
    synsets = imagenet_classes(metadata, data_dir, classes)
    return RecordDataset(
        'imagenet_jpeg', {'train': files['train'], 'valid': files['validation'], 'test': files['validation']},
        {'train': counts['train'], 'valid': counts['validation'], 'test': counts['validation']},
        (IMAGENET_SIZE, IMAGENET_SIZE, 3), len(synsets),
        np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32),
        {'train': 'train', 'valid': 'validation', 'test': 'validation'},
        shard_counts(data_dir, metadata), synsets)


# --- parsing ---------------------------------------------------------------------
# A record that cannot be used is flagged (ok False) in the graph, never left to
# fail an op: a filter drops it (skip_bad_records), or an assertion whose text
# starts with BAD_RECORD stops the pass, and explain() says it in one line.
BAD_RECORD = 'bad record in '


def _as_text(part):
    """A text or string tensor as it is; whole numbers as text, a vector's joined by x."""
    if isinstance(part, str) or part.dtype == tf.string:
        return part
    return tf.strings.reduce_join(tf.strings.as_string(part), separator='x')


def flagged(ok, strict, *message):
    """`ok`, which stops the pass with `message` (texts and tensors) where it
    is False if `strict`."""
    if not strict:
        return ok
    # The text is made for a bad record only, not for each good one.
    text = tf.cond(ok, lambda: tf.constant(''), lambda: tf.strings.join([_as_text(p) for p in message]))
    check = tf.debugging.Assert(ok, [text])
    with tf.control_dependencies([check]):
        return tf.identity(ok)


def parse_cifar_raw(data, split, strict):
    """serialized record, file -> (uint8 image, label, ok); ok is False for a
    record whose pixels do not match its declared shape or the dataset's, or
    whose label is not a class (also for a record of another split, whose
    features have other names)."""
    prefix = data.record_split[split]
    height, width, channels = data.image_shape
    keys = {'image': tf.io.FixedLenFeature([], tf.string, default_value=''),
            'label': tf.io.FixedLenFeature([], tf.int64, default_value=-1),
            'height': tf.io.FixedLenFeature([], tf.int64, default_value=0),
            'width': tf.io.FixedLenFeature([], tf.int64, default_value=0),
            'channels': tf.io.FixedLenFeature([], tf.int64, default_value=0)}

    def parse(index, record):
        serialized, filename = record
        f = tf.io.parse_single_example(serialized, {f'{prefix}/{k}': v for k, v in keys.items()})
        f = {k.split('/', 1)[1]: v for k, v in f.items()}
        declared = tf.stack([f['height'], f['width'], f['channels']])
        size = tf.cast(tf.strings.length(f['image']), tf.int64)
        ok = tf.reduce_all([tf.reduce_all(tf.equal(declared, [height, width, channels])),
                            tf.equal(size, f['height'] * f['width'] * f['channels']),
                            f['label'] >= 0, f['label'] < data.num_classes])
        ok = flagged(ok, strict, BAD_RECORD, filename, f': its {prefix}/* features give shape ',
                     declared, ', ', size, ' bytes, label ', f['label'],
                     f'; expected shape {height}x{width}x{channels} and a label in '
                     f'0..{data.num_classes - 1}')
        pixels = tf.io.decode_raw(f['image'], tf.uint8)
        # A bad record is dropped by the filter (or stopped by the check) before
        # its pixels are used; this keeps the reshape valid meanwhile.
        pixels = tf.cond(ok, lambda: pixels, lambda: tf.zeros([height * width * channels], tf.uint8))
        return tf.reshape(pixels, [height, width, channels]), f['label'], ok
    return parse


def class_of_label(data, label):
    """The class of an official label 1..1000: its synset's place in
    data.classes; -1 for a label of no class (TF's background 0, a synset
    left out, a label outside 0..1000)."""
    places = {wnid: i for i, wnid in enumerate(data.classes)}
    table = [-1] + [places.get(wnid, -1) for wnid in imagenet.synsets()]  # at labels 0..1000
    inside = tf.logical_and(label >= 0, label < len(table))
    return tf.where(inside, tf.gather(tf.constant(table, tf.int64),
                                      tf.clip_by_value(label, 0, len(table) - 1)), -1)


def central_view(image):
    """What evaluation shows the network of an ImageNet image: its central
    87.5 %, resized to 224 px (float pixels)."""
    image = tf.image.central_crop(image, CENTRAL_FRACTION)
    return tf.image.resize(image, [IMAGENET_SIZE, IMAGENET_SIZE], method='bilinear')


def parse_imagenet_jpeg(data, training, seed, strict):
    """serialized record, file -> (float image 224x224, class, ok): a random
    crop (8-100 % of the area, aspect 3/4-4/3) with flips for training, the
    central 87.5 % for evaluation, resized to 224; ok is False for a record
    without an image or whose label is no class (class_of_label). The
    randomness is stateless, seeded by the pass's seed and the record's
    index, like input_pipeline.random_shift_flip."""
    keys = {'image/encoded': tf.io.FixedLenFeature([], tf.string, default_value=''),
            'image/class/label': tf.io.FixedLenFeature([], tf.int64, default_value=0)}

    def decoded(encoded, index):
        if training:
            pair = tf.stack([seed, index])
            begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
                tf.io.extract_jpeg_shape(encoded), bounding_boxes=tf.zeros([1, 0, 4]), seed=pair,
                min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
                max_attempts=10, use_image_if_no_bounding_boxes=True)
            window = tf.stack([begin[0], begin[1], size[0], size[1]])
            image = tf.io.decode_and_crop_jpeg(encoded, window, channels=3)
            image = tf.image.stateless_random_flip_left_right(image, seed=pair + 1)
            return tf.image.resize(image, [IMAGENET_SIZE, IMAGENET_SIZE], method='bilinear')
        return central_view(tf.io.decode_jpeg(encoded, channels=3))

    def parse(index, record):
        serialized, filename = record
        f = tf.io.parse_single_example(serialized, keys)
        encoded, label = f['image/encoded'], f['image/class/label']
        found = class_of_label(data, label)
        size = tf.cast(tf.strings.length(encoded), tf.int64)
        ok = tf.logical_and(size > 0, found >= 0)
        ok = flagged(ok, strict, BAD_RECORD, filename, ': image/class/label ', label, ' with ', size,
                     f' bytes of image/encoded; expected the label of one of the '
                     f'{len(data.classes)} classes and a JPEG image')
        image = tf.cond(ok, lambda: decoded(encoded, index),
                        lambda: tf.zeros([IMAGENET_SIZE, IMAGENET_SIZE, 3]))
        return image, tf.maximum(found, 0), ok
    return parse


def is_good(image, label, ok):
    return ok


def without_flag(image, label, ok):
    return image, label


# --- the pipeline ------------------------------------------------------------------

def records(data, files, training, seed, skip_bad, keep=None):
    """(serialized record, its file) from `files`: shuffled file order and
    interleaved parallel reads for training, files in order for evaluation;
    with `keep` ({path: bool per record}), only the records it marks.

    Unless skip_bad, a file must hold as many records as dataset.json says
    (where it says, for every file): one emptied, cut at a record's end or
    swapped for another reads without an error, and would show only as
    records 'skipped'. tf.data's own check costs nothing per record; explain()
    finds the file."""
    if keep:
        files = [f for f in files if keep[f].any()]  # a file with none of them is not read at all
    counted = not skip_bad and all(f in data.shard_counts for f in files)
    expected = [data.shard_counts.get(f, -1) for f in files]
    masks = [keep[f] for f in files] if keep else [np.zeros(0, bool)] * len(files)
    sizes = [len(m) for m in masks]
    names = tf.data.Dataset.from_tensor_slices((files, tf.constant(expected, tf.int64),
                                                tf.constant(np.cumsum([0, *sizes[:-1]]), tf.int64),
                                                tf.constant(sizes, tf.int64)))
    if training:
        names = names.shuffle(len(files), seed=seed)
    # One False after the marks of all the files: a record past its file's
    # count (a file that changed since, with skip_bad_records) looks it up.
    kept = tf.constant(np.concatenate([*masks, [False]]))
    outside = tf.constant(sum(sizes), tf.int64)

    def read(filename, count, start, size):
        dataset = tf.data.TFRecordDataset(filename)
        if skip_bad:  # a corrupt or truncated file ends early instead of stopping the run
            dataset = dataset.apply(tf.data.experimental.ignore_errors())
        if counted:
            dataset = dataset.apply(tf.data.experimental.assert_cardinality(count))
        if keep:  # a record is known by its file and its place in it, whatever the order of the files
            dataset = dataset.enumerate().filter(
                lambda place, record: tf.gather(kept, tf.where(place < size, start + place, outside))
            ).map(lambda place, record: record)
        return dataset.map(lambda record: (record, filename))
    # Parallel, yet deterministic: equal seeds give equal orders (and crops).
    return names.interleave(read, cycle_length=min(len(files), 8), block_length=1,
                            num_parallel_calls=AUTOTUNE, deterministic=True)


def split_pipeline(data, split, training, batch_size, options, seed=None, limit=None, skip=None,
                   shard=None):
    """The batched (normalised images, one-hot labels) of one split; a
    training pass leaves out its first `skip` images (resuming an epoch).

    `shard` (worker, workers) of a multi-worker job: the worker reads its own
    files (every workers-th) and takes exactly records / workers of them, its
    files read again from the start if they hold fewer: every worker then
    takes the same number of steps, which the all-reduce needs.
    """
    skip_bad = options.skip_bad_records
    files = data.files[split][shard[0]::shard[1]] if shard else data.files[split]
    dataset = records(data, files, training, seed, skip_bad, data.train_keep if split == 'train' else None)
    if shard:
        dataset = dataset.repeat()
    if training:
        dataset = dataset.shuffle(options.shuffle_buffer, seed=seed)
    if data.format == 'cifar_raw':
        parse = parse_cifar_raw(data, split, strict=not skip_bad)
    else:
        parse = parse_imagenet_jpeg(data, training, seed, strict=not skip_bad)
    dataset = dataset.enumerate().map(parse, num_parallel_calls=AUTOTUNE)
    if skip_bad:  # a JPEG that does not decode goes with the other bad records
        dataset = dataset.apply(tf.data.experimental.ignore_errors())
    dataset = dataset.filter(is_good).map(without_flag)
    if training and options.augmentation and data.format == 'cifar_raw':
        dataset = dataset.enumerate().map(random_shift_flip(seed, *options.augmentation),
                                          num_parallel_calls=AUTOTUNE)
    if shard:
        limit = data.num_examples(split) // shard[1]
    if limit:
        dataset = dataset.take(limit)
    if skip is not None:
        dataset = dataset.skip(skip)
    return batches(dataset, batch_size, data.mean, data.std, data.num_classes)


class TFRecordInput:
    """The input source (as input_pipeline.ArrayInput) for TFRecords, fed as
    its InputOptions say."""

    def __init__(self, data, options, shard=None):
        self.data = data
        self.workers = shard[1] if shard else 1
        self.seed = v1.placeholder_with_default(tf.constant(0, tf.int64), [], 'shuffle_seed')
        self.skip = v1.placeholder_with_default(tf.constant(0, tf.int64), [], 'skip_images')
        # The overfit check trains on the same batches in the same order every
        # epoch, as an evaluation pass reads them (ImageNet: its central view).
        shuffled = not options.fixed_order
        passes = {('train', True): split_pipeline(data, 'train', shuffled, options.batch_size // self.workers,
                                                  options, self.seed, skip=self.skip, shard=shard),
                  ('train', False): split_pipeline(data, 'train', False, options.eval_batch_size, options,
                                                   limit=options.train_eval_images)}
        for split in ('valid', 'test'):
            passes[split, False] = split_pipeline(data, split, False, options.eval_batch_size, options)
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
        if isinstance(error, tf.errors.FailedPreconditionError) and 'expected to contain' in message:
            miscounted = first_miscounted(self.data.shard_counts, self.data.files)
            if miscounted:
                return DataError(f'{miscounted}; write it again (python TFRecordsWriter.py), or '
                                 f'set skip_bad_records=True to skip what cannot be read')
        if BAD_RECORD in message:  # a record flagged as bad
            detail = message[message.index(BAD_RECORD):].split('\n')[0].rstrip(']')
            return DataError(f'{detail}; write it again (python TFRecordsWriter.py), or set '
                             f'skip_bad_records=True to skip such records')
        reason = tf_errors.error_reason(error).rsplit(': ', 1)[-1]  # after tf.data's iterator path
        if isinstance(error, tf.errors.InvalidArgumentError) and 'jpeg' in reason.lower():
            folder = os.path.dirname(self.data.files['train'][0])
            return DataError(f'an image of the records in {folder} is not a readable JPEG '
                             f'({reason}); write them again with python TFRecordsWriter.py, '
                             f'which decodes every image it writes, or set skip_bad_records=True '
                             f'to skip such records')
        return None


def records_in(path):
    """The records of a TFRecord file, counted by their length headers
    without reading their data; None if the file ends inside a record."""
    size, count, position = os.path.getsize(path), 0, 0
    with open(path, 'rb') as f:
        while position < size:
            f.seek(position)
            header = f.read(8)
            if len(header) < 8:
                return None
            # a record: length (8 bytes), its CRC (4), data, the data's CRC (4)
            position += 16 + int.from_bytes(header, 'little')
            if position > size:
                return None
            count += 1
    return count


def first_miscounted(counts, files):
    """'<path> holds N records, dataset.json says M' for the first of
    `files` ({split: [paths]}) whose records are not as many as `counts`
    ({path: records}) says, or None."""
    for path in dict.fromkeys(p for paths in files.values() for p in paths):
        held = records_in(path)
        if held != counts.get(path, held):
            held = 'a record cut short' if held is None else f'{held} records'
            return f'{path} holds {held}, dataset.json says {counts[path]}'
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
