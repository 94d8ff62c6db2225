"""A bounded external archive of the non-dominated solutions an EA finds: the external population EP of MOEA/D
(Zhang & Li, 2007), so the front reported never loses a point the working population replaced. Two objectives,
minimised; members are (state dict, objectives) pairs the caller offers, copied on entry.
"""
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

State = Mapping[str, Tensor]


def interior_contributions(F: Tensor) -> Tensor:
    """Exclusive hypervolume of each interior point of a 2-D front ``F [N, 2]`` sorted by the first objective
    (so the second descends): the rectangle only it dominates, ``(f0[k+1] - f0[k]) * (f1[k-1] - f1[k])``. It needs
    no reference point, which only bounds the two extremes' slabs."""
    return (F[2:, 0] - F[1:-1, 0]) * (F[:-2, 1] - F[1:-1, 1])


class Archive:
    """The mutually non-dominated solutions offered so far, at most ``size`` of them, sorted by the first objective.

    Over ``size``, the interior member with the smallest exclusive hypervolume leaves; the two extremes (best first
    and best second objective) always stay. So an offer never lowers the hypervolume, for any reference point the
    members dominate, unless it is a new extreme of a full archive (a new extreme always enters: it is the best seen
    on one objective; the member adding least leaves for it). Non-finite objectives are never taken.
    """

    def __init__(self, size: int = 10):
        if size < 2:
            raise ValueError(f'the archive needs room for its two extremes, got size {size}')
        self.size = size
        self.states: list[dict[str, Tensor]] = []
        self.F = torch.empty(0, 2, dtype=torch.float64)

    def __len__(self) -> int:
        return len(self.states)

    def offer(self, state: State, f) -> bool:
        """Take a copy of ``state`` with objectives ``f`` unless a member is no worse on both; members ``f``
        dominates leave. Returns whether it is a member afterwards."""
        f = torch.as_tensor(f, dtype=torch.float64).cpu()
        if f.shape != (2, ):
            raise ValueError(f'the archive holds two objectives, got shape {tuple(f.shape)}')
        if not f.isfinite().all() or (self.F <= f).all(1).any():
            return False
        keep = (~(f <= self.F).all(1)).tolist()
        states = [s for s, kept in zip(self.states, keep) if kept] + [{k: v.clone() for k, v in state.items()}]
        F = torch.cat((self.F[keep], f[None]))
        order = F[:, 0].argsort(stable=True).tolist()
        states, F = [states[k] for k in order], F[order]
        newcomer = order.index(len(order) - 1)
        if len(states) > self.size:  # one over at most: one came in
            leaving = 1 + interior_contributions(F).argmin().item()
            newcomer = None if leaving == newcomer else newcomer - (leaving < newcomer)
            del states[leaving]
            F = torch.cat((F[:leaving], F[leaving + 1:]))
        self.states, self.F = states, F
        return newcomer is not None

    def load(self, states: Sequence[State], F: Tensor) -> None:
        """Restore members saved from ``states`` and ``F`` (e.g. from a checkpoint), exactly as they were."""
        F = torch.as_tensor(F, dtype=torch.float64).cpu()
        if F.shape != (len(states), 2) or len(states) > self.size:
            raise ValueError(f'{len(states)} archived states with objectives of shape {tuple(F.shape)} for an '
                             f'archive of size {self.size}')
        self.states, self.F = [dict(s) for s in states], F.clone()
