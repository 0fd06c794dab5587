"""Feeds a dataset into the graph through tf.data, one reinitialisable iterator
for every split, so the model's inputs come straight from the pipeline.

An input source offers: `next_batch` (the iterator's (images, one-hot labels)
tensors, built once), `num_examples(split)`, `start(session, split,
training, seed, skip)`, which points the iterator at the start of a pass over
`split` (a training pass in the order `seed` gives, less its first `skip`
images), and `explain(error)`, which turns a reading error into a DataError
naming the bad file. ArrayInput is the source for datasets held in memory,
TFRecordsReader.TFRecordInput the one for streamed TFRecords
(trainer/training/input_source.py picks one).
"""
import dataclasses

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1
PREFETCH_BATCHES = 2
AUTOTUNE_PASSES = False  # tf.data autotuning of the passes: see pass_iterator
# augment=True: (pixels of padding on each side of the random crop, mirror flip).
# About 1/8 of the side, as the usual 4 px for 32 px CIFAR; handwritten digits
# are not mirrored (a flipped 2 is no digit).
AUGMENTATION = {'digits': (1, False), 'mnist': (3, False), 'cifar_32': (4, True),
                'cifar_128': (16, True)}


@dataclasses.dataclass(frozen=True)
class InputOptions:
    """How a dataset is fed, read from the config once: the input sources
    take it (an Architecture's counterpart for the data)."""
    batch_size: int = 50              # of a training step, over all workers of a job
    eval_batch_size: int = 500
    train_eval_images: int = None     # of the training split, evaluated after every epoch
    augmentation: tuple = None        # (pad, flip) of random_shift_flip, or None
    shuffle_buffer: int = 10000       # TFRecords: records shuffled at a time
    skip_bad_records: bool = False    # TFRecords: a record that does not read is skipped
    fixed_order: bool = False         # training passes in the split's order, every one the same


def options_from_config(cfg):
    """The InputOptions that cfg describes. The overfit check
    (overfit_batches) trains on the same batches in the same order every
    epoch, unaugmented, and measures the loss on all of them."""
    overfit = cfg['overfit_batches'] is not None
    return InputOptions(
        batch_size=cfg['batch_size'], eval_batch_size=cfg['eval_batch_size'],
        train_eval_images=None if overfit else cfg['train_eval_images'],
        augmentation=AUGMENTATION[cfg['dataset_name']] if cfg['augment'] and not overfit else None,
        shuffle_buffer=cfg['shuffle_buffer'], skip_bad_records=cfg['skip_bad_records'],
        fixed_order=overfit)


def normalise(images, mean, std):
    """uint8 images -> float32 with zero mean and unit variance per channel."""
    return (tf.cast(images, tf.float32) - mean) / std


def batches(dataset, batch_size, mean, std, num_classes):
    """(image, label) elements -> prefetched batches of (normalised images,
    one-hot labels), prepared a whole batch at a time: one op per batch, not
    per image."""
    def prepare(images, labels):
        return normalise(images, mean, std), tf.one_hot(labels, num_classes)
    return dataset.batch(batch_size).map(prepare).prefetch(PREFETCH_BATCHES)


def random_shift_flip(seed, pad, flip):
    """A map over enumerated (image, label) elements: a random crop of the
    image padded by `pad` on each side, and a random mirror flip if `flip`.
    Stateless, seeded by the pass's seed and the element's index, so that
    each epoch draws new crops and a rerun (or a resumed run) the same ones."""
    def augment(index, image_label):
        image, label = image_label
        height, width, channels = image.shape
        pair = tf.stack([tf.cast(seed, tf.int64), index])
        padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode='REFLECT')
        image = tf.image.stateless_random_crop(padded, [height, width, channels], seed=pair)
        if flip:
            image = tf.image.stateless_random_flip_left_right(image, seed=pair + 1)
        return image, label
    return augment


def pass_iterator(passes):
    """One iterator over the same-structured datasets of `passes` ({key:
    dataset}): ({key: the op that starts a pass over that dataset}, the
    iterator's next batch).

    tf.data's autotuning is left off (AUTOTUNE_PASSES): with it, starting a
    pass after a whole training epoch waited for the old pass's tuning thread,
    seconds that can be a sizeable share of a short epoch; without it the new
    pass starts at once, and training is no slower (bench/pass_restart.py
    measures both; docs/performance.md).
    """
    options = tf.data.Options()
    options.autotune.enabled = AUTOTUNE_PASSES
    passes = {key: dataset.with_options(options) for key, dataset in passes.items()}
    first = next(iter(passes.values()))
    iterator = v1.data.Iterator.from_structure(v1.data.get_output_types(first),
                                               v1.data.get_output_shapes(first))
    return {key: iterator.make_initializer(d) for key, d in passes.items()}, iterator.get_next()


def worker_part(order, batch_size, worker, workers):
    """This worker's images of a training pass in `order`: its slice of
    every global batch of `batch_size`, so that the workers together train
    each global batch once, in the same number of steps. A last batch too
    small to give every worker an image is left out."""
    parts = []
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        if len(batch) >= workers:
            parts.append(batch[worker * len(batch) // workers:(worker + 1) * len(batch) // workers])
    return np.concatenate(parts) if parts else order[:0]


class ArrayInput:
    """Numpy arrays, fed to the pipeline once per pass (at iterator start),
    never batch by batch."""

    def __init__(self, data, batch_size, eval_batch_size, train_eval_images=None, augmentation=None,
                 shard=None, fixed_order=False):
        """`augmentation`: (pad, flip) for random_shift_flip of training
        images, or None; `shard`: (worker, workers) of a multi-worker job,
        whose training batches are this worker's parts of the global ones;
        `fixed_order`: training passes in the split's order, not shuffled."""
        self.data = data
        self.batch_size, self.shard, self.fixed_order = batch_size, shard, fixed_order
        if shard:
            batch_size //= shard[1]
        self.train_eval_images = train_eval_images
        self.images = v1.placeholder(tf.uint8, [None, *data.image_shape], 'array_images')
        self.labels = v1.placeholder(tf.int64, [None], 'array_labels')
        self.seed = v1.placeholder_with_default(tf.constant(0, tf.int64), [], 'augment_seed')

        def pipeline(size, augment):
            dataset = tf.data.Dataset.from_tensor_slices((self.images, self.labels))
            if augment:
                dataset = dataset.enumerate().map(random_shift_flip(self.seed, *augmentation),
                                                  num_parallel_calls=tf.data.AUTOTUNE)
            return batches(dataset, size, data.mean, data.std, data.num_classes)

        self._initializers, self.next_batch = pass_iterator(
            {True: pipeline(batch_size, augmentation), False: pipeline(eval_batch_size, None)})

    def num_examples(self, split):
        return self.data.num_examples(split)

    def training_images(self):
        """Images of a whole training pass, over all workers of a job."""
        total = self.num_examples('train')
        if not self.shard:
            return total
        last = total % self.batch_size
        return total - last + (last if last >= self.shard[1] else 0)

    def start(self, session, split, training, seed=None, skip=0):
        """Begins a pass over `split`; training passes are shuffled by `seed`
        and may skip the first `skip` images of that order (resuming an epoch)."""
        part = getattr(self.data, split)
        images, labels = part.images, part.labels
        if training:
            order = (np.arange(len(labels)) if self.fixed_order
                     else np.random.default_rng(seed).permutation(len(labels)))[skip:]
            if self.shard:
                order = worker_part(order, self.batch_size, *self.shard)
            images, labels = images[order], labels[order]
        elif split == 'train' and self.train_eval_images:
            images, labels = images[:self.train_eval_images], labels[:self.train_eval_images]
        feed = {self.images: images, self.labels: labels}
        if training and seed is not None:
            feed[self.seed] = seed
        session.run(self._initializers[training], feed)

    def explain(self, error):
        """Arrays were checked when loaded: no reading error to explain."""
        return None
