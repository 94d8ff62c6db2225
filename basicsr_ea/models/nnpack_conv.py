"""NNPACK's fast 3x3 convolutions for gradient-free forwards on CPU: where the EA phase spends its time.

A child's fitness is one forward of the generator and one of the perceptual network, with no gradient, and 95% of that
is 3x3 convolutions. PyTorch ships NNPACK (Winograd / FFT-based tiles) but only routes to it in narrow cases; this
mode routes the convolutions where it measured faster than the direct (oneDNN) kernel on the 2-core CPU, at either
memory layout: at least ``MIN_CHANNELS`` input channels and ``MIN_SIDE`` pixels a side, 1 thread 1.15-1.74x, 2 threads
0.99-1.40x (64 to 512 channels, 16 to 128 px). Below that (an RGB input, VGG's 8 px conv5, the demo's 16-channel
nets) NNPACK was slower (0.3-0.9x) and the call passes through. Values differ from the direct kernel's by float
rounding of the transform, at most 1.1e-5 of a layer's largest output (direct: 1.2e-6), which leaves the fitness
objectives equal to about 1e-7 relative (``tests/test_fitness.py``).
"""
import torch
from torch.overrides import TorchFunctionMode

MIN_CHANNELS = 64
MIN_SIDE = 16


def nnpack_usable():
    """Whether this PyTorch build has NNPACK for this CPU. The check also initialises NNPACK, which every call needs."""
    return torch.backends.nnpack.is_available()


def nnpack_eligible(x, weight, stride, padding, dilation, groups):
    """Whether ``conv2d(x, weight, ...)`` is one that NNPACK computes, and computes faster (see the module docstring).

    NNPACK takes float32 CPU tensors with unit stride and dilation, no groups, a numeric padding, and no gradient."""
    if isinstance(padding, str):  # 'same' / 'valid': left to PyTorch
        return False
    pad = _pair(padding)
    return (x.dim() == 4 and x.device.type == 'cpu' and x.dtype == torch.float32 == weight.dtype
            and tuple(weight.shape[2:]) == (3, 3) and groups == 1 and not torch.is_grad_enabled()
            and _pair(stride) == (1, 1) and _pair(dilation) == (1, 1)
            and len(pad) == 2 and all(0 <= p <= 2 for p in pad)
            and x.shape[1] >= MIN_CHANNELS and min(x.shape[2:]) >= MIN_SIDE)


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


class NNPACKConvolutions(TorchFunctionMode):
    """Within this mode, eligible ``conv2d`` calls (``nn.Conv2d`` goes through them) run on NNPACK.

    Any other call passes through to PyTorch unchanged."""

    def __init__(self):
        super().__init__()
        if not nnpack_usable():
            raise RuntimeError('this PyTorch build has no NNPACK for this CPU (torch.backends.nnpack.is_available())')

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.conv2d:
            call = dict(zip(('input', 'weight', 'bias', 'stride', 'padding', 'dilation', 'groups'), args), **kwargs)
            x, weight = call['input'], call['weight']
            stride, padding = call.get('stride', 1), call.get('padding', 0)
            dilation, groups = call.get('dilation', 1), call.get('groups', 1)
            if nnpack_eligible(x, weight, stride, padding, dilation, groups):
                return torch._nnpack_spatial_convolution(x.contiguous(), weight.contiguous(), call.get('bias'),
                                                         list(_pair(padding)))
        return func(*args, **kwargs)
