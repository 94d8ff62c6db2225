"""Frequency splits: the dynamic low-pass of FD-MEE, AdaIR's FFT box split and the AFLB that uses it."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from basicsr_ea.archs.aflb import AFLB, low_band_half_size
from basicsr_ea.archs.frequency_layers import (MESE, FDMEE, DynamicLowPass, apply_group_kernels, fft_box_split,
                                              mix_low_rank_experts)


def test_apply_group_kernels_equals_a_grouped_convolution_per_image():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 6, 9, generator=gen)
    kernels = torch.randn(2, 4, 9, generator=gen)
    out = apply_group_kernels(x, kernels)
    for b in range(2):
        weight = kernels[b].reshape(4, 1, 3, 3).repeat_interleave(2, dim=0)
        reference = F.conv2d(F.pad(x[b:b + 1], (1, 1, 1, 1), mode='reflect'), weight, groups=8)
        assert_close(out[b:b + 1], reference, atol=1e-5, rtol=1e-5)


def make_low_pass():
    torch.manual_seed(0)
    return DynamicLowPass(16, groups=8)


def test_low_plus_high_reconstructs_the_input():
    x = torch.randn(3, 16, 11, 13)
    low, high = make_low_pass()(x)
    assert_close(low + high, x, rtol=0, atol=1e-6)
    assert high.abs().mean() > 0.1  # a real split, not low == x


def test_dynamic_kernels_are_per_image_averages_that_keep_a_constant():
    split = make_low_pass()
    x = torch.randn(2, 16, 8, 8)
    kernels = split.kernels(x)
    assert kernels.shape == (2, 8, 9) and (kernels > 0).all()
    assert_close(kernels.sum(dim=-1), torch.ones(2, 8))
    assert not torch.allclose(kernels[0], kernels[1])
    constant = torch.full((1, 16, 8, 8), 0.7)
    low, high = split(constant)
    assert_close(low, constant)
    assert high.abs().max() < 1e-6


def test_low_pass_removes_most_of_a_checkerboard():
    x = ((torch.arange(8)[:, None] + torch.arange(8)[None]) % 2 * 2.0 - 1).expand(1, 16, 8, 8)
    low, _ = make_low_pass()(x)
    assert low.square().mean() < 0.5 * x.square().mean()


def test_dynamic_low_pass_needs_channels_divisible_by_groups():
    with pytest.raises(ValueError, match='multiple of groups'):
        DynamicLowPass(12, groups=8)


def cosine_rows(h=8, w=6, cycles=1):
    rows = torch.cos(2 * math.pi * cycles * torch.arange(h) / h)
    return rows[:, None].expand(1, 1, h, w)


def test_fft_box_split_layout_matches_adair():
    """The box spans frequencies -half .. half-1: a cosine of frequency 1 (bins +1 and -1) splits in half with
    half = 1 (only -1 inside) and lies wholly in the low band with half = 2."""
    x = cosine_rows()
    one = torch.tensor([1])
    low, high = fft_box_split(x, one, one)
    assert_close(low, torch.full_like(x, 0.5))
    assert_close(high, torch.full_like(x, 0.5))
    low, high = fft_box_split(x, torch.tensor([2]), one)
    assert_close(low, x.abs())
    assert high.abs().max() < 1e-6


def test_fft_box_split_uses_each_images_own_box():
    x = cosine_rows().expand(2, 3, 8, 6)
    low, _ = fft_box_split(x, torch.tensor([1, 2]), torch.tensor([1, 1]))
    assert_close(low[0], torch.full_like(low[0], 0.5))
    assert_close(low[1], x[1].abs())


def test_aflb_low_band_authors_rule_is_empty_below_256_px_and_nonempty_keeps_one_bin():
    """The authors' half-size int(size // 128 * t) is 0 below 256 px: a constant image (all energy at the zero
    frequency) goes wholly to the high band. ``nonempty`` keeps at least one bin, so it stays in the low band."""
    constant = torch.full((2, 16, 16, 16), 0.3)
    torch.manual_seed(0)
    low, high = AFLB(dim=16, num_heads=2).split(constant)
    assert low.abs().max() < 1e-6
    assert_close(high, constant)
    torch.manual_seed(0)
    low, high = AFLB(dim=16, num_heads=2, low_band='nonempty').split(constant)
    assert_close(low, constant)
    assert high.abs().max() < 1e-6
    with pytest.raises(ValueError, match='low_band'):
        AFLB(dim=16, num_heads=2, low_band='wide')


@pytest.mark.parametrize('size, rate, authors, nonempty', [(255, 0.99, 0, 1), (256, 0.49, 0, 1), (256, 0.5, 1, 1),
                                                           (300, 0.9, 1, 2), (640, 0.7, 3, 3)])
def test_low_band_half_size_rounds_as_each_rule_says(size, rate, authors, nonempty):
    rates = torch.tensor([rate])
    assert low_band_half_size(size, rates).item() == authors  # int(size // 128 * rate)
    assert low_band_half_size(size, rates, low_band='nonempty').item() == nonempty  # max(1, int(size * rate / 128))


def test_aflb_starts_as_the_identity_on_the_feature():
    torch.manual_seed(0)
    aflb = AFLB(dim=16, num_heads=2)
    img, feat = torch.rand(2, 3, 32, 40), torch.randn(2, 16, 8, 10)
    assert_close(aflb(img, feat), feat)
    torch.nn.init.constant_(aflb.alpha, 0.5)
    assert not torch.allclose(aflb(img, feat), feat)


@pytest.mark.parametrize('size', [(2, 3), (5, 7), (20, 36)])
def test_fdmee_keeps_the_size_and_treats_images_independently(size):
    torch.manual_seed(0)
    block = FDMEE(16).eval()
    x = torch.randn(3, 16, *size)
    with torch.no_grad():
        out = block(x)
        singles = torch.cat([block(x[i:i + 1]) for i in range(3)])
    assert out.shape == x.shape
    assert_close(out, singles, atol=1e-5, rtol=1e-5)


def test_low_pass_batch_norm_uses_batch_statistics_in_training_and_running_ones_for_a_batch_of_one():
    """The authors' BatchNorm fails in training on one image; ours normalises it with the running statistics (as in
    eval, leaving them unchanged), and a batch of two trains on its own statistics as theirs does."""
    split = make_low_pass()
    norm = split.norm
    with torch.no_grad():
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 16, 8, 8)
    split.eval()
    expected = split.kernels(x[:1])
    split.train()
    before = norm.running_mean.clone()
    assert_close(split.kernels(x[:1]), expected)
    assert torch.equal(norm.running_mean, before)
    split.kernels(x)
    assert not torch.equal(norm.running_mean, before)  # updated from the batch
    logits = split.to_kernels(x.mean(dim=(2, 3), keepdim=True))
    normalised = (logits - logits.mean(dim=0)) / (logits.var(dim=0, unbiased=False) + norm.eps).sqrt()
    assert_close(split.kernels(x), (normalised * norm.weight[:, None, None] + norm.bias[:, None, None])
                 .reshape(2, 8, 9).softmax(dim=-1))
    assert not hasattr(DynamicLowPass(16, batch_norm=False).norm, 'running_mean')


def test_mese_context_reuses_one_strided_conv_and_pads_only_below_16_px():
    """From 16 px on the context is the authors': the same 4x4 stride-4 conv twice, dropping the remainder, then
    bilinear upsampling to the input size; below 16 px (where theirs fails) it is replicate-padded to 16."""
    torch.manual_seed(0)
    mese = MESE(8)
    k = torch.randn(1, 8, 23, 18)
    down = mese.context_down
    expected = k + F.interpolate(mese.context(down(down(k))), size=(23, 18), mode='bilinear', align_corners=False)
    assert_close(mese.calibrate(k), expected)
    small = torch.randn(2, 8, 5, 9)
    padded = F.pad(small, (0, 7, 0, 11), mode='replicate')
    context = F.interpolate(mese.context(down(down(padded))), size=(16, 16), mode='bilinear', align_corners=False)
    assert_close(mese.calibrate(small), small + context[..., :5, :9])


def test_mixed_low_rank_experts_equal_each_images_picks_run_one_by_one():
    torch.manual_seed(0)
    experts = MESE(8).experts
    x, k = torch.randn(3, 8, 5, 7), torch.randn(3, 8, 5, 7)
    indices = torch.tensor([[4, 0], [2, 3], [0, 4]])
    weights = torch.rand(3, 2)
    expected = torch.stack([sum(weights[i, j] * experts[indices[i, j]](x[i:i + 1], k[i:i + 1])[0] for j in range(2))
                            for i in range(3)])
    assert_close(mix_low_rank_experts(x, k, experts, indices, weights), expected)
