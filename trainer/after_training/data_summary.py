"""What a trained network needs to know of its data, kept with its run: the
image shape, the brightest pixel level, the training split's per-channel
mean and std that normalised every input, how an image of another size is
brought to the data's, and the class names.

It lives in the run's record (record['data']), which every checkpoint
carries, so predict.py and export.py need nothing of the dataset itself, and
evaluate.py normalises as the training did even where the data has changed.
"""
import dataclasses
import sys

import numpy as np

from foundation.data import loaders
from trainer.runs import record_schema
from trainer.training import input_source
from trainer.training.callbacks import Callback

KEY = record_schema.DATA  # checked with the rest of the record whenever it is read back
# How an image of another size becomes one of the data's: ImageNet's
# evaluation view (central 87.5 %, bilinear to 224 px), else TensorFlow's
# bicubic resize (ImageResizer's, which made the 128 px CIFAR-10).
RESIZING = {'imagenet': 'central_view'}


def summary_of(data, dataset_name):
    """The description of an opened dataset (an ArrayDataset or a
    TFRecordsReader.RecordDataset), as plain JSON values."""
    return {'dataset_name': dataset_name,
            'image_shape': [int(d) for d in data.image_shape],
            'pixel_max': loaders.DATASETS[dataset_name].pixel_max,
            # float32 -> float -> float32 is exact: the statistics come back bit for bit
            'mean': [float(v) for v in data.mean], 'std': [float(v) for v in data.std],
            'resize': RESIZING.get(dataset_name, 'bicubic'),
            'classes': [str(name) for name in data.classes]}


def saved(record):
    """The description a run's record holds; None for a run trained before
    runs kept it."""
    return record.get(KEY)


def of_run(record, cfg, data_dir):
    """The description a run's record keeps; for a run trained before runs
    kept it, its dataset's as the data in `data_dir` gives it now."""
    return saved(record) or summary_of(input_source.open_dataset(cfg, data_dir), cfg['dataset_name'])


def pixel_levels(images, description):
    """Normalised images (as the network receives them) back to the pixel
    levels the data holds (0..pixel_max)."""
    return images * np.asarray(description['std'], np.float32) + np.asarray(description['mean'], np.float32)


def with_run_statistics(data, description):
    """The dataset normalised by the run's training statistics, which
    evaluation must use; a warning where the data's own differ (another
    data_dir, or files changed since the run trained)."""
    mean, std = (np.asarray(description[k], np.float32) for k in ('mean', 'std'))
    if data.mean.shape != mean.shape or not (np.allclose(data.mean, mean, rtol=1e-5)
                                             and np.allclose(data.std, std, rtol=1e-5)):
        print(f'warning: the training split of this data has mean {np.round(data.mean, 3).tolist()} '
              f'and std {np.round(data.std, 3).tolist()}, the run trained on mean '
              f'{np.round(mean, 3).tolist()} and std {np.round(std, 3).tolist()}; normalising as '
              f'the run did', file=sys.stderr, flush=True)
    return dataclasses.replace(data, mean=mean, std=std)


class SaveDataDescription(Callback):
    """Puts the description of the run's data into its record before the
    first epoch is committed, so that every checkpoint carries it."""

    def before_train(self, run):
        run.record[KEY] = summary_of(run.built.source.data, run.cfg['dataset_name'])
