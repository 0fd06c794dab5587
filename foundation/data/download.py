"""Fetches dataset files from their official addresses, checksum-verified.

A file is written under a temporary name and renamed only once its MD5 matches
the published one: a failed or tampered download leaves nothing behind.
"""
import dataclasses
import hashlib
import http.client
import os
import shutil
import urllib.error
import urllib.request

from foundation import regular_files, safe_io
from foundation.errors import DataError

CHUNK = 1 << 20


class ChecksumError(DataError):
    """A downloaded file whose MD5 is not the published one."""


class DownloadError(DataError):
    """None of a file's addresses could be reached."""


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    name: str    # file name in the data directory
    urls: tuple  # where to fetch it from, tried in order
    md5: str     # the published checksum


def md5_of(path):
    digest = hashlib.md5()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(CHUNK), b''):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(remote, directory, timeout=60):
    """Downloads `remote` into `directory`; returns its path or raises DataError."""
    path = os.path.join(directory, remote.name)
    failures, wrong_checksum = [], False
    for url in remote.urls:
        print(f'Downloading {url} -> {path}', flush=True)
        try:
            with safe_io.atomic_path(path) as tmp:
                with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, 'wb') as out:
                    shutil.copyfileobj(response, out, CHUNK)
                actual = md5_of(tmp)
                if actual != remote.md5:
                    raise ChecksumError(f'{url} sent a file with MD5 {actual}, expected {remote.md5}')
            return path
        # Any failure of one address (unreachable, broken reply, wrong bytes)
        # leaves nothing behind; the next address may still serve the file.
        except ChecksumError as error:
            failures.append(str(error))
            wrong_checksum = True
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            failures.append(f'{url}: {getattr(error, "reason", None) or error!r}')
    error_class = ChecksumError if wrong_checksum else DownloadError
    raise error_class(f'could not download {remote.name} ({"; ".join(failures)})')


def ensure_files(remotes, directory, download, alternative=''):
    """Paths of `remotes` in `directory`, downloading the missing ones if allowed.

    Without a network (or with download=False) the error lists exactly which
    files to put where, and `alternative` what else would do.
    """
    paths = [os.path.join(directory, r.name) for r in remotes]
    missing = [r for r, p in zip(remotes, paths) if not regular_files.present(p)]  # a FIFO: one line
    if not missing:
        return paths
    reason = 'download=False'
    if download:
        try:
            for remote in missing:
                fetch(remote, directory)
            return paths
        except DownloadError as error:
            reason = str(error)
    still = [r for r in missing if not os.path.isfile(os.path.join(directory, r.name))]
    listing = '\n'.join(f'  {r.name}  (from {r.urls[0]}, MD5 {r.md5})' for r in still)
    raise DataError(f'missing data files ({reason}). Put these files into '
                    f'{os.path.abspath(directory)}:\n{listing}'
                    + (f'\n{alternative}' if alternative else ''))
