"""PopulationFusion: experts found and checked, exact reproduction of each expert, per-image mixing, calibration and
collapse, and clear errors for what cannot be mixed."""
import copy
import os

import pytest
import torch
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY
from builders import BACKBONES, fusion, randomize_routers, save_experts
from torch import nn

from basicsr_ea.archs.fusion_arch import expert_paths


@ARCH_REGISTRY.register()
class FusionTestNet(nn.Module):
    """A conv followed by an optional BatchNorm2d and a raw ``scale`` parameter."""

    def __init__(self, batchnorm=False):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, 1, 1)
        self.norm = nn.BatchNorm2d(3) if batchnorm else nn.Identity()
        self.scale = nn.Parameter(torch.ones(1, 3, 1, 1))

    def forward(self, x):
        return self.norm(self.conv(x)) * self.scale


def expert_net(folder, backbone, i):
    net = build_network(backbone)
    net.load_state_dict(torch.load(os.path.join(folder, f'net_g_{i}_latest.pth'), weights_only=True)['params'])
    return net.eval()


def lq(batch=2, seed=0, size=16):
    """Random images of different brightness, so that the routers tell them apart."""
    brightness = torch.linspace(1, 0.3, batch).view(batch, 1, 1, 1)
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * brightness


def test_expert_paths_follow_individual_index_numerically(tmp_path):
    models = tmp_path / 'EAAdam_x' / 'models'
    models.mkdir(parents=True)
    for i in range(11):
        for it in ('60', 'latest'):
            (models / f'net_g_{i}_{it}.pth').touch()
        (models / f'net_d_{i}_latest.pth').touch()
    (models / 'net_g_latest.pth').touch()
    expected = [str(models / f'net_g_{i}_latest.pth') for i in range(11)]
    assert expert_paths(str(models)) == expected
    assert expert_paths(str(tmp_path / 'EAAdam_x')) == expected  # the experiment folder works too
    assert expert_paths(str(models), expert_iter=60) == [str(models / f'net_g_{i}_60.pth') for i in range(11)]
    explicit = [expected[3], expected[1]]
    assert expert_paths(explicit) == explicit
    for k in range(3):
        (models / f'net_g_archive_{k}_latest.pth').touch()
    assert expert_paths(str(models)) == expected  # archive members are not individuals
    assert expert_paths(str(models), experts_from='archive') == [str(models / f'net_g_archive_{k}_latest.pth')
                                                                 for k in range(3)]
    with pytest.raises(ValueError, match="experts_from: must be 'population' or 'archive'"):
        expert_paths(str(models), experts_from='front')


def test_expert_paths_errors(tmp_path):
    for i in (0, 2):
        (tmp_path / f'net_g_{i}_latest.pth').touch()
    with pytest.raises(FileNotFoundError, match=r'individuals \[1\] are missing'):
        expert_paths(str(tmp_path))
    with pytest.raises(FileNotFoundError, match='holds no net_g_{i}_500.pth'):
        expert_paths(str(tmp_path), expert_iter=500)
    with pytest.raises(FileNotFoundError, match='nothing.pth'):
        expert_paths([str(tmp_path / 'net_g_0_latest.pth'), str(tmp_path / 'nothing.pth')])
    with pytest.raises(ValueError, match='at least 2 experts'):
        expert_paths([str(tmp_path / 'net_g_0_latest.pth')])
    with pytest.raises(FileNotFoundError, match='neither a folder'):
        expert_paths(str(tmp_path / 'missing'))


@pytest.mark.parametrize('arch', BACKBONES)
def test_one_hot_weights_reproduce_each_expert(arch, tmp_path):
    backbone = BACKBONES[arch]
    folder = save_experts(tmp_path, backbone)
    net = randomize_routers(fusion(folder, backbone))
    x = lq()
    outputs = []
    with torch.no_grad():
        for k in range(3):
            expected = expert_net(folder, backbone, k)(x)
            with net.forced_weights(torch.eye(3)[k]):
                outputs.append(net(x))
            torch.testing.assert_close(outputs[-1], expected, rtol=0, atol=1e-5)
    assert (outputs[0] - outputs[1]).abs().max() > 1e-3  # the experts differ: the check above is not vacuous


@pytest.mark.parametrize('arch', BACKBONES)
def test_identical_experts_give_that_expert_for_any_weights(arch, tmp_path):
    backbone = BACKBONES[arch]
    folder = save_experts(tmp_path, backbone, seeds=(5, 5, 5))
    net = randomize_routers(fusion(folder, backbone))
    x = lq()
    with torch.no_grad():
        expected = expert_net(folder, backbone, 0)(x)
        torch.testing.assert_close(net(x), expected, rtol=0, atol=1e-5)  # router weights, per image
        weights = torch.distributions.Dirichlet(torch.ones(3)).sample()
        with net.forced_weights(weights):
            torch.testing.assert_close(net(x), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize('arch', ['MSRResNet', 'SwinIR'])
def test_images_are_mixed_independently(arch, tmp_path):
    """One grouped conv / batched matmul for the batch gives each image what it gets alone, with its own weights."""
    backbone = BACKBONES[arch]
    net = randomize_routers(fusion(save_experts(tmp_path, backbone), backbone))
    x = lq(batch=2)
    with torch.no_grad():
        torch.testing.assert_close(net(x), torch.cat([net(x[:1]), net(x[1:])]), rtol=0, atol=1e-5)
        per_image = []
        for i in range(2):
            with net.calibration() as calibration:
                net(x[i:i + 1])
            per_image.append(calibration.mean_weights())
    site = 'layers.0.residual_group.blocks.1.mlp.fc1' if arch == 'SwinIR' else 'conv_first'
    assert (per_image[0][site] - per_image[1][site]).abs().max() > 1e-3


def test_calibration_averages_over_images(tmp_path):
    backbone = BACKBONES['SwinIR']
    net = randomize_routers(fusion(save_experts(tmp_path, backbone), backbone))
    x = lq(batch=3)
    with torch.no_grad():
        with net.calibration() as together:
            net(x)
        with net.calibration() as apart:
            for i in range(3):
                net(x[i:i + 1])
    together, apart = together.mean_weights(), apart.mean_weights()
    assert together.keys() == net.sites.keys() and len(net.params) == 3  # 2 bias tables + absolute_pos_embed
    for name in together:
        torch.testing.assert_close(together[name], apart[name], rtol=0, atol=1e-6)
        assert together[name].min() >= 0 and abs(float(together[name].sum()) - 1) < 1e-5
    uniform = torch.full((3, ), 1 / 3)
    assert max((w - uniform).abs().max() for w in together.values()) > 0.05
    assert all(site.recorder is None for site in net.sites.values())  # recording stops with the block


@pytest.mark.parametrize('arch', ['MSRResNet', 'SwinIR'])
def test_collapsed_backbone_equals_fused_network_with_mean_weights(arch, tmp_path):
    backbone = BACKBONES[arch]
    net = randomize_routers(fusion(save_experts(tmp_path, backbone), backbone))
    x = lq(batch=2, seed=1)
    with torch.no_grad():
        with net.calibration() as calibration:
            net(lq(batch=3, seed=2))
        weights = calibration.mean_weights()
        state = net.collapsed_state_dict(weights)
        plain = build_network(backbone).eval()
        assert list(state) == list(plain.state_dict())
        plain.load_state_dict(state)
        with net.forced_weights(weights):
            fused = net(x)
        torch.testing.assert_close(plain(x), fused, rtol=0, atol=1e-5)
        with net.forced_weights(torch.full((3, ), 1 / 3)):
            assert (net(x) - fused).abs().max() > 1e-4  # the calibrated weights matter


def test_only_routers_train_and_only_they_are_saved(tmp_path):
    backbone = BACKBONES['SwinIR']
    net = fusion(save_experts(tmp_path, backbone), backbone).train()
    names = [name for name, _ in net.named_parameters()]
    assert names and all('.router.' in name or name.endswith('_mixer.logits') for name in names)
    own_buffers = {f'backbone.{key}' for key, _ in build_network(backbone).named_buffers()}  # index tables, mask
    assert set(net.state_dict()) == set(names) | own_buffers
    expert_buffers = {name for name, _ in net.named_buffers()} - own_buffers
    assert len(expert_buffers) == 2 * len(net.layers) + 3  # weight and bias per layer, 3 tables
    assert set(net._ddp_params_and_buffers_to_ignore) == expert_buffers  # not broadcast by DDP at every step
    net(lq()).square().mean().backward()
    for name, param in net.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert all(layer.router.head[-1].weight.grad.abs().sum() > 0 for layer in net.layers.values())
    with torch.no_grad():  # the mixed SwinIR tables live for one forward only: a trained network still deep-copies
        torch.testing.assert_close(copy.deepcopy(net).eval()(lq()), net.eval()(lq()), rtol=0, atol=0)


def test_checkpoint_of_another_arch_is_an_error(tmp_path):
    rrdb = save_experts(tmp_path / 'rrdb', BACKBONES['RRDBNet'])
    with pytest.raises(ValueError, match=r'net_g_0_latest.pth is not a checkpoint of this backbone MSRResNet'):
        fusion(rrdb, BACKBONES['MSRResNet'])
    wider = save_experts(tmp_path / 'wide', dict(BACKBONES['MSRResNet'], num_feat=12))
    with pytest.raises(ValueError, match=r'does not fit this backbone MSRResNet: conv_first.weight'):
        fusion(wider, BACKBONES['MSRResNet'])
    folder = save_experts(tmp_path / 'ok', BACKBONES['MSRResNet'])
    torch.save(torch.zeros(3), os.path.join(folder, 'net_g_1_latest.pth'))
    with pytest.raises(ValueError, match=r'net_g_1_latest.pth holds a Tensor, not network weights'):
        fusion(folder, BACKBONES['MSRResNet'])


def test_unsupported_parameters_are_errors_unless_shared_or_listed(tmp_path):
    with pytest.raises(TypeError, match=r'norm.weight: BatchNorm2d has no mixing layer \(supported: Conv2d'):
        with_bn = dict(type='FusionTestNet', batchnorm=True)
        fusion(save_experts(tmp_path / 'bn', with_bn), with_bn, static_params=['scale'])
    plain = dict(type='FusionTestNet')
    folder = save_experts(tmp_path / 'scale', plain)
    with pytest.raises(TypeError, match=r'scale: a raw parameter of FusionTestNet .* list "scale" in static_params'):
        fusion(folder, plain)
    net = fusion(folder, plain, static_params=['scale'])
    assert net.param_keys == ['scale']
    with torch.no_grad(), net.forced_weights(torch.eye(3)[2]):
        torch.testing.assert_close(net(lq()), expert_net(folder, plain, 2)(lq()), rtol=0, atol=1e-6)


def test_equal_parameters_are_shared_and_differing_buffers_are_errors(tmp_path):
    backbone = dict(type='FusionTestNet', batchnorm=True)
    states = [build_network(backbone).state_dict() for _ in range(3)]
    for i, state in enumerate(states):
        state['conv.weight'] = torch.randn_like(state['conv.weight'])
        torch.save({'params': state}, tmp_path / f'net_g_{i}_latest.pth')
    net = fusion(str(tmp_path), backbone)  # BatchNorm and scale equal in all experts: kept once, frozen
    assert net.layer_names == ['conv'] and net.param_keys == []
    buffers = dict(net.named_buffers())
    for key in ('scale', 'norm.weight', 'norm.bias', 'norm.running_var'):
        assert torch.equal(buffers[f'backbone.{key}'], states[0][key]) and f'backbone.{key}' in net.state_dict()
    assert all('.router.' in name for name, _ in net.named_parameters())
    with torch.no_grad(), net.forced_weights(torch.eye(3)[1]):
        torch.testing.assert_close(net(lq()), expert_net(str(tmp_path), backbone, 1)(lq()), rtol=0, atol=1e-6)
    states[1]['norm.running_mean'] += 1
    torch.save({'params': states[1]}, tmp_path / 'net_g_1_latest.pth')
    with pytest.raises(ValueError, match=r'buffer norm.running_mean differs between the experts'):
        fusion(str(tmp_path), backbone)


def test_forced_weights_are_checked(tmp_path):
    backbone = BACKBONES['MSRResNet']
    net = fusion(save_experts(tmp_path, backbone), backbone)
    for bad in ([0.5, 0.5], [1.5, -0.5, 0.0], [0.2, 0.2, 0.2]):
        with pytest.raises(ValueError, match='3 non-negative values summing to 1'):
            net.set_forced_weights(torch.tensor(bad))
    with pytest.raises(KeyError, match=r"missing \['body.0.conv1'"):
        net.set_forced_weights({'conv_first': torch.eye(3)[0]})
    with pytest.raises(RuntimeError, match='inside PopulationFusion.forward'):
        net.layers['conv_first'](lq())
