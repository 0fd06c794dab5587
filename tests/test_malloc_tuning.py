"""malloc_tuning: applied where glibc is the C library, a no-op elsewhere."""
import platform

import pytest

from foundation import malloc_tuning


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='mallopt is glibc only')
def test_threshold_is_applied_on_glibc():
    assert malloc_tuning.set_mmap_threshold(32768) is True


def test_none_leaves_the_c_library_alone():
    assert malloc_tuning.set_mmap_threshold(None) is False
