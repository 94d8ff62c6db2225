"""Tiled inference: restore an image larger than memory allows in one pass, tile by tile.

Tiles overlap by ``overlap`` input pixels and are blended with weights that ramp linearly across each overlap, so
there is no visible seam. For a network whose receptive field is smaller than the overlap (convolutional SR
networks), every output pixel covered by one tile only equals the single-pass output exactly; networks with global
operations (MEASNet's task prompt and channel attention) see each tile as an image of its own.
"""
import torch


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
            out = net(lq[..., top:top + tile_h, left:left + tile_w])
            if output is None:
                output = lq.new_zeros(b, out.shape[1], h * scale, w * scale)
            weight = torch.outer(
                blend_weights(tile_h * scale, overlap * scale, top > 0, top + tile_h < h),
                blend_weights(tile_w * scale, overlap * scale, left > 0, left + tile_w < w)).to(out)
            rows, cols = slice(top * scale, (top + tile_h) * scale), slice(left * scale, (left + tile_w) * scale)
            output[..., rows, cols] += out * weight
            weights[..., rows, cols] += weight
    return output / weights
