"""One generation of MOEA/D with Tchebycheff decomposition (Zhang & Li, 2007) over state-dict genomes.

Evaluation lives outside: the generation proposes children and the caller's ``evaluate`` returns their objectives
(minimisation). Ideal and nadir points come in and go out; nothing is kept between calls.
"""
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from basicsr_ea.evolution.archive import Archive
from basicsr_ea.evolution.decomposition import tchebycheff
from basicsr_ea.evolution.operators import cross_sbx, mutate_gaussian

State = Mapping[str, Tensor]


class Generation(NamedTuple):
    """The population after one generation; ``states`` are distinct dicts, never aliases of one another."""
    states: list[State]
    F: Tensor
    ideal: Tensor
    nadir: Tensor
    replacements: int


def _uniform(generator: torch.Generator) -> float:
    return torch.rand((), generator=generator, device=generator.device).item()


def _choice(options: Sequence[int], generator: torch.Generator) -> int:
    return options[torch.randint(len(options), (), generator=generator, device=generator.device).item()]


def ideal_nadir(F: Tensor) -> tuple[Tensor, Tensor]:
    """Per-objective best and worst of ``F [P, n_obj]``, ignoring non-finite values (a diverged individual)."""
    F = F.to(torch.float64)
    finite = F.isfinite()
    return F.where(finite, torch.inf).amin(0), F.where(finite, -torch.inf).amax(0)


def distinct_count(states: Sequence[State]) -> int:
    """How many of the genomes differ from every earlier one, bit for bit."""
    kept = []
    for state in states:
        if not any(all(torch.equal(state[k], other[k]) for k in state) for other in kept):
            kept.append(state)
    return len(kept)


def moead_generation(states: Sequence[State], F: Tensor, ref_dirs: Tensor, neighborhoods: Tensor, ideal: Tensor,
                     nadir: Tensor, evaluate: Callable[[State], Tensor], generator: torch.Generator,
                     frozen: Collection[int] = (), prob_crossover: float = 0.9, eta: float = 20.0,
                     prob_global_mate: float = 0.3, prob_mutation: float = 0.2, mutation_prob: float = 0.02,
                     mutation_std: float = 0.03, eps: float = 1e-5, max_replacements: int | None = None,
                     mutable: Collection[str] | None = None, archive: Archive | None = None) -> Generation:
    """Give every individual i one child and let it replace neighbours it decomposes better.

    Args:
        states: the P genomes; not modified.
        F: ``[P, n_obj]`` their objectives; ``ref_dirs`` ``[P, n_obj]`` their preferences; ``neighborhoods``
            ``[P, T]`` from ``neighbors``.
        ideal, nadir: ``[n_obj]`` best and worst objectives seen; widened by any child outside them.
        frozen: individuals never replaced; they still have children and serve as mates.
        prob_crossover, eta: chance of SBX and its distribution index; the mate comes from B(i) without i, or
            from the whole population with ``prob_global_mate`` (or when B(i) is i alone).
        prob_mutation, mutation_prob, mutation_std: chance of mutating the child, and then the per-element
            chance and scale of its Gaussian noise, on the tensors ``mutable`` (default: all).
        max_replacements: the most neighbours one child replaces (MOEA/D-DE's ``nr``, Li & Zhang 2009; None: no
            limit, the original MOEA/D); the neighbours are tried in a random order, so a limit favours none.
        archive: if given, offered every evaluated child (``Archive.offer``).
    A child equal to its parent (no variation drawn, or one that changed nothing) is neither evaluated nor replaces
    anyone: a copy would only duplicate i. A child with non-finite objectives is dropped; an individual with
    non-finite objectives is replaced by any neighbour's finite child.
    """
    states, F, ref_dirs = list(states), F.to(torch.float64).clone(), ref_dirs.to(torch.float64)
    ideal, nadir = ideal.to(torch.float64).clone(), nadir.to(torch.float64).clone()
    population = range(len(states))
    replacements = 0
    for i in population:
        child, varied = states[i], False
        if _uniform(generator) < prob_crossover:
            mates = [j for j in neighborhoods[i].tolist() if j != i]
            if not mates or _uniform(generator) < prob_global_mate:
                mates = [j for j in population if j != i]
            child, varied = cross_sbx(child, states[_choice(mates, generator)], eta, generator), True
        if _uniform(generator) < prob_mutation:
            child, varied = mutate_gaussian(child, mutation_prob, mutation_std, generator, mutable), True
        if not varied or all(torch.equal(tensor, states[i][name]) for name, tensor in child.items()):
            continue
        f_child = torch.as_tensor(evaluate(child), dtype=torch.float64).cpu()
        if f_child.shape != F.shape[1:]:
            raise ValueError(f'evaluate must return {F.shape[1]} objectives, got shape {tuple(f_child.shape)}')
        if not f_child.isfinite().all():
            continue
        torch.minimum(ideal, f_child, out=ideal)
        torch.maximum(nadir, f_child, out=nadir)
        if archive is not None:
            archive.offer(child, f_child)
        hood = neighborhoods[i]
        replaced = 0
        for j in hood[torch.randperm(len(hood), generator=generator, device=generator.device).cpu()].tolist():
            if replaced == max_replacements:
                break
            if j in frozen:
                continue
            g_child, g_j = tchebycheff(torch.stack((f_child, F[j])), ref_dirs[j], ideal, nadir, eps)
            if g_child < g_j or not g_j.isfinite():
                states[j] = {name: tensor.clone() for name, tensor in child.items()}
                F[j] = f_child
                replaced += 1
        replacements += replaced
    return Generation(states, F, ideal, nadir, replacements)
