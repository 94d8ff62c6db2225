"""Restore an image of any size: tile by tile when it is larger than memory allows in one pass, padded to the sides
the network accepts.

Tiles overlap by ``overlap`` input pixels and are blended with weights that ramp linearly across each overlap, so
there is no visible seam. For a network whose receptive field is smaller than the overlap (convolutional SR
networks), every output pixel covered by one tile only equals the single-pass output exactly; networks with global
operations (MEASNet's task prompt and channel attention) see each tile as an image of its own.
"""
from dataclasses import dataclass

import torch

from basicsr_ea.archs.arch_util import pad_to_multiple, size_multiple
from basicsr_ea.options import OptionError, parse


def tile_starts(length, tile, overlap):
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with at least ``overlap`` shared pixels."""
    if tile >= length:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError(f'tile overlap must lie in [0, tile_size), got overlap={overlap} for tile_size={tile}')
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def blend_weights(size, overlap, ramp_in, ramp_out):
    """1-D weights of one tile: linear ramps over the ``overlap`` pixels it shares with a neighbour, 1 elsewhere."""
    weight = torch.ones(size)
    ramp = torch.arange(1, overlap + 1, dtype=torch.float32) / (overlap + 1)
    if ramp_in and overlap:
        weight[:overlap] = ramp
    if ramp_out and overlap:
        weight[-overlap:] = ramp.flip(0)
    return weight


def check_scale(output, lq, scale):
    """``output`` if it is ``scale`` times ``lq``: a ``scale`` option that does not match the network would
    otherwise crop or blend a wrong image without a word."""
    (h, w), (out_h, out_w) = lq.shape[-2:], output.shape[-2:]
    if (out_h, out_w) != (h * scale, w * scale):
        raise ValueError(f'the network turned a {w}x{h} input into {out_w}x{out_h}, not x{scale}: does the scale '
                         'option match the network?')
    return output


@torch.no_grad()
def tiled_forward(net, lq, tile_size, overlap=16, scale=1):
    """``net(lq)`` computed on ``tile_size`` x ``tile_size`` tiles of ``lq`` (``[B, C, H, W]``) with ``overlap``
    pixels of shared context, blended into one ``[B, C, H*scale, W*scale]`` output."""
    b, _, h, w = lq.shape
    if tile_size <= 0:
        raise ValueError(f'tile_size must be positive, got {tile_size}')
    tile_h, tile_w = min(tile_size, h), min(tile_size, w)
    output, weights = None, lq.new_zeros(1, 1, h * scale, w * scale)
    for top in tile_starts(h, tile_h, overlap):
        for left in tile_starts(w, tile_w, overlap):
            tile = lq[..., top:top + tile_h, left:left + tile_w]
            out = check_scale(net(tile), tile, scale)
            if output is None:
                output = lq.new_zeros(b, out.shape[1], h * scale, w * scale)
            weight = torch.outer(
                blend_weights(tile_h * scale, overlap * scale, top > 0, top + tile_h < h),
                blend_weights(tile_w * scale, overlap * scale, left > 0, left + tile_w < w)).to(out)
            rows, cols = slice(top * scale, (top + tile_h) * scale), slice(left * scale, (left + tile_w) * scale)
            output[..., rows, cols] += out * weight
            weights[..., rows, cols] += weight
    return output / weights


@dataclass(frozen=True)
class Tile:
    """The top-level ``tile`` option (HAT's convention: ``tile: {tile_size: 256, tile_pad: 32}``), ``tile_pad``
    being the overlap of neighbouring tiles in input pixels."""
    tile_size: int
    tile_pad: int

    def __post_init__(self):
        if self.tile_size <= 0:
            raise OptionError(f'tile_size: must be positive, got {self.tile_size}')
        if not 0 <= self.tile_pad < self.tile_size:
            raise OptionError(f'tile_pad: must lie in [0, tile_size={self.tile_size}), got {self.tile_pad}')

    def check_multiple(self, multiple):
        """Every tile's sides must be a multiple of the network's ``size_multiple``."""
        if self.tile_size % multiple:
            raise OptionError(f'tile.tile_size: must be a multiple of {multiple} for this network (its input sides '
                              f'must be), got {self.tile_size}')
        return self


def parse_tile(tile, multiple=1):
    """The ``Tile`` of a ``tile`` option (checked against the network's ``size_multiple``), or None without one:
    a typo fails before the first image instead of silently restoring untiled."""
    return None if tile is None else parse(Tile, tile, 'tile').check_multiple(multiple)


def restore(net, lq, tile=None, scale=1, multiple=1):
    """``net(lq)`` for ``lq`` of any size: reflect-padded to sides that are multiples of ``multiple`` (the network's
    ``size_multiple``), tile by tile with a ``Tile`` (None: one pass), cropped back to ``scale`` times the
    input."""
    h, w = lq.shape[-2:]
    lq = pad_to_multiple(lq, multiple)
    output = (check_scale(net(lq), lq, scale) if tile is None else
              tiled_forward(net, lq, tile.tile_size, tile.tile_pad, scale=scale))
    return output[..., :h * scale, :w * scale]


class TiledTestMixin:
    """Gives a BasicSR ``SRModel`` the top-level ``tile`` option and images of any size: ``test()`` pads to the
    sides ``network_g`` accepts and restores tile by tile (with the EMA network when there is one, as
    ``SRModel.test`` does); the option is checked when the model is built."""

    def __init__(self, opt):
        self.size_multiple = size_multiple(opt['network_g'])
        self.tile = parse_tile(opt.get('tile'), self.size_multiple)
        super().__init__(opt)

    def test(self):
        net = getattr(self, 'net_g_ema', self.net_g)
        training = net.training
        net.eval()
        with torch.no_grad():
            self.output = restore(net, self.lq, self.tile, self.opt.get('scale', 1), self.size_multiple)
        net.train(training)
