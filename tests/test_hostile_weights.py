"""init_weights files that are not what Keras writes: links that lead out
of the file or round in a loop, data kept in other files, weights stored as
strings or of no shape, NaN and infinite values. Each is one line naming
the entry, from the file's metadata before any data is read where that
tells (the config check), else once the values are read and before any
variable is assigned (foundation/networks/pretrained.py).

The files are written here in Keras' legacy layout, their datasets left
unwritten (HDF5 allocates no data for them, which reads as zeros) but for
the hostile one.
"""
import contextlib
import io
import os
import sys

import h5py
import numpy as np
import pytest

import main
from foundation.errors import DataError
from foundation.networks import pretrained
from tests.test_hostile_files import assert_bounded, run_watched
from trainer.config import settings

KERNEL = ('conv2_block1_1_conv', 'kernel')  # (1, 1, 64, 64)
KERAS_HINT = f"; init_weights takes Keras' {pretrained.KERAS_FILE}"


def write_weights(path, hostile=None):
    """ResNet-50's layers in Keras' legacy layout (`layer/layer/weight:0`),
    no data written; hostile(f, group, name, shape), where given, writes the
    entry (layer, weight) = KERNEL in its place."""
    shapes = pretrained.expected_weights()
    layers = sorted({layer for layer, _ in shapes})
    with h5py.File(path, 'w') as f:
        f.attrs['layer_names'] = [layer.encode() for layer in layers]
        for layer in layers:
            group = f.create_group(layer)
            weights = [weight for owner, weight in shapes if owner == layer]
            group.attrs['weight_names'] = [f'{layer}/{weight}:0'.encode() for weight in weights]
            for weight in weights:
                name, shape = f'{layer}/{weight}:0', shapes[layer, weight]
                if hostile and (layer, weight) == KERNEL:
                    hostile(f, group, name, shape)
                else:
                    group.create_dataset(name, shape, 'float32')
    return str(path)


def checked(path):
    """The config check of init_weights=path (read_trunk without the data)."""
    return settings.checked_config(['model=resnet50', f'init_weights={path}'])


def soft_link_loop(f, group, name, shape):
    group[name] = h5py.SoftLink(f'{group.name}/{name}')


def external_link(f, group, name, shape):
    group[name] = h5py.ExternalLink(f.filename + '.other', '/kernel')


def strings(f, group, name, shape):  # 1, 1, 64, 64 of 512-byte strings: 2 MB were it read
    group.create_dataset(name, shape, 'S512')


def no_shape(f, group, name, shape):
    group.create_dataset(name, data=h5py.Empty('float32'))


def a_group(f, group, name, shape):
    group.create_group(name)


def pairs(f, group, name, shape):
    group.create_dataset(name, shape, [('a', 'f4'), ('b', 'f4')])


def fifo_storage(f, group, name, shape):
    fifo = f.filename + '.fifo'
    os.mkfifo(fifo)
    group.create_dataset(name, shape, 'float32', external=[(fifo, 0, h5py.h5f.UNLIMITED)])


ENTRY = '/conv2_block1_1_conv/conv2_block1_1_conv/kernel:0'
REFUSED_BY_METADATA = {  # the hostile entry -> what the line says after the file's name
    'soft-link loop': (soft_link_loop, f'{ENTRY} is a soft link'),
    'external link': (external_link, f'{ENTRY} is an external link'),
    'strings': (strings, 'conv2_block1_1_conv/kernel holds |S512, not numbers'),
    'no shape': (no_shape, 'conv2_block1_1_conv/kernel is empty where ResNet-50 has (1, 1, 64, 64)'),
    'a group': (a_group, 'conv2_block1_1_conv/kernel is no dataset'),
    'pairs': (pairs, "conv2_block1_1_conv/kernel holds [('a', '<f4'), ('b', '<f4')], not numbers"),
}


@pytest.mark.parametrize('case', REFUSED_BY_METADATA)
def test_an_entry_keras_never_writes_is_one_line_at_the_config_check(tmp_path, case):
    hostile, says = REFUSED_BY_METADATA[case]
    path = write_weights(tmp_path / 'weights.h5', hostile)
    with pytest.raises(DataError) as caught:
        checked(path)
    assert str(caught.value) == f'{path}: {says}{KERAS_HINT}'


READ_TRUNK = """
import sys
from foundation.networks import pretrained
for values in (False, True):
    try:
        pretrained.read_trunk(sys.argv[1], values)
    except ValueError as error:
        print(error)
"""


def test_data_kept_in_a_fifo_is_refused_and_never_read(tmp_path):
    """Refused from the metadata, at the config check and where the values
    are read; the FIFO is never opened (in a child, killed were it to wait)."""
    path = write_weights(tmp_path / 'weights.h5', fifo_storage)
    result = run_watched([sys.executable, '-c', READ_TRUNK, path], timeout_s=60)
    assert_bounded(result)
    said = f'{path}: conv2_block1_1_conv/kernel keeps its data in other files{KERAS_HINT}'
    assert result.code == 0 and result.out.splitlines() == [said, said]


def test_a_layer_list_that_is_no_list_of_names_is_refused_before_it_is_read(tmp_path):
    path = str(tmp_path / 'weights.h5')
    with h5py.File(path, 'w') as f:
        f.attrs['layer_names'] = np.zeros((40, 100), np.int64)
    with pytest.raises(DataError, match=r': / attribute layer_names is int64 of shape \(40, 100\), '
                                        r'not a list of at most 10000 names'):
        checked(path)


def test_a_fifo_named_as_the_weights_file_is_not_opened(tmp_path, monkeypatch):
    fifo = str(tmp_path / 'weights.h5')
    os.mkfifo(fifo)

    def no_open(*args, **kwargs):
        raise AssertionError('h5py opened the FIFO')
    monkeypatch.setattr(h5py, 'File', no_open)
    with pytest.raises(DataError) as caught:
        pretrained.read_trunk(fifo)
    assert str(caught.value) == f'{fifo} is not a regular file (a FIFO){KERAS_HINT}'


def with_values(values):
    """A hostile entry of finite shape holding `values` (broadcast)."""
    def write(f, group, name, shape):
        group.create_dataset(name, data=np.broadcast_to(np.asarray(values), shape))
    return write


REFUSED_BY_VALUES = {
    'NaN': (with_values(np.float32(np.nan)), 'holds 4096 values that are NaN or infinite'),
    'beyond float32': (with_values(np.float64(1e300)), 'holds 4096 values that are NaN or infinite'),
    'one inf': (with_values(np.r_[np.inf, np.zeros(63)].astype(np.float32)),
                'holds 64 values that are NaN or infinite'),
}


@pytest.mark.parametrize('case', REFUSED_BY_VALUES)
def test_a_value_that_is_not_finite_is_refused_once_read(tmp_path, case):
    hostile, says = REFUSED_BY_VALUES[case]
    path = write_weights(tmp_path / 'weights.h5', hostile)
    checked(path)  # the config check reads no data
    with pytest.raises(DataError) as caught:
        pretrained.read_trunk(path)
    assert str(caught.value) == f'{path}: conv2_block1_1_conv/kernel {says} (in float32){KERAS_HINT}'


def test_a_negative_variance_is_refused(tmp_path):
    path = str(tmp_path / 'weights.h5')
    write_weights(path)
    with h5py.File(path, 'a') as f:
        f['conv1_bn/conv1_bn/moving_variance:0'][0] = -1
    with pytest.raises(DataError, match=r': conv1_bn/moving_variance holds variances below 0; init_weights'):
        pretrained.read_trunk(path)


def test_every_dataset_is_read_once(tmp_path, monkeypatch):
    path = write_weights(tmp_path / 'weights.h5')
    reads = []
    real_getitem = h5py.Dataset.__getitem__

    def counted(dataset, key):
        reads.append(dataset.name)
        return real_getitem(dataset, key)
    monkeypatch.setattr(h5py.Dataset, '__getitem__', counted)
    checked(path)
    assert reads == []  # the config check: metadata alone
    values = pretrained.read_trunk(path)
    assert len(reads) == len(set(reads)) == len(pretrained.expected_weights())
    assert all(value.dtype == np.float32 and np.isfinite(value).all() for value in values.values())


def test_nan_weights_stop_main_before_any_step(tmp_path, capsys):
    """A run with NaN weights trained an epoch, then stopped with exit
    status 1 ('weights became NaN'): now one line before any step."""
    path = write_weights(tmp_path / 'weights.h5', with_values(np.float32(np.nan)))
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = main.main(['model=resnet50', f'init_weights={path}', f'datasets_root={tmp_path}',
                          'max_epochs=1'])
    err = capsys.readouterr().err
    assert code == 2 and err.count('\n') == 1, err
    assert err == (f'error: {path}: conv2_block1_1_conv/kernel holds 4096 values that are NaN or '
                   f'infinite (in float32){KERAS_HINT}\n')
    assert 'step' not in out.getvalue() and 'Initial weights' not in out.getvalue()
