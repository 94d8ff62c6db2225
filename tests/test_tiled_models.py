"""The top-level ``tile`` option: every model's validation/test and the evaluation restore through ``tiled_forward``
(the EMA network where there is one), close to the single pass away from seams; bad options are clear errors."""
import copy
from types import SimpleNamespace

import pytest
import torch
from basicsr.archs import build_network
from basicsr.metrics import calculate_metric
from basicsr.models import build_model
from basicsr.utils import tensor2img

from basicsr_ea.evaluation.inputs import build_metrics
from basicsr_ea.evaluation.runner import evaluate_dataset, prepare
from basicsr_ea.tiling import parse_tile, tiled_forward
from builders import BACKBONES, NARROW, in_process, model_options, tiny_fusion_options

TILE = {'tile_size': 24, 'tile_pad': 12}
SINGLE = slice(0, 12 * 4)  # output rows/cols covered by the first tile only (x4)


class ValLoader(list):
    """What ``nondist_validation`` reads of a dataloader: its batches, their count and the dataset's name."""
    dataset = SimpleNamespace(opt={'name': 'val'})


def lq_image(seed=0, height=40, width=56):
    return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(seed))


def allinone_model(run_files, tmp_path, tile=TILE):
    opt = model_options(dict(BACKBONES['MSRResNet']))
    opt.update(scale=4, tile=tile)
    opt['train']['ema_decay'] = 0.999
    return build_model(opt)


def fusion_model(run_files, tmp_path, tile=TILE):
    opt = in_process(tiny_fusion_options('unit', *run_files), tmp_path)
    opt['tile'] = tile
    opt['train']['ema_decay'] = 0.999
    return build_model(opt)


@pytest.mark.parametrize('build', [allinone_model, fusion_model])
def test_test_tiles_with_the_ema_network(build, run_files, tmp_path):
    model = build(run_files, tmp_path)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.net_g.parameters():  # the trained network now differs from its EMA
            p.add_(torch.randn(p.shape, generator=generator))
    lq = lq_image()
    model.feed_data({'lq': lq})
    model.test()
    assert model.net_g.training  # test() leaves the trained network as it found it
    expected = tiled_forward(model.net_g_ema, lq, 24, 12, scale=4)
    assert torch.equal(model.output, expected)
    assert not torch.allclose(tiled_forward(model.net_g, lq, 24, 12, scale=4), expected)
    with torch.no_grad():
        single_pass = model.net_g_ema(lq)
    torch.testing.assert_close(model.output[..., SINGLE, SINGLE], single_pass[..., SINGLE, SINGLE], rtol=1e-5,
                               atol=1e-5)


def test_ea_adam_validation_measures_each_individual_tiled(ea_opt):
    opt = copy.deepcopy(ea_opt)
    opt['tile'] = TILE
    model = build_model(opt)
    lq, gt = lq_image(1), torch.rand(1, 3, 160, 224, generator=torch.Generator().manual_seed(2))
    model.nondist_validation(ValLoader([{'lq': lq, 'gt': gt}]), 0, None, False)
    metric = opt['val']['metrics']['psnr']
    for i, net in enumerate(model.net_g):
        net.eval()
        tiled = calculate_metric({'img': tensor2img(tiled_forward(net, lq, 24, 12, 4)), 'img2': tensor2img(gt)},
                                 metric)
        with torch.no_grad():
            untiled = calculate_metric({'img': tensor2img(net(lq)), 'img2': tensor2img(gt)}, metric)
        assert model.val_results[f'psnr_{i}'] == pytest.approx(tiled)
        assert tiled == pytest.approx(untiled, abs=0.05)


def test_evaluation_measures_the_tiled_output():
    net = build_network(dict(BACKBONES['MSRResNet'])).eval()
    lq, gt = lq_image(3)[0], torch.rand(3, 160, 224, generator=torch.Generator().manual_seed(4))
    dataset = ValLoader([{'lq': lq, 'gt': gt}])
    metrics = build_metrics('sr', 4, {'lpips': None, 'dists': None, 'niqe': None})
    progress = SimpleNamespace(update=lambda n: None)
    values = evaluate_dataset(net, dataset, metrics, 'cpu', {}, progress, parse_tile(TILE), 4)
    sr_img = tensor2img(tiled_forward(net, lq[None], 24, 12, 4))
    for name, metric in metrics.items():
        assert values[name] == pytest.approx(calculate_metric({'img': sr_img, 'img2': tensor2img(gt)}, metric.opt))


def test_measnet_tiles_an_odd_sized_image_back_to_its_size():
    network_g = {'type': 'MEASNet', **NARROW, 'heads': [1, 1, 1, 1]}
    opt = model_options(network_g)
    opt['tile'] = {'tile_size': 64, 'tile_pad': 16}
    model = build_model(opt)
    lq = lq_image(5, 97, 131)
    model.feed_data({'lq': lq})
    model.test()
    assert model.output.shape == (1, 3, 97, 131)
    assert torch.equal(model.output, tiled_forward(model.net_g.eval(), lq, 64, 16))


@pytest.mark.parametrize('tile, message', [
    ({'tile_size': 64, 'tile_pad': 8, 'overlap': 8}, 'tile.overlap: unknown option'),
    ({'tile_size': 0, 'tile_pad': 0}, 'tile.tile_size: must be positive'),
    ({'tile_size': 32, 'tile_pad': 32}, r'tile.tile_pad: must lie in \[0, tile_size=32\)'),
    ({'tile_size': 64}, 'tile.tile_pad: required option missing'),
    ({'tile_size': 64.0, 'tile_pad': 8}, 'tile.tile_size: expected int'),
    (256, 'tile: expected a mapping'),
])
def test_bad_tile_options_are_clear_errors(tile, message, run_files, tmp_path):
    with pytest.raises(ValueError, match=message):
        parse_tile(tile)
    for build in (allinone_model, fusion_model):
        with pytest.raises(ValueError, match=message):
            build(run_files, tmp_path, tile)
    with pytest.raises(ValueError, match=message):
        prepare({'name': 'eval', 'models': [], 'datasets': {}, 'tile': tile})
