"""Image files as they come (grayscale, with an alpha channel, 8- or 16-bit, EXIF-rotated) and what restoration
networks take: 3-channel BGR float images in [0, 1], as BasicSR's ``imfrombytes(..., float32=True)`` returns them.

``decode`` reads a file as stored and upright; ``split_image`` separates it into that colour image, its alpha and
its ``ImageFormat``; ``merge_image`` puts a restored colour image back into the file's format (alpha resized to the
output when the network upscales), so inference writes what it read. Unsupported files are errors that say what
the file holds.
"""
import io
import os
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from basicsr_ea.files import write_atomic

# The image files this project reads: datasets, evaluation sets, inference inputs, calibration sets, LMDB sources.
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
MAX_VALUES = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}
# Extensions OpenCV writes 16-bit samples to, and those it writes an alpha channel to.
SIXTEEN_BIT_EXTENSIONS = ('.png', '.tif', '.tiff')
ALPHA_EXTENSIONS = ('.png', '.tif', '.tiff', '.webp')
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
PNG_ALPHA_COLOR_TYPES = (4, 6)  # grey + alpha, RGBA; palette and other types carry alpha in a tRNS chunk
PIL_ALPHA_MODES = ('RGBA', 'RGBa', 'LA', 'La', 'PA')
EXIF_ORIENTATION = 0x0112
# EXIF orientation -> what makes the stored pixels upright (what OpenCV does on decode, but not with alpha).
UPRIGHT = {
    2: np.fliplr,
    3: lambda img: np.rot90(img, 2),
    4: np.flipud,
    5: lambda img: np.swapaxes(img, 0, 1),
    6: lambda img: np.rot90(img, -1),
    7: lambda img: np.rot90(img, 2).swapaxes(0, 1),
    8: lambda img: np.rot90(img, 1),
}


@dataclass(frozen=True)
class ImageFormat:
    """How a file stores its pixels: one grey channel or three colours, 8-bit (255) or 16-bit (65535) samples."""
    grayscale: bool
    max_value: int


def has_alpha(content):
    """Whether encoded image bytes carry an alpha channel: from the PNG header itself (the common case, at no
    cost), else from PIL's header parse; a format PIL does not know has none PIL could tell of."""
    if content[:8] == PNG_SIGNATURE and content[12:16] == b'IHDR' and len(content) > 25:
        return content[25] in PNG_ALPHA_COLOR_TYPES or b'tRNS' in content[:content.find(b'IDAT')]
    try:
        with Image.open(io.BytesIO(content)) as img:
            return img.mode in PIL_ALPHA_MODES or 'transparency' in img.info
    except (OSError, ValueError):
        return False


def exif_orientation(content):
    """The EXIF orientation tag of encoded image bytes (1, upright, when there is none)."""
    try:
        with Image.open(io.BytesIO(content)) as img:
            return img.getexif().get(EXIF_ORIENTATION, 1)
    except (OSError, ValueError):
        return 1


def decode(content):
    """Encoded bytes -> the image as stored (HxW grey, HxWx3 BGR or HxWx4 BGRA; uint8 or uint16), upright. OpenCV
    applies the EXIF orientation unless asked for the alpha channel, so with alpha it is applied here."""
    if not content:
        raise ValueError('the file is empty (0 bytes).')
    buffer = np.frombuffer(content, np.uint8)
    if not has_alpha(content):
        img = cv2.imdecode(buffer, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
    else:
        img = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
        if img is not None:
            if img.ndim != 3 or img.shape[2] != 4:  # OpenCV drops it (grey + alpha TIFF)
                raise ValueError('the file has an alpha channel OpenCV cannot decode; save it as PNG.')
            img = np.ascontiguousarray(UPRIGHT.get(exif_orientation(content), np.asarray)(img))
    if img is None:
        raise ValueError('the file is not an image OpenCV can decode (corrupt or truncated).')
    return img


def split_image(img, name):
    """``img`` as ``decode`` returns it -> (BGR float32 HxWx3 in [0, 1], alpha float32 HxW in [0, 1] or None,
    format). ``name`` (the file) is what an error names."""
    if img.dtype not in MAX_VALUES:
        raise ValueError(f'{name} has {img.dtype} samples; 8- and 16-bit integer images are supported.')
    img = img[..., None] if img.ndim == 2 else img
    channels = img.shape[2] if img.ndim == 3 else 0
    if channels not in (1, 3, 4):
        raise ValueError(f'{name} has {channels} channels; grey, RGB and RGBA images are supported.')
    max_value = MAX_VALUES[img.dtype]
    img = img.astype(np.float32) / max_value
    color, alpha = (img[..., :3], img[..., 3]) if channels == 4 else (img, None)
    if channels == 1:
        color = np.repeat(color, 3, axis=2)
    return np.ascontiguousarray(color), alpha, ImageFormat(channels == 1, max_value)


def is_opaque(alpha):
    """True for no alpha or a fully opaque one: dropping it then loses nothing."""
    return alpha is None or bool((alpha == 1).all())


def decode_color(content):
    """Encoded image bytes -> BGR float32 HxWx3 in [0, 1] at the file's full bit depth (what BasicSR's datasets
    read; OpenCV's ``IMREAD_COLOR`` would cut 16-bit samples to 8 bits). Grey images become three equal channels;
    an alpha channel is dropped when fully opaque and refused otherwise, since the colour under transparent pixels
    is undefined and a network trained or measured on it learns nothing true. Callers add the file's name."""
    color, alpha, _ = split_image(decode(content), 'the file')
    if not is_opaque(alpha):
        raise ValueError('the image has transparent pixels (an alpha channel below 1): datasets read colour only. '
                         'Flatten it onto a background, or restore it with scripts/inference.py, which carries the '
                         'alpha channel through.')
    return color


OPENCV_FLAGS = {'color': cv2.IMREAD_COLOR, 'grayscale': cv2.IMREAD_GRAYSCALE, 'unchanged': cv2.IMREAD_UNCHANGED}


def decode_opencv(content, flag='grayscale'):
    """Encoded bytes -> OpenCV's ``imdecode`` with BasicSR's ``flag`` (``color``, ``grayscale``, ``unchanged``),
    raising instead of returning None for bytes that are not an image."""
    img = cv2.imdecode(np.frombuffer(content, np.uint8), OPENCV_FLAGS[flag]) if content else None
    if img is None:
        raise ValueError('the file is empty or not an image OpenCV can decode (corrupt or truncated).')
    return img


def read_color(file_client, path, client_key='default'):
    """``decode_color`` of the image ``path`` read through a BasicSR ``FileClient`` (a file, or a key of the LMDB
    ``client_key``), with errors that name it."""
    content = file_client.get(path, client_key)
    if content is None:  # BasicSR's LmdbBackend for a key it does not hold
        raise KeyError(f'key {path} is missing from the LMDB {client_key}.')
    try:
        return decode_color(content)
    except ValueError as err:
        raise ValueError(f'{path}: {err}') from err


def read_image(path):
    """(colour, alpha, format) of the image file ``path`` (see ``split_image``)."""
    with open(path, 'rb') as f:
        content = f.read()
    try:
        return split_image(decode(content), path)
    except ValueError as err:
        raise ValueError(f'{path}: {err}') from err


def merge_image(color, alpha, image_format):
    """A restored BGR float image (HxWx3, any range) in ``image_format``, with ``alpha`` (HxW at the input's size)
    resized bicubically to the output's size and appended: the array ``cv2.imwrite`` writes."""
    img = np.clip(color, 0, 1)
    if image_format.grayscale:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[..., None]
    if alpha is not None:
        height, width = img.shape[:2]
        if alpha.shape != (height, width):
            alpha = np.clip(cv2.resize(alpha, (width, height), interpolation=cv2.INTER_CUBIC), 0, 1)
        img = np.concatenate([img, alpha[..., None]], axis=2)
    img = np.round(img * image_format.max_value).astype(np.uint8 if image_format.max_value == 255 else np.uint16)
    return img[..., 0] if img.shape[2] == 1 else img


def check_writable(path, image_format, with_alpha):
    """Refuse, before any work, an output file type that would drop the alpha or cut 16-bit samples."""
    ext = os.path.splitext(path)[1].lower()
    if image_format.max_value > 255 and ext not in SIXTEEN_BIT_EXTENSIONS:
        raise ValueError(f'{path}: {ext or "no extension"} cannot hold 16-bit samples; use one of '
                         f'{", ".join(SIXTEEN_BIT_EXTENSIONS)}.')
    if with_alpha and ext not in ALPHA_EXTENSIONS:
        raise ValueError(f'{path}: {ext or "no extension"} cannot hold an alpha channel; use one of '
                         f'{", ".join(ALPHA_EXTENSIONS)}.')


def write_image(path, img):
    """``cv2.imwrite`` that raises instead of returning False (and leaving a 0-byte file on a full disk): encoded
    in memory, written atomically, its size checked."""
    ok, encoded = cv2.imencode(os.path.splitext(path)[1] or '.png', img)
    if not ok:
        raise ValueError(f'OpenCV cannot encode a {img.dtype} image of shape {img.shape} as {path}.')
    write_atomic(path, encoded.tobytes())
