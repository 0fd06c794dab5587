"""What the commands after training (evaluate.py, export.py, instruments.py)
write into a trained run's folder: all of a command's files or none of them
(safe_io.all_or_none), and a folder that cannot be written (a read-only
mount, one the user may not write, a full disk) said in one line that names
it and what to do, the run left as it was."""
import contextlib
import errno
import os

import tensorflow as tf

from foundation import safe_io, tf_errors
from foundation.errors import NotWritableError
from trainer import console

# A read-only mount, a folder of another user, one the system does not let be written.
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


@contextlib.contextmanager
def into_run(directory, run):
    """The block writes into `directory`, in or beside the folder of `run`
    (folder.Run): all or none of its files; a NotWritableError or
    OutOfSpace in one line where the folder cannot be written."""
    try:
        with safe_io.all_or_none():
            yield
    except (OSError, tf.errors.OpError) as error:
        explained = write_failure(error, directory, copy_advice(run))
        if explained is None:
            raise
        raise explained from None


def write_failure(error, directory, advice):
    """The one-line error of a write into `directory` that failed with
    `error`, saying `advice`; None for an error of another kind."""
    full = safe_io.out_of_space(error, console.shown_path(safe_io.nearest_folder(directory)),
                             f'free space there, or {advice}')
    if full:
        return full
    reason = not_writable_reason(error)
    if reason is None:
        return None
    return NotWritableError(f'cannot write into {console.shown_path(directory)} ({reason}): {advice}')


def not_writable_reason(error):
    """'read-only file system', 'permission denied' ... where `error` (an
    OSError or TensorFlow's error) says a folder cannot be written; else None."""
    if isinstance(error, tf.errors.PermissionDeniedError):  # '<path>; Read-only file system'
        return tf_errors.error_reason(error).rpartition('; ')[2].lower()
    if isinstance(error, OSError) and error.errno in NOT_WRITABLE:
        return os.strerror(error.errno).lower()
    return None


def copy_advice(run):
    """Where a run's folder cannot be written: copy it to another disk and
    name the copy, by datasets_root where the run lies in it (with the
    data where the copy lacks it), else by the checkpoint's path."""
    root = run.cfg['datasets_root']
    inside = os.path.relpath(os.path.abspath(run.directory), os.path.abspath(root))
    if inside.startswith(os.pardir):  # a checkpoint named by its path, outside datasets_root
        return (f"copy {console.shown_path(run.directory)} to a disk you can write and set "
                f"checkpoint to the checkpoint's path in the copy")
    data_dir = run.dirs['DATA_DIR']
    data = (f' data_dir={console.shown_path(data_dir)}'
            if run.cfg['data_dir'] is None and os.path.isdir(data_dir) else '')
    return f'copy the run to a disk you can write, as NEW/{inside}, and set datasets_root=NEW{data}'
