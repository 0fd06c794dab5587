"""The figures a researcher reads first: the run's PDF (util.py) and a
sweep's (trainer/study/figures.py), from small made-up histories."""
import numpy as np
import pytest

import util
from trainer.study import excitation, figures, run_curves


def rows(rates):
    return [{'epoch': e, 'train_loss': 1.0 / e, 'valid_loss': 1.2 / e, 'train_accuracy': 0.5 + e / 10,
             'valid_accuracy': 0.45 + e / 10 - (e == 3) * 0.2, 'learning_rate': rate}
            for e, rate in enumerate(rates, start=1)]


def test_the_run_pdf_has_epoch_ticks_the_best_epoch_and_the_test_result_in_its_title():
    epochs = rows([1e-3, 1e-3, 1e-4])
    best = {'epoch': 2, 'valid_accuracy': 0.65, 'test_accuracy': 0.61, 'test_loss': 0.9}
    test = {'epoch': 3, 'accuracy': 0.5, 'loss': 1.1}
    fig = util.training_progress_figure(epochs, 'run on data', best, test)
    ax_loss, ax_acc, ax_lr = fig.axes
    assert all(float(t).is_integer() for t in ax_lr.get_xticks())
    assert 'test: accuracy 0.5000, loss 1.1000 (final weights, epoch 3)' in fig.get_suptitle()
    assert 'test of the best validation epoch 2: accuracy 0.6100' in fig.get_suptitle()
    assert list(ax_lr.get_xticks()) == [1, 2, 3]
    for ax in (ax_loss, ax_acc):  # a vertical line at the best epoch, named in the legend
        assert any(list(line.get_xdata()) == [2, 2] for line in ax.get_lines())
        assert 'best validation epoch (2)' in [t.get_text() for t in ax.get_legend().get_texts()]
    assert ax_lr.get_ylabel() == 'learning rate (end of epoch)'
    assert list(ax_lr.get_lines()[0].get_ydata()) == [1e-3, 1e-3, 1e-4]
    assert ax_lr.get_ylim()[0] == 0


@pytest.mark.parametrize('rates, said', [([1e-3] * 3, 'constant over the run: 0.001'),
                                         ([1e-3, 0.99999e-3, 0.99998e-3], 'nearly constant')])
def test_a_learning_rate_that_does_not_change_is_a_line_of_text_not_a_panel(rates, said):
    fig = util.training_progress_figure(rows(rates), 'run')
    assert len(fig.axes) == 2  # loss and accuracy only
    assert said in ' '.join(t.get_text() for t in fig.texts)


def test_one_epoch_is_drawn_on_a_whole_epoch_axis():
    fig = util.training_progress_figure(rows([1e-3]), 'run')
    assert list(fig.axes[-1].get_xticks()) == [1]
    assert fig.axes[-1].get_xlim() == (0.5, 1.5)  # not matplotlib's 0.945 to 1.05
    many = util.training_progress_figure(rows([1e-3] * 40), 'run').axes[-1]
    ticks = [t for t in many.get_xticks() if 1 <= t <= 40]
    assert 3 <= len(ticks) <= 12 and all(float(t).is_integer() for t in ticks)


def test_the_sweep_validation_figure_has_whole_epoch_ticks():
    runs = [made_up_run('custom_model_relu', 'custom_model', 'relu', False, 8)]
    runs = [runs[0]._replace(epochs=runs[0].epochs[:1])]
    ax = run_curves.validation_figure(runs, 'one epoch').axes[-1]
    assert list(ax.get_xticks()) == [1] and ax.get_xlim() == (0.5, 1.5)


@pytest.mark.parametrize('recorded, drawn, said', [(11, 11, False), (21, 11, True)])
def test_the_depth_profile_draws_a_default_run_whole_and_says_when_it_leaves_epochs_out(recorded, drawn, said):
    layers = 4
    statistics = {'layers': [[f'l{i}', 'relu'] for i in range(layers)], 'images': 64,
                  'epochs': [{'epoch': e, 'inference': {'mean': [0.1 * e] * layers, 'variance': [1.0] * layers}}
                             for e in range(recorded)]}
    fig = figures.depth_profile_figure(statistics, ['inference'], 'run')
    legend = fig.legends[0]
    labels = [t.get_text() for t in legend.get_texts()]
    assert len(labels) == drawn and labels[0] == 'epoch 0' and labels[-1] == f'epoch {recorded - 1}'
    if recorded == 11:
        assert 'epoch 5' in labels
    assert (f'{drawn} of the {recorded} epochs' in legend.get_title().get_text()) is said


def made_up_excitations(blocks, seed):
    rng = np.random.default_rng(seed)
    counts = np.full(10, 5.0)
    sums = [rng.uniform(0, 5, (10, 8)) for _ in blocks]
    squares = [s ** 2 / 5 + 0.01 for s in sums]
    return excitation.statistics('valid', blocks, counts, sums, squares)


def made_up_run(name, network, activation, se, layers):
    statistics = {'layers': [[f'l{i}', activation] for i in range(layers)], 'images': 256,
                  'epochs': [{'epoch': e, 'inference': {'mean': [0.1 * e] * layers,
                                                        'variance': [1.0 + e] * layers}}
                             for e in (0, 1, 2)]}
    return run_curves.SweepRun(name, network, activation, se, rows([1e-3, 1e-3, 1e-3]),
                                  statistics, made_up_excitations(['se'], 0) if se else None)


def test_a_sweep_draws_a_colour_per_network_a_line_per_activation_and_marks_se(tmp_path):
    runs = [made_up_run(f'{network}_{activation}', network, activation, network.endswith('_se'), layers)
            for network, layers in (('custom_model', 8), ('custom_model_se', 8), ('resnet50', 52))
            for activation in ('relu', 'selu')]
    styles = run_curves.run_styles(runs)
    assert styles['custom_model_relu']['color'] == styles['custom_model_selu']['color']
    assert len({styles[r.name]['color'] for r in runs}) == 3
    assert styles['resnet50_relu']['ls'] != styles['resnet50_selu']['ls']
    assert styles['custom_model_relu']['ls'] == styles['resnet50_relu']['ls']
    assert styles['custom_model_se_relu']['mfc'] != 'white' and styles['custom_model_relu']['mfc'] == 'white'
    path = tmp_path / 'validation.pdf'
    figures.sweep_figure(runs, str(path), 'seed grid on digits')
    data = path.read_bytes()
    assert data.startswith(b'%PDF') and data.count(b'/Type /Page') - data.count(b'/Type /Pages') == 2


def test_the_paper_blocks_of_a_network_without_stages_are_all_its_blocks():
    assert excitation.paper_blocks(['se']) == ['se']
    assert excitation.paper_blocks(['stage3/block1', 'stage3/block2']) == ['stage3/block1',
                                                                           'stage3/block2']


def test_a_depth_profile_names_the_parts_of_a_network_with_stages_and_logs_wide_variances():
    layers = [['conv1', 'relu'], ['pool1', 'max pool']] + [
        [f'stage{s}/block1{part}', 'relu'] for s in (2, 3) for part in ('/conv1', '')] + [
        ['head/fc1', 'relu']]
    variances = [1.0, 2.0, 10.0, 40.0, 300.0, 900.0, 2000.0]
    statistics = {'layers': layers, 'images': 8, 'epochs': [
        {'epoch': 0, 'inference': {'mean': [0.0] * 7, 'variance': variances}}]}
    fig = figures.depth_profile_figure(statistics, ['inference'], 'resnet')
    ax_mean, ax_variance = fig.axes
    assert [t.get_text() for t in ax_mean.get_xticklabels()] == ['stem', 'stage2', 'stage3', 'head']
    assert list(ax_mean.get_xticks()) == [0.5, 2.5, 4.5, 6.0]  # the middle of each part
    assert ax_variance.get_yscale() == 'log' and ax_mean.get_yscale() == 'linear'
    statistics['epochs'][0]['inference']['variance'] = [1.0] * 7
    assert figures.depth_profile_figure(statistics, ['inference'], 'r').axes[1].get_yscale() == 'linear'
