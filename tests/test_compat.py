"""The compatibility layer: BasicSR imports and its training machinery works on torch 2.14 / CPU."""
import copy
import os

import pytest
import torch
from basicsr.archs import vgg_arch
from basicsr.models.base_model import BaseModel
from basicsr.utils.registry import ARCH_REGISTRY

from basicsr_ea import compat
from basicsr_ea.optim import OPTIMIZER_REGISTRY, build_optimizer
from basicsr_ea.testing import write_random_vgg19
from basicsr_ea.utils import atomic_torch_save, get_rng_states, set_rng_states


def make_base_model(train_opt):
    return BaseModel({'num_gpu': 0, 'is_train': True, 'dist': False, 'rank': 0, 'train': train_opt})


def test_basicsr_pipelines_import():
    from basicsr.test import test_pipeline
    from basicsr.train import load_resume_state, train_pipeline
    assert callable(train_pipeline) and callable(test_pipeline)
    assert load_resume_state is compat.load_resume_state


@pytest.mark.parametrize('optim_type', ['Adam', 'AdamW', 'SGD'])
def test_base_model_resolves_optimizers_through_registry(optim_type):
    params = [torch.nn.Parameter(torch.ones(3))]
    optimizer = make_base_model({}).get_optimizer(optim_type, params, lr=0.1)
    assert type(optimizer) is getattr(torch.optim, optim_type)
    assert optimizer.param_groups[0]['lr'] == 0.1


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


def test_missing_vgg_weights_name_the_file(tmp_path, monkeypatch):
    missing = str(tmp_path / 'vgg19-dcbb9e9d.pth')
    monkeypatch.setattr(vgg_arch, 'VGG_PRETRAIN_PATH', missing)
    with pytest.raises(FileNotFoundError, match='vgg19-dcbb9e9d.pth'):
        vgg_arch.VGGFeatureExtractor(['relu1_1'])


def test_vgg_weights_load_from_local_path(tmp_path):
    path = str(tmp_path / 'vgg19.pth')
    reference = write_random_vgg19(path)
    old = vgg_arch.VGG_PRETRAIN_PATH
    compat.set_vgg_weights_path(path)
    try:
        extractor = vgg_arch.VGGFeatureExtractor(['conv1_1'], use_input_norm=False)
    finally:
        compat.set_vgg_weights_path(old)
    assert torch.equal(extractor.vgg_net.conv1_1.weight, reference['features.0.weight'])


def test_resume_state_loads_on_cpu(tmp_path):
    states = tmp_path / 'training_states'
    states.mkdir()
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    for it in (5, 10):
        atomic_torch_save({'iter': it, 'epoch': 0, 'optimizers': [optimizer.state_dict()]}, str(states / f'{it}.state'))
    opt = {'auto_resume': True, 'path': {'training_states': str(states), 'models': str(tmp_path)},
           'datasets': {'train': {'batch_size_per_gpu': 2}}}
    state = compat.load_resume_state(opt)
    compat._pending_resume.clear()
    assert state['iter'] == 10 and opt['path']['resume_state'].endswith('10.state')
    exp_avg = state['optimizers'][0]['state'][0]['exp_avg']
    assert exp_avg.device.type == 'cpu' and torch.equal(exp_avg, optimizer.state[model.weight]['exp_avg'])


def test_atomic_save_keeps_previous_file_when_writing_fails(tmp_path, monkeypatch):
    path = str(tmp_path / 'net.pth')
    atomic_torch_save({'params': torch.ones(2)}, path)

    def full_disk(obj, f, *args, **kwargs):
        with open(f, 'wb') as handle:
            handle.write(b'partial')
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(torch, 'save', full_disk)
    with pytest.raises(OSError, match='No space left'):
        atomic_torch_save({'params': torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)['params'], torch.ones(2))
    assert os.listdir(tmp_path) == ['net.pth']


def test_rng_states_round_trip_through_weights_only_load(tmp_path):
    import random

    import numpy as np
    path = str(tmp_path / 'rng.pth')
    torch.save(get_rng_states(), path)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_states(torch.load(path, weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_stock_archs_still_registered():
    for name in ('MSRResNet', 'RRDBNet', 'SwinIR', 'VGGStyleDiscriminator'):
        assert name in ARCH_REGISTRY
