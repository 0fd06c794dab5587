"""A sweep's results compare like with like (every run read at the sweep's
max_epochs) and say what each configuration costs."""
import constant
from trainer.sweeps import results


def epoch(number, valid_accuracy, seconds=2.0):
    return {'epoch': number, 'train_loss': 1.0 / number, 'train_accuracy': 0.5, 'valid_loss': 1.0 / number,
            'valid_accuracy': valid_accuracy, 'train_seconds': seconds, 'epoch_seconds': seconds + 1}


def record(accuracies, best_epoch, **more):
    epochs = [epoch(n, a) for n, a in enumerate(accuracies, 1)]
    best = {'epoch': best_epoch, 'valid_loss': 1.0 / best_epoch, 'valid_accuracy': accuracies[best_epoch - 1],
            'test_accuracy': 0.97, 'test_loss': 0.1, 'checkpoint': f'best/model.ckpt-{best_epoch}'}
    return {'epochs': epochs, 'best': best, 'test': {'epoch': len(epochs), 'loss': 0.1, 'accuracy': 0.9},
            **more}


CFG = {**constant.config, 'run_name': 'custom_model_relu', 'max_epochs': 3}


def test_a_longer_run_is_read_at_the_sweeps_length():
    row = results.result_row(CFG, record([0.5, 0.7, 0.6, 0.9, 0.8], best_epoch=4))
    assert (row['epochs'], row['best epoch'], row['best valid acc %']) == (3, 2, 70.0)
    assert row['time'] == 9.0  # three epochs of 3 s
    assert row['test acc % (best epoch)'] is None  # epoch 2's checkpoint went when epoch 4 beat it
    assert row['note'] == "read at epoch 3 of its 5; no test figure: epoch 2's checkpoint is not kept"


def test_a_longer_run_whose_best_epoch_is_within_the_sweeps_length_keeps_its_test_figure():
    row = results.result_row(CFG, record([0.5, 0.9, 0.6, 0.7], best_epoch=2))
    assert (row['epochs'], row['best epoch'], row['test acc % (best epoch)']) == (3, 2, 97.0)
    assert row['note'] == 'read at epoch 3 of its 4'


def test_a_run_of_the_sweeps_length_is_read_as_it_is():
    row = results.result_row(CFG, record([0.5, 0.9, 0.6], best_epoch=2))
    assert (row['epochs'], row['best epoch'], row['test acc % (best epoch)'], row['note']) == (3, 2, 97.0, '')


def test_the_cost_columns_come_from_the_record_and_the_measured_epochs():
    cost = {'parameters': 421_000, 'multiply_adds': 1_230_000, 'train_images': 1000}
    row = results.result_row(CFG, record([0.5, 0.9, 0.6], best_epoch=2, cost=cost))
    assert (row['M params'], row['M mult-adds'], row['img/s']) == (0.421, 1.23, 500.0)
    line = results.results_markdown([row], 't').splitlines()[4]
    assert '| 0.421 | 1.23 | 500 | 3.00 |' in line  # 1000 images in 2 s of training; 3 s an epoch in all
    assert results.result_row(CFG, record([0.5], best_epoch=1))['M params'] is None  # kept since
