"""glibc's malloc keeps freed blocks in per-thread arenas, where a streamed
run's record buffers (about 50 KB each, allocated and freed by tf.data's
threads) fragment: the process grew with every pass over the training
records. Serving blocks from a threshold up by mmap hands them back
to the system when freed, and the memory stays flat (bench/streaming.py: the
reader alone gets slower, training does not measurably)."""
import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h


def set_mmap_threshold(threshold):
    """Applies the threshold (bytes) where glibc is the C library; returns
    whether it did. None leaves glibc's own dynamic threshold."""
    if threshold is None:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c'))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc: nothing to tune
        return False
    return mallopt(M_MMAP_THRESHOLD, int(threshold)) == 1
