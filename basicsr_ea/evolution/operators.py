"""Variation in weight space: simulated binary crossover (Deb & Agrawal, 1995) and Gaussian mutation.

Genomes are state dicts (name -> tensor). Every draw comes from the ``generator`` argument, on its device, so a seeded
generator makes the EA reproducible and resumable.
"""
from collections.abc import Collection, Mapping

import torch
from torch import Tensor


def _rand(shape, generator: torch.Generator, dtype=torch.float32) -> Tensor:
    return torch.rand(shape, generator=generator, device=generator.device, dtype=dtype)


def sbx_spread_factor(u: Tensor, eta: float) -> Tensor:
    """SBX spread factor beta for uniform draws ``u`` in [0, 1): contracting (< 1) below 0.5, expanding above;
    a larger ``eta`` keeps beta nearer 1, i.e. children nearer their parents."""
    exponent = 1.0 / (eta + 1.0)
    return torch.where(u <= 0.5, (2 * u).pow(exponent), (0.5 / (1 - u)).pow(exponent))


def cross_sbx(parent_a: Mapping[str, Tensor], parent_b: Mapping[str, Tensor], eta: float,
              generator: torch.Generator) -> dict[str, Tensor]:
    """The first SBX child ``((1 + beta) a + (1 - beta) b) / 2`` with one spread factor per tensor (so a layer
    moves as a whole); the second child is never needed by MOEA/D, so it is not computed."""
    betas = sbx_spread_factor(_rand(len(parent_a), generator, torch.float64), eta).tolist()
    # lerp(a, b, (1 - beta) / 2) is that child, and returns ``a`` bit for bit when beta == 1
    return {name: torch.lerp(a, parent_b[name], (1 - beta) / 2) for (name, a), beta in zip(parent_a.items(), betas)}


def mutate_gaussian(state: Mapping[str, Tensor], prob: float, std: float, generator: torch.Generator,
                    names: Collection[str] | None = None) -> dict[str, Tensor]:
    """A copy of ``state`` where each element of the tensors ``names`` (default: all) gets N(0, std^2) noise with
    probability ``prob``; the other tensors are the parent's, unchanged."""
    child = {}
    for name, tensor in state.items():
        if names is not None and name not in names:
            child[name] = tensor
            continue
        hit = _rand(tensor.shape, generator) < prob
        noise = torch.randn(tensor.shape, generator=generator, device=generator.device) * std
        child[name] = tensor + (noise * hit).to(tensor)
    return child
