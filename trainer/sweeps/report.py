"""A sweep's report, report.md and report.pdf beside results.md: what the
sweep asked and on which machine, its answer (the paired comparisons over
seeds, each with a plain verdict), the original study's layout, what each
configuration costs, per-class differences, the instruments and the class
activation maps of every run. Everything is read from the runs' files, so
the same runs give the same report byte for byte."""
import collections
import dataclasses
import math
import os
import sys
import zipfile

import numpy as np

import constant
from foundation import bounded_json, regular_files
from foundation.errors import DataError
from trainer.after_training import evaluation
from trainer.config import settings
from trainer.runs import records
from trainer.study import cam, excitation, paired, self_normalisation
from trainer.sweeps import results
from trainer.sweeps.names import configuration_name, without_activation

MARKDOWN_NAME, PDF_NAME = 'report.md', 'report.pdf'
MAX_CLASSES_LISTED = 10  # per contrast: the classes whose accuracy moved most, each way
MAX_STUDY_FILE = 64 << 20  # bytes of a run's .npz the report reads (a run writes well under 1 MiB)
SWEEP_KEYS = ('experiment_grid', 'experiment_seeds', 'max_runs')  # said in the grid's own lines
ACCURACY, LOSS = (figure for figure, _ in paired.FIGURES)


@dataclasses.dataclass
class ReportRun:
    """One run of the sweep as the report reads it: its config, record, its
    epochs and row of the results table read at the sweep's max_epochs, and
    its study files (None where it has none)."""
    cfg: dict
    record: dict
    epochs: list
    row: dict
    class_accuracy: dict = None  # {class name: test accuracy % of the best epoch}
    excitations: excitation.Excitations = None
    maps: cam.ActivationMaps = None

    @property
    def configuration(self):
        return configuration_name(self.cfg)


@dataclasses.dataclass
class Configuration:
    """The runs of one configuration, one per seed."""
    name: str
    cfg: dict  # its first run's
    runs: list

    def values(self, column):
        return [r.row[column] for r in self.runs if _number(r.row[column])]

    def mean(self, column):
        values = self.values(column)
        return float(np.mean(values)) if values else None

    def spread(self, column):
        values = self.values(column)
        return float(np.std(values, ddof=1)) if len(values) > 1 else None

    @property
    def network(self):
        """Its name without the activation (the original layout's line)."""
        return without_activation({**self.cfg, 'run_name': self.name})


@dataclasses.dataclass
class Report:
    grid: str
    grid_points: list
    dataset: str
    max_epochs: int
    runs: list
    configurations: list
    comparisons: list        # paired.Comparison of the results table's figures
    class_comparisons: list  # paired.Comparison per class ('class 3'), test accuracy

    @property
    def seeds(self):
        return sorted({r.cfg['seed'] for r in self.runs})

    @property
    def title(self):
        return f'{self.grid} grid on {self.dataset}'


def _number(value):
    return isinstance(value, (int, float)) and math.isfinite(value)


# --- reading the runs' files -------------------------------------------------------------

def _warn(text):
    print(f'warning: {text}', file=sys.stderr, flush=True)


def read_study_file(path, load, what):
    """load(an open file) for a run's .npz of at most MAX_STUDY_FILE bytes;
    None where there is none, or (with one warning) where it cannot be read."""
    if not os.path.lexists(path):
        return None
    try:
        with regular_files.open_regular(path, MAX_STUDY_FILE, "a run's study file") as f:
            return load(f)
    except (DataError, OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        _warn(f'{path} is not readable ({getattr(error, "reason", error)}); the report leaves '
              f'out its {what}: run instruments.py for the run to write it again')
        return None


def class_accuracy(directory, record):
    """{class name: accuracy %} of the test split with the best epoch's
    weights, from the confusion matrix the end of the run wrote; None
    where there is none or it does not fit the run."""
    path = os.path.join(evaluation.evaluation_folder(directory, 'test', 'best'), 'confusion.json')
    if not os.path.lexists(path):
        return None
    classes = record.get('data', {}).get('classes')
    try:
        found = bounded_json.load(path, 'run evaluate.py for the run to write it again')
        matrix = np.asarray(found['matrix'], dtype=np.int64)
        if found['classes'] != classes or matrix.shape != (len(classes), len(classes)) or (matrix < 0).any():
            raise DataError(f'{path} is not the confusion matrix of the run\'s {len(classes or [])} classes')
    except (DataError, KeyError, TypeError, ValueError) as error:
        _warn(f'{error}; the report leaves out its per-class figures')
        return None
    totals = matrix.sum(axis=1)
    return {name: 100.0 * matrix[k, k] / totals[k] for k, name in enumerate(classes) if totals[k]}


def report_run(cfg, record, directory):
    """A ReportRun with the study files of the run in `directory`; per-class
    figures only where the row's test figure is the run's own best epoch's."""
    epochs, _, _ = results.read_at_sweep_length(record, cfg['max_epochs'])
    row = results.result_row(cfg, record)
    accuracy = class_accuracy(directory, record) if row[ACCURACY] is not None else None
    numbers, _, _ = excitation.paths(directory, 'valid')
    return ReportRun(cfg, record, epochs, row, accuracy,
                     read_study_file(numbers, excitation.load, 'SE excitations'),
                     read_study_file(os.path.join(directory, cam.NUMBERS_NAME), cam.load,
                                     'class activation maps'))


def configurations_of(runs):
    """The Configurations of the runs, in the order they first appear."""
    grouped = {}
    for r in runs:
        grouped.setdefault(r.configuration, []).append(r)
    return [Configuration(name, members[0].cfg, members) for name, members in grouped.items()]


def class_comparisons(runs):
    """Paired comparisons of each class's test accuracy, for the contrasts
    of runs that all have per-class figures."""
    measured = [r for r in runs if r.class_accuracy is not None]
    names = list(dict.fromkeys(name for r in measured for name in r.class_accuracy))
    rows = [{f'class {name}': r.class_accuracy.get(name) for name in names} for r in measured]
    return paired.comparisons([r.cfg for r in measured], rows, [(f'class {n}', 'pt') for n in names],
                              configuration=configuration_name)


def build(grid, runs):
    """The Report of the sweep's ReportRuns."""
    cfgs, rows = [r.cfg for r in runs], [r.row for r in runs]
    return Report(grid, results_grid_points(runs[0].cfg, grid), runs[0].cfg['dataset_name'],
                  runs[0].cfg['max_epochs'], runs, configurations_of(runs),
                  paired.comparisons(cfgs, rows, configuration=configuration_name), class_comparisons(runs))


def results_grid_points(cfg, grid):
    """The grid as constant.py defines it, one {key: [values]} per part."""
    spec = cfg['experiment_grids'][grid]
    return list(spec) if isinstance(spec, (list, tuple)) else [spec]


# --- what the report says ------------------------------------------------------------------

def verdict(comparison):
    """The reading of a comparison in words: which way its interval lies."""
    c = comparison
    if c.n < paired.MIN_PAIRS or c.interval is None:
        return f'too few pairs ({c.n}) to tell'
    low, high = c.interval
    what = 'test accuracy' if c.figure == ACCURACY else c.figure
    if low > 0 or high < 0:
        change = 'raises' if low > 0 else 'lowers'
        good = (low > 0) == (c.figure != LOSS)
        return f"{c.contrast} {change} the {what} ({'better' if good else 'worse'}): the interval excludes 0"
    return f'no difference in the {what} this sweep can tell apart: the interval spans 0'


def answer_lines(report):
    if not report.comparisons:
        return ['No paired comparison: no two configurations of the sweep differ in one key only. A grid '
                'of one contrast (experiment_grid=se or selu) with experiment_seeds=[1,2,3,4,5] gives one.']
    lines = [f'* **{paired.reading(c)}** ({c.figure}, against {c.network}): {verdict(c)}.'
             for c in report.comparisons]
    if all(c.n < paired.MIN_PAIRS for c in report.comparisons):
        lines.append(f'* Fewer than {paired.MIN_PAIRS} seeds per configuration: rerun with '
                     'experiment_seeds=[1,2,3,4,5] (the runs done are kept) for an answer.')
    return lines


def shared_keys(report):
    """The keys every run sets alike to other than constant.py's value
    (what the key=value arguments changed), seed and names aside."""
    skipped = (set(settings.MENU_KEYS) | set(settings.keys_tagged(settings.AUTO)) | set(SWEEP_KEYS)
               | {'seed', 'run_name', 'resume', 'datasets_root', 'data_dir'})
    first = report.runs[0].cfg
    return {k: v for k, v in first.items() if k not in skipped and k in constant.config
            and v != constant.config[k] and all(r.cfg.get(k) == v for r in report.runs)}


def grid_lines(report):
    parts = ['; '.join(f"{k} in {v}" for k, v in point.items()) for point in report.grid_points]
    changed = ', '.join(f'{k}={v}' for k, v in shared_keys(report).items()) or 'none'
    return [f'* grid `{report.grid}`: ' + ' | '.join(f'{{{p}}}' for p in parts),
            f'* {len(report.configurations)} configurations x {len(report.seeds)} seed(s) '
            f"({', '.join(map(str, report.seeds))}) = {len(report.runs)} runs, read at {report.max_epochs} "
            f'epoch(s)',
            f'* keys set for every run: {changed}']


def machine_lines(report):
    """What trained the runs, as their records say."""
    devices = collections.Counter(r.record.get('device', 'not recorded') for r in report.runs)
    versions = collections.Counter(r.record.get('tensorflow', 'not recorded') for r in report.runs)
    precision = collections.Counter(records.precision_of(r.record) or 'not recorded' for r in report.runs)

    def counted(counter):
        return ', '.join(f'{what} ({n} runs)' if len(counter) > 1 else what for what, n in counter.items())
    return [f'* device: {counted(devices)}', f'* TensorFlow: {counted(versions)}',
            f'* precision: {counted(precision)}']


def mean_row(configuration):
    """Its runs' rows averaged column by column (None where no run has a number)."""
    row = {c: configuration.mean(c) for c in results.COLUMNS}
    row.update(run=configuration.name, epochs=configuration.runs[0].row['epochs'])
    return row


def layout_lines(report):
    """The original study's layout (a line per network, each activation's
    train / valid loss and accuracy side by side), of the means over seeds."""
    cfgs = [{**c.cfg, 'run_name': c.name} for c in report.configurations]
    header, lines = results.activations_side_by_side(cfgs, [mean_row(c) for c in report.configurations])
    return [*results.markdown_table(header, lines), '',
            "Train / valid, best over the epochs, mean over the seeds; '-': not run."]


def cost_lines(report):
    header = ['configuration', 'seeds', 'M params', 'M mult-adds', 'img/s', 's/epoch', 'test acc %',
              'best valid loss']
    lines = [[c.name, str(len(c.runs)), *(results.formatted(col, c.mean(col)) for col in
                                          ('M params', 'M mult-adds', 'img/s', 's/epoch')),
              results.mean_and_spread(ACCURACY, c.values(ACCURACY)),
              results.mean_and_spread(LOSS, c.values(LOSS))] for c in report.configurations]
    return [*results.markdown_table(header, lines), '',
            'Parameters and multiply-adds of a forward pass of one image; training images/s of the '
            'median epoch and seconds of the median epoch (training and evaluation), mean over the seeds; '
            'test accuracy of the best validation epoch, mean ± sd over the seeds.']


def per_contrast(found):
    """{(contrast, baseline): [Comparison per class]} in order."""
    grouped = {}
    for c in found:
        grouped.setdefault((c.contrast, c.network), []).append(c)
    return grouped


def shown_classes(comparisons):
    """The classes a table lists: all up to 2 x MAX_CLASSES_LISTED, else
    those that moved most each way."""
    measured = [c for c in comparisons if c.n]
    if len(measured) <= 2 * MAX_CLASSES_LISTED:
        return measured
    ordered = sorted(measured, key=lambda c: c.mean)
    return ordered[:MAX_CLASSES_LISTED] + ordered[-MAX_CLASSES_LISTED:]


def per_class_lines(report):
    if not report.class_comparisons:
        return ['No per-class comparison: no two configurations that differ in one key both have the '
                'test confusion matrix of their best epoch (evaluation/test-best/confusion.json).']
    lines = []
    for (contrast, network), found in per_contrast(report.class_comparisons).items():
        shown = shown_classes(found)
        clear = [c.figure[len('class '):] for c in found if c.interval and (c.interval[0] > 0 or c.interval[1] < 0)]
        rows = [[c.figure[len('class '):], *paired.table_rows([c])[0][3:8]] for c in shown]
        lines += [f'### {contrast} against {network}', '',
                  *results.markdown_table(['class', 'mean difference (pt)', '95 % CI', 't-test p', 'Wilcoxon p', 'n'],
                                          rows), '',
                  (f'{len(shown)} of {len(found)} classes: those whose accuracy moved most each way. '
                   if len(shown) < len(found) else '') +
                  ('Classes whose interval excludes 0: ' + ', '.join(clear) + '.' if clear else
                   'No class whose interval excludes 0.'), '']
    return lines[:-1]


def specificity_lines(report):
    """Per SE configuration: each block's class-specificity, mean over its seeds."""
    measured = [(c, [r.excitations for r in c.runs if r.excitations is not None]) for c in report.configurations]
    measured = [(c, found) for c, found in measured if found]
    if not measured:
        return ['No run with SE excitations (a run with SE blocks writes them at its end).']
    blocks = list(dict.fromkeys(b for _, found in measured for b in found[0].blocks))
    header = ['block', *(c.name for c, _ in measured)]
    lines = []
    for block in blocks:
        cells = []
        for _, found in measured:
            values = [e.specificity()[e.blocks.index(block)] for e in found if block in e.blocks]
            cells.append(f'{np.mean(values):.3g}' if values else '-')
        lines.append([f'{excitation.paper_name(block)} ({block})', *cells])
    return [*results.markdown_table(header, lines), '',
            'Class-specificity of each SE block on the validation split (the variance across classes of '
            'the class means of the gates, mean over channels), mean over the seeds.']


def self_normalisation_lines(report):
    """Per configuration: its layers' output mean and variance after the last
    epoch (inference mode), over the layers of all its seeds."""
    header = ['configuration', 'layers', 'mean: mean [min, max]', 'variance: mean [min, max]']
    lines = []
    for c in report.configurations:
        last = [r.record[self_normalisation.KEY]['epochs'][-1] for r in c.runs
                if self_normalisation.KEY in r.record]
        if not last:
            continue
        means = np.concatenate([e['inference']['mean'] for e in last])
        variances = np.concatenate([e['inference']['variance'] for e in last])
        lines.append([c.name, str(len(last[0]['inference']['mean'])),
                      f'{np.mean(means):+.3f} [{np.min(means):+.3f}, {np.max(means):+.3f}]',
                      f'{np.mean(variances):.3f} [{np.min(variances):.3f}, {np.max(variances):.3f}]'])
    if not lines:
        return ['No run recorded its self-normalisation.']
    return [*results.markdown_table(header, lines), '',
            "After the last epoch, batch norm in inference mode, over every layer of the seeds' runs; "
            "SELU's fixed point is mean 0, variance 1."]


def cam_groups(report):
    """[(runs, maps of the first)] of the runs with class activation maps,
    grouped by the images they were drawn for (runs that split their data
    alike share them)."""
    groups = {}
    for r in report.runs:
        if r.maps is not None:
            key = (r.maps.images.tobytes(), r.maps.indices.tobytes())
            groups.setdefault(key, []).append(r)
    return list(groups.values())


def cam_lines(report, first_page):
    groups = cam_groups(report)
    missing = [r.cfg['run_name'] for r in report.runs if r.maps is None]
    if not groups:
        return ['No run has class activation maps (a run writes them at its end; instruments.py for '
                'earlier runs).']
    lines = [f"report.pdf from page {first_page}: one row per run, the first {len(groups[0][0].maps.indices)} "
             f'validation images and the Grad-CAM of the class each run predicts, with its best epoch\'s '
             f'weights; {len(groups)} page(s), one per set of images '
             '(runs of equal seed share their validation images where the split depends on it).']
    if missing:
        lines.append(f"Without maps (trained before they were kept): {', '.join(missing)}; "
                     'python instruments.py for each writes them.')
    return lines


def markdown(report, pdf_pages):
    """report.md's text; `pdf_pages`: {what: first page of report.pdf}."""
    lines = [f'# {report.title}', '', '## The answer', '', *answer_lines(report), '',
             'Treatment - baseline over runs of equal seed (the same split, order and augmentation draws); '
             f'{paired.CONFIDENCE:.0%} confidence interval of the mean difference (Student t), the paired t-test\'s p; '
             f'fewer than {paired.MIN_PAIRS} pairs give no p. report.pdf draws them on page '
             f"{pdf_pages['paired']}.", '',
             '## What was run', '', *grid_lines(report), *machine_lines(report), '',
             '## The original layout', '', *layout_lines(report), '',
             '## Paired comparisons', '']
    lines += (results.markdown_table(paired.TABLE_HEADER, paired.table_rows(report.comparisons))
              if report.comparisons else ['None (see the answer above).'])
    lines += ['', '## What each configuration costs', '', *cost_lines(report), '',
              f"Accuracy against cost: report.pdf page {pdf_pages['cost']}; the validation curves, page "
              f"{pdf_pages['curves']}.", '',
              '## Per-class test accuracy', '', *per_class_lines(report), '',
              '## The instruments', '', '### SE class-specificity per block', '', *specificity_lines(report), '',
              '### Self-normalisation per layer', '', *self_normalisation_lines(report), '',
              f"Both drawn on report.pdf page {pdf_pages['instruments']}.", '',
              '## Class activation maps', '', *cam_lines(report, pdf_pages['maps']), '',
              'Every run, row by row: results.md and results.csv beside this file.']
    return '\n'.join(lines) + '\n'
