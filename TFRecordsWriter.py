"""Writes images and labels as sharded TFRecords that TFRecordsReader streams.

    python ImageResizer.py && python TFRecordsWriter.py   # 128 px CIFAR-10 in two steps
    python TFRecordsWriter.py one_pass=True              # the same in one pass, no .npy files
    python TFRecordsWriter.py dataset_name=imagenet output_shape=1000 imagenet_dir=/data/imagenet

Every shard is written under a temporary name and renamed once complete, then
recorded in dataset.json (counts, shape, classes, pixel statistics). A rerun
skips the shards recorded there and redoes the others.

ImageNet records are those of TensorFlow's own ImageNet scripts
(build_imagenet_data.py), field for field: see imagenet_example.
"""
import glob
import json
import os
import random
import sys

from trainer.config import command

command.answer_early(__name__, __doc__, command.RECORDS_DEFAULTS)

import numpy as np
import tensorflow as tf

import constant
import ImageResizer
from foundation import malloc_tuning, safe_io, tf_errors
from foundation.data import imagenet, loaders
from foundation.data.image_files import BadImage, image_bytes, opened
from foundation.data.record_metadata import label_text, read_metadata
from foundation.errors import ConfigError, DataError
from TFRecordsReader import IMAGENET_SHARDS, METADATA
from trainer.config import settings

v1 = tf.compat.v1
CIFAR_SHARDS = {'train': 8, 'valid': 2, 'test': 2}
IMAGENET_SPLIT_DIRS = {'train': 'train', 'validation': 'val'}


def int64_feature(values):
    """A tf.train.Feature of int64s (one value or a list)."""
    values = values if isinstance(values, (list, tuple)) else [values]
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def float_feature(values):
    """A tf.train.Feature of floats (a list, possibly empty)."""
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def bytes_feature(value):
    """A tf.train.Feature holding one bytes value."""
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def cifar_example(split, image, label):
    """The original record, <split>/image (raw uint8) and <split>/label, plus
    the image's height, width and channels so that a reader can check them."""
    height, width, channels = image.shape
    return tf.train.Example(features=tf.train.Features(feature={
        f'{split}/image': bytes_feature(np.ascontiguousarray(image, np.uint8).tobytes()),
        f'{split}/label': int64_feature(label),
        f'{split}/height': int64_feature(height),
        f'{split}/width': int64_feature(width),
        f'{split}/channels': int64_feature(channels),
    })).SerializeToString()


def imagenet_example(jpeg, label, synset, height, width, filename, text='', boxes=()):
    """The record of TensorFlow's ImageNet scripts (their _convert_to_example):
    the official label 1..1000, the class's name (empty without one), the
    bounding boxes [xmin, ymin, xmax, ymax] (none without them). Colorspace
    and channels say RGB and 3 for a grayscale JPEG too, as theirs do: its
    readers decode to 3 channels. The file name is stored as the bytes the
    folder holds (os.fsencode): a name need not be UTF-8."""
    xmin, ymin, xmax, ymax = ([box[i] for box in boxes] for i in range(4))
    return tf.train.Example(features=tf.train.Features(feature={
        'image/height': int64_feature(height),
        'image/width': int64_feature(width),
        'image/colorspace': bytes_feature(b'RGB'),
        'image/channels': int64_feature(3),
        'image/class/label': int64_feature(label),
        'image/class/synset': bytes_feature(synset.encode()),
        'image/class/text': bytes_feature(text.encode()),
        'image/object/bbox/xmin': float_feature(xmin),
        'image/object/bbox/xmax': float_feature(xmax),
        'image/object/bbox/ymin': float_feature(ymin),
        'image/object/bbox/ymax': float_feature(ymax),
        'image/object/bbox/label': int64_feature([label] * len(xmin)),
        'image/format': bytes_feature(b'JPEG'),
        'image/filename': bytes_feature(os.fsencode(filename)),
        'image/encoded': bytes_feature(jpeg),
    })).SerializeToString()


def shard_name(split, index, count, suffix):
    return f'{split}-{index:05d}-of-{count:05d}{suffix}'


class ShardedWriter:
    """Writes one split's records, in order, into `num_shards` files of
    (nearly) equal size; shards already recorded as complete are skipped.
    Shards are cut by the items of the source; an item left out (a record
    of None) leaves its shard one record short, as dataset.json records."""

    def __init__(self, out_dir, split, total, num_shards, suffix, metadata):
        self.out_dir, self.split, self.metadata = out_dir, split, metadata
        num_shards = max(1, min(num_shards, total))
        self.names = [shard_name(split, i, num_shards, suffix) for i in range(num_shards)]
        self.bounds = [total * i // num_shards for i in range(num_shards + 1)]
        metadata['splits'][split] = {'count': total, 'shards': self.names}
        self._count_split()
        self.position, self.open_shard = 0, None

    def _count_split(self):
        """The split's count: its shards' records, once all are complete."""
        counts = [self.metadata['shards'].get(name, {}).get('count') for name in self.names]
        if None not in counts:
            self.metadata['splits'][self.split]['count'] = sum(counts)

    def complete(self, shard):
        name = self.names[shard]
        return name in self.metadata['shards'] and os.path.isfile(os.path.join(self.out_dir, name))

    def shard_at(self, position):
        return int(np.searchsorted(self.bounds, position, side='right')) - 1

    def needs(self, count):
        """Whether any of the next `count` records belongs to an incomplete shard."""
        first, last = self.shard_at(self.position), self.shard_at(self.position + count - 1)
        return not all(self.complete(s) for s in range(first, last + 1))

    def skip(self, count):
        self.position += count

    def add(self, records, images=None, labels=None):
        """Appends serialized records, None for an item left out (and their
        uint8 images, for statistics; their labels 0..9, for dataset.json),
        one run of records of the same shard at a time."""
        i = 0
        while i < len(records):
            shard = self.shard_at(self.position)
            j = min(len(records), i + self.bounds[shard + 1] - self.position)
            if not self.complete(shard):
                if self.open_shard is None:
                    self._open(shard)
                written = [record for record in records[i:j] if record is not None]
                for record in written:
                    self.open_shard['writer'].write(record)
                self.open_shard['count'] += len(written)
                self.open_shard['left_out'] += j - i - len(written)
                if images is not None:
                    self._add_statistics(images[i:j])
                if labels is not None:
                    self.open_shard['labels'].append(label_text(
                        label for record, label in zip(records[i:j], labels[i:j]) if record is not None))
            self.position += j - i
            if self.open_shard is not None and self.position == self.bounds[shard + 1]:
                self._close(shard)
            i = j

    def _add_statistics(self, images):
        """Exact per-channel sums of pixel values and their squares, from
        per-channel histograms (no large temporary arrays)."""
        values = np.arange(256, dtype=np.int64)
        counts = np.stack([np.bincount(images[..., c].ravel(), minlength=256)
                           for c in range(images.shape[-1])])
        self.open_shard['sum'] += counts @ values
        self.open_shard['sum_sq'] += counts @ (values * values)
        self.open_shard['pixels'] += images[..., 0].size

    def _open(self, shard):
        pending = safe_io.PendingFile(os.path.join(self.out_dir, self.names[shard]))
        self.open_shard = {'file': pending, 'writer': tf.io.TFRecordWriter(pending.tmp),
                           'count': 0, 'left_out': 0, 'sum': 0, 'sum_sq': 0, 'pixels': 0, 'labels': []}

    def _close(self, shard):
        shard_state, self.open_shard = self.open_shard, None
        shard_state['writer'].close()
        items, count = self.bounds[shard + 1] - self.bounds[shard], shard_state['count']
        if count + shard_state['left_out'] != items:  # started mid-shard: not complete
            shard_state['file'].discard()
            return
        shard_state['file'].commit()
        self.metadata['shards'][self.names[shard]] = {
            'count': count, 'pixels': shard_state['pixels'],
            'sum': np.atleast_1d(shard_state['sum']).astype(float).tolist(),
            'sum_sq': np.atleast_1d(shard_state['sum_sq']).astype(float).tolist()}
        if shard_state['labels']:
            self.metadata['shards'][self.names[shard]]['labels'] = ''.join(shard_state['labels'])
        self._count_split()
        save_metadata(self.out_dir, self.metadata)
        print(f'  wrote {self.names[shard]} ({count} records)', flush=True)

    def abandon(self):
        """Drops a shard left open by an error: its temporary file goes."""
        if self.open_shard is not None:
            self.open_shard['writer'].close()
            self.open_shard['file'].discard()
            self.open_shard = None


def save_metadata(out_dir, metadata):
    safe_io.write_text(os.path.join(out_dir, METADATA), json.dumps(metadata, indent=1))


def remove_stale_partials(out_dir):
    """Temporary shards left by a killed run (kill -9 runs no clean-up)."""
    for path in glob.glob(os.path.join(out_dir, '.*.partial*')):
        os.remove(path)


def previous_metadata(out_dir):
    """dataset.json of an earlier run, whose complete shards need no
    rewriting; None if there is none, or none to trust."""
    try:
        return read_metadata(out_dir)
    except DataError as error:
        print(f'warning: {error} (this run writes every shard afresh)', file=sys.stderr, flush=True)
        return None


def write_splits(out_dir, stream, counts, shards, suffix, make_records, description):
    """Writes a (split, items, labels) stream into sharded TFRecords.

    make_records(split, items, labels) -> (serialized records, uint8 images or
    None) is only called for chunks that fall into incomplete shards. The
    labels of raw-pixel records (CIFAR-10's 0..9) go into dataset.json too.
    """
    if set(shards) != set(counts):
        raise ConfigError(f"tfrecord_shards must give a shard count for each of "
                                   f"{', '.join(counts)}, got {shards!r}")
    os.makedirs(out_dir, exist_ok=True)
    remove_stale_partials(out_dir)
    metadata = previous_metadata(out_dir)
    if metadata is None or metadata.get('description') != description:
        metadata = {'description': description, 'splits': {}, 'shards': {}}
    writers = {split: ShardedWriter(out_dir, split, counts[split], shards[split], suffix, metadata)
               for split in counts}
    keep_labels = description['format'] == 'cifar_raw'
    try:
        for split, items, labels in stream:
            writer = writers[split]
            if writer.needs(len(labels)):
                writer.add(*make_records(split, items, labels), labels=labels if keep_labels else None)
            else:
                writer.skip(len(labels))
    finally:
        for writer in writers.values():
            writer.abandon()
    missing = [n for w in writers.values() for n in w.names if n not in metadata['shards']]
    if missing:
        raise DataError(f'{len(missing)} shard(s) were not completed: {", ".join(missing[:4])}')
    save_metadata(out_dir, metadata)
    return metadata


# --- CIFAR-10 at 128 px ----------------------------------------------------------

def cifar_records(split, images, labels):
    return [cifar_example(split, image, label) for image, label in zip(images, labels)], images


def write_cifar_128(cfg, one_pass):
    """CIFAR-10 -> 128 px TFRecords in DATA_DIR of cifar_128, from ImageResizer's
    .npy files or (one_pass) straight from the CIFAR batches."""
    out_dir = constant.derived_dirs(cfg)['DATA_DIR']
    size = loaders.DATASETS['cifar_128'].image_shape[0]
    shards = cfg['tfrecord_shards'] or CIFAR_SHARDS
    description = {'format': 'cifar_raw', 'image_shape': [size, size, 3], 'num_classes': 10}
    if one_pass:
        source_dir = constant.derived_dirs(dict(cfg, dataset_name='cifar_32'))['DATA_DIR']
        counts = loaders.cifar_split_counts(source_dir, cfg['download'])
        resizer = ImageResizer.BicubicResizer(size, cfg['resize_batch_size'])
        stream = ImageResizer.rechunk(loaders.cifar_split_stream(source_dir, cfg['download'], counts),
                                      cfg['resize_batch_size'])

        def make_records(split, images, labels):
            return cifar_records(split, resizer(images), labels)
    else:
        resized_dir = os.path.join(out_dir, 'resized')
        if not os.path.isfile(ImageResizer.resized_paths(resized_dir, 'test')[1]):
            raise DataError(f'no resized images in {resized_dir}: run python ImageResizer.py first, '
                            f'or python TFRecordsWriter.py one_pass=True')
        counts = ImageResizer.resized_counts(resized_dir)
        stream = ImageResizer.resized_stream(resized_dir, cfg['resize_batch_size'])
        make_records = cifar_records
    print(f"Writing {sum(counts.values())} images as TFRecords into {out_dir}", flush=True)
    return write_splits(out_dir, stream, counts, shards, '.tfrecords', make_records, description)


# --- ImageNet ----------------------------------------------------------------------

def imagenet_files(root, seed):
    """{split: [(path, official label 1..1000, wnid)]} from train/<wnid>/* and
    val/<wnid>/* (.JPEG, .JPG, .PNG), and the sorted wnids found; training
    order shuffled so that every shard holds every class."""
    train_dir = os.path.join(root, 'train')
    if not os.path.isdir(train_dir):
        raise DataError(f'{train_dir} is missing: imagenet_dir must hold train/<wnid>/*.JPEG '
                        f'and val/<wnid>/*.JPEG')
    labels, found, files = imagenet.labels(), set(), {}
    for split, folder in IMAGENET_SPLIT_DIRS.items():
        entries = []
        for path in sorted(glob.glob(os.path.join(root, folder, '*', '*'))):
            wnid = os.path.basename(os.path.dirname(path))
            if wnid not in labels:
                raise DataError(f'{os.path.dirname(path)}: {wnid} is not one of the 1000 ImageNet '
                                f'synsets (listed in {imagenet.SYNSETS_FILE})')
            if path.lower().endswith(('.jpeg', '.jpg', '.png')):
                entries.append((path, labels[wnid], wnid))
                found.add(wnid)
        if not entries:
            raise DataError(f'no images in {os.path.join(root, folder)}/<wnid>/')
        files[split] = entries
    random.Random(seed).shuffle(files['train'])
    return files, sorted(found)


def annotations(cfg, wnids, names):
    """({wnid: image/class/text}, {file name: bounding boxes}) from TF's
    metadata files that the config names, the boxes of the image files
    `names` only; without them empty texts and no boxes, as TF's script
    writes for an image it has none for."""
    texts_path, boxes_path = cfg['imagenet_metadata_file'], cfg['imagenet_bbox_file']
    texts = imagenet.class_texts(texts_path, wnids) if texts_path else dict.fromkeys(wnids, '')
    return texts, imagenet.bounding_boxes(boxes_path, names) if boxes_path else {}


class ImageCoder:
    """The conversions of TF's script (its ImageCoder), with TensorFlow's
    codecs in a graph and session of their own: the one PNG and the 22 CMYK
    JPEGs of ImageNet become RGB JPEGs at quality 100. (A GIF or BMP is
    converted as the PNG is: decode_image decodes a PNG as decode_png does.)"""

    def __init__(self):
        graph = tf.Graph()
        with graph.as_default():
            self.data = v1.placeholder(tf.string, [])
            decoded = {'not_jpeg': tf.io.decode_image(self.data, channels=3, expand_animations=False),
                       'cmyk': tf.io.decode_jpeg(self.data, channels=0)}  # CMYK decodes to RGB
            self.to_rgb_jpeg = {kind: tf.io.encode_jpeg(image, format='rgb', quality=100)
                                for kind, image in decoded.items()}
            self.shape = tf.shape(tf.io.decode_jpeg(self.data, channels=3))  # as the reader decodes
        self.session = v1.Session(graph=graph)

    def __call__(self, kind, data, path):
        try:
            return self.session.run(self.to_rgb_jpeg[kind], {self.data: data})
        except tf.errors.OpError as error:
            raise BadImage(f'{path} does not decode in TensorFlow ({tf_errors.error_reason(error)})') from None

    def why_not(self, data):
        """None if the JPEG bytes decode as TFRecordsReader will decode them,
        else TensorFlow's reason."""
        try:
            self.session.run(self.shape, {self.data: data})
            return None
        except tf.errors.OpError as error:
            return tf_errors.error_reason(error)

    def close(self):
        self.session.close()


def stored_jpeg(path, coder):
    """(JPEG bytes as TF's script stores them, height, width) of an image
    file: an RGB or grayscale JPEG as it is, a PNG or CMYK JPEG converted,
    its size checked before it is read and the JPEG decoded as the reader
    will decode it (TF's script lists the files to convert by name; here
    their headers tell). A FIFO or a link to a device in the tree is a
    BadImage before anything is opened (image_bytes)."""
    data = image_bytes(path)
    with opened(path, data) as image:
        (width, height), form, mode = image.size, image.format, image.mode
    if form != 'JPEG':
        data = coder('not_jpeg', data, path)
    elif mode == 'CMYK':
        data = coder('cmyk', data, path)
    reason = coder.why_not(data)
    if reason:
        raise BadImage(f'{path} is not a readable JPEG ({reason})')
    return data, height, width


def write_imagenet(cfg):
    if not cfg['imagenet_dir']:
        raise DataError('set imagenet_dir=PATH to the folder that holds train/<wnid>/*.JPEG '
                        'and val/<wnid>/*.JPEG')
    out_dir = constant.derived_dirs(cfg)['DATA_DIR']
    files, wnids = imagenet_files(cfg['imagenet_dir'], cfg['seed'])
    names = {os.path.basename(path) for entries in files.values() for path, _, _ in entries}
    texts, boxes = annotations(cfg, wnids, names)
    shards = cfg['tfrecord_shards'] or IMAGENET_SHARDS
    # The labels are the synsets' lines in TF's list; `synsets` are those present.
    description = {'format': 'imagenet_jpeg', 'labels': os.path.basename(imagenet.SYNSETS_FILE),
                   'num_classes': len(imagenet.synsets()), 'synsets': wnids,
                   'class_texts': cfg['imagenet_metadata_file'], 'bounding_boxes': cfg['imagenet_bbox_file']}
    chunk = 256
    stream = ((split, entries[i:i + chunk], [e[1] for e in entries[i:i + chunk]])
              for split, entries in files.items() for i in range(0, len(entries), chunk))
    coder, left_out = ImageCoder(), []

    def record(path, label, wnid):
        """The image's record; None for a bad image if skip_bad_records."""
        try:
            jpeg, height, width = stored_jpeg(path, coder)
        except BadImage as bad:
            if not cfg['skip_bad_records']:
                raise BadImage(f'{bad}; remove it, or set skip_bad_records=True to leave such '
                               f'images out') from None
            print(f'warning: {bad}: left out', file=sys.stderr, flush=True)
            left_out.append(path)
            return None
        name = os.path.basename(path)
        return imagenet_example(jpeg, label, wnid, height, width, name, texts[wnid], boxes.get(name, ()))

    def make_records(split, entries, labels):
        return [record(*entry) for entry in entries], None

    counts = {split: len(entries) for split, entries in files.items()}
    print(f"Writing {sum(counts.values())} ImageNet images of {len(wnids)} classes into {out_dir}",
          flush=True)
    try:
        metadata = write_splits(out_dir, stream, counts, shards, '', make_records, description)
    finally:
        coder.close()
    if left_out:
        print(f'Left out {len(left_out)} image(s) that cannot be read (skip_bad_records=True)')
    return metadata


def main(argv):
    """python TFRecordsWriter.py [key=value ...]: the exit status."""
    return command.run(write, argv)


def write(argv):
    """Writes the TFRecords of dataset_name (cifar_128 unless told); returns the exit status."""
    cfg = settings.load_config([*command.RECORDS_DEFAULTS, *argv])
    malloc_tuning.set_mmap_threshold(cfg['malloc_mmap_threshold'])
    if cfg['dataset_name'] == 'imagenet':
        metadata = write_imagenet(cfg)
    elif cfg['dataset_name'] == 'cifar_128':
        metadata = write_cifar_128(cfg, cfg['one_pass'])
    else:
        raise ConfigError(f"dataset_name={cfg['dataset_name']!r} is held in memory, not in "
                          f"TFRecords; choose cifar_128 or imagenet")
    counts = ', '.join(f"{s} {v['count']}" for s, v in metadata['splits'].items())
    print(f'Done: {counts} records.')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
