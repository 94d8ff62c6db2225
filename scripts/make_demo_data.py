"""Build the x4 SR demo data set from the natural images scikit-image ships in its wheel (nothing is downloaded).

    python scripts/make_demo_data.py [--root datasets/demo_x4] [--force]

Layout (what BasicSR's ``PairedImageDataset`` reads, folders and LMDB alike)::

    <root>/{train,val}/HR/<name>.png             <root>/{train,val}/HR.lmdb            (+ meta_info.txt)
    <root>/{train,val}/LR_bicubic_x4/<name>.png  <root>/{train,val}/LR_bicubic_x4.lmdb
    <root>/manifest.json                         sha256 of every PNG, to recognise an existing set

HR training images are scaled so their long side is 256 px (every short side stays above 128 px, the GAN
patch size); validation HR images are 384x384 centre crops: NIQE fits its statistics over 96 px blocks, and the
4 blocks of a 192 px crop made it jump by up to 1.0 between neighbouring networks (16 blocks: smooth). LR images
come from BasicSR's MATLAB-compatible bicubic. Running it again is a no-op; a different existing set is only
replaced with ``--force``.
"""
import os

import cv2
import numpy as np
from skimage import data as skdata

import basicsr_ea  # noqa: F401  (BasicSR needs the compatibility layer to import)
from basicsr_ea.data.file_set import file_set_main, write_file_set
from basicsr_ea.data.lmdb_util import folder_to_lmdb
from basicsr.utils.matlab_functions import imresize

SCALE = 4
TRAIN_LONG_SIDE = 256
VAL_SIZE = 384
VAL_NAMES = ('astronaut', 'coffee', 'rocket')
TRAIN_NAMES = ('brick', 'camera', 'cat', 'chelsea', 'coins', 'grass', 'gravel', 'hubble_deep_field',
               'immunohistochemistry', 'moon', 'retina', 'stereo_motorcycle')
LR_FOLDER = f'LR_bicubic_x{SCALE}'


def load_rgb(name):
    """A scikit-image sample as uint8 RGB (grey images repeated over three channels)."""
    img = skdata.stereo_motorcycle()[0] if name == 'stereo_motorcycle' else getattr(skdata, name)()
    return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]


def crop_to_multiple(img, multiple):
    h, w = img.shape[:2]
    return img[:h - h % multiple, :w - w % multiple]


def make_train_hr(img):
    h, w = img.shape[:2]
    factor = TRAIN_LONG_SIDE / max(h, w)
    if factor < 1:
        img = cv2.resize(img, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_AREA)
    return crop_to_multiple(img, SCALE)


def make_val_hr(img):
    h, w = img.shape[:2]
    top, left = (h - VAL_SIZE) // 2, (w - VAL_SIZE) // 2
    return img[top:top + VAL_SIZE, left:left + VAL_SIZE]


def bicubic_lr(hr):
    """LR by BasicSR's MATLAB-compatible bicubic, the degradation of the SR benchmarks."""
    lr = imresize(hr.astype(np.float64) / 255., 1 / SCALE)
    return np.clip(np.round(lr * 255.), 0, 255).astype(np.uint8)


def build_images():
    """{relative png path: encoded PNG bytes} for the whole set, deterministic."""
    files = {}
    for split, names, make_hr in (('train', TRAIN_NAMES, make_train_hr), ('val', VAL_NAMES, make_val_hr)):
        for name in names:
            hr = make_hr(load_rgb(name))
            for folder, img in (('HR', hr), (LR_FOLDER, bicubic_lr(hr))):
                ok, png = cv2.imencode('.png', cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
                assert ok, f'PNG encoding failed for {name}'
                files[f'{split}/{folder}/{name}.png'] = png.tobytes()
    return files


def pack_lmdbs(root):
    for split in ('train', 'val'):
        for folder in ('HR', LR_FOLDER):
            folder_to_lmdb(os.path.join(root, split, folder))


def make_demo_data(root, force=False):
    """Create the set under ``root``; returns 'created' or 'up to date'. Refuses to replace a different set."""
    return write_file_set(root, build_images(), force, after_write=pack_lmdbs)


def main(argv=None):
    file_set_main(__doc__.split('\n')[0], 'datasets/demo_x4', make_demo_data, argv)


if __name__ == '__main__':
    main()
