"""End to end: `python main.py` on digits, as a user runs it."""
import csv
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from foundation import machine
from foundation.data import loaders
from foundation.data.input_pipeline import ArrayInput
from foundation.errors import DataError
from Model import Model
from trainer.config import settings
from trainer.training import passes, training_graph

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRESS = re.compile(r'^epoch (\d+), step (\d+) / (\d+), loss = \d+\.\d\d \(\d+\.\d{3} sec/batch\), '
                      r'mean loss (\d+\.\d{3}), (ETA|epoch trained in) \d+:\d\d:\d\d$')
TRAIN = re.compile(r'^Train error: epoch (\d+) loss=\d+\.\d{4} accuracy=(\d\.\d{4})$')
VALID = re.compile(r'^Validation error: epoch (\d+) loss=\d+\.\d{4} accuracy=(\d\.\d{4})$')


def run_main(root, *args, log_level=None):
    """Runs main.py in a clean environment: no TF_CPP_MIN_LOG_LEVEL of ours,
    or the user's `log_level`."""
    env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
    env.update({'TF_CPP_MIN_LOG_LEVEL': log_level} if log_level else {})
    return subprocess.run(
        [sys.executable, os.path.join(PROJECT_DIR, 'main.py'), f'datasets_root={root / "datasets"}', *args],
        cwd=root, env=env, capture_output=True, text=True, timeout=300)


def epochs_reported(stdout):
    return [int(m.group(1)) for m in map(TRAIN.match, stdout.splitlines()) if m]


@pytest.fixture(scope='module')
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp('run')
    # TF_CPP_MIN_LOG_LEVEL=1, common in TF users' shells, must not bring TF's start-up notices
    result = run_main(root, 'max_epochs=2', 'log_every=300', log_level='1')
    return root, result


def test_trains_and_prints_the_seed_console_format(first_run):
    root, result = first_run
    assert result.returncode == 0, result.stderr
    assert result.stderr == ''  # no TensorFlow start-up noise on a CPU-only machine
    lines = result.stdout.splitlines()
    assert lines[0] == 'Building custom_model (relu) for digits (8x8x1 images, 10 classes) on ' \
                       f'CPU ({machine.cpu_name()}, {os.cpu_count()} cores)'
    assert len([line for line in lines if line.startswith('precision: ')]) == 1
    progress = [PROGRESS.match(line) for line in lines if line.startswith('epoch ')]
    assert all(progress), lines
    # every 300 images, and after the last batch
    assert [(int(m.group(1)), int(m.group(2))) for m in progress] == \
        [(e, s) for e in (1, 2) for s in (300, 600, 900, 1200, 1437)]
    assert all(m.group(3) == '1437' for m in progress)
    assert [m.group(5) for m in progress[:5]] == ['ETA'] * 4 + ['epoch trained in']
    stats = [i for i, line in enumerate(lines) if line == 'EPOCH STATISTICS :']
    assert len(stats) == 2
    for epoch, i in zip((1, 2), stats):
        assert lines[i - 1].startswith(f'epoch {epoch}, step 1437 / 1437,')
        assert TRAIN.match(lines[i + 1]).group(1) == str(epoch)
        assert VALID.match(lines[i + 2]).group(1) == str(epoch)
        assert re.match(r'^Total epoch time training: \d+\.\d$', lines[i + 3])
        assert lines[i + 4] == 'Plotting in: datasets/digits/save_dir/plot_training/custom_model_relu.pdf'
    record = json.loads((root / 'datasets/digits/save_dir/runs/custom_model_relu/history.json').read_text())
    # the training pass alone, not the evaluation after it
    assert [line.split(': ')[1] for line in lines if line.startswith('Total epoch time')] == \
        [f"{row['train_seconds']:.1f}" for row in record['epochs']]
    # two epochs of the default model learn digits well beyond chance (10 %)
    assert float(VALID.match([line for line in lines if line.startswith('Validation')][-1]).group(2)) > 0.8
    assert re.search(r'^Test error: loss=\d+\.\d{4} accuracy=\d\.\d{4}$', result.stdout, re.M)


def test_writes_plot_filters_history_checkpoint_and_events(first_run):
    root, _ = first_run
    save = root / 'datasets' / 'digits' / 'save_dir'
    pdf = save / 'plot_training' / 'custom_model_relu.pdf'
    assert pdf.read_bytes().startswith(b'%PDF')
    filters = sorted(os.listdir(save / 'filters' / 'custom_model_relu'))
    assert filters == ['change_from_start'] + ['filter_%02d.png' % i for i in range(16)] + ['filters.png']
    run = save / 'runs' / 'custom_model_relu'
    record = json.loads((run / 'history.json').read_text())
    assert [e['epoch'] for e in record['epochs']] == [1, 2]
    assert 0.0 <= record['test']['accuracy'] <= 1.0
    with open(run / 'history.csv') as f:
        rows = list(csv.DictReader(f))
    assert [r['epoch'] for r in rows] == ['1', '2']
    assert float(rows[1]['valid_accuracy']) == pytest.approx(record['epochs'][1]['valid_accuracy'])
    tested = {int(r['epoch']): float(r['test_accuracy']) for r in rows if r['test_accuracy']}
    expected = {2: record['test']['accuracy'], record['best']['epoch']: record['best']['test_accuracy']}
    assert tested == pytest.approx(expected)
    assert (run / 'model.ckpt-2.index').is_file()
    assert 'model.ckpt-2' in (run / 'checkpoint').read_text()
    assert any(name.startswith('events.out.tfevents') for name in os.listdir(run))
    assert not [p for p in root.rglob('*') if '.partial' in p.name]


def test_keeps_the_best_validation_epoch_and_tests_it(first_run):
    root, result = first_run
    run = root / 'datasets' / 'digits' / 'save_dir' / 'runs' / 'custom_model_relu'
    record = json.loads((run / 'history.json').read_text())
    best = max(record['epochs'], key=lambda e: (e['valid_accuracy'], -e['valid_loss']))
    assert record['best']['epoch'] == best['epoch']
    assert record['best']['valid_accuracy'] == best['valid_accuracy']
    assert (run / 'best' / f"model.ckpt-{best['epoch']}.index").is_file()
    line = re.search(r'^Test error of the best validation epoch \((\d)\): loss=(\d+\.\d{4}) '
                     r'accuracy=(\d\.\d{4})$', result.stdout, re.M)
    assert line and int(line.group(1)) == best['epoch']
    assert float(line.group(3)) == pytest.approx(record['best']['test_accuracy'], abs=5e-5)
    assert record['device'] == f'CPU ({machine.cpu_name()}, {os.cpu_count()} cores)'


def test_tensorboard_loads_the_per_epoch_scalars_and_the_test_result(first_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    root, _ = first_run
    run = root / 'datasets' / 'digits' / 'save_dir' / 'runs' / 'custom_model_relu'
    events = EventAccumulator(str(run))
    events.Reload()
    record = json.loads((run / 'history.json').read_text())
    for tag in ('valid_accuracy', 'train_loss', 'learning_rate'):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [1, 2]
        assert [s.value for s in scalars] == pytest.approx([e[tag] for e in record['epochs']])
    for tag, value in (('test_accuracy', record['test']['accuracy']),
                       ('best_epoch_test_accuracy', record['best']['test_accuracy'])):
        assert [(s.step, s.value) for s in events.Scalars(tag)] == [(2, pytest.approx(value))]


def test_the_end_of_a_run_says_where_its_files_are(first_run, monkeypatch):
    root, result = first_run
    tail = result.stdout.splitlines()[-9:]
    assert re.match(r'^Run custom_model_relu done: 2 epoch\(s\), \d+:\d\d:\d\d of training and '
                    r'evaluation in all; this process took \d+:\d\d:\d\d$', tail[0])
    shown = dict(re.match(r'^  (\w[\w ]*?): +(.*)$', line).groups() for line in tail[1:])
    monkeypatch.chdir(root)  # the paths are shown relative to where main.py ran
    assert os.path.isfile(shown['checkpoint'] + '.index')
    assert os.path.isfile(shown['best epoch'].split(': ')[1] + '.index')
    assert os.path.isfile(shown['history'].split(',')[0]) and os.path.isfile(shown['plot'])
    assert os.path.isdir(shown['filters'])
    folder, held = shown['evaluation'].split(': ')
    assert held == 'test-best' and os.path.isfile(os.path.join(folder, held, 'confusion.csv'))
    assert shown['TensorBoard'] == 'tensorboard --logdir datasets/digits/save_dir/runs'
    size = re.match(r'^([\d.]+) (kB|MB) in its folder, of which [\d.]+ (kB|MB) in 2 checkpoint\(s\) '
                    r'\(keep_checkpoints=2\) and [\d.]+ (kB|MB) for the best epoch$', shown['disk'])
    assert size, shown['disk']
    run_dir = root / 'datasets' / 'digits' / 'save_dir' / 'runs' / 'custom_model_relu'
    on_disk = sum(p.stat().st_size for p in run_dir.rglob('*') if p.is_file())
    assert abs(float(size[1]) * {'kB': 1e3, 'MB': 1e6}[size[2]] - on_disk) < 0.06 * on_disk


def test_resume_continues_from_the_last_epoch(first_run):
    root, _ = first_run
    result = run_main(root, 'max_epochs=3', 'resume=True')
    assert result.returncode == 0, result.stderr
    assert 'Resuming from' in result.stdout and '2 epoch(s) done' in result.stdout
    assert epochs_reported(result.stdout) == [3]
    run = root / 'datasets' / 'digits' / 'save_dir' / 'runs' / 'custom_model_relu'
    record = json.loads((run / 'history.json').read_text())
    assert [e['epoch'] for e in record['epochs']] == [1, 2, 3]
    # the learning rate continues to decay from where it was, not from step 0
    assert record['epochs'][2]['learning_rate'] < record['epochs'][1]['learning_rate']
    assert (run / 'model.ckpt-3.index').is_file()


def test_divergence_stops_at_once_and_keeps_the_last_good_checkpoint(tmp_path):
    assert run_main(tmp_path, 'max_epochs=1').returncode == 0
    run = tmp_path / 'datasets' / 'digits' / 'save_dir' / 'runs' / 'custom_model_relu'
    result = run_main(tmp_path, 'max_epochs=3', 'resume=True', 'learning_rate=1e30')
    assert result.returncode == 1
    message = re.search(r'loss became (nan|inf) at epoch (\d+), step (\d+)', result.stderr)
    assert message and message.group(2) == '2', result.stderr
    assert 'model.ckpt-1' in result.stderr
    assert 'model.ckpt-1' in (run / 'checkpoint').read_text()
    assert not (run / 'model.ckpt-2.index').exists()
    assert (tmp_path / 'datasets' / 'digits' / 'save_dir' / 'plot_training' / 'custom_model_relu.pdf').is_file()
    record = json.loads((run / 'history.json').read_text())
    assert [e['epoch'] for e in record['epochs']] == [1]
    assert record['diverged'].startswith('loss became')  # a sweep shows it in its table


@pytest.mark.parametrize('arg, expected', [
    ('modle=resnet50', "unknown key 'modle' (did you mean 'model'?)"),
    ('output_shape=12', 'output_shape=12 but digits has 10 classes'),
    ('batch_size=2000', 'batch_size=2000 is larger than the training split (1437 images)'),
])
def test_bad_config_is_one_clear_line_before_any_graph(tmp_path, arg, expected):
    result = run_main(tmp_path, arg)
    assert result.returncode == 2
    assert result.stdout == ''
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and expected in lines[0], result.stderr
    assert not (tmp_path / 'datasets').exists()


@pytest.mark.parametrize('options', [
    {'gpu_memory_growth': False, 'gpu_memory_fraction': 0.5},
    {'gpu_memory_growth': True, 'gpu_memory_fraction': None, 'log_device_placement': True},
    {'device': '/device:CPU:0'},
])
def test_gpu_options_fall_back_cleanly_on_a_cpu_only_machine(options):
    cfg = dict(settings.load_config([]), **options)
    data = loaders.load_digits(None, 0, False)
    graph, source, model, *_ = training_graph.build_graph(cfg, data)
    with graph.as_default(), tf.compat.v1.Session(config=training_graph.session_config(machine.decide(cfg))) as session:
        session.run(tf.compat.v1.global_variables_initializer())
        source.start(session, 'train', training=True, seed=0)
        _, loss = session.run([model.train_op, model.loss], {model.is_training: True})
        assert loss > 0 and session.run(model.global_step) == 1
        # the graph asks for the configured device where the machine has it, else the CPU
        requested = tf.DeviceSpec.from_string(machine.placement(cfg['device']))
        assert requested.device_type == ('GPU' if machine.gpu_found(cfg['device']) else 'CPU')
        assert tf.DeviceSpec.from_string(model.logits.device).device_type == requested.device_type


def test_resume_with_another_network_is_refused_naming_the_keys(tmp_path):
    assert run_main(tmp_path, 'max_epochs=1', 'use_se=True', 'se_r=16').returncode == 0
    result = run_main(tmp_path, 'max_epochs=2', 'use_se=True', 'se_r=8', 'resume=True')
    assert result.returncode == 2
    assert "se_r: 16 in the checkpoint, 8 now" in result.stderr
    run = tmp_path / 'datasets' / 'digits' / 'save_dir' / 'runs' / 'custom_model_se_relu'
    assert [e['epoch'] for e in json.loads((run / 'history.json').read_text())['epochs']] == [1]


def test_corrupt_checkpoint_falls_back_to_the_one_before(tmp_path):
    assert run_main(tmp_path, 'max_epochs=2').returncode == 0
    run = tmp_path / 'datasets' / 'digits' / 'save_dir' / 'runs' / 'custom_model_relu'
    data = run / 'model.ckpt-2.data-00000-of-00001'
    data.write_bytes(data.read_bytes()[:100])
    result = run_main(tmp_path, 'max_epochs=3', 'resume=True')
    assert result.returncode == 0, result.stderr
    assert re.search(r'checkpoint \S+model\.ckpt-2 is unreadable', result.stderr)
    assert 'model.ckpt-1: 1 epoch(s) done' in result.stdout
    assert epochs_reported(result.stdout) == [2, 3]
    record = json.loads((run / 'history.json').read_text())
    assert [e['epoch'] for e in record['epochs']] == [1, 2, 3]


def test_unwritable_output_is_refused_before_training(tmp_path):
    blocker = tmp_path / 'not_a_folder'
    blocker.write_text('a file where the outputs should go')
    result = run_main(tmp_path, f'datasets_root={blocker}/under')  # the later value wins
    assert result.returncode == 2
    assert result.stderr.startswith(f'error: cannot write to {blocker}/under/digits/save_dir (Not a directory)')
    assert 'EPOCH' not in result.stdout and 'epoch 1' not in result.stdout
    result = run_main(tmp_path, f'datasets_root={blocker}')  # the file itself: said by the config check
    assert result.returncode == 2
    assert result.stderr == f'error: datasets_root={blocker} is a regular file, not a folder: give a folder\n'


def test_non_finite_weights_are_detected(graph):
    model = Model.from_config(settings.load_config([]), (8, 8, 1))
    with tf.compat.v1.Session(graph=graph) as session:
        session.run(tf.compat.v1.global_variables_initializer())
        assert session.run(model.weights_finite)
        kernel = model.trainable_variables('head')[0]
        session.run(kernel[0, 0].assign(float('nan')))
        assert not session.run(model.weights_finite)


def start_main(root, *args):
    env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
    return subprocess.Popen(
        [sys.executable, os.path.join(PROJECT_DIR, 'main.py'), f'datasets_root={root / "datasets"}',
         *args], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_until(process, pattern):
    """stdout lines up to and including the first that matches `pattern`."""
    lines = []
    for line in process.stdout:
        lines.append(line.rstrip('\n'))
        if re.match(pattern, lines[-1]):
            return lines
    raise AssertionError(f'{pattern!r} never printed: {lines}')


# One image per step: an epoch of digits lasts seconds, long enough to stop it mid-way.
SLOW = ('batch_size=1', 'log_every=100', 'max_epochs=2')


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_the_current_state_and_resume_finishes_the_same_epochs(tmp_path, signum):
    process = start_main(tmp_path, *SLOW)
    try:
        read_until(process, r'^epoch 1, step 300 / 1437')
        process.send_signal(signum)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + signum, err
    stopped = re.search(r'Interrupted \(stopped by SIG\w+\) at epoch 1, step (\d+): saved (\S+);', err)
    assert stopped, err
    assert 'Traceback' not in err and 'EPOCH STATISTICS' not in out
    images = int(stopped.group(1))
    run = tmp_path / 'datasets' / 'digits' / 'save_dir' / 'runs' / 'custom_model_relu'
    assert os.path.isfile(stopped.group(2) + '.index')

    result = run_main(tmp_path, *SLOW, 'resume=True')
    assert result.returncode == 0, result.stderr
    assert f'0 epoch(s) done, {images} images into epoch 1' in result.stdout
    steps = [int(m.group(2)) for m in map(PROGRESS.match, result.stdout.splitlines()) if m]
    assert steps[0] == (images // 100 + 1) * 100 and steps[0] > 300  # continues, not from 0
    assert epochs_reported(result.stdout) == [1, 2]
    record = json.loads((run / 'history.json').read_text())
    assert [e['epoch'] for e in record['epochs']] == [1, 2]


def test_kill_9_loses_at_most_the_work_since_the_last_checkpoint(tmp_path):
    process = start_main(tmp_path, *SLOW)
    try:
        read_until(process, r'^Train error: epoch 1 ')
        read_until(process, r'^epoch 2, step 200 / 1437')
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
    run = tmp_path / 'datasets' / 'digits' / 'save_dir' / 'runs' / 'custom_model_relu'
    assert [e['epoch'] for e in json.loads((run / 'history.json').read_text())['epochs']] == [1]
    result = run_main(tmp_path, *SLOW, 'resume=True')
    assert result.returncode == 0, result.stderr
    assert '1 epoch(s) done' in result.stdout
    assert epochs_reported(result.stdout) == [2]
    record = json.loads((run / 'history.json').read_text())
    assert [e['epoch'] for e in record['epochs']] == [1, 2]


def test_evaluating_a_split_that_gives_no_images_is_a_clear_error():
    data = loaders.load_digits(None, 0, False)
    empty = loaders.Split(data.valid.images[:0], data.valid.labels[:0])
    data = dataclasses.replace(data, valid=empty)
    cfg = settings.load_config([])
    graph, source, model, *_ = training_graph.build_graph(cfg, data)
    with graph.as_default(), tf.compat.v1.Session(config=training_graph.session_config(machine.decide(cfg))) as session:
        session.run(tf.compat.v1.global_variables_initializer())
        with pytest.raises(DataError, match='the valid split gave no images'):
            passes.evaluate(session, model, source, 'valid')


def test_array_input_resumes_a_training_pass_in_the_same_order(graph, session):
    source = ArrayInput(loaders.load_digits(None, 0, False), 50, 250)

    def images(skip):
        source.start(session, 'train', training=True, seed=7, skip=skip)
        batches = []
        while True:
            try:
                batches.append(session.run(source.next_batch)[0])
            except tf.errors.OutOfRangeError:
                return np.concatenate(batches)
    full, rest = images(0), images(120)
    assert len(full) == 1437 and len(rest) == 1437 - 120
    np.testing.assert_array_equal(rest, full[120:])


# --- session options: mixed precision and XLA ---------------------------------------------

def device_cfg(**options):
    """The default config with its device options given, not decided by the machine."""
    return settings.load_config([f'{k}={v}' for k, v in options.items()])


def rewrites_and_jit(proto):
    from tensorflow.core.protobuf import rewriter_config_pb2
    rewrites = proto.graph_options.rewrite_options
    on = rewriter_config_pb2.RewriterConfig.ON
    return (rewrites.auto_mixed_precision_onednn_bfloat16 == on,
            rewrites.auto_mixed_precision == on,
            proto.graph_options.optimizer_options.global_jit_level)


def no_gpu_here():
    return not tf.config.list_physical_devices('GPU')


@pytest.mark.skipif('not no_gpu_here()', reason='a GPU takes float16, not bfloat16')
def test_session_config_mixed_precision_without_gpu_is_onednn_bfloat16():
    proto = training_graph.session_config(machine.decide(device_cfg(mixed_precision=True, xla=False)))
    bf16, fp16, _ = rewrites_and_jit(proto)
    assert bf16 and not fp16


def test_session_config_xla_turns_on_the_global_jit():
    devices = machine.decide(device_cfg(mixed_precision=False, xla=True))
    *_, jit = rewrites_and_jit(training_graph.session_config(devices))
    assert jit == tf.compat.v1.OptimizerOptions.ON_1


def test_session_config_without_mixed_precision_and_xla_sets_neither():
    bf16, fp16, jit = rewrites_and_jit(
        training_graph.session_config(machine.decide(device_cfg(mixed_precision=False, xla=False))))
    assert not bf16 and not fp16
    assert jit == tf.compat.v1.OptimizerOptions.DEFAULT


def loss_scale_variables(graph):
    return [v.op.name for v in graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)
            if 'loss_scale' in v.op.name]


def train_on_a_fixed_batch(cfg, steps):
    """The custom model on 4 digits-sized images, trained `steps` times on the same
    batch through a session made by training_graph.session_config: the losses, whether the
    weights are finite, and the loss-scale variables of the graph."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(4, 8, 8, 1)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[[0, 3, 7, 9]]
    with tf.Graph().as_default() as graph:
        tf.compat.v1.set_random_seed(0)
        model = Model.from_config(cfg, (8, 8, 1))
        with tf.compat.v1.Session(config=training_graph.session_config(machine.decide(cfg))) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            feed = {model.X: x, model.Yoh: y, model.is_training: True}
            losses = [session.run([model.train_op, model.loss], feed)[1] for _ in range(steps)]
            losses.append(session.run(model.loss, {model.X: x, model.Yoh: y}))
            finite = session.run(model.weights_finite)
    return losses, finite, loss_scale_variables(graph)


def test_mixed_precision_training_on_the_cpu_learns_a_fixed_batch_without_loss_scaling():
    cfg = device_cfg(mixed_precision=True, xla=False, model='custom_model', dataset_name='digits')
    losses, finite, scale_vars = train_on_a_fixed_batch(cfg, 30)
    assert scale_vars == []  # bfloat16 has float32's range: no MixedPrecisionLossScaleOptimizer
    assert finite and np.all(np.isfinite(losses))
    # 4 images and 30 steps: memorised, far below the untrained ~ln(10)
    assert losses[-1] < 0.1 * losses[0], losses


def test_float32_training_has_no_loss_scale():
    cfg = device_cfg(mixed_precision=False, xla=False, model='custom_model', dataset_name='digits')
    losses, finite, scale_vars = train_on_a_fixed_batch(cfg, 1)
    assert scale_vars == []
    assert finite


def test_xla_training_step_gives_a_finite_loss():
    cfg = device_cfg(mixed_precision=False, xla=True, model='custom_model', dataset_name='digits')
    losses, finite, _ = train_on_a_fixed_batch(cfg, 1)
    assert finite and np.all(np.isfinite(losses)) and losses[0] > 0
