"""Tiled inference equals the single pass away from the seams and stays seamless at them."""
import pytest
import torch
from basicsr.archs.rrdbnet_arch import RRDBNet
from basicsr.archs.srresnet_arch import MSRResNet

from basicsr_ea.tiling import blend_weights, tile_starts, tiled_forward


def test_tile_starts_cover_the_image_with_the_overlap():
    assert tile_starts(100, 40, 8) == [0, 32, 60]
    assert tile_starts(30, 40, 8) == [0]
    with pytest.raises(ValueError, match='overlap'):
        tile_starts(100, 40, 40)


def test_blend_weights_ramp_only_where_a_neighbour_is():
    assert blend_weights(6, 2, False, True).tolist() == pytest.approx([1, 1, 1, 1, 2 / 3, 1 / 3])
    assert blend_weights(6, 2, True, False).tolist() == pytest.approx([1 / 3, 2 / 3, 1, 1, 1, 1])


NETWORKS = {
    'MSRResNet': lambda: MSRResNet(num_feat=8, num_block=1, upscale=4),
    'RRDBNet': lambda: RRDBNet(3, 3, num_feat=8, num_block=1, num_grow_ch=4, scale=4),
}


@pytest.mark.parametrize('arch', NETWORKS)
def test_tiled_equals_single_pass_away_from_seams(arch):
    """The weights are fixed by the seed inside the test, so the bounds below hold on every run and in any order."""
    torch.manual_seed(0)
    net, scale = NETWORKS[arch]().eval(), 4
    lq = torch.rand(2, 3, 37, 53)
    with torch.no_grad():
        full = net(lq)
    tiled = tiled_forward(net, lq, tile_size=24, overlap=12, scale=scale)
    assert tiled.shape == full.shape
    # rows/cols covered by one tile only, with at least the receptive field of context from the tile's own pixels
    single_rows = slice(0, 12 * scale)
    single_cols = slice(0, 12 * scale)
    torch.testing.assert_close(tiled[..., single_rows, single_cols], full[..., single_rows, single_cols],
                               rtol=1e-5, atol=1e-5)
    error = (tiled - full).abs()
    assert error.max() < 0.05 * full.abs().max()
    # seamless: the largest jump between neighbouring output columns is no larger than in the single pass (+5%)
    assert (tiled.diff(dim=-1).abs().max()) <= 1.05 * full.diff(dim=-1).abs().max() + 1e-4


def test_one_tile_is_the_single_pass():
    torch.manual_seed(0)
    net = MSRResNet(num_feat=8, num_block=1, upscale=4).eval()
    lq = torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        torch.testing.assert_close(tiled_forward(net, lq, tile_size=64, overlap=8, scale=4), net(lq))
