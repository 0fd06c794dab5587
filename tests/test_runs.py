"""Runs are never lost: checkpoints found wherever the run lies, no gap after a
crash, one process per run, earlier runs kept (trainer/runs/,
trainer/runs/checkpoints.py)."""
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

import experiments
import main
from tests.test_main import PROJECT_DIR, read_until, run_main, start_main
from trainer.config import settings
from trainer.runs import checkpoints, folder, records, weights

v1 = tf.compat.v1
RUN = ('digits', 'save_dir', 'runs', 'custom_model_relu')


def train(root, *args):
    """main.py's training in this process (no TensorFlow start-up per run)."""
    return main.main([f'datasets_root={root}', 'log_every=100000', *args])


def epochs_in(run_dir):
    return [e['epoch'] for e in json.loads((run_dir / 'history.json').read_text())['epochs']]


def names(run_dir):
    return sorted(c.name for c in checkpoints.found(str(run_dir)))


# --- the checkpoints of a folder -------------------------------------------------------

def touch_checkpoint(directory, name, record=True):
    for suffix in ('.index', '.data-00000-of-00001', '.meta'):
        (directory / f'{name}{suffix}').write_text('x')
    if record:
        (directory / f'{name}.history.json').write_text(json.dumps({'epochs': []}))


def test_checkpoints_are_what_the_folder_holds_in_run_order(tmp_path):
    for name in ('model.ckpt-1', 'model.ckpt-10', 'model.ckpt-2', 'model.ckpt-2-300img'):
        touch_checkpoint(tmp_path, name)
    (tmp_path / 'model.ckpt-3.index').write_text('x')  # no data file: not complete
    found = checkpoints.found(str(tmp_path))
    assert [(c.epochs, c.images) for c in found] == [(1, 0), (2, 0), (2, 300), (10, 0)]


def test_retaining_keeps_the_newest_and_removes_what_a_killed_process_left(tmp_path):
    for name in ('model.ckpt-1', 'model.ckpt-2', 'model.ckpt-2-700img', 'model.ckpt-3'):
        touch_checkpoint(tmp_path, name)
    (tmp_path / 'model.ckpt-4.history.json').write_text('{}')  # killed before its checkpoint
    (tmp_path / 'model.ckpt-4_temp').mkdir()  # killed while TensorFlow wrote it
    (tmp_path / 'model.ckpt-4_temp' / 'part-00000-of-00001.data-00000-of-00001').write_text('x')
    (tmp_path / 'history.json').write_text('{}')
    kept = checkpoints.retain(str(tmp_path), checkpoints.found(str(tmp_path))[-2:])
    assert [c.name for c in kept] == ['model.ckpt-2-700img', 'model.ckpt-3']
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ['checkpoint', 'history.json'] + [f'{n}{s}' for n in ('model.ckpt-2-700img', 'model.ckpt-3')
                                          for s in ('.index', '.data-00000-of-00001', '.meta',
                                                    '.history.json')])
    state = tf.train.get_checkpoint_state(str(tmp_path))
    assert list(state.all_model_checkpoint_paths) == [str(tmp_path / 'model.ckpt-2-700img'),
                                                      str(tmp_path / 'model.ckpt-3')]
    assert 'tmp' not in (tmp_path / 'checkpoint').read_text()  # relative: the run may move


def test_a_checkpoint_restores_from_where_the_run_was_moved_or_copied(tmp_path):
    with tf.Graph().as_default():
        weight = v1.get_variable('w', initializer=tf.constant([1.0, 2.0]))
        saver = v1.train.Saver(max_to_keep=None, save_relative_paths=True)
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            first = tmp_path / 'first'
            first.mkdir()
            checkpoints.save(session, saver, str(first), 1, 0, {'epochs': [{'epoch': 1}]})
            checkpoints.retain(str(first), checkpoints.found(str(first))[-2:])
            shutil.copytree(first, tmp_path / 'copy')
            os.replace(first, tmp_path / 'moved')
            for folder in ('copy', 'moved'):
                session.run(weight.assign([0.0, 0.0]))
                restored = weights.restore_newest_readable(session, saver, str(tmp_path / folder))
                assert restored.prefix == str(tmp_path / folder / 'model.ckpt-1')
                assert session.run(weight).tolist() == [1.0, 2.0]
                assert restored.record() == {'epochs': [{'epoch': 1}]}


def record(*epochs, **extra):
    return {'epochs': [{'epoch': e} for e in epochs], **extra}


TESTED = {'epoch': 2, 'loss': 0.1, 'accuracy': 0.9}  # a record's test figures


@pytest.mark.parametrize('written, expected', [
    (None, record(1, 2)),  # history.json missing
    ('{"epochs": [', record(1, 2)),  # damaged
    ('{}', record(1, 2)),  # not a history
    (json.dumps(record(1)), record(1, 2)),  # behind: killed between checkpoint and history
    (json.dumps(record(1, 2, test=TESTED)), record(1, 2, test=TESTED)),  # agrees
])
def test_the_saved_record_is_the_newest_checkpoints_unless_history_json_agrees(tmp_path, written,
                                                                             expected):
    touch_checkpoint(tmp_path, 'model.ckpt-1', record=False)
    (tmp_path / 'model.ckpt-1.history.json').write_text(json.dumps(record(1)))
    touch_checkpoint(tmp_path, 'model.ckpt-2', record=False)
    (tmp_path / 'model.ckpt-2.history.json').write_text(json.dumps(record(1, 2)))
    if written is not None:
        (tmp_path / 'history.json').write_text(written)
    assert records.saved_record(str(tmp_path)) == expected


def test_a_damaged_history_without_checkpoint_records_is_one_clear_error(tmp_path):
    (tmp_path / 'history.json').write_text('{"epochs": [')
    with pytest.raises(records.DataError, match='history.json is not readable'):
        records.saved_record(str(tmp_path))


# --- one process per run ----------------------------------------------------------------

HOLD_LOCK = """
import sys, time
sys.path.insert(0, {project!r})
from trainer.runs import folder
with folder.Lock(folder.Run({{}}, 'shared', {{}}, {run!r})):
    print('locked', flush=True)
    time.sleep(600)
"""


def test_a_run_in_use_is_refused_naming_who_holds_it_and_freed_when_that_process_dies(tmp_path):
    run = folder.Run({}, 'shared', {}, str(tmp_path / 'runs' / 'shared'))
    holder = subprocess.Popen([sys.executable, '-c', HOLD_LOCK.format(project=PROJECT_DIR,
                                                                     run=run.directory)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        with pytest.raises(folder.RunInUse, match=rf'run shared is in use by process {holder.pid} on '):
            with folder.Lock(run):
                pass
    finally:
        holder.kill()  # as kill -9: no clean-up runs
        holder.wait()
    with folder.Lock(run):  # the system released the dead process's lock
        pass


# --- fresh starts keep earlier runs -----------------------------------------------------

def test_a_fresh_start_keeps_the_earlier_run_with_its_plot_and_filters(tmp_path, capsys):
    cfg = settings.load_config([f'datasets_root={tmp_path}', 'keep_earlier_runs=2'])
    run = folder.locate(cfg)
    plot = tmp_path / 'digits' / 'save_dir' / 'plot_training' / f'{run.name}.pdf'
    said = []
    for i in range(4):
        os.makedirs(run.directory)
        touch_checkpoint(tmp_path.joinpath(*RUN), 'model.ckpt-1')  # a trained run: one without is not kept
        (tmp_path.joinpath(*RUN) / 'history.json').write_text(str(i))
        plot.parent.mkdir(parents=True, exist_ok=True)
        plot.write_text(f'plot {i}')
        folder.set_aside(run)
        said.append(capsys.readouterr().out)
    earlier = sorted(tmp_path.joinpath(*RUN).parent.glob('custom_model_relu.earlier-*'))
    assert sorted((e / 'history.json').read_text() for e in earlier) == ['2', '3']
    assert sorted((e / 'plot.pdf').read_text() for e in earlier) == ['plot 2', 'plot 3']
    assert not plot.exists()
    assert re.match(r'The earlier run custom_model_relu is kept in \S+custom_model_relu\.earlier-\d{8}-\d{6}',
                    said[0])
    assert 'Removed the oldest earlier run custom_model_relu.earlier-' in said[2]


def test_a_sweep_leaves_a_run_with_more_epochs_than_asked_as_it_is(tmp_path, capsys):
    """python main.py max_epochs=3, then a sweep of 2 epochs on the same
    configuration: the run is complete, not started again."""
    assert train(tmp_path, 'max_epochs=3') == 0
    cfg = dict(settings.load_config([f'datasets_root={tmp_path}', 'max_epochs=2', 'log_every=100000']),
               run_name='custom_model_relu')
    assert experiments.run_all([cfg]) == 0
    assert 'custom_model_relu: complete, skipped' in capsys.readouterr().out
    assert epochs_in(tmp_path.joinpath(*RUN)) == [1, 2, 3]
    assert not list(tmp_path.joinpath(*RUN).parent.glob('*.earlier-*'))


# --- end to end: a run through moves, resumes, damage and crashes -------------------------------

def test_a_run_resumes_where_it_was_moved_falls_back_past_damage_and_keeps_no_gap(tmp_path, capsys):
    first, moved = tmp_path / 'first', tmp_path / 'moved'
    assert train(first, 'max_epochs=2') == 0
    os.replace(first, moved)
    run = moved.joinpath(*RUN)
    assert train(moved, 'max_epochs=3', 'resume=True') == 0
    assert f'Resuming from {run}/model.ckpt-2: 2 epoch(s) done' in capsys.readouterr().out
    assert train(moved, 'max_epochs=4', 'resume=True', 'keep_checkpoints=3') == 0
    assert names(run) == ['model.ckpt-2', 'model.ckpt-3', 'model.ckpt-4']  # kept across resumes
    assert len(list((run / 'best').glob('*.index'))) >= 1
    # killed between checkpoint 4 and history.json, which then even got damaged;
    # and checkpoint 4 itself is cut short
    (run / 'history.json').write_text('{"epochs": [')
    data, = run.glob('model.ckpt-4.data-*')
    data.write_bytes(data.read_bytes()[:100])
    capsys.readouterr()
    assert train(moved, 'max_epochs=5', 'resume=True', 'keep_checkpoints=3') == 0
    out, err = capsys.readouterr()
    assert 'model.ckpt-4 is unreadable' in err
    assert f'Resuming from {run}/model.ckpt-3: 3 epoch(s) done' in out
    assert epochs_in(run) == [1, 2, 3, 4, 5]
    assert names(run) == ['model.ckpt-3', 'model.ckpt-4', 'model.ckpt-5']
    record_5 = checkpoints.found(str(run))[-1].record()
    assert [e['epoch'] for e in record_5['epochs']] == [1, 2, 3, 4, 5]
    assert json.loads((run / 'history.json').read_text())['epochs'] == record_5['epochs']
    best = (run / json.loads((run / 'history.json').read_text())['best']['checkpoint'])
    assert best.with_name(best.name + '.index').is_file()


def test_resume_with_no_readable_checkpoint_stops_and_moves_nothing(tmp_path, capsys):
    assert train(tmp_path, 'max_epochs=1') == 0
    run = tmp_path.joinpath(*RUN)
    data, = run.glob('model.ckpt-1.data-*')
    data.write_bytes(b'')
    capsys.readouterr()
    assert train(tmp_path, 'max_epochs=2', 'resume=True') == 2
    err = capsys.readouterr().err
    assert f'error: no checkpoint of {run} can be read (model.ckpt-1)' in err
    assert sorted(p.name for p in run.parent.iterdir()) == ['.custom_model_relu.lock', run.name]
    assert epochs_in(run) == [1]


def test_a_run_resumes_in_the_other_precision_both_ways(tmp_path, capsys):
    """mixed_precision='auto' decides by the machine, so a run may resume in
    the other precision (a new default, a checkpoint carried between a GPU
    and a CPU): the weights are float32 in both, only the loss scale differs."""
    run = tmp_path.joinpath(*RUN)
    assert train(tmp_path, 'max_epochs=1', 'mixed_precision=False') == 0
    capsys.readouterr()
    assert train(tmp_path, 'max_epochs=2', 'resume=True', 'mixed_precision=True') == 0
    out = capsys.readouterr().out
    assert f'Resuming from {run}/model.ckpt-1: 1 epoch(s) done' in out
    assert 'precision: bfloat16' in out or 'precision: float16' in out
    assert train(tmp_path, 'max_epochs=3', 'resume=True', 'mixed_precision=False') == 0
    assert f'Resuming from {run}/model.ckpt-2: 2 epoch(s) done' in capsys.readouterr().out
    assert epochs_in(run) == [1, 2, 3]


def saved_weights(path, optimizer):
    """A checkpoint of w = [1, 2] with `optimizer`'s variables; the graph's global step op."""
    with tf.Graph().as_default():
        weight = v1.get_variable('w', initializer=tf.constant([1.0, 2.0]))
        step = optimizer().minimize(tf.reduce_sum(weight * weight))
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            session.run(step)
            return session.run(weight), v1.train.Saver().save(session, str(path))


def adam():
    return v1.train.AdamOptimizer(0.1)


def loss_scaled_adam():
    return v1.mixed_precision.MixedPrecisionLossScaleOptimizer(adam(), 'dynamic')


@pytest.mark.parametrize('written, restored', [(adam, loss_scaled_adam), (loss_scaled_adam, adam)])
def test_restore_takes_a_checkpoint_of_the_other_precision(tmp_path, written, restored):
    weight_then, prefix = saved_weights(tmp_path / 'model.ckpt', written)
    with tf.Graph().as_default():
        weight = v1.get_variable('w', initializer=tf.constant([0.0, 0.0]))
        restored().minimize(tf.reduce_sum(weight * weight))
        with v1.Session() as session:
            weights.restore(session, v1.train.Saver(), prefix)
            np.testing.assert_array_equal(session.run(weight), weight_then)
            scales = [v for v in v1.global_variables() if v.op.name == 'current_loss_scale']
            if restored is loss_scaled_adam:  # started afresh: dynamic scaling's first scale
                assert session.run(scales[0]) == 2.0 ** 15


def test_restore_still_fails_on_a_missing_weight(tmp_path):
    _, prefix = saved_weights(tmp_path / 'model.ckpt', adam)
    with tf.Graph().as_default():
        other = v1.get_variable('v', initializer=tf.constant([0.0, 0.0]))
        loss_scaled_adam().minimize(tf.reduce_sum(other * other))
        with v1.Session() as session, pytest.raises(tf.errors.NotFoundError):
            weights.restore(session, v1.train.Saver(), prefix)


def test_the_best_checkpoint_restores_or_is_a_warning_saying_what_goes_without_it(tmp_path, capsys):
    with tf.Graph().as_default():
        weight = v1.get_variable('w', initializer=tf.constant([1.0, 2.0]))
        with v1.Session() as session:
            session.run(weight.initializer)
            saver = v1.train.Saver()
            saver.save(session, str(tmp_path / 'best' / 'model.ckpt-1'), write_state=False)
            session.run(weight.assign([0.0, 0.0]))
            run = types.SimpleNamespace(directory=str(tmp_path), session=session,
                                        built=types.SimpleNamespace(best_saver=saver),
                                        record={'best': {'checkpoint': 'best/model.ckpt-1'}})
            assert weights.restore_best(run, 'no test figure for it')
            np.testing.assert_array_equal(session.run(weight), [1.0, 2.0])
            run.record['best']['checkpoint'] = 'best/model.ckpt-2'  # never written
            assert not weights.restore_best(run, 'no test figure for it')
    err = capsys.readouterr().err
    assert err.startswith(f"warning: the best epoch's checkpoint {tmp_path}/best/model.ckpt-2 is "
                          f"unreadable (")
    assert err.rstrip().endswith('); no test figure for it')


def test_a_second_process_on_a_run_in_use_is_refused(tmp_path):
    process = start_main(tmp_path, 'run_name=shared', 'batch_size=1', 'log_every=100', 'max_epochs=30')
    try:
        read_until(process, r'^epoch 1, step 100 / 1437')
        second = run_main(tmp_path, 'run_name=shared', 'max_epochs=3', 'model=resnet50')
        assert second.returncode == 2, second.stderr
        assert second.stderr.startswith(f'error: run shared is in use by process {process.pid} on ')
        assert 'main.py datasets_root=' in second.stderr and 'run_name=shared batch_size=1' in second.stderr
        read_until(process, r'^epoch 1, step 200 / 1437')  # the first goes on
    finally:
        process.kill()
        process.wait()


def read_lines(process, count):
    """Up to `count` more lines of the process's stdout (fewer if it ends)."""
    return [line for line, _ in zip(process.stdout, range(count))]


def test_kill_9_at_random_moments_leaves_no_gap(tmp_path):
    """Killed three times at random moments (mid-epoch, mid-evaluation, while
    writing), resumed each time: the history holds every epoch once and the
    test loss equals that of an uninterrupted run."""
    args = ('max_epochs=6', 'batch_size=10', 'log_every=200')
    rng = np.random.default_rng(7)
    for _ in range(3):
        process = start_main(tmp_path, *args, 'resume=True')
        try:
            read_lines(process, int(rng.integers(4, 20)))
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
    result = run_main(tmp_path, *args, 'resume=True')
    assert result.returncode == 0, result.stderr
    run = tmp_path.joinpath('datasets', *RUN)
    assert epochs_in(run) == [1, 2, 3, 4, 5, 6]
    interrupted = json.loads((run / 'history.json').read_text())['test']['loss']
    alone = tmp_path / 'alone'
    assert train(alone, *args) == 0
    uninterrupted = json.loads(alone.joinpath(*RUN, 'history.json').read_text())['test']['loss']
    assert interrupted == pytest.approx(uninterrupted, rel=1e-5)


# --- a full disk ----------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs: room for about two digits checkpoints (1.4 MB each with
    Adam's slots, one of them the best epoch's); skipped where this process
    may not mount."""
    mount = tmp_path / 'disk'
    mount.mkdir()
    result = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', str(mount)],
                            capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f'cannot mount a small tmpfs here: {result.stderr.strip()}')
    try:
        yield mount
    finally:
        subprocess.run(['umount', '-l', str(mount)])


def test_a_full_disk_is_one_line_and_the_run_resumes_without_a_gap(small_disk):
    result = run_main(small_disk, 'max_epochs=4', 'log_every=100000')
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'error: the disk of {small_disk}/datasets/'), lines
    assert 'is full' in lines[0] and 'resume=True' in lines[0]
    run = small_disk.joinpath('datasets', *RUN)
    done = epochs_in(run) if (run / 'history.json').exists() else []
    assert done == list(range(1, len(done) + 1))  # complete epochs only
    assert not [p for p in run.rglob('*') if '_temp' in p.name or '.partial' in p.name]
    with contextlib.suppress(OSError), open(small_disk / 'filler', 'wb') as f:  # not a byte left
        while True:
            f.write(bytes(1 << 16))
            f.flush()
    again = run_main(small_disk, 'max_epochs=4', 'log_every=100000', 'resume=True')  # a resume on the full disk
    assert again.returncode == 2, again.stderr
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and 'is full' in lines[0] and 'Traceback' not in again.stderr, lines
    assert (epochs_in(run) if (run / 'history.json').exists() else []) == done  # nothing of the run lost
    assert not [p for p in run.rglob('*') if '_temp' in p.name or '.partial' in p.name]
    sweep = subprocess.run([sys.executable, os.path.join(PROJECT_DIR, 'experiments.py'),
                            f'datasets_root={small_disk / "datasets"}', 'experiment_grid=se', 'max_epochs=4'],
                           cwd=small_disk, capture_output=True, text=True, timeout=300)
    lines = sweep.stderr.strip().splitlines()
    assert sweep.returncode == 2 and len(lines) == 1, sweep.stderr  # its tables cannot be written either
    assert lines[0].startswith(f'error: the disk of {small_disk}/datasets/digits/save_dir/') and 'is full' in lines[0]
    (small_disk / 'filler').unlink()
    subprocess.run(['mount', '-o', 'remount,size=64m', str(small_disk)], check=True)
    result = run_main(small_disk, 'max_epochs=4', 'log_every=100000', 'resume=True')
    assert result.returncode == 0, result.stderr
    assert epochs_in(run) == [1, 2, 3, 4]
