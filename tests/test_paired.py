"""Paired comparisons over seeds (trainer/study/paired.py), against scipy and
against a hand computation."""
import numpy as np
import pytest
from scipy import stats

import constant
from trainer.study import paired
from trainer.sweeps import results


def run(seed, **keys):
    cfg = {**constant.config, **keys, 'seed': seed}
    cfg['run_name'] = '_'.join(['custom_model', *(['se'] if cfg['use_se'] else []), cfg['activation_fn'],
                                *(f'{k}-{v}' for k, v in keys.items() if k not in ('use_se', 'activation_fn')),
                                f'seed-{seed}'])
    return cfg


def test_the_mean_difference_and_its_interval_by_hand():
    """Differences 1..5: mean 3, sd sqrt(2.5), standard error sqrt(0.5); Student's
    t for 4 degrees of freedom at 97.5 % is 2.7764 (a table's value): 3 -+ 1.9632."""
    c = paired.Comparison('SE', 'custom_model_relu', 'test acc % (best epoch)', 'pt', [1, 2, 3, 4, 5],
                          [1, 2, 3, 4, 5])
    assert c.mean == 3.0
    low, high = c.interval
    assert low == pytest.approx(3 - 2.7764 * 0.5 ** 0.5, abs=1e-4)
    assert high == pytest.approx(3 + 2.7764 * 0.5 ** 0.5, abs=1e-4)
    assert paired.reading(c) == f'SE: +3.00 pt [+1.04, +4.96], p = {c.t_test_p:.2g}, n = 5'


def test_p_values_are_scipys_paired_tests_on_the_columns():
    rng = np.random.default_rng(0)
    base = rng.normal(97.0, 0.4, 7)
    treated = base + rng.normal(0.3, 0.2, 7)
    runs = [run(s) for s in range(7)] + [run(s, use_se=True) for s in range(7)]
    rows = [{'test acc % (best epoch)': float(v), 'best valid loss': float(v) / 100}
            for v in [*base, *treated]]
    found = paired.comparisons(runs, rows)
    accuracy = next(c for c in found if c.figure == 'test acc % (best epoch)')
    assert (accuracy.contrast, accuracy.network, accuracy.n) == ('SE', 'custom_model_relu_seed-0', 7)
    assert accuracy.t_test_p == pytest.approx(stats.ttest_rel(treated, base).pvalue, abs=1e-4)
    assert accuracy.wilcoxon_p == pytest.approx(stats.wilcoxon(treated, base).pvalue, abs=1e-4)
    assert accuracy.mean == pytest.approx(np.mean(treated - base))


def test_a_grid_implies_a_contrast_per_key_and_network():
    """use_se x activation_fn: SE against no SE for each activation, SELU
    against ReLU with and without SE; SE with max squeeze only against SE."""
    seeds = [1, 2, 3]
    runs = [run(s, use_se=se, activation_fn=af) for se in (False, True) for af in ('relu', 'selu')
            for s in seeds] + [run(s, use_se=True, se_squeeze='max') for s in seeds]
    rows = [{'test acc % (best epoch)': 90.0 + n, 'best valid loss': 0.1} for n in range(len(runs))]
    found = {(c.contrast, c.network) for c in paired.comparisons(runs, rows)}
    assert found == {('SE', 'custom_model_relu_seed-1'), ('SE', 'custom_model_selu_seed-1'),
                     ('SELU', 'custom_model_relu_seed-1'), ('SELU', 'custom_model_se_relu_seed-1'),
                     ('se_squeeze=max', 'custom_model_se_relu_seed-1')}


def test_runs_pair_by_seed_only():
    runs = [run(1), run(2), run(3), run(2, use_se=True), run(3, use_se=True), run(4, use_se=True)]
    rows = [{'test acc % (best epoch)': v, 'best valid loss': 0.0} for v in (90, 91, 92, 93, 95, 99)]
    accuracy = paired.comparisons(runs, rows)[0]
    assert accuracy.seeds == [2, 3] and accuracy.differences == [2, 3]


def test_fewer_than_three_pairs_give_no_p_and_say_so():
    c = paired.Comparison('SELU', 'custom_model_relu', 'best valid loss', '', [-0.01, -0.03], [1, 2])
    assert c.t_test_p is None and c.wilcoxon_p is None
    assert paired.reading(c) == 'SELU: -0.0200 [-0.1471, +0.1071], n = 2: fewer than 3 pairs, no p'
    row = paired.table_rows([c])[0]
    assert row[5:8] == ['-', '-', '2']


def test_equal_arms_are_no_difference_at_p_one():
    c = paired.Comparison('SE', 'custom_model_relu', 'best valid loss', '', [0.0, 0.0, 0.0], [1, 2, 3])
    assert (c.mean, c.t_test_p, c.wilcoxon_p) == (0.0, 1.0, 1.0)


def test_a_missing_figure_leaves_that_seed_out():
    runs = [run(s) for s in (1, 2, 3)] + [run(s, use_se=True) for s in (1, 2, 3)]
    rows = [{'test acc % (best epoch)': v, 'best valid loss': 0.1} for v in (90, 91, None, 92, 93, 94)]
    accuracy = paired.comparisons(runs, rows)[0]
    assert accuracy.seeds == [1, 2] and accuracy.differences == [2, 2]


def test_a_sweeps_results_carry_the_paired_table_and_its_readings():
    runs = [run(s) for s in (1, 2, 3)] + [run(s, use_se=True) for s in (1, 2, 3)]
    rows = []
    for cfg, accuracy in zip(runs, (97.0, 97.2, 96.9, 97.4, 97.5, 97.3)):
        rows.append({**dict.fromkeys(results.COLUMNS), 'run': cfg['run_name'],
                     'test acc % (best epoch)': accuracy, 'best valid loss': 0.1, 'best valid acc %': 97.0,
                     'time': 1.0})
    text = results.results_markdown(rows, 'se', runs)
    section = text.split('## Paired over seeds')[1]
    assert '| SE | custom_model_relu | test acc % (best epoch) | +0.37 |' in section
    expected = stats.ttest_rel([97.4, 97.5, 97.3], [97.0, 97.2, 96.9]).pvalue
    assert '* SE: +0.37 pt [' in section and f'p = {expected:.2g}, n = 3' in section
    assert '## Paired over seeds' not in results.results_markdown(rows[:1] + rows[3:4], 'se', runs[:1] + runs[3:4])
