"""ImageNet's classes and annotations as TensorFlow's own ImageNet scripts
use them (tensorflow/models, research/inception/inception/data/
build_imagenet_data.py):

* a synset's label is its line, 1..1000, in imagenet_lsvrc_2015_synsets.txt
  (a copy of TF's file lies beside this one; 0 stays unused, TF's background);
* image/class/text comes from imagenet_metadata.txt, `<wnid><TAB><name>` lines;
* the bounding boxes come from the CSV that TF's process_bounding_boxes.py
  writes, `<file name>,<xmin>,<ymin>,<xmax>,<ymax>` lines, in fractions of the
  image's width and height.
"""
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
# boxes of a CSV of 64 MB take about 0.7 GB as Python lists.
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


def bounding_boxes(path):
    """{image file name: [[xmin, ymin, xmax, ymax], ...]} of the CSV of TF's
    process_bounding_boxes.py."""
    form = '<file name>,<xmin>,<ymin>,<xmax>,<ymax>'
    boxes = {}
    for number, (name, *values) in _fields(path, ',', 5, form):
        try:
            boxes.setdefault(name, []).append([float(v) for v in values])
        except ValueError:
            raise DataError(f'{path}, line {number}: expected {form}, got {",".join(values)!r} '
                            f'after {name}') from None
    return boxes
