"""Preference-weighted mixing of per-objective gradients, the Adam phase of EA-Adam."""
from collections.abc import Sequence

import torch
from torch import Tensor


def mix_normalized_gradients(grads_per_objective: Sequence[Sequence[Tensor]], weights: Sequence[float],
                             eps: float = 1e-7) -> list[Tensor]:
    """``sum_k weights[k] * g_k / (||g_k|| + eps)`` per parameter tensor.

    Normalising each objective's gradient by its own norm, tensor by tensor, makes the preference weights (not the
    losses' scales) decide the trade-off. Runs every iteration for every individual, hence the foreach kernels.
    A non-finite input gradient makes the corresponding mixed tensor non-finite.
    """
    if len(grads_per_objective) != len(weights):
        raise ValueError(f'{len(grads_per_objective)} objectives of gradients for {len(weights)} weights')
    mixed = None
    for grads, weight in zip(grads_per_objective, weights):
        scales = torch._foreach_norm(grads)
        torch._foreach_add_(scales, eps)
        torch._foreach_reciprocal_(scales)
        torch._foreach_mul_(scales, weight)
        term = torch._foreach_mul(grads, scales)
        if mixed is None:
            mixed = term
        else:
            torch._foreach_add_(mixed, term)
    return mixed
