"""All-in-one datasets (PromptIR layout, on-the-fly and seeded noise, disk = LMDB, errors that name the path), the
degradation kernels and the demo data script."""
import os
import random

import cv2
import numpy as np
import pytest
from basicsr.data import build_dataset
from scripts_loader import load_script

from basicsr_ea.data import degradations
from basicsr_ea.data.allinone_dataset import TASK_IDS, TRAIN_LAYOUT
from basicsr_ea.data.lmdb_util import folder_to_lmdb

make_allinone_demo = load_script('make_allinone_demo')
SIZE = 24

def write_image(path, img):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(str(path), img)

def clean_image(seed):
    """A smooth uint8 colour image, mid-grey on average so that sigma 15 noise is never clipped."""
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.integers(80, 176, (4, 4, 3)).astype(np.uint8), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)

@pytest.fixture
def train_root(tmp_path):
    """PromptIR's training layout; every degraded image is the negative of its clean one, so pairing and aligned
    cropping are checkable from the pixels."""
    root = tmp_path / 'Train'
    for i in (1, 2):
        write_image(root / 'Denoise' / f'{i:04d}.png', clean_image(i))
        write_image(root / 'Derain' / 'gt' / f'norain-{i}.png', clean_image(10 + i))
        write_image(root / 'Derain' / 'rainy' / f'rain-{i}.png', 255 - clean_image(10 + i))
        write_image(root / 'Deblur' / 'sharp' / f'{i:04d}.png', clean_image(30 + i))
        write_image(root / 'Deblur' / 'blur' / f'{i:04d}.png', 255 - clean_image(30 + i))
    write_image(root / 'Dehaze' / 'original' / '0007.png', clean_image(20))
    for hazy in ('0007_0.8_0.1.png', '0007_1_0.2.png'):
        write_image(root / 'Dehaze' / 'synthetic' / 'part1' / hazy, 255 - clean_image(20))
    return str(root)

def train_options(root, de_type, backend='disk', **kwargs):
    return {'name': 'train', 'type': 'AllInOneTrainDataset', 'phase': 'train', 'scale': 1, 'dataroot': root,
            'de_type': de_type, 'io_backend': {'type': backend}, 'gt_size': 16, 'use_hflip': True, 'use_rot': True,
            **kwargs}


def val_options(task, dataroot_gt, dataroot_lq=None, backend='disk', **kwargs):
    return {'name': task, 'type': 'AllInOneTestDataset', 'phase': 'val', 'scale': 1, 'task': task,
            'dataroot_gt': dataroot_gt, 'dataroot_lq': dataroot_lq, 'io_backend': {'type': backend}, **kwargs}


def test_train_pairs_promptir_names_and_repeats_each_task(train_root):
    dataset = build_dataset(train_options(train_root, ['denoise_15', 'denoise_50', 'derain', 'dehaze', 'deblur'],
                                          repeat={'derain': 3, 'denoise_50': 2}))
    tasks = [task for task, _, _ in dataset.samples]
    assert {task: tasks.count(task) for task in set(tasks)} == {
        'denoise_15': 3 * 2, 'denoise_50': 2 * 2, 'derain': 3 * 2, 'dehaze': 1 * 2, 'deblur': 5 * 2}
    pairs = {(os.path.basename(lq[1]), os.path.basename(gt[1])) for task, lq, gt in dataset.samples if lq}
    assert pairs == {('rain-1.png', 'norain-1.png'), ('rain-2.png', 'norain-2.png'), ('0007_0.8_0.1.png', '0007.png'),
                     ('0007_1_0.2.png', '0007.png'), ('0001.png', '0001.png'), ('0002.png', '0002.png')}
    assert all(lq is None for task, lq, _ in dataset.samples if task.startswith('denoise'))

def test_train_crops_degraded_and_clean_alike(train_root):
    dataset = build_dataset(train_options(train_root, ['derain', 'dehaze']))
    random.seed(0)
    for index in range(len(dataset)):
        sample = dataset[index]
        assert sample['lq'].shape == sample['gt'].shape == (3, 16, 16)
        assert np.allclose(sample['lq'].numpy(), 1 - sample['gt'].numpy(), atol=1e-6)  # same window, same flips
        assert sample['task_id'] == TASK_IDS[sample['task']]

def test_train_noise_is_gaussian_uint8_and_fresh_each_time(train_root):
    dataset = build_dataset(train_options(train_root, ['denoise_15'], repeat={'denoise_15': 200}))
    np.random.seed(0)
    residuals = []
    for index in range(len(dataset)):
        sample = dataset[index]
        assert sample['task'] == 'denoise_15' and sample['task_id'] == 0 and sample['lq_path'] == sample['gt_path']
        lq = sample['lq'].numpy() * 255.
        assert np.allclose(lq, np.round(lq), atol=1e-3)  # quantised to uint8 levels
        residuals.append(lq - sample['gt'].numpy() * 255.)
    residuals = np.stack(residuals)
    assert abs(residuals.mean()) < 0.3 and 14.5 < residuals.std() < 15.5
    assert not np.array_equal(residuals[0], residuals[len(dataset) // 2])  # same image, new noise

def test_missing_listed_image_is_an_error_naming_it(train_root, tmp_path):
    list_file = tmp_path / 'rain.txt'
    list_file.write_text('rain-1.png\nrain-9.png\n')
    with pytest.raises(FileNotFoundError, match=r'rain\.txt names .*Derain/rainy/rain-9\.png'):
        build_dataset(train_options(train_root, ['derain'], meta_info_file={'derain': str(list_file)}))
    list_file.write_text('rain-2.png (24,24,3) 1\n')  # BasicSR's meta_info lines work too
    dataset = build_dataset(train_options(train_root, ['derain'], meta_info_file={'derain': str(list_file)},
                                          repeat={'derain': 1}))
    assert [os.path.basename(lq[1]) for _, lq, _ in dataset.samples] == ['rain-2.png']

def test_empty_task_and_unpaired_image_are_errors_naming_the_path(train_root):
    os.makedirs(os.path.join(train_root, 'Enhance', 'low'))
    os.makedirs(os.path.join(train_root, 'Enhance', 'gt'))
    with pytest.raises(ValueError, match=r'No images for task enhance in .*Enhance/low'):
        build_dataset(train_options(train_root, ['derain', 'enhance']))
    write_image(os.path.join(train_root, 'Derain', 'rainy', 'rain-3.png'), clean_image(3))
    with pytest.raises(FileNotFoundError, match=r'pairs with .*rain-3\.png'):
        build_dataset(train_options(train_root, ['derain']))
    with pytest.raises(FileNotFoundError, match=r'Train/Missing'):
        build_dataset(val_options('deblur', os.path.join(train_root, 'Missing'), os.path.join(train_root, 'x')))
    with pytest.raises(ValueError, match='denoise_30'):
        build_dataset(train_options(train_root, ['denoise_30']))

def test_test_noise_is_the_same_on_every_construction(train_root):
    denoise = os.path.join(train_root, 'Denoise')
    first, second = (build_dataset(val_options('denoise_25', denoise)) for _ in range(2))
    other_seed = build_dataset(val_options('denoise_25', denoise, noise_seed=1))
    np.random.seed(0)
    for index in range(len(first)):
        assert np.array_equal(first[index]['lq'].numpy(), second[index]['lq'].numpy())
        assert not np.array_equal(first[index]['lq'].numpy(), other_seed[index]['lq'].numpy())
    std = float((first[0]['lq'] - first[0]['gt']).std()) * 255.
    assert 22 < std < 28 and first[0]['task_id'] == 1
    assert not np.array_equal((first[0]['lq'] - first[0]['gt']).numpy(), (first[1]['lq'] - first[1]['gt']).numpy())

def test_test_dataset_pairs_and_centre_crops(train_root):
    dataset = build_dataset(val_options('dehaze', os.path.join(train_root, 'Dehaze', 'original'),
                                         os.path.join(train_root, 'Dehaze', 'synthetic'), crop_base=16))
    assert len(dataset) == 2
    sample = dataset[0]
    assert sample['lq'].shape == (3, 16, 16) and sample['task'] == 'dehaze' and sample['task_id'] == 4
    full = cv2.imread(sample['gt_path'])[..., ::-1].astype(np.float32) / 255.
    assert np.allclose(sample['gt'].numpy().transpose(1, 2, 0), full[4:20, 4:20])  # (24 - 16) / 2 = 4 a side
    assert np.allclose(sample['lq'].numpy(), 1 - sample['gt'].numpy(), atol=1e-6)

def to_lmdb(root):
    """Every folder of the layout as an LMDB made by the project's ``folder_to_lmdb`` (BasicSR's writer; it packs
    flat folders, so RESIDE's part folders are flattened first)."""
    synthetic = os.path.join(root, 'Dehaze', 'synthetic')
    for name in os.listdir(os.path.join(synthetic, 'part1')):
        os.rename(os.path.join(synthetic, 'part1', name), os.path.join(synthetic, name))
    for folder in {folder for pair in TRAIN_LAYOUT.values() for folder in pair if folder}:
        if os.path.isdir(os.path.join(root, folder)):
            folder_to_lmdb(os.path.join(root, folder))


def test_lmdb_reads_the_same_training_samples_as_disk(train_root):
    to_lmdb(train_root)
    de_type = ['denoise_25', 'derain', 'dehaze', 'deblur']
    disk, lmdb = (build_dataset(train_options(train_root, de_type, backend)) for backend in ('disk', 'lmdb'))
    assert len(disk) == len(lmdb) == 2 * 3 + 2 * 120 + 2 + 2 * 5
    for index in (0, 6, 246, len(disk) - 1):
        samples = []
        for dataset in (disk, lmdb):
            random.seed(index)
            np.random.seed(index)
            samples.append(dataset[index])
        assert samples[0]['task'] == samples[1]['task']
        assert os.path.splitext(os.path.basename(samples[0]['gt_path']))[0] == samples[1]['gt_path'].split('/')[-1]
        for key in ('lq', 'gt'):
            assert np.array_equal(samples[0][key].numpy(), samples[1][key].numpy())


def test_lmdb_reads_the_same_seeded_test_samples_as_disk(train_root):
    to_lmdb(train_root)
    folders = {'disk': ('Denoise', 'Derain/gt', 'Derain/rainy'), 'lmdb': ('Denoise.lmdb', 'Derain/gt.lmdb',
                                                                          'Derain/rainy.lmdb')}
    samples = {}
    for backend, (denoise, gt, lq) in folders.items():
        denoise_set = build_dataset(val_options('denoise_50', os.path.join(train_root, denoise), backend=backend))
        derain_set = build_dataset(val_options('derain', os.path.join(train_root, gt), os.path.join(train_root, lq),
                                               backend=backend))
        samples[backend] = [denoise_set[1], derain_set[0]]
    for from_disk, from_lmdb in zip(samples['disk'], samples['lmdb']):
        for key in ('lq', 'gt'):
            assert np.array_equal(from_disk[key].numpy(), from_lmdb[key].numpy())

def test_haze_blur_and_noise_kernels():
    rng = np.random.default_rng(0)
    img = rng.random((20, 30, 3)).astype(np.float32)
    depth = np.full((20, 30), 0.5, np.float32)
    t = np.exp(-1.2 * 0.5)
    assert np.allclose(degradations.add_haze(img, depth, 0.9, 1.2), img * t + 0.9 * (1 - t), atol=1e-6)
    kernel = degradations.line_kernel(9, 0)
    assert np.isclose(kernel.sum(), 1) and np.allclose(kernel[4], 1 / 9, atol=1e-6)
    flat = np.full((20, 30, 3), 0.25, np.float32)
    assert np.allclose(degradations.motion_blur(flat, 9, 37), 0.25, atol=1e-6)
    noisy = degradations.add_gaussian_noise(flat, 50, np.random.default_rng(1))
    assert np.allclose(noisy * 255, np.round(noisy * 255), atol=1e-3) and noisy.min() >= 0

@pytest.fixture(scope='module')
def demo_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('allinone') / 'allinone_demo')
    assert make_allinone_demo.make_allinone_demo(root) == 'created'
    return root

def test_demo_set_feeds_every_task(demo_root):
    train = build_dataset(train_options(os.path.join(demo_root, 'Train'), list(TASK_IDS), repeat=dict.fromkeys(
        TASK_IDS, 1)))
    tasks = [task for task, _, _ in train.samples]
    assert {task: tasks.count(task) for task in TASK_IDS} == {
        **dict.fromkeys(['denoise_15', 'denoise_25', 'denoise_50'], 14), **dict.fromkeys(
            ['derain', 'dehaze', 'deblur', 'enhance'], 28)}
    for task in ('derain', 'dehaze', 'deblur', 'enhance'):
        folder = os.path.join(demo_root, 'Test', task)
        dataset = build_dataset(val_options(task, os.path.join(folder, 'target'), os.path.join(folder, 'input')))
        sample = dataset[0]
        assert len(dataset) == 3 and sample['lq'].shape == (3, 128, 128)
        gap = float((sample['lq'] - sample['gt']).abs().mean())
        assert 0.01 < gap < 0.6, (task, gap)  # degraded, but still the same picture

def test_demo_set_is_deterministic_and_guarded(demo_root, tmp_path):
    assert make_allinone_demo.make_allinone_demo(demo_root) == 'up to date'
    hazy = sorted(os.listdir(os.path.join(demo_root, 'Test', 'dehaze', 'input')))
    assert [name.split('_')[0] for name in hazy] == ['0001', '0002', '0003']
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'mine.png').write_bytes(b'not the demo set')
    with pytest.raises(FileExistsError, match='--force'):
        make_allinone_demo.make_allinone_demo(str(other))
    assert make_allinone_demo.make_allinone_demo(str(other), force=True) == 'created'
    assert not (other / 'mine.png').exists()
