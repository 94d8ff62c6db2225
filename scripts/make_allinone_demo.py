"""Build the all-in-one demo data set: five degradations synthesised on scikit-image's sample images (no download).

    python scripts/make_allinone_demo.py [--root datasets/allinone_demo] [--force]

Layout (what ``AllInOneTrainDataset`` and ``AllInOneTestDataset`` read; PromptIR's names)::

    <root>/Train/Denoise/ID.png                                   clean; noise is added on the fly
    <root>/Train/Derain/rainy/rain-ID_V.png   <root>/Train/Derain/gt/norain-ID_V.png   (variant V)
    <root>/Train/Dehaze/synthetic/ID_A_B.png  <root>/Train/Dehaze/original/ID.png   (airlight A, density beta)
    <root>/Train/Deblur/blur/ID_V.png         <root>/Train/Deblur/sharp/ID_V.png
    <root>/Train/Enhance/low/ID_V.png         <root>/Train/Enhance/gt/ID_V.png
    <root>/Test/denoise/ID.png                                    clean; the test dataset adds seeded noise
    <root>/Test/{derain,dehaze,deblur,enhance}/{input,target}/...  as above, one variant an image
    <root>/manifest.json                                          sha256 of every PNG, to recognise an existing set

Training images are 160x160, test images 128x128 (centre squares of the downscaled samples); each training image
gets two variants of each degradation. Parameters are drawn from a generator seeded by (image, task, variant), so
the set is the same on every run. Running it again is a no-op; a different existing set is only replaced with
``--force``.
"""

import cv2
import numpy as np
from skimage import data as skdata

from basicsr_ea.data import degradations
from basicsr_ea.data.file_set import file_set_main, write_file_set

TEST_NAMES = ('astronaut', 'coffee', 'rocket')
TRAIN_NAMES = ('brick', 'camera', 'cat', 'chelsea', 'coins', 'grass', 'gravel', 'hubble_deep_field',
               'immunohistochemistry', 'moon', 'page', 'retina', 'stereo_motorcycle', 'text')
SIZES = {'Train': 160, 'Test': 128}
TRAIN_VARIANTS = 2
SEED = 2024
TASKS = ('derain', 'dehaze', 'deblur', 'enhance')
# (degraded, clean) folders of each task, per split (the Train names are the dataset's TRAIN_LAYOUT).
FOLDERS = {
    'Train': {'derain': ('Derain/rainy', 'Derain/gt'), 'dehaze': ('Dehaze/synthetic', 'Dehaze/original'),
              'deblur': ('Deblur/blur', 'Deblur/sharp'), 'enhance': ('Enhance/low', 'Enhance/gt')},
    'Test': {task: (f'{task}/input', f'{task}/target') for task in TASKS},
}


def load_square(name, size):
    """A scikit-image sample as float32 RGB in [0, 1] (grey repeated over three channels), downscaled so its short
    side is ``size`` and centre-cropped to a square."""
    img = skdata.stereo_motorcycle()[0] if name == 'stereo_motorcycle' else getattr(skdata, name)()
    img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
    height, width = img.shape[:2]
    factor = size / min(height, width)
    img = cv2.resize(img, (max(size, round(width * factor)), max(size, round(height * factor))),
                     interpolation=cv2.INTER_AREA)
    top, left = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
    return img[top:top + size, left:left + size].astype(np.float32) / 255.


def degrade(task, clean, rng):
    """``(degraded image, file name stem)`` of ``clean`` for ``task``; the stem carries what PromptIR's names carry
    (RESIDE's airlight and density for haze)."""
    if task == 'derain':
        return degradations.add_rain(clean, rng, density=rng.uniform(0.004, 0.01), length=int(rng.integers(10, 21)),
                                     angle=rng.uniform(-15, 15), brightness=rng.uniform(0.4, 0.7)), ''
    if task == 'dehaze':
        airlight, beta = round(rng.uniform(0.75, 0.95), 2), round(rng.uniform(0.8, 1.6), 2)
        depth = degradations.smooth_depth(clean.shape[:2], rng)
        return degradations.add_haze(clean, depth, airlight, beta), f'_{airlight}_{beta}'
    if task == 'deblur':
        return degradations.motion_blur(clean, length=2 * int(rng.integers(3, 8)) + 1, angle=rng.uniform(0, 180)), ''
    return degradations.low_light(clean, gamma=rng.uniform(1.8, 2.6), scale=rng.uniform(0.25, 0.45),
                                  sigma=rng.uniform(2, 6), rng=rng), ''


def pair_names(task, image_id, variant, stem_suffix):
    """(degraded, clean) file names in PromptIR's conventions."""
    if task == 'derain':
        return f'rain-{image_id}_{variant}.png', f'norain-{image_id}_{variant}.png'
    if task == 'dehaze':
        return f'{image_id}{stem_suffix}.png', f'{image_id}.png'
    return (f'{image_id}_{variant}.png', ) * 2


def encode(img):
    """PNG bytes of a float RGB image, quantised to uint8 as a saved data set is."""
    ok, png = cv2.imencode('.png', cv2.cvtColor(np.clip(np.round(img * 255.), 0, 255).astype(np.uint8),
                                                cv2.COLOR_RGB2BGR))
    assert ok, 'PNG encoding failed'
    return png.tobytes()


def build_images():
    """{relative png path: encoded PNG bytes} for the whole set, deterministic."""
    files = {}
    for split, names in (('Train', TRAIN_NAMES), ('Test', TEST_NAMES)):
        variants = TRAIN_VARIANTS if split == 'Train' else 1
        denoise_folder = 'Train/Denoise' if split == 'Train' else 'Test/denoise'
        for index, name in enumerate(names):
            image_id = f'{index + 1:04d}'
            clean = load_square(name, SIZES[split])
            files[f'{denoise_folder}/{image_id}.png'] = encode(clean)
            for task_index, task in enumerate(TASKS):
                lq_folder, gt_folder = FOLDERS[split][task]
                for variant in range(variants):
                    rng = np.random.default_rng([SEED, split == 'Test', index, task_index, variant])
                    degraded, stem_suffix = degrade(task, clean, rng)
                    lq_name, gt_name = pair_names(task, image_id, variant, stem_suffix)
                    lq_path = f'{split}/{lq_folder}/{lq_name}'
                    assert lq_path not in files, f'two variants drew the same name {lq_path}'
                    files[lq_path] = encode(degraded)
                    files[f'{split}/{gt_folder}/{gt_name}'] = encode(clean)
    return files


def make_allinone_demo(root, force=False):
    """Create the set under ``root``; returns 'created' or 'up to date'. Refuses to replace a different set."""
    return write_file_set(root, build_images(), force)


def main(argv=None):
    file_set_main(__doc__.split('\n')[0], 'datasets/allinone_demo', make_allinone_demo, argv)


if __name__ == '__main__':
    main()
