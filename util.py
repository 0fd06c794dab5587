"""Pictures of a run: the training-progress PDF, conv filter images."""
import math
import os

import numpy as np
from matplotlib.figure import Figure  # not pyplot: no global figure state
from skimage import io as skio

from foundation import safe_io
from foundation.epoch_axis import epoch_axis

LR_NEARLY_CONSTANT = 1e-3  # a relative change over the run below this is said, not drawn


def plot_training_progress(epochs, path, title, best=None, test=None):
    """The run's PDF (training_progress_figure)."""
    fig = training_progress_figure(epochs, title, best, test)
    with safe_io.atomic_path(path) as tmp:
        fig.savefig(tmp, format='pdf')


def progress_title(run_name, dataset_name):
    """The title of a run's training-progress figure."""
    return f'{run_name} on {dataset_name}'


def training_progress_figure(epochs, title, best=None, test=None):
    """Per epoch: train and valid loss, train and valid accuracy, learning
    rate (a line of text under the panels where it barely changes); the best
    validation epoch (`best`, record['best']) marked, the test result
    (`test`, record['test']) in the title."""
    x = [e['epoch'] for e in epochs]
    rates = [e['learning_rate'] for e in epochs]
    constant_rate = learning_rate_note(rates)
    fig = Figure(figsize=(8, 7.5 if constant_rate else 10))
    axes = fig.subplots(2 if constant_rate else 3, 1, sharex=True)
    for ax, metric, label in ((axes[0], 'loss', 'cross-entropy loss'),
                              (axes[1], 'accuracy', 'accuracy')):
        for split in ('train', 'valid'):
            ax.plot(x, [e[f'{split}_{metric}'] for e in epochs], 'o-', label=split)
        if best:
            ax.axvline(best['epoch'], color='tab:red', ls=':', lw=1.5,
                       label=f"best validation epoch ({best['epoch']})")
        ax.set_ylabel(label)
        ax.legend()
        ax.grid(alpha=0.3)
    if constant_rate:
        fig.text(0.5, 0.015, constant_rate, ha='center', va='bottom')
    else:
        plot_learning_rate(axes[2], x, rates)
    axes[-1].set_xlabel('epoch')
    epoch_axis(axes[-1], x)
    fig.suptitle(title + test_line(best, test))
    return fig


def learning_rate_note(rates):
    """What a figure says instead of drawing a learning rate that barely
    changes over the run (the default exponential decay over a short run,
    whose curve would only show rounding); None where it changes."""
    if max(rates) - min(rates) > LR_NEARLY_CONSTANT * max(rates):
        return None
    if rates[-1] == rates[0]:
        return f'learning rate constant over the run: {rates[0]:.4g}'
    return (f'learning rate nearly constant over the run: {rates[0]:.6g} to {rates[-1]:.6g} '
            f'({100 * relative_change(rates):+.3f} %)')


def relative_change(rates):
    """The learning rate's change over the run, as a fraction of its start (0 from a zero start)."""
    return rates[-1] / rates[0] - 1 if rates[0] else 0.0


def plot_learning_rate(ax, x, rates):
    """The rate at the end of each epoch, on an axis from 0."""
    ax.set_ylabel('learning rate (end of epoch)')
    ax.grid(alpha=0.3)
    ax.plot(x, rates, 'o-', color='tab:green')
    ax.set_ylim(0, 1.1 * max(rates))
    ax.ticklabel_format(axis='y', style='sci', scilimits=(-2, 3), useOffset=False)
    ax.text(0.02, 0.08, f'{rates[0]:.4g} to {rates[-1]:.4g} ({100 * relative_change(rates):+.2f} %)',
            transform=ax.transAxes)


def test_line(best, test):
    """The title's line of test results: the final weights', and the best
    validation epoch's where it is another epoch."""
    if not test:
        return ''
    line = (f"\ntest: accuracy {test['accuracy']:.4f}, loss {test['loss']:.4f} "
            f"(final weights, epoch {test['epoch']})")
    if best and 'test_accuracy' in best and best['epoch'] != test['epoch']:
        line += (f"\ntest of the best validation epoch {best['epoch']}: accuracy "
                 f"{best['test_accuracy']:.4f}, loss {best['test_loss']:.4f}")
    return line


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
