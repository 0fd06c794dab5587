"""A sweep's report (trainer/sweeps/report.py, report_figures.py): its
answer in words, per-class differences from the runs' confusion matrices
against a hand computation, files that do not fit left out with one
warning, and the same bytes for the same runs."""
import json
import textwrap

import numpy as np
import pytest

import constant
from trainer.study import cam
from trainer.sweeps import report, report_figures

CLASSES = ['0', '1', '2']


def epochs(valid_accuracy):
    return [{'epoch': n, 'train_loss': 1.0 / n, 'train_accuracy': 0.5, 'valid_loss': 1.0 / n,
             'valid_accuracy': valid_accuracy, 'train_seconds': 2.0, 'epoch_seconds': 3.0} for n in (1, 2)]


def run(tmp_path, seed, use_se, test_accuracy, diagonal=None):
    """A finished 2-epoch run of the se grid in its own folder; `diagonal`:
    its test confusion matrix's right answers per class, of 10 images each."""
    name = f"custom_model{'_se' if use_se else ''}_relu_seed-{seed}"
    cfg = {**constant.config, 'use_se': use_se, 'seed': seed, 'run_name': name, 'max_epochs': 2}
    record = {'epochs': epochs(0.9), 'data': {'classes': CLASSES, 'pixel_max': 16},
              'best': {'epoch': 2, 'valid_loss': 0.5, 'valid_accuracy': 0.9, 'test_accuracy': test_accuracy,
                       'test_loss': 0.3, 'checkpoint': 'best/model.ckpt-2'},
              'test': {'epoch': 2, 'loss': 0.3, 'accuracy': test_accuracy},
              'cost': {'parameters': 1000, 'multiply_adds': 5000, 'train_images': 100},
              'device': 'CPU (test, 2 cores)', 'tensorflow': '2.x'}
    directory = tmp_path / name
    if diagonal is not None:
        matrix = [[d if i == j else (10 - d if j == (i + 1) % 3 else 0) for j in range(3)]
                  for i, d in enumerate(diagonal)]
        folder = directory / 'evaluation' / 'test-best'
        folder.mkdir(parents=True)
        (folder / 'confusion.json').write_text(json.dumps({'classes': CLASSES, 'matrix': matrix}))
    directory.mkdir(parents=True, exist_ok=True)
    return report.report_run(cfg, record, str(directory))


def sweep(tmp_path, base, treated, base_diagonals=None, treated_diagonals=None):
    seeds = range(1, len(base) + 1)
    return report.build('se', [
        *(run(tmp_path, s, False, a, d) for s, a, d in zip(seeds, base, base_diagonals or [None] * len(base))),
        *(run(tmp_path, s, True, a, d) for s, a, d in zip(seeds, treated, treated_diagonals or [None] * len(base)))])


def test_per_class_differences_are_those_of_the_confusion_matrices_by_hand(tmp_path):
    base = [[9, 8, 7], [8, 8, 8], [10, 7, 6]]
    treated = [[10, 8, 9], [9, 6, 8], [10, 9, 9]]
    found = sweep(tmp_path, [0.9] * 3, [0.92] * 3, base, treated)
    assert found.runs[0].class_accuracy == {'0': 90.0, '1': 80.0, '2': 70.0}
    by_class = {c.figure: c for c in found.class_comparisons}
    # class 0: 10-9, 9-8, 10-10 images of 10 -> +10, +10, 0 pt; class 1: 0, -20, +20; class 2: +20, 0, +30
    assert by_class['class 0'].mean == pytest.approx(20 / 3)
    assert by_class['class 1'].mean == pytest.approx(0.0)
    assert by_class['class 2'].mean == pytest.approx(50 / 3)
    assert by_class['class 2'].n == 3
    text = '\n'.join(report.per_class_lines(found))
    assert '### SE against custom_model_relu' in text and '| 2 | +16.67 |' in text


def test_a_confusion_matrix_that_does_not_fit_the_run_is_left_out_with_one_warning(tmp_path, capsys):
    r = run(tmp_path, 1, False, 0.9, [9, 8, 7])
    path = tmp_path / r.cfg['run_name'] / 'evaluation' / 'test-best' / 'confusion.json'
    path.write_text(json.dumps({'classes': CLASSES, 'matrix': [[1, 2], [3, 4]]}))
    assert report.class_accuracy(str(path.parents[2]), r.record) is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'confusion matrix' in err[0] and 'per-class' in err[0]
    path.write_text('[' * 100_000)  # nested far too deep for a confusion matrix
    assert report.class_accuracy(str(path.parents[2]), r.record) is None
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_an_unreadable_study_file_is_left_out_with_one_warning(tmp_path, capsys):
    directory = tmp_path / 'custom_model_relu_seed-1'
    directory.mkdir()
    (directory / cam.NUMBERS_NAME).write_bytes(b'PK\x03\x04 not a zip file at all')
    cfg = {**constant.config, 'seed': 1, 'run_name': directory.name, 'max_epochs': 2}
    r = report.report_run(cfg, {'epochs': epochs(0.9), 'best': {'epoch': 2}}, str(directory))
    assert r.maps is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'class activation maps' in err[0] and 'instruments.py' in err[0]


def test_the_answer_says_which_way_each_interval_lies(tmp_path):
    clear = sweep(tmp_path / 'a', [0.90, 0.91, 0.92, 0.93], [0.92, 0.925, 0.94, 0.945])
    text = report.markdown(clear, report_figures.PAGES)
    assert 'SE raises the test accuracy (better): the interval excludes 0' in text
    assert text.index('## The answer') < text.index('## What was run') < text.index('## Paired comparisons')
    for heading in ('## The original layout', '## What each configuration costs', '## Per-class test accuracy',
                    '### SE class-specificity per block', '### Self-normalisation per layer',
                    '## Class activation maps'):
        assert heading in text
    assert '* device: CPU (test, 2 cores)' in text
    unclear = sweep(tmp_path / 'b', [0.90, 0.93, 0.91, 0.92], [0.93, 0.90, 0.92, 0.91])
    assert 'no difference in the test accuracy this sweep can tell apart' in report.markdown(
        unclear, report_figures.PAGES)


def test_one_seed_gives_no_p_and_says_what_would(tmp_path):
    lines = report.answer_lines(sweep(tmp_path, [0.9], [0.92]))
    assert 'too few pairs (1) to tell' in lines[0]
    assert lines[-1].startswith('* Fewer than 3 seeds per configuration') and 'experiment_seeds=' in lines[-1]
    lines = report.answer_lines(sweep(tmp_path / 'two', [0.9, 0.91], [0.92, 0.93]))
    assert 'too few pairs (2) to tell' in lines[0]


def test_a_sweep_without_a_contrast_says_so(tmp_path):
    found = sweep(tmp_path, [0.9, 0.91, 0.92], [])
    assert found.comparisons == []
    (line,) = report.answer_lines(found)
    assert line.startswith('No paired comparison: no two configurations of the sweep differ in one key')


def test_the_same_runs_give_the_same_report_byte_for_byte(tmp_path):
    found = sweep(tmp_path, [0.90, 0.91, 0.92], [0.92, 0.925, 0.94], [[9, 8, 7]] * 3, [[10, 8, 9]] * 3)
    for r in found.runs:
        r.maps = maps(np.arange(4), r.cfg['seed'])
    report_figures.write_pdf(found, str(tmp_path / 'first.pdf'))
    report_figures.write_pdf(found, str(tmp_path / 'second.pdf'))
    first = (tmp_path / 'first.pdf').read_bytes()
    assert first == (tmp_path / 'second.pdf').read_bytes()
    pages = first.count(b'/Type /Page') - first.count(b'/Type /Pages')
    assert pages == report_figures.PAGES['maps'] - 1 + 3  # a page of maps per seed's images


def maps(indices, seed):
    rng = np.random.default_rng(seed)
    n = len(indices)
    return cam.ActivationMaps(indices, rng.integers(0, 17, (n, 8, 8, 1)), rng.uniform(size=(n, 8, 8)),
                              np.zeros(n, np.int64), np.zeros(n, np.int64), 'conv3', (2, 2), 2)


def test_class_activation_maps_are_grouped_by_the_images_they_show(tmp_path):
    found = sweep(tmp_path, [0.9, 0.91], [0.92, 0.93])
    for r in found.runs:
        r.maps = maps(np.arange(4), r.cfg['seed'])  # images depend on the seed's split
    found.runs[-1].maps = None
    groups = report.cam_groups(found)
    assert [[r.cfg['run_name'] for r in g] for g in groups] == [
        ['custom_model_relu_seed-1', 'custom_model_se_relu_seed-1'], ['custom_model_relu_seed-2']]
    lines = report.cam_lines(found, 7)
    assert '2 page(s)' in lines[0] and 'custom_model_se_relu_seed-2' in lines[1]


def test_the_summary_page_takes_the_largest_font_its_text_fits_in():
    from trainer.sweeps.report_figures import LINE_SPACING, MONOSPACE_WIDTH, SUMMARY_POINTS, fitted_text
    short = ['The answer', '* SE: +0.33 pt [-1.65, +2.32], p = 0.67, n = 5']
    assert fitted_text(short, 700, 500) == (SUMMARY_POINTS[0], short)
    long = [f'* contrast {i}: ' + 'word ' * 40 for i in range(20)]
    points, wrapped = fitted_text(long, 700, 500)
    assert SUMMARY_POINTS[1] <= points < SUMMARY_POINTS[0]
    assert len(wrapped) * LINE_SPACING * points <= 500  # it fits ...
    assert max(map(len, wrapped)) * MONOSPACE_WIDTH * points <= 700
    bigger = points + 0.5  # ... and half a point more would not
    rewrapped = [p for line in long for p in textwrap.wrap(line, int(700 / (MONOSPACE_WIDTH * bigger)),
                                                           subsequent_indent='   ')]
    assert len(rewrapped) * LINE_SPACING * bigger > 500
    assert ' '.join(w.strip() for w in wrapped).split() == ' '.join(long).split()  # every word kept
