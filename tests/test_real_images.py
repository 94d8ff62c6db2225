"""Real images through datasets, models, the evaluation and inference: grey, RGBA, 16-bit, and sides that are not
multiples of the scale or of what the arch accepts. Each is restored as a reference computed here by hand (reflect
pad, forward, crop) or refused with a message that names the file."""
import os

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from basicsr.archs import build_network
from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.metrics import calculate_psnr
from basicsr.models import build_model
from basicsr.utils import tensor2img
from scripts_loader import load_script

from basicsr_ea.archs.arch_util import size_multiple
from basicsr_ea.evaluation import run_evaluation
from basicsr_ea.inference import Restorer
from builders import BACKBONES, NARROW, model_options

RRDB_X2 = dict(BACKBONES['RRDBNet'], scale=2)  # pixel-unshuffles its input: sides must be even
SWINIR_X2 = dict(BACKBONES['SwinIR'], ape=False)  # 4x4 windows: sides must be multiples of 4


def random_image(shape, dtype=np.uint8, seed=0):
    return np.random.default_rng(seed).integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)


def save_checkpoint(network, path, seed=0):
    torch.manual_seed(seed)
    net = build_network(dict(network)).eval()
    torch.save({'params': net.state_dict()}, path)
    return net


@torch.no_grad()
def by_hand(net, color, multiple, scale):
    """Reference restoration of a BGR float image: reflect pad to the multiple, forward, crop, back to BGR."""
    lq = torch.from_numpy(color[..., ::-1].copy()).permute(2, 0, 1)[None]
    h, w = lq.shape[-2:]
    out = net(F.pad(lq, (0, -w % multiple, 0, -h % multiple), mode='reflect'))[..., :h * scale, :w * scale]
    return out[0].permute(1, 2, 0).numpy()[..., ::-1].clip(0, 1)


def test_size_multiples_of_the_archs():
    assert [size_multiple(net) for net in (RRDB_X2, dict(RRDB_X2, scale=1), BACKBONES['RRDBNet'], SWINIR_X2,
                                           {'type': 'MEASNet'}, {'type': 'PopulationFusion', 'backbone': RRDB_X2})] \
        == [2, 4, 1, 4, 1, 2]


@pytest.mark.parametrize('network', [RRDB_X2, SWINIR_X2], ids=['RRDBNet_x2', 'SwinIR'])
def test_models_restore_sides_the_arch_does_not_accept(network):
    torch.manual_seed(0)
    model = build_model(dict(model_options(dict(network)), scale=2))
    lq = torch.rand(1, 3, 13, 18)
    with pytest.raises((RuntimeError, AssertionError)):  # what BasicSR's own SRModel.test does with it
        model.net_g(lq)
    model.feed_data({'lq': lq})
    model.test()
    assert model.output.shape == (1, 3, 26, 36)
    expected = by_hand(model.net_g, lq[0].permute(1, 2, 0).numpy()[..., ::-1], size_multiple(network), 2)
    np.testing.assert_allclose(model.output[0].permute(1, 2, 0).numpy()[..., ::-1].clip(0, 1), expected, atol=1e-6)


def test_tile_size_off_the_arch_multiple_is_refused():
    with pytest.raises(ValueError, match='tile.tile_size: must be a multiple of 4 for this network'):
        build_model(dict(model_options(dict(SWINIR_X2)), scale=2, tile={'tile_size': 10, 'tile_pad': 2}))


def write_pair(root, name, gt, lq):
    for sub, img in (('gt', gt), ('lq', lq)):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
        cv2.imwrite(os.path.join(root, sub, name), img)
    return os.path.join(root, 'gt'), os.path.join(root, 'lq')


def test_datasets_read_16_bit_and_grey_pairs_at_full_precision(tmp_path, pipeline_repairs):
    gt16, lq_grey = random_image((16, 16, 3), np.uint16), random_image((8, 8))
    gt, lq = write_pair(str(tmp_path), 'a.png', gt16, lq_grey)
    data = PairedImageDataset({'name': 'real', 'dataroot_gt': gt, 'dataroot_lq': lq, 'io_backend': {'type': 'disk'},
                               'scale': 2, 'phase': 'val'})[0]
    np.testing.assert_array_equal(data['gt'].numpy(), gt16[..., ::-1].transpose(2, 0, 1) / np.float32(65535))
    np.testing.assert_array_equal(data['lq'].numpy(), np.stack([lq_grey / np.float32(255)] * 3))


def test_transparent_image_in_a_dataset_names_the_file(tmp_path, pipeline_repairs):
    lq = random_image((8, 8, 4))
    lq[..., 3] = 0
    gt_folder, lq_folder = write_pair(str(tmp_path), 'a.png', random_image((16, 16, 3)), lq)
    dataset = PairedImageDataset({'name': 'real', 'dataroot_gt': gt_folder, 'dataroot_lq': lq_folder,
                                  'io_backend': {'type': 'disk'}, 'scale': 2, 'phase': 'val'})
    with pytest.raises(ValueError, match=f'LQ {lq_folder}/a.png / GT {gt_folder}/a.png: the image has transparent'):
        dataset[0]


def evaluation_options(checkpoint, root, network=RRDB_X2):
    return {'name': 'real', 'scale': 2, 'device': 'cpu', 'metrics': {'lpips': None, 'dists': None, 'niqe': None},
            'models': [{'label': 'rrdb', 'network': dict(network), 'checkpoint': checkpoint}],
            'datasets': {'real': {'dataroot_gt': os.path.join(root, 'gt'), 'dataroot_lq': os.path.join(root, 'lq')}}}


def test_evaluation_measures_16_bit_grey_and_odd_sized_images(tmp_path):
    checkpoint = str(tmp_path / 'rrdb.pth')
    net = save_checkpoint(RRDB_X2, checkpoint)
    root = str(tmp_path / 'set')
    images = {'grey.png': (random_image((27, 35), seed=1), random_image((13, 17), seed=2)),  # GT sides odd
              'deep.png': (random_image((26, 22, 3), np.uint16, 3), random_image((13, 11, 3), np.uint16, 4))}
    for name, (gt, lq) in images.items():
        write_pair(root, name, gt, lq)
    table = run_evaluation(evaluation_options(checkpoint, root), progress=False)
    psnr = []
    for gt, lq in images.values():
        max_value = np.iinfo(lq.dtype).max
        color = np.atleast_3d(lq).astype(np.float32) / max_value
        sr = by_hand(net, np.ascontiguousarray(np.broadcast_to(color, (*lq.shape[:2], 3))), 2, 2)
        gt = np.broadcast_to(np.atleast_3d(gt), (*gt.shape[:2], 3))[:lq.shape[0] * 2, :lq.shape[1] * 2]
        gt_8bit = tensor2img(torch.from_numpy(gt[..., ::-1] / np.float32(np.iinfo(gt.dtype).max)).permute(2, 0, 1))
        sr_8bit = tensor2img(torch.from_numpy(sr[..., ::-1].copy()).permute(2, 0, 1))
        psnr.append(calculate_psnr(sr_8bit, gt_8bit, crop_border=2, test_y_channel=True))
    assert table.value('rrdb', 'real', 'psnr') == pytest.approx(np.mean(psnr), abs=1e-3)


def test_evaluation_refuses_a_transparent_image_before_any_network_runs(tmp_path):
    checkpoint = str(tmp_path / 'rrdb.pth')
    save_checkpoint(RRDB_X2, checkpoint)
    lq = random_image((8, 8, 4))
    lq[2, 2, 3] = 10
    root = str(tmp_path / 'set')
    write_pair(root, 'a.png', random_image((16, 16, 3)), lq)
    with pytest.raises(ValueError, match=f"{os.path.join(root, 'lq', 'a.png')}: the image has transparent pixels"):
        run_evaluation(evaluation_options(checkpoint, root), progress=False)


def inference_options(network, checkpoint, scale, **extra):
    return {'network_g': dict(network), 'scale': scale, 'path': {'pretrain_network_g': checkpoint}, **extra}


@pytest.mark.parametrize('shape, dtype', [((13, 17), np.uint8), ((13, 17, 4), np.uint8), ((13, 17, 3), np.uint16),
                                          ((13, 17), np.uint16)], ids=['grey', 'rgba', '16bit', '16bit_grey'])
def test_inference_writes_the_format_it_read(shape, dtype, tmp_path):
    checkpoint = str(tmp_path / 'rrdb.pth')
    net = save_checkpoint(RRDB_X2, checkpoint)
    img = random_image(shape, dtype)
    in_path, out_path = str(tmp_path / 'in.png'), str(tmp_path / 'out.png')
    cv2.imwrite(in_path, img)
    Restorer.from_options(inference_options(RRDB_X2, checkpoint, 2), device='cpu').restore_file(in_path, out_path)
    out = cv2.imread(out_path, cv2.IMREAD_UNCHANGED)
    assert out.dtype == dtype and out.shape == (26, 34, *shape[2:])
    max_value = np.iinfo(dtype).max
    color = np.atleast_3d(img)[..., :3].astype(np.float32) / max_value
    restored = by_hand(net, np.ascontiguousarray(np.broadcast_to(color, (13, 17, 3))), 2, 2)
    if len(shape) == 2:
        restored = cv2.cvtColor(restored.astype(np.float32), cv2.COLOR_BGR2GRAY)
    np.testing.assert_allclose(np.atleast_3d(out)[..., :3].astype(np.float64), np.atleast_3d(restored) * max_value,
                               atol=0.5 + 1e-3 * max_value / 255)
    if shape[-1] == 4:
        alpha = cv2.resize(img[..., 3].astype(np.float32) / 255, (34, 26), interpolation=cv2.INTER_CUBIC)
        np.testing.assert_array_equal(out[..., 3], np.round(np.clip(alpha, 0, 1) * 255).astype(np.uint8))


def test_inference_carries_the_alpha_through_unchanged_at_scale_1(tmp_path):
    checkpoint = str(tmp_path / 'measnet.pth')
    save_checkpoint({'type': 'MEASNet', **NARROW}, checkpoint)
    img = random_image((21, 30, 4), np.uint16)
    in_path, out_path = str(tmp_path / 'in.png'), str(tmp_path / 'out.png')
    cv2.imwrite(in_path, img)
    restorer = Restorer.from_options(inference_options({'type': 'MEASNet', **NARROW}, checkpoint, 1,
                                                       tile={'tile_size': 16, 'tile_pad': 4}), device='cpu')
    restorer.restore_file(in_path, out_path)
    out = cv2.imread(out_path, cv2.IMREAD_UNCHANGED)
    assert out.shape == img.shape and out.dtype == np.uint16
    np.testing.assert_array_equal(out[..., 3], img[..., 3])
    assert not np.array_equal(out[..., :3], img[..., :3])


def run_inference(argv):
    with pytest.raises(SystemExit) as exit_info:
        load_script('inference').main(argv)
    return str(exit_info.value)


def write_options(tmp_path, opt):
    path = str(tmp_path / 'net.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f)
    return path


def test_inference_script_restores_a_folder(tmp_path, capsys):
    checkpoint = str(tmp_path / 'rrdb.pth')
    save_checkpoint(RRDB_X2, checkpoint)
    folder = tmp_path / 'photos'
    folder.mkdir()
    for name, shape in (('a.png', (9, 11, 3)), ('b.jpg', (12, 10, 3)), ('c.png', (7, 7))):
        cv2.imwrite(str(folder / name), random_image(shape))
    opt_path = write_options(tmp_path, inference_options(RRDB_X2, checkpoint, 2))
    load_script('inference').main(['-opt', opt_path, '-i', str(folder), '-o', str(tmp_path / 'out'),
                                   '--suffix', '_x2', '--tile_size', '6', '--tile_pad', '2'])
    assert sorted(os.listdir(tmp_path / 'out')) == ['a_x2.png', 'b_x2.jpg', 'c_x2.png']
    assert cv2.imread(str(tmp_path / 'out' / 'c_x2.png'), cv2.IMREAD_UNCHANGED).shape == (14, 14)
    assert capsys.readouterr().out.count(' -> ') == 3


@pytest.mark.parametrize('change, message', [
    (lambda opt, tmp: opt.update(scale=1), 'turned a 10x10 input into 20x20, not x1: does the scale option match'),
    (lambda opt, tmp: opt['path'].update(pretrain_network_g=str(tmp / 'missing.pth')), 'missing.pth not found'),
    (lambda opt, tmp: opt['path'].pop('pretrain_network_g'), 'No checkpoint: give --checkpoint'),
    (lambda opt, tmp: opt['network_g'].update(num_in_ch=1), 'network_g takes 1 input channels'),
    (lambda opt, tmp: opt.update(tile={'tile_size': 7, 'tile_pad': 2}), 'tile_size: must be a multiple of 2'),
    (lambda opt, tmp: opt['network_g'].update(num_feat=16), 'does not fit this RRDBNet'),
])
def test_inference_script_errors_say_what_is_wrong(change, message, tmp_path):
    checkpoint = str(tmp_path / 'rrdb.pth')
    save_checkpoint(RRDB_X2, checkpoint)
    cv2.imwrite(str(tmp_path / 'a.png'), random_image((9, 9, 3)))
    opt = inference_options(RRDB_X2, checkpoint, 2)
    change(opt, tmp_path)
    error = run_inference(['-opt', write_options(tmp_path, opt), '-i', str(tmp_path / 'a.png'), '-o',
                           str(tmp_path / 'out')])
    assert error.startswith('error: ') and message in error
