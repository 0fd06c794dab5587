"""Atomic file writing: a file either is complete or is not there at all.

Everything the application writes (downloads, history, plots, filters) goes
through `atomic_path`, so a crash or Ctrl-C mid-write never leaves a
half-written file under the final name. Inside `all_or_none`, the files of
a whole block (an evaluation's, an export's) appear together or not at all;
`atomic_folder` does the same for a folder another library writes.
"""
import contextlib
import os
import shutil
import tempfile

from foundation.errors import NotWritableError

_open_groups = []  # the files of the all_or_none block open now, waiting to be renamed


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def nearest_folder(path):
    """`path` if it is a folder, else the nearest folder above it that
    exists: the disk it is, or would be, written on."""
    path = os.path.abspath(path)
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def made_folders(directory):
    """Creates `directory` and what is missing above it; returns the
    folders it created, deepest first (none are left where it fails)."""
    missing, path = [], os.path.abspath(directory)
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        missing.append(path)
        path = os.path.dirname(path)
    try:
        os.makedirs(directory, exist_ok=True)
    except BaseException:
        remove_empty(missing)
        raise
    return missing


def remove_empty(folders):
    """Removes those of `folders` (deepest first) that hold nothing: a
    folder that got another file stays."""
    for folder in folders:
        with contextlib.suppress(OSError):
            os.rmdir(folder)


class PendingFile:
    """A temporary file beside `path` that becomes `path` only on commit().

    The temporary name starts with a dot and keeps the extension, since some
    writers (matplotlib, scikit-image) choose the format from it.
    """

    def __init__(self, path):
        self.path = path
        directory = os.path.dirname(os.path.abspath(path))
        self.created = made_folders(directory)
        stem, ext = os.path.splitext(os.path.basename(path))
        try:
            fd, self.tmp = tempfile.mkstemp(prefix=f'.{stem}.', suffix=f'.partial{ext}', dir=directory)
        except BaseException:
            remove_empty(self.created)
            raise
        os.close(fd)

    def commit(self):
        os.chmod(self.tmp, 0o666 & ~_umask())  # mkstemp's 0600 is for the temporary file only
        os.replace(self.tmp, self.path)

    def discard(self):
        """Removes the temporary file and the folders made for it, if empty;
        quietly: the error that made the write fail is the one to report."""
        with contextlib.suppress(OSError):
            os.remove(self.tmp)
        remove_empty(self.created)


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; renames it to `path` on success
    (inside all_or_none: when the block completes).

    On any exception the temporary file is removed and `path` is untouched.
    """
    pending = PendingFile(path)
    try:
        yield pending.tmp
        if _open_groups:
            _open_groups[-1].append(pending)
        else:
            pending.commit()
    except BaseException:
        pending.discard()
        raise


@contextlib.contextmanager
def all_or_none():
    """The files atomic_path writes inside the block are renamed to their
    names only once the whole block has completed: where it fails, none of
    them is there and the files they would have replaced are as they were.
    A block inside another is part of the outer one."""
    if _open_groups:
        yield
        return
    pending = []
    _open_groups.append(pending)
    try:
        try:
            yield
        finally:
            _open_groups.pop()
        for written in pending:
            written.commit()
    except BaseException:
        for written in reversed(pending):
            written.discard()
        raise


@contextlib.contextmanager
def atomic_folder(directory):
    """Yields a temporary folder beside `directory` to write into; it takes
    the place of `directory` once the block completes, the earlier one
    removed only then. Where the block fails, the temporary folder and the
    folders made for it are removed and `directory` stays as it was."""
    partial, earlier = f'{directory}.partial', f'{directory}.earlier'
    shutil.rmtree(partial, ignore_errors=True)  # left by a write that was killed
    created = made_folders(os.path.dirname(os.path.abspath(directory)))
    try:
        yield partial
        replace_folder(partial, directory, earlier)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        remove_empty(created)
        raise
    shutil.rmtree(earlier, ignore_errors=True)


def replace_folder(partial, directory, earlier):
    """Renames `partial` to `directory`, the folder there set aside as
    `earlier` meanwhile and put back where the rename fails."""
    shutil.rmtree(earlier, ignore_errors=True)
    if os.path.exists(directory):
        os.replace(directory, earlier)
    try:
        os.replace(partial, directory)
    except BaseException:
        if os.path.exists(earlier):
            os.replace(earlier, directory)
        raise


def check_writable(directory):
    """Creates `directory` and writes and removes a probe file in it."""
    probe = os.path.join(directory, '.write-probe')
    try:
        os.makedirs(directory, exist_ok=True)
        with open(probe, 'w', encoding='utf-8'):
            pass
        os.remove(probe)
    except OSError as error:
        raise NotWritableError(f'cannot write to {directory} ({error.strerror or error}); make it '
                               f'writable or set datasets_root=PATH to a writable folder') from None


def write_text(path, text):
    with atomic_path(path) as tmp:
        with open(tmp, 'w', encoding='utf-8') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
