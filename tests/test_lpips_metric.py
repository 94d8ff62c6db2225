"""LPIPS and DISTS built from local weight files: metric properties, and equality with the reference packages on
the same (randomly initialised) backbone, since no ImageNet weights can be had offline."""
import types

import cv2
import numpy as np
import pytest
import torch
from basicsr.metrics import calculate_metric
from builders import save_random_backbone

from basicsr_ea.metrics.dists_metric import DISTS, DISTSVGG, calculate_dists
from basicsr_ea.metrics.feature_networks import feature_network
from basicsr_ea.metrics.lpips_metric import LPIPS, LPIPSAlex, calculate_lpips


@pytest.fixture(scope='module')
def backbones(tmp_path_factory):
    """arch -> (path of the saved random trunk, the trunk itself)."""
    folder = tmp_path_factory.mktemp('weights')
    return {arch: (str(folder / f'{arch}.pth'), save_random_backbone(arch, str(folder / f'{arch}.pth')))
            for arch in ('alexnet', 'vgg16')}


def smooth_image(seed, size=48):
    """A BGR uint8 image with structure at several scales, as BasicSR's metrics take it."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (size // 8, size // 8, 3)).astype(np.float32)
    return np.clip(cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC), 0, 255).round().astype(np.uint8)


def noisy(img, sigma, seed=1):
    noise = np.random.default_rng(seed).normal(0, sigma, img.shape)
    return np.clip(img + noise, 0, 255).round().astype(np.uint8)


METRICS = [(calculate_lpips, 'alexnet'), (calculate_dists, 'vgg16')]


@pytest.mark.parametrize('metric, arch', METRICS)
def test_identity_symmetry_and_monotonic_in_noise(metric, arch, backbones):
    path = backbones[arch][0]
    img, other = smooth_image(0), smooth_image(1)
    assert abs(metric(img, img, crop_border=0, backbone_path=path)) < 1e-6
    assert metric(img, other, crop_border=0, backbone_path=path) == metric(other, img, crop_border=0,
                                                                            backbone_path=path)
    values = [metric(img, noisy(img, sigma), crop_border=0, backbone_path=path) for sigma in (4, 16, 48)]
    assert 0 < values[0] < values[1] < values[2]


@pytest.mark.parametrize('metric, arch', METRICS)
def test_registered_crop_border_and_chw(metric, arch, backbones):
    path = backbones[arch][0]
    img, other = smooth_image(2, 56), smooth_image(3, 56)
    cropped = metric(img[4:-4, 4:-4], other[4:-4, 4:-4], crop_border=0, backbone_path=path)
    assert metric(img, other, crop_border=4, backbone_path=path) == pytest.approx(cropped, abs=1e-7)
    registered = calculate_metric({'img': img, 'img2': other}, {'type': metric.__name__, 'crop_border': 4,
                                                                 'backbone_path': path})
    assert registered == pytest.approx(cropped, abs=1e-7)
    chw = metric(img.transpose(2, 0, 1), other.transpose(2, 0, 1), crop_border=4, input_order='CHW',
                 backbone_path=path)
    assert chw == pytest.approx(cropped, abs=1e-7)


@pytest.mark.parametrize('metric', [calculate_lpips, calculate_dists])
def test_missing_weights_name_the_file(metric, tmp_path):
    missing = str(tmp_path / 'nowhere' / 'backbone.pth')
    with pytest.raises(FileNotFoundError, match='nowhere/backbone.pth'):
        metric(smooth_image(0), smooth_image(0), crop_border=0, backbone_path=missing)


def test_missing_calibration_names_the_file(backbones, tmp_path):
    img, alexnet_path, vgg16_path = smooth_image(0), backbones['alexnet'][0], backbones['vgg16'][0]
    with pytest.raises(FileNotFoundError, match='no LPIPS v0.1 alex.pth at .*lin.pth'):
        calculate_lpips(img, img, 0, backbone_path=alexnet_path, calibration_path=str(tmp_path / 'lin.pth'))
    with pytest.raises(FileNotFoundError, match='no DISTS alpha/beta at .*ab.pt'):
        calculate_dists(img, img, 0, backbone_path=vgg16_path, calibration_path=str(tmp_path / 'ab.pt'))


def test_shape_mismatch_is_an_error(backbones):
    with pytest.raises(ValueError, match='shapes are different'):
        calculate_lpips(smooth_image(0, 48), smooth_image(0, 56), crop_border=0, backbone_path=backbones['alexnet'][0])


def trunk_factory(features):
    """Stands in for ``torchvision.models.alexnet``/``vgg16`` in the reference packages, which ask for ImageNet
    weights (a download) and use only ``.features``: they get our trunk."""
    return types.SimpleNamespace(alexnet=lambda pretrained: types.SimpleNamespace(features=features),
                                 vgg16=lambda pretrained: types.SimpleNamespace(features=features))


def test_lpips_equals_the_lpips_package(backbones, monkeypatch):
    pytest.importorskip('lpips')
    from lpips import lpips as lpips_module
    from lpips import pretrained_networks
    alexnet_path, features = backbones['alexnet']
    monkeypatch.setattr(pretrained_networks, 'tv', trunk_factory(features))
    reference = lpips_module.LPIPS(net='alex', pretrained=True, pnet_rand=False, verbose=False)
    ours = feature_network(LPIPS, alexnet_path, None, torch.device('cpu'))
    assert isinstance(ours, LPIPSAlex)
    x, y = torch.rand(2, 3, 48, 64) * 2 - 1, torch.rand(2, 3, 48, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(ours(x, y), reference(x, y).flatten(), rtol=1e-5, atol=1e-6)


def test_dists_equals_the_dists_package(backbones, monkeypatch):
    dists_pt = pytest.importorskip('DISTS_pytorch.DISTS_pt')
    vgg16_path, features = backbones['vgg16']
    ours = feature_network(DISTS, vgg16_path, None, torch.device('cpu'))
    assert isinstance(ours, DISTSVGG)
    monkeypatch.setattr(dists_pt, 'models', trunk_factory(features))
    reference = dists_pt.DISTS(load_weights=False)
    # The package looks for its weights.pt under sys.prefix, not beside itself: load its shipped alpha/beta here.
    shipped = dists_pt.__file__.replace('DISTS_pt.py', 'weights.pt')
    calibration = torch.load(shipped, map_location='cpu', weights_only=True)
    reference.alpha.data, reference.beta.data = calibration['alpha'], calibration['beta']
    x, y = torch.rand(2, 3, 48, 48), torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, y), reference(x, y), rtol=1e-5, atol=1e-6)
