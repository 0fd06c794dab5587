"""What a user gives from outside, each case once a traceback or a line that
misled: JSON nested a hundred thousand deep (dataset.json, TF_CONFIG), a
port in other digits than ASCII, a path whose bytes are not UTF-8, a FIFO or
a device named where a file is expected, and the advice of a diverged run
where the learning rate was not the cause (a weight decay whose penalty
overflows, init_weights that overflow once fitted to the input).

Everything hostile is made here at run time, in the formats the product
reads; a command is run in a child where the input must reach it as bytes
(its argv), or where it could hang (tests.test_hostile_files.run_watched).
"""
import contextlib
import io
import json
import math
import os
import sys

import h5py
import numpy as np
import pytest

import main
from foundation import bounded_json, regular_files
from foundation.data import loaders, record_metadata
from foundation.errors import ConfigError, DataError
from tests.test_hostile_files import assert_bounded, hostile, never_opened, run_watched, within
from tests.test_hostile_weights import KERAS_HINT, write_weights
from trainer.after_training import trained_run
from trainer.config import settings
from trainer.training import cluster, passes

DEEP = 100_000
QUIET = 'log_every=100000'


def job_config(workers, index=0):
    return json.dumps({'cluster': {'worker': workers}, 'task': {'type': 'worker', 'index': index}})


def one_error_line(err):
    """The one line a command printed on stderr, after 'error: '."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and 'Traceback' not in err, err[-2000:]
    return lines[0][len('error: '):]


def main_in_process(args, capsys):
    """(exit status, its stderr) of main.main(args), stdout put aside."""
    with contextlib.redirect_stdout(io.StringIO()):
        code = main.main(args)
    return code, capsys.readouterr().err


# --- JSON nested deeper than the parser's recursion ---------------------------------------------

def test_json_text_is_bounded_in_depth_before_the_parser_sees_it():
    assert bounded_json.loads('[' * 64 + ']' * 64) == eval('[' * 64 + ']' * 64)
    with pytest.raises(ValueError, match='arrays and objects nested 65 deep, more than the 64 x may hold'):
        bounded_json.loads('[' * 65 + ']' * 65, holder='x')
    for text in ('[' * DEEP, '{"a":' * DEEP + '1' + '}' * DEEP):
        with pytest.raises(ValueError, match=f'nested {DEEP} deep'):  # not a RecursionError
            bounded_json.loads(text)


def test_a_dataset_json_nested_100000_deep_is_one_line(tmp_path):
    (tmp_path / record_metadata.METADATA).write_text('[' * DEEP + ']' * DEEP)
    with pytest.raises(DataError) as caught:
        record_metadata.read_metadata(str(tmp_path))
    assert str(caught.value) == (f'{tmp_path / record_metadata.METADATA} is not readable (arrays and '
                                 f'objects nested {DEEP} deep, more than the 64 such a file may hold); '
                                 f'run python TFRecordsWriter.py again')


def test_a_tf_config_nested_100000_deep_is_one_line(tmp_path, monkeypatch, capsys):
    """Was: RecursionError, from json.loads in cluster.role_from_environment."""
    monkeypatch.setenv('TF_CONFIG', '[' * DEEP)  # an environment variable holds 128 KiB at most
    code, err = main_in_process(['dataset_name=digits', f'datasets_root={tmp_path}', 'max_epochs=1'], capsys)
    assert code == 2
    assert one_error_line(err).startswith(f'TF_CONFIG is not JSON (arrays and objects nested {DEEP} deep, '
                                          f'more than the 64 TF_CONFIG may hold); expected {{"cluster"')


# --- numbers in other digits than ASCII -----------------------------------------------------------

@pytest.mark.parametrize('port', ['\u0662\u0662\u0662\u0662', '\uff12\uff12\uff12\uff12', '\u00b2', '9' * 5000],
                         ids=['arabic-indic', 'full-width', 'superscript', '5000 digits'])
def test_a_port_is_ascii_digits(port):
    """int() takes Arabic-Indic and full-width digits, which TensorFlow does
    not; '²' passed isdigit() and failed int(); 5000 digits failed int()."""
    address = f'localhost:{port}'
    with pytest.raises(cluster.ClusterError) as caught:
        cluster.role_from_environment({'TF_CONFIG': job_config([address, 'localhost:2223'])})
    assert str(caught.value) == (f'TF_CONFIG: worker address {json.dumps(address)[:80]} is not "host:port" '
                                 f'with a port from 1 to 65535 in ASCII digits')


def test_a_port_in_arabic_indic_digits_stops_main_in_one_line(tmp_path, monkeypatch, capsys):
    """Was: InvalidArgumentError 'Could not parse port for local server', a traceback."""
    monkeypatch.setenv('TF_CONFIG', job_config(['localhost:\u0662\u0662\u0662\u0662', 'localhost:2223']))
    code, err = main_in_process(['dataset_name=digits', f'datasets_root={tmp_path}', 'max_epochs=1'], capsys)
    assert code == 2
    assert one_error_line(err) == ('TF_CONFIG: worker address "localhost:\\u0662\\u0662\\u0662\\u0662" is not '
                                   '"host:port" with a port from 1 to 65535 in ASCII digits')


def test_ascii_ports_still_make_a_job():
    workers = ['localhost:2222', '[::1]:65535']
    assert cluster.role_from_environment({'TF_CONFIG': job_config(workers, 1)}) == cluster.Role(workers, 1)


# --- bytes that are not UTF-8 -------------------------------------------------------------------------

@pytest.mark.parametrize('text', [
    'localhost\udcff:2222',  # what os.environ makes of a byte \xff
    None,  # a \u escape in the JSON itself
])
def test_a_tf_config_that_is_not_utf8_is_one_line(text):
    """Was: UnicodeEncodeError from TensorFlow's ClusterSpec."""
    config = (job_config([text, 'localhost:2223']) if text else
              '{"cluster": {"worker": ["lo\\udcffcal:2222", "localhost:2223"]}, "task": {"type": "worker", '
              '"index": 0}}')
    with pytest.raises(cluster.ClusterError, match=r'^TF_CONFIG holds bytes that are not UTF-8'):
        cluster.role_from_environment({'TF_CONFIG': config})


def test_a_datasets_root_that_is_not_utf8_is_one_line_before_anything_is_written(tmp_path):
    """Was: UnicodeEncodeError writing the run's lock file, a traceback."""
    root = os.fsencode(tmp_path) + b'/x\xff'
    os.mkdir(root)
    result = run_watched([sys.executable, 'main.py', 'dataset_name=digits', b'datasets_root=' + root,
                          'max_epochs=1'])
    assert_bounded(result)
    assert result.code == 2 and result.out == ''
    assert one_error_line(result.err) == (f'datasets_root={tmp_path}/x\\xff holds bytes that are not UTF-8, '
                                          f"which the run's files and TensorFlow cannot take; rename it in "
                                          f'UTF-8 or give another path')
    assert os.listdir(root) == []


@pytest.mark.parametrize('key', ['datasets_root', 'data_dir', 'imagenet_dir', 'checkpoint', 'run_name'])
def test_every_text_key_refuses_bytes_that_are_not_utf8(key):
    with pytest.raises(ConfigError, match=rf'^{key}=/tmp/x\\xff holds bytes that are not UTF-8'):
        settings.checked_config(['dataset_name=digits', f'{key}=/tmp/x\udcff'])


def test_utf8_paths_beyond_ascii_are_kept(tmp_path):
    root = str(tmp_path / 'données')
    assert settings.checked_config(['dataset_name=digits', f'datasets_root={root}'])['datasets_root'] == root


# --- a FIFO or a device where a file is expected ----------------------------------------------------

@pytest.mark.parametrize('kind', ['fifo', 'dev_zero', 'folder', 'dangling_link'])
def test_present_tells_what_is_there_instead_of_a_file(tmp_path, kind):
    path = str(tmp_path / 'entry')
    says = hostile(path, kind)
    with never_opened(path), within(5), pytest.raises(regular_files.NotRegularFile) as caught:
        regular_files.present(path)
    assert str(caught.value) == f'{path} {says}'


def test_present_is_isfile_for_files_and_nothing(tmp_path):
    (tmp_path / 'file').write_bytes(b'')
    os.symlink(tmp_path / 'file', tmp_path / 'link')
    assert regular_files.present(str(tmp_path / 'file')) and regular_files.present(str(tmp_path / 'link'))
    assert not regular_files.present(str(tmp_path / 'nothing'))


def test_a_device_named_by_a_config_key_is_not_said_missing():
    """Was: "imagenet_metadata_file='/dev/zero': no such file"."""
    with pytest.raises(ConfigError) as caught:
        settings.checked_config(['dataset_name=imagenet', 'imagenet_metadata_file=/dev/zero'])
    assert str(caught.value) == "imagenet_metadata_file='/dev/zero' is not a regular file (a character device)"
    with pytest.raises(ConfigError, match=r"^imagenet_metadata_file='/nothing/here': no such file$"):
        settings.checked_config(['dataset_name=imagenet', 'imagenet_metadata_file=/nothing/here'])


def test_a_fifo_as_a_data_file_is_said_so(tmp_path):
    """Was: 'missing data files (download=False). Put these files into ...'."""
    npz = tmp_path / 'mnist.npz'
    os.mkfifo(npz)
    with never_opened(npz), within(5), pytest.raises(DataError) as caught:
        loaders.load_mnist(str(tmp_path), 0, False)
    assert str(caught.value) == f'{npz} is not a regular file (a FIFO)'


def test_a_fifo_as_dataset_json_is_said_so(tmp_path):
    """Was: read as absent ('dataset.json is missing: run python ImageResizer.py ...')."""
    os.mkfifo(tmp_path / record_metadata.METADATA)
    with within(5), pytest.raises(DataError) as caught:
        record_metadata.read_metadata(str(tmp_path))
    assert str(caught.value) == (f'{tmp_path / record_metadata.METADATA} is not readable (is not a regular '
                                 f'file (a FIFO)); run python TFRecordsWriter.py again')


def test_a_fifo_as_a_shard_or_a_checkpoint_is_said_so(tmp_path):
    import TFRecordsReader
    shard = tmp_path / 'train-00000-of-00001'
    os.mkfifo(shard)
    with within(5), pytest.raises(DataError, match=rf'^{shard} is not a regular file \(a FIFO\)$'):
        TFRecordsReader.split_files(str(tmp_path), 'train')
    index = tmp_path / 'model.ckpt-1.index'
    os.mkfifo(index)
    with within(5), pytest.raises(DataError, match=rf'^{index} is not a regular file \(a FIFO\)$'):
        trained_run.checkpoint_prefix(str(tmp_path / 'model.ckpt-1'))


def test_predict_says_a_fifo_or_a_device_is_no_regular_file(tmp_path):
    """predict.py's own paths, before any run is looked for."""
    fifo = tmp_path / 'digit.png'
    os.mkfifo(fifo)
    for path in (str(fifo), '/dev/zero'):
        result = run_watched([sys.executable, 'predict.py', f'datasets_root={tmp_path}', path], timeout_s=60)
        assert_bounded(result)
        assert 'no such file' not in result.err and result.code == 2, result.err[-2000:]


# --- a diverged run's advice ---------------------------------------------------------------------------

def test_a_weight_decay_whose_penalty_overflows_is_named(tmp_path, capsys):
    """Was: 'loss became nan at epoch 1, step 100; ... Lower learning_rate'."""
    code, err = main_in_process(['dataset_name=digits', f'datasets_root={tmp_path}', 'max_epochs=1',
                                 'weight_decay=1e308', QUIET], capsys)
    line = one_error_line(err)
    assert code == 1
    assert line.startswith('the loss with its weight penalty became inf at epoch 1, step ')
    assert line.endswith('Lower weight_decay (now 1e+308): its penalty on the weights overflows float32.')
    assert 'learning_rate' not in line


def test_the_divergence_of_the_first_step_is_not_the_learning_rate():
    """The first step's loss comes from the weights the run starts from,
    computed before any update: no learning rate made it overflow."""
    cfg = {'init_weights': '/w.h5', 'weight_decay': 1e-4}
    first = passes.divergence(math.nan, math.nan, cfg, 'at epoch 1, step 50', first=True)
    assert str(first) == 'loss was nan at epoch 1, step 50, before any update'
    assert first.remedy.startswith('The weights it starts from (init_weights=/w.h5) or its input make the loss')
    later = passes.divergence(math.nan, math.nan, cfg, 'at epoch 2, step 50', first=False)
    assert str(later) == 'loss became nan at epoch 2, step 50' and later.remedy is None
    penalty = passes.divergence(2.3, math.inf, cfg, 'at epoch 1, step 50', first=True)
    assert penalty.remedy == ('Lower weight_decay (now 0.0001) (or smaller weights than init_weights=/w.h5): '
                              'its penalty on the weights overflows float32.')


def test_init_weights_that_overflow_once_fitted_are_one_line_before_any_step(tmp_path, capsys):
    """A first kernel of 1e38 is finite in float32, and infinite once scaled
    to the input: was 'weights became NaN or infinite during epoch 1; ...
    Lower learning_rate'."""
    path = write_weights(tmp_path / 'weights.h5')
    with h5py.File(path, 'a') as f:
        stem = f['conv1_conv/conv1_conv/kernel:0']
        stem[...] = np.full(stem.shape, 1e38, np.float32)
    code, err = main_in_process(['model=resnet50', 'dataset_name=digits', f'init_weights={path}',
                                 f'datasets_root={tmp_path}', 'max_epochs=1', QUIET], capsys)
    assert code == 2
    assert one_error_line(err) == (f"{path}: conv1_conv/kernel overflows float32 once fitted to this data's "
                                   f"input (scaled by its pixels' std){KERAS_HINT}")
    assert not (tmp_path / 'digits' / 'save_dir' / 'runs' / 'resnet50_relu' / 'history.json').exists()
