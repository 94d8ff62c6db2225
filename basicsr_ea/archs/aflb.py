"""Adaptive frequency learning block (AFLB) of AdaIR (Cui et al., ICLR 2025, arXiv 2403.14614), as MEASNet uses it.

The degraded image, resized to a decoder feature, is split into low and high frequencies by an FFT box; each band
cross-attends to the feature, spatial and channel gates merge them, and a last cross-attention brings the result
back into the feature: ``alpha * out + beta * feature`` with alpha = 0, beta = 1 at initialisation.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from basicsr_ea.archs.frequency_layers import fft_box_split, unused_parameters
from basicsr_ea.archs.restormer_blocks import ChannelCrossAttention, conv1x1, conv3x3


LOW_BANDS = ('authors', 'nonempty')


class SpatialGate(nn.Module):
    """sigmoid(7x7 conv, no bias, of the channel-wise max and mean): one weight per pixel."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3, bias=False)

    def forward(self, x):
        return torch.sigmoid(self.conv(torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], 1)))


class ChannelGate(nn.Module):
    """sigmoid(MLP(avg pool) + MLP(max pool)), MLP = 1x1 conv -> ReLU -> 1x1 conv: one weight per channel."""

    def __init__(self, dim, reduction=16):
        super().__init__()
        hidden = max(1, dim // reduction)
        self.mlp = nn.Sequential(conv1x1(dim, hidden), nn.ReLU(), conv1x1(hidden, dim))

    def forward(self, x):
        return torch.sigmoid(self.mlp(x.mean(dim=(2, 3), keepdim=True)) + self.mlp(x.amax(dim=(2, 3), keepdim=True)))


def low_band_half_size(size, rate, band_scale=128, low_band='authors'):
    """Half-size of the low band's box on an axis of ``size`` bins, for the (B,) rates in (0, 1).

    ``authors``: ``int(size // band_scale * rate)``, which is 0 (an empty low band: the high band is the whole
    image) for every side below 2 * band_scale = 256 px. ``nonempty``: ``max(1, int(size * rate / band_scale))``, at
    least one frequency bin a side, with the same growth with size.
    """
    if low_band == 'authors':
        return (size // band_scale * rate).int()
    return (size * rate / band_scale).int().clamp(min=1)


class AFLB(nn.Module):
    """AdaIR's ``FreModule`` as MEASNet's ``Block``: frequency-guided refinement of a decoder feature by the image.

    As in AdaIR the integer half-size is not differentiable, so ``rate_conv`` receives no gradient. The authors'
    ``initial_conv`` and ``score_generator`` are never used by their forward (``unused``).

    Args:
        dim: channels of the feature.
        num_heads: heads of the three channel cross-attentions.
        in_channels: channels of the image.
        band_scale: the 128 in the half-size formula.
        low_band: 'authors' or 'nonempty' (see ``low_band_half_size``).
    Inputs: image (B, in_channels, h, w) of any size, feature (B, dim, H, W).
    """

    def __init__(self, dim, num_heads, bias=False, in_channels=3, band_scale=128, low_band='authors'):
        super().__init__()
        if low_band not in LOW_BANDS:
            raise ValueError(f'low_band must be one of {LOW_BANDS}, got {low_band!r}')
        self.band_scale, self.low_band = band_scale, low_band
        self.embed = conv3x3(in_channels, dim)
        self.rate_conv = nn.Sequential(conv1x1(dim, max(1, dim // 8)), nn.GELU(), conv1x1(max(1, dim // 8), 2))
        self.cross_high = ChannelCrossAttention(dim, num_heads, bias)
        self.cross_low = ChannelCrossAttention(dim, num_heads, bias)
        self.cross_out = ChannelCrossAttention(dim, num_heads, bias)
        self.spatial_gate = SpatialGate()
        self.channel_gate = ChannelGate(dim)
        self.merge = conv1x1(dim, dim, bias=True)
        self.alpha = nn.Parameter(torch.zeros(dim, 1, 1))
        self.beta = nn.Parameter(torch.ones(dim, 1, 1))
        self.unused = unused_parameters(initial_conv_weight=(dim, in_channels, 3, 3),
                                        score_generator_weight=(2, 2, 7, 7), score_generator_bias=2)

    def split(self, x):
        """(low, high) of the embedded image, with a per-image box whose size ``rate_conv`` chooses."""
        h, w = x.shape[-2:]
        rate = torch.sigmoid(self.rate_conv(x.mean(dim=(2, 3), keepdim=True))).flatten(1)
        half_h = low_band_half_size(h, rate[:, 0], self.band_scale, self.low_band)
        half_w = low_band_half_size(w, rate[:, 1], self.band_scale, self.low_band)
        return fft_box_split(x, half_h, half_w)

    def forward(self, img, feat):
        img = F.interpolate(img, size=feat.shape[-2:], mode='bilinear', align_corners=False)
        low, high = self.split(self.embed(img))
        high = self.cross_high(high, feat)
        low = self.cross_low(low, feat)
        merged = self.merge(low * self.spatial_gate(high) + high * self.channel_gate(low))
        return self.alpha * self.cross_out(feat, merged) + self.beta * feat
