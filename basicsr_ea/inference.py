"""Restore image files with any registered network and checkpoint, each written in the format it came in: grey stays
grey, an alpha channel is carried through (resized with the image when the network upscales), 16-bit stays 16-bit,
and any size is restored (padded to the sides the arch accepts, tile by tile with the ``tile`` option).

BasicSR's test pipeline (``basicsr_ea/test.py``) reads and writes 8-bit colour only; this is for real photos.
Entry point: ``scripts/inference.py``.
"""
import os
from dataclasses import dataclass

import numpy as np
import torch
from basicsr.utils import img2tensor, scandir

from basicsr_ea.archs.arch_util import input_channels, size_multiple
from basicsr_ea.checkpoints import build_and_load
from basicsr_ea.image_formats import IMAGE_EXTENSIONS, check_writable, merge_image, read_image, write_image
from basicsr_ea.tiling import Tile, parse_tile, restore
from basicsr_ea.utils import resolve_device


@dataclass
class Restorer:
    """A network in eval mode with what restoring an image needs: its ``scale``, the ``tile`` option and the
    ``multiple`` its input sides must be."""
    net: torch.nn.Module
    scale: int
    tile: Tile | None
    multiple: int
    device: torch.device

    @classmethod
    def from_options(cls, opt, checkpoint=None, device=None):
        """From BasicSR options (``network_g``, ``scale``, ``tile``, ``path.pretrain_network_g``/``param_key_g``/
        ``strict_load_g``): a train or test options file of the network. ``checkpoint`` overrides the path."""
        network, path_opt = opt['network_g'], opt.get('path') or {}
        checkpoint = checkpoint or path_opt.get('pretrain_network_g')
        if not checkpoint:
            raise ValueError('No checkpoint: give --checkpoint or path.pretrain_network_g in the options.')
        if input_channels(network) != 3:
            raise ValueError(f'network_g takes {input_channels(network)} input channels; inference restores colour '
                             'networks (3 channels), which restore grey images as three equal channels.')
        multiple = size_multiple(network)
        tile = parse_tile(opt.get('tile'), multiple)
        device = resolve_device(device)
        net = build_and_load(network, checkpoint, path_opt.get('param_key_g', 'params'), path_opt.get('strict_load_g', True))
        return cls(net.to(device), int(opt.get('scale', 1)), tile, multiple, device)

    @torch.no_grad()
    def restore_color(self, color):
        """BGR float32 HxWx3 in [0, 1] -> the restored BGR float32 (scale H)x(scale W)x3."""
        lq = img2tensor(color, bgr2rgb=True, float32=True)[None].to(self.device)
        output = restore(self.net, lq, self.tile, self.scale, self.multiple)
        return np.ascontiguousarray(output[0].float().cpu().numpy().transpose(1, 2, 0)[..., ::-1])

    def restore_image(self, image, out_path):
        """Restore ``image`` (``read_image``'s colour, alpha, format) and write ``out_path`` in its format (checked
        writable first)."""
        color, alpha, image_format = image
        check_writable(out_path, image_format, alpha is not None)
        write_image(out_path, merge_image(self.restore_color(color), alpha, image_format))

    def restore_file(self, in_path, out_path):
        self.restore_image(read_image(in_path), out_path)


def input_files(path):
    """The image files of ``path`` (a file or a folder, not recursive), sorted."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f'Input {path} does not exist.')
    files = sorted(os.path.join(path, name) for name in scandir(path) if name.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise ValueError(f'Input folder {path} holds no image ({", ".join(IMAGE_EXTENSIONS)}).')
    return files


def output_path(in_path, output_folder, suffix='', ext=None):
    """``output_folder/<stem><suffix><ext>``; ``ext`` (``.png`` or ``png``) None keeps the input's extension."""
    stem, in_ext = os.path.splitext(os.path.basename(in_path))
    ext = in_ext if ext is None else f'.{ext.lstrip(".")}'
    return os.path.join(output_folder, f'{stem}{suffix}{ext}')


def plan_outputs(files, output_folder, suffix='', ext=None, overwrite_inputs=False):
    """``[(input, output)]`` for ``files``, refusing before any work an output that is one of the inputs (the
    user's photos; unless ``overwrite_inputs``) or the output of another input (``a.png`` and ``a.jpg`` with
    ``ext='.png'``)."""
    pairs = [(path, output_path(path, output_folder, suffix, ext)) for path in files]
    inputs = {os.path.realpath(path) for path in files}
    if not overwrite_inputs:
        for in_path, out_path in pairs:
            if os.path.realpath(out_path) in inputs:
                raise ValueError(f'the output {out_path} of {in_path} would overwrite an input image: write to '
                                 'another folder (-o), add a --suffix, or pass --overwrite_inputs.')
    seen = {}
    for in_path, out_path in pairs:
        other = seen.setdefault(os.path.realpath(out_path), in_path)
        if other != in_path:
            raise ValueError(f'{other} and {in_path} would both be written to {out_path}: keep their extensions '
                             '(no --ext) or add a --suffix.')
    return pairs


def restore_files(restorer, pairs, report=print):
    """Restore every ``(input, output)`` pair. An input that cannot be read (empty, corrupt, unsupported) is
    skipped, saying why, and the rest go on; anything else (the network, the options, a full disk) would fail for
    every image and stops. Returns the inputs that were skipped."""
    skipped = []
    for in_path, out_path in pairs:
        try:
            image = read_image(in_path)
        except (ValueError, OSError) as err:
            skipped.append(in_path)
            report(f'skipped {in_path}: {err}')
            continue
        restorer.restore_image(image, out_path)
        report(f'{in_path} -> {out_path}')
    return skipped
