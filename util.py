"""Pictures of a run: the training-progress PDF, a sweep's validation curves, conv filter images."""
import math
import os

import numpy as np
from matplotlib.figure import Figure  # not pyplot: no global figure state
from skimage import io as skio

from trainer import safe_io


def plot_training_progress(epochs, path, title):
    """Per epoch: train and valid loss, train and valid accuracy, learning rate."""
    x = [e['epoch'] for e in epochs]
    fig = Figure(figsize=(8, 10))
    ax_loss, ax_acc, ax_lr = fig.subplots(3, 1, sharex=True)
    for ax, metric, label in ((ax_loss, 'loss', 'cross-entropy loss'),
                              (ax_acc, 'accuracy', 'accuracy')):
        for split in ('train', 'valid'):
            ax.plot(x, [e[f'{split}_{metric}'] for e in epochs], 'o-', label=split)
        ax.set_ylabel(label)
        ax.legend()
        ax.grid(alpha=0.3)
    ax_lr.plot(x, [e['learning_rate'] for e in epochs], 'o-', color='tab:green')
    ax_lr.set_ylabel('learning rate')
    ax_lr.set_xlabel('epoch')
    ax_lr.grid(alpha=0.3)
    fig.suptitle(title)
    with safe_io.atomic_path(path) as tmp:
        fig.savefig(tmp, format='pdf')


def plot_validation_curves(runs, path, title):
    """Validation loss and accuracy per epoch of several runs ({name: epochs}),
    one line per run, on one page."""
    fig = Figure(figsize=(9, 9))
    ax_loss, ax_acc = fig.subplots(2, 1, sharex=True)
    for name, epochs in runs.items():
        x = [e['epoch'] for e in epochs]
        ax_loss.plot(x, [e['valid_loss'] for e in epochs], 'o-', label=name)
        ax_acc.plot(x, [e['valid_accuracy'] for e in epochs], 'o-', label=name)
    ax_loss.set_ylabel('validation loss')
    ax_acc.set_ylabel('validation accuracy')
    ax_acc.set_xlabel('epoch')
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    if runs:
        ax_acc.legend(fontsize='small')
    fig.suptitle(title)
    with safe_io.atomic_path(path) as tmp:
        fig.savefig(tmp, format='pdf')


def filter_images(kernel):
    """Conv kernel [k, k, in, out] -> uint8 images [out, k, k, in], each
    stretched over 0..255 by its own range so that its pattern shows."""
    filters = np.moveaxis(np.asarray(kernel, dtype=np.float64), -1, 0)
    low = filters.min(axis=(1, 2, 3), keepdims=True)
    span = filters.max(axis=(1, 2, 3), keepdims=True) - low
    scaled = (filters - low) / np.where(span > 0, span, 1.0)
    return np.round(scaled * 255).astype(np.uint8)


def filter_grid(images, scale, gap=1):
    """[n, k, k, c] images, each enlarged `scale` times, tiled into a square grid."""
    n, k, _, c = images.shape
    big = images.repeat(scale, axis=1).repeat(scale, axis=2)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    cell = k * scale + gap
    grid = np.full((rows * cell + gap, cols * cell + gap, c), 255, dtype=np.uint8)
    for i, image in enumerate(big):
        r, col = divmod(i, cols)
        grid[gap + r * cell:gap + r * cell + k * scale, gap + col * cell:gap + col * cell + k * scale] = image
    return grid


def draw_filters(kernel, directory, scale=8):
    """Writes each filter of a first conv layer (1 or 3 input channels) as a
    PNG, and all of them as one grid, into `directory`; returns the grid path."""
    images = filter_images(kernel)
    os.makedirs(directory, exist_ok=True)

    def save(path, image):
        image = image[..., 0] if image.shape[-1] == 1 else image
        with safe_io.atomic_path(path) as tmp:
            skio.imsave(tmp, image, check_contrast=False)

    for i, image in enumerate(images):
        save(os.path.join(directory, f'filter_{i:02d}.png'),
             image.repeat(scale, axis=0).repeat(scale, axis=1))
    grid_path = os.path.join(directory, 'filters.png')
    save(grid_path, filter_grid(images, scale))
    return grid_path
