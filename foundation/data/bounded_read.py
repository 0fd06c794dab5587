"""Reading files whose header declares the size of their data (idx, .npy):
the header is checked before anything is allocated, and never more is read
than it declares, so a file that lies costs one line, not gigabytes."""
import math
import os

import numpy as np

from foundation.errors import DataError

NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                      (2, 0): np.lib.format.read_array_header_2_0}
NUMBER_KINDS = 'biuf'  # bool, signed, unsigned, float: arrays of plain numbers


def read_exact(f, size, source):
    """The `size` bytes of data a header declared, reading at most one byte
    more to tell a file that holds more (a decompression bomb) from one
    that holds exactly as much."""
    data = f.read(size + 1)
    if len(data) != size:
        held = 'more' if len(data) > size else str(len(data))
        raise DataError(f'{source}: its header declares {size} bytes of data, the file holds '
                        f'{held}; delete it and write or download it again')
    return data


def check_data_size(f, size, source):
    """Refuses an open file whose bytes after f's position are not the
    `size` its header declares, before any of them is read."""
    held = os.fstat(f.fileno()).st_size - f.tell()
    if held != size:
        raise DataError(f'{source}: its header declares {size} bytes of data, the file holds '
                        f'{held}; delete it and write it again')


def check_declared(shape, item_shape, max_count, source):
    """Refuses a declared shape that is not [N, *item_shape] with N at most
    `max_count`; Python ints, so no product can wrap around."""
    shape, item_shape = tuple(int(d) for d in shape), tuple(item_shape)
    if len(shape) != 1 + len(item_shape) or shape[1:] != item_shape or shape[0] > max_count:
        expected = ', '.join(['N', *map(str, item_shape)])
        raise DataError(f'{source}: its header declares shape {list(shape)}, expected '
                        f'[{expected}] with N at most {max_count}')
    return shape


def read_npy_header(f, source):
    """(shape, dtype) of the .npy array at f's position, f left at the start
    of its data; DataError unless it is a C-order array of plain numbers in a
    format version numpy writes (1.0, 2.0)."""
    try:
        version = np.lib.format.read_magic(f)
    except ValueError as error:
        raise DataError(f'{source} is not a .npy file ({error})') from None
    if version not in NPY_HEADER_READERS:
        raise DataError(f'{source}: .npy format version {version[0]}.{version[1]} is not one '
                        f'this reads (1.0, 2.0); write the file again')
    try:
        shape, fortran_order, dtype = NPY_HEADER_READERS[version](f)
    except ValueError as error:
        raise DataError(f'{source}: the .npy header is not readable ({error})') from None
    if fortran_order or dtype.kind not in NUMBER_KINDS or dtype.fields is not None:
        order = ' in Fortran order' if fortran_order else ''
        raise DataError(f'{source} holds a {dtype} array{order}; expected plain numbers in C order')
    return shape, dtype


def npy_data_size(shape, dtype):
    """Bytes of an array's data, in Python ints."""
    return math.prod(int(d) for d in shape) * dtype.itemsize
