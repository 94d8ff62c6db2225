"""The x4 SR demo data: deterministic, idempotent, and its LMDB holds exactly the folder images."""
import os

import cv2
import lmdb
import numpy as np
import pytest
from scripts_loader import load_script

make_demo_data = load_script('make_demo_data')


def read_lmdb(lmdb_path):
    with open(os.path.join(lmdb_path, 'meta_info.txt')) as f:
        meta = [line.split() for line in f]
    env = lmdb.open(lmdb_path, readonly=True, lock=False)
    with env.begin() as txn:
        images = {name: txn.get(os.path.splitext(name)[0].encode()) for name, _, _ in meta}
    env.close()
    return meta, images


@pytest.mark.parametrize('split', ['train', 'val'])
@pytest.mark.parametrize('folder', ['HR', 'LR_bicubic_x4'])
def test_lmdb_reads_back_identical_images(demo_data, split, folder):
    image_folder = os.path.join(demo_data, split, folder)
    meta, encoded = read_lmdb(image_folder + '.lmdb')
    assert sorted(os.listdir(image_folder)) == [name for name, _, _ in meta]
    for name, shape, _ in meta:
        from_disk = cv2.imread(os.path.join(image_folder, name), cv2.IMREAD_UNCHANGED)
        from_lmdb = cv2.imdecode(np.frombuffer(encoded[name], np.uint8), cv2.IMREAD_UNCHANGED)
        assert from_disk.shape == tuple(int(v) for v in shape.strip('()').split(','))
        assert from_disk.dtype == np.uint8 and np.array_equal(from_disk, from_lmdb)


def test_lr_is_matlab_bicubic_of_hr(demo_data):
    hr = cv2.imread(os.path.join(demo_data, 'val', 'HR', 'astronaut.png'))[..., ::-1]
    lr = cv2.imread(os.path.join(demo_data, 'val', 'LR_bicubic_x4', 'astronaut.png'))[..., ::-1]
    assert hr.shape == (384, 384, 3) and lr.shape == (96, 96, 3)
    assert np.array_equal(lr, make_demo_data.bicubic_lr(hr))


def test_split_is_disjoint_and_sizes_fit_the_scale(demo_data):
    train = set(os.listdir(os.path.join(demo_data, 'train', 'HR')))
    val = set(os.listdir(os.path.join(demo_data, 'val', 'HR')))
    assert len(train) == 12 and len(val) == 3 and not train & val
    for name in train:
        hr = cv2.imread(os.path.join(demo_data, 'train', 'HR', name))
        lr = cv2.imread(os.path.join(demo_data, 'train', 'LR_bicubic_x4', name))
        assert max(hr.shape[:2]) <= 256 and min(hr.shape[:2]) >= 128
        assert hr.shape[0] == 4 * lr.shape[0] and hr.shape[1] == 4 * lr.shape[1]


def test_rerun_is_a_no_op_and_a_different_set_is_refused(demo_data, tmp_path):
    assert make_demo_data.make_demo_data(demo_data) == 'up to date'
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'mine.png').write_bytes(b'not the demo set')
    with pytest.raises(FileExistsError, match='--force'):
        make_demo_data.make_demo_data(str(other))
    assert (other / 'mine.png').read_bytes() == b'not the demo set'
