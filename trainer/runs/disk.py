"""A run's disk use (a folder's size, in words) and what a run that filled
its disk is told to do; foundation.safe_io.out_of_space tells a full disk
apart from other write errors, for every command."""
import os

# What a training run that filled its disk tells the user to do (safe_io.out_of_space).
RESUME_ADVICE = ('the last complete epoch is kept; free space there (or set datasets_root to another '
                 'disk) and run again with resume=True')


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
