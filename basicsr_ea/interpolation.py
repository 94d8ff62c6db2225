"""Network interpolation (Wang et al., "Deep Network Interpolation for Continuous Imagery Effect Transition", CVPR
2019; ESRGAN's ``net_interp.py``): theta = (1 - alpha) theta_a + alpha theta_b between two networks of one arch, the
perception-distortion baseline EA-Adam's front is compared with. Here as a pure function of two state dicts; the
entry point is ``scripts/interpolate.py``."""
import torch


class InterpolationError(ValueError):
    """Two state dicts that are not the same network; the message names the first key that differs."""


def check_interpolable(state_a, state_b):
    """Raise unless ``state_a`` and ``state_b`` have the same keys, and per key the same shape and dtype; integer
    and bool tensors (index buffers, masks) must be equal, since they are part of the arch and cannot be mixed."""
    only_a, only_b = sorted(state_a.keys() - state_b.keys()), sorted(state_b.keys() - state_a.keys())
    if only_a or only_b:
        raise InterpolationError(f'the networks have other keys: {len(only_a)} only in the first {only_a[:3]}, '
                                 f'{len(only_b)} only in the second {only_b[:3]}: not the same arch')
    for key, a in state_a.items():
        b = state_b[key]
        if a.shape != b.shape:
            raise InterpolationError(f'{key} has shape {tuple(a.shape)} in the first network, {tuple(b.shape)} in '
                                     'the second: not the same arch or size')
        if a.dtype != b.dtype:
            raise InterpolationError(f'{key} is {a.dtype} in the first network, {b.dtype} in the second')
        if not a.is_floating_point() and not torch.equal(a, b):
            raise InterpolationError(f'{key} ({a.dtype}) differs between the networks: an integer buffer of the '
                                     'arch cannot be interpolated')


def interpolate_states(state_a, state_b, alpha):
    """``(1 - alpha) * state_a + alpha * state_b`` per floating-point tensor, for ``alpha`` in [0, 1] (outside is
    extrapolation, not this baseline); integer tensors are copied. ``torch.lerp`` is exact at both ends, so alpha 0
    and 1 give the inputs bit for bit."""
    if not 0 <= alpha <= 1:
        raise InterpolationError(f'alpha must be in [0, 1], got {alpha}')
    check_interpolable(state_a, state_b)
    return {key: torch.lerp(a, state_b[key], alpha) if a.is_floating_point() else a.clone()
            for key, a in state_a.items()}
