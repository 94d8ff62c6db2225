"""Restormer's building blocks (Zamir et al., CVPR 2022, arXiv 2111.09881), the backbone of MEASNet and AdaIR.

Layout is (B, C, H, W) throughout; convolutions are bias-free unless ``bias`` says otherwise, LayerNorm has a bias.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def conv1x1(in_channels, out_channels, bias=False):
    return nn.Conv2d(in_channels, out_channels, 1, bias=bias)


def conv3x3(in_channels, out_channels, bias=False, groups=1):
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias, groups=groups)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of each pixel (Restormer's ``WithBias_LayerNorm``, eps 1e-5; FD-MEE's
    ``channels_first`` LayerNorm with eps 1e-6)."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def channel_attention(q, k, v, num_heads, temperature):
    """Transposed (channel-by-channel) attention of Restormer: cost linear in the number of pixels.

    q, k, v: (B, C, H, W); temperature: (num_heads, 1, 1). Queries and keys are L2-normalised over the pixels.
    """
    b, c, h, w = q.shape
    q, k, v = (t.reshape(b, num_heads, c // num_heads, h * w) for t in (q, k, v))
    attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) * temperature
    return (attn.softmax(dim=-1) @ v).reshape(b, c, h, w)


class ChannelCrossAttention(nn.Module):
    """Restormer's multi-Dconv head transposed attention with queries from ``x`` and keys/values from ``y``
    (AdaIR's ``Chanel_Cross_Attention``). Each of q and kv: 1x1 conv, then depthwise 3x3."""

    def __init__(self, dim, num_heads, bias=False):
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.q = nn.Sequential(conv1x1(dim, dim, bias), conv3x3(dim, dim, bias, groups=dim))
        self.kv = nn.Sequential(conv1x1(dim, 2 * dim, bias), conv3x3(2 * dim, 2 * dim, bias, groups=2 * dim))
        self.project_out = conv1x1(dim, dim, bias)

    def forward(self, x, y):
        k, v = self.kv(y).chunk(2, dim=1)
        return self.project_out(channel_attention(self.q(x), k, v, self.num_heads, self.temperature))


class MDTA(nn.Module):
    """Restormer's self-attention (multi-Dconv head transposed attention): one 1x1 + depthwise 3x3 conv to q, k, v."""

    def __init__(self, dim, num_heads, bias=False):
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Sequential(conv1x1(dim, 3 * dim, bias), conv3x3(3 * dim, 3 * dim, bias, groups=3 * dim))
        self.project_out = conv1x1(dim, dim, bias)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=1)
        return self.project_out(channel_attention(q, k, v, self.num_heads, self.temperature))


class GDFN(nn.Module):
    """Gated depthwise-conv feed-forward network: GELU(x1) * x2 with x1, x2 from a 1x1 + depthwise 3x3."""

    def __init__(self, dim, ffn_expansion_factor, bias=False):
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Sequential(conv1x1(dim, 2 * hidden, bias), conv3x3(2 * hidden, 2 * hidden, bias,
                                                                                 groups=2 * hidden))
        self.project_out = conv1x1(hidden, dim, bias)

    def forward(self, x):
        x1, x2 = self.project_in(x).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class TransformerBlock(nn.Module):
    """Pre-norm Restormer block: x + MDTA(LN(x)), then x + GDFN(LN(x))."""

    def __init__(self, dim, num_heads, ffn_expansion_factor, bias=False):
        super().__init__()
        self.norm1 = LayerNorm2d(dim)
        self.attn = MDTA(dim, num_heads, bias)
        self.norm2 = LayerNorm2d(dim)
        self.ffn = GDFN(dim, ffn_expansion_factor, bias)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def transformer_blocks(num_blocks, dim, num_heads, ffn_expansion_factor, bias=False):
    return nn.Sequential(*[TransformerBlock(dim, num_heads, ffn_expansion_factor, bias) for _ in range(num_blocks)])


def downsample(dim):
    """Halve the resolution, double the channels: 3x3 conv to dim/2, then PixelUnshuffle(2)."""
    return nn.Sequential(conv3x3(dim, dim // 2), nn.PixelUnshuffle(2))


def upsample(dim):
    """Double the resolution, halve the channels: 3x3 conv to 2*dim, then PixelShuffle(2)."""
    return nn.Sequential(conv3x3(dim, dim * 2), nn.PixelShuffle(2))
