"""Paired comparisons of a sweep's configurations over seeds: does an SE
block help, does SELU help, by how much and how sure are we.

Two configurations of a sweep form a contrast when they differ in exactly
one key that shapes results (use_se, activation_fn, an ablation's key); the
one at constant.py's value is the baseline. Their runs with equal seeds are
pairs: the same split, order and augmentation draws, so what a seed adds to
the spread cancels in the difference. For each contrast and figure: the mean
difference (treatment - baseline), its 95 % confidence interval (Student t
on the paired differences), the paired t-test's p and the Wilcoxon
signed-rank p, and n.
"""
import dataclasses
import math

import numpy as np
from scipy import stats

import constant
from trainer.config import settings

MIN_PAIRS = 3  # fewer pairs: no p is given
CONFIDENCE = 0.95
# The figures compared: (column of the results table, its unit in a reading).
FIGURES = (('test acc % (best epoch)', 'pt'), ('best valid loss', ''))
# Keys that never tell two configurations apart: how a run is done, not what it is.
IGNORED = set(settings.keys_tagged(settings.HOW)) | set(settings.MENU_KEYS) | {'seed', 'run_name'}
LABELS = {('use_se', True): 'SE', ('activation_fn', 'selu'): 'SELU'}


@dataclasses.dataclass
class Comparison:
    contrast: str       # 'SE', 'SELU', 'se_squeeze=max'
    network: str        # the baseline configuration's name
    figure: str         # a column of the results table
    unit: str
    differences: list   # treatment - baseline, one per seed, in seed order
    seeds: list

    @property
    def n(self):
        return len(self.differences)

    @property
    def mean(self):
        return float(np.mean(self.differences)) if self.differences else None

    @property
    def interval(self):
        """The 95 % confidence interval of the mean difference (Student t); None below 2 pairs."""
        if self.n < 2:
            return None
        half = stats.t.ppf((1 + CONFIDENCE) / 2, self.n - 1) * np.std(self.differences, ddof=1) / math.sqrt(self.n)
        return self.mean - half, self.mean + half

    @property
    def t_test_p(self):
        """The paired t-test's two-sided p; None below MIN_PAIRS."""
        return self._p_of(lambda d: stats.ttest_1samp(d, 0.0).pvalue)

    @property
    def wilcoxon_p(self):
        """The Wilcoxon signed-rank test's two-sided p; None below MIN_PAIRS."""
        return self._p_of(lambda d: stats.wilcoxon(d).pvalue)

    def _p_of(self, test):
        """test(differences)'s p; 1.0 where every difference is 0 (both tests
        are undefined there: no difference at all)."""
        if self.n < MIN_PAIRS:
            return None
        return float(test(self.differences)) if np.any(self.differences) else 1.0


def arm_key(cfg):
    """What a configuration is, its seed aside: the keys that shape results,
    SE's own keys at their defaults where it has no SE blocks."""
    arm = {}
    for key, value in cfg.items():
        if key in IGNORED or key not in settings.KEYS:
            continue
        if settings.SE in settings.KEYS[key].tags and not cfg['use_se']:
            value = constant.config[key]
        arm[key] = value
    return arm


def contrast_of(baseline, treatment):
    """(key, label) where two arms differ in exactly one key and `baseline`
    holds constant.py's value of it; else None."""
    differing = [k for k in baseline if baseline[k] != treatment.get(k)]
    if len(differing) != 1 or baseline[differing[0]] != constant.config[differing[0]]:
        return None
    key = differing[0]
    value = treatment[key]
    return key, LABELS.get((key, value), f'{key}={value}')


def comparisons(runs, rows, figures=FIGURES, configuration=lambda cfg: cfg['run_name']):
    """Every Comparison the sweep's runs (configs) and their result rows
    imply, in the order the baselines first appear; `configuration` names a
    baseline (experiments.py: its runs' name, seed aside)."""
    arms = {}  # frozen arm -> (arm, name of its first run, {seed: row})
    for cfg, row in zip(runs, rows):
        frozen = repr(sorted(arm_key(cfg).items()))
        arm, name, by_seed = arms.setdefault(frozen, (arm_key(cfg), configuration(cfg), {}))
        by_seed[cfg['seed']] = row
    found = []
    for baseline, base_name, base_rows in arms.values():
        for treatment, _, treated_rows in arms.values():
            contrast = contrast_of(baseline, treatment)
            if contrast is None:
                continue
            seeds = sorted(set(base_rows) & set(treated_rows))
            for figure, unit in figures:
                paired = [(s, treated_rows[s].get(figure), base_rows[s].get(figure)) for s in seeds]
                paired = [(s, t, b) for s, t, b in paired if _number(t) and _number(b)]
                found.append(Comparison(contrast[1], base_name, figure, unit,
                                        [t - b for _, t, b in paired], [s for s, _, _ in paired]))
    return found


def _number(value):
    return isinstance(value, (int, float)) and math.isfinite(value)


def _signed(value, unit):
    return f'{value:+.2f}' if unit == 'pt' else f'{value:+.4f}'


def _p(value):
    return '-' if value is None else (f'{value:.4f}' if value >= 0.0001 else '< 0.0001')


def reading(comparison):
    """'SE: +0.31 pt [+0.05, +0.57], p = 0.03, n = 5' (the t-test's p)."""
    c, unit = comparison, f' {comparison.unit}' if comparison.unit else ''
    if c.n == 0:
        return f'{c.contrast}: no pairs'
    text = f'{c.contrast}: {_signed(c.mean, c.unit)}{unit}'
    if c.interval:
        low, high = c.interval
        text += f' [{_signed(low, c.unit)}, {_signed(high, c.unit)}]'
    if c.n < MIN_PAIRS:
        return text + f', n = {c.n}: fewer than {MIN_PAIRS} pairs, no p'
    return text + f', p = {c.t_test_p:.2g}, n = {c.n}'


TABLE_HEADER = ('contrast', 'against', 'figure', 'mean difference', '95 % CI', 't-test p',
                'Wilcoxon p', 'n', 'reading')


def table_rows(found):
    """The paired table's rows, as text cells."""
    rows = []
    for c in found:
        interval = '-' if c.interval is None else ' '.join(
            [f'[{_signed(c.interval[0], c.unit)},', f'{_signed(c.interval[1], c.unit)}]'])
        rows.append([c.contrast, c.network, c.figure, '-' if c.mean is None else _signed(c.mean, c.unit),
                     interval, _p(c.t_test_p), _p(c.wilcoxon_p), str(c.n), reading(c)])
    return rows
