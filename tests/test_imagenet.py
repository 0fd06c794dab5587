"""ImageNet records in the format of TensorFlow's own ImageNet scripts, both
ways: TFRecordsWriter's records equal, field for field, what their
`_convert_to_example` builds for the same image and parse with their
`parse_example_proto`; shards written with their layout read in the trainer.

`_convert_to_example`, `ImageCoder`'s PNG and CMYK conversions and
`parse_example_proto` are transcribed from tensorflow/models (Apache 2.0):
research/inception/inception/data/build_imagenet_data.py and
research/inception/inception/image_processing.py, with TF 2's names for
TF 1's (tf.io.*, tf.compat.v1.*).
"""
import contextlib
import hashlib
import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import TFRecordsReader
import TFRecordsWriter
from foundation.data import imagenet
from foundation.errors import ConfigError, DataError
from tests.test_streaming import data_dir, read_examples, read_pass, reader_cfg, smooth_image
from trainer.config import settings
from trainer.training import input_source
from trainer.training.input_source import make_input

v1 = tf.compat.v1
# The first, 388th and last synsets of TF's list: official labels 1, 388, 1000.
WNIDS = ('n01440764', 'n02509815', 'n15075141')
TEXTS = {'n01440764': 'tench, Tinca tinca', 'n02509815': 'lesser panda, red panda',
         'n15075141': 'toilet tissue, toilet paper, bathroom tissue'}
BOXES = {'n01440764_0.JPEG': [[0.1, 0.2, 0.5, 0.6], [0.0, 0.25, 1.0, 0.75]],
         'ILSVRC2012_val_n02509815.JPEG': [[0.3, 0.1, 0.9, 0.8]]}


# --- transcribed from TensorFlow's scripts ------------------------------------------------

def _int64_feature(value):
    """Wrapper for inserting int64 features into Example proto."""
    if not isinstance(value, list):
        value = [value]
    return tf.train.Feature(int64_list=tf.train.Int64List(value=value))


def _float_feature(value):
    """Wrapper for inserting float features into Example proto."""
    if not isinstance(value, list):
        value = [value]
    return tf.train.Feature(float_list=tf.train.FloatList(value=value))


def _bytes_feature(value):
    """Wrapper for inserting bytes features into Example proto."""
    if isinstance(value, str):
        value = bytes(value, encoding='utf-8')
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _convert_to_example(filename, image_buffer, label, synset, human, bbox, height, width):
    """Build an Example proto for an example (build_imagenet_data.py)."""
    xmin = []
    ymin = []
    xmax = []
    ymax = []
    for b in bbox:
        assert len(b) == 4
        [coordinates.append(point) for coordinates, point in zip([xmin, ymin, xmax, ymax], b)]
    colorspace = 'RGB'
    channels = 3
    image_format = 'JPEG'
    example = tf.train.Example(features=tf.train.Features(feature={
        'image/height': _int64_feature(height),
        'image/width': _int64_feature(width),
        'image/colorspace': _bytes_feature(colorspace),
        'image/channels': _int64_feature(channels),
        'image/class/label': _int64_feature(label),
        'image/class/synset': _bytes_feature(synset),
        'image/class/text': _bytes_feature(human),
        'image/object/bbox/xmin': _float_feature(xmin),
        'image/object/bbox/xmax': _float_feature(xmax),
        'image/object/bbox/ymin': _float_feature(ymin),
        'image/object/bbox/ymax': _float_feature(ymax),
        'image/object/bbox/label': _int64_feature([label] * len(xmin)),
        'image/format': _bytes_feature(image_format),
        'image/filename': _bytes_feature(os.path.basename(filename)),
        'image/encoded': _bytes_feature(image_buffer)}))
    return example


class ImageCoder:
    """TensorFlow image coding utilities (build_imagenet_data.py), in a
    graph of their own."""

    def __init__(self):
        graph = tf.Graph()
        with graph.as_default():
            self._png_data = v1.placeholder(dtype=tf.string)
            image = tf.image.decode_png(self._png_data, channels=3)
            self._png_to_jpeg = tf.image.encode_jpeg(image, format='rgb', quality=100)
            self._cmyk_data = v1.placeholder(dtype=tf.string)
            image = tf.image.decode_jpeg(self._cmyk_data, channels=0)
            self._cmyk_to_rgb = tf.image.encode_jpeg(image, format='rgb', quality=100)
        self._sess = v1.Session(graph=graph)

    def png_to_jpeg(self, image_data):
        return self._sess.run(self._png_to_jpeg, feed_dict={self._png_data: image_data})

    def cmyk_to_rgb(self, image_data):
        return self._sess.run(self._cmyk_to_rgb, feed_dict={self._cmyk_data: image_data})


def parse_example_proto(example_serialized):
    """Parses an Example proto containing a training example of an image
    (image_processing.py): (JPEG bytes, label [1], bbox [1, boxes, 4] as
    (ymin, xmin, ymax, xmax), text)."""
    feature_map = {
        'image/encoded': tf.io.FixedLenFeature([], dtype=tf.string, default_value=''),
        'image/class/label': tf.io.FixedLenFeature([1], dtype=tf.int64, default_value=-1),
        'image/class/text': tf.io.FixedLenFeature([], dtype=tf.string, default_value=''),
    }
    sparse_float32 = tf.io.VarLenFeature(dtype=tf.float32)
    feature_map.update({k: sparse_float32 for k in ['image/object/bbox/xmin',
                                                    'image/object/bbox/ymin',
                                                    'image/object/bbox/xmax',
                                                    'image/object/bbox/ymax']})
    features = v1.parse_single_example(example_serialized, feature_map)
    label = tf.cast(features['image/class/label'], dtype=tf.int32)
    xmin = tf.expand_dims(features['image/object/bbox/xmin'].values, 0)
    ymin = tf.expand_dims(features['image/object/bbox/ymin'].values, 0)
    xmax = tf.expand_dims(features['image/object/bbox/xmax'].values, 0)
    ymax = tf.expand_dims(features['image/object/bbox/ymax'].values, 0)
    bbox = tf.concat(axis=0, values=[ymin, xmin, ymax, xmax])
    bbox = tf.expand_dims(bbox, 0)
    bbox = tf.transpose(bbox, [0, 2, 1])
    return features['image/encoded'], label, bbox, features['image/class/text']


# --- a tree of images, and TF's metadata files ----------------------------------------------

def jpeg_bytes(image, **options):
    out = io.BytesIO()
    image.save(out, format='JPEG', **options)
    return out.getvalue()


def write_tree(src, rng):
    """train/<wnid>/ and val/<wnid>/ with RGB JPEGs, and in training a
    grayscale JPEG of noise (which a re-encoding would change), a PNG and a
    CMYK JPEG named .JPEG, as ImageNet has them; returns {(split, file
    name): (wnid, kind, path)}."""
    sources = {}
    for folder, split, per_class in (('train', 'train', 2), ('val', 'validation', 1)):
        for wnid in WNIDS:
            os.makedirs(src / folder / wnid)
            for i in range(per_class):
                name = f'{wnid}_{i}.JPEG' if split == 'train' else f'ILSVRC2012_val_{wnid}.JPEG'
                image = smooth_image(rng, *rng.integers(40, 71, 2))
                (src / folder / wnid / name).write_bytes(jpeg_bytes(image, quality=90))
                sources[split, name] = (wnid, 'rgb', src / folder / wnid / name)
    noise = Image.fromarray(rng.integers(0, 256, (40, 48), dtype=np.uint8))
    others = {'gray.JPEG': ('gray', noise, {'quality': 90}),
              'png.JPEG': ('png', smooth_image(rng, 50, 44), {'format': 'PNG'}),
              'cmyk.JPEG': ('cmyk', smooth_image(rng, 45, 61).convert('CMYK'), {'quality': 95})}
    for name, (kind, image, options) in others.items():
        path = src / 'train' / WNIDS[1] / name
        image.save(path, **({'format': 'JPEG'} | options))
        sources['train', name] = (WNIDS[1], kind, path)
    return sources


def write_metadata_files(root):
    """TF's imagenet_metadata.txt (with a synset not in the tree, as the
    real one has 21842) and its bounding-box CSV; returns their paths."""
    texts, boxes = root / 'imagenet_metadata.txt', root / 'imagenet_2012_bounding_boxes.csv'
    texts.write_text(''.join(f'{w}\t{t}\n' for w, t in {**TEXTS, 'n00004475': 'organism, being'}.items()))
    boxes.write_text(''.join(f'{name},{",".join(f"{v:.4f}" for v in box)}\n'
                             for name, listed in BOXES.items() for box in listed))
    return str(texts), str(boxes)


def write_records(root, *extra):
    """TFRecordsWriter run on root/src into root; (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = TFRecordsWriter.main(['dataset_name=imagenet', 'output_shape=1000',
                                     f"imagenet_dir={root / 'src'}", f'datasets_root={root}',
                                     "tfrecord_shards={'train': 2, 'validation': 1}", *extra])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp('imagenet')
    return {'root': root, 'sources': write_tree(root / 'src', np.random.default_rng(5))}


@pytest.fixture(scope='module')
def written(tree):
    """The tree written by TFRecordsWriter with TF's metadata files."""
    texts, boxes = write_metadata_files(tree['root'])
    code, _, err = write_records(tree['root'], f'imagenet_metadata_file={texts}',
                                 f'imagenet_bbox_file={boxes}')
    assert code == 0, err
    return data_dir(tree['root'], 'imagenet')


def records_by_name(directory):
    """{file name: tf.train.Example} of every record of the shards in `directory`."""
    examples = [e for n in sorted(os.listdir(directory)) if '-of-' in n
                for e in read_examples(os.path.join(directory, n))]
    return {e.features.feature['image/filename'].bytes_list.value[0].decode(): e for e in examples}


def tensorflows_example(name, wnid, kind, path, texts=True):
    """What TF's build_imagenet_data.py writes for the image file at `path`:
    its bytes, or for the PNG and CMYK files its coder's RGB JPEG."""
    data = path.read_bytes()
    if kind in ('png', 'cmyk'):
        coder = ImageCoder()
        data = coder.png_to_jpeg(data) if kind == 'png' else coder.cmyk_to_rgb(data)
    width, height = Image.open(path).size
    label = WNIDS.index(wnid)
    return _convert_to_example(str(path), data, (1, 388, 1000)[label], wnid,
                               TEXTS[wnid] if texts else '', BOXES.get(name, []) if texts else [],
                               height, width)


def fields(example):
    """{feature: (kind, [values])} of an Example, the image bytes as their
    SHA-1: equal for equal Examples, and a readable difference for others."""
    found = {}
    for key, feature in example.features.feature.items():
        kind = feature.WhichOneof('kind')
        values = list(getattr(feature, kind).value)
        found[key] = (kind, [hashlib.sha1(v).hexdigest() for v in values] if key == 'image/encoded'
                      else values)
    return found


# --- the project's records, as TF's scripts write and read them -----------------------------

def test_records_are_what_tensorflows_script_writes(tree, written):
    """Field for field: official labels, class texts and boxes from TF's
    metadata files, RGB and grayscale JPEGs stored as they are, the PNG and
    CMYK files as TF's coder re-encodes them."""
    records = records_by_name(written)
    assert sorted(records) == sorted(name for _, name in tree['sources'])
    for (_, name), (wnid, kind, path) in tree['sources'].items():
        assert fields(records[name]) == fields(tensorflows_example(name, wnid, kind, path)), name


def test_without_metadata_files_text_is_empty_and_there_are_no_boxes(tree, tmp_path):
    (tmp_path / 'src').symlink_to(tree['root'] / 'src')
    code, out, err = write_records(tmp_path)
    assert code == 0, err
    records = records_by_name(data_dir(tmp_path, 'imagenet'))
    for (_, name), (wnid, kind, path) in tree['sources'].items():
        assert fields(records[name]) == fields(tensorflows_example(name, wnid, kind, path,
                                                                   texts=False)), name


def parsed_with_tensorflow(directory):
    """{file name: (encoded, label, bbox, text)} of every record of the shards
    in `directory`, parsed with TF's parse_example_proto."""
    records = records_by_name(directory)
    with tf.Graph().as_default(), v1.Session() as session:
        serialized = v1.placeholder(tf.string, [])
        parsed = parse_example_proto(serialized)
        return {name: session.run(parsed, {serialized: example.SerializeToString()})
                for name, example in records.items()}


def test_tensorflows_parser_reads_the_records(tree, written):
    """parse_example_proto: label, text, boxes as (ymin, xmin, ymax, xmax);
    the grayscale JPEG's bytes are the file's, not 3 channels re-encoded."""
    parsed = parsed_with_tensorflow(written)
    for (_, name), (wnid, _, _) in tree['sources'].items():
        encoded, label, bbox, text = parsed[name]
        assert label.tolist() == [imagenet.labels()[wnid]] and text.decode() == TEXTS[wnid]
        expected = np.array(BOXES.get(name, []), np.float32).reshape(-1, 4)[:, [1, 0, 3, 2]]
        np.testing.assert_array_equal(bbox, expected[np.newaxis])
    gray = parsed['gray.JPEG'][0]
    assert gray == tree['sources']['train', 'gray.JPEG'][2].read_bytes()
    assert Image.open(io.BytesIO(gray)).mode == 'L'


def test_the_synset_list_is_tensorflows():
    """imagenet_lsvrc_2015_synsets.txt: 1000 distinct wnids, sorted, as the
    labels of TF's scripts number them (1 = tench, 1000 = toilet tissue)."""
    synsets = imagenet.synsets()
    assert len(synsets) == len(set(synsets)) == 1000 and list(synsets) == sorted(synsets)
    assert [imagenet.labels()[w] for w in WNIDS] == [1, 388, 1000]


def test_dataset_json_lists_the_synsets_found(written):
    description = TFRecordsReader.read_metadata(written)['description']
    assert description['synsets'] == list(WNIDS) and description['num_classes'] == 1000


# --- what the writer refuses: one line ------------------------------------------------------

def test_a_folder_that_is_no_synset_is_one_line(tmp_path, capsys):
    os.makedirs(tmp_path / 'src' / 'train' / 'n99999999')
    (tmp_path / 'src' / 'train' / 'n99999999' / 'a.JPEG').write_bytes(b'')
    assert write_records(tmp_path)[0] == 2
    with pytest.raises(DataError, match=r'n99999999 is not one of the 1000 ImageNet synsets'):
        TFRecordsWriter.imagenet_files(str(tmp_path / 'src'), 0)


def test_an_image_tensorflow_cannot_decode_is_one_line(tmp_path):
    """A TIFF named .JPEG: PIL reads it, TensorFlow's codecs (which the
    trainer decodes with) do not."""
    for folder in ('train', 'val'):
        os.makedirs(tmp_path / 'src' / folder / WNIDS[0])
        smooth_image(np.random.default_rng(1), 40, 30).save(
            tmp_path / 'src' / folder / WNIDS[0] / 'a.JPEG', format='TIFF')
    code, _, err = write_records(tmp_path)
    assert code == 2 and err.count('\n') == 1
    assert err.startswith(f"error: {tmp_path / 'src' / 'train' / WNIDS[0] / 'a.JPEG'} does not "
                          f"decode in TensorFlow (Unknown image file format. One of JPEG")


@pytest.mark.parametrize('content, says', [
    ('n01440764\ttench\n', r'has no name for synset n02509815'),
    ('n01440764 tench\n', r'line 1: expected <wnid><TAB><name>'),
])
def test_a_metadata_file_that_does_not_fit_is_one_line(tree, tmp_path, content, says):
    (tmp_path / 'src').symlink_to(tree['root'] / 'src')
    (tmp_path / 'texts.txt').write_text(content)
    code, _, err = write_records(tmp_path, f"imagenet_metadata_file={tmp_path / 'texts.txt'}")
    assert code == 2 and err.count('\n') == 1
    with pytest.raises(DataError, match=says):
        imagenet.class_texts(str(tmp_path / 'texts.txt'), WNIDS)


@pytest.mark.parametrize('content, says', [
    ('a.JPEG,0.1,0.2,0.3\n', r'line 1: expected <file name>,<xmin>,<ymin>,<xmax>,<ymax>'),
    ('a.JPEG,0.1,0.2,0.3,x\n', r'line 1: expected <file name>,<xmin>,<ymin>,<xmax>,<ymax>'),
])
def test_a_bounding_box_file_that_does_not_fit_is_one_line(tmp_path, content, says):
    (tmp_path / 'boxes.csv').write_text(content)
    with pytest.raises(DataError, match=says):
        imagenet.bounding_boxes(str(tmp_path / 'boxes.csv'))


def test_metadata_files_must_exist():
    with pytest.raises(ConfigError, match="imagenet_bbox_file='/nothing.csv': no such file"):
        settings.checked_config(['imagenet_bbox_file=/nothing.csv'])


# --- TF's shards, read by the trainer ---------------------------------------------------------

def write_tf_shards(directory, items):
    """Shards of TF's layout (_convert_to_example, with a class text and a
    box), two for training, one for validation, from [(split, name, JPEG
    bytes, label)]; no dataset.json."""
    os.makedirs(directory)
    for split, count in (('train', 2), ('validation', 1)):
        mine = [item for item in items if item[0] == split]
        for shard in range(count):
            with tf.io.TFRecordWriter(os.path.join(directory, f'{split}-{shard:05d}-of-{count:05d}')) as w:
                for _, name, jpeg, label in mine[shard::count]:
                    width, height = Image.open(io.BytesIO(jpeg)).size
                    synset = imagenet.synsets()[label - 1] if 1 <= label <= 1000 else 'n00000000'
                    w.write(_convert_to_example(name, jpeg, label, synset, 'a class', [[0.1, 0.1, 0.9, 0.9]],
                                                height, width).SerializeToString())


def tf_items(rng, labels=None):
    """[(split, name, JPEG bytes, label)] of smooth images, 6 for training
    and 3 for validation; labels drawn from 1..1000 unless given."""
    labels = labels or rng.integers(1, 1001, 9).tolist()
    splits = ['train'] * 6 + ['validation'] * 3
    return [(split, f'{split}_{i}.JPEG', jpeg_bytes(smooth_image(rng, 60 + i, 50), quality=90), label)
            for i, (split, label) in enumerate(zip(splits, labels))]


def test_tensorflows_shards_read_as_they_are(tmp_path, graph, session):
    """Labels 1..1000 become classes 0..999; evaluation images are the
    central 87.5 % of the stored JPEG, resized, normalised."""
    items = tf_items(np.random.default_rng(7))
    write_tf_shards(tmp_path / 'records', items)
    data = TFRecordsReader.open_imagenet(str(tmp_path / 'records'))
    assert data.counts == {'train': 6, 'valid': 3, 'test': 3} and data.num_classes == 1000
    cfg = reader_cfg(tmp_path, 'output_shape=1000', 'batch_size=4', 'eval_batch_size=4',
                     dataset='imagenet')
    source = make_input(data, cfg)
    images, labels, _ = read_pass(session, source, 'train', True, seed=3)
    assert sorted(labels.argmax(1)) == sorted(label - 1 for split, _, _, label in items
                                              if split == 'train')
    images, labels, _ = read_pass(session, source, 'valid', False)
    validation = [item for item in items if item[0] == 'validation']
    assert labels.argmax(1).tolist() == [label - 1 for _, _, _, label in validation]
    for image, (_, _, jpeg, _) in zip(images, validation):
        stored = np.asarray(Image.open(io.BytesIO(jpeg)), np.float64)
        h, w, _ = stored.shape
        top, left = int((h - h * 0.875) / 2), int((w - w * 0.875) / 2)
        restored = image * TFRecordsReader.IMAGENET_STD + TFRecordsReader.IMAGENET_MEAN
        np.testing.assert_allclose(restored.mean(axis=(0, 1)),
                                   stored[top:h - top, left:w - left].mean(axis=(0, 1)), atol=2)


def test_a_label_outside_the_classes_is_one_line_or_skipped(tmp_path, graph, session):
    """TF's background label 0 (which its scripts leave unused) in a
    record: named, or left out with skip_bad_records=True."""
    records = tmp_path / 'records'
    write_tf_shards(records, tf_items(np.random.default_rng(9), [5, 6, 7, 8, 9, 10, 11, 0, 12]))
    data = TFRecordsReader.open_imagenet(str(records))
    source = make_input(data, reader_cfg(tmp_path, 'output_shape=1000', 'eval_batch_size=4',
                                         dataset='imagenet'))
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        read_pass(session, source, 'valid', False)
    explained = str(source.explain(caught.value))
    assert '\n' not in explained and 'validation-00000-of-00001' in explained
    assert 'image/class/label 0 with' in explained and 'one of the 1000 classes' in explained
    source = make_input(data, reader_cfg(tmp_path, 'output_shape=1000', 'eval_batch_size=4',
                                         'skip_bad_records=True', dataset='imagenet'))
    _, labels, _ = read_pass(session, source, 'valid', False)
    assert labels.argmax(1).tolist() == [10, 11]


# --- imagenet_classes='present': an FC-N head over the synsets of the records ------------------

def test_present_classes_number_the_synsets_found(written, tree, graph, session):
    data = TFRecordsReader.open_imagenet(written, 'present')
    assert data.num_classes == 3
    cfg = reader_cfg(tree['root'], 'imagenet_classes=present', 'output_shape=3', 'eval_batch_size=4',
                     dataset='imagenet')
    images, labels, _ = read_pass(session, make_input(data, cfg), 'valid', False)
    names = [e.features.feature['image/filename'].bytes_list.value[0].decode()
             for e in read_examples(data.files['valid'][0])]
    assert labels.shape == (3, 3)
    assert labels.argmax(1).tolist() == [WNIDS.index(tree['sources']['validation', n][0]) for n in names]


def test_present_classes_check_output_shape_with_the_records(written, tree):
    cfg = settings.checked_config(['dataset_name=imagenet', 'imagenet_classes=present',
                                   'output_shape=1000', 'batch_size=4'])
    with pytest.raises(DataError, match='holds 3 classes but output_shape=1000; set output_shape=3'):
        input_source.open_dataset(cfg, written)
    with pytest.raises(ConfigError, match=r"output_shape=3 but imagenet has 1000 classes; set "
                                          r"output_shape=1000, or imagenet_classes='present'"):
        settings.checked_config(['dataset_name=imagenet', 'output_shape=3'])


def test_present_classes_need_the_writers_synset_list(tmp_path):
    write_tf_shards(tmp_path / 'records', tf_items(np.random.default_rng(4)))
    with pytest.raises(DataError, match=r"imagenet_classes='present' needs the synsets the records "
                                        r"hold: .*dataset.json"):
        TFRecordsReader.open_imagenet(str(tmp_path / 'records'), 'present')
