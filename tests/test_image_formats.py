"""Image files as they come: decoded at full bit depth and upright, split into colour, alpha and format, and merged
back into exactly the file that was read."""
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from basicsr_ea.image_formats import (ImageFormat, check_writable, decode, decode_color, has_alpha, merge_image,
                                      read_image, split_image)


def encoded(img, ext='.png'):
    ok, buffer = cv2.imencode(ext, img)
    assert ok
    return buffer.tobytes()


def random_image(shape, dtype=np.uint8, seed=0):
    return np.random.default_rng(seed).integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)


@pytest.mark.parametrize('shape, ext', [((9, 13, 3), '.png'), ((9, 13), '.png'), ((16, 24, 3), '.jpg'),
                                        ((16, 24), '.jpg'), ((9, 13, 4), '.png')])
def test_8_bit_images_read_as_basicsr_reads_them(shape, ext):
    """What BasicSR's datasets read stays what they read: OpenCV's IMREAD_COLOR / 255 (grey as three equal channels,
    an opaque alpha dropped)."""
    img = random_image(shape)
    if len(shape) == 3 and shape[2] == 4:
        img[..., 3] = 255
    content = encoded(img, ext)
    expected = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_COLOR).astype(np.float32) / 255.
    np.testing.assert_array_equal(decode_color(content), expected)


@pytest.mark.parametrize('shape', [(9, 13, 3), (9, 13)])
def test_16_bit_images_keep_their_precision(shape):
    img = random_image(shape, np.uint16)
    color = decode_color(encoded(img))
    expected = np.atleast_3d(img).astype(np.float32) / 65535.
    np.testing.assert_array_equal(color, np.broadcast_to(expected, (9, 13, 3)))
    assert np.abs(color - np.round(color * 255) / 255).max() > 1e-3  # finer than 8 bits


def test_transparent_image_is_refused_for_datasets():
    img = random_image((8, 8, 4))
    img[0, 0, 3] = 254
    with pytest.raises(ValueError, match='transparent pixels.*scripts/inference.py'):
        decode_color(encoded(img))


def test_alpha_is_detected_in_every_form():
    """``has_alpha`` (header only) agrees with what OpenCV decodes: a fourth channel."""
    palette = Image.fromarray(random_image((8, 8)) % 4, 'P')
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    transparent_palette = palette.copy()
    transparent_palette.info['transparency'] = 0
    images = [palette, transparent_palette, Image.fromarray(random_image((8, 8, 3))),
              Image.fromarray(random_image((8, 8, 2)), 'LA'), Image.fromarray(random_image((8, 8, 4)), 'RGBA')]
    alpha_files = 0
    for image in images:
        for file_format in ('PNG', 'WEBP', 'TIFF'):
            buffer = io.BytesIO()
            image.save(buffer, file_format, lossless=True)
            content = buffer.getvalue()
            channels = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_UNCHANGED).shape[2:]
            if not has_alpha(content):
                assert channels != (4, ), (image.mode, file_format)
            elif (image.mode, file_format) == ('LA', 'TIFF'):  # OpenCV decodes it without its alpha
                with pytest.raises(ValueError, match='alpha channel OpenCV cannot decode'):
                    decode(content)
            else:
                assert decode(content).shape[2] == 4, (image.mode, file_format)
                alpha_files += 1
    assert alpha_files == 7  # RGBA in 3 formats; LA, transparent palette in PNG and WebP (PIL drops it in TIFF)
    assert not has_alpha(encoded(random_image((8, 8, 3)), '.jpg'))


@pytest.mark.parametrize('orientation', range(1, 9))
def test_exif_orientation_is_applied_with_alpha_as_opencv_applies_it_without(orientation, tmp_path):
    rgb = random_image((6, 10, 3))
    files = {}
    for mode, pixels in (('RGB', rgb), ('RGBA', np.dstack([rgb, random_image((6, 10), seed=1)]))):
        image = Image.fromarray(pixels, mode)
        exif = image.getexif()
        exif[0x0112] = orientation
        path = tmp_path / f'{mode}.png'
        image.save(path, exif=exif.tobytes())
        files[mode] = path.read_bytes()
    upright = cv2.imdecode(np.frombuffer(files['RGB'], np.uint8), cv2.IMREAD_COLOR)
    decoded = decode(files['RGBA'])
    assert decoded.shape == (*upright.shape[:2], 4)
    np.testing.assert_array_equal(decoded[..., :3], upright)


@pytest.mark.parametrize('shape, dtype', [((7, 5), np.uint8), ((7, 5, 3), np.uint8), ((7, 5, 4), np.uint8),
                                          ((7, 5), np.uint16), ((7, 5, 3), np.uint16), ((7, 5, 4), np.uint16)])
def test_split_then_merge_gives_back_the_file(shape, dtype, tmp_path):
    img = random_image(shape, dtype)
    path = str(tmp_path / 'img.png')
    cv2.imwrite(path, img)
    color, alpha, image_format = read_image(path)
    assert color.shape == (7, 5, 3) and color.dtype == np.float32
    assert image_format == ImageFormat(grayscale=len(shape) == 2, max_value=np.iinfo(dtype).max)
    assert (alpha is None) == (len(shape) < 3 or shape[2] == 3)
    merged = merge_image(color, alpha, image_format)
    assert merged.dtype == dtype
    np.testing.assert_array_equal(merged, img)


def test_merge_resizes_the_alpha_to_the_restored_size():
    alpha = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    merged = merge_image(np.full((6, 8, 3), 0.5, np.float32), alpha, ImageFormat(False, 255))
    assert merged.shape == (6, 8, 4)
    expected = np.clip(cv2.resize(alpha, (8, 6), interpolation=cv2.INTER_CUBIC), 0, 1)
    np.testing.assert_array_equal(merged[..., 3], np.round(expected * 255).astype(np.uint8))
    assert (merged[..., :3] == 128).all()


@pytest.mark.parametrize('img, message', [
    (np.zeros((4, 4, 3), np.float32), 'float32 samples; 8- and 16-bit'),
    (np.zeros((4, 4, 2), np.uint8), '2 channels; grey, RGB and RGBA'),
])
def test_unsupported_images_say_what_they_hold(img, message):
    with pytest.raises(ValueError, match=f'photo.tif has {message}'):
        split_image(img, 'photo.tif')


def test_corrupt_file_is_named(tmp_path):
    path = tmp_path / 'broken.png'
    path.write_bytes(b'\x89PNG\r\n\x1a\nnot really')
    with pytest.raises(ValueError, match=f'{path}: the file is not an image'):
        read_image(str(path))


@pytest.mark.parametrize('path, image_format, with_alpha, message', [
    ('out.jpg', ImageFormat(False, 65535), False, r'out.jpg: .jpg cannot hold 16-bit samples'),
    ('out.jpg', ImageFormat(False, 255), True, r'out.jpg: .jpg cannot hold an alpha channel'),
    ('out', ImageFormat(True, 255), True, 'no extension cannot hold an alpha channel'),
])
def test_output_types_that_would_lose_data_are_refused(path, image_format, with_alpha, message):
    with pytest.raises(ValueError, match=message):
        check_writable(path, image_format, with_alpha)
    check_writable('out.png', image_format, with_alpha)
