"""DISTS (Ding et al., "Image Quality Assessment: Unifying Structure and Texture Similarity", TPAMI 2020,
https://arxiv.org/abs/2004.07728) as a BasicSR metric, built from local weight files only.

The VGG16 trunk comes from torchvision's ``vgg16-397923af.pth`` at a path the options name; the learned alpha/beta
from the ``dists-pytorch`` package's shipped ``weights.pt`` (or a path). That package's own ``DISTS`` downloads VGG16
and looks for ``weights.pt`` under ``sys.prefix``, so it is not called here; a missing file is a
``FileNotFoundError`` naming it.
"""
import numpy as np
import torch
from basicsr.utils.registry import METRIC_REGISTRY
from torch import nn
from torch.nn import functional as F

from basicsr_ea.metrics.feature_networks import FeatureMetric, feature_metric

VGG16_PATH = 'experiments/pretrained_models/vgg16-397923af.pth'


class L2Pooling(nn.Module):
    """DISTS's anti-aliased replacement of VGG's max pooling: sqrt of a Hanning-weighted, stride-2 blur of x^2."""

    def __init__(self, channels):
        super().__init__()
        window = torch.from_numpy(np.hanning(5)[1:-1]).float()
        kernel = window[:, None] * window[None, :]
        self.register_buffer('kernel', (kernel / kernel.sum()).expand(channels, 1, 3, 3).contiguous())

    def forward(self, x):
        out = F.conv2d(x**2, self.kernel, stride=2, padding=1, groups=x.shape[1])
        return (out + 1e-12).sqrt()


class DISTSVGG(nn.Module):
    """DISTS on VGG16: per stage (the image itself, then relu1_2 .. relu5_3) a texture term comparing channel means
    and a structure term comparing channel (co)variances, weighted by the learned alpha/beta; 1 - similarity.

    Args:
        features: torchvision VGG16 ``features`` with ImageNet weights; its max poolings become ``L2Pooling``.
        calibration: ``{'alpha', 'beta'}`` of shape ``[1, 1475, 1, 1]`` (dists-pytorch's ``weights.pt``).

    ``forward`` takes two RGB batches ``[N, 3, H, W]`` in [0, 1] and returns ``[N]``.
    """

    channels = (3, 64, 128, 256, 512, 512)
    stage_ends = (4, 9, 16, 23, 30)  # VGG16 layer indices; a max pooling opens each stage after the first

    def __init__(self, features, calibration):
        super().__init__()
        layers = list(features[:self.stage_ends[-1]])
        for index, channels in zip(self.stage_ends[:-1], self.channels[1:]):
            layers[index] = L2Pooling(channels)
        starts = (0, ) + self.stage_ends[:-1]
        self.stages = nn.ModuleList(nn.Sequential(*layers[a:b]) for a, b in zip(starts, self.stage_ends))
        self.register_buffer('mean', torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer('std', torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.register_buffer('alpha', calibration['alpha'].float().clone())
        self.register_buffer('beta', calibration['beta'].float().clone())
        self.requires_grad_(False).eval()

    def stage_features(self, x):
        feats, h = [x], (x - self.mean) / self.std
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats

    def forward(self, x, y, c1=1e-6, c2=1e-6):
        total = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha / total, self.channels, dim=1)
        betas = torch.split(self.beta / total, self.channels, dim=1)
        similarity = 0
        for fx, fy, alpha, beta in zip(self.stage_features(x), self.stage_features(y), alphas, betas):
            mx, my = fx.mean([2, 3], keepdim=True), fy.mean([2, 3], keepdim=True)
            vx, vy = ((fx - mx)**2).mean([2, 3], keepdim=True), ((fy - my)**2).mean([2, 3], keepdim=True)
            cov = (fx * fy).mean([2, 3], keepdim=True) - mx * my
            texture = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
            structure = (2 * cov + c2) / (vx + vy + c2)
            similarity = similarity + (alpha * texture + beta * structure).sum(1)
        return 1 - similarity.flatten()


DISTS = FeatureMetric(arch='vgg16', backbone='VGG16 weights', package='DISTS_pytorch', calibration_file='weights.pt',
                      calibration='DISTS alpha/beta', requirement='dists-pytorch==0.1', network=DISTSVGG)


@METRIC_REGISTRY.register()
def calculate_dists(img, img2, crop_border, input_order='HWC', backbone_path=VGG16_PATH, calibration_path=None,
                    device=None, **kwargs):
    """DISTS (lower is better) of two images given as BasicSR's metrics take them: [0, 255], BGR.

    Args:
        backbone_path: torchvision's ImageNet VGG16 weights (only ``features.*`` is used).
        calibration_path: alpha/beta; default the ``dists-pytorch`` package's ``weights.pt``.
        device: default CUDA when available.
    """
    return feature_metric(DISTS, img, img2, crop_border, input_order, backbone_path, calibration_path, device)
