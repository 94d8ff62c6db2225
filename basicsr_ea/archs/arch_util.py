"""What inference needs to know of an arch beyond its forward: the input sides it accepts and its input channels.

BasicSR's archs state neither: RRDBNet x2 and x1 pixel-unshuffle their input (sides must be even, or multiples of 4)
and SwinIR partitions it into windows (sides must be multiples of ``window_size``); BasicSR's ``SwinIRModel`` pads
for the one arch it knows. ``size_multiple`` reads it from the network options, so every model, the evaluation and
the inference script pad any image to what the arch needs (``pad_to_multiple``) and crop the output back.
"""
import torch.nn.functional as F

# Option keys under which BasicSR's archs, SwinIR and MEASNet take their number of input channels.
IN_CHANNEL_KEYS = ('num_in_ch', 'in_chans', 'inp_channels')


def size_multiple(network_opt):
    """The number the input sides must be a multiple of for the arch ``network_opt`` (``{type: ..., ...}``) builds:
    1 for archs that take any size (MEASNet pads to its own multiple of 8 inside)."""
    arch = network_opt['type']
    if arch == 'PopulationFusion':
        return size_multiple(network_opt['backbone'])
    if arch == 'RRDBNet':
        return {1: 4, 2: 2}.get(network_opt.get('scale', 4), 1)
    if arch == 'SwinIR':
        return network_opt.get('window_size', 7)
    return 1


def input_channels(network_opt):
    """Input channels of the arch ``network_opt`` builds (3 where its options do not say)."""
    if network_opt['type'] == 'PopulationFusion':
        return input_channels(network_opt['backbone'])
    return next((network_opt[key] for key in IN_CHANNEL_KEYS if key in network_opt), 3)


def pad_reflect(x, pad):
    """``F.pad`` in reflect mode, replicate where a side is too small to reflect ``pad`` pixels."""
    mode = 'reflect' if max(pad) < min(x.shape[-2:]) else 'replicate'
    return F.pad(x, pad, mode=mode)


def pad_to_multiple(x, multiple):
    """``x`` (..., H, W) reflect-padded at the bottom and right to sides that are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    if h % multiple == 0 and w % multiple == 0:
        return x
    return pad_reflect(x, (0, -w % multiple, 0, -h % multiple))
