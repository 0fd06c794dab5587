"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) of a training
batch, in the graph: each image mixed with another of its batch and its
one-hot label with that image's, by a share drawn from Beta(alpha, alpha).

Every draw is stateless, seeded by the run's seed and the optimiser step,
so that an epoch resumed from a checkpoint mixes its batches as the
uninterrupted run did. With both on, each batch takes one of the two, as
timm's Mixup does (switch probability 0.5)."""
import dataclasses

import tensorflow as tf

SWITCH_PROBABILITY = 0.5  # with both on: the share of batches that take cutmix
# Streams of the step's draws, so that no two share a seed.
_SHARE, _SHARE_OTHER, _PARTNERS, _SWITCH, _BOX = range(5)


@dataclasses.dataclass
class Draws:
    """A step's draws: the share `lam` of each image kept, the position in
    the batch of each image's `partner`, whether the step takes `cutmix`,
    and the centre of the cut box (fractions of the height and width)."""
    lam: tf.Tensor
    partner: tf.Tensor
    cutmix: tf.Tensor
    centre: tf.Tensor


def _seed(seed, step, stream):
    return tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64) * 8 + stream])


def beta(alpha, seed, step, stream):
    """A stateless draw of Beta(alpha, alpha): the ratio of two gamma draws."""
    first = tf.random.stateless_gamma([], _seed(seed, step, stream), alpha)
    second = tf.random.stateless_gamma([], _seed(seed, step, stream + _SHARE_OTHER), alpha)
    return first / (first + second)


def draws(step, batch, mixup_alpha, cutmix_alpha, seed):
    """The Draws of optimiser step `step` (a tensor) for a batch of `batch`
    (a tensor) images; an alpha of None leaves that method out."""
    partner = tf.argsort(tf.random.stateless_uniform([batch], _seed(seed, step, _PARTNERS)))
    if mixup_alpha and cutmix_alpha:
        cutmix = tf.random.stateless_uniform([], _seed(seed, step, _SWITCH)) < SWITCH_PROBABILITY
        lam = tf.cond(cutmix, lambda: beta(cutmix_alpha, seed, step, _SHARE),
                      lambda: beta(mixup_alpha, seed, step, _SHARE))
    else:
        cutmix = tf.constant(bool(cutmix_alpha))
        lam = beta(cutmix_alpha or mixup_alpha, seed, step, _SHARE)
    centre = tf.random.stateless_uniform([2], _seed(seed, step, _BOX))
    return Draws(lam, partner, cutmix, centre)


def cut_box(lam, centre, height, width):
    """(top, bottom, left, right) of CutMix's box: sides sqrt(1 - lam) of the
    image's about the centre, clipped to the image (timm's rand_bbox)."""
    ratio = tf.sqrt(1.0 - lam)
    cut_h = tf.cast(tf.cast(height, tf.float32) * ratio, tf.int32)
    cut_w = tf.cast(tf.cast(width, tf.float32) * ratio, tf.int32)
    cy = tf.minimum(tf.cast(centre[0] * tf.cast(height, tf.float32), tf.int32), height - 1)
    cx = tf.minimum(tf.cast(centre[1] * tf.cast(width, tf.float32), tf.int32), width - 1)
    return (tf.clip_by_value(cy - cut_h // 2, 0, height), tf.clip_by_value(cy + cut_h // 2, 0, height),
            tf.clip_by_value(cx - cut_w // 2, 0, width), tf.clip_by_value(cx + cut_w // 2, 0, width))


def mixup(images, labels, lam, partner):
    """Each image and label lam of its own and 1 - lam of its partner's."""
    lam = tf.cast(lam, images.dtype)
    return (lam * images + (1 - lam) * tf.gather(images, partner),
            lam * labels + (1 - lam) * tf.gather(labels, partner))


def cutmix(images, labels, lam, partner, centre):
    """Each image with the partner's pixels inside the cut box; the labels
    mixed by the share of the image that stayed its own."""
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    top, bottom, left, right = cut_box(lam, centre, height, width)
    rows, columns = tf.range(height), tf.range(width)
    inside = ((rows >= top) & (rows < bottom))[:, None] & ((columns >= left) & (columns < right))[None, :]
    mixed = tf.where(inside[None, :, :, None], tf.gather(images, partner), images)
    kept = 1.0 - tf.cast((bottom - top) * (right - left), tf.float32) / tf.cast(height * width, tf.float32)
    kept = tf.cast(kept, labels.dtype)
    return mixed, kept * labels + (1 - kept) * tf.gather(labels, partner)


def mixed(images, labels, found):
    """The batch mixed as the Draws `found` say."""
    return tf.cond(found.cutmix, lambda: cutmix(images, labels, found.lam, found.partner, found.centre),
                   lambda: mixup(images, labels, found.lam, found.partner))


def mixed_batch(images, labels, step, optimisation):
    """The training batch mixed as the Optimisation asks (mixup_alpha,
    cutmix_alpha), drawn for optimiser step `step`."""
    found = draws(step, tf.shape(images)[0], optimisation.mixup_alpha, optimisation.cutmix_alpha,
                  optimisation.mixing_seed)
    return mixed(images, labels, found)
