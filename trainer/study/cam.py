"""Class activation maps (Grad-CAM, Selvaraju et al. 2017): where in an
image the network looks for the class it predicts. The last stage's feature
maps A_k are weighted by the mean gradient of the predicted class's logit
over each map, summed and rectified: relu(sum_k mean(dy/dA_k) A_k), scaled
to 0..1 per image and brought to the image's size.

instruments.py draws them for the first images of the validation split in
its order, the same images for every run that splits its data alike, and
writes NUMBERS_NAME and FIGURE_NAME into the run's folder.
"""
import dataclasses

import numpy as np
import tensorflow as tf

from foundation import safe_io
from foundation.errors import DataError
from trainer.after_training import data_summary
from trainer.study import probes
from trainer.training import passes

v1 = tf.compat.v1
SPLIT = 'valid'
NUMBERS_NAME = 'class_activation_maps.npz'
FIGURE_NAME = 'class_activation_maps.pdf'


def grad_cam(logits, feature_maps, image_size):
    """The Grad-CAM tensor [batch, height, width] (0..1) of the predicted
    class, for NHWC `feature_maps` that `logits` [batch, classes] depend on."""
    predicted = tf.argmax(logits, 1)
    score = tf.reduce_sum(logits * tf.one_hot(predicted, tf.shape(logits)[1], dtype=logits.dtype))
    gradients = tf.gradients(score, feature_maps)[0]  # rows are independent: one sum serves all
    weights = tf.reduce_mean(gradients, axis=[1, 2], keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * feature_maps, axis=-1))
    peak = tf.reduce_max(cam, axis=[1, 2], keepdims=True)
    cam = tf.math.divide_no_nan(cam, peak)
    return tf.squeeze(tf.image.resize(cam[..., tf.newaxis], image_size, 'bilinear'), -1), predicted


def last_spatial_layer(model):
    """The Probe of the network's last activation with a spatial extent (the
    custom model's conv3, ResNet50's last block)."""
    return [p for p in probes.layer_outputs(model) if p.kind != 'max pool' and p.tensor.shape.rank == 4][-1]


def last_feature_maps(model):
    """The output of last_spatial_layer, as NHWC."""
    maps = last_spatial_layer(model).tensor
    if model.architecture.data_format == 'NCHW':
        maps = tf.transpose(maps, [0, 2, 3, 1])
    return maps


class ClassActivationMaps:
    """Grad-CAM of a built Model's predicted class, batch norm in inference
    mode (is_training left False), for images fed through its X."""

    def __init__(self, model):
        size = model.X.shape.as_list()[1:3]
        with model.X.graph.as_default():
            feature_maps = last_feature_maps(model)
            self.cam, self.predicted = grad_cam(model.logits, feature_maps, size)
        self.model = model
        self.layer = last_spatial_layer(model).name
        self.feature_shape = tuple(feature_maps.shape.as_list()[1:3])

    def __call__(self, session, images):
        """(maps [n, height, width], predicted classes [n]) of normalised `images`."""
        cam, predicted = session.run([self.cam, self.predicted], {self.model.X: images})
        return np.asarray(cam), np.asarray(predicted)


@dataclasses.dataclass
class ActivationMaps:
    """The Grad-CAM of images of a split: `indices` their positions in the
    split's order, `images` [n, h, w, c] their pixel levels as the data
    holds them, `maps` [n, h, w] (0..1, each image's peak 1; all 0 where no
    feature map argues for the predicted class), the `predicted` and `true`
    classes, and the `layer` whose feature maps (of `feature_shape`) they
    weigh."""
    indices: np.ndarray
    images: np.ndarray
    maps: np.ndarray
    predicted: np.ndarray
    true: np.ndarray
    layer: str
    feature_shape: tuple
    epoch: int = None  # the weights of which epoch


def measure(session, model, source, count, chunk, description):
    """ActivationMaps of the first `count` images of the validation split
    (all of them where it holds fewer), `chunk` images at a time (the memory
    of an evaluation batch); `description`: the run's data (data_summary)."""
    cams = ClassActivationMaps(model)
    images, labels = passes.first_of_split(session, source, SPLIT, [model.X, model.Yoh], count)
    if not len(images):
        raise DataError(f'the {SPLIT} split gave no images to draw class activation maps of')
    maps, predicted = (np.concatenate(parts) for parts in zip(
        *(cams(session, images[i:i + chunk]) for i in range(0, len(images), chunk))))
    return ActivationMaps(np.arange(len(images)), data_summary.pixel_levels(images, description),
                          maps, predicted.astype(np.int64), labels.argmax(1).astype(np.int64),
                          cams.layer, cams.feature_shape)


def save(path, measured):
    """The .npz of every array of `measured`."""
    arrays = {field.name: np.asarray(getattr(measured, field.name))
              for field in dataclasses.fields(measured) if field.name != 'epoch'}
    arrays['epoch'] = np.array(-1 if measured.epoch is None else measured.epoch)
    with safe_io.atomic_path(path) as tmp:
        with open(tmp, 'wb') as f:
            np.savez(f, **arrays)


def load(path):
    """The ActivationMaps an .npz of `save` holds."""
    with np.load(path) as f:
        epoch = int(f['epoch'])
        return ActivationMaps(f['indices'], f['images'], f['maps'], f['predicted'], f['true'],
                              str(f['layer']), tuple(int(d) for d in f['feature_shape']),
                              None if epoch < 0 else epoch)
