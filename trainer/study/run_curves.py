"""A sweep's runs side by side: a style per run (colour = network, line =
activation, filled = SE) and their validation curves. matplotlib only, so
that a notebook draws them without TensorFlow (trainer/api/)."""
import collections

import matplotlib
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from foundation.epoch_axis import epoch_axis

SweepRun = collections.namedtuple(
    'SweepRun', 'name network activation se epochs statistics excitations')
SweepRun.__doc__ = """What a sweep's figure shows of one run: its name, its network (the
run's name without the activation), activation, whether it has SE blocks,
its history rows, its recorded self-normalisation statistics and its
Excitations on the validation split (None where it has none)."""
ACTIVATION_LINES = ('-', '--', '-.', ':')
STYLE_LEGEND = 'run: colour = network,\nline = activation, filled = SE'


def run_styles(runs):
    """{run name: plot keywords}: a colour per network, a line style per
    activation, filled squares for SE, hollow circles without."""
    networks = list(dict.fromkeys(r.network for r in runs))
    activations = list(dict.fromkeys(r.activation for r in runs))
    palette = matplotlib.colormaps['tab10' if len(networks) <= 10 else 'tab20']
    styles = {}
    for r in runs:
        colour = palette(networks.index(r.network) % palette.N)
        styles[r.name] = dict(color=colour, ls=ACTIVATION_LINES[activations.index(r.activation) % 4],
                              marker='s' if r.se else 'o', ms=4,
                              mfc=colour if r.se else 'white', lw=1.4)
    return styles


def legend_outside(fig, handles, labels, title=None):
    """The figure's legend to the right of every panel."""
    fig.legend(handles, labels, loc='outside right center', title=title, fontsize='small',
               frameon=False)


def style_handles(runs, styles):
    """A legend entry per run, in its style."""
    return [Line2D([], [], **styles[r.name]) for r in runs]


def validation_figure(runs, title, styles=None):
    """The validation loss and accuracy of every run over the epochs."""
    styles = styles or run_styles(runs)
    fig = Figure(figsize=(11, 9), layout='constrained')
    for ax, metric in zip(fig.subplots(2, 1, sharex=True), ('loss', 'accuracy')):
        for r in runs:
            ax.plot([e['epoch'] for e in r.epochs], [e[f'valid_{metric}'] for e in r.epochs], **styles[r.name])
        ax.set_ylabel(f'validation {metric}')
        ax.grid(alpha=0.3)
    ax.set_xlabel('epoch')
    epoch_axis(ax, [e['epoch'] for r in runs for e in r.epochs])
    legend_outside(fig, style_handles(runs, styles), [r.name for r in runs], title=STYLE_LEGEND)
    fig.suptitle(title)
    return fig
