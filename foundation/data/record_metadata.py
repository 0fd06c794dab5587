"""dataset.json, which TFRecordsWriter keeps beside its shards: what each split
holds, each complete shard's record count and pixel sums. Read back, it is
checked field by field before anything trusts it, since a training run sizes
its passes and normalises its inputs by it: a wrong field costs one line
naming the file and the field, not a traceback, a wrong count or a run on
garbage statistics."""
import json
import math
import os

import numpy as np

from foundation import bounded_json
from foundation.errors import DataError

METADATA = 'dataset.json'
FORMATS = ('cifar_raw', 'imagenet_jpeg')
CIFAR_SPLITS = ('train', 'valid', 'test')
PIXEL_MAX = 255  # the records hold uint8 pixels
# A shard's labels as dataset.json keeps them (raw pixels: CIFAR-10): one digit
# per record, in file order, so that a quick run can sample the records of
# each class without reading them (TFRecordsReader.with_training_sample).
LABEL_DIGITS = '0123456789'


def label_text(labels):
    """The labels (0..9) of a shard's records as dataset.json keeps them."""
    return ''.join(LABEL_DIGITS[int(label)] for label in labels)


def labels_of_text(text):
    """A shard's labels from dataset.json's text: int64, one per record."""
    return np.frombuffer(text.encode('ascii'), np.uint8).astype(np.int64) - ord(LABEL_DIGITS[0])


def read_metadata(data_dir):
    """The checked dataset.json of data_dir, or None if there is none."""
    path = os.path.join(data_dir, METADATA)
    if not os.path.lexists(path):  # a FIFO or a device there is no missing file: load says what it is
        return None
    metadata = bounded_json.load(path, 'run python TFRecordsWriter.py again')
    check_schema(metadata, path)
    return metadata


# --- what a field may hold -----------------------------------------------------------

def _whole(value, low=0):
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _integral(value):
    """A whole number >= 0, also as the float JSON may hold it (93708577.0)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0 and value == int(value))


def _file_name(value):
    """A file of the folder itself: no path can lead elsewhere."""
    return (isinstance(value, str) and value not in ('', '.', '..')
            and '/' not in value and '\\' not in value)


def _list_of(check, length=None):
    return lambda value: (isinstance(value, list) and bool(value) and all(map(check, value))
                          and (length is None or len(value) == length))


def _object(value):
    return isinstance(value, dict)


def _expect(path, field, value, check, expected):
    if not check(value):
        shown = json.dumps(value)
        shown = shown if len(shown) <= 60 else shown[:57] + '...'
        raise DataError(f'{path}: {field} is {shown}, expected {expected}; run python '
                        f'TFRecordsWriter.py again')


# --- the schema ----------------------------------------------------------------------

def check_schema(metadata, path):
    """DataError naming the first field of dataset.json that is missing or
    of the wrong kind; the values' agreement is check_complete's."""
    _expect(path, 'the file', metadata, _object, 'a JSON object of description, splits and shards')
    for key in ('description', 'splits', 'shards'):
        _expect(path, key, metadata.get(key), _object, 'a JSON object')
    description = metadata['description']
    _expect(path, 'description.format', description.get('format'), FORMATS.__contains__,
            ' or '.join(FORMATS))
    _expect(path, 'description.num_classes', description.get('num_classes'),
            lambda v: _whole(v, 1), 'a whole number >= 1')
    if description['format'] == 'cifar_raw':
        _expect(path, 'description.image_shape', description.get('image_shape'),
                _list_of(lambda v: _whole(v, 1), 3), '[height, width, channels], whole numbers >= 1')
        _expect(path, 'splits', metadata['splits'], lambda v: set(CIFAR_SPLITS) <= set(v),
                f"the splits {', '.join(CIFAR_SPLITS)}")
    for name, split in metadata['splits'].items():
        _expect(path, f'splits.{name}', split, _object, 'a JSON object of count and shards')
        _expect(path, f'splits.{name}.count', split.get('count'), _whole, 'a whole number >= 0')
        _expect(path, f'splits.{name}.shards', split.get('shards'), _list_of(_file_name),
                'a list of shard file names')
    for name, shard in metadata['shards'].items():
        _expect(path, f'the shard name {name!r}', name, _file_name, 'a file name')
        _expect(path, f'shards.{name}', shard, _object, 'a JSON object of count and pixel sums')
        _expect(path, f'shards.{name}.count', shard.get('count'), _whole, 'a whole number >= 0')
        if 'labels' in shard:  # written since TFRecordsWriter records them
            _expect(path, f'shards.{name}.labels', shard['labels'],
                    lambda v: isinstance(v, str) and set(v) <= set(LABEL_DIGITS), 'a text of digits')


def incomplete_shards(metadata):
    """The shards the splits list that were not recorded as complete."""
    return [n for split in metadata['splits'].values() for n in split['shards']
            if n not in metadata['shards']]


def check_complete(metadata, path):
    """DataError unless the values agree: each split's count is its shards'
    sum, and (for raw pixels) each shard's pixel sums fit its record count,
    one per channel, as uint8 pixels can make them, and the training split
    varies in every channel. Call once every shard is complete."""
    for name, split in metadata['splits'].items():
        held = sum(metadata['shards'][n]['count'] for n in split['shards'])
        if held != split['count']:
            raise DataError(f'{path}: splits.{name}.count is {split["count"]} but its shards hold '
                            f'{held} records (shards.*.count); run python TFRecordsWriter.py again')
    if metadata['description']['format'] == 'cifar_raw':
        for split in metadata['splits'].values():
            for name in split['shards']:
                check_pixel_sums(metadata, name, path)
        channel_sums(metadata, 'train', path)
    for name, shard in metadata['shards'].items():
        if 'labels' in shard:
            check_labels(shard, f'shards.{name}.labels', metadata['description']['num_classes'], path)


def check_labels(shard, field, num_classes, path):
    """A shard's labels: one per record, each a class."""
    classes = LABEL_DIGITS[:num_classes]
    _expect(path, field, shard['labels'], lambda v: len(v) == shard['count'] and set(v) <= set(classes),
            f"one label of {classes[0]}..{classes[-1]} per record ({shard['count']})")


def check_pixel_sums(metadata, name, path):
    """One shard's pixels, sum and sum_sq against its count and each other."""
    height, width, channels = metadata['description']['image_shape']
    shard, field = metadata['shards'][name], f'shards.{name}'
    pixels = shard['count'] * height * width
    _expect(path, f'{field}.pixels', shard.get('pixels'), lambda v: _whole(v) and v == pixels,
            f'count x height x width = {shard["count"]} x {height} x {width} = {pixels}')
    for key in ('sum', 'sum_sq'):
        _expect(path, f'{field}.{key}', shard.get(key), _list_of(_integral, channels),
                f'one whole number per channel ({channels})')
    for c, (total, squares) in enumerate(zip(shard['sum'], shard['sum_sq'])):
        total, squares = int(total), int(squares)
        # x in 0..255: sum <= 255 pixels, sum_sq <= 255 sum; and sum^2 <= pixels sum_sq
        if total > PIXEL_MAX * pixels or squares > PIXEL_MAX * total or total * total > pixels * squares:
            raise DataError(f'{path}: {field}.sum and .sum_sq of channel {c} ({total}, {squares}) '
                            f'are not those of {pixels} pixels of 0..{PIXEL_MAX}; run python '
                            f'TFRecordsWriter.py again')


def channel_sums(metadata, split, path):
    """(pixels, [sum], [sum_sq]) of a split, in exact integers; DataError
    where a channel does not vary (its std would be 0)."""
    shards = [metadata['shards'][n] for n in metadata['splits'][split]['shards']]
    pixels = sum(s['pixels'] for s in shards)
    sums = [sum(int(s['sum'][c]) for s in shards) for c in range(len(shards[0]['sum']))]
    squares = [sum(int(s['sum_sq'][c]) for s in shards) for c in range(len(sums))]
    flat = [c for c in range(len(sums)) if pixels * squares[c] - sums[c] ** 2 <= 0]
    if flat:
        raise DataError(f'{path}: the {split} split\'s pixel sums give channel {flat[0]} no '
                        f'variance (every pixel alike), which cannot normalise it; run python '
                        f'TFRecordsWriter.py again')
    return pixels, sums, squares


def pixel_stats(metadata, split, path=METADATA):
    """Per-channel mean and std of a split from the writer's per-shard sums."""
    pixels, sums, squares = channel_sums(metadata, split, path)
    mean = np.array(sums, np.float64) / pixels
    variance = np.array([pixels * q - s * s for s, q in zip(sums, squares)], np.float64) / pixels ** 2
    return mean.astype(np.float32), np.sqrt(variance).astype(np.float32)
