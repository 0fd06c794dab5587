"""TensorFlow imported without its C++ start-up notices (oneDNN, no CUDA
driver, ...), which bypass every log level, and only when first needed.

Commands import it through `import_tensorflow_quietly` once their arguments
are checked; `OnFirstUse` stands for it in modules that a config check
imports (constant.py imports layers.py), so that a mistyped key is answered
before TensorFlow's import of several seconds. Setting TF_CPP_MIN_LOG_LEVEL
yourself shows the notices again, and an import that fails shows them too.
"""
import functools
import os
import sys
import tempfile


def import_tensorflow_quietly():
    """The tensorflow module, imported now if it was not."""
    if 'tensorflow' in sys.modules:
        return sys.modules['tensorflow']
    if 'TF_CPP_MIN_LOG_LEVEL' in os.environ:
        import tensorflow  # the user chose the log level: nothing to hide
        return tensorflow
    os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow
        except BaseException:
            os.dup2(saved_stderr, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors='replace'))
            raise
        finally:
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
    tensorflow.get_logger().setLevel('ERROR')
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
