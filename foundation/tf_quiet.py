"""TensorFlow imported without its C++ start-up notices (oneDNN, no CUDA
driver, ...), which bypass every log level, and only when first needed.

Commands import it through `import_tensorflow_quietly` once their arguments
are checked; `OnFirstUse` stands for it in modules that a config check
imports (constant.py imports layers.py), so that a mistyped key is answered
before TensorFlow's import of several seconds. TF_CPP_MIN_LOG_LEVEL=0 shows
the notices again (its levels 1-3 do not hide them), and an import that
fails shows them too.
"""
import contextlib
import functools
import os
import sys
import tempfile


def notices_wanted():
    """Whether the user asked for TensorFlow's C++ notices: only
    TF_CPP_MIN_LOG_LEVEL=0 does. Its levels 1-3 do not hide the notices
    written before absl's logging starts (oneDNN, cudart), so those are
    hidden here for any other setting."""
    return os.environ.get('TF_CPP_MIN_LOG_LEVEL') == '0'


@contextlib.contextmanager
def stderr_hidden():
    """Holds back what C++ code writes to file descriptor 2 (Python's
    warnings bypass it only through sys.stderr, which writes to it too);
    replays it if the block fails, so that no reason is lost."""
    if notices_wanted():
        yield
        return
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved_stderr, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors='replace'))
            raise
        finally:
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)


def import_tensorflow_quietly():
    """The tensorflow module, imported now if it was not."""
    if 'tensorflow' in sys.modules:
        return sys.modules['tensorflow']
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
    with stderr_hidden():
        import tensorflow
    if not notices_wanted():
        tensorflow.get_logger().setLevel('ERROR')  # deprecation notices of TF's own modules
    return tensorflow


class OnFirstUse:
    """Stands for tensorflow (or one of its modules, by `path`, such as
    'compat.v1') and imports it quietly when one of its attributes is first
    used."""

    def __init__(self, path=''):
        self._path = path

    @functools.cached_property
    def _module(self):
        module = import_tensorflow_quietly()
        for part in filter(None, self._path.split('.')):
            module = getattr(module, part)
        return module

    def __getattr__(self, name):
        return getattr(self._module, name)
