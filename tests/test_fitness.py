"""EA fitness objectives: equal to BasicSR's losses and metrics, GT side prepared once, clear errors."""
import pytest
import torch
from basicsr.archs import vgg_arch
from basicsr.losses import build_loss
from basicsr.metrics.psnr_ssim import calculate_psnr_pt

from basicsr_ea.models.fitness import L1Objective, PerceptualObjective, PSNRObjective, build_objective
from basicsr_ea.models.nnpack_conv import nnpack_usable

LAYERS = {'conv1_2': 0.1, 'conv2_2': 0.1, 'conv3_4': 1, 'conv4_4': 1, 'conv5_4': 1}


@pytest.fixture
def perceptual_loss(random_vgg19, monkeypatch):
    monkeypatch.setattr(vgg_arch, 'VGG_PRETRAIN_PATH', random_vgg19)
    return build_loss({'type': 'PerceptualLoss', 'layer_weights': LAYERS, 'vgg_type': 'vgg19', 'use_input_norm': True,
                       'range_norm': False, 'perceptual_weight': 1.0, 'style_weight': 0, 'criterion': 'l1'})


def test_perceptual_with_shared_gt_features_equals_basicsr_loss(perceptual_loss):
    g = torch.Generator().manual_seed(0)
    sr, gt = torch.rand(3, 3, 48, 48, generator=g), torch.rand(3, 3, 48, 48, generator=g)
    objective = PerceptualObjective(perceptual_loss)
    per_patch = objective(sr, objective.prepare(gt))
    assert per_patch.shape == (3,)
    torch.testing.assert_close(per_patch.mean(), perceptual_loss(sr, gt)[0], rtol=1e-5, atol=1e-7)
    for k in range(3):
        torch.testing.assert_close(per_patch[k], perceptual_loss(sr[k:k + 1], gt[k:k + 1])[0], rtol=1e-5, atol=1e-7)


def test_perceptual_objective_refuses_what_it_does_not_compute(perceptual_loss):
    perceptual_loss.criterion_type = 'fro'
    with pytest.raises(ValueError, match="criterion 'fro'"):
        PerceptualObjective(perceptual_loss)


def test_l1_and_psnr_objectives_match_their_definitions():
    sr, gt = torch.full((2, 3, 8, 8), 0.5), torch.full((2, 3, 8, 8), 0.25)
    assert L1Objective()(sr, gt).tolist() == [0.25, 0.25]
    psnr = PSNRObjective(crop_border=0)
    torch.testing.assert_close(psnr(sr, psnr.prepare(gt)), calculate_psnr_pt(sr, gt, 0, test_y_channel=True))
    assert not psnr.minimize


def test_build_objective_errors():
    with pytest.raises(ValueError, match=r'objectives\[0\]: the perceptual EA objective needs train.perceptual_opt'):
        build_objective({'type': 'perceptual'}, None, 'train.ea.objectives[0]')
    with pytest.raises(ValueError, match=r"objectives\[1\].type: unknown EA objective 'lpipz'"):
        build_objective({'type': 'lpipz'}, None, 'train.ea.objectives[1]')
    with pytest.raises(ValueError, match=r'objectives\[1\].crop_bordr: unknown option of PSNRObjective'):
        build_objective({'type': 'psnr', 'crop_bordr': 4}, None, 'train.ea.objectives[1]')


def test_corrupt_fitness_image_names_the_pair(tmp_path):
    from basicsr_ea.models.fitness import load_fitness_patches
    from basicsr_ea.models.train_options import FitnessOptions
    for folder in ('gt', 'lq'):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / 'a.png').write_bytes(b'not a png')
    with pytest.raises(ValueError, match=r'EA fitness pair .*a\.png.*not an image'):
        load_fitness_patches(FitnessOptions(str(tmp_path / 'gt'), str(tmp_path / 'lq')), scale=4)


class ViewingNet(torch.nn.Module):
    """A generator that ``view``s its feature map, as some archs do: it cannot take channels-last input."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return y.view(y.shape[0], -1).view_as(y)


def every_objective(perceptual_loss):
    from basicsr_ea.losses.nss_loss import NSSLoss
    objectives = [L1Objective(), PerceptualObjective(perceptual_loss), PerceptualObjective(NSSLoss())]
    return objectives + [build_objective({'type': name}, None, 'x') for name in ('psnr', 'ssim', 'niqe')]


def patches(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, 3, 48, 48, generator=g), torch.rand(3, 3, 192, 192, generator=g)


def test_channels_last_evaluation_equals_nchw_for_every_objective(perceptual_loss):
    from basicsr.archs.srresnet_arch import MSRResNet

    from basicsr_ea.models.fitness import FitnessEvaluator
    torch.manual_seed(0)
    net = MSRResNet(num_feat=16, num_block=2, upscale=4)
    lq, gt = patches()
    objectives = every_objective(perceptual_loss)
    genome = [p.detach().clone() for p in net.parameters()]
    nchw = FitnessEvaluator(objectives, lq, gt, net, 2, channels_last=False, nnpack=False)(genome)
    channels_last = FitnessEvaluator(objectives, lq, gt, net, 2, channels_last=True, nnpack=False)
    assert channels_last.lq.is_contiguous(memory_format=torch.channels_last)
    values = channels_last(genome)
    assert values.shape == (6,) and values.isfinite().all()
    torch.testing.assert_close(values, nchw, rtol=1e-6, atol=0)


@pytest.mark.skipif(not nnpack_usable(), reason='this PyTorch build has no NNPACK for this CPU')
def test_nnpack_evaluation_equals_direct_convolutions_for_every_objective(perceptual_loss, monkeypatch):
    """A generator as wide as the paper's (64 channels), so that its body and the VGG both run on NNPACK."""
    from basicsr.archs.srresnet_arch import MSRResNet

    from basicsr_ea.models.fitness import FitnessEvaluator
    calls = []
    original = torch._nnpack_spatial_convolution
    monkeypatch.setattr(torch, '_nnpack_spatial_convolution', lambda *args: calls.append(1) or original(*args))
    torch.manual_seed(0)
    net = MSRResNet(num_feat=64, num_block=1, upscale=4)
    lq, gt = patches()
    objectives = every_objective(perceptual_loss)
    genome = [p.detach().clone() for p in net.parameters()]
    direct = FitnessEvaluator(objectives, lq, gt, net, 2, nnpack=False)(genome)
    assert calls == []
    values = FitnessEvaluator(objectives, lq, gt, net, 2, nnpack=True)(genome)
    assert len(calls) > 0 and values.isfinite().all()
    torch.testing.assert_close(values, direct, rtol=1e-5, atol=0)


def test_channels_last_evaluation_of_a_viewing_arch_names_the_option():
    from basicsr_ea.models.fitness import FitnessEvaluator
    torch.manual_seed(0)
    net = ViewingNet()
    lq = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    genome = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(RuntimeError, match='ViewingNet cannot take channels-last input.*train.ea.channels_last: false'):
        FitnessEvaluator([L1Objective()], lq, lq, net, 2)(genome)
    expected = (net(lq) - lq).abs().mean().double()
    torch.testing.assert_close(FitnessEvaluator([L1Objective()], lq, lq, net, 2, channels_last=False)(genome)[0],
                               expected)
