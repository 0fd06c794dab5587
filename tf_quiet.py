"""Imports TensorFlow without its C++ start-up notices (oneDNN, no CUDA
driver, ...), which bypass every log level. Entry scripts call it before
anything imports TensorFlow; setting TF_CPP_MIN_LOG_LEVEL yourself shows the
notices again, and an import that fails shows them too."""
import os
import sys
import tempfile


def import_tensorflow_quietly():
    if 'tensorflow' in sys.modules or 'TF_CPP_MIN_LOG_LEVEL' in os.environ:
        import tensorflow  # noqa: F401
        return
    os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved_stderr, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors='replace'))
            raise
        finally:
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
    tensorflow.get_logger().setLevel('ERROR')
