"""Image files read with their kind and size checked before a byte is read
(foundation/regular_files.py) and their header's pixel count before anything
is decoded (a header may claim 65000 x 65000 pixels in a few bytes), a
JPEG's against the data it holds (libjpeg decodes a header of 8000 x 8000
pixels with the data of 64 x 64 into 8000 x 8000 of grey, with a warning
only). For the ImageNet writer and for predict.py alike."""
import io
import math
import warnings

from PIL import Image

from foundation.errors import DataError
from foundation.regular_files import UnfitFile, read_regular

# An ImageNet file is at most a few MB and 20 megapixels: bounds that no real
# image reaches, checked before a file is read or an image decoded.
IMAGE_MAX_BYTES = 64 << 20
IMAGE_MAX_PIXELS = 64 << 20  # 8192 x 8192: 192 MiB decoded
# What Pillow raises for bytes that are no image it can read.
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError,
                Image.DecompressionBombWarning)
JPEG_FORMATS = ('JPEG', 'MPO')  # MPO: a camera's JPEG with more pictures after the first
JPEG_SCALES = (8, 4, 2)  # libjpeg's DCT scalings, 1/8 to 1/2: Pillow's draft(), decode_jpeg's ratio
# The frames whose scans are Huffman-coded (baseline, extended, progressive):
# every 8 x 8 block of a component they code takes at least one bit. An
# arithmetic-coded frame may take less, so its data bounds nothing.
HUFFMAN_FRAMES = (0xC0, 0xC1, 0xC2)
START_OF_SCAN = 0xDA


class BadImage(DataError):
    """An image file that the records cannot hold."""


def image_bytes(path):
    """The bytes of an image file, its kind and size checked before it is read."""
    try:
        return read_regular(path, IMAGE_MAX_BYTES, 'an image of the dataset')
    except UnfitFile as error:
        raise BadImage(str(error)) from None


def opened(path, data):
    """The Pillow image of `data`, only its header read, its size checked
    (a header may claim 65000 x 65000 pixels in a few bytes)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('error', Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except IMAGE_ERRORS as error:
        raise BadImage(f'{path} is not a readable image ({error})') from None
    width, height = image.size
    if width * height > IMAGE_MAX_PIXELS:
        image.close()
        raise BadImage(f'{path} declares {width} x {height} pixels, more than an image of the '
                       f'dataset ({IMAGE_MAX_PIXELS} at most)')
    if image.format in JPEG_FORMATS:
        short = jpeg_shortfall(data)
        if short:
            image.close()
            raise BadImage(f'{path} declares {width} x {height} pixels, more than its {short[0]} bytes '
                           f'of JPEG data can hold (that size takes at least {short[1]}): its header is '
                           f'damaged or altered')
    return image


def jpeg_frame(data):
    """(SOF marker, [(h, v) sampling of each component], height, width, offset
    of the first scan's data) of JPEG bytes, from the segments before its
    first scan (each says its length); None where they do not parse."""
    at, frame = 2, None
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker, length = data[at + 1], int.from_bytes(data[at + 2:at + 4], 'big')
        if marker == 0xFF:  # a fill byte before a marker
            at += 1
            continue
        if marker == START_OF_SCAN:
            return frame and (*frame, at + 2 + length)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # not DHT, JPG, DAC
            segment = data[at + 4:at + 2 + length]
            sampling = [(b >> 4, b & 15) for b in segment[7:7 + 3 * segment[5]:3]] if len(segment) > 5 else []
            frame = (marker, sampling, int.from_bytes(segment[1:3], 'big'), int.from_bytes(segment[3:5], 'big'))
        at += 2 + length
    return None


def jpeg_shortfall(data):
    """(bytes of scan data, bytes the header's size takes at least) where a
    Huffman-coded JPEG holds too few bytes for the pixels its header
    declares, else None. The scans code every block of some component, so
    the component of fewest 8 x 8 blocks gives a bit a block as the least;
    everything from the first scan on counts as its data (an upper bound)."""
    frame = jpeg_frame(data)
    if frame is None or frame[0] not in HUFFMAN_FRAMES:
        return None
    _, sampling, height, width, scan_start = frame
    if not sampling or any(0 in factors for factors in sampling):  # libjpeg refuses such a frame
        return None
    h_max, v_max = max(h for h, _ in sampling), max(v for _, v in sampling)
    fewest = min(math.ceil(math.ceil(width * h / h_max) / 8) * math.ceil(math.ceil(height * v / v_max) / 8)
                 for h, v in sampling)
    held, needed = len(data) - scan_start, math.ceil(fewest / 8)
    return (held, needed) if held < needed else None


def jpeg_scale(image, needed):
    """The DCT scaling (8, 4, 2: the denominator) at which the JPEG whose
    Pillow header is `image` decodes still at least `needed` (height, width)
    pixels, as Pillow's draft() picks it; 1 for another format or a JPEG
    less than twice that size."""
    if image.format not in JPEG_FORMATS:
        return 1
    fits = min(image.size[0] // needed[1], image.size[1] // needed[0])
    return next((scale for scale in JPEG_SCALES if scale <= fits), 1)
