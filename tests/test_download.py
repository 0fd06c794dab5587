"""download.py and safe_io.atomic_path, against a local HTTP server on 127.0.0.1."""
import hashlib
import os
import socket
import threading
import urllib.request

import numpy as np
import pytest

from foundation import safe_io
from foundation.data import download, loaders
from foundation.data.download import ChecksumError, DataError, RemoteFile
from tests import fixtures

PAYLOADS = {'a.bin': b'alpha' * 1000, 'b.bin': bytes(range(256)) * 10, 'c.bin': b'\x00gamma\n'}


def md5(raw):
    return hashlib.md5(raw).hexdigest()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for var in ('http_proxy', 'HTTP_PROXY', 'all_proxy', 'ALL_PROXY'):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv('no_proxy', '127.0.0.1,localhost')
    monkeypatch.setenv('NO_PROXY', '127.0.0.1,localhost')


@pytest.fixture
def server(tmp_path):
    served = tmp_path / 'served'
    served.mkdir()
    for name, raw in PAYLOADS.items():
        (served / name).write_bytes(raw)
    with fixtures.serve_directory(served) as srv:
        srv.dir = served
        yield srv


@pytest.fixture
def target(tmp_path):
    path = tmp_path / 'target'
    path.mkdir()
    return path


def remote(server, name, md5_hex=None, first=()):
    return RemoteFile(name, tuple(first) + (server.url + name,), md5_hex or md5(PAYLOADS[name]))


# --- fetch --------------------------------------------------------------------

def test_fetch_writes_exact_bytes(server, target):
    path = download.fetch(remote(server, 'b.bin'), str(target), timeout=10)
    assert path == os.path.join(str(target), 'b.bin')
    assert open(path, 'rb').read() == PAYLOADS['b.bin']
    assert os.listdir(target) == ['b.bin']
    assert server.requests == ['/b.bin']


def test_fetch_creates_missing_directory(server, tmp_path):
    directory = tmp_path / 'new' / 'dir'
    path = download.fetch(remote(server, 'a.bin'), str(directory), timeout=10)
    assert open(path, 'rb').read() == PAYLOADS['a.bin']


def test_fetch_wrong_md5_raises_and_leaves_nothing(server, target):
    with pytest.raises(ChecksumError) as info:
        download.fetch(remote(server, 'a.bin', md5_hex='0' * 32), str(target), timeout=10)
    assert 'a.bin' in str(info.value)
    assert isinstance(info.value, DataError)
    assert os.listdir(target) == []


@pytest.mark.parametrize('first', ['404', 'closed_port'])
def test_fetch_falls_back_to_second_url(server, target, first):
    bad = server.url + 'missing.bin' if first == '404' else fixtures.closed_port_url('a.bin')
    path = download.fetch(remote(server, 'a.bin', first=[bad]), str(target), timeout=10)
    assert open(path, 'rb').read() == PAYLOADS['a.bin']
    assert os.listdir(target) == ['a.bin']


def test_fetch_all_urls_fail_raises_data_error(server, target):
    urls = (server.url + 'nope.bin', fixtures.closed_port_url('a.bin'))
    with pytest.raises(download.DownloadError) as info:
        download.fetch(RemoteFile('a.bin', urls, md5(PAYLOADS['a.bin'])), str(target), timeout=10)
    assert isinstance(info.value, DataError)
    assert 'a.bin' in str(info.value) and urls[0] in str(info.value) and urls[1] in str(info.value)
    assert os.listdir(target) == []


def raw_http_server(reply):
    """A TCP server answering every connection with `reply` bytes, then closing."""
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    sock.listen(8)

    def run():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(reply)

    threading.Thread(target=run, daemon=True).start()
    return sock, f'http://127.0.0.1:{sock.getsockname()[1]}/a.bin'


@pytest.mark.parametrize('reply', [
    b'garbage\r\n\r\n',
    b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n',
], ids=['bad_status_line', 'broken_chunked_body'])
def test_fetch_protocol_error_falls_back_to_second_url(server, target, reply):
    sock, bad = raw_http_server(reply)
    try:
        path = download.fetch(remote(server, 'a.bin', first=[bad]), str(target), timeout=10)
    finally:
        sock.close()
    assert open(path, 'rb').read() == PAYLOADS['a.bin']


def test_fetch_wrong_bytes_from_first_mirror_falls_back(server, target):
    (server.dir / 'wrong.bin').write_bytes(b'<html>moved</html>')
    rf = RemoteFile('a.bin', (server.url + 'wrong.bin', server.url + 'a.bin'), md5(PAYLOADS['a.bin']))
    path = download.fetch(rf, str(target), timeout=10)
    assert open(path, 'rb').read() == PAYLOADS['a.bin']
    assert os.listdir(target) == ['a.bin']


# --- ensure_files -------------------------------------------------------------

def test_ensure_files_fetches_only_missing(server, target):
    (target / 'b.bin').write_bytes(PAYLOADS['b.bin'])
    remotes = [remote(server, n) for n in ('a.bin', 'b.bin', 'c.bin')]
    paths = download.ensure_files(remotes, str(target), True)
    assert paths == [os.path.join(str(target), n) for n in ('a.bin', 'b.bin', 'c.bin')]
    assert sorted(server.requests) == ['/a.bin', '/c.bin']
    for name in PAYLOADS:
        assert (target / name).read_bytes() == PAYLOADS[name]
    assert sorted(os.listdir(target)) == ['a.bin', 'b.bin', 'c.bin']


def test_ensure_files_all_present_makes_no_request(server, target):
    for name, raw in PAYLOADS.items():
        (target / name).write_bytes(raw)
    paths = download.ensure_files([remote(server, n) for n in PAYLOADS], str(target), True)
    assert paths == [os.path.join(str(target), n) for n in PAYLOADS]
    assert server.requests == []


def test_ensure_files_unreachable_lists_missing_and_directory(target, monkeypatch):
    monkeypatch.setattr(download, 'fetch', _short_timeout(download.fetch))
    (target / 'b.bin').write_bytes(PAYLOADS['b.bin'])
    remotes = [RemoteFile(n, (fixtures.closed_port_url(n),), md5(PAYLOADS[n])) for n in PAYLOADS]
    with pytest.raises(DataError) as info:
        download.ensure_files(remotes, str(target), True)
    message = str(info.value)
    assert 'a.bin' in message and 'c.bin' in message and 'b.bin' not in message.split(':\n', 1)[1]
    assert str(target) in message
    assert os.listdir(target) == ['b.bin']


def test_ensure_files_relative_directory_is_shown_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rf = RemoteFile('a.bin', ('http://127.0.0.1:9/a.bin',), md5(b''))
    with pytest.raises(DataError) as info:
        download.ensure_files([rf], 'data', False)
    assert str(tmp_path / 'data') in str(info.value)


def test_ensure_files_download_false_does_not_touch_network(server, target, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError('network used with download=False')
    monkeypatch.setattr(urllib.request, 'urlopen', no_network)
    (target / 'a.bin').write_bytes(PAYLOADS['a.bin'])
    remotes = [remote(server, n) for n in PAYLOADS]
    with pytest.raises(DataError) as info:
        download.ensure_files(remotes, str(target), False)
    message = str(info.value)
    assert 'b.bin' in message and 'c.bin' in message and str(target) in message
    assert server.requests == []
    assert os.listdir(target) == ['a.bin']


def test_ensure_files_checksum_error_leaves_nothing(server, target):
    remotes = [remote(server, 'a.bin'), remote(server, 'c.bin', md5_hex='f' * 32)]
    with pytest.raises(DataError, match='c.bin'):
        download.ensure_files(remotes, str(target), True)
    assert 'c.bin' not in os.listdir(target)
    assert all('partial' not in n for n in os.listdir(target))


def _short_timeout(fetch):
    return lambda remote, directory, timeout=5: fetch(remote, directory, timeout=5)


# --- loaders through the download path ----------------------------------------

def test_load_mnist_downloads_from_local_server(tmp_path, monkeypatch):
    served, data_dir = tmp_path / 'served', tmp_path / 'data'
    a = fixtures.write_mnist_gz(served, n_train=60, n_test=20, seed=4)
    with fixtures.serve_directory(served) as srv:
        remotes = {key: RemoteFile(name, (fixtures.closed_port_url(name), srv.url + name),
                                   fixtures.md5_file(served / name))
                   for key, name in fixtures.MNIST_GZ_NAMES.items()}
        assert set(remotes) == set(loaders.MNIST_REMOTES)
        monkeypatch.setattr(loaders, 'MNIST_REMOTES', remotes)
        data = loaders.load_mnist(str(data_dir), 0, True)
        assert sorted(srv.requests) == sorted('/' + n for n in fixtures.MNIST_GZ_NAMES.values())
        again = loaders.load_mnist(str(data_dir), 0, True)
        assert len(srv.requests) == 4  # cached, not fetched twice
    assert sorted(os.listdir(data_dir)) == sorted(fixtures.MNIST_GZ_NAMES.values())
    for name in fixtures.MNIST_GZ_NAMES.values():
        assert (data_dir / name).read_bytes() == (served / name).read_bytes()
    np.testing.assert_array_equal(data.valid.images, a['x_train'][:5])
    np.testing.assert_array_equal(data.train.images, a['x_train'][5:])
    np.testing.assert_array_equal(data.train.labels, a['y_train'][5:])
    np.testing.assert_array_equal(data.test.images, a['x_test'])
    np.testing.assert_array_equal(data.test.labels, a['y_test'])
    np.testing.assert_array_equal(again.train.images, data.train.images)


def test_load_cifar_downloads_archive_from_local_server(tmp_path, monkeypatch):
    served, data_dir = tmp_path / 'served', tmp_path / 'data'
    a = fixtures.write_cifar_tar_gz(served, n_per_batch=10, seed=2)
    name = fixtures.CIFAR_ARCHIVE
    with fixtures.serve_directory(served) as srv:
        monkeypatch.setattr(loaders, 'CIFAR_ARCHIVE',
                            RemoteFile(name, (srv.url + name,), fixtures.md5_file(served / name)))
        data = loaders.load_cifar_32(str(data_dir), 0, True)
        assert srv.requests == ['/' + name]
    assert os.listdir(data_dir) == [name]
    np.testing.assert_array_equal(data.valid.images, a['x_train'][:5])
    np.testing.assert_array_equal(data.train.labels, a['y_train'][5:])
    np.testing.assert_array_equal(data.test.images, a['x_test'])


# --- safe_io.atomic_path ------------------------------------------------------

@pytest.mark.parametrize('error', [RuntimeError, KeyboardInterrupt])
def test_atomic_path_exception_keeps_old_file(tmp_path, error):
    target = tmp_path / 'history.json'
    target.write_text('old')
    with pytest.raises(error):
        with safe_io.atomic_path(str(target)) as tmp:
            assert os.path.dirname(tmp) == str(tmp_path) and tmp != str(target)
            assert tmp.endswith('.json')
            with open(tmp, 'w') as f:
                f.write('new, half written')
            raise error()
    assert target.read_text() == 'old'
    assert os.listdir(tmp_path) == ['history.json']


def test_atomic_path_exception_without_old_file_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        with safe_io.atomic_path(str(tmp_path / 'x.png')) as tmp:
            open(tmp, 'wb').write(b'partial')
            raise ValueError
    assert os.listdir(tmp_path) == []


def test_atomic_path_success_replaces(tmp_path):
    target = tmp_path / 'out.txt'
    target.write_text('old')
    with safe_io.atomic_path(str(target)) as tmp:
        with open(tmp, 'w') as f:
            f.write('new')
        assert target.read_text() == 'old'  # not visible before the block ends
    assert target.read_text() == 'new'
    assert os.listdir(tmp_path) == ['out.txt']
