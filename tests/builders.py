"""What several test files build: tiny options for each model, small networks and checkpoints, image pairs. Each
builder seeds what it makes, so a test gets the same objects alone and in any order."""
import copy
import os

import cv2
import numpy as np
import torch
import torchvision
from basicsr.archs import build_network
from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.utils import set_random_seed
from helpers import DEMO_OPTIONS, REPO_ROOT, load_options, point_at_demo_data
from torch import nn

from basicsr_ea.archs.mixing_layers import MixedParameter, MixingLayer


EA_DEMO_OPTIONS = os.path.join(REPO_ROOT, 'options', 'train_EAAdam_demo.yml')


def tiny_ea_options(name, data_root, total_iter=8, population_size=3):
    """The demo config shrunk: 3 individuals from scratch, batch 2, a 2-generation EA phase every 4 iterations on
    four 64 px fitness patches, L1 and PSNR as objectives (NIQE is slow and needs 192 px patches)."""
    opt = point_at_demo_data(load_options(EA_DEMO_OPTIONS), data_root)
    opt['name'] = name
    opt['path']['pretrain_network_g'] = None
    opt['datasets']['train']['batch_size_per_gpu'] = 2
    opt['network_d']['num_feat'] = 8
    train = opt['train']
    train.update(population_size=population_size, total_iter=total_iter)
    train['optim_g']['lr'] = 1e-3
    train['ea'].update(interval=4, generations=2, objectives=[{'type': 'l1'}, {'type': 'psnr', 'crop_border': 4}])
    train['ea']['fitness'].update(dataroot_gt=os.path.join(data_root, 'train', 'HR'),
                                  dataroot_lq=os.path.join(data_root, 'train', 'LR_bicubic_x4'), num_images=2,
                                  patch_size=64, max_patches_per_image=2)
    opt['val'] = {'val_freq': total_iter, 'save_img': False,
                  'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 4, 'test_y_channel': True}}}
    opt['logger'].update(print_freq=1, save_checkpoint_freq=total_iter // 2, use_tb_logger=False)
    return opt


def in_process(opt, root):
    """The options as BasicSR's parse_options leaves them, for building the model in this process (its folders
    made under ``root``); the random generators seeded from ``manual_seed`` as BasicSR's train pipeline does, so
    the model built next has the same weights whatever ran before."""
    opt = copy.deepcopy(opt)
    set_random_seed(opt.get('manual_seed', 0))
    opt.update(is_train=True, dist=False, rank=0, world_size=1, num_gpu=0, auto_resume=False)
    opt['path'].update(experiments_root=str(root), models=str(root / 'models'),
                       training_states=str(root / 'training_states'))
    for folder in ('models', 'training_states'):
        os.makedirs(root / folder, exist_ok=True)
    return opt


def snapshot(model):
    return [[p.detach().clone() for p in net.parameters()] for net in model.net_g]


BACKBONES = {
    'MSRResNet': dict(type='MSRResNet', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, upscale=4),
    'RRDBNet': dict(type='RRDBNet', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, num_grow_ch=4, scale=4),
    # ape: absolute_pos_embed; depth 2: a shifted block with its attn_mask buffer
    'SwinIR': dict(type='SwinIR', upscale=2, in_chans=3, img_size=16, window_size=4, img_range=1., depths=[2],
                   embed_dim=8, num_heads=[2], mlp_ratio=2, upsampler='pixelshuffledirect', ape=True,
                   drop_path_rate=0.),
}


ROUTER = dict(router_channels=[4, 4, 8], router_hidden=4)


def save_experts(folder, backbone, seeds=(0, 1, 2), iteration='latest'):
    """Experts in the EA-Adam layout (``net_g_{i}_{iteration}.pth``): the backbone initialised with seed i, every
    parameter then moved by N(0, 0.02^2) noise so that none (LayerNorm's constant init included) is equal across
    experts, as after training."""
    os.makedirs(folder, exist_ok=True)
    for i, seed in enumerate(seeds):
        torch.manual_seed(seed)
        net = build_network(backbone)
        with torch.no_grad():
            for param in net.parameters():
                param.add_(0.02 * torch.randn_like(param))
        torch.save({'params': net.state_dict()}, os.path.join(folder, f'net_g_{i}_{iteration}.pth'))
    return str(folder)


def fusion(folder, backbone, **kwargs):
    return build_network(dict(type='PopulationFusion', backbone=backbone, experts=folder, **ROUTER, **kwargs)).eval()


def randomize_routers(net, seed=0):
    """Routers start at uniform weights; give them random last layers so images and layers get different weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, MixingLayer):
                module.router.head[-1].weight.copy_(3 * torch.randn(module.router.head[-1].weight.shape, generator=g))
            elif isinstance(module, MixedParameter):
                module.logits.copy_(torch.randn(module.logits.shape, generator=g))
    return net


FUSION_DEMO = os.path.join(REPO_ROOT, 'options', 'train_Fusion_demo.yml')


BACKBONE = BACKBONES['MSRResNet']


DISCRIMINATOR = dict(type='VGGStyleDiscriminator', num_in_ch=3, num_feat=8, input_size=128)


def tiny_fusion_options(name, models, d_path):
    """The demo options on the miniature run: narrow routers and discriminator, its population as the experts."""
    opt = load_options(FUSION_DEMO)
    opt['name'] = name
    opt['network_g'].update(backbone=BACKBONE, experts=models, experts_from='population', **ROUTER)
    opt['network_d'] = dict(DISCRIMINATOR)
    opt['path']['pretrain_network_d'] = d_path
    return opt


def model_options(network_g, val_names=('derain', 'denoise_25'), **metrics):
    datasets = {'train': {'name': 'train'}}
    datasets.update({f'val_{i}': {'name': name} for i, name in enumerate(val_names)})
    return {
        'name': 'allinone', 'model_type': 'AllInOneModel', 'scale': 1, 'num_gpu': 0, 'dist': False, 'rank': 0,
        'world_size': 1, 'is_train': True, 'datasets': datasets, 'network_g': network_g,
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'total_iter': 10, 'warmup_iter': -1,
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'val': {'val_freq': 1, 'save_img': False,
                'metrics': metrics or {'psnr': {'type': 'calculate_psnr'}, 'ssim': {'type': 'calculate_ssim'}}},
    }


NARROW = dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 4, 8], num_experts=4, top_k=2,
              stp_levels=[1, 2, 3], stp_aux_levels=[], prompt_dim=16, num_prompts=4)


def save_random_backbone(arch, path, seed=0):
    """A torchvision ``features`` trunk with random weights, saved as ``features.*`` like torchvision's files;
    built on the meta device so the classifier head (most of the parameters) is never initialised."""
    torch.manual_seed(seed)
    with torch.device('meta'):
        features = getattr(torchvision.models, arch)().features
    features = features.to_empty(device='cpu')
    for layer in features:
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode='fan_out', nonlinearity='relu')
            nn.init.zeros_(layer.bias)
    torch.save({f'features.{k}': v for k, v in features.state_dict().items()}, path)
    return features


def tiny_demo_options(name, data_root, backend='disk', total_iter=60):
    opt = point_at_demo_data(load_options(DEMO_OPTIONS), data_root, backend)
    opt['name'] = name
    opt['datasets']['train'].update(batch_size_per_gpu=4, gt_size=32, dataset_enlarge_ratio=10)
    opt['train']['total_iter'] = total_iter
    # RRDBNet has no interpolation shortcut: it starts far from the target, so learning shows in a few iterations.
    opt['network_g'] = {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 16, 'num_block': 1,
                        'num_grow_ch': 8, 'scale': 4}
    opt['train']['scheduler'] = {'type': 'MultiStepLR', 'milestones': [10_000], 'gamma': 0.5}
    opt['val']['val_freq'] = total_iter
    opt['logger'].update(print_freq=1, save_checkpoint_freq=total_iter // 2, use_tb_logger=False)
    return opt


def write_pairs(root, names=('a', 'b'), gt_size=32, lq_size=8):
    """Random GT/LQ PNG pairs under ``root/{gt,lq}``; returns the two folders."""
    rng = np.random.default_rng(0)
    folders = []
    for sub, size in (('gt', gt_size), ('lq', lq_size)):
        folder = os.path.join(root, sub)
        os.makedirs(folder)
        for name in names:
            cv2.imwrite(os.path.join(folder, f'{name}.png'), rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        folders.append(folder)
    return folders


def paired_dataset(gt, lq, backend='disk'):
    return PairedImageDataset({'name': 'bad', 'dataroot_gt': gt, 'dataroot_lq': lq, 'io_backend': {'type': backend},
                               'scale': 4, 'phase': 'train', 'gt_size': 16, 'use_hflip': False, 'use_rot': False})
