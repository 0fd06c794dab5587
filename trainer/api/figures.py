"""show(): a Run's or a Sweep's figures as PNG, inline in a notebook."""
import dataclasses
import io
import os

import util
from trainer.api.commands import Sweep
from trainer.study import run_curves
from trainer.sweeps.names import without_activation


@dataclasses.dataclass
class Picture:
    """A figure show() draws: its caption and its PNG bytes."""
    caption: str
    png: bytes

    def _repr_png_(self):  # a notebook shows a Picture left as a cell's value
        return self.png


def show(result):
    """Draws a Run's training progress (the PDF's figure) with its filters,
    confusion matrix and misclassified images, or a Sweep's table and
    validation curves; displays them in a notebook and returns them as
    Pictures (PNG) either way."""
    if isinstance(result, Sweep):
        pictures = [figure_picture(f'{result.grid}: validation curves', run_curves.validation_figure(
            [sweep_curve(run) for run in result.runs if run.history],
            f"{result.grid} grid on {result.runs[0].dataset_name}"))]
        text = read_text(result.files.get('results.md'))
    else:
        pictures = run_pictures(result)
        text = None
    display_inline(pictures, text)
    return pictures


def run_pictures(run):
    """The training progress figure, then the PNG files the run wrote."""
    figure = util.training_progress_figure(run.history, util.progress_title(run.name, run.dataset_name),
                                           run.best or None, run.test or None)
    pictures = [figure_picture(f'{run.name}: training progress', figure)]
    evaluation = run.files.get('evaluation')
    written = [('first-layer filters', run.files.get('filters')),
               ('test confusion matrix', evaluation and os.path.join(evaluation, 'confusion.png')),
               ('misclassified test images', evaluation and os.path.join(evaluation, 'misclassified.png'))]
    for caption, path in written:
        if path and os.path.isfile(path):
            with open(path, 'rb') as image:
                pictures.append(Picture(f'{run.name}: {caption}', image.read()))
    return pictures


def sweep_curve(run):
    cfg = {**run.config, 'run_name': run.name}
    return run_curves.SweepRun(run.name, without_activation(cfg), cfg.get('activation_fn'), cfg.get('use_se'),
                               run.history, None, None)


def figure_picture(caption, figure):
    png = io.BytesIO()
    figure.savefig(png, format='png', dpi=80)
    return Picture(caption, png.getvalue())


def read_text(path):
    if not path:
        return None
    with open(path, encoding='utf-8') as text:
        return text.read()


def display_inline(pictures, markdown=None):
    """Shows them in the running notebook; nothing outside one."""
    try:
        from IPython import get_ipython
        from IPython.display import Image, Markdown, display
    except ImportError:
        return
    if get_ipython() is None:
        return
    if markdown:
        display(Markdown(markdown))
    for picture in pictures:
        display(Markdown(f'**{picture.caption}**'), Image(data=picture.png, format='png'))
