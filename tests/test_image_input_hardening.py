"""Image and annotation input that was taken as it came: the bounding-box
CSV held whole as lists (about 7 bytes of memory a byte of file), NaN or
out-of-range boxes written into records, a JPEG whose header claims 8000 x
8000 pixels over the data of 64 x 64 classified and written (libjpeg fills
the rest with grey), and a large image decoded at full size and copied as
float32 four times over (an 8192 x 8192 PNG of 200 KB: 2.4 GB).

Every fixture is written here in its real format: Pillow's JPEGs and PNGs
(a header altered afterwards, its CRC made good), the CSV as TF's
process_bounding_boxes.py writes it ('%s,%.4f,%.4f,%.4f,%.4f' lines).
"""
import csv
import glob
import io
import json
import os
import struct
import sys
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

import predict
import TFRecordsWriter
from foundation.data import image_files, imagenet
from tests.test_hostile_files import assert_bounded, run_watched, trained  # noqa: F401 (a fixture)
from tests.test_streaming import data_dir, read_examples, smooth_image

WNID = 'n01440764'  # tench: label 1


# --- fixtures in their formats ----------------------------------------------------------------

def jpeg_bytes(image, **options):
    out = io.BytesIO()
    image.save(out, format='JPEG', **options)
    return out.getvalue()


def png_bytes(image):
    out = io.BytesIO()
    image.save(out, format='PNG')
    return out.getvalue()


def small_image(seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8))


def jpeg_claiming(width, height):
    """Pillow's 64 x 64 JPEG whose frame header (SOF0) then claims width x height."""
    data = bytearray(jpeg_bytes(small_image(), quality=90))
    at = data.index(b'\xff\xc0') + 5  # marker, length (2), precision (1), then height, width
    data[at:at + 4] = struct.pack('>HH', height, width)
    return bytes(data)


def png_claiming(width, height):
    """Pillow's 64 x 64 PNG whose IHDR then claims width x height, its CRC made good."""
    data = bytearray(png_bytes(small_image()))
    at = data.index(b'IHDR')
    data[at + 4:at + 12] = struct.pack('>II', width, height)
    data[at + 17:at + 21] = struct.pack('>I', zlib.crc32(bytes(data[at:at + 17])))
    return bytes(data)


def box_rows(rng, names):
    """TF's CSV rows: one to three boxes an image, each pair ordered, in 0..1."""
    rows = []
    for name in names:
        for _ in range(rng.integers(1, 4)):
            (x0, x1), (y0, y1) = np.sort(rng.random(2)), np.sort(rng.random(2))
            rows.append(f'{name},{x0:.4f},{y0:.4f},{x1:.4f},{y1:.4f}\n')
    return rows


def reference_boxes(path):
    """{name: [[xmin, ymin, xmax, ymax], ...]} of a CSV, read by the csv module."""
    boxes = {}
    with open(path, newline='') as f:
        for name, *values in csv.reader(f):
            boxes.setdefault(name, []).append([float(v) for v in values])
    return boxes


def write_tree(root):
    """train/<wnid>/ (two JPEGs) and val/<wnid>/ (one) of small smooth images."""
    rng, names = np.random.default_rng(2), {}
    for folder, name in (('train', f'{WNID}_0.JPEG'), ('train', f'{WNID}_1.JPEG'),
                         ('val', 'ILSVRC2012_val_00000001.JPEG')):
        (root / 'src' / folder / WNID).mkdir(parents=True, exist_ok=True)
        path = root / 'src' / folder / WNID / name
        path.write_bytes(jpeg_bytes(smooth_image(rng, 48, 40), quality=90))
        names[name] = path
    return names


def write_records(root, capsys, *extra):
    """TFRecordsWriter on root/src into root: (exit status, stdout, stderr)."""
    capsys.readouterr()
    code = TFRecordsWriter.main(['dataset_name=imagenet', 'output_shape=1000', f"imagenet_dir={root / 'src'}",
                                 f'datasets_root={root}', "tfrecord_shards={'train': 1, 'validation': 1}",
                                 *extra])
    out, err = capsys.readouterr()
    return code, out, err


def written_names(root):
    return sorted(e.features.feature['image/filename'].bytes_list.value[0].decode()
                  for split in ('train', 'validation') for e in shard_examples(root, split))


def shard_examples(root, split):
    return read_examples(os.path.join(data_dir(root, 'imagenet'), f'{split}-00000-of-00001'))


# --- the bounding-box CSV ------------------------------------------------------------------------

def test_the_boxes_read_row_by_row_are_the_csvs_rows(tmp_path):
    """The same values as the csv module reads, boxes in file order; asked
    for some images, those of them that have boxes and nothing else."""
    rng = np.random.default_rng(0)
    names = [f'{WNID}_{i}.JPEG' for i in range(150)] + [f'ILSVRC2012_val_{i:08d}.JPEG' for i in range(1, 51)]
    path = tmp_path / 'imagenet_2012_bounding_boxes.csv'
    path.write_text(''.join(box_rows(rng, names)))
    expected = reference_boxes(path)
    boxes = imagenet.bounding_boxes(str(path))
    assert dict(boxes) == expected and list(boxes) == list(expected)
    asked = {names[3], names[160], 'no_boxes.JPEG'}
    assert dict(imagenet.bounding_boxes(str(path), asked)) == {n: expected[n] for n in (names[3], names[160])}


def test_the_boxes_kept_are_those_of_the_images_asked_for_in_compact_form(tmp_path):
    """Memory while a 3 MB CSV is read (tracemalloc: Python's allocations,
    the same each run): for two images, next to nothing; for all of its
    38,000 images under 4 bytes a byte of file (lists of floats took 6)."""
    rng = np.random.default_rng(1)
    names = [f'{imagenet.synsets()[i % 1000]}_{i}.JPEG' for i in range(38000)]
    path = tmp_path / 'boxes.csv'
    path.write_text(''.join(box_rows(rng, names)))
    size = path.stat().st_size

    def peak_of(asked):
        tracemalloc.start()
        try:
            boxes = imagenet.bounding_boxes(str(path), asked)
            return tracemalloc.get_traced_memory()[1], boxes
        finally:
            tracemalloc.stop()
    peak, boxes = peak_of({names[5], names[7000]})
    assert sorted(boxes) == sorted([names[5], names[7000]]) and peak < 256 << 10
    peak, boxes = peak_of(None)
    assert len(boxes) == len(names) and peak < 4 * size, f'{peak / size:.2f} bytes a byte of the CSV'


@pytest.mark.parametrize('row, says', [
    (f'{WNID}_1.JPEG,nan,0.1000,0.5000,0.6000', 'the box of n01440764_1.JPEG is nan,0.1000,0.5000,0.6000; '
                                               'expected fractions of the image'),
    (f'{WNID}_1.JPEG,0.1000,0.1000,inf,0.6000', 'the box of n01440764_1.JPEG is 0.1000,0.1000,inf,0.6000'),
    (f'{WNID}_1.JPEG,0.2000,0.1000,1.7000,0.6000', 'the box of n01440764_1.JPEG is 0.2000,0.1000,1.7000'),
    (f'{WNID}_1.JPEG,0.2000,-0.1000,0.7000,0.6000', 'the box of n01440764_1.JPEG is 0.2000,-0.1000'),
    (f'{WNID}_1.JPEG,0.8000,0.1000,0.2000,0.6000', 'the box of n01440764_1.JPEG is 0.8000,0.1000,0.2000'),
    ('other.JPEG,0.1000,0.1000,0.2000,nan', 'the box of other.JPEG is 0.1000,0.1000,0.2000,nan'),  # not kept
    (f'{WNID}_1.JPEG,0.1000,0.2000,0.3000', 'expected <file name>,<xmin>,<ymin>,<xmax>,<ymax>, got'),
    (f'{WNID}_1.JPEG,0.1000,0.2000,0.3000,x', "expected <file name>,<xmin>,<ymin>,<xmax>,<ymax>, got '0.1000"),
])
def test_a_box_row_that_does_not_fit_stops_the_writer_in_one_line(tmp_path, capsys, row, says):
    """NaN, infinite, outside 0..1 or min > max: TF's script writes no such
    box (it clips to the image and orders each pair). Every row is checked,
    also one of an image not written."""
    write_tree(tmp_path)
    path = tmp_path / 'boxes.csv'
    path.write_text(f'{WNID}_0.JPEG,0.1000,0.2000,0.5000,0.6000\n\n{row}\n')
    code, _, err = write_records(tmp_path, capsys, f'imagenet_bbox_file={path}')
    assert code == 2 and err.count('\n') == 1, err
    assert err.startswith(f'error: {path}, line 3: {says}'), err
    assert not glob.glob(os.path.join(data_dir(tmp_path, 'imagenet'), '*-of-*'))  # no record written


def test_the_writer_writes_the_boxes_of_its_images(tmp_path, capsys):
    names = write_tree(tmp_path)
    path = tmp_path / 'boxes.csv'
    path.write_text(''.join(box_rows(np.random.default_rng(4), [*names, 'elsewhere.JPEG'])))
    assert write_records(tmp_path, capsys, f'imagenet_bbox_file={path}')[0] == 0
    expected = reference_boxes(path)
    for split in ('train', 'validation'):
        for example in shard_examples(tmp_path, split):
            feature = example.features.feature
            name = feature['image/filename'].bytes_list.value[0].decode()
            got = np.stack([feature[f'image/object/bbox/{k}'].float_list.value
                            for k in ('xmin', 'ymin', 'xmax', 'ymax')], 1)
            np.testing.assert_array_equal(got, np.float32(expected[name]))


# --- a header that claims more than the data holds ------------------------------------------------

LYING_JPEG = ' declares 8000 x 8000 pixels, more than its '


def test_a_jpeg_whose_header_claims_more_pixels_than_its_data_is_refused(tmp_path):
    data = jpeg_claiming(8000, 8000)
    with pytest.raises(image_files.BadImage) as caught:
        image_files.opened('lying.jpg', data)
    held = len(data) - image_files.jpeg_frame(data)[-1]
    assert str(caught.value) == (f'lying.jpg{LYING_JPEG}{held} bytes of JPEG data can hold (that size '
                                 f'takes at least 31250): its header is damaged or altered')


@pytest.mark.parametrize('mode, options', [
    ('RGB', {}), ('RGB', {'optimize': True}), ('RGB', {'progressive': True, 'optimize': True}),
    ('RGB', {'subsampling': 0, 'optimize': True}), ('L', {'optimize': True}),
    ('L', {'progressive': True, 'optimize': True}), ('CMYK', {'optimize': True}),
])
def test_a_large_jpeg_of_one_colour_is_no_lie(mode, options):
    """The least data a JPEG holds for its size: 4096 x 4096 pixels of one
    level, Huffman tables fitted to it (optimize), progressive or not."""
    image = Image.new(mode, (4096, 4096), 128 if mode == 'L' else (128,) * len(mode))
    image_files.opened('flat.jpg', jpeg_bytes(image, **options)).close()


def test_predict_refuses_a_header_that_claims_more_than_the_data_in_one_line(trained, tmp_path, capsys):  # noqa: F811
    """A JPEG classified with exit status 0 before (as 8000 x 8000 of grey);
    a PNG's lie TensorFlow's decoder finds; a header beyond the bound on
    pixels is refused before anything is decoded."""
    files = {'lying.jpg': jpeg_claiming(8000, 8000), 'lying.png': png_claiming(8000, 8000),
             'beyond.png': png_claiming(8193, 8193), 'good.png': png_bytes(small_image(3))}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    capsys.readouterr()
    assert predict.main([f'datasets_root={trained}', *(str(tmp_path / name) for name in files)]) == 2
    out, err = capsys.readouterr()
    assert [line.split(':')[0] for line in out.splitlines()] == [str(tmp_path / 'good.png')]
    errors = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(errors) == 3 and all(line.endswith('; give PNG or JPEG files') for line in errors)
    assert errors[0].startswith(f"error: {tmp_path / 'lying.jpg'}{LYING_JPEG}")
    assert errors[1].startswith(f"error: {tmp_path / 'lying.png'}: TensorFlow cannot decode it (Invalid PNG data")
    assert errors[2].startswith(f"error: {tmp_path / 'beyond.png'} declares 8193 x 8193 pixels, more than an "
                                f"image of the dataset ({image_files.IMAGE_MAX_PIXELS} at most)")


def test_the_writer_stops_at_or_leaves_out_a_lying_jpeg(tmp_path, capsys):
    """Written into the records before, header and all."""
    write_tree(tmp_path)
    lying = tmp_path / 'src' / 'train' / WNID / f'{WNID}_9.JPEG'
    lying.write_bytes(jpeg_claiming(8000, 8000))
    code, _, err = write_records(tmp_path, capsys)
    assert code == 2 and err.count('\n') == 1, err
    assert err.startswith(f'error: {lying}{LYING_JPEG}')
    assert err.endswith('; remove it, or set skip_bad_records=True to leave such images out\n')
    code, _, err = write_records(tmp_path, capsys, 'skip_bad_records=True')
    assert code == 0 and f'warning: {lying}{LYING_JPEG}' in err
    assert written_names(tmp_path) == sorted([f'{WNID}_0.JPEG', f'{WNID}_1.JPEG', 'ILSVRC2012_val_00000001.JPEG'])


# --- large images decoded no larger than the network needs ----------------------------------------

BANDS = 30 * (np.arange(8192) // 1024)  # columns of 8 levels, 1024 px wide


def bands_image(side):
    return Image.fromarray(np.broadcast_to(BANDS[::8192 // side].astype(np.uint8), (side, side)))


READ_LARGE = """
import json, resource, sys
from trainer.after_training import inference
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
reader = inference.ImageReader({'image_shape': [128, 128, 3], 'resize': 'bicubic'})
for path in sys.argv[1:3]:  # small ones first: TensorFlow's kernels and buffers set up
    reader.read(path)
result = {}
for path in sys.argv[3:]:
    before = peak()
    image = reader.read(path)
    result[path] = {'mb': peak() - before, 'image': image.tolist()}
print(json.dumps(result))
"""


def test_a_large_image_is_decoded_no_larger_than_the_network_needs(tmp_path):
    """For a 128 x 128 RGB network: a 4096 x 4096 JPEG decoded at 1/8 (not
    the 48 MiB of its full size), an 8192 x 8192 PNG of 80 KB box-averaged
    as uint8 before it becomes float (192 MiB decoded, where its float
    copies took 1.8 GB more); the pixels those make, as they are."""
    paths = {'small.png': png_bytes(small_image(1)), 'small.jpg': jpeg_bytes(small_image(2)),
             'large.jpg': jpeg_bytes(bands_image(4096).convert('RGB'), quality=95),
             'large.png': png_bytes(bands_image(8192))}
    for name, data in paths.items():
        (tmp_path / name).write_bytes(data)
    result = run_watched([sys.executable, '-c', READ_LARGE, *(str(tmp_path / name) for name in paths)])
    assert_bounded(result)
    assert result.code == 0, result.err[-2000:]
    read = json.loads(result.out.splitlines()[-1])
    jpeg, png = read[str(tmp_path / 'large.jpg')], read[str(tmp_path / 'large.png')]
    assert jpeg['mb'] < 40 and png['mb'] < 400, (jpeg['mb'], png['mb'])
    expected = np.repeat(np.broadcast_to(BANDS[::64], (128, 128))[..., np.newaxis], 3, -1)
    np.testing.assert_array_equal(np.array(png['image']), expected)  # whole boxes of 64 x 64 of one level
    assert np.abs(np.array(jpeg['image']) - expected).max() <= 3  # JPEG's error, at 1/8 and boxes of 4
