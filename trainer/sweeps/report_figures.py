"""report.pdf: a sweep's report as pages to read or hand in. Each page is
always there (saying so where the sweep has nothing for it), so report.md
can name its page numbers; matplotlib's Figure, not pyplot."""
import textwrap

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from foundation.epoch_axis import epoch_axis
from trainer.after_training import evaluation_figures
from trainer.study import figures, paired, run_curves, self_normalisation
from trainer.sweeps import report as sweep_report
from trainer.sweeps.names import without_activation

PAGES = {'summary': 1, 'paired': 2, 'cost': 3, 'curves': 4, 'per_class': 5, 'instruments': 6, 'maps': 7}
PAGE_INCHES = (11, 8.5)
SUMMARY_POINTS = (13, 7)  # the summary page's font: the largest of these sizes at which its text fits
MONOSPACE_WIDTH = 0.6  # a monospace character's width per point of font size
LINE_SPACING = 1.25  # a text line's height per point of font size
MAX_CAM_COLUMNS = 8  # images per row of a class-activation-map page
MAX_CAM_ROWS = 12    # runs per page


def empty_page(title, said):
    fig = Figure(figsize=PAGE_INCHES)
    fig.text(0.5, 0.5, textwrap.fill(said, 80), ha='center', va='center')
    fig.suptitle(title)
    return fig


def summary_page(report):
    """The answer and what was run, in words, as large as the page allows."""
    fig = Figure(figsize=PAGE_INCHES)
    lines = ['The answer', *sweep_report.answer_lines(report), '', 'What was run',
             *sweep_report.grid_lines(report), *sweep_report.machine_lines(report)]
    points, wrapped = fitted_text([line.replace('**', '').replace('`', '') for line in lines],
                                  0.9 * PAGE_INCHES[0] * 72, 0.85 * PAGE_INCHES[1] * 72)
    fig.text(0.05, 0.9, '\n'.join(wrapped), va='top', family='monospace', fontsize=points)
    fig.suptitle(report.title, fontsize='x-large')
    return fig


def fitted_text(lines, width, height):
    """(font size, wrapped lines): the largest size of SUMMARY_POINTS's range
    at which `lines`, wrapped to `width` points of monospace, fill at most
    `height` points; the smallest where none fits."""
    largest, smallest = SUMMARY_POINTS
    points = largest
    while True:
        wrapped = [part for line in lines
                   for part in textwrap.wrap(line, int(width / (MONOSPACE_WIDTH * points)),
                                             subsequent_indent='   ') or ['']]
        if len(wrapped) * LINE_SPACING * points <= height or points <= smallest:
            return points, wrapped
        points -= 0.5


def paired_page(report):
    """Each contrast's mean difference with its 95 % interval, its pairs as dots."""
    if not report.comparisons:
        return empty_page(f'{report.title}: paired comparisons', sweep_report.answer_lines(report)[0])
    by_figure = {}
    for c in report.comparisons:
        by_figure.setdefault(c.figure, []).append(c)
    fig = Figure(figsize=(11, 2.2 + 0.9 * max(map(len, by_figure.values())) * len(by_figure)),
                 layout='constrained')
    for ax, (figure, found) in zip(np.atleast_1d(fig.subplots(len(by_figure), 1)), by_figure.items()):
        for y, c in enumerate(found):
            ax.plot(c.differences, [y] * c.n, 'o', color='tab:grey', alpha=0.5, ms=4)
            if c.interval:
                ax.errorbar(c.mean, y, xerr=[[c.mean - c.interval[0]], [c.interval[1] - c.mean]],
                            fmt='D', color='tab:blue', capsize=5, ms=6)
            elif c.n:
                ax.plot(c.mean, y, 'D', color='tab:blue', ms=6)
        ax.axvline(0, color='black', lw=1)
        ax.set_yticks(range(len(found)), [f'{c.contrast}\nagainst {c.network}' for c in found], fontsize='small')
        ax.set_ylim(-0.7, len(found) - 0.3)
        ax.invert_yaxis()
        unit = ' (percentage points)' if found[0].unit == 'pt' else ''
        ax.set_xlabel(f'{figure}: treatment - baseline{unit}')
        ax.grid(axis='x', alpha=0.3)
    fig.suptitle(f'{report.title}: paired differences over seeds\n'
                 f'diamond: mean with its {paired.CONFIDENCE:.0%} confidence interval (Student t); '
                 'grey dots: the pairs, one per seed')
    return fig


def labelled_points(ax, xs, ys, spreads, names):
    for x, y, spread, name in zip(xs, ys, spreads, names):
        if x is None or y is None:
            continue
        ax.errorbar(x, y, yerr=spread or 0, fmt='o', capsize=4, ms=6)
        ax.annotate(name, (x, y), xytext=(5, 4), textcoords='offset points', fontsize='x-small')


def cost_page(report):
    """Test accuracy against multiply-adds per image and seconds per epoch."""
    configurations = report.configurations
    fig = Figure(figsize=(12, 5.8), layout='constrained')
    accuracy = [c.mean(sweep_report.ACCURACY) for c in configurations]
    spreads = [c.spread(sweep_report.ACCURACY) for c in configurations]
    names = [c.name for c in configurations]
    labels = ('M multiply-adds per image (forward)', 'seconds per epoch (median, mean over seeds)')
    for ax, column, label in zip(fig.subplots(1, 2), ('M mult-adds', 's/epoch'), labels):
        xs = [c.mean(column) for c in configurations]
        labelled_points(ax, xs, accuracy, spreads, names)
        ax.set_xlabel(label)
        ax.set_ylabel('test accuracy % (best epoch)')
        ax.grid(alpha=0.3)
        if not any(x is not None and y is not None for x, y in zip(xs, accuracy)):
            ax.text(0.5, 0.5, 'no run recorded this', transform=ax.transAxes, ha='center')
    fig.suptitle(f'{report.title}: accuracy against cost\none point per configuration, '
                 'error bar: sample standard deviation over the seeds')
    return fig


def curves_page(report):
    """Validation loss and accuracy over the epochs, mean and spread over seeds."""
    fig = Figure(figsize=(11, 9), layout='constrained')
    palette = matplotlib.colormaps['tab10' if len(report.configurations) <= 10 else 'tab20']
    axes = fig.subplots(2, 1, sharex=True)
    for k, c in enumerate(report.configurations):
        colour = palette(k % palette.N)
        for ax, metric in zip(axes, ('loss', 'accuracy')):
            length = min(len(r.epochs) for r in c.runs)
            values = np.array([[e[f'valid_{metric}'] for e in r.epochs[:length]] for r in c.runs])
            epochs = np.arange(1, length + 1)
            ax.plot(epochs, values.mean(axis=0), color=colour, marker='o', ms=3,
                    label=f'{c.name} ({len(c.runs)} seeds)' if len(c.runs) > 1 else c.name)
            if len(c.runs) > 1:
                spread = values.std(axis=0, ddof=1)
                ax.fill_between(epochs, values.mean(axis=0) - spread, values.mean(axis=0) + spread,
                                color=colour, alpha=0.15, lw=0)
    for ax, metric in zip(axes, ('loss', 'accuracy')):
        ax.set_ylabel(f'validation {metric}')
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel('epoch')
    epoch_axis(axes[-1], range(1, 1 + max(min(len(r.epochs) for r in c.runs) for c in report.configurations)))
    figures.legend_outside(fig, *axes[0].get_legend_handles_labels(), title='configuration')
    fig.suptitle(f'{report.title}: validation curves\nmean over the seeds, band: ± one sample standard deviation')
    return fig


def per_class_page(report):
    """Per contrast, each class's test accuracy difference with its interval."""
    grouped = sweep_report.per_contrast(report.class_comparisons)
    if not grouped:
        return empty_page(f'{report.title}: per-class test accuracy', sweep_report.per_class_lines(report)[0])
    fig, axes = figures.panel_grid(len(grouped), columns=1, size=(9, 3.4))
    for ax, ((contrast, network), found) in zip(axes, grouped.items()):
        shown = sweep_report.shown_classes(found)
        means = [c.mean for c in shown]
        errors = np.array([[c.mean - c.interval[0], c.interval[1] - c.mean] if c.interval else [0, 0]
                           for c in shown]).T
        colours = ['tab:green' if c.interval and c.interval[0] > 0 else
                   'tab:red' if c.interval and c.interval[1] < 0 else 'tab:grey' for c in shown]
        ax.bar(range(len(shown)), means, yerr=errors, color=colours, capsize=3)
        ax.axhline(0, color='black', lw=1)
        ax.set_xticks(range(len(shown)), [figures.short_name(c.figure[len('class '):]) for c in shown],
                      rotation=90 if len(shown) > 12 else 0, fontsize='small')
        ax.set_ylabel('difference (pt)')
        ax.set_title(f'{contrast} against {network}, n = {max(c.n for c in shown)} pairs', fontsize='small')
        ax.grid(axis='y', alpha=0.3)
    fig.suptitle(f'{report.title}: per-class test accuracy, treatment - baseline\n'
                 f'bar: mean over the pairs, {paired.CONFIDENCE:.0%} interval; green / red: the interval '
                 'excludes 0')
    return fig


def instruments_page(report):
    """The instruments' summaries (figures.summary_figure) of each
    configuration's first run."""
    firsts = [c.runs[0] for c in report.configurations]
    runs = [run_curves.SweepRun(r.configuration, without_activation({**r.cfg, 'run_name': r.configuration}),
                             r.cfg['activation_fn'], r.cfg['use_se'], r.epochs,
                             r.record.get(self_normalisation.KEY), r.excitations) for r in firsts]
    styles = run_curves.run_styles(runs)
    handles = run_curves.style_handles(runs, styles)
    seeds = sorted({r.cfg['seed'] for r in firsts})
    return figures.summary_figure(runs, styles, handles, [r.name for r in runs],
                                  f"{report.title}, each configuration's run of seed {', '.join(map(str, seeds))}")


def cam_pages(report):
    """One page per set of images: the images, then a row per run of its maps over them."""
    groups = sweep_report.cam_groups(report)
    if not groups:
        return [empty_page(f'{report.title}: class activation maps', sweep_report.cam_lines(report, 0)[0])]
    pages = []
    for group in groups:
        for start in range(0, len(group), MAX_CAM_ROWS):
            pages.append(cam_page(report, group[start:start + MAX_CAM_ROWS]))
    return pages


def cam_page(report, runs):
    first = runs[0].maps
    columns = min(MAX_CAM_COLUMNS, len(first.indices))
    description = runs[0].record['data']
    classes, pixel_max = description['classes'], description['pixel_max']
    fig = Figure(figsize=(1.45 * columns + 3.2, 1.5 * (len(runs) + 1) + 1.3), layout='constrained')
    axes = fig.subplots(len(runs) + 1, columns, squeeze=False)
    for i in range(columns):
        evaluation_figures.draw_image(axes[0, i], first.images[i], pixel_max, figures.CAM_GREY)
        axes[0, i].set_title(f'#{first.indices[i]}: {figures.short_name(classes[first.true[i]])}', fontsize='x-small')
    axes[0, 0].set_ylabel('image\n(true class)', fontsize='x-small')
    shown = None
    for row, r in enumerate(runs, start=1):
        for i in range(columns):
            ax = axes[row, i]
            evaluation_figures.draw_image(ax, first.images[i], pixel_max, figures.CAM_GREY)
            shown = ax.imshow(r.maps.maps[i], cmap=figures.CAM_COLOURS, vmin=0, vmax=1, alpha=figures.CAM_ALPHA,
                              interpolation='nearest')
            wrong = r.maps.predicted[i] != r.maps.true[i]
            ax.set_title(figures.short_name(classes[r.maps.predicted[i]]), fontsize='x-small',
                         color='tab:red' if wrong else 'black')
        axes[row, 0].set_ylabel(textwrap.fill(r.cfg['run_name'], 16), fontsize='x-small')
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=list(axes.ravel()), fraction=0.03).set_label("map, each image's own peak 1")
    fig.suptitle(f'{report.title}: class activation maps (Grad-CAM of the predicted class, best epoch)\n'
                 f'{figures.cam_caption(first).splitlines()[0].split(";")[0]}; titles: predicted class '
                 '(red: wrong)', fontsize='medium')
    return fig


def write_pdf(report, path):
    """report.pdf, written atomically."""
    with figures.pdf_pages(path) as pages:
        for fig in (summary_page(report), paired_page(report), cost_page(report), curves_page(report),
                    per_class_page(report), instruments_page(report), *cam_pages(report)):
            pages.savefig(fig)
