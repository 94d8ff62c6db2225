"""LPIPS (Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", CVPR 2018,
https://arxiv.org/abs/1801.03924) as a BasicSR metric, built from local weight files only.

The AlexNet trunk comes from torchvision's ``alexnet-owt-7be5be79.pth`` at a path the options name; the linear
calibration layers from the ``lpips`` package's shipped ``weights/v0.1/alex.pth`` (or a path). Nothing is downloaded:
a missing file is a ``FileNotFoundError`` naming it.
"""
import torch
from basicsr.utils.registry import METRIC_REGISTRY
from torch import nn

from basicsr_ea.metrics.feature_networks import FeatureMetric, feature_metric

ALEXNET_PATH = 'experiments/pretrained_models/alexnet-owt-7be5be79.pth'


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


LPIPS = FeatureMetric(arch='alexnet', backbone='AlexNet weights', package='lpips',
                      calibration_file='weights/v0.1/alex.pth', calibration='LPIPS v0.1 alex.pth',
                      requirement='lpips==0.1.4', network=LPIPSAlex, signed=True)


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
    return feature_metric(LPIPS, img, img2, crop_border, input_order, backbone_path, calibration_path, device)
