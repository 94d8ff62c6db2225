"""Collapse a trained population-fusion network into one plain backbone checkpoint.

    python scripts/collapse_fusion.py -opt options/train_Fusion_x4.yml \\
        --checkpoint experiments/Fusion_RRDB_x4/models/net_g_latest.pth \\
        --calib datasets/DIV2K/DIV2K_valid_LR_bicubic/X4 --out experiments/Fusion_RRDB_x4/RRDB_fused_x4.pth

Runs the fused network (``network_g`` of the options, routers from --checkpoint) over every image of --calib, one at a
time in name order, averages each layer's mixing weights over them and writes ``{'params': state_dict}`` of the
backbone arch (``network_g.backbone``): BasicSR's own ``SRModel`` loads it with ``pretrain_network_g``, so deployment
costs one backbone. Relative paths in the options are read from the working directory, as BasicSR's are.
"""
import argparse
import os

import torch
import yaml

import basicsr_ea  # noqa: F401  (repairs BasicSR, registers PopulationFusion)
from basicsr.archs import build_network
from basicsr.utils import img2tensor, scandir
from basicsr_ea.archs.arch_util import pad_to_multiple, size_multiple
from basicsr_ea.image_formats import IMAGE_EXTENSIONS, read_image
from basicsr_ea.checkpoints import build_and_load, save_checkpoint
from basicsr_ea.cli import run
from basicsr_ea.utils import resolve_device


def calibration_images(folder):
    """The image files of ``folder`` (recursively), sorted by path so the result does not depend on the file system."""
    paths = sorted(os.path.join(folder, p) for p in scandir(folder, suffix=IMAGE_EXTENSIONS, recursive=True))
    if not paths:
        raise FileNotFoundError(f'no calibration images ({", ".join(IMAGE_EXTENSIONS)}) in {folder}')
    return paths


def fusion_options(opt_path):
    """``network_g`` of the options, checked to be a PopulationFusion."""
    with open(opt_path, encoding='utf-8') as f:
        net_opt = yaml.safe_load(f)['network_g']
    if net_opt['type'] != 'PopulationFusion':
        raise ValueError(f'{opt_path}: network_g is a {net_opt["type"]}, not a PopulationFusion')
    return net_opt


def load_fusion(opt_path, checkpoint, param_key='params', device='cpu'):
    """The fused network of the options with the trained routers of ``checkpoint``, in eval mode."""
    return build_and_load(fusion_options(opt_path), checkpoint, param_key).to(device)


@torch.no_grad()
def calibrate(net, image_paths, multiple=1, device='cpu'):
    """``{site: mean mixing weights (K,)}`` of ``net`` over the images (colour in [0, 1] at full bit depth, alpha
    left out), each padded to sides that are multiples of ``multiple`` (the backbone's ``size_multiple``)."""
    with net.calibration() as calibration:
        for path in image_paths:
            color, _, _ = read_image(path)
            net(pad_to_multiple(img2tensor(color, bgr2rgb=True, float32=True)[None].to(device), multiple))
    return calibration.mean_weights()


def collapse_fusion(opt_path, checkpoint, calib, out, param_key='params', device='cpu'):
    """Write the collapsed backbone to ``out`` (atomically); returns the per-site mean weights it used."""
    net = load_fusion(opt_path, checkpoint, param_key, device)
    weights = calibrate(net, calibration_images(calib), size_multiple(fusion_options(opt_path)), device)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_checkpoint({'params': net.collapsed_state_dict(weights)}, out)
    return weights


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('-opt', required=True, help='the fusion options (network_g: PopulationFusion)')
    parser.add_argument('--checkpoint', required=True, help='trained fusion net_g checkpoint')
    parser.add_argument('--calib', required=True, help='folder of LR calibration images')
    parser.add_argument('--out', required=True, help='where to write the collapsed backbone checkpoint')
    parser.add_argument('--param_key', default='params', help='params, or params_ema for an EMA run')
    parser.add_argument('--device', default='auto', help='auto (CUDA when available), cpu, cuda, cuda:1, ...')
    parser.add_argument('--debug', action='store_true', help='tracebacks instead of one-line errors')
    args = parser.parse_args(argv)
    weights = run(lambda: collapse_fusion(args.opt, args.checkpoint, args.calib, args.out, args.param_key,
                                          resolve_device(args.device)), argv)
    print(f'{len(weights)} sites averaged; collapsed backbone written to {args.out}')


if __name__ == '__main__':
    main()
