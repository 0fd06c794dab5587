"""What a newcomer trips on: a run found by its name alone, filter images
that show what training changed."""
import json
import os

import numpy as np
import pytest

import evaluate
import main
from trainer.training import callbacks

NAME = 'mine'


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """An SE, SELU run of 2 epochs on digits named by run_name."""
    root = tmp_path_factory.mktemp('root')
    args = [f'datasets_root={root}', 'log_every=100000']
    assert main.main([*args, 'use_se=True', 'activation_fn=selu', 'max_epochs=2', f'run_name={NAME}']) == 0
    return root, args, root / 'digits' / 'save_dir' / 'runs' / NAME


def test_evaluate_finds_a_run_by_its_name_and_takes_its_network_from_the_record(trained, capsys):
    root, args, _ = trained
    assert evaluate.main([*args, f'run_name={NAME}']) == 0
    out = capsys.readouterr().err
    assert "The network as the run was trained: activation_fn='selu', use_se=True" in out


def test_a_key_given_that_contradicts_the_record_is_one_line(trained, capsys):
    root, args, _ = trained
    assert evaluate.main([*args, f'run_name={NAME}', 'activation_fn=relu']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and "activation_fn: 'selu' in the checkpoint, 'relu' now" in err
    assert "leave those keys out: the run's record gives them" in err


def test_a_key_given_that_agrees_with_the_record_is_fine(trained, capsys):
    root, args, _ = trained
    assert evaluate.main([*args, f'run_name={NAME}', 'use_se=True']) == 0
    assert "activation_fn='selu'" in capsys.readouterr().err


def test_filters_are_drawn_also_as_their_change_from_the_start(trained):
    root, _, run_dir = trained
    start = np.load(run_dir / callbacks.START_KERNEL_FILE)
    folder = root / 'digits' / 'save_dir' / 'filters' / NAME
    assert (folder / 'filters.png').is_file() and (folder / 'change_from_start' / 'filters.png').is_file()
    record = json.loads((run_dir / 'history.json').read_text())
    assert len(record['epochs']) == 2
    # the start is the initialisation: what a run of the same seed starts from, not its end
    from skimage import io as skio
    assert start.ndim == 4 and np.isfinite(start).all()
    assert not np.array_equal(skio.imread(folder / 'filters.png'),
                              skio.imread(folder / 'change_from_start' / 'filters.png'))


def test_a_start_kernel_of_another_shape_or_damaged_is_not_used(tmp_path):
    path = tmp_path / callbacks.START_KERNEL_FILE
    np.save(path, np.zeros((3, 3, 1, 8), np.float32))
    assert callbacks.start_kernel(str(tmp_path), (3, 3, 1, 8)).shape == (3, 3, 1, 8)
    assert callbacks.start_kernel(str(tmp_path), (3, 3, 1, 16)) is None
    # a header that claims 10^12 values is refused from the header, nothing allocated
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }"
    path.write_bytes(b'\x93NUMPY\x01\x00' + len(header).to_bytes(2, 'little') + header.encode())
    assert callbacks.start_kernel(str(tmp_path), (3, 3, 1, 8)) is None
    path.write_bytes(b'not an array')
    assert callbacks.start_kernel(str(tmp_path), (3, 3, 1, 8)) is None
    os.remove(path)
    assert callbacks.start_kernel(str(tmp_path), (3, 3, 1, 8)) is None


# --- one precision for the arms of a comparison ------------------------------------------

def planned(model, use_se, mixed='auto'):
    return {'model': model, 'use_se': use_se, 'mixed_precision': mixed}


def test_arms_that_auto_would_split_between_precisions_all_take_float32(capsys):
    from trainer.sweeps.plan import one_precision_per_network
    raw = [planned('resnet50', False), planned('resnet50', True), planned('custom_model', False),
           planned('custom_model', True)]
    fitted = [{**r, 'mixed_precision': m} for r, m in zip(raw, (True, False, False, False))]
    out, line = one_precision_per_network(raw, fitted)
    assert [c['mixed_precision'] for c in out] == [False] * 4
    assert line.startswith('precision: float32 for every run of resnet50:')
    same = [{**r, 'mixed_precision': m} for r, m in zip(raw, (True, True, False, False))]
    assert one_precision_per_network(raw, same) == (same, None)  # per model, one precision already


@pytest.mark.parametrize('worker', [None, '1 of 2'])
def test_the_sweep_says_the_one_precision_once_and_its_workers_do_not(worker, capsys, monkeypatch):
    import experiments
    from foundation import machine
    from trainer.runs import folder
    fit = machine.fit_to_machine
    monkeypatch.setattr(machine, 'fit_to_machine', lambda cfg: {**fit(cfg), 'mixed_precision': not cfg['use_se']})
    if worker:
        monkeypatch.setenv(folder.WORKER_ENV, worker)
    else:
        monkeypatch.delenv(folder.WORKER_ENV, raising=False)
    _, runs = experiments.plan(['model=resnet50', 'experiment_grid=se'])
    assert [cfg['mixed_precision'] for cfg in runs] == [False, False]
    said = capsys.readouterr().out.count('precision: float32 for every run of resnet50:')
    assert said == (0 if worker else 1)


def test_a_precision_the_user_set_is_kept():
    from trainer.sweeps.plan import one_precision_per_network
    raw = [planned('resnet50', False, True), planned('resnet50', True, 'auto')]
    fitted = [{**raw[0]}, {**raw[1], 'mixed_precision': False}]
    assert one_precision_per_network(raw, fitted) == (fitted, None)


@pytest.mark.parametrize('config, device, said', [
    ({'mixed_precision': False}, 'CPU (x)', 'float32'), ({'mixed_precision': True}, 'CPU (x)', 'bfloat16'),
    ({'mixed_precision': True}, 'GPU (H100)', 'float16'), ({}, 'CPU (x)', None)])
def test_the_results_table_says_each_runs_precision(config, device, said):
    from trainer.runs import records
    from trainer.sweeps import results
    assert records.precision_of({'config': config, 'device': device}) == said
    assert 'precision' in results.COLUMNS


# --- predict warns about images unlike the training ones -------------------------------

def digit_png(path, size, inverted):
    """A digits-like image: a bright stroke on black, or (inverted) dark on white."""
    from PIL import Image
    image = np.zeros((size, size), np.uint8)
    image[size // 4:3 * size // 4, size // 2 - max(1, size // 8):size // 2 + max(1, size // 8)] = 255
    Image.fromarray(255 - image if inverted else image).save(path)


def test_predict_warns_once_per_file_about_size_and_brightness(trained, tmp_path, capsys):
    import predict
    root, args, _ = trained
    digit_png(tmp_path / 'like.png', 8, False)
    digit_png(tmp_path / 'large.png', 28, False)
    digit_png(tmp_path / 'inverted.png', 8, True)
    assert predict.main([*args, f'run_name={NAME}', str(tmp_path)]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith('warning:')]
    assert len(warnings) == 2 and len(captured.out.splitlines()) == 3
    large, = [w for w in warnings if 'large.png' in w]
    assert '28x28 pixels, shrunk to the 8x8 of the training images' in large and 'brighter' not in large
    inverted, = [w for w in warnings if 'inverted.png' in w]
    assert 'brighter than the training images' in inverted and 'a light background where theirs is dark' in inverted


def test_unlike_training_against_the_data_description():
    from trainer.after_training import inference
    description = {'image_shape': [28, 28, 1], 'pixel_max': 255, 'mean': [33.3], 'std': [78.6]}
    dark_digit = np.zeros((28, 28, 1), np.float32)
    dark_digit[8:20, 12:16] = 255.0
    assert inference.unlike_training((28, 28), dark_digit, description) == ''
    assert 'darker' not in inference.unlike_training((40, 40), dark_digit, description)  # 1.4x: near enough
    assert 'enlarged to the 28x28' in inference.unlike_training((10, 10), dark_digit, description)
    assert 'brighter' in inference.unlike_training((28, 28), 255 - dark_digit, description)
