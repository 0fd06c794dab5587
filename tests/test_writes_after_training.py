"""What evaluate.py, export.py and instruments.py write into a trained run's
folder: all of it or none, and a folder that cannot be written (read-only,
not the user's, a full disk) said in one line, exit status 2, the run left
as it was. A read-only mount is simulated in-process (the suite may run as
root, whom permissions do not stop): the writer's os.replace, tempfile's
mkstemp or TensorFlow's SavedModel builder raise what the system raises;
the errors the system itself gives are checked against the same mapping,
and the commands on a real read-only mount and a real full disk where this
process may mount them."""
import contextlib
import errno
import io
import os
import shutil
import subprocess

import pytest
import tensorflow as tf

import evaluate
import export
import instruments
from foundation import safe_io
from foundation.errors import NotWritableError, OutOfSpace
from tests.trained_runs import file_tree, train_digits
from trainer import console
from trainer.after_training import writes
from trainer.runs import disk, folder

v1 = tf.compat.v1
RUN = 'custom_model_se_relu'
ADVICE = f'copy the run to a disk you can write, as NEW/digits/save_dir/runs/{RUN}, and set datasets_root=NEW'


def failing_call(real, error, at=1):
    """`real`, but its call number `at` raises `error`."""
    calls = []

    def call(*args, **kwargs):
        calls.append(args)
        if len(calls) == at:
            raise error
        return real(*args, **kwargs)
    return call


def read_only(path=''):
    return OSError(errno.EROFS, os.strerror(errno.EROFS), path)


def new_folder_cannot_take_its_place(monkeypatch):
    """A written .partial folder cannot be renamed or exchanged into place (a read-only target)."""
    real_replace = os.replace

    def replace(source, destination):
        if source.endswith('.partial'):
            raise read_only(destination)
        return real_replace(source, destination)
    monkeypatch.setattr(os, 'replace', replace)
    monkeypatch.setattr(safe_io, 'exchange', failing_call(safe_io.exchange, read_only()))


def disk_full(path=''):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


# --- safe_io: a write that fails leaves nothing -------------------------------------------

def test_a_failed_rename_leaves_neither_the_temporary_nor_the_folders_made_for_it(tmp_path, monkeypatch):
    monkeypatch.setattr(os, 'replace', failing_call(os.replace, read_only()))
    with pytest.raises(OSError) as raised:
        safe_io.write_text(str(tmp_path / 'new' / 'deeper' / 'file.txt'), 'text')
    assert raised.value.errno == errno.EROFS
    assert list(tmp_path.iterdir()) == []


def test_a_failed_removal_of_the_temporary_does_not_hide_the_write_error(tmp_path, monkeypatch):
    monkeypatch.setattr(os, 'replace', failing_call(os.replace, disk_full()))
    monkeypatch.setattr(os, 'remove', failing_call(os.remove, read_only()))
    with pytest.raises(OSError) as raised:
        safe_io.write_text(str(tmp_path / 'file.txt'), 'text')
    assert raised.value.errno == errno.ENOSPC


def test_the_files_of_a_block_appear_together_or_not_at_all(tmp_path, monkeypatch):
    (tmp_path / 'one.txt').write_text('earlier')
    with safe_io.all_or_none():
        safe_io.write_text(str(tmp_path / 'one.txt'), 'new')
        assert (tmp_path / 'one.txt').read_text() == 'earlier'  # renamed at the end of the block
        with safe_io.all_or_none():  # an inner block is part of the outer one
            safe_io.write_text(str(tmp_path / 'two.txt'), 'new')
        assert not (tmp_path / 'two.txt').exists()
    assert (tmp_path / 'one.txt').read_text() == (tmp_path / 'two.txt').read_text() == 'new'

    (tmp_path / 'one.txt').write_text('earlier')
    before = file_tree(tmp_path)
    monkeypatch.setattr(safe_io.tempfile, 'mkstemp', failing_call(safe_io.tempfile.mkstemp, disk_full(), at=3))
    with pytest.raises(OSError), safe_io.all_or_none():
        safe_io.write_text(str(tmp_path / 'one.txt'), 'newer')
        safe_io.write_text(str(tmp_path / 'sub' / 'three.txt'), 'newer')
        safe_io.write_text(str(tmp_path / 'four.txt'), 'newer')
    assert file_tree(tmp_path) == before  # no file replaced, none added, no folder made


def test_a_folder_takes_the_place_of_the_earlier_one_only_once_complete(tmp_path, monkeypatch):
    target = tmp_path / 'models' / 'best'
    with safe_io.atomic_folder(str(target)) as partial:
        os.makedirs(partial)
        open(os.path.join(partial, 'model'), 'w').write('first')
    assert (target / 'model').read_text() == 'first' and os.listdir(tmp_path / 'models') == ['best']
    before = file_tree(tmp_path)

    with pytest.raises(OSError), safe_io.atomic_folder(str(target)) as partial:
        os.makedirs(partial)
        open(os.path.join(partial, 'model'), 'w').write('half')
        raise disk_full(partial)
    assert file_tree(tmp_path) == before

    new_folder_cannot_take_its_place(monkeypatch)
    with pytest.raises(OSError), safe_io.atomic_folder(str(target)) as partial:
        os.makedirs(partial)
        open(os.path.join(partial, 'model'), 'w').write('second')
    assert file_tree(tmp_path) == before  # the earlier folder is put back

    with pytest.raises(OSError), safe_io.atomic_folder(str(tmp_path / 'new' / 'best')) as partial:
        raise read_only(partial)
    assert not (tmp_path / 'new').exists()


# --- the errors that say a folder cannot be written ---------------------------------------

def test_the_systems_own_write_errors_are_told_as_what_they_are(tmp_path):
    """ENOSPC from a real full device; EPERM / EACCES from sysfs, which no
    one may write, root included; TensorFlow's error for the same."""
    with pytest.raises(OSError) as full:
        with open('/dev/full', 'w') as f:
            f.write('x')
            f.flush()
    told = writes.write_failure(full.value, str(tmp_path / 'evaluation'), 'do this')
    assert isinstance(told, OutOfSpace)
    assert str(told).startswith(f'the disk of {console.shown_path(str(tmp_path))} is full (')
    assert str(told).endswith('MB free): free space there, or do this')

    if not os.path.isdir('/sys/fs'):
        pytest.skip('no sysfs here')
    with pytest.raises(OSError) as refused:
        os.mkdir('/sys/fs/not-allowed')
    assert refused.value.errno in writes.NOT_WRITABLE
    told = writes.write_failure(refused.value, '/sys/fs/not-allowed', 'do this')
    assert isinstance(told, NotWritableError) and str(told) == (
        f'cannot write into /sys/fs/not-allowed ({os.strerror(refused.value.errno).lower()}): do this')
    with pytest.raises(tf.errors.PermissionDeniedError) as refused_to_tf:
        tf.io.gfile.makedirs('/sys/fs/not-allowed')
    assert writes.not_writable_reason(refused_to_tf.value) == os.strerror(refused.value.errno).lower()


@pytest.mark.parametrize('error, reason', [
    (read_only('/x'), 'read-only file system'),
    (OSError(errno.EACCES, os.strerror(errno.EACCES)), 'permission denied'),
    (tf.errors.PermissionDeniedError(None, None, '/x/saved_model/best.partial; Read-only file system'),
     'read-only file system'),
    (FileNotFoundError(errno.ENOENT, 'No such file or directory'), None),
    (NotWritableError('an error already told'), None),
    (tf.errors.ResourceExhaustedError(None, None, 'OOM when allocating tensor'), None),  # memory, not disk
])
def test_only_what_stops_writing_a_folder_is_told_as_such(error, reason):
    assert writes.not_writable_reason(error) == reason


def test_a_full_disk_is_told_by_the_function_that_tells_it_for_training(tmp_path):
    error = tf.errors.ResourceExhaustedError(None, None, '/x/variables_temp/part-0; No space left on device')
    told = writes.write_failure(error, str(tmp_path), 'do this')
    assert isinstance(told, OutOfSpace) and str(told).endswith('MB free): free space there, or do this')
    assert str(safe_io.out_of_space(error, str(tmp_path), disk.RESUME_ADVICE)).endswith('run again with resume=True')


# --- the commands ---------------------------------------------------------------------------

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A one-epoch SE run of digits, evaluated at its end, and exported."""
    root = tmp_path_factory.mktemp('writes')
    args = train_digits(root, 'use_se=True')
    with contextlib.redirect_stdout(io.StringIO()):
        assert export.main(args) == 0
    return {'root': root, 'args': args, 'run': root / 'digits' / 'save_dir' / 'runs' / RUN}


def one_line(capsys):
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('error: ') and 'Traceback' not in err, err
    return err.rstrip('\n')


def shown(path):
    return console.shown_path(str(path))


@pytest.mark.parametrize('split', ['test', 'valid'])  # into the evaluation of training, and a new one
def test_evaluate_into_a_read_only_run_says_so_in_one_line_and_changes_nothing(trained, capsys,
                                                                              monkeypatch, split):
    before = file_tree(trained['root'])
    monkeypatch.setattr(safe_io.tempfile, 'mkstemp', failing_call(safe_io.tempfile.mkstemp, read_only()))
    assert evaluate.main(trained['args'] + [f'eval_split={split}']) == 2
    folder_written = trained['run'] / 'evaluation' / f'{split}-best'
    assert one_line(capsys) == (f'error: cannot write into {shown(folder_written)} '
                                f'(read-only file system): {ADVICE}')
    assert file_tree(trained['root']) == before


def test_evaluate_on_a_disk_that_fills_up_leaves_the_earlier_evaluation_whole(trained, capsys, monkeypatch):
    before = file_tree(trained['root'])
    monkeypatch.setattr(safe_io.tempfile, 'mkstemp',
                        failing_call(safe_io.tempfile.mkstemp, disk_full(), at=4))
    assert evaluate.main(trained['args']) == 2
    err = one_line(capsys)
    assert err.startswith(f"error: the disk of {shown(trained['run'] / 'evaluation' / 'test-best')} is full (")
    assert err.endswith(f'MB free): free space there, or {ADVICE}')
    assert file_tree(trained['root']) == before

    monkeypatch.undo()  # a disk with room again: the evaluation as before
    with contextlib.redirect_stdout(io.StringIO()):
        assert evaluate.main(trained['args']) == 0
    written = sorted(os.listdir(trained['run'] / 'evaluation' / 'test-best'))
    assert written == ['confusion.csv', 'confusion.json', 'confusion.png', 'misclassified.csv',
                       'misclassified.png', 'per_class.csv', 'summary.json']


@pytest.mark.parametrize('error, said', [
    (tf.errors.PermissionDeniedError(None, None, 'best.partial/variables; Read-only file system'),
     'cannot write into {folder} (read-only file system): ' + ADVICE),
    (tf.errors.ResourceExhaustedError(None, None, 'best.partial/variables/variables_temp; No space left '
                                      'on device'), 'the disk of {folder} is full ('),
])
def test_export_that_fails_while_tensorflow_writes_leaves_no_partial_export(trained, capsys, monkeypatch,
                                                                            error, said):
    before = file_tree(trained['root'])
    real_save = v1.saved_model.Builder.save

    def save_then_fail(builder, *args, **kwargs):  # half of it written, as when the disk fills up
        real_save(builder, *args, **kwargs)
        raise error
    monkeypatch.setattr(v1.saved_model.Builder, 'save', save_then_fail)
    assert export.main(trained['args']) == 2
    assert one_line(capsys).startswith('error: ' + said.format(folder=shown(trained['run'] / 'saved_model' / 'best')))
    assert file_tree(trained['root']) == before


def test_export_whose_folder_cannot_take_the_earlier_ones_place_keeps_the_earlier(trained, capsys,
                                                                                  monkeypatch):
    before = file_tree(trained['root'])

    new_folder_cannot_take_its_place(monkeypatch)
    assert export.main(trained['args']) == 2
    assert one_line(capsys) == (f"error: cannot write into {shown(trained['run'] / 'saved_model' / 'best')} "
                                f"(read-only file system): {ADVICE}")
    assert file_tree(trained['root']) == before


@pytest.mark.parametrize('at', [1, 4])  # the excitations' numbers; the self-normalisation's CSV
def test_instruments_that_cannot_write_change_none_of_the_runs_files(trained, capsys, monkeypatch, at):
    before = file_tree(trained['root'])
    monkeypatch.setattr(safe_io.tempfile, 'mkstemp', failing_call(safe_io.tempfile.mkstemp, read_only(), at))
    assert instruments.main(trained['args']) == 2
    out, err = capsys.readouterr()
    assert err == f"error: cannot write into {shown(trained['run'])} (read-only file system): {ADVICE}\n"
    assert 'figures in' not in out  # nothing said to be written
    assert file_tree(trained['root']) == before


def test_the_advice_names_the_copy_by_datasets_root_or_by_the_checkpoints_path(trained, tmp_path):
    run = folder.Run({'datasets_root': str(tmp_path), 'data_dir': None}, RUN, {}, str(trained['run']))
    assert writes.copy_advice(run) == (f"copy {shown(trained['run'])} to a disk you can write and set "
                                       f"checkpoint to the checkpoint's path in the copy")
    data_dir = tmp_path / 'mnist' / 'data_dir'
    data_dir.mkdir(parents=True)
    inside = folder.Run({'datasets_root': str(tmp_path), 'data_dir': None}, 'r',
                        {'DATA_DIR': str(data_dir)}, str(tmp_path / 'mnist' / 'save_dir' / 'runs' / 'r'))
    assert writes.copy_advice(inside) == ('copy the run to a disk you can write, as '
                                          'NEW/mnist/save_dir/runs/r, and set datasets_root=NEW '
                                          f'data_dir={shown(data_dir)}')


# --- on real mounts, where this process may make them ----------------------------------------

def mounted(*args):
    """Runs mount with `args`; skips the test where this process may not."""
    result = subprocess.run(['mount', *args], capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f'cannot mount here: {result.stderr.strip()}')


def unmount(path):
    subprocess.run(['umount', '-l', str(path)])


@pytest.fixture
def read_only_root(trained, tmp_path):
    """The trained run's datasets_root, mounted again read-only."""
    mount = tmp_path / 'read-only'
    mount.mkdir()
    mounted('--bind', str(trained['root']), str(mount))
    try:
        mounted('-o', 'remount,bind,ro', str(mount))
        yield mount
    finally:
        unmount(mount)


@pytest.fixture
def full_root(trained, tmp_path):
    """A copy of the trained run on a small tmpfs, filled up."""
    mount = tmp_path / 'full'
    mount.mkdir()
    mounted('-t', 'tmpfs', '-o', 'size=24m', 'tmpfs', str(mount))
    try:
        shutil.copytree(trained['run'], mount / 'digits' / 'save_dir' / 'runs' / RUN)
        with contextlib.suppress(OSError), open(mount / 'filler', 'wb') as f:
            while True:
                f.write(bytes(1 << 20))
                f.flush()
        yield mount
    finally:
        unmount(mount)


COMMANDS = {'evaluate': (evaluate.main, 'evaluation/test-best'), 'export': (export.main, 'saved_model/best'),
            'instruments': (instruments.main, '')}


@pytest.mark.parametrize('command', COMMANDS)
def test_a_read_only_mount_is_told_in_one_line(trained, read_only_root, capsys, command):
    task, written = COMMANDS[command]
    before = file_tree(trained['root'])
    args = [f'datasets_root={read_only_root}', *trained['args'][1:]]
    assert task(args) == 2
    into = read_only_root / 'digits' / 'save_dir' / 'runs' / RUN / written
    assert one_line(capsys) == f'error: cannot write into {shown(into)} (read-only file system): {ADVICE}'
    assert file_tree(trained['root']) == before


@pytest.mark.parametrize('command', COMMANDS)
def test_a_full_disk_is_told_in_one_line_and_leaves_nothing_half_written(full_root, capsys, command):
    task, _ = COMMANDS[command]
    before = file_tree(full_root)
    assert task([f'datasets_root={full_root}', 'max_epochs=1', 'use_se=True']) == 2
    err = one_line(capsys)
    assert err.startswith(f'error: the disk of {shown(full_root)}/digits/save_dir/runs/{RUN}')
    assert err.endswith(f'MB free): free space there, or {ADVICE}')
    assert file_tree(full_root) == before
