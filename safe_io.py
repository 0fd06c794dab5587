"""Atomic file writing: a file either is complete or is not there at all.

Everything the application writes (downloads, history, plots, filters) goes
through `atomic_path`, so a crash or Ctrl-C mid-write never leaves a
half-written file under the final name.
"""
import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; renames it to `path` on success.

    On any exception the temporary file is removed and `path` is untouched.
    The temporary name keeps the extension, since some writers (matplotlib,
    scikit-image) choose the format from it.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    stem, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f'.{stem}.', suffix=f'.partial{ext}', dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_text(path, text):
    with atomic_path(path) as tmp:
        with open(tmp, 'w', encoding='utf-8') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
