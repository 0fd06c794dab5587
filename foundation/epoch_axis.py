"""The epoch axis every figure of the project draws: whole epochs only."""
from matplotlib.ticker import MaxNLocator

MAX_EPOCH_TICKS = 12  # a tick per epoch up to this many epochs, fewer whole ones beyond


def epoch_axis(ax, epochs):
    """Ticks `ax`'s x axis at whole epochs: each of `epochs` where they are
    few, else whole numbers matplotlib picks; the axis spans them with half an
    epoch either side, so that one epoch is not drawn on 0.945 to 1.05."""
    shown = sorted(set(epochs))
    if not shown:
        return
    if len(shown) <= MAX_EPOCH_TICKS:
        ax.set_xticks(shown)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(shown[0] - 0.5, shown[-1] + 0.5)
