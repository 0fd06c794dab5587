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
import os

from foundation.errors import DataError

SYNSETS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            'imagenet_lsvrc_2015_synsets.txt')


@functools.cache
def synsets():
    """The 1000 wnids in label order: synsets()[label - 1]."""
    with open(SYNSETS_FILE, encoding='ascii') as f:
        return tuple(line.strip() for line in f if line.strip())


def labels():
    """{wnid: official label 1..1000}."""
    return {wnid: label for label, wnid in enumerate(synsets(), start=1)}


def _fields(path, separator, count, form):
    """[fields] of each non-blank line of a text file split at `separator`;
    a line without `count` fields is a DataError that shows `form`."""
    try:
        with open(path, encoding='utf-8') as f:
            lines = [(n, line.strip()) for n, line in enumerate(f, start=1) if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f'{path} is not a readable text file ({error})') from None
    rows = []
    for number, line in lines:
        fields = line.split(separator)
        if len(fields) != count:
            raise DataError(f'{path}, line {number}: expected {form}, got {line[:60]!r}')
        rows.append((number, fields))
    return rows


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
