"""Fitness of a generator in EA-Adam's evolutionary phase: objectives measured on a fixed set of patches.

Objectives are named in the options with their direction (``l1``, ``perceptual``, ``psnr``, ``ssim``, ``niqe``); none
needs a gradient. The ground-truth side of every objective (the GT itself, its VGG features, its Y channel) is
prepared once per EA phase and reused for every child, which is where the EA phase's time goes otherwise.
"""
import contextlib
import os

import torch
import torch.distributed as dist
from basicsr.data.data_util import paired_paths_from_folder, paired_paths_from_lmdb
from basicsr.metrics import calculate_niqe
from basicsr.metrics.psnr_ssim import calculate_psnr_pt, calculate_ssim_pt
from basicsr.utils import FileClient, img2tensor, tensor2img

from basicsr_ea.image_formats import read_color
from basicsr_ea.losses.nss_loss import NSSLoss, weighted_feature_l1
from basicsr_ea.models.nnpack_conv import NNPACKConvolutions, nnpack_usable
from basicsr_ea.options import OptionError, check_call


class L1Objective:
    """Mean absolute error against the GT: the paper's distortion objective."""
    minimize = True

    def prepare(self, gt):
        return gt

    def __call__(self, sr, gt):
        return (sr - gt).abs().mean(dim=(1, 2, 3))


class PerceptualObjective:
    """The model's perceptual loss per patch, with the GT's features computed once and reused: for every child in the
    EA phase, for every individual in the Adam phase. BasicSR's ``PerceptualLoss`` (VGG features, L1 criterion: the
    paper's perception objective) or ``NSSLoss`` (nothing to download); its mean over a batch of equal-sized patches
    equals the loss's own value on the batch."""
    minimize = True

    def __init__(self, perceptual_loss):
        if isinstance(perceptual_loss, NSSLoss):
            self.extract, self.weights = perceptual_loss.features, perceptual_loss.feature_weights
            self.loss_weight = perceptual_loss.loss_weight
            return
        if perceptual_loss.criterion_type != 'l1' or perceptual_loss.style_weight > 0:
            raise ValueError('EA-Adam supports the perceptual loss with criterion l1 and no style term (the paper\'s), '
                             f'got criterion {perceptual_loss.criterion_type!r}, style_weight '
                             f'{perceptual_loss.style_weight}')
        self.extract, self.weights = perceptual_loss.vgg, perceptual_loss.layer_weights
        self.loss_weight = perceptual_loss.perceptual_weight

    @torch.no_grad()
    def prepare(self, gt):
        return self.extract(gt)

    def __call__(self, sr, gt_features):
        return weighted_feature_l1(self.extract(sr), gt_features, self.weights) * self.loss_weight


class PSNRObjective:
    """PSNR (higher is better) with BasicSR's own tensor implementation."""
    minimize = False
    metric = staticmethod(calculate_psnr_pt)

    def __init__(self, crop_border=0, test_y_channel=True):
        self.crop_border, self.test_y_channel = crop_border, test_y_channel

    def prepare(self, gt):
        return gt

    def __call__(self, sr, gt):
        return self.metric(sr.clamp(0, 1), gt, self.crop_border, test_y_channel=self.test_y_channel)


class SSIMObjective(PSNRObjective):
    metric = staticmethod(calculate_ssim_pt)


class NIQEObjective:
    """No-reference NIQE (lower is better); BasicSR's implementation needs patches of at least 192x96."""
    minimize = True

    def __init__(self, crop_border=0):
        self.crop_border = crop_border

    def prepare(self, gt):
        h, w = gt.shape[-2:]
        if min(h, w) < 96 or max(h, w) < 192:
            raise ValueError(f'NIQE needs fitness patches of at least 192x96 px, got {h}x{w}: raise patch_size')
        return None

    def __call__(self, sr, _):
        return torch.tensor([calculate_niqe(tensor2img(img), self.crop_border) for img in sr], dtype=torch.float64)


OBJECTIVES = {'l1': L1Objective, 'perceptual': PerceptualObjective, 'psnr': PSNRObjective, 'ssim': SSIMObjective,
              'niqe': NIQEObjective}


def check_objective(opt, where):
    """``{type: name, **kwargs}`` naming a known objective with arguments it takes; returns (name, kwargs)."""
    kwargs = {k: v for k, v in opt.items() if k != 'type'}
    name = opt['type']
    if name not in OBJECTIVES:
        raise OptionError(f'{where}.type: unknown EA objective {name!r}; known: {", ".join(sorted(OBJECTIVES))}')
    if name == 'perceptual' and kwargs:
        raise OptionError(f'{where}.{sorted(kwargs)[0]}: the perceptual objective takes no option; its settings are '
                          'train.perceptual_opt')
    check_call(OBJECTIVES[name], kwargs, where)
    return name, kwargs


def check_objectives_run(objectives, patch_size):
    """Try every objective but the perceptual one (which needs VGG weights) on a fitness patch of ``patch_size``:
    one that cannot run on it (NIQE below 192x96 px) fails now, not at the first EA phase."""
    patch = torch.zeros(1, 3, patch_size, patch_size)
    for k, opt in enumerate(objectives):
        where = f'train.ea.objectives[{k}]'
        name, kwargs = check_objective(opt, where)
        if name != 'perceptual':
            try:
                OBJECTIVES[name](**kwargs).prepare(patch)
            except ValueError as err:
                raise OptionError(f'{where} ({name}) with train.ea.fitness.patch_size {patch_size}: {err}') from err


def build_objective(opt, perceptual, where):
    """An objective from ``{type: name, **kwargs}`` at the option path ``where``; ``perceptual`` is the model's own
    ``PerceptualObjective`` (None without ``train.perceptual_opt``)."""
    name, kwargs = check_objective(opt, where)
    if name != 'perceptual':
        return OBJECTIVES[name](**kwargs)
    if perceptual is None:
        raise OptionError(f'{where}: the perceptual EA objective needs train.perceptual_opt (and local VGG weights)')
    return perceptual


def check_fitness_folders(opt):
    for key in ('dataroot_gt', 'dataroot_lq'):
        if not os.path.exists(getattr(opt, key)):
            raise FileNotFoundError(f'train.ea.fitness.{key}: {getattr(opt, key)} does not exist')


def load_fitness_patches(opt, scale):
    """LQ/GT patch pairs ``([N,3,h,w], [N,3,H,W])`` in [0, 1] from a ``FitnessOptions``: a fixed set, the same on
    every run and every rank."""
    check_fitness_folders(opt)
    backend = dict(opt.io_backend)
    folders, keys = [opt.dataroot_lq, opt.dataroot_gt], ['lq', 'gt']
    if backend['type'] == 'lmdb':
        backend.update(db_paths=folders, client_keys=keys)
        pairs = paired_paths_from_lmdb(folders, keys)
    else:
        pairs = paired_paths_from_folder(folders, keys, opt.filename_tmpl)
    pairs = sorted(pairs, key=lambda pair: pair['gt_path'])[:opt.num_images]
    if not pairs:
        raise ValueError(f'EA fitness set {opt.dataroot_gt} holds no images')
    client = FileClient(backend.pop('type'), **backend)
    size, limit = opt.patch_size, opt.max_patches_per_image
    lq_patches, gt_patches = [], []
    for pair in pairs:
        try:
            gt, lq = read_color(client, pair['gt_path'], 'gt'), read_color(client, pair['lq_path'], 'lq')
        except (ValueError, KeyError) as err:
            raise ValueError(f'EA fitness pair {pair["gt_path"]} / {pair["lq_path"]}: {err}') from err
        if gt.shape[0] != lq.shape[0] * scale or gt.shape[1] != lq.shape[1] * scale:
            raise ValueError(f'EA fitness pair {pair["gt_path"]}: GT {gt.shape[:2]} is not x{scale} of '
                             f'LQ {lq.shape[:2]}')
        corners = [(top, left) for top in range(0, gt.shape[0] - size + 1, size)
                   for left in range(0, gt.shape[1] - size + 1, size)][:limit]
        for top, left in corners:
            gt_patches.append(gt[top:top + size, left:left + size])
            lq_patches.append(lq[top // scale:(top + size) // scale, left // scale:(left + size) // scale])
    if not gt_patches:
        raise ValueError(f'EA fitness set {opt.dataroot_gt}: no image is at least {size} px a side')
    return (torch.stack(img2tensor(lq_patches, bgr2rgb=True, float32=True)),
            torch.stack(img2tensor(gt_patches, bgr2rgb=True, float32=True)))


class FitnessEvaluator:
    """Evaluates a generator's weights on the fitness set: objectives to minimise, averaged over the patches.

    Under distributed training each rank evaluates its share of the patches and the sums are all-reduced, so every
    rank gets the same values and takes the same EA decisions, in less time.

    With ``channels_last`` the patches are held channels-last, so every conv of the generator and of the perceptual
    network runs in that layout (PyTorch follows the input's), with values equal to float rounding: on CPU the VGG
    1.13x and the paper's SRResNet 1.09x faster (``benchmarks/ea_phase.py``), the demo's narrow generator 1.8x. An arch
    that ``view``s its feature maps cannot take such input: turn it off there. With ``nnpack`` (on a CPU whose PyTorch
    build has it) the wide 3x3 convolutions run on NNPACK's kernels (``nnpack_conv.py``): one evaluation of the paper's
    SRResNet and VGG19 1.17-1.20x faster again, objectives equal to about 1e-7 relative.
    """

    def __init__(self, objectives, lq, gt, scratch_net, batch_size=16, channels_last=True, nnpack=True):
        self.objectives, self.net, self.batch_size = objectives, scratch_net, batch_size
        self.signs = torch.tensor([1.0 if o.minimize else -1.0 for o in objectives], dtype=torch.float64)
        self.num_patches = lq.shape[0]
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        self.device = device = next(scratch_net.parameters()).device
        layout = torch.channels_last if channels_last else torch.contiguous_format
        self.lq = lq[rank::world].to(device, memory_format=layout)
        self.nnpack = nnpack and device.type == 'cpu' and nnpack_usable()
        self.targets = []
        with torch.no_grad(), self._convolutions():
            for start in range(0, self.lq.shape[0], batch_size):
                gt_batch = gt[rank::world][start:start + batch_size].to(device, memory_format=layout)
                self.targets.append([objective.prepare(gt_batch) for objective in objectives])

    @torch.no_grad()
    def __call__(self, genome):
        """``genome``: tensors aligned with ``scratch_net.parameters()``. Returns ``[n_obj]`` float64, minimisation."""
        torch._foreach_copy_(list(self.net.parameters()), genome)
        self.net.eval()
        sums = torch.zeros(len(self.objectives), dtype=torch.float64, device=self.device)
        with self._convolutions():
            for start, targets in zip(range(0, self.lq.shape[0], self.batch_size), self.targets):
                sr = self._forward(self.lq[start:start + self.batch_size])
                for k, (objective, target) in enumerate(zip(self.objectives, targets)):
                    sums[k] += objective(sr, target).to(sums).sum()
        if dist.is_initialized():
            dist.all_reduce(sums)
        return self.signs * sums.cpu() / self.num_patches

    def _convolutions(self):
        return NNPACKConvolutions() if self.nnpack else contextlib.nullcontext()

    def _forward(self, lq):
        try:
            return self.net(lq)
        except RuntimeError as err:
            if not lq.is_contiguous() and 'view' in str(err):
                raise RuntimeError(f'{type(self.net).__name__} cannot take channels-last input in the EA phase '
                                   f'({err}); set train.ea.channels_last: false') from err
            raise
