"""The figures of the instruments of the study: SE excitations per class as the
SE paper draws them (Fig. 6 and 7), the self-normalisation of the layers
over the epochs, class activation maps (Grad-CAM), and a sweep's runs side by side. Multi-page PDFs, written
atomically; matplotlib's Figure, not pyplot: no global state."""
import contextlib

import matplotlib
import numpy as np
from matplotlib import cm, colors
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from foundation import safe_io
from foundation.epoch_axis import epoch_axis
from trainer.after_training import evaluation_figures
from trainer.study import excitation, self_normalisation
from trainer.study.run_curves import legend_outside, run_styles, style_handles, validation_figure

MAX_CLASSES_DRAWN = 10  # lines per panel a reader can tell apart
MAX_LAYERS_NAMED = 12   # beyond, the colour bar alone says which layer a line is
MAX_EPOCHS_DRAWN = 11   # lines of the depth profile (0 to 10: a default run whole); beyond, spread evenly
LAYER_COLOURS = 'viridis'  # first layer dark blue ... last layer yellow
EPOCH_COLOURS = 'plasma'
MODE_TITLES = {'inference': 'batch norm in inference mode (moving averages)',
               'training': 'batch norm in training mode (batch statistics)'}
NO_MODES_TITLE = 'no batch norm: training and inference alike'
CAM_COLOURS = 'jet'  # Grad-CAM's usual colours: blue nothing ... red the image's peak
CAM_ALPHA = 0.5      # the image shows through the map
# Grey images dark on white: over the background the map's colours are the
# colour bar's (on black they would darken to colours the bar does not show).
CAM_GREY = 'gray_r'
CAM_COLUMNS = 4      # images per row of a page, each as two panels: the image, the map over it
CAM_ROWS = 4         # rows per page
MAX_NAME = 18        # characters of a class name in a panel's title


@contextlib.contextmanager
def pdf_pages(path):
    """A multi-page PDF written under a temporary name, renamed when complete;
    without a creation date, so that the same figures give the same bytes."""
    with safe_io.atomic_path(path) as tmp:
        with PdfPages(tmp, metadata={'CreationDate': None}) as pages:
            yield pages


def panel_grid(count, columns=2, size=(5.5, 3.6)):
    """A figure with `count` panels in rows of `columns`; the spare ones hidden."""
    columns = min(columns, count)
    rows = -(-count // columns)
    fig = Figure(figsize=(size[0] * columns + 2.2, size[1] * rows + 1.4), layout='constrained')
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False).ravel())
    for spare in axes[count:]:
        spare.set_visible(False)
    return fig, axes[:count]


# --- SE excitations -------------------------------------------------------------------

def class_label(index, class_names):
    return f'class {class_names[index] if class_names else index}'


def drawn_classes(excitations):
    """The classes with images, at most MAX_CLASSES_DRAWN of them, in order."""
    return [k for k in np.flatnonzero(excitations.counts)][:MAX_CLASSES_DRAWN]


def block_title(excitations, b):
    block = excitations.blocks[b]
    return (f'{excitation.paper_name(block)} ({block}), {excitations.means[b].shape[1]} channels\n'
            f'class-specificity {excitations.specificity()[b]:.3g}, '
            f'class explains {100 * excitations.explained()[b]:.0f} % of the variance')


def excitation_figure(excitations, path, title, class_names=None, shown_class=None):
    """Page 1 (the paper's Fig. 6): per block of excitation.paper_blocks, the
    mean excitation of each class over the channel index, with the mean over
    all classes for reference. Page 2 (its Fig. 7): per block, the mean and
    standard deviation of one class."""
    chosen = [excitations.blocks.index(b) for b in excitation.paper_blocks(excitations.blocks)]
    classes = drawn_classes(excitations)
    shown = classes[0] if shown_class is None else shown_class
    more = len(np.flatnonzero(excitations.counts)) - len(classes)
    with pdf_pages(path) as pages:
        fig, axes = panel_grid(len(chosen))
        palette = matplotlib.colormaps['tab10']
        for ax, b in zip(axes, chosen):
            channels = excitation.sampled_channels(excitations.means[b].shape[1])
            for i, k in enumerate(classes):
                ax.plot(channels, excitations.means[b][k, channels], lw=1, color=palette(i % 10))
            ax.plot(channels, excitations.all_means[b][channels], 'k--', lw=2)
            label_excitation_axes(ax, block_title(excitations, b))
        same_y_range(axes)
        handles = [Line2D([], [], color=palette(i % 10)) for i in range(len(classes))]
        labels = [class_label(k, class_names) for k in classes]
        legend_outside(fig, handles + [Line2D([], [], color='k', ls='--', lw=2)],
                       labels + ['all classes'],
                       title=f'mean over the class\n(+{more} classes not drawn)' if more else
                       'mean over the class')
        fig.suptitle(f'{title}\nSE excitation per class, {excitations.split} split '
                     f'({int(excitations.counts.sum())} images)')
        pages.savefig(fig)
        fig, axes = panel_grid(len(chosen))
        for ax, b in zip(axes, chosen):
            channels = excitation.sampled_channels(excitations.means[b].shape[1])
            mean, sd = excitations.means[b][shown, channels], excitations.sds[b][shown, channels]
            ax.fill_between(channels, mean - sd, mean + sd, color='tab:blue', alpha=0.25, lw=0)
            ax.plot(channels, mean, color='tab:blue', lw=1.2)
            ax.plot(channels, excitations.all_means[b][channels], 'k--', lw=1)
            label_excitation_axes(ax, block_title(excitations, b))
        same_y_range(axes)
        legend_outside(fig, [Line2D([], [], color='tab:blue'),
                             Line2D([], [], color='tab:blue', alpha=0.25, lw=8),
                             Line2D([], [], color='k', ls='--')],
                       [f'mean, {class_label(shown, class_names)}', '± 1 standard deviation',
                        'mean, all classes'])
        fig.suptitle(f'{title}\nSE excitation of {class_label(shown, class_names)} '
                     f'({int(excitations.counts[shown])} images of the {excitations.split} split): '
                     f'mean ± sd per channel')
        pages.savefig(fig)


def same_y_range(axes):
    """One y range for every panel, so that blocks compare at a glance."""
    lows, highs = zip(*(ax.get_ylim() for ax in axes))
    for ax in axes:
        ax.set_ylim(min(lows), max(highs))


def label_excitation_axes(ax, title):
    ax.set_title(title, fontsize='small')
    ax.set_xlabel('channel index')
    ax.set_ylabel('excitation (gate output)')
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


# --- self-normalisation -------------------------------------------------------------------

def layer_colours(count):
    """A colour per layer, from the first (dark) to the last (bright)."""
    return colors.Normalize(0, max(count - 1, 1)), matplotlib.colormaps[LAYER_COLOURS]


def layer_colourbar(fig, axes, layers, norm, cmap):
    bar = fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=list(axes), fraction=0.04)
    bar.set_label('layer, first → last')
    names = [name for name, _ in layers]
    parts = [self_normalisation.network_part(name) for name in names]
    if any(part.startswith('stage') for part in parts):  # where each part of ResNet50 starts
        ticks = [i for i, part in enumerate(parts) if i == 0 or part != parts[i - 1]]
        labels = [f'{parts[i]} ({names[i]})' if parts[i] in ('stem', 'head') else parts[i]
                  for i in ticks]
    else:
        ticks = sorted({0, len(layers) - 1})
        labels = [names[i] for i in ticks]
    bar.set_ticks(ticks)
    bar.set_ticklabels(labels)


def mode_title(mode, modes):
    """A panel's title: batch norm's mode where a network has both."""
    return MODE_TITLES[mode] if len(modes) > 1 else NO_MODES_TITLE


def self_normalisation_figure(statistics, path, title):
    """Page 1: per layer, its mean and variance over the epochs (0: at
    initialisation), coloured from the first layer to the last; max pools
    dotted; SELU's fixed point (0, 1) dashed. Page 2: the same figures
    across the layers, a line per epoch."""
    layers, epochs = statistics['layers'], statistics['epochs']
    modes = [m for m in self_normalisation.MODES if m in epochs[0]]
    x = [e['epoch'] for e in epochs]
    norm, cmap = layer_colours(len(layers))
    with pdf_pages(path) as pages:
        fig = Figure(figsize=(6.5 * len(modes) + 2, 8.5), layout='constrained')
        axes = fig.subplots(2, len(modes), squeeze=False)
        for column, mode in enumerate(modes):
            for row, (stat, fixed_point) in enumerate((('mean', 0.0), ('variance', 1.0))):
                ax = axes[row, column]
                ax.axhline(fixed_point, color='grey', ls='--', lw=1)
                for i, (_, kind) in enumerate(layers):
                    ax.plot(x, [e[mode][stat][i] for e in epochs], marker='o', ms=3,
                            lw=0.8 if kind == 'max pool' else 1.3,
                            ls=':' if kind == 'max pool' else '-', color=cmap(norm(i)))
                ax.set_title(mode_title(mode, modes), fontsize='small')
                ax.set_ylabel(f'{stat} of the layer output')
                if stat == 'variance' and spans_decades([e[mode][stat] for e in epochs]):
                    ax.set_yscale('log')
                ax.set_xlabel('epoch (0: at initialisation)')
                epoch_axis(ax, [e['epoch'] for e in epochs])
                ax.grid(alpha=0.3)
        layer_colourbar(fig, axes.ravel(), layers, norm, cmap)
        if len(layers) <= MAX_LAYERS_NAMED:
            legend_outside(fig, [Line2D([], [], color=cmap(norm(i)), ls=':' if kind == 'max pool'
                                        else '-') for i, (_, kind) in enumerate(layers)],
                           [f'{name} ({kind})' for name, kind in layers], title='layer')
        fig.suptitle(f"{title}\nper layer over the epochs, on {statistics['images']} validation "
                     f"images; dotted: max pools; dashed: SELU's fixed point")
        pages.savefig(fig)
        pages.savefig(depth_profile_figure(statistics, modes, title))


def label_layer_axis(ax, names):
    """An x axis of layers: each named; for a network with stages (ResNet50's
    52 layers, whose names no page can hold), the parts (stem, stage2 ..
    stage5, head) named and their boundaries drawn."""
    parts = [self_normalisation.network_part(name) for name in names]
    if not any(part.startswith('stage') for part in parts):
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=90, fontsize=8)
        ax.set_xlabel('layer, first → last')
        return
    starts = [i for i, part in enumerate(parts) if i == 0 or part != parts[i - 1]]
    for start in starts[1:]:
        ax.axvline(start - 0.5, color='black', lw=0.6, alpha=0.5)
    ends = starts[1:] + [len(names)]
    ax.set_xticks([(a + b - 1) / 2 for a, b in zip(starts, ends)])
    ax.set_xticklabels([parts[i] for i in starts], fontsize=8)
    ax.set_xlabel(f'layer, first → last ({len(names)} layers; lines: where each part starts)')


def spans_decades(values, decades=2):
    """Whether positive numbers span more than `decades` powers of ten (a
    linear axis would flatten all but the largest)."""
    values = np.asarray(values, np.float64).ravel()
    values = values[values > 0]
    return len(values) > 0 and values.max() > 10 ** decades * values.min()


def depth_profile_figure(statistics, modes, title):
    """Mean and variance across the layers (x), a line per epoch."""
    layers, recorded = statistics['layers'], statistics['epochs']
    shown = np.unique(np.linspace(0, len(recorded) - 1, min(len(recorded), MAX_EPOCHS_DRAWN)).round())
    epochs = [recorded[int(j)] for j in shown]
    fig = Figure(figsize=(7.5 * len(modes) + 1.5, 9), layout='constrained')
    axes = fig.subplots(2, len(modes), squeeze=False)
    norm = colors.Normalize(0, max(len(epochs) - 1, 1))
    cmap = matplotlib.colormaps[EPOCH_COLOURS]
    for column, mode in enumerate(modes):
        for row, (stat, fixed_point) in enumerate((('mean', 0.0), ('variance', 1.0))):
            ax = axes[row, column]
            ax.axhline(fixed_point, color='grey', ls='--', lw=1)
            for j, entry in enumerate(epochs):
                ax.plot(range(len(layers)), entry[mode][stat], marker='o', ms=2.5, lw=1,
                        color=cmap(norm(j) * 0.85), label=f"epoch {entry['epoch']}")
            label_layer_axis(ax, [name for name, _ in layers])
            ax.set_ylabel(f'{stat} of the layer output')
            if stat == 'variance' and spans_decades([e[mode][stat] for e in epochs]):
                ax.set_yscale('log')
            ax.set_title(mode_title(mode, modes), fontsize='small')
            ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    drawn = None if len(epochs) == len(recorded) else (
        f'{len(epochs)} of the {len(recorded)} epochs\nrecorded, spread evenly')
    fig.legend(handles, labels, loc='outside right upper', fontsize='small', frameon=False, title=drawn,
               title_fontsize='small')
    fig.suptitle(f'{title}\nacross the layers (first → last), a line per epoch (0: at initialisation)')
    return fig


# --- class activation maps -----------------------------------------------------------------

def short_name(name):
    return name if len(name) <= MAX_NAME else name[:MAX_NAME - 1] + '…'


def cam_caption(measured):
    """What the maps are and how coarse: from feature maps of 1x1 they are
    uniform, which says nothing of where the network looks."""
    (h, w), size = measured.feature_shape, measured.maps.shape[1:]
    said = (f'Grad-CAM of the predicted class at {measured.layer}, from its {h}x{w} feature maps '
            f'brought to {size[0]}x{size[1]} px; left: the image, right: the map over it')
    if h * w == 1:
        said += '\n1x1 feature maps: every map is uniform and says nothing of where the network looks'
    return said


def draw_cam_pair(image_ax, map_ax, measured, i, classes, pixel_max):
    """The i-th image, and its map over it, titled with its index, true and
    predicted class (red where they differ)."""
    true, predicted = (short_name(classes[k]) for k in (measured.true[i], measured.predicted[i]))
    for ax in (image_ax, map_ax):
        evaluation_figures.draw_image(ax, measured.images[i], pixel_max, CAM_GREY)
        ax.set_xticks([])
        ax.set_yticks([])
    shown = map_ax.imshow(measured.maps[i], cmap=CAM_COLOURS, vmin=0, vmax=1, alpha=CAM_ALPHA,
                          interpolation='nearest')
    wrong = measured.true[i] != measured.predicted[i]
    image_ax.set_title(f'#{measured.indices[i]}: true {true}', fontsize='small')
    empty = '\n(map all 0)' if not measured.maps[i].any() else ''
    map_ax.set_title(f'predicted {predicted}{empty}', fontsize='small',
                     color='tab:red' if wrong else 'black')
    return shown


def cam_figure(measured, path, title, classes, pixel_max):
    """CAM_ROWS x CAM_COLUMNS images a page, each beside its map over it, one
    colour scale (0..1, each map scaled to its own peak) for all."""
    per_page = CAM_ROWS * CAM_COLUMNS
    with pdf_pages(path) as pages:
        for start in range(0, len(measured.indices), per_page):
            shown = np.arange(start, min(start + per_page, len(measured.indices)))
            columns = min(CAM_COLUMNS, len(shown))
            rows = -(-len(shown) // columns)
            fig = Figure(figsize=(3.3 * columns + 1.5, 1.9 * rows + 1.3), layout='constrained')
            axes = fig.subplots(rows, 2 * columns, squeeze=False).reshape(rows * columns, 2)
            for image_ax, map_ax in axes[len(shown):]:
                image_ax.set_visible(False)
                map_ax.set_visible(False)
            for (image_ax, map_ax), i in zip(axes, shown):
                picture = draw_cam_pair(image_ax, map_ax, measured, i, classes, pixel_max)
            bar = fig.colorbar(picture, ax=list(axes.ravel()), fraction=0.03)
            bar.set_label("map, each image's own peak 1")
            wrong = int(np.sum(measured.true[shown] != measured.predicted[shown]))
            fig.suptitle(f'{title}\n{cam_caption(measured)}\nvalidation images '
                         f'{measured.indices[shown[0]]}-{measured.indices[shown[-1]]} of the first '
                         f'{len(measured.indices)}; {wrong} misclassified (red)', fontsize='medium')
            pages.savefig(fig)


# --- a sweep's runs side by side ---------------------------------------------------------

def sweep_figure(runs, path, title):
    """Page 1: the validation loss and accuracy of every run over the
    epochs. Page 2: the instruments' summaries: each SE run's
    class-specificity per block, and each run's activation mean and
    variance per layer at initialisation and after its last epoch."""
    styles = run_styles(runs)
    with pdf_pages(path) as pages:
        pages.savefig(validation_figure(runs, title, styles))
        pages.savefig(summary_figure(runs, styles, style_handles(runs, styles), [r.name for r in runs], title))


def relative_depth(count):
    """Positions 0 (first) .. 1 (last) of `count` layers or blocks; 1 for one."""
    return np.linspace(0, 1, count) if count > 1 else np.ones(1)


def summary_figure(runs, styles, handles, names, title):
    fig = Figure(figsize=(12, 12), layout='constrained')
    axes = fig.subplots(3, 2)
    se_runs = [r for r in runs if r.excitations is not None]
    for ax, numbers, label in ((axes[0, 0], 'specificity', 'class-specificity (log scale)'),
                               (axes[0, 1], 'explained', 'share of gate variance due to class')):
        for r in se_runs:
            values = getattr(r.excitations, numbers)()
            ax.plot(relative_depth(len(values)), values, **styles[r.name])
        ax.set_yscale('log' if numbers == 'specificity' and se_runs else 'linear')
        ax.set_xlabel('SE block, first (0) → last (1)')
        ax.set_xlim(-0.05, 1.05)  # the whole depth, also where a network has one block (at 1)
        ax.set_ylabel(label)
        ax.set_title('SE excitations, validation split', fontsize='small')
        ax.grid(alpha=0.3)
        if not se_runs:
            ax.text(0.5, 0.5, 'no run with SE excitations', transform=ax.transAxes, ha='center')
    measured = [r for r in runs if r.statistics]
    for column, (which, when) in enumerate(((0, 'at initialisation'), (-1, 'after the last epoch'))):
        for row, (stat, fixed_point) in enumerate((('mean', 0.0), ('variance', 1.0)), start=1):
            ax = axes[row, column]
            ax.axhline(fixed_point, color='grey', ls='--', lw=1)
            drawn = []
            for r in measured:
                entry = r.statistics['epochs'][which]
                if which == 0 and entry['epoch'] != 0:
                    continue  # recording began after the start (a run of an earlier version)
                drawn += entry['inference'][stat]
                ax.plot(relative_depth(len(entry['inference'][stat])), entry['inference'][stat],
                        **{**styles[r.name], 'ms': 2.5})
            if stat == 'variance' and spans_decades(drawn):
                ax.set_yscale('log')
            ax.set_xlabel('layer, first (0) → last (1)')
            ax.set_xlim(-0.05, 1.05)
            ax.set_ylabel(f'{stat} of the layer output')
            ax.set_title(f'self-normalisation {when} (inference mode)', fontsize='small')
            ax.grid(alpha=0.3)
    legend_outside(fig, handles, names, title='run')
    fig.suptitle(f"{title}\nthe instruments: SE class-specificity per block; activation mean "
                 f"and variance per layer (dashed: SELU's fixed point)")
    return fig
