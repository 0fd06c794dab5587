"""Bicubic resize of the CIFAR-10 32x32 images to 128x128, in bounded batches.

    python ImageResizer.py [key=value ...]

reads the CIFAR-10 python batches (as cifar_32 does: datasets/cifar_32/data_dir
or its download) and writes datasets/cifar_128/data_dir/resized/<split>_images.npy
and <split>_labels.npy, which `python TFRecordsWriter.py` turns into TFRecords.
`python TFRecordsWriter.py one_pass=True` does both steps without the .npy files.
"""
import contextlib
import math
import os
import sys

from trainer.config import command

command.answer_early(__name__, __doc__, command.RECORDS_DEFAULTS)

import numpy as np
import tensorflow as tf

import constant
from foundation import malloc_tuning, safe_io
from foundation.data import bounded_read, loaders
from foundation.errors import DataError
from trainer.config import settings

v1 = tf.compat.v1
SPLITS = ('train', 'valid', 'test')


class BicubicResizer:
    """uint8 [N, h, w, c] -> uint8 [N, size, size, c] with TensorFlow's bicubic
    resize, rounded and clipped to 0..255 before the cast: bicubic overshoots
    (a 0/255 checkerboard gives about -63..318), and a plain cast would wrap or
    truncate."""

    def __init__(self, size, batch_size=1000):
        self.batch_size = batch_size
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.images = v1.placeholder(tf.uint8, [None, None, None, None], 'images')
            resized = tf.image.resize(tf.cast(self.images, tf.float32), [size, size],
                                      method=tf.image.ResizeMethod.BICUBIC)
            self.resized = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
        self.session = v1.Session(graph=self.graph)

    def __call__(self, images):
        """Resizes a non-empty batch of images."""
        return self.session.run(self.resized, {self.images: images})

    def stream(self, chunks):
        """(split, images, labels) chunks -> the same images resized, batch by batch."""
        for split, images, labels in rechunk(chunks, self.batch_size):
            yield split, self(images), labels

    def close(self):
        self.session.close()


def rechunk(chunks, size):
    """(split, images, labels) chunks cut into pieces of at most `size` images."""
    for split, images, labels in chunks:
        for i in range(0, len(labels), size):
            yield split, images[i:i + size], labels[i:i + size]


# --- .npy files written and read in chunks, never whole ----------------------

# What ImageResizer writes: (item shape, dtype) of each file of a split.
RESIZED_IMAGES = (loaders.DATASETS['cifar_128'].image_shape, np.dtype(np.uint8))
RESIZED_LABELS = ((), np.dtype(np.int64))
MAX_IMAGES = 60000  # all of CIFAR-10: no split holds more


def open_npy(f, path, item_shape, dtype):
    """The item count of an open .npy file of ImageResizer, f left at the
    start of its data; DataError unless its header declares [N, *item_shape]
    of `dtype` and the file holds exactly that much data."""
    shape, found = bounded_read.read_npy_header(f, path)
    if found != dtype:
        raise DataError(f'{path} holds {found} values, expected {dtype}; run python '
                        f'ImageResizer.py again')
    shape = bounded_read.check_declared(shape, item_shape, MAX_IMAGES, path)
    bounded_read.check_data_size(f, bounded_read.npy_data_size(shape, dtype), path)
    return shape[0]


def read_npy_chunks(path, kind, chunk):
    """Yields an .npy file's array of `kind` (RESIZED_IMAGES or _LABELS)
    `chunk` items at a time (no memory map: the pages of a map would count
    towards the process' memory)."""
    item_shape, dtype = kind
    with open(path, 'rb') as f:
        count = open_npy(f, path, item_shape, dtype)
        for start in range(0, count, chunk):
            n = min(chunk, count - start)
            yield np.frombuffer(f.read(n * dtype.itemsize * math.prod(item_shape)),
                                dtype).reshape(n, *item_shape)


def resized_paths(directory, split):
    return (os.path.join(directory, f'{split}_images.npy'),
            os.path.join(directory, f'{split}_labels.npy'))


def resized_stream(directory, chunk=1000):
    """Yields (split, images, labels) chunks from the .npy files of ImageResizer."""
    for split in SPLITS:
        images_path, labels_path = resized_paths(directory, split)
        for images, labels in zip(read_npy_chunks(images_path, RESIZED_IMAGES, chunk),
                                  read_npy_chunks(labels_path, RESIZED_LABELS, chunk)):
            yield (split, *loaders.checked_split(images, labels, labels_path, RESIZED_IMAGES[0]))


def resized_counts(directory):
    """{split: images} of ImageResizer's output, from the .npy headers
    alone, which must agree on each split's count."""
    counts = {}
    for split in SPLITS:
        found = []
        for path, kind in zip(resized_paths(directory, split), (RESIZED_IMAGES, RESIZED_LABELS)):
            with open(path, 'rb') as f:
                found.append(open_npy(f, path, *kind))
        if found[0] != found[1]:
            raise DataError(f'{directory}: {found[0]} {split} images but {found[1]} labels; run '
                            f'python ImageResizer.py again')
        counts[split] = found[0]
    return counts


def write_resized(chunks, counts, directory, size):
    """Writes a resized (split, images, labels) stream as .npy files, appended
    chunk by chunk; they appear under their names only once all are complete."""
    with contextlib.ExitStack() as stack:
        files, written = {}, dict.fromkeys(SPLITS, 0)
        for split in SPLITS:
            for path, item_shape, dtype in zip(resized_paths(directory, split),
                                               ((size, size, 3), ()), (np.uint8, np.int64)):
                f = stack.enter_context(open(stack.enter_context(safe_io.atomic_path(path)), 'wb'))
                np.lib.format.write_array_header_1_0(f, {
                    'descr': np.lib.format.dtype_to_descr(np.dtype(dtype)),
                    'fortran_order': False, 'shape': (counts[split], *item_shape)})
                files[split, dtype] = f
        for split, images, labels in chunks:
            files[split, np.uint8].write(np.ascontiguousarray(images, np.uint8).tobytes())
            files[split, np.int64].write(np.ascontiguousarray(labels, np.int64).tobytes())
            written[split] += len(labels)
        if written != counts:
            raise ValueError(f'the source changed while resizing: {written} images, expected {counts}')


def main(argv):
    """python ImageResizer.py [key=value ...]: the exit status."""
    return command.run(resize, argv)


def resize(argv):
    """Resizes the CIFAR-10 batches into .npy files for TFRecordsWriter; returns the exit status."""
    cfg = settings.load_config([*command.RECORDS_DEFAULTS, *argv])
    malloc_tuning.set_mmap_threshold(cfg['malloc_mmap_threshold'])
    source_dir = constant.derived_dirs(dict(cfg, dataset_name='cifar_32'))['DATA_DIR']
    out_dir = os.path.join(constant.derived_dirs(cfg)['DATA_DIR'], 'resized')
    counts = loaders.cifar_split_counts(source_dir, cfg['download'])
    size = loaders.DATASETS['cifar_128'].image_shape[0]
    resizer = BicubicResizer(size, cfg['resize_batch_size'])
    print(f'Resizing {sum(counts.values())} CIFAR-10 images from {source_dir} to '
          f'{size} px into {out_dir}', flush=True)
    write_resized(resizer.stream(loaders.cifar_split_stream(source_dir, cfg['download'], counts)),
                  counts, out_dir, size)
    resizer.close()
    print(f'Done: {", ".join(f"{s} {n}" for s, n in counts.items())} images. '
          f'Next: python TFRecordsWriter.py')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
