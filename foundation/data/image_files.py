"""Image files read with their kind and size checked before a byte is read
(foundation/regular_files.py) and their header's pixel count before anything
is decoded (a header may claim 65000 x 65000 pixels in a few bytes). For the
ImageNet writer and for predict.py alike."""
import io
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
    return image
