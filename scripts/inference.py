"""Restore image files (a file or a folder) with a trained network, keeping each file's format.

    python scripts/inference.py -opt options/test_MEASNet_3task.yml -i photos/ -o results/photos \\
        [--checkpoint net_g.pth] [--tile_size 256 --tile_pad 32] [--suffix _out] [--ext .png] [--device cpu] \\
        [--overwrite_inputs] [--debug]

The network is ``network_g`` of the options (any train or test options file), its weights
``path.pretrain_network_g`` (``param_key_g``) unless --checkpoint names another file, ``scale`` and ``tile`` from
the options unless given here. Grey images are written grey, an alpha channel is carried through (resized
bicubically when the network upscales), 16-bit PNG/TIFF stay 16-bit; sides that are not a multiple of what the arch
needs are padded and cropped back. An output that would overwrite an input is refused (unless --overwrite_inputs);
each output is written atomically; an image that cannot be read is skipped with a message, and the exit code is 1
when any was. Relative paths are read from the working directory, as BasicSR's are.
"""
import argparse
import os
import sys

import yaml

import basicsr_ea  # noqa: F401  (repairs BasicSR's import, registers the plugin's archs)
from basicsr_ea.cli import run
from basicsr_ea.inference import Restorer, input_files, plan_outputs, restore_files


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('-opt', required=True, help='options with network_g (e.g. options/test_MEASNet_3task.yml)')
    parser.add_argument('-i', '--input', required=True, help='an image file or a folder of images')
    parser.add_argument('-o', '--output', required=True, help='output folder')
    parser.add_argument('--checkpoint', help='weights to load instead of path.pretrain_network_g')
    parser.add_argument('--tile_size', type=int, help='restore tile by tile (LR pixels); overrides the options')
    parser.add_argument('--tile_pad', type=int, default=32, help='overlap of neighbouring tiles (with --tile_size)')
    parser.add_argument('--suffix', default='', help='appended to each output file name')
    parser.add_argument('--ext', help='output extension (default: the input\'s), e.g. .png')
    parser.add_argument('--device', default='auto', help='auto (CUDA when available), cpu, cuda, cuda:1, ...')
    parser.add_argument('--overwrite_inputs', action='store_true', help='allow outputs to replace input files')
    parser.add_argument('--debug', action='store_true', help='tracebacks instead of one-line errors')
    return parser.parse_args(argv)


def restore(args):
    if not os.path.isfile(args.opt):
        raise FileNotFoundError(f'options file {args.opt} not found.')
    with open(args.opt, encoding='utf-8') as f:
        opt = yaml.safe_load(f)
    if args.tile_size is not None:
        opt['tile'] = {'tile_size': args.tile_size, 'tile_pad': args.tile_pad}
    pairs = plan_outputs(input_files(args.input), args.output, args.suffix, args.ext, args.overwrite_inputs)
    restorer = Restorer.from_options(opt, args.checkpoint, args.device)
    os.makedirs(args.output, exist_ok=True)
    failed = restore_files(restorer, pairs)
    if failed:
        sys.exit(f'error: {len(failed)} of {len(pairs)} images could not be restored (see above).')


def main(argv=None):
    run(lambda: restore(parse_args(argv)), argv)


if __name__ == '__main__':
    main()
