"""A trained network as a function of raw pixels, for predict.py and
export.py: image files made into images of the run's data, the network in
inference mode with the run's normalisation inside (Serving), and that
graph written as a TensorFlow SavedModel.

Raw pixels are what image files hold, 0..255 (uint8, or floats on that
scale). The run's data description (trainer/after_training/data_summary.py) says the rest: the
image shape, the data's pixel levels (digits: 0..16), the training split's
mean and std, how an image of another size becomes one of the data's, the
class names.
"""
import math
import os
import re
import sys

import numpy as np
import tensorflow as tf

import TFRecordsReader
from foundation import regular_files, safe_io, tf_errors
from foundation.data import image_files, input_pipeline
from foundation.errors import DataError
from foundation.networks import architecture
from Model import network

v1 = tf.compat.v1
IMAGE_TYPES = ('.png', '.jpg', '.jpeg')  # what a folder is searched for


class UnreadableImage(DataError):
    """An image file that cannot be classified."""


def serving_config(cfg):
    """The config of a network for serving: NHWC, which every CPU runs (NCHW
    needs a GPU or oneDNN's kernels), float32."""
    return {**cfg, 'data_format': 'NHWC', 'mixed_precision': False, 'xla': False}


class Serving:
    """The graph of raw pixels -> probabilities: `images` (float32, fed or
    else cast from `uint8_images`) scaled to the data's pixel levels,
    normalised by the run's statistics, the network with batch norm in
    inference mode, softmax; `saver` restores the network's weights from a
    checkpoint of training (same variable names)."""

    def __init__(self, cfg, description):
        cfg = serving_config(cfg)
        shape = [None, *description['image_shape']]
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.uint8_images = v1.placeholder(tf.uint8, shape, 'uint8_images')
            self.images = v1.placeholder_with_default(tf.cast(self.uint8_images, tf.float32),
                                                      shape, 'images')
            pixels = self.images
            if description['pixel_max'] != 255:  # image files' 0..255 -> the data's levels
                pixels = pixels * np.float32(description['pixel_max'] / 255)
            normalised = input_pipeline.normalise(pixels, np.float32(description['mean']),
                                                  np.float32(description['std']))
            with v1.variable_scope(cfg['model']):  # the scope Model builds the network in
                logits = network(normalised, False, architecture.from_config(cfg))
            self.probabilities = tf.nn.softmax(logits, name='probabilities')
            self.class_names = tf.constant(description['classes'], name='class_names')
            self.saver = v1.train.Saver(restored_variables(cfg))
        self.classes = list(description['classes'])

    def probabilities_of(self, session, images):
        """[N, classes] probabilities of float images of raw pixels."""
        return session.run(self.probabilities, {self.images: images})


def restored_variables(cfg):
    """What a Serving graph's saver restores from a checkpoint of training:
    the network's variables under their names, or where the run kept a
    moving average of its weights (ema_decay), each weight from its average,
    as evaluation during training read them."""
    if cfg.get('ema_decay') is None:
        return None  # every variable of the graph: the network's, nothing else is here
    return v1.train.ExponentialMovingAverage(cfg['ema_decay']).variables_to_restore()


def signature(inputs, outputs):
    info = v1.saved_model.utils.build_tensor_info
    return v1.saved_model.signature_def_utils.build_signature_def(
        {k: info(v) for k, v in inputs.items()}, {k: info(v) for k, v in outputs.items()},
        v1.saved_model.signature_constants.PREDICT_METHOD_NAME)


def export(serving, session, directory):
    """Writes the session's Serving graph as a SavedModel (tag 'serve') into
    `directory`, replacing one there only once the new one is complete.
    Signatures: serving_default (float32 `images` -> `probabilities`),
    serving_uint8 (the same from uint8), class_names (no input). Where
    writing fails, nothing of it is left."""
    with safe_io.atomic_folder(directory) as partial:
        builder = v1.saved_model.Builder(partial)
        builder.add_meta_graph_and_variables(
            session, [v1.saved_model.tag_constants.SERVING], strip_default_attrs=True,
            signature_def_map={
                'serving_default': signature({'images': serving.images},
                                             {'probabilities': serving.probabilities}),
                'serving_uint8': signature({'images': serving.uint8_images},
                                           {'probabilities': serving.probabilities}),
                'class_names': signature({}, {'class_names': serving.class_names})})
        builder.save()
    return directory


# --- image files ----------------------------------------------------------------------

def listed_images(paths):
    """(path, None) for each file of `paths`, and for each PNG / JPEG in a
    folder of them (its sub-folders too, sorted); (path, UnreadableImage)
    for a path that is neither. A folder's entry that is no regular file (a
    FIFO, a link to a device) is skipped with a warning: its name is no
    promise of an image, and reading it could block or never end."""
    for path in paths:
        if os.path.isdir(path):
            found = sorted(os.path.join(root, name) for root, _, names in os.walk(path)
                           for name in names if name.lower().endswith(IMAGE_TYPES))
            regular = [f for f in found if is_regular_image_file(f)]
            if not regular:
                yield path, UnreadableImage(f'{path}: the folder holds no PNG or JPEG files')
            yield from ((f, None) for f in regular)
        elif os.path.lexists(path):
            yield path, None  # ImageReader.read says what is wrong with it, if anything
        else:
            yield path, UnreadableImage(f'{path}: no such file or folder')


def shown_name(path):
    """`path` as text that any console prints: a byte of a file name that is
    not UTF-8 shown as \\xff (a strict UTF-8 stdout refuses it as it is)."""
    return os.fsencode(path).decode('utf-8', 'backslashreplace')


def is_regular_image_file(path):
    """Whether a folder's entry is a regular file (stat alone, nothing
    opened); one warning line on stderr where it is not."""
    try:
        regular_files.regular_file(path, image_files.IMAGE_MAX_BYTES, 'an image of the dataset')
    except regular_files.NotRegularFile as error:
        print(f'warning: {error}; skipped', file=sys.stderr, flush=True)
        return False
    except regular_files.UnfitFile:
        pass  # too large: ImageReader.read says so, as for a file named directly
    return True


class ImageReader:
    """Image files as images of the run's data, raw float pixels 0..255:
    decoded by TensorFlow (PNG, JPEG, also GIF and BMP), grey or colour made
    the data's channels (colour to grey by luminance), and brought to the
    data's size as its images were: ImageNet's evaluation view (the central
    87.5 %, bilinear), else TensorFlow's bicubic resize rounded to whole
    levels, as ImageResizer made the 128 px CIFAR-10 (anti-aliased when it
    shrinks, where a plain bicubic would alias).

    An image at least twice the size those need (`needed`) is decoded no
    larger than that: a JPEG at 1/2, 1/4 or 1/8 of its size (libjpeg's DCT
    scaling, which Pillow's draft() uses, here in TensorFlow's decoder that
    reads the records), then any image box-averaged by the largest whole
    factor that keeps it at least that size, before it becomes float32. An
    8192 x 8192 PNG costs its decoded uint8 pixels, not four float copies."""

    def __init__(self, description):
        height, width, channels = description['image_shape']
        self.size, self.resize = (height, width), description['resize']
        self.needed = needed_size(self.size, self.resize)
        self.graph = tf.Graph()
        with self.graph.as_default():
            self.contents = v1.placeholder(tf.string, [], 'file_contents')
            decoders = {1: tf.io.decode_image(self.contents, channels=channels, expand_animations=False),
                        **{scale: tf.io.decode_jpeg(self.contents, channels=channels, ratio=scale)
                           for scale in image_files.JPEG_SCALES}}
            self.decoded = {scale: reduced(image, self.needed) for scale, image in decoders.items()}
            self.image = v1.placeholder(tf.float32, [None, None, channels], 'decoded')
            if self.resize == 'central_view':
                self.resized = {False: TFRecordsReader.central_view(self.image)}
            else:
                self.resized = {shrink: tf.clip_by_value(tf.round(tf.image.resize(
                    self.image, self.size, method='bicubic', antialias=shrink)), 0.0, 255.0)
                    for shrink in (False, True)}
        self.session = v1.Session(graph=self.graph)

    def read(self, path):
        """The image of the file at `path`: float32 [height, width, channels]."""
        return self.read_with_size(path)[0]

    def read_with_size(self, path):
        """(the image of the file at `path`, the (height, width) its file holds)."""
        try:
            data = image_files.image_bytes(path)  # a regular file, its size bounded, before a byte is read
            with image_files.opened(path, data) as header:  # its declared size checked before decoding
                scale = image_files.jpeg_scale(header, self.needed)
                source = header.size[::-1]  # Pillow's (width, height)
            decoded = self.session.run(self.decoded[scale], {self.contents: data})
        except image_files.BadImage as error:
            # Pillow names the bytes it was given as '<_io.BytesIO object at 0x...>'
            said = re.sub(r' ?<[^<>]* object at 0x[0-9a-f]+>', '', str(error))
            raise UnreadableImage(f'{said}; give PNG or JPEG files') from None
        except tf.errors.OpError as error:
            raise UnreadableImage(f'{path}: TensorFlow cannot decode it ({tf_errors.error_reason(error)}); '
                                  f'give PNG or JPEG files') from None
        if self.resize != 'central_view' and decoded.shape[:2] == self.size:
            return decoded, source
        shrink = self.resize != 'central_view' and (decoded.shape[0] > self.size[0]
                                                    or decoded.shape[1] > self.size[1])
        return self.session.run(self.resized[shrink], {self.image: decoded}), source

    def close(self):
        self.session.close()


SIZE_FAR = 2.0        # a side this many times the data's, or this many times smaller, is far from them
BRIGHTNESS_FAR = 1.0  # an image whose mean is this many pixel standard deviations off the data's mean


def unlike_training(source, image, description):
    """What sets an image given to predict apart from the training images,
    in one text ('' where nothing does): a size far from theirs (what was
    done to it said), a mean brightness far from theirs (a light background
    where they had a dark one, or the reverse). `source` is the (height,
    width) of the file, `image` the network's input in 0..255."""
    height, width, _ = description['image_shape']
    said = []
    ratio = max(source[0] / height, source[1] / width, height / source[0], width / source[1])
    if ratio >= SIZE_FAR:
        done = 'shrunk' if source[0] * source[1] > height * width else 'enlarged'
        said.append(f'{source[1]}x{source[0]} pixels, {done} to the {width}x{height} of the training images')
    levels = description.get('pixel_max', 255)
    mean = float(np.mean(image)) * levels / 255
    trained_mean, trained_std = float(np.mean(description['mean'])), float(np.mean(description['std']))
    if abs(mean - trained_mean) > BRIGHTNESS_FAR * trained_std:
        which, guess = (('brighter', 'a light background where theirs is dark') if mean > trained_mean else
                        ('darker', 'a dark background where theirs is light'))
        said.append(f'{which} than the training images (mean {mean:.3g} of {levels}, theirs {trained_mean:.3g} '
                    f'with a pixel spread of {trained_std:.3g}): {guess}?')
    return '; '.join(said)


def needed_size(size, resize):
    """(height, width) an image needs to be made the data's `size` without
    enlarging: the size itself, or for ImageNet's central view the image
    whose central 87.5 % is that size."""
    if resize == 'central_view':
        return tuple(math.ceil(side / TFRecordsReader.CENTRAL_FRACTION) for side in size)
    return tuple(size)


def reduced(image, needed):
    """The decoded uint8 `image` [height, width, channels] as float32,
    box-averaged (an area resize) by the largest whole factor that leaves
    it at least `needed` (height, width); the float copy is of that size."""
    shape = tf.shape(image)[:2]
    factor = tf.maximum(1, tf.reduce_min(shape // tf.constant(needed, tf.int32)))
    return tf.cond(factor > 1, lambda: v1.image.resize_area(image[tf.newaxis], shape // factor)[0],
                   lambda: tf.cast(image, tf.float32))


def top_classes(probabilities, classes, k):
    """[(class name, probability)] of the k most probable classes, best first."""
    order = np.argsort(-probabilities, kind='stable')[:k]
    return [(classes[i], float(probabilities[i])) for i in order]
