"""Pareto fronts and the two-objective hypervolume, to report how the population spreads (minimisation)."""
import torch
from torch import Tensor


def _dominance(F: Tensor) -> Tensor:
    """``[N, N]`` bool: row i dominates row j (no worse anywhere, better somewhere)."""
    no_worse = (F[:, None, :] <= F[None, :, :]).all(-1)
    better = (F[:, None, :] < F[None, :, :]).any(-1)
    return no_worse & better


def non_dominated_sort(F: Tensor) -> list[list[int]]:
    """Indices of ``F [N, n_obj]`` grouped into fronts, the non-dominated first, each front in ascending order."""
    dom = _dominance(F)
    n_dominators = dom.sum(0)
    remaining = torch.ones(F.shape[0], dtype=torch.bool)
    fronts = []
    while remaining.any():
        front = remaining & (n_dominators == 0)
        fronts.append(front.nonzero().flatten().tolist())
        remaining &= ~front
        n_dominators -= dom[front].sum(0)
    return fronts


def hypervolume_2d(F: Tensor, ref_point) -> float:
    """Exact area dominated by ``F [N, 2]`` and bounded by ``ref_point``; points not strictly better than the
    reference in both objectives add nothing."""
    ref = torch.as_tensor(ref_point, dtype=torch.float64)
    F = F.to(torch.float64)
    points = F[(F < ref).all(-1)].tolist()
    volume, best_f1 = 0.0, ref[1].item()
    for f0, f1 in sorted(points):  # sweep by the first objective: each point adds the slab below the best f1 so far
        if f1 < best_f1:
            volume += (ref[0].item() - f0) * (best_f1 - f1)
            best_f1 = f1
    return volume
