"""A perceptual loss that needs no downloaded weights: the natural-scene statistics NIQE is built on (Mittal,
Soundararajan & Bovik, "Making a 'completely blind' image quality analyzer", IEEE SPL 2013), computed in torch and
compared with the ground truth's, for the demo and wherever VGG's ImageNet weights cannot be had.

NIQE normalises an image by its local mean and contrast (MSCN coefficients, 7x7 Gaussian, sigma 7/6, at two scales)
and scores the distribution of those coefficients and of their products with the four neighbours. ``NSSLoss``
compares, between SR and GT, three fixed feature maps per colour channel and scale: the local mean (what the MSCN
removes; it anchors colour and content), the MSCN coefficients themselves (structure independent of contrast) and the
local second moments of the negative and positive parts of the coefficients and of the neighbour products (the
spread parameters NIQE's asymmetric generalised Gaussian fits estimate; texture, not aligned pixel by pixel).
"""
import math

import torch
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

FEATURES = ('mean', 'mscn', 'spread')  # the names layer_weights may give
NEIGHBOUR_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))  # NIQE's horizontal, vertical and both diagonal products


def gaussian_window(size=7, sigma=7 / 6):
    """MATLAB's ``fspecial('gaussian', size, sigma)``: the window of NIQE's (and BRISQUE's) MSCN coefficients."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    kernel = torch.exp(-coords[:, None]**2 / (2 * sigma**2) - coords[None]**2 / (2 * sigma**2))
    return kernel / kernel.sum()


def mscn(img, window, eps=1e-8):
    """Mean-subtracted contrast-normalised coefficients of ``img`` ``[N,C,H,W]`` in [0, 255], channel by channel,
    with NIQE's replicate borders and constant 1; returns ``(coefficients, local mean)``. ``eps`` keeps the square
    root's gradient finite where the image is flat."""
    channels, pad = img.shape[1], window.shape[-1] // 2
    kernel = window.to(img).expand(channels, 1, *window.shape)

    def blur(x):
        return F.conv2d(F.pad(x, (pad, ) * 4, mode='replicate'), kernel, groups=channels)

    mu = blur(img)
    sigma = (blur(img * img) - mu * mu).abs().add(eps).sqrt()
    return (img - mu) / (sigma + 1), mu


def neighbour_products(coefficients):
    """The coefficients times their neighbour along each of NIQE's four directions (without its wrap-around)."""
    h, w = coefficients.shape[-2:]
    products = []
    for dy, dx in NEIGHBOUR_SHIFTS:
        core = coefficients[..., dy:, max(dx, 0):w + min(dx, 0)]
        shifted = coefficients[..., :h - dy, max(-dx, 0):w - max(dx, 0)]
        products.append(core * shifted)
    return products


def spread_moments(x, window):
    """Local means over ``window`` px blocks of the squared negative and positive parts of ``x``: the left and right
    spread of an asymmetric generalised Gaussian, as second moments."""
    return torch.cat([F.avg_pool2d(F.relu(-x)**2, window, ceil_mode=True),
                      F.avg_pool2d(F.relu(x)**2, window, ceil_mode=True)], dim=1)


def weighted_feature_l1(sr_features, gt_features, weights):
    """``sum_k weights[k] * mean |sr_k - gt_k|`` per sample ``[N]``, over the features ``weights`` names: BasicSR's
    perceptual loss with the L1 criterion, kept per sample for the EA's fitness."""
    return sum(weight * (sr_features[k] - gt_features[k]).abs().flatten(1).mean(1) for k, weight in weights.items())


@LOSS_REGISTRY.register()
class NSSLoss(nn.Module):
    """Natural-scene-statistics perceptual loss: weighted L1 distances between fixed, analytic feature maps of the
    output and of the ground truth. Nothing is learned or downloaded; the loss is zero exactly when the features
    agree, and its gradient is finite everywhere (flat images included).

    Args:
        layer_weights: weight of each feature, as BasicSR's ``PerceptualLoss`` weighs VGG layers: ``mean`` (local
            mean, [0, 1] units), ``mscn`` (the coefficients), ``spread`` (local moments of the coefficients and
            neighbour products, over ``block_size`` px).
        num_scales: scales, each half the size of the previous (NIQE uses 2).
        block_size: side of the blocks the spread moments are averaged over, at the first scale.
        loss_weight: weight of the whole loss.
    Input layout: ``[N, 3, H, W]`` RGB (any channel count works) in [0, 1].
    """

    def __init__(self, layer_weights: dict | None = None, num_scales: int = 2, block_size: int = 16,
                 loss_weight: float = 1.0):
        super().__init__()
        self.layer_weights = dict(layer_weights or {'mean': 1.0, 'mscn': 0.1, 'spread': 1.0})
        unknown = set(self.layer_weights) - set(FEATURES)
        if unknown:
            raise ValueError(f'NSSLoss layer_weights: unknown features {sorted(unknown)}; known: {", ".join(FEATURES)}')
        if num_scales < 1 or block_size < 1:
            raise ValueError(f'NSSLoss: num_scales and block_size must be positive, got {num_scales}, {block_size}')
        self.num_scales, self.block_size, self.loss_weight = num_scales, block_size, loss_weight
        self.feature_weights = {f'{name}_{scale}': weight for scale in range(num_scales)
                                for name, weight in self.layer_weights.items() if weight}
        self.register_buffer('window', gaussian_window().float(), persistent=False)

    def features(self, img):
        """``{name_scale: [N, ...]}``: the feature maps of an image batch in [0, 1]."""
        x, features = img * 255, {}
        for scale in range(self.num_scales):
            coefficients, mu = mscn(x, self.window)
            block = max(1, math.ceil(self.block_size / 2**scale))
            features[f'mean_{scale}'] = mu / 255
            features[f'mscn_{scale}'] = coefficients
            features[f'spread_{scale}'] = torch.cat(
                [spread_moments(c, block) for c in (coefficients, *neighbour_products(coefficients))], dim=1)
            if scale + 1 < self.num_scales:  # NIQE halves the image with MATLAB's antialiased bicubic imresize
                x = F.interpolate(x, scale_factor=0.5, mode='bicubic', antialias=True, align_corners=False)
        return features

    def forward(self, sr, gt):
        """``(loss, None)``: BasicSR's ``PerceptualLoss`` convention (perceptual, style)."""
        with torch.no_grad():
            gt_features = self.features(gt)
        loss = weighted_feature_l1(self.features(sr), gt_features, self.feature_weights) * self.loss_weight
        return loss.mean(), None
