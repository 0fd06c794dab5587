"""A full disk, told apart from other write errors and named with its free
space."""
import os

import tensorflow as tf

from foundation import safe_io
from foundation.errors import OutOfSpace  # noqa: F401 - what a full disk is told as, here with the run's advice

v1 = tf.compat.v1


# What a training run that filled its disk tells the user to do.
RESUME_ADVICE = ('the last complete epoch is kept; free space there (or set datasets_root to another '
                 'disk) and run again with resume=True')


def out_of_space(error, directory, advice=RESUME_ADVICE):
    """safe_io.out_of_space, with a training run's advice unless told another."""
    return safe_io.out_of_space(error, directory, advice)


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
