"""Frequency splits and MEASNet's FD-MEE (frequency-decomposed multi-expert ensemble, arXiv 2407.19139).

``apply_group_kernels`` / ``DynamicLowPass``: a learned, per-image low-pass filter whose residual is the high band.
``fft_box_split``: the FFT box split of AdaIR's adaptive frequency learning block (used by ``aflb.py``).
``FDMEE``: split the decoder feature, refine each band with its own multi-expert ensemble, fuse.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from basicsr_ea.archs.arch_util import pad_reflect
from basicsr_ea.archs.moe_layers import GlobalRouter
from basicsr_ea.archs.restormer_blocks import LayerNorm2d, conv1x1, conv3x3


def apply_group_kernels(x, kernels):
    """Filter each image with its own k x k kernel per channel group (reflect padding keeps the size).

    x: (B, C, H, W); kernels: (B, G, k*k) in row-major tap order, G dividing C. One depthwise convolution over
    the B*C channels of the batch (each channel with its group's kernel): memory stays at the padded copy of x,
    where the authors' unfold holds k*k copies.
    """
    b, c, h, w = x.shape
    groups, taps = kernels.shape[1:]
    size = math.isqrt(taps)
    padded = pad_reflect(x, (size // 2, ) * 4)
    weight = kernels.repeat_interleave(c // groups, dim=1).reshape(b * c, 1, size, size)
    return F.conv2d(padded.reshape(1, b * c, *padded.shape[-2:]), weight, groups=b * c).reshape(b, c, h, w)


def unused_parameters(**shapes):
    """Parameters the authors' modules hold but their forward never reads (zeros here), kept under the authors' names
    so that their checkpoints load strictly and the parameter count is theirs. They get no gradient."""
    return nn.ParameterDict({name: nn.Parameter(torch.zeros(shape)) for name, shape in shapes.items()})


class KernelBatchNorm(nn.BatchNorm2d):
    """The authors' BatchNorm of the pooled features, which fails in training on a batch of one (one value per
    channel): such a batch is normalised with the running statistics (left as they are), as in eval."""

    def forward(self, x):
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


class DynamicLowPass(nn.Module):
    """Learned dynamic low-pass split: GAP -> 1x1 conv -> BatchNorm -> per-image kernels for ``groups`` channel
    groups, each a softmax over its taps (non-negative, summing to 1, so the filter keeps the mean). Returns
    (low, x - low).

    ``batch_norm=False`` leaves the BatchNorm out: in training it couples the images of a batch (and the processes
    of a DDP run do not share its statistics), so without it each image's split is its own in training too.
    """

    def __init__(self, dim, groups=8, kernel_size=3, batch_norm=True):
        super().__init__()
        if dim % groups:
            raise ValueError(f'dim={dim} must be a multiple of groups={groups}')
        self.groups, self.taps = groups, kernel_size**2
        self.to_kernels = conv1x1(dim, groups * self.taps)
        nn.init.kaiming_normal_(self.to_kernels.weight, mode='fan_out', nonlinearity='relu')
        self.norm = KernelBatchNorm(groups * self.taps) if batch_norm else nn.Identity()
        self.unused = unused_parameters(lamb_l=dim, lamb_h=dim)

    def kernels(self, x):
        logits = self.norm(self.to_kernels(x.mean(dim=(2, 3), keepdim=True)))
        return logits.reshape(x.shape[0], self.groups, self.taps).softmax(dim=-1)

    def forward(self, x):
        low = apply_group_kernels(x, self.kernels(x))
        return low, x - low


def fft_box_split(x, half_h, half_w):
    """Split ``x`` (B, C, H, W) by a centred box of its spectrum: (|ifft(low box)|, |ifft(rest)|), as in AdaIR.

    half_h, half_w: (B,) integer tensors; the box covers frequencies -half .. half-1 on each axis (AdaIR's layout
    after shifting the spectrum so that the zero frequency sits at index size // 2).
    """
    h, w = x.shape[-2:]

    def inside(size, half):
        offsets = torch.arange(size, device=x.device) - size // 2
        return (offsets >= -half[:, None]) & (offsets < half[:, None])

    centred = inside(h, half_h)[:, :, None] & inside(w, half_w)[:, None, :]
    mask = torch.roll(centred, shifts=(-(h // 2), -(w // 2)), dims=(1, 2))[:, None].to(x.dtype)
    spectrum = torch.fft.fft2(x)
    return torch.fft.ifft2(spectrum * mask).abs(), torch.fft.ifft2(spectrum * (1 - mask)).abs()


class LowRankExpert(nn.Module):
    """E(x, k) = W3 (W1 x * W2 k) with 1x1 convs (with biases) through a rank-``rank`` bottleneck. MESE runs its
    experts together (``mix_low_rank_experts``); ``forward`` is the definition."""

    def __init__(self, dim, rank):
        super().__init__()
        self.w1, self.w2, self.w3 = conv1x1(dim, rank, True), conv1x1(dim, rank, True), conv1x1(rank, dim, True)

    def forward(self, x, k):
        return self.w3(self.w1(x) * self.w2(k))


def mix_low_rank_experts(x, k, experts, indices, weights):
    """sum_j weights[:, j] * E_{indices[:, j]}(x, k) per image, for ``LowRankExpert``s, in three batched products.

    The experts' weights are stacked, zero-padded to the largest rank (a zero row adds nothing), each image's picks
    gathered and their gate weights folded into the output projection: no per-expert loop and no gather or scatter
    of the features. Every expert is in the graph, so an expert no image picked gets a zero gradient, as in the
    authors' training (which runs every expert, weighting the unpicked ones 0).

    x, k: (B, C, H, W); indices, weights: (B, top_k). Returns (B, C, H, W).
    """
    b, c, h, w = x.shape
    rank = max(expert.w1.out_channels for expert in experts)

    def picked(convs, pad_rows):
        """Weights (B, top_k, rank, C) and biases (B, top_k, rank) of each image's picks (pad_rows), or weights
        (B, top_k, C, rank) and biases (B, top_k, C): the 1x1 convs zero-padded to ``rank`` and stacked."""
        pads = [rank - conv.weight.shape[0 if pad_rows else 1] for conv in convs]
        weight = torch.stack([F.pad(conv.weight.flatten(1), (0, 0, 0, p) if pad_rows else (0, p))
                              for conv, p in zip(convs, pads)])
        bias = torch.stack([F.pad(conv.bias, (0, p if pad_rows else 0)) for conv, p in zip(convs, pads)])
        return weight[indices], bias[indices]

    w1, b1 = picked([expert.w1 for expert in experts], True)
    w2, b2 = picked([expert.w2 for expert in experts], True)
    w3, b3 = picked([expert.w3 for expert in experts], False)
    low = (torch.baddbmm(b1.flatten(1)[..., None], w1.flatten(1, 2), x.flatten(2)) *
           torch.baddbmm(b2.flatten(1)[..., None], w2.flatten(1, 2), k.flatten(2)))  # (B, top_k * rank, H * W)
    w3 = (w3 * weights[..., None, None]).transpose(1, 2).flatten(2)  # (B, C, top_k * rank)
    b3 = (b3 * weights[..., None]).sum(dim=1)[..., None]
    return torch.baddbmm(b3, w3, low).reshape(b, c, h, w)


class MESE(nn.Module):
    """Multi-expert selection and ensemble on one frequency band (convs with biases, as in the authors' code).

    3x3 conv -> GELU -> 1x1 to 2C, split into ``x`` (striped depthwise 1x3 + 3x1 conv, GELU) and a context ``k``
    (calibrated by its own 1/16-resolution summary); a per-image router picks ``top_k`` low-rank experts
    E_i(x, k) whose weighted sum is added to x; 1x1 projection.

    Args:
        dim: channels C.
        ranks: one low-rank expert per entry, of that rank.
        top_k: experts used per image.
    """

    def __init__(self, dim, ranks=(2, 3, 4, 5, 6), top_k=2):
        super().__init__()
        self.project_in = nn.Sequential(conv3x3(dim, dim, True), nn.GELU(), conv1x1(dim, 2 * dim, True))
        self.striped = nn.Sequential(
            nn.Conv2d(dim, dim, (1, 3), padding=(0, 1), groups=dim),
            nn.Conv2d(dim, dim, (3, 1), padding=(1, 0), groups=dim), nn.GELU())
        self.context_down = nn.Sequential(nn.Conv2d(dim, dim, 4, stride=4, groups=dim), nn.GELU())
        self.context = nn.Sequential(conv3x3(dim, dim, True, groups=dim), conv1x1(dim, dim, True))
        self.router = GlobalRouter(dim, len(ranks), top_k)
        self.experts = nn.ModuleList([LowRankExpert(dim, rank) for rank in ranks])
        self.project_out = conv1x1(dim, dim, True)

    def calibrate(self, k):
        """k plus its context: the same 4x4 stride-4 depthwise conv twice (1/16 resolution), 3x3 + 1x1, bilinear
        upsampling. Sides below 16 px, where the authors' code fails, are replicate-padded to 16 and the upsampled
        context is cropped back; from 16 px on (every size the authors' code runs) nothing is padded (nor copied),
        and the strided convs drop the remainder as theirs do."""
        h, w = k.shape[-2:]
        padded = F.pad(k, (0, max(0, 16 - w), 0, max(0, 16 - h)), mode='replicate') if min(h, w) < 16 else k
        context = self.context(self.context_down(self.context_down(padded)))
        context = F.interpolate(context, size=padded.shape[-2:], mode='bilinear', align_corners=False)
        return k + context[..., :h, :w]

    def forward(self, x):
        x, k = self.project_in(x).chunk(2, dim=1)
        x = self.striped(x)
        indices, weights = self.router(x)
        return self.project_out(x + mix_low_rank_experts(x, self.calibrate(k), self.experts, indices, weights))


class MEE(nn.Module):
    """Pre-norm residual multi-expert ensemble: x + MESE(LayerNorm(x)), LayerNorm eps 1e-6 as the authors'. Their
    second LayerNorm is never applied (``unused``)."""

    def __init__(self, dim):
        super().__init__()
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.mese = MESE(dim)
        self.unused = unused_parameters(norm_2_weight=dim, norm_2_bias=dim)

    def forward(self, x):
        return x + self.mese(self.norm(x))


class FDMEE(nn.Module):
    """Frequency-decomposed multi-expert ensemble: dynamic low-pass split, one MEE per band, 1x1 fusion (with bias).

    Input and output (B, C, H, W), C a multiple of ``groups``; ``batch_norm``: see ``DynamicLowPass``.
    """

    def __init__(self, dim, groups=8, batch_norm=True):
        super().__init__()
        self.split = DynamicLowPass(dim, groups, batch_norm=batch_norm)
        self.low = MEE(dim)
        self.high = MEE(dim)
        self.fuse = conv1x1(2 * dim, dim, True)

    def forward(self, x):
        low, high = self.split(x)
        return self.fuse(torch.cat([self.high(high), self.low(low)], dim=1))
