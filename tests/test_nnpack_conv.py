"""NNPACK convolutions for the EA phase: which calls they take, equal values, and everything else untouched."""
import pytest
import torch
import torch.nn.functional as F

from basicsr_ea.models.nnpack_conv import NNPACKConvolutions, nnpack_eligible, nnpack_usable

needs_nnpack = pytest.mark.skipif(not nnpack_usable(), reason='this PyTorch build has no NNPACK for this CPU')


def eligible(shape=(2, 64, 16, 20), kernel=3, stride=1, padding=1, dilation=1, groups=1, dtype=torch.float32):
    x = torch.zeros(shape, dtype=dtype)
    weight = torch.zeros(8, shape[1] // groups, kernel, kernel, dtype=dtype)
    return nnpack_eligible(x, weight, stride, padding, dilation, groups)


def test_only_wide_unit_stride_3x3_float_convolutions_without_gradient_are_eligible():
    with torch.no_grad():
        assert eligible() and eligible(padding=0) and eligible(padding=(2, 1)) and eligible(stride=(1, 1))
        assert not eligible(shape=(2, 3, 128, 128))  # an RGB input: NNPACK is slower there
        assert not eligible(shape=(2, 63, 64, 64))
        assert not eligible(shape=(2, 512, 8, 8))  # VGG's conv5 on 128 px patches: slower too
        assert not eligible(kernel=1) and not eligible(kernel=5)
        assert not eligible(stride=2) and not eligible(dilation=2) and not eligible(groups=2)
        assert not eligible(padding=3) and not eligible(dtype=torch.float64)
        assert not eligible(shape=(2, 64, 16)) and not eligible(padding='same')
    assert not eligible()  # with autograd recording: NNPACK gives no gradient here


@pytest.fixture
def nnpack_calls(monkeypatch):
    calls = []
    original = torch._nnpack_spatial_convolution
    monkeypatch.setattr(torch, '_nnpack_spatial_convolution',
                        lambda *args: calls.append(args[0].shape) or original(*args))
    return calls


@needs_nnpack
@pytest.mark.parametrize('bias', [True, False])
@pytest.mark.parametrize('padding_mode', ['zeros', 'reflect'])
def test_eligible_convolutions_run_on_nnpack_with_the_direct_kernels_values(nnpack_calls, bias, padding_mode):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(64, 32, 3, padding=1, bias=bias, padding_mode=padding_mode)
    x = torch.randn(2, 64, 24, 20, generator=torch.Generator().manual_seed(1))
    x_channels_last = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        direct = conv(x)
        with NNPACKConvolutions():
            fast, fast_channels_last = conv(x), conv(x_channels_last)
    assert len(nnpack_calls) == 2  # (reflect: the padded input, with padding 0)
    exact = F.conv2d(F.pad(x.double(), (1, 1, 1, 1), mode='constant' if padding_mode == 'zeros' else padding_mode),
                     conv.weight.double(), None if conv.bias is None else conv.bias.double())
    scale = exact.abs().max()
    assert not torch.equal(fast, direct)  # another algorithm...
    assert ((fast.double() - exact).abs().max() / scale) < 2e-5  # ...to float rounding (direct: ~1e-6)
    assert ((direct.double() - exact).abs().max() / scale) < 2e-5
    assert torch.equal(fast_channels_last, fast)


@needs_nnpack
def test_other_calls_pass_through_unchanged(nnpack_calls):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    rgb, wide = torch.randn(2, 3, 32, 32, generator=g), torch.randn(2, 64, 32, 32, generator=g)
    first, strided = torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.Conv2d(64, 64, 3, stride=2, padding=1)
    same = torch.nn.Conv2d(64, 8, 3, padding='same')
    with torch.no_grad():
        expected = [first(rgb), strided(wide), same(wide), torch.relu(wide)]
        with NNPACKConvolutions():
            outputs = [first(rgb), strided(wide), same(wide), torch.relu(wide)]
    assert nnpack_calls == []
    assert all(torch.equal(a, b) for a, b in zip(outputs, expected))
    conv = torch.nn.Conv2d(64, 8, 3, padding=1)
    with NNPACKConvolutions():
        conv(wide).sum().backward()  # autograd on: the direct kernel, which has a gradient
    assert nnpack_calls == [] and conv.weight.grad.abs().sum() > 0
