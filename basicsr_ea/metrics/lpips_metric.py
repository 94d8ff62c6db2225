"""LPIPS (Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", CVPR 2018,
https://arxiv.org/abs/1801.03924) as a BasicSR metric, built from local weight files only.

The AlexNet trunk comes from torchvision's ``alexnet-owt-7be5be79.pth`` at a path the options name; the linear
calibration layers from the ``lpips`` package's shipped ``weights/v0.1/alex.pth`` (or a path). Nothing is downloaded:
a missing file is a ``FileNotFoundError`` naming it. Also the shared helpers of the feature-based metrics (DISTS).
"""
import functools
import importlib.util
import os

import numpy as np
import torch
import torchvision
from basicsr.metrics.metric_util import reorder_image
from basicsr.utils import img2tensor
from basicsr.utils.registry import METRIC_REGISTRY
from torch import nn

from basicsr_ea.checkpoints import check_finite, read_checkpoint
from basicsr_ea.utils import resolve_device

ALEXNET_PATH = 'experiments/pretrained_models/alexnet-owt-7be5be79.pth'


def load_weights(path, what):
    """A local weight file on the CPU; the error names the file and what belongs there."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'no {what} at {path}')
    return check_finite(read_checkpoint(path), path)


def load_calibration(path, package, relative_path, what, requirement):
    """A metric's calibration weights from ``path``, or by default as shipped inside an installed package."""
    if path is None:
        spec = importlib.util.find_spec(package)
        if spec is None:
            raise FileNotFoundError(f'no {what}: pip install --no-deps {requirement}, or set calibration_path')
        path = os.path.join(os.path.dirname(spec.origin), relative_path)
    return load_weights(path, what)


def torchvision_features(arch, backbone_path, what):
    """The ``features`` trunk of a torchvision classifier with the ``features.*`` weights of a local file. Built on
    the meta device first: initialising the classifier head we drop (VGG16: 124 M parameters) costs seconds."""
    with torch.device('meta'):
        features = getattr(torchvision.models, arch)().features
    state = load_weights(backbone_path, what)
    state = {k[len('features.'):]: v for k, v in state.items() if k.startswith('features.')}
    features.load_state_dict(state, strict=True, assign=True)
    return features


def image_to_tensor(img, crop_border, input_order, device):
    """A BasicSR metric input (BGR in [0, 255], HWC or CHW) as RGB ``[1, 3, H, W]`` in [0, 1], border cropped."""
    img = reorder_image(img, input_order=input_order)
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border, ...]
    return img2tensor(img.astype(np.float32) / 255., bgr2rgb=True, float32=True)[None].to(device)


def feature_metric(build, img, img2, crop_border, input_order, backbone_path, calibration_path, device,
                   signed=False):
    """The body of every feature-based metric here: ``build(backbone, calibration, device)`` (cached) compares the
    two BasicSR metric inputs as RGB in [0, 1], or in [-1, 1] when ``signed``."""
    if img.shape != img2.shape:
        raise ValueError(f'Image shapes are different: {img.shape}, {img2.shape}.')
    device = resolve_device(device)
    calibration_path = calibration_path and os.path.abspath(calibration_path)
    net = build(os.path.abspath(backbone_path), calibration_path, device)
    x, y = (image_to_tensor(im, crop_border, input_order, device) for im in (img, img2))
    if signed:
        x, y = x * 2 - 1, y * 2 - 1
    with torch.no_grad():
        return net(x, y).item()


class LPIPSAlex(nn.Module):
    """LPIPS v0.1 on AlexNet: each of the five ReLU outputs is unit-normalised over channels, the squared difference
    weighted per channel by a 1x1 linear layer, averaged over space; the five layers' values are summed.

    Args:
        features: torchvision AlexNet ``features`` with ImageNet weights.
        lin_state: the ``lin{k}.model.1.weight`` tensors of the ``lpips`` package's ``alex.pth``.

    ``forward`` takes two RGB batches ``[N, 3, H, W]`` in [-1, 1] and returns ``[N]``.
    """

    taps = (1, 4, 7, 9, 11)  # relu1 .. relu5 in ``features``
    channels = (64, 192, 384, 256, 256)

    def __init__(self, features, lin_state):
        super().__init__()
        self.features = features[:self.taps[-1] + 1]
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in self.channels)
        for k, lin in enumerate(self.lins):
            lin.weight.data.copy_(lin_state[f'lin{k}.model.1.weight'])
        self.register_buffer('shift', torch.tensor([-.030, -.088, -.188]).view(1, 3, 1, 1))
        self.register_buffer('scale', torch.tensor([.458, .448, .450]).view(1, 3, 1, 1))
        self.requires_grad_(False).eval()

    def normalized_features(self, x):
        x = (x - self.shift) / self.scale
        feats = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                feats.append(x / (torch.sqrt(torch.sum(x**2, dim=1, keepdim=True)) + 1e-10))
        return feats

    def forward(self, x, y):
        pairs = zip(self.normalized_features(x), self.normalized_features(y))
        return sum(lin((fx - fy)**2).mean([2, 3]) for lin, (fx, fy) in zip(self.lins, pairs)).flatten()


@functools.lru_cache(maxsize=4)
def lpips_network(backbone_path, calibration_path, device):
    """One LPIPS network per weight files and device, built on first use."""
    features = torchvision_features('alexnet', backbone_path, 'AlexNet weights')
    lin_state = load_calibration(calibration_path, 'lpips', 'weights/v0.1/alex.pth', 'LPIPS v0.1 alex.pth',
                                 'lpips==0.1.4')
    return LPIPSAlex(features, lin_state).to(device)


@METRIC_REGISTRY.register()
def calculate_lpips(img, img2, crop_border, input_order='HWC', backbone_path=ALEXNET_PATH, calibration_path=None,
                    device=None, **kwargs):
    """LPIPS (AlexNet, v0.1, RGB in [-1, 1]; lower is better) of two images given as BasicSR's metrics take them:
    [0, 255], BGR.

    Args:
        backbone_path: torchvision's ImageNet AlexNet weights (only ``features.*`` is used).
        calibration_path: LPIPS's linear layers; default the ``lpips`` package's ``weights/v0.1/alex.pth``.
        device: default CUDA when available.
    """
    return feature_metric(lpips_network, img, img2, crop_border, input_order, backbone_path, calibration_path, device,
                          signed=True)
