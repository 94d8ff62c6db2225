"""The shared body of the feature-based metrics (LPIPS, DISTS): local weight files only, one cached network each.

A missing file is a ``FileNotFoundError`` naming it and what belongs there; nothing is downloaded.
"""
import dataclasses
import functools
import importlib.util
import os

import numpy as np
import torch
import torchvision
from basicsr.metrics.metric_util import reorder_image
from basicsr.utils import img2tensor

from basicsr_ea.checkpoints import check_finite, read_checkpoint
from basicsr_ea.utils import resolve_device


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


@dataclasses.dataclass(frozen=True)
class FeatureMetric:
    """What a feature-based metric is made of: the ``features`` trunk of a torchvision classifier (``arch``) from a
    local file, calibration weights shipped inside a pip package, and the ``network(features, calibration)`` that
    compares two RGB batches. ``signed``: the network takes [-1, 1] instead of [0, 1]. The texts name the files in
    errors."""
    arch: str
    backbone: str
    package: str
    calibration_file: str
    calibration: str
    requirement: str
    network: type
    signed: bool = False


@functools.lru_cache(maxsize=4)
def feature_network(metric, backbone_path, calibration_path, device):
    """One network per metric, weight files and device, built on first use."""
    features = torchvision_features(metric.arch, backbone_path, metric.backbone)
    calibration = load_calibration(calibration_path, metric.package, metric.calibration_file, metric.calibration,
                                   metric.requirement)
    return metric.network(features, calibration).to(device)


def feature_metric(metric, img, img2, crop_border, input_order, backbone_path, calibration_path, device):
    """The body of every feature-based metric: ``metric``'s cached network compares two BasicSR metric inputs."""
    if img.shape != img2.shape:
        raise ValueError(f'Image shapes are different: {img.shape}, {img2.shape}.')
    device = resolve_device(device)
    calibration_path = calibration_path and os.path.abspath(calibration_path)
    net = feature_network(metric, os.path.abspath(backbone_path), calibration_path, device)
    x, y = (image_to_tensor(im, crop_border, input_order, device) for im in (img, img2))
    if metric.signed:
        x, y = x * 2 - 1, y * 2 - 1
    with torch.no_grad():
        return net(x, y).item()
