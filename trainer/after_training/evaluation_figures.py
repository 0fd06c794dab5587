"""The pictures of an evaluation: the confusion matrix (class names on both
axes, counts in the cells, each row coloured by the share of its true
class's images) and a grid of the most confidently misclassified images
with their true and predicted classes."""
import math

import numpy as np
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure  # not pyplot: no global figure state

from foundation import safe_io
from trainer.after_training import data_summary

MOST_CLASSES = 30  # a larger matrix shows the classes most involved in errors
DPI = 120
MIN_WIDTH = 5.0  # inches: a grid of few images still holds its title
# Colour of a share s: s ** GAMMA, so that errors of 1 % (0.25) show beside the
# diagonal's 99 %, where a linear scale leaves them white.
GAMMA = 0.3


def shown_classes(matrix, most=MOST_CLASSES):
    """The indices of the classes to draw: all of them, or the `most` with
    the most errors (as true or as predicted class), in class order."""
    if len(matrix) <= most:
        return np.arange(len(matrix))
    errors = matrix.sum(axis=0) + matrix.sum(axis=1) - 2 * np.diag(matrix)
    return np.sort(np.argsort(-errors, kind='stable')[:most])


def draw_confusion(matrix, classes, path, title):
    """The confusion matrix (rows: true class, columns: predicted) as a PNG."""
    keep = shown_classes(matrix)
    counts = matrix[np.ix_(keep, keep)]
    names = [classes[i] for i in keep]
    totals = matrix[keep].sum(axis=1, keepdims=True)  # all of a true class's images, shown or not
    shares = counts / np.maximum(totals, 1)
    n = len(keep)
    side = max(5.0, 0.45 * n + 2.5)
    fig = Figure(figsize=(side + 1.2, side))
    ax = fig.subplots()
    picture = ax.imshow(shares, cmap='Blues', norm=PowerNorm(GAMMA, vmin=0, vmax=1))
    dark = picture.norm(shares) > 0.6
    font = 9 if n <= 12 else max(5, 9 - (n - 12) // 4)
    for (row, column), count in np.ndenumerate(counts):
        if count:
            ax.text(column, row, str(count), ha='center', va='center', fontsize=font,
                    color='white' if dark[row, column] else 'black')
    long_names = max(len(name) for name in names) > 2
    ax.set_xticks(range(n), names, rotation=45 if long_names else 0,
                  ha='right' if long_names else 'center', fontsize=font)
    ax.set_yticks(range(n), names, fontsize=font)
    ax.set_xlabel('predicted class')
    ax.set_ylabel('true class')
    subset = '' if n == len(matrix) else f', the {n} of {len(matrix)} classes with the most errors'
    ax.set_title(f'{title}\ncounts; colour: share of the true class{subset}', fontsize=10)
    bar = fig.colorbar(picture, ax=ax, fraction=0.046, pad=0.04, label="share of the true class's images")
    bar.set_ticks([0, 0.01, 0.05, 0.2, 0.5, 1])
    fig.tight_layout()
    save(fig, path)


def draw_image(ax, levels, pixel_max, grey_colours='gray'):
    """An image's pixel levels as the data holds them (0..pixel_max) on that
    fixed scale, not stretched to its own range: in `grey_colours` for one
    channel, in colour for three."""
    pixels = np.clip(levels / pixel_max, 0.0, 1.0)
    grey = pixels.shape[-1] == 1
    ax.imshow(pixels[..., 0] if grey else pixels, cmap=grey_colours if grey else None, vmin=0,
              vmax=1, interpolation='nearest')


def draw_misclassified(worst, classes, description, path, title):
    """The images of `worst` (evaluation.Misclassified) in a grid, each with
    its true and predicted class and the predicted class's probability."""
    n = len(worst)
    columns = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / columns))
    fig = Figure(figsize=(max(1.9 * columns + 0.4, MIN_WIDTH), 2.1 * rows + 0.9))
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.axis('off')
    for ax, miss in zip(axes, worst):
        draw_image(ax, data_summary.pixel_levels(miss.image, description), description['pixel_max'])
        ax.set_title(f'true {classes[miss.label]}\npredicted {classes[miss.predicted]} '
                     f'({miss.confidence:.0%})', fontsize=8)
    said = (f'the {n} most confidently misclassified images' if n > 1
            else 'the misclassified image' if n else 'no misclassified images')
    fig.suptitle(f'{title}\n{said}', fontsize=10)
    fig.tight_layout()
    save(fig, path)


def save(fig, path):
    with safe_io.atomic_path(path) as tmp:
        fig.savefig(tmp, format='png', dpi=DPI)
