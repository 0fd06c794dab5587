"""Atomic file writing: a file either is complete or is not there at all.

Everything the application writes (downloads, history, plots, filters) goes
through `atomic_path`, so a crash or Ctrl-C mid-write never leaves a
half-written file under the final name. Inside `all_or_none`, the files of
a whole block (an evaluation's, an export's) appear together or not at all;
`atomic_folder` does the same for a folder another library writes, and puts
it in the place of the earlier one in one step.
"""
import contextlib
import ctypes
import errno
import fcntl
import functools
import os
import shutil
import tempfile

from foundation.errors import NotWritableError, OutOfSpace

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

    On any exception the temporary file is removed and `path` is untouched;
    an OSError that names no file (a write or flush of an open file) is
    raised naming `path`, so that what tells it can say where.
    """
    pending = PendingFile(path)
    try:
        yield pending.tmp
        if _open_groups:
            _open_groups[-1].append(pending)
        else:
            pending.commit()
    except OSError as error:
        pending.discard()
        if error.filename is None and error.errno is not None:
            raise OSError(error.errno, error.strerror, path) from error
        raise
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


# --- folders replaced in one step ------------------------------------------------------

PARTIAL, EARLIER, REMOVING = '.partial', '.earlier', '.removing'  # beside a folder: its new, its old, going


@contextlib.contextmanager
def atomic_folder(directory):
    """Yields a temporary folder beside `directory` to write into; it takes
    the place of `directory` once the block completes (replace_folder).
    Where the block fails, the temporary folder and the folders made for it
    are removed and `directory` stays as it was. One process at a time
    replaces the folders of a parent, and first settles what a killed one
    left there (settle_folders), for every folder of the parent."""
    partial, parent = directory + PARTIAL, os.path.dirname(os.path.abspath(directory))
    created = made_folders(parent)
    try:
        with locked_folder(parent):
            settle_folders(parent)
            yield partial
            replace_folder(partial, directory)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        remove_empty(created)
        raise


def replace_folder(partial, directory):
    """Renames `partial` to `directory` in one step where the system can
    exchange two folders' names (Linux, most local file systems), the
    earlier folder then removed. Elsewhere in two renames, the earlier
    folder set aside as <directory>.earlier meanwhile: put back where the
    second fails, and by settle_folders where the process died between."""
    if os.path.lexists(directory) and exchange(partial, directory):
        remove_folder(partial)  # now the earlier folder
        return
    earlier = directory + EARLIER
    if os.path.lexists(directory):
        os.replace(directory, earlier)
    try:
        os.replace(partial, directory)
    except BaseException:
        if os.path.lexists(earlier):
            os.replace(earlier, directory)
        raise
    remove_folder(earlier)


def settle_folders(parent):
    """Finishes what a killed replace_folder left in `parent`: a folder set
    aside (<name>.earlier) whose replacement never came is put back; a
    temporary folder, one set aside beside its replacement and one being
    removed go."""
    for name in sorted(os.listdir(parent)):
        path = os.path.join(parent, name)
        if not os.path.isdir(path):  # a file's temporary name (atomic_path) may end alike: not ours
            continue
        if name.endswith(EARLIER) and not os.path.lexists(path[:-len(EARLIER)]):
            os.replace(path, path[:-len(EARLIER)])
        elif name.endswith((PARTIAL, EARLIER, REMOVING)):
            remove_folder(path)


def remove_folder(path):
    """Removes the folder `path` (nothing where there is none), renamed to
    <path>.removing first: a removal killed midway leaves a name that says
    it is going, never half a folder under a name that says it is whole."""
    going = path if path.endswith(REMOVING) else path + REMOVING
    if going != path and os.path.lexists(path):
        shutil.rmtree(going, ignore_errors=True)
        os.replace(path, going)
    shutil.rmtree(going, ignore_errors=True)


@contextlib.contextmanager
def locked_folder(directory):
    """Holds an flock on the folder itself for the block (no lock file
    among its entries), so that one process at a time replaces folders in
    it. Where the file system takes no such lock (NFS emulates flock with
    write locks, which a folder cannot take), the block runs unlocked."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # linux/fcntl.h, linux/fs.h
_NO_EXCHANGE = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)  # no such call, or not on this file system


@functools.cache
def _renameat2():
    """libc's renameat2 (glibc 2.28 on), None where the C library has none."""
    call = getattr(ctypes.CDLL(None, use_errno=True), 'renameat2', None)
    if call is not None:
        call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return call


def exchange(first, second):
    """Swaps the names of two existing paths in one step; True once done,
    False where the system or the file system cannot (nothing changed)."""
    call = _renameat2()
    if call is None:
        return False
    if call(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in _NO_EXCHANGE:
        return False
    raise OSError(error, os.strerror(error), first, None, second)


def check_writable(directory):
    """Creates `directory` and writes and removes a probe file in it, its
    own: processes that probe one folder at once (sweep workers) never remove
    each other's."""
    try:
        os.makedirs(directory, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix='.write-probe-', dir=directory)
        os.close(handle)
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


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def out_of_space(error, directory, advice):
    """An OutOfSpace naming the disk of `directory` and its free space and
    saying `advice` if `error` (an OSError or a TensorFlow error, by its
    message) says that the disk is full, else None."""
    text = str(getattr(error, 'message', error))
    if getattr(error, 'errno', None) not in NO_SPACE and not any(
            message in text for message in ('No space left on device', 'Disk quota exceeded')):
        return None
    free = shutil.disk_usage(nearest_folder(directory)).free / 2 ** 20
    return OutOfSpace(f'the disk of {directory} is full ({free:.1f} MB free): {advice}')
