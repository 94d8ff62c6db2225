"""Preference vectors, neighbourhoods and the Tchebycheff decomposition of MOEA/D (Zhang & Li, 2007)."""
import torch
from torch import Tensor


def das_dennis(n_partitions: int, n_obj: int) -> Tensor:
    """Every point of the unit simplex whose coordinates are multiples of 1 / n_partitions, first coordinate
    descending, as float64 ``[C(n_partitions + n_obj - 1, n_obj - 1), n_obj]``."""
    if n_partitions < 1 or n_obj < 1:
        raise ValueError(f'das_dennis needs n_partitions >= 1 and n_obj >= 1, got {n_partitions}, {n_obj}')

    def compositions(total, parts):
        if parts == 1:
            return [[total]]
        return [[first] + rest for first in range(total, -1, -1) for rest in compositions(total - first, parts - 1)]

    return torch.tensor(compositions(n_partitions, n_obj), dtype=torch.float64) / n_partitions


def uniform_ref_dirs(n_points: int) -> Tensor:
    """The paper's two-objective preferences ``w_i = (1 - i / (P - 1), i / (P - 1))``, as float64 ``[P, 2]``."""
    if n_points < 2:
        raise ValueError(f'uniform_ref_dirs needs at least 2 points, got {n_points}')
    return das_dennis(n_points - 1, 2)


def neighbors(ref_dirs: Tensor, n_neighbors: int) -> Tensor:
    """Indices ``[P, n_neighbors]`` of each preference's closest preferences (Euclidean), itself always first."""
    n_points = ref_dirs.shape[0]
    if not 1 <= n_neighbors <= n_points:
        raise ValueError(f'n_neighbors must lie in [1, {n_points}] for {n_points} ref_dirs, got {n_neighbors}')
    dist = (ref_dirs[:, None, :] - ref_dirs[None, :, :]).square().sum(-1)
    dist.fill_diagonal_(-1)  # self first even when another preference coincides with it
    return torch.argsort(dist, dim=1, stable=True)[:, :n_neighbors]


def tchebycheff(F: Tensor, ref_dirs: Tensor, ideal: Tensor, nadir: Tensor, eps: float = 1e-5) -> Tensor:
    """``max_k w_k |f_k - ideal_k| / (nadir_k - ideal_k + eps)`` over the last axis; ``F`` and ``ref_dirs``
    broadcast, so one objective vector can be scored under many preferences at once."""
    return (ref_dirs * (F - ideal).abs() / (nadir - ideal + eps)).amax(dim=-1)
