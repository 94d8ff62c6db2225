"""The compatibility layer: BasicSR imports and works on torch 2.14 / CPU; importing the plugin leaves stock BasicSR
as it is; the pipeline repairs apply inside ``PipelineRepairs`` only, and this project's models carry their own."""
import copy
import errno
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from basicsr.archs import vgg_arch
from basicsr.data.data_sampler import EnlargedSampler
from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.losses.basic_loss import L1Loss, PerceptualLoss
from basicsr.models.base_model import BaseModel
from basicsr.models.sr_model import SRModel
from basicsr.utils import img_util
from basicsr.utils.registry import ARCH_REGISTRY

import basicsr.train
from basicsr_ea import compat
from basicsr_ea.checkpoints import CheckpointError, read_checkpoint, save_checkpoint
from basicsr_ea.optim import OPTIMIZER_REGISTRY, build_optimizer
from basicsr_ea.testing import write_random_vgg19
from basicsr_ea.utils import get_rng_states, set_rng_states

TESTS = os.path.dirname(os.path.abspath(__file__))


class PluginBaseModel(compat.RepairedModel, BaseModel):
    pass


def make_base_model(train_opt):
    return PluginBaseModel({'num_gpu': 0, 'is_train': True, 'dist': False, 'train': train_opt})


def test_pipeline_repairs_apply_inside_and_are_undone_after():
    stock_resume, stock_iter, stock_imfrombytes = (basicsr.train.load_resume_state, EnlargedSampler.__iter__,
                                                   img_util.imfrombytes)
    with compat.PipelineRepairs() as repairs:
        assert basicsr.train.load_resume_state == repairs.load_resume_state
        from basicsr.data import paired_image_dataset
        assert paired_image_dataset.imfrombytes is compat.imfrombytes
        assert EnlargedSampler.__iter__ is stock_iter  # only once a resume state is loaded
    assert basicsr.train.load_resume_state is stock_resume and EnlargedSampler.__iter__ is stock_iter
    assert paired_image_dataset.imfrombytes is stock_imfrombytes


@pytest.mark.parametrize('optim_type', ['Adam', 'AdamW', 'SGD'])
def test_plugin_models_resolve_optimizers_through_registry(optim_type):
    params = [torch.nn.Parameter(torch.ones(3))]
    optimizer = make_base_model({}).get_optimizer(optim_type, params, lr=0.1)
    assert type(optimizer) is getattr(torch.optim, optim_type)
    assert optimizer.param_groups[0]['lr'] == 0.1


def test_stock_models_keep_basicsr_optimizers():
    with pytest.raises(NotImplementedError):
        BaseModel({'num_gpu': 0, 'is_train': True, 'dist': False}).get_optimizer('SGD', [], lr=0.1)


def test_optimizer_registry_plugs_in_new_types_and_keeps_options():
    @OPTIMIZER_REGISTRY.register()
    class HalfSGD(torch.optim.SGD):
        pass

    try:
        opt = {'type': 'HalfSGD', 'lr': 0.5}
        optimizer = build_optimizer(opt, [torch.nn.Parameter(torch.ones(1))])
        assert isinstance(optimizer, HalfSGD) and opt == {'type': 'HalfSGD', 'lr': 0.5}
        with pytest.raises(KeyError, match='NoSuchOptim'):
            build_optimizer({'type': 'NoSuchOptim', 'lr': 1}, [])
    finally:
        OPTIMIZER_REGISTRY._obj_map.pop('HalfSGD')


def test_setup_schedulers_can_run_twice():
    scheduler_opt = {'type': 'MultiStepLR', 'milestones': [10], 'gamma': 0.5}
    model = make_base_model({'scheduler': copy.deepcopy(scheduler_opt)})
    model.optimizers = [torch.optim.Adam([torch.nn.Parameter(torch.ones(1))], lr=1.0)]
    model.setup_schedulers()
    model.setup_schedulers()
    assert len(model.schedulers) == 2 and model.opt['train']['scheduler'] == scheduler_opt


def test_missing_vgg_weights_name_the_file(tmp_path):
    missing = str(tmp_path / 'vgg19-dcbb9e9d.pth')
    opt = {'train': {'perceptual_opt': {'type': 'PerceptualLoss'}}, 'path': {'pretrain_network_vgg': missing}}
    with pytest.raises(FileNotFoundError, match=f'{missing}.*nothing is downloaded'):
        with compat.perceptual_weights(opt):
            pass
    with compat.PipelineRepairs(), pytest.raises(FileNotFoundError, match='vgg19-dcbb9e9d.pth'):
        vgg_arch.VGGFeatureExtractor(['relu1_1'])


def test_vgg_weights_load_from_the_options_path_for_the_build_only(tmp_path):
    path = str(tmp_path / 'vgg19.pth')
    reference = write_random_vgg19(path)
    default = vgg_arch.VGG_PRETRAIN_PATH
    opt = {'train': {'perceptual_opt': {'type': 'PerceptualLoss'}}, 'path': {'pretrain_network_vgg': path}}
    with compat.perceptual_weights(opt):
        extractor = vgg_arch.VGGFeatureExtractor(['conv1_1'], use_input_norm=False)
    assert torch.equal(extractor.vgg_net.conv1_1.weight, reference['features.0.weight'])
    assert vgg_arch.VGG_PRETRAIN_PATH == default


def write_states(states, iterations):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    for it in iterations:
        save_checkpoint({'iter': it, 'epoch': 0, 'optimizers': [optimizer.state_dict()]}, str(states / f'{it}.state'))
    return optimizer.state[model.weight]['exp_avg']


def resume_options(tmp_path):
    return {'auto_resume': True, 'path': {'training_states': str(tmp_path / 'training_states'),
                                          'models': str(tmp_path)}, 'datasets': {'train': {'batch_size_per_gpu': 2}}}


def test_resume_state_loads_on_cpu_from_the_experiment_root(tmp_path):
    states = tmp_path / 'training_states'
    states.mkdir()
    exp_avg = write_states(states, (5, 10))
    opt = resume_options(tmp_path)
    stock_iter = EnlargedSampler.__iter__
    with compat.PipelineRepairs() as repairs:
        state = repairs.load_resume_state(opt)
        assert EnlargedSampler.__iter__ is not stock_iter  # the resumed epoch skips what the saved run consumed
    assert EnlargedSampler.__iter__ is stock_iter
    assert state['iter'] == 10 and opt['path']['resume_state'].endswith('10.state')
    resumed = state['optimizers'][0]['state'][0]['exp_avg']
    assert resumed.device.type == 'cpu' and torch.equal(resumed, exp_avg)
    assert repairs.pending_resume == {'iter': 10, 'rng': None, 'batch_size': 2}


def test_auto_resume_falls_back_to_the_newest_intact_state(tmp_path, caplog):
    states = tmp_path / 'training_states'
    states.mkdir()
    write_states(states, (5, 10, 15))
    (states / '15.state').write_bytes((states / '15.state').read_bytes()[:100])  # cut short
    opt = resume_options(tmp_path)
    with compat.PipelineRepairs() as repairs:
        state = repairs.load_resume_state(opt)
    assert state['iter'] == 10 and opt['path']['resume_state'].endswith('10.state')
    assert '15.state cannot be read' in caplog.text and 'Trying the state before it' in caplog.text


def test_atomic_save_keeps_previous_file_when_the_disk_is_full(tmp_path, monkeypatch):
    path = str(tmp_path / 'net.pth')
    save_checkpoint({'params': torch.ones(2)}, path)

    def full_disk(fd):
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(os, 'fsync', full_disk)
    with pytest.raises(OSError, match=f'could not write {path}: the disk is full .*previous file is kept'):
        save_checkpoint({'params': torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(read_checkpoint(path)['params'], torch.ones(2))
    assert os.listdir(tmp_path) == ['net.pth']


def test_rng_states_round_trip_through_weights_only_load(tmp_path):
    import random
    path = str(tmp_path / 'rng.pth')
    save_checkpoint(get_rng_states(), path)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_states(read_checkpoint(path))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def run_python(code):
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=TESTS,
                          env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_importing_the_plugin_overwrites_no_registered_name():
    snapshot = ('{name: {key: id(value) for key, value in registry._obj_map.items()} for name, registry in '
                '(("arch", ARCH_REGISTRY), ("model", MODEL_REGISTRY), ("loss", LOSS_REGISTRY), '
                '("metric", METRIC_REGISTRY), ("dataset", DATASET_REGISTRY))}')
    output = run_python(
        'from stock_basicsr import shim_functional_tensor; shim_functional_tensor()\n'
        'import basicsr.archs, basicsr.data, basicsr.losses, basicsr.metrics, basicsr.models\n'
        'from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, '
        'MODEL_REGISTRY\n'
        f'before = {snapshot}\n'
        'import basicsr_ea\n'
        f'after = {snapshot}\n'
        'for name, names in before.items():\n'
        '    assert all(after[name][key] == value for key, value in names.items()), name\n'
        '    print(name, sorted(set(after[name]) - set(names)))\n')
    added = dict(line.split(' ', 1) for line in output.strip().splitlines())
    assert "'EAAdamModel'" in added['model'] and "'MEASNet'" in added['arch']
    assert "'AllInOneTrainDataset'" in added['dataset'] and "'calculate_lpips'" in added['metric']


def test_stock_srmodel_trains_identically_with_the_plugin_imported(tmp_path):
    """Losses, weights and saved files of a stock SRModel run, in a fresh process with only the import repair and
    in one with ``import basicsr_ea``: the plugin changes nothing of it."""
    results = {}
    for mode in ('stock', 'plugin'):
        out = tmp_path / mode
        run_python(f'from stock_basicsr import train_srmodel; train_srmodel({mode!r}, {str(out)!r})')
        results[mode] = torch.load(out / 'result.pth', weights_only=True)
    stock, plugin = results['stock'], results['plugin']
    assert len(stock['losses']) == 5 and stock['losses'][0] != stock['losses'][-1]
    assert stock['losses'] == plugin['losses']
    for key, value in stock['weights'].items():
        assert torch.equal(value, plugin['weights'][key]), key
    assert stock['state_keys'] == plugin['state_keys'] == ['epoch', 'iter', 'optimizers', 'schedulers']


def test_basicsr_srmodel_scenario_runs_on_cpu_with_the_plugin_imported(tmp_path, monkeypatch):
    """BasicSR 1.4.2's own ``tests/test_models/test_sr_model.py`` scenario, on CPU (``num_gpu: 0``), with VGG
    weights from a local file and validation images written here."""
    vgg = str(tmp_path / 'vgg19.pth')
    write_random_vgg19(vgg)
    monkeypatch.setattr(vgg_arch, 'VGG_PRETRAIN_PATH', vgg)
    rng = np.random.default_rng(0)
    for folder, size in (('gt', 32), ('lq', 8)):
        os.makedirs(tmp_path / folder)
        cv2.imwrite(str(tmp_path / folder / 'a.png'), rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    opt = {'scale': 4, 'num_gpu': 0, 'manual_seed': 0, 'is_train': True, 'dist': False,
           'network_g': {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 4, 'num_block': 1,
                         'upscale': 4},
           'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
           'train': {'ema_decay': 0.999, 'optim_g': {'type': 'Adam', 'lr': 2e-4, 'weight_decay': 0,
                                                     'betas': [0.9, 0.99]},
                     'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [250000] * 4,
                                   'restart_weights': [1] * 4, 'eta_min': 1e-7},
                     'total_iter': 1000000, 'warmup_iter': -1,
                     'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
                     'perceptual_opt': {'type': 'PerceptualLoss', 'layer_weights': {'conv5_4': 1},
                                        'vgg_type': 'vgg19', 'use_input_norm': True, 'range_norm': False,
                                        'perceptual_weight': 1.0, 'style_weight': 1.0, 'criterion': 'l1'}},
           'val': {'val_freq': 5e3, 'save_img': True,
                   'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4, 'test_y_channel': False}}}}
    model = SRModel(opt)
    assert isinstance(model.cri_pix, L1Loss) and isinstance(model.cri_perceptual, PerceptualLoss)
    model.feed_data({'gt': torch.rand(1, 3, 32, 32), 'lq': torch.rand(1, 3, 8, 8)})
    model.optimize_parameters(1)
    assert model.output.shape == (1, 3, 32, 32) and {'l_pix', 'l_percep', 'l_style'} <= set(model.log_dict)
    model.opt['path'].update(models=str(tmp_path), training_states=str(tmp_path), visualization=str(tmp_path))
    model.save(0, 1)  # 1.4.2 + the plugin's first release: KeyError 'rank' here
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(('.pth', '.state'))) == [
        '1.state', 'net_g_1.pth', 'vgg19.pth']
    dataset = PairedImageDataset({'name': 'Test', 'dataroot_gt': str(tmp_path / 'gt'),
                                  'dataroot_lq': str(tmp_path / 'lq'), 'io_backend': {'type': 'disk'}, 'scale': 4,
                                  'phase': 'val'})
    model.nondist_validation(torch.utils.data.DataLoader(dataset, batch_size=1), 1, None, save_img=True)
    assert isinstance(model.metric_results['psnr'], float) and 0 < model.metric_results['psnr'] < 60


def test_stock_archs_still_registered():
    for name in ('MSRResNet', 'RRDBNet', 'SwinIR', 'VGGStyleDiscriminator'):
        assert name in ARCH_REGISTRY


def test_a_truncated_checkpoint_names_the_file(tmp_path):
    path = tmp_path / 'net.pth'
    save_checkpoint({'params': {'w': torch.ones(3)}}, str(path))
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(CheckpointError, match=f'{path} cannot be read: truncated'):
        read_checkpoint(str(path))
