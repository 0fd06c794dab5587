"""Files read with their kind and size checked before a byte is read.

A path from a folder's listing (or a record, or a config key) may name
anything: a link to /dev/zero (bytes without end), a FIFO (an open that
waits for a writer), a socket. `stat` tells them apart without opening them,
so each file is found to be a regular one of a bounded size first, then
opened without blocking and read no further than that bound."""
import os
import stat

from foundation.errors import DataError

# What stat says a path is, where it is no regular file.
FILE_KINDS = ((stat.S_ISDIR, 'a folder'), (stat.S_ISFIFO, 'a FIFO'),
              (stat.S_ISCHR, 'a character device'), (stat.S_ISBLK, 'a block device'),
              (stat.S_ISSOCK, 'a socket'))


class UnfitFile(DataError):
    """A path that is no regular file, a file larger than its kind ever is,
    or one that cannot be opened: found before a byte of it is read."""

    def __init__(self, path, reason):
        super().__init__(f'{path} {reason}')
        self.path, self.reason = path, reason


class NotRegularFile(UnfitFile):
    """A FIFO, device, socket or folder where a file is read, or a path that
    stat cannot follow (a dangling link, a loop of links): what a folder's
    listing skips."""


def kind_of(mode):
    """'a FIFO', 'a character device', ... of a stat mode that is no regular file's."""
    return next((kind for is_kind, kind in FILE_KINDS if is_kind(mode)), 'a special file')


def checked_stat(info, path, max_bytes, what):
    """`info` (an os.stat_result of `path`) if it is a regular file of at most
    `max_bytes` (None: of any size), else an UnfitFile that says which bound
    `what` sets."""
    if not stat.S_ISREG(info.st_mode):
        raise NotRegularFile(path, f'is not a regular file ({kind_of(info.st_mode)})')
    if max_bytes is not None and info.st_size > max_bytes:
        raise UnfitFile(path, f'holds {info.st_size} bytes, more than {what} ({max_bytes} at most)')
    return info


def regular_file(path, max_bytes, what):
    """The os.stat_result of `path` if it is a regular file (a link to one is
    followed) of at most `max_bytes`; stat opens nothing, so a FIFO or a
    device is refused before it could block or stream."""
    try:
        info = os.stat(path)
    except OSError as error:
        raise NotRegularFile(path, f'cannot be read ({error.strerror or error})') from None
    return checked_stat(info, path, max_bytes, what)


def present(path):
    """os.path.isfile for a path where a file is expected: whether a regular
    file is there (a link to one followed), False where nothing is, and
    NotRegularFile where something else is (a FIFO, a device, a folder, a
    dangling link), which isfile called missing: 'no such file' for
    /dev/zero sent the user looking for what was there."""
    if not os.path.lexists(path):
        return False
    regular_file(path, None, None)
    return True


def open_regular(path, max_bytes, what):
    """The regular file at `path` (regular_file's checks) opened for reading
    in binary. O_NONBLOCK, and fstat on what was opened: a FIFO put in its
    place after the stat neither blocks the open nor gets read."""
    regular_file(path, max_bytes, what)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as error:  # a regular file that this user may not read, say
        raise UnfitFile(path, f'cannot be read ({error.strerror or error})') from None
    try:
        checked_stat(os.fstat(fd), path, max_bytes, what)
    except UnfitFile:
        os.close(fd)
        raise
    return os.fdopen(fd, 'rb')


def read_regular(path, max_bytes, what):
    """The bytes of the regular file at `path`, at most `max_bytes` of them:
    one byte more read tells a file that grew since its stat."""
    with open_regular(path, max_bytes, what) as f:
        try:
            data = f.read(max_bytes + 1)
        except OSError as error:  # a disk's read error, say
            raise UnfitFile(path, f'cannot be read ({error.strerror or error})') from None
    if len(data) > max_bytes:
        raise UnfitFile(path, f'holds more than {what} ({max_bytes} bytes at most)')
    return data


def not_a_folder(path):
    """What `path` is where it exists as something else than a folder ('a
    regular file', 'a FIFO', ...), else None (a folder, or nothing there yet)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # absent: created, downloaded into, or said missing, by what reads it
    if stat.S_ISDIR(mode):
        return None
    return 'a regular file' if stat.S_ISREG(mode) else kind_of(mode)
