"""Paths that are no image files, where image files are read: a folder's
entry or an ImageNet tree's that links to /dev/zero or /dev/urandom (bytes
without end), a FIFO (an open that waits for a writer), a name that is not
UTF-8; annotation files of gigabytes, or of one line of them. Each is found
by stat before a byte is read (foundation/data/image_files.py): predict.py
skips a folder's with a warning, the ImageNet writer stops or leaves it out,
and nothing waits or grows.

Everything hostile is made here at run time. A test that could hang or grow
were the checks gone either proves the path is never opened (opens of it
fail the test) or runs the command in a child that is killed past a time
or a memory bound (run_watched).
"""
import builtins
import contextlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
import types

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import TFRecordsWriter
from foundation import regular_files
from foundation.data import image_files, imagenet
from foundation.errors import DataError
from tests.test_streaming import data_dir, read_examples
from tests.trained_runs import train_digits
from trainer.after_training import inference

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_RSS_MB = 2500  # the house bound on a command's peak memory
WNID = 'n01440764'  # tench: label 1


# --- hostile paths, and bounds on what a test may cost --------------------------------------

def hostile(path, kind):
    """Makes `path` a hostile entry of `kind`; returns what stat calls it."""
    if kind == 'fifo':
        os.mkfifo(path)
        return 'is not a regular file (a FIFO)'
    if kind in ('dev_zero', 'dev_urandom'):
        os.symlink(f"/dev/{kind.split('_')[1]}", path)
        return 'is not a regular file (a character device)'
    if kind == 'folder':
        os.mkdir(path)
        return 'is not a regular file (a folder)'
    if kind == 'dangling_link':
        os.symlink(os.path.join(os.path.dirname(path), 'nothing'), path)
        return 'cannot be read (No such file or directory)'
    if kind == 'link_loop':
        os.symlink(os.path.basename(path), path)
        return 'cannot be read (Too many levels of symbolic links)'
    raise ValueError(kind)


HOSTILE = ('fifo', 'dev_zero', 'dev_urandom', 'folder', 'dangling_link', 'link_loop')
NOT_FOLDERS = tuple(kind for kind in HOSTILE if kind != 'folder')  # a folder is searched, not read


@contextlib.contextmanager
def never_opened(*paths):
    """Fails the test where one of `paths` is opened (builtins.open or
    os.open): a FIFO would block there, a device would be read."""
    refused = {os.path.abspath(p) for p in paths}

    def guard(real):
        def opening(file, *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)) and os.path.abspath(os.fsdecode(file)) in refused:
                raise AssertionError(f'{os.fsdecode(file)} was opened')
            return real(file, *args, **kwargs)
        return opening
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(builtins, 'open', guard(builtins.open))
        patch.setattr(os, 'open', guard(os.open))
        yield


@contextlib.contextmanager
def within(seconds):
    """Fails the test where its body blocks longer than `seconds` (SIGALRM
    interrupts a blocking open or read of the main thread)."""
    def expire(signum, frame):
        raise TimeoutError(f'blocked for more than {seconds} s')
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def rss_mb(pid):
    """A running process's resident memory in MB (0 once it is gone)."""
    try:
        with open(f'/proc/{pid}/status') as f:
            return next((int(line.split()[1]) / 1024 for line in f if line.startswith('VmRSS:')), 0)
    except OSError:
        return 0


def run_watched(args, timeout_s=120, max_rss_mb=MAX_RSS_MB):
    """A child process of `args`, killed once it runs past `timeout_s` or holds
    more than `max_rss_mb`, so that a command that waits on a FIFO or reads
    /dev/zero fails the test instead of hanging it or taking the machine's
    memory: (exit status, stdout, stderr, peak memory in MB, what killed it)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=PROJECT_DIR)
        deadline, killed = time.monotonic() + timeout_s, None
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            killed = ('time' if time.monotonic() > deadline else
                      'memory' if rss_mb(child.pid) > max_rss_mb else None)
            if killed:
                child.kill()
                _, status, usage = os.wait4(child.pid, 0)
                break
            time.sleep(0.05)
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        return types.SimpleNamespace(code=child.returncode, out=os.fsdecode(out.read()),
                                     err=os.fsdecode(err.read()), peak_mb=usage.ru_maxrss / 1024,
                                     killed=killed)


def assert_bounded(result):
    assert result.killed is None, f'killed for its {result.killed}: {result.err[-2000:]}'
    assert result.peak_mb < MAX_RSS_MB and 'Traceback' not in result.err, result.err[-2000:]


# --- one check before any byte is read -------------------------------------------------------

@pytest.mark.parametrize('kind', HOSTILE)
def test_stat_tells_a_hostile_path_before_anything_is_opened(tmp_path, kind):
    path = str(tmp_path / 'a.png')
    says = hostile(path, kind)
    with never_opened(path), pytest.raises(regular_files.NotRegularFile) as caught:
        regular_files.read_regular(path, 1 << 20, 'an image')
    assert str(caught.value) == f'{path} {says}'
    with never_opened(path), pytest.raises(image_files.BadImage) as caught:
        image_files.image_bytes(path)
    assert str(caught.value) == f'{path} {says}'


def test_a_link_to_a_regular_file_is_followed(tmp_path):
    (tmp_path / 'image.png').write_bytes(b'bytes of an image')
    os.symlink(tmp_path / 'image.png', tmp_path / 'link.png')
    assert image_files.image_bytes(str(tmp_path / 'link.png')) == b'bytes of an image'


def test_a_fifo_put_in_place_after_the_stat_is_neither_waited_on_nor_read(tmp_path, monkeypatch):
    """Between the stat and the open a file may be replaced: the open does
    not block (O_NONBLOCK) and fstat on what was opened refuses it."""
    fifo, regular = str(tmp_path / 'b.png'), tmp_path / 'regular.png'
    os.mkfifo(fifo)
    regular.write_bytes(b'x')
    real_stat = os.stat
    monkeypatch.setattr(os, 'stat', lambda p, *a, **k: real_stat(regular if p == fifo else p, *a, **k))
    with within(5), pytest.raises(image_files.BadImage, match=r'b\.png is not a regular file \(a FIFO\)$'):
        image_files.image_bytes(fifo)


def test_a_file_over_its_bound_is_refused_by_its_size_or_after_one_byte_more(tmp_path, monkeypatch):
    sparse = tmp_path / 'huge.png'  # takes no disk: refused by its size, never read
    with open(sparse, 'wb') as f:
        f.truncate(image_files.IMAGE_MAX_BYTES + 1)
    with never_opened(sparse), pytest.raises(image_files.BadImage, match=(
            rf' holds {image_files.IMAGE_MAX_BYTES + 1} bytes, more than an image of the dataset')):
        image_files.image_bytes(str(sparse))
    grown = tmp_path / 'grown.png'  # larger than its stat said: one byte past the bound read
    grown.write_bytes(b'x' * 11)
    real_stat, real_fstat = os.stat, os.fstat
    monkeypatch.setattr(os, 'stat', lambda p, *a, **k: os.stat_result(
        (*real_stat(p, *a, **k)[:6], 5, *real_stat(p, *a, **k)[7:])))
    monkeypatch.setattr(os, 'fstat', lambda fd: os.stat_result((*real_fstat(fd)[:6], 5, *real_fstat(fd)[7:])))
    with pytest.raises(regular_files.UnfitFile, match=r'grown\.png holds more than an image \(10 bytes at most\)'):
        regular_files.read_regular(str(grown), 10, 'an image')


# --- predict.py ------------------------------------------------------------------------------

def write_png(path):
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).save(path)


def test_a_folder_lists_its_regular_images_and_warns_of_the_rest(tmp_path, capsys):
    folder = tmp_path / 'images'
    folder.mkdir()
    write_png(folder / 'a.png')
    says = {str(folder / f'{kind}.png'): hostile(str(folder / f'{kind}.png'), kind) for kind in NOT_FOLDERS}
    with never_opened(*says):
        listed = list(inference.listed_images([str(folder)]))
    assert listed == [(str(folder / 'a.png'), None)]
    warnings = capsys.readouterr().err.splitlines()
    assert warnings == [f'warning: {path} {said}; skipped' for path, said in sorted(says.items())]


def test_a_hostile_path_named_directly_is_one_unreadable_image(tmp_path):
    reader = inference.ImageReader({'image_shape': [8, 8, 1], 'resize': 'bicubic'})
    try:
        for kind in NOT_FOLDERS:
            path = str(tmp_path / f'{kind}.png')
            says = hostile(path, kind)
            assert list(inference.listed_images([path])) == [(path, None)]
            with never_opened(path), pytest.raises(inference.UnreadableImage) as caught:
                reader.read(path)
            assert str(caught.value) == f'{path} {says}; give PNG or JPEG files'
    finally:
        reader.close()


def test_a_name_that_is_not_utf8_is_shown_as_its_bytes():
    assert inference.shown_name(os.fsdecode(b'/photos/\xff.png')) == '/photos/\\xff.png'
    assert inference.shown_name('/photos/é.png') == '/photos/é.png'


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A digits run of one epoch, trained here as main.py trains."""
    root = tmp_path_factory.mktemp('trained')
    with tf.Graph().as_default():
        train_digits(root)
    return root


def test_predict_skips_a_folders_fifo_and_device_links_and_refuses_them_named(trained, tmp_path):
    """predict.py on a folder holding links to /dev/zero and /dev/urandom
    and a FIFO, all named .png, and on a FIFO named directly: the folder's
    image is classified, its others are warnings, the FIFO named is the one
    error; nothing waits, nothing grows."""
    folder = tmp_path / 'folder'
    folder.mkdir()
    write_png(folder / 'a.png')
    folder_says = {kind: hostile(str(folder / f'{kind}.png'), kind)
                   for kind in ('dev_zero', 'dev_urandom', 'fifo')}
    named = str(tmp_path / 'named.png')
    os.mkfifo(named)
    result = run_watched([sys.executable, 'predict.py', f'datasets_root={trained}', str(folder), named])
    assert_bounded(result)
    assert result.code == 2
    assert [line.split(':')[0] for line in result.out.splitlines()] == [str(folder / 'a.png')]
    lines = [line for line in result.err.splitlines() if line.startswith(('warning:', 'error:'))]
    assert lines == [*(f'warning: {folder / kind}.png {said}; skipped'
                       for kind, said in sorted(folder_says.items())),
                     f'error: {named} is not a regular file (a FIFO); give PNG or JPEG files']


# --- the ImageNet writer -----------------------------------------------------------------------

def jpeg(path, seed):
    rgb = np.random.default_rng(seed).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, format='JPEG')


def imagenet_tree(root):
    """train/<wnid>/ with two JPEGs (one named by bytes that are not UTF-8),
    val/<wnid>/ with one; returns the training folder."""
    train = root / 'src' / 'train' / WNID
    os.makedirs(train)
    os.makedirs(root / 'src' / 'val' / WNID)
    jpeg(train / 'a.JPEG', 0)
    jpeg(os.fsdecode(os.fsencode(train) + b'/\xff.JPEG'), 1)
    jpeg(root / 'src' / 'val' / WNID / 'v.JPEG', 2)
    return train


def writer_command(root, *extra):
    return [sys.executable, 'TFRecordsWriter.py', 'dataset_name=imagenet', 'output_shape=1000',
            f"imagenet_dir={root / 'src'}", f'datasets_root={root}',
            "tfrecord_shards={'train': 1, 'validation': 1}", *extra]


@pytest.mark.parametrize('kind', ['dev_zero', 'fifo'])
def test_the_imagenet_writer_stops_at_a_fifo_or_device_link_in_one_line(tmp_path, kind):
    bad = imagenet_tree(tmp_path) / 'bad.JPEG'
    says = hostile(str(bad), kind)
    result = run_watched(writer_command(tmp_path))
    assert_bounded(result)
    assert result.code == 2
    assert result.err.splitlines()[-1] == (f'error: {bad} {says}; remove it, or set '
                                           f'skip_bad_records=True to leave such images out')


def test_the_imagenet_writer_leaves_them_out_and_stores_a_name_as_its_bytes(tmp_path):
    train = imagenet_tree(tmp_path)
    says = {train / f'{kind}.JPEG': hostile(str(train / f'{kind}.JPEG'), kind)
            for kind in ('dev_zero', 'dev_urandom', 'fifo')}
    result = run_watched(writer_command(tmp_path, 'skip_bad_records=True'))
    assert_bounded(result)
    assert result.code == 0, result.err[-2000:]
    warnings = sorted(line for line in result.err.splitlines() if line.startswith('warning:'))
    assert warnings == sorted(f'warning: {path} {said}: left out' for path, said in says.items())
    shard = os.path.join(data_dir(tmp_path, 'imagenet'), 'train-00000-of-00001')
    names = [e.features.feature['image/filename'].bytes_list.value[0] for e in read_examples(shard)]
    assert sorted(names) == [b'a.JPEG', b'\xff.JPEG']


def test_a_record_stores_the_file_name_as_the_folder_holds_it():
    record = tf.train.Example.FromString(TFRecordsWriter.imagenet_example(
        b'jpeg', 1, WNID, 2, 3, os.fsdecode(b'\xff\xfe.JPEG')))
    assert record.features.feature['image/filename'].bytes_list.value == [b'\xff\xfe.JPEG']


# --- annotation files: bounded in size and per line ---------------------------------------------

def sparse_file(path, size):
    """A file of `size` zero bytes that takes no disk."""
    with open(path, 'wb') as f:
        f.truncate(size)
    return str(path)


def test_an_annotation_file_over_its_bound_is_refused_by_its_size(tmp_path):
    path = sparse_file(tmp_path / 'imagenet_metadata.txt', 2 << 30)  # 2 GB of one line
    for read in (lambda: imagenet.class_texts(path, [WNID]), lambda: imagenet.bounding_boxes(path)):
        with never_opened(path), pytest.raises(DataError) as caught:
            read()
        assert str(caught.value).startswith(
            f'{path} holds {2 << 30} bytes, more than an annotation file ({imagenet.TEXT_MAX_BYTES} '
            f"at most); imagenet_metadata_file and imagenet_bbox_file take TF's")


def test_a_line_over_its_bound_is_refused_once_that_much_is_read(tmp_path, monkeypatch):
    path = tmp_path / 'imagenet_metadata.txt'
    path.write_text(f'{WNID}\ttench\n{WNID}\t{"x" * (imagenet.LINE_MAX_BYTES + 1)}\n')
    asked = []
    real_readline = io.BufferedReader.readline

    class Counted(io.BufferedReader):
        def readline(self, size=-1):
            asked.append(size)
            return real_readline(self, size)
    monkeypatch.setattr(os, 'fdopen', lambda fd, mode: Counted(io.FileIO(fd, 'rb')))
    with pytest.raises(DataError, match=rf'imagenet_metadata\.txt, line 2 is longer than '
                                        rf'{imagenet.LINE_MAX_BYTES} bytes; imagenet_metadata_file'):
        imagenet.class_texts(str(path), [WNID])
    assert asked and all(0 < size <= imagenet.LINE_MAX_BYTES + 1 for size in asked)


def test_an_annotation_line_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / 'boxes.csv'
    path.write_bytes(b'a.JPEG,0.1,0.2,0.3,0.4\n\xff.JPEG,0.1,0.2,0.3,0.4\n')
    with pytest.raises(DataError, match=r'boxes\.csv, line 2 is not UTF-8 text \(invalid start byte at '
                                        r'byte 0\)'):
        imagenet.bounding_boxes(str(path))


@pytest.mark.parametrize('kind', ['fifo', 'dev_zero'])
def test_an_annotation_file_that_is_no_regular_file_is_never_opened(tmp_path, kind):
    path = str(tmp_path / 'boxes.csv')
    says = hostile(path, kind)
    with never_opened(path), pytest.raises(DataError) as caught:
        imagenet.bounding_boxes(path)
    assert str(caught.value).startswith(f'{path} {says}; imagenet_metadata_file')


def test_the_writer_refuses_a_huge_metadata_file_in_one_line(tmp_path):
    imagenet_tree(tmp_path)
    texts = sparse_file(tmp_path / 'imagenet_metadata.txt', 2 << 30)
    result = run_watched(writer_command(tmp_path, f'imagenet_metadata_file={texts}'))
    assert_bounded(result)
    assert result.code == 2 and result.err.splitlines()[-1].startswith(
        f'error: {texts} holds {2 << 30} bytes, more than an annotation file')


@pytest.mark.parametrize('key', ['data_dir', 'datasets_root', 'imagenet_dir'])
@pytest.mark.parametrize('kind', ['a regular file', 'a character device', 'a FIFO'])
def test_a_folder_key_that_names_no_folder_is_said_to_be_what_it_is(tmp_path, kind, key):
    """data_dir=/dev/null was told "missing data files ... Put these files into /dev/null",
    datasets_root=/dev/null "cannot write to /dev/null/digits/save_dir (Not a directory)"."""
    from foundation.errors import ConfigError
    from trainer.config import settings
    path = {'a regular file': tmp_path / 'notes.txt', 'a character device': '/dev/null',
            'a FIFO': tmp_path / 'fifo'}[kind]
    if kind == 'a regular file':
        path.write_text('x')
    elif kind == 'a FIFO':
        os.mkfifo(path)
    with pytest.raises(ConfigError) as told:
        settings.load_config(['dataset_name=mnist', f'{key}={path}'])
    assert str(told.value) == f'{key}={path} is {kind}, not a folder: give a folder'
    assert settings.load_config(['dataset_name=mnist', f'{key}={tmp_path / "not-yet"}'])[key]  # made when needed
