"""A full disk, told apart from other write errors and named with its free
space."""
import errno
import os
import shutil

import tensorflow as tf

from foundation import safe_io
from foundation.errors import UserError

v1 = tf.compat.v1


class OutOfSpace(UserError):
    """A disk filled up while the run wrote to it."""


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


# What a training run that filled its disk tells the user to do.
RESUME_ADVICE = ('the last complete epoch is kept; free space there (or set datasets_root to another '
                 'disk) and run again with resume=True')


def out_of_space(error, directory, advice=RESUME_ADVICE):
    """An OutOfSpace naming the disk and saying `advice` if `error` (an
    OSError or a TensorFlow error) says that the disk is full, else None."""
    text = str(getattr(error, 'message', error))
    if getattr(error, 'errno', None) not in NO_SPACE and not any(
            message in text for message in ('No space left on device', 'Disk quota exceeded')):
        return None
    free = shutil.disk_usage(safe_io.nearest_folder(directory)).free / 2 ** 20
    return OutOfSpace(f'the disk of {directory} is full ({free:.1f} MB free): {advice}')


def folder_bytes(path):
    """The bytes of the files under `path` (links not followed); 0 where it is gone."""
    total = 0
    for parent, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(parent, name)).st_size
            except OSError:  # removed meanwhile
                pass
    return total


def size_text(size):
    """'807 MB', '1.2 GB', '35 kB': a size as people read it (powers of 1000)."""
    for unit, scale in (('GB', 1e9), ('MB', 1e6), ('kB', 1e3)):
        if size >= scale:
            return f'{size / scale:.{1 if size < 10 * scale else 0}f} {unit}'
    return f'{size} bytes'
