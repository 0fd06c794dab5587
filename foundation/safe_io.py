"""Atomic file writing: a file either is complete or is not there at all.

Everything the application writes (downloads, history, plots, filters) goes
through `atomic_path`, so a crash or Ctrl-C mid-write never leaves a
half-written file under the final name.
"""
import contextlib
import os
import tempfile

from foundation.errors import NotWritableError


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


class PendingFile:
    """A temporary file beside `path` that becomes `path` only on commit().

    The temporary name starts with a dot and keeps the extension, since some
    writers (matplotlib, scikit-image) choose the format from it.
    """

    def __init__(self, path):
        self.path = path
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        stem, ext = os.path.splitext(os.path.basename(path))
        fd, self.tmp = tempfile.mkstemp(prefix=f'.{stem}.', suffix=f'.partial{ext}', dir=directory)
        os.close(fd)

    def commit(self):
        os.chmod(self.tmp, 0o666 & ~_umask())  # mkstemp's 0600 is for the temporary file only
        os.replace(self.tmp, self.path)

    def discard(self):
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.tmp)


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; renames it to `path` on success.

    On any exception the temporary file is removed and `path` is untouched.
    """
    pending = PendingFile(path)
    try:
        yield pending.tmp
        pending.commit()
    except BaseException:
        pending.discard()
        raise


def check_writable(directory):
    """Creates `directory` and writes and removes a probe file in it."""
    try:
        os.makedirs(directory, exist_ok=True)
        write_text(os.path.join(directory, '.write-probe'), '')
        os.remove(os.path.join(directory, '.write-probe'))
    except OSError as error:
        raise NotWritableError(f'cannot write to {directory} ({error.strerror or error}); make it '
                               f'writable or set datasets_root=PATH to a writable folder') from None


def write_text(path, text):
    with atomic_path(path) as tmp:
        with open(tmp, 'w', encoding='utf-8') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
