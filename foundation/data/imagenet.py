"""ImageNet's classes and annotations as TensorFlow's own ImageNet scripts
use them (tensorflow/models, research/inception/inception/data/
build_imagenet_data.py):

* a synset's label is its line, 1..1000, in imagenet_lsvrc_2015_synsets.txt
  (a copy of TF's file lies beside this one; 0 stays unused, TF's background);
* image/class/text comes from imagenet_metadata.txt, `<wnid><TAB><name>` lines;
* the bounding boxes come from the CSV that TF's process_bounding_boxes.py
  writes, `<file name>,<xmin>,<ymin>,<xmax>,<ymax>` lines, in fractions of the
  image's width and height, read a row at a time and kept only for the images
  written, in an array of doubles (32 bytes a box) per image.
"""
import array
import collections.abc
import functools
import itertools
import os

from foundation import regular_files
from foundation.errors import DataError

SYNSETS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            'imagenet_lsvrc_2015_synsets.txt')
# TF's imagenet_metadata.txt is under 1 MB, its lines under 300 bytes; the
# bounding-box CSV about 30 MB (615,299 boxes), its lines under 80 bytes:
# bounds above both, checked before the file or a line is read whole. The
# boxes are kept only for the images asked for, in an array of doubles each.
TEXT_MAX_BYTES = 64 << 20
LINE_MAX_BYTES = 64 << 10
ANNOTATIONS = ("imagenet_metadata_file and imagenet_bbox_file take TF's imagenet_metadata.txt "
               "and the CSV of its process_bounding_boxes.py")


@functools.cache
def synsets():
    """The 1000 wnids in label order: synsets()[label - 1]."""
    with open(SYNSETS_FILE, encoding='ascii') as f:
        return tuple(line.strip() for line in f if line.strip())


def labels():
    """{wnid: official label 1..1000}."""
    return {wnid: label for label, wnid in enumerate(synsets(), start=1)}


def _lines(path):
    """(line number, text) of each line of the text file at `path`: a
    regular file of at most TEXT_MAX_BYTES (regular_files.open_regular), read
    a line at a time, each at most LINE_MAX_BYTES (one line of gigabytes is
    refused once that much is read), decoded as UTF-8."""
    try:
        f = regular_files.open_regular(path, TEXT_MAX_BYTES, 'an annotation file')
    except DataError as error:
        raise DataError(f'{error}; {ANNOTATIONS}') from None
    with f:
        for number in itertools.count(1):
            line = _line(f, path)
            if not line:
                return
            if len(line) > LINE_MAX_BYTES:
                raise DataError(f'{path}, line {number} is longer than {LINE_MAX_BYTES} bytes; '
                                f'{ANNOTATIONS}')
            try:
                yield number, line.decode('utf-8')
            except UnicodeDecodeError as error:
                raise DataError(f'{path}, line {number} is not UTF-8 text ({error.reason} at '
                                f'byte {error.start}); {ANNOTATIONS}') from None


def _line(f, path):
    """The next line of the binary file `f`, at most one byte longer than
    LINE_MAX_BYTES (which tells a longer line); b'' at its end."""
    try:
        return f.readline(LINE_MAX_BYTES + 1)
    except OSError as error:  # a disk's read error, say
        raise DataError(f'{path} is not a readable text file ({error})') from None


def _fields(path, separator, count, form):
    """(line number, [fields]) of each non-blank line of a text file split
    at `separator`; a line without `count` fields is a DataError that shows
    `form`."""
    for number, line in _lines(path):
        line = line.strip()
        if not line:
            continue
        fields = line.split(separator)
        if len(fields) != count:
            raise DataError(f'{path}, line {number}: expected {form}, got {line[:60]!r}')
        yield number, fields


def class_texts(path, wnids):
    """{wnid: human-readable name} of `wnids` from TF's imagenet_metadata.txt;
    a synset it does not name stops, as TF's script does."""
    names = {wnid: name for _, (wnid, name) in _fields(path, '\t', 2, '<wnid><TAB><name>')}
    missing = [wnid for wnid in wnids if wnid not in names]
    if missing:
        more = f' and {len(missing) - 1} more' if len(missing) > 1 else ''
        raise DataError(f"{path} has no name for synset {missing[0]}{more}; "
                        f"imagenet_metadata_file takes TF's imagenet_metadata.txt")
    return {wnid: names[wnid] for wnid in wnids}


class BoundingBoxes(collections.abc.Mapping):
    """{image file name: [[xmin, ymin, xmax, ymax], ...]}, held as one
    array of doubles per image: 32 bytes a box where a list of lists of
    floats takes about 180, the same values."""

    def __init__(self):
        self._flat = {}

    def add(self, name, box):
        self._flat.setdefault(name, array.array('d')).extend(box)

    def __getitem__(self, name):
        flat = self._flat[name]
        return [list(flat[i:i + 4]) for i in range(0, len(flat), 4)]

    def __iter__(self):
        return iter(self._flat)

    def __len__(self):
        return len(self._flat)


def bounding_boxes(path, names=None):
    """The BoundingBoxes of the CSV of TF's process_bounding_boxes.py, read a
    row at a time, of the images `names` (a set of file names; None: all).
    Every row is checked, kept or not: a box is fractions of its image with
    min <= max, as that script writes them (it clips to the image and orders
    each pair); a NaN, a value outside 0..1 or a reversed pair is a DataError
    that names the file and the line."""
    form = '<file name>,<xmin>,<ymin>,<xmax>,<ymax>'
    boxes = BoundingBoxes()
    for number, (name, *values) in _fields(path, ',', 5, form):
        try:
            xmin, ymin, xmax, ymax = box = [float(v) for v in values]
        except ValueError:
            raise DataError(f'{path}, line {number}: expected {form}, got {",".join(values)!r} '
                            f'after {name}') from None
        if not (0 <= xmin <= xmax <= 1 and 0 <= ymin <= ymax <= 1):  # False for a NaN too
            raise DataError(f'{path}, line {number}: the box of {name} is {",".join(values)}; expected '
                            f'fractions of the image, 0 <= xmin <= xmax <= 1 and 0 <= ymin <= ymax <= 1')
        if names is None or name in names:
            boxes.add(name, box)
    return boxes
