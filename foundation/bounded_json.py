"""JSON read within bounds: a file's size checked before anything is read,
the nesting of any JSON text (a file's, an environment variable's: loads)
before the parser sees it (Python's parser recurses once per level, so text
nested a hundred thousand deep is a RecursionError, not a message). A file
out of bounds, or not JSON, is one DataError naming it."""
import itertools
import json
import re

from foundation.errors import DataError
from foundation.regular_files import UnfitFile, read_regular

# A run's record or a dataset.json is a few hundred KB at most (a record
# grows by about 1.6 KB an epoch with the custom model's layer statistics,
# 6 KB with ResNet50's). The bound keeps what the parser makes of a hostile
# file (a value of 16 bytes or more per byte of text, at worst) under 1 GB.
MAX_BYTES = 16 << 20
MAX_DEPTH = 64  # a run's record nests 5 deep, dataset.json 4

ESCAPED = re.compile(r'\\.', re.DOTALL)  # \" and \\ inside strings: they neither open nor close one
STRING = re.compile(r'"[^"]*"?')  # escapes gone, a string runs to the next quote (or the end)
NOT_A_BRACKET = re.compile(r'[^\[\]{}]+')
LEVEL_STEP = {'[': 1, '{': 1, ']': -1, '}': -1}


def nesting_depth(text):
    """The deepest nesting of arrays and objects in JSON text, counted
    without recursion: each bracket outside strings opens or closes a level."""
    brackets = NOT_A_BRACKET.sub('', STRING.sub('', ESCAPED.sub('', text)))
    return max(itertools.accumulate(map(LEVEL_STEP.__getitem__, brackets)), default=0)


def bounded_text(path, max_bytes):
    """The UTF-8 text of the regular file at `path`, of at most max_bytes
    (regular_files.read_regular: a FIFO is not opened, no more is read)."""
    return read_regular(path, max_bytes, 'such a file may hold').decode('utf-8')


def loads(text, max_depth=MAX_DEPTH, holder='such a file'):
    """The JSON value of `text`, which the caller read within its own bound
    (a file's size, an environment variable's); ValueError saying why where
    it nests deeper than max_depth (what `holder` may hold) or is not JSON.
    Every JSON the product reads from outside comes through here."""
    depth = nesting_depth(text)
    if depth > max_depth:
        raise ValueError(f'arrays and objects nested {depth} deep, more than the {max_depth} '
                         f'{holder} may hold')
    return json.loads(text)  # depth checked: its recursion stays far below Python's limit


def load(path, remedy, max_bytes=MAX_BYTES, max_depth=MAX_DEPTH):
    """The JSON value of the file at `path`; DataError '<path> is not
    readable (why); <remedy>' where it cannot be read, holds more than
    max_bytes, nests deeper than max_depth, or is not JSON."""
    try:
        return loads(bounded_text(path, max_bytes), max_depth)
    except (OSError, ValueError, UnfitFile) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        reason = error.reason if isinstance(error, UnfitFile) else (
            error.strerror if isinstance(error, OSError) and error.strerror else error)
        raise DataError(f'{path} is not readable ({reason}); {remedy}') from None
