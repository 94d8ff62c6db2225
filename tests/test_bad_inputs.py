"""A catalogue of bad inputs: each is a clear error naming the problem (path, key, size), raised before anything
is lost. The cases tested elsewhere:

- bad EA-Adam options (population size, preferences, fitness folder, objectives, option names and types):
  tests/test_ea_adam_model.py::test_bad_options_are_clear_errors
- an empty EA fitness folder: tests/test_ea_adam_model.py::test_empty_fitness_folder_is_an_error
- a resume with another population size:
  tests/test_ea_adam_model.py::test_resume_with_another_population_size_is_refused
- a non-finite loss in one individual: tests/test_ea_adam_model.py::test_non_finite_loss_skips_only_that_individual
- missing VGG weights: tests/test_compat.py::test_missing_vgg_weights_name_the_file and
  tests/test_ea_adam_configs.py::test_missing_vgg_weights_name_the_expected_file
- a full disk while saving (the previous checkpoint is kept):
  tests/test_compat.py::test_atomic_save_keeps_previous_file_when_writing_fails
- an expert checkpoint of another arch: tests/test_fusion_arch.py::test_checkpoint_of_another_arch_is_an_error
- bad evaluation inputs: tests/test_evaluation.py::test_bad_inputs_are_clear_errors
- missing LPIPS/DISTS weights or calibration, images of different shapes: tests/test_lpips_metric.py
- all-in-one data: a missing listed image, an empty task, an unpaired image:
  tests/test_allinone_data.py::test_missing_listed_image_is_an_error_naming_it and
  tests/test_allinone_data.py::test_empty_task_and_unpaired_image_are_errors_naming_the_path
- non-finite gradients given to EA-Adam:
  tests/test_ea_adam_optimizer.py::test_set_mixed_gradients_refuses_non_finite_gradients
- real images: a transparent image in a dataset or an evaluation set, float or 2-channel samples, an output type
  that would drop alpha or 16 bits, a scale option that does not match the network, a tile size off the arch's
  multiple, a network that is not 3-channel: tests/test_real_images.py and tests/test_image_formats.py

The cases below are BasicSR's paired data (what the SR configs train on), LMDBs, images, checkpoints and batches.
"""
import os

import pytest
import torch
from basicsr.data import build_dataset
from basicsr.models import build_model
from basicsr.utils import get_root_logger
from builders import in_process, paired_dataset, snapshot, tiny_demo_options, tiny_ea_options, write_pairs
from helpers import run_train

from basicsr_ea.checkpoints import CheckpointError
from basicsr_ea.data.lmdb_util import folder_to_lmdb


def test_missing_dataroot_names_the_folder(tmp_path, pipeline_repairs):
    gt, _ = write_pairs(str(tmp_path))
    missing = str(tmp_path / 'no_such_lq')
    with pytest.raises(FileNotFoundError, match=f'dataroot_lq {missing} not found'):
        paired_dataset(gt, missing)


def test_lmdb_key_missing_from_the_lmdb_names_key_and_lmdb(tmp_path, pipeline_repairs):
    gt, lq = (folder_to_lmdb(folder) for folder in write_pairs(str(tmp_path)))
    for lmdb in (gt, lq):  # a meta_info.txt that lists an image the LMDB does not hold
        with open(os.path.join(lmdb, 'meta_info.txt'), 'a') as f:
            f.write('ghost.png (32,32,3) 1\n')
    dataset = paired_dataset(gt, lq, 'lmdb')
    index = [pair['gt_path'] for pair in dataset.paths].index('ghost')
    with pytest.raises(KeyError, match=f'key ghost .*missing from the LMDB {gt}'):
        dataset[index]


def test_lq_gt_sizes_off_the_scale_name_both_files(tmp_path, pipeline_repairs):
    gt, lq = write_pairs(str(tmp_path), names=('a',), lq_size=10)
    with pytest.raises(ValueError, match=rf'LQ {lq}/a.png / GT {gt}/a.png: Scale mismatches. GT \(32, 32\) is not 4x'):
        paired_dataset(gt, lq)[0]


def test_corrupt_image_names_the_file(tmp_path, pipeline_repairs):
    gt, lq = write_pairs(str(tmp_path), names=('a',))
    with open(os.path.join(lq, 'a.png'), 'wb') as f:
        f.write(b'these bytes are not a PNG')
    with pytest.raises(ValueError, match=f'LQ {lq}/a.png .*not an image'):
        paired_dataset(gt, lq)[0]


def test_nan_batch_skips_every_individual_and_names_the_iteration(demo_data, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(get_root_logger(), 'propagate', True)  # BasicSR's logger hides from caplog
    model = build_model(in_process(tiny_ea_options('unit', demo_data), tmp_path))
    before = snapshot(model)
    model.feed_data({'lq': torch.full((2, 3, 32, 32), float('nan')), 'gt': torch.rand(2, 3, 128, 128)})
    model.optimize_parameters(current_iter=7)
    after = snapshot(model)
    assert all(torch.equal(a, b) for net_a, net_b in zip(before, after) for a, b in zip(net_a, net_b))
    trained = [i for i in range(len(before)) if i not in model.optimizer_g.frozen]
    assert trained and all(f'iter 7: individual {i} has a non-finite loss' in caplog.text for i in trained)


def test_empty_validation_folder_fails_before_training_and_keeps_the_checkpoints(demo_data, experiment_name,
                                                                                   tmp_path):
    opt = tiny_demo_options(experiment_name, demo_data, total_iter=4)
    exp_dir, _ = run_train(opt, tmp_path)  # an earlier run with its checkpoints
    saved = {}
    for folder in ('models', 'training_states'):
        for name in os.listdir(os.path.join(exp_dir, folder)):
            with open(os.path.join(exp_dir, folder, name), 'rb') as f:
                saved[os.path.join(folder, name)] = f.read()
    empty = tmp_path / 'empty_val'
    for sub in ('HR', 'LR'):
        (empty / sub).mkdir(parents=True)
    opt['datasets']['val'].update(dataroot_gt=str(empty / 'HR'), dataroot_lq=str(empty / 'LR'))
    opt['train']['total_iter'] = 8
    _, output = run_train(opt, tmp_path, '--auto_resume', check=False)
    assert f"{empty / 'HR'} and {empty / 'LR'} hold no images" in output and 'l_pix' not in output
    for name, data in saved.items():
        with open(os.path.join(exp_dir, name), 'rb') as f:
            assert f.read() == data, name


class NotATensor:
    """What a checkpoint must not hold: unpickling it would run this module's code."""


def build_sr_model(pretrain):
    return build_model({'model_type': 'SRModel', 'is_train': False, 'dist': False, 'num_gpu': 0, 'scale': 4,
                        'network_g': {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1, 'upscale': 4},
                        'path': {'pretrain_network_g': pretrain, 'strict_load_g': True, 'param_key_g': 'params'}})


def test_missing_pretrained_generator_is_named(tmp_path, pipeline_repairs):
    missing = str(tmp_path / 'net_g_missing.pth')
    with pytest.raises(FileNotFoundError, match=f'checkpoint {missing} not found'):
        build_sr_model(missing)


def test_checkpoint_needing_arbitrary_unpickling_is_refused(tmp_path, pipeline_repairs):
    path = str(tmp_path / 'net_g_pickled.pth')
    torch.save({'params': NotATensor()}, path)
    with pytest.raises(CheckpointError, match=f'{path} is not a weights-only checkpoint'):
        build_sr_model(path)


def test_corrupt_image_in_allinone_data_names_the_file(tmp_path):
    gt, _ = write_pairs(str(tmp_path), names=('a',))
    with open(os.path.join(gt, 'a.png'), 'wb') as f:
        f.write(b'these bytes are not a PNG')
    dataset = build_dataset({'name': 'noise', 'type': 'AllInOneTestDataset', 'phase': 'val', 'scale': 1,
                             'task': 'denoise_15', 'dataroot_gt': gt, 'io_backend': {'type': 'disk'}})
    with pytest.raises(ValueError, match=f'{gt}/a.png: .*not an image'):
        dataset[0]
