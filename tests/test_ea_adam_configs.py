"""The paper's EA-Adam configs (RRDB and SRResNet, x4): they parse, state the paper's settings, and build and train
at full population scale once their data and pretrained paths point at tiny temporary files."""
import os
import sys

import pytest
import torch
from basicsr.archs import build_network, vgg_arch
from basicsr.models import build_model
from basicsr.utils.options import parse_options
from builders import in_process
from helpers import REPO_ROOT, load_options, point_at_demo_data

RRDB, SRRESNET = 'train_EAAdam_x4.yml', 'train_EAAdam_SRResNet_x4.yml'
# What differs between the two configs; parameter counts are those of ESRGAN's RRDB (16.7M) and SRResNet (1.5M).
BACKBONES = {
    RRDB: {'network_g': {'type': 'RRDBNet', 'num_feat': 64, 'num_block': 23, 'num_grow_ch': 32}, 'lr': 1e-4,
           'relativistic_gan': True, 'num_params': 16_697_987},
    SRRESNET: {'network_g': {'type': 'MSRResNet', 'num_feat': 64, 'num_block': 16}, 'lr': 1e-5,
               'relativistic_gan': False, 'num_params': 1_517_571},
}
VGG_LAYERS = {'conv1_2': 0.1, 'conv2_2': 0.1, 'conv3_4': 1, 'conv4_4': 1, 'conv5_4': 1}


@pytest.fixture(autouse=True)
def restore_vgg_path(monkeypatch):
    """Building a model points BasicSR's global VGG path at the options' file; put it back afterwards."""
    monkeypatch.setattr(vgg_arch, 'VGG_PRETRAIN_PATH', vgg_arch.VGG_PRETRAIN_PATH)


def config_path(config):
    return os.path.join(REPO_ROOT, 'options', config)


def paper_options(config, data_root, tmp_path, pretrain_network_vgg, pretrain_network_g=None):
    """The config with its training LMDBs (and so the fitness set) and pretrained files replaced, for this process."""
    opt = point_at_demo_data(load_options(config_path(config)), data_root, backend='lmdb')
    train_set = opt['datasets']['train']
    opt['train']['ea']['fitness'].update({k: train_set[k] for k in ('dataroot_gt', 'dataroot_lq', 'io_backend')})
    opt['path'].update(pretrain_network_vgg=pretrain_network_vgg, pretrain_network_g=pretrain_network_g)
    return in_process(opt, tmp_path)


@pytest.fixture
def built(request, demo_data, tmp_path, random_vgg19):
    """(config, model, checkpoint): the paper's population of ``request.param``, started from one random checkpoint."""
    config = request.param
    checkpoint = build_network(load_options(config_path(config))['network_g']).state_dict()
    torch.save({'params': checkpoint}, tmp_path / 'pretrain_g.pth')
    opt = paper_options(config, demo_data, tmp_path, random_vgg19, str(tmp_path / 'pretrain_g.pth'))
    return config, build_model(opt), checkpoint


@pytest.mark.parametrize('config', [RRDB, SRRESNET])
def test_config_parses_with_the_papers_settings(config, monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', config_path(config)])
    opt, _ = parse_options(REPO_ROOT, is_train=True)
    backbone, train = BACKBONES[config], opt['train']
    assert opt['model_type'] == 'EAAdamModel' and opt['scale'] == 4
    assert backbone['network_g'].items() <= opt['network_g'].items()
    assert opt['network_d'] == {'type': 'VGGStyleDiscriminator', 'num_in_ch': 3, 'num_feat': 64, 'input_size': 128}
    assert (opt['datasets']['train']['batch_size_per_gpu'], opt['datasets']['train']['gt_size']) == (16, 128)
    assert os.path.basename(opt['path']['pretrain_network_vgg']) == 'vgg19-dcbb9e9d.pth'
    assert train['population_size'] == 5 and train['optim_g']['frozen'] == [0]
    assert (train['optim_g']['type'], train['optim_g']['lr'], train['optim_g']['betas']) == ('EAAdam', backbone['lr'],
                                                                                            [0.9, 0.999])
    assert train['perceptual_opt']['layer_weights'] == VGG_LAYERS and train['perceptual_opt']['criterion'] == 'l1'
    assert train['gan_opt']['loss_weight'] == 0.005 and train['relativistic_gan'] is backbone['relativistic_gan']
    ea = train['ea']
    assert (ea['interval'], ea['generations'], ea['objectives']) == (13000, 200, [{'type': 'l1'},
                                                                                  {'type': 'perceptual'}])
    fitness = ea['fitness']
    assert (fitness['num_images'], fitness['patch_size'], fitness['max_patches_per_image']) == (16, 128, 50)
    assert fitness['dataroot_gt'] == opt['datasets']['train']['dataroot_gt']  # the first training images


@pytest.mark.parametrize('built', [RRDB, SRRESNET], indirect=True)
def test_config_builds_the_full_population_from_one_checkpoint(built):
    config, model, checkpoint = built
    assert len(model.net_g) == len(model.net_d) == 5 and model.optimizer_g.frozen == (0,)
    assert sum(p.numel() for p in model.net_g[0].parameters()) == BACKBONES[config]['num_params']
    for net in model.net_g:
        assert all(torch.equal(value, checkpoint[key]) for key, value in net.state_dict().items())
    assert list(model.cri_perceptual.layer_weights) == list(VGG_LAYERS)
    assert model.fitness_gt.shape[1:] == (3, 128, 128) and model.fitness_lq.shape[1:] == (3, 32, 32)


@pytest.mark.parametrize('built', [pytest.param(RRDB, marks=pytest.mark.slow), SRRESNET], indirect=True)
def test_config_trains_one_step(built):
    """One Adam step on a 1-image batch moves every individual but the frozen anchor, with finite losses."""
    _, model, _ = built
    before = [[p.detach().clone() for p in net.parameters()] for net in model.net_g]
    g = torch.Generator().manual_seed(0)
    model.feed_data({'lq': torch.rand(1, 3, 32, 32, generator=g), 'gt': torch.rand(1, 3, 128, 128, generator=g)})
    model.optimize_parameters(current_iter=1)
    for i, (net, old) in enumerate(zip(model.net_g, before)):
        moved = any(not torch.equal(p, q) for p, q in zip(net.parameters(), old))
        assert moved is (i != 0), i
    logged = {f'{name}_{i}' for name in ('l_pix', 'l_percep', 'l_g_gan', 'l_d_real', 'l_d_fake') for i in range(1, 5)}
    assert logged <= set(model.log_dict) and 'l_pix_0' not in model.log_dict
    assert all(torch.isfinite(torch.tensor(model.log_dict[k])) for k in logged)


def test_missing_vgg_weights_name_the_expected_file(demo_data, tmp_path):
    """Both configs name the same file (checked above); SRResNet's population is the quicker to build."""
    missing = str(tmp_path / os.path.basename(load_options(config_path(SRRESNET))['path']['pretrain_network_vgg']))
    with pytest.raises(FileNotFoundError, match='vgg19-dcbb9e9d.pth'):
        build_model(paper_options(SRRESNET, demo_data, tmp_path, missing))
