"""EA-Adam (Sun et al., "Perception-Distortion Balanced Super-Resolution: A Multi-Objective Optimization
Perspective", TIP 2024, https://arxiv.org/abs/2312.15408): Adam for each individual of a population of networks,
with MOEA/D recombining them in weight space between Adam runs."""
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from basicsr_ea.evolution import (Archive, distinct_count, ideal_nadir, mix_normalized_gradients, moead_generation,
                                  neighbors, uniform_ref_dirs)
from basicsr_ea.optim import OPTIMIZER_REGISTRY


def _checked_ref_dirs(ref_dirs, n_individuals: int) -> Tensor:
    ref_dirs = torch.as_tensor(ref_dirs, dtype=torch.float64).cpu()
    if ref_dirs.ndim != 2 or ref_dirs.shape[0] != n_individuals:
        raise ValueError(f'ref_dirs needs one row per individual ({n_individuals}), got shape {tuple(ref_dirs.shape)}')
    if (ref_dirs < 0).any() or not torch.allclose(ref_dirs.sum(1), torch.ones(n_individuals, dtype=torch.float64)):
        raise ValueError(f'each row of ref_dirs must be non-negative and sum to 1, got {ref_dirs.tolist()}')
    return ref_dirs


@OPTIMIZER_REGISTRY.register()
class EAAdam(torch.optim.Adam):
    """One param group per individual of the population; Adam updates, MOEA/D in weight space between Adam runs.

    Args:
        params: P param groups (dicts with ``'params'``, or iterables of tensors), one per individual, with the same
            tensor shapes in the same order.
        lr, betas, eps, weight_decay: Adam's, shared by every group (a scheduler may change each group's lr).
        ref_dirs: ``[P, n_obj]`` preferences, rows on the simplex; default ``uniform_ref_dirs(P)`` (2 objectives).
        n_neighbors: size T of each MOEA/D neighbourhood.
        frozen: individuals never stepped by Adam (their grads are dropped) nor replaced by the EA, e.g. 0 as
            the PSNR anchor; they still have children and mate.
        seed: seeds the EA's generator (on the parameters' device), saved in ``state_dict`` for exact resume.
        grad_eps: added to each gradient norm before normalising.
        prob_crossover, eta, prob_global_mate, prob_mutation, mutation_prob, mutation_std: the MOEA/D variation,
            see ``moead_generation``.
        mutate_biases: mutation also touches the 0-D and 1-D tensors (biases, norm scales); by default it touches
            conv and linear weights only (every tensor of 2 or more dims), as the authors' mutation does.
    """

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, ref_dirs=None,
                 n_neighbors=3, frozen=(), seed=0, grad_eps=1e-7, prob_crossover=0.9, eta=20.0, prob_global_mate=0.3,
                 prob_mutation=0.2, mutation_prob=0.02, mutation_std=0.03, mutate_biases=False):
        groups = list(params)
        if any(isinstance(group, Tensor) for group in groups):
            raise TypeError('EAAdam takes a list of param groups, one per individual, not a flat list of tensors')
        if len(groups) < 2:
            raise ValueError(f'EAAdam needs a population of at least 2 individuals, got {len(groups)}')
        groups = [group if isinstance(group, dict) else {'params': group} for group in groups]
        super().__init__(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        shapes = [[tuple(p.shape) for p in group['params']] for group in self.param_groups]
        for i, individual in enumerate(shapes):
            if individual != shapes[0]:
                raise ValueError(f'individual {i} has parameter shapes {individual}, individual 0 has {shapes[0]}')
        n_individuals = len(self.param_groups)
        self.ref_dirs = _checked_ref_dirs(uniform_ref_dirs(n_individuals) if ref_dirs is None else ref_dirs,
                                          n_individuals)
        self.n_neighbors = n_neighbors
        self.neighborhoods = neighbors(self.ref_dirs, n_neighbors)
        out_of_range = [i for i in frozen if not 0 <= i < n_individuals]
        if out_of_range:
            raise ValueError(f'frozen indices {out_of_range} out of range for {n_individuals} individuals')
        self.frozen = tuple(sorted(set(frozen)))
        self.grad_eps = grad_eps
        weights = {str(k) for k, p in enumerate(self.param_groups[0]['params']) if p.ndim >= 2}
        self.variation = dict(prob_crossover=prob_crossover, eta=eta, prob_global_mate=prob_global_mate,
                              prob_mutation=prob_mutation, mutation_prob=mutation_prob, mutation_std=mutation_std,
                              mutable=None if mutate_biases else weights)
        self.generator = torch.Generator(device=self.param_groups[0]['params'][0].device)
        self.generator.manual_seed(seed)
        self.ea_phases = 0
        self.register_step_pre_hook(EAAdam._drop_frozen_grads)

    @staticmethod
    def _drop_frozen_grads(optimizer, args, kwargs):
        """Frozen individuals keep their weights whatever gradients reach them; a closure could bring them back."""
        if len(args) > 1 or kwargs:
            raise TypeError('EAAdam.step takes no closure')
        for i in optimizer.frozen:
            for p in optimizer.param_groups[i]['params']:
                p.grad = None

    def set_mixed_gradients(self, index: int, grads_per_objective: Sequence[Sequence[Tensor]]) -> bool:
        """Write ``p.grad = sum_k w_ik g_k / (||g_k|| + grad_eps)`` for individual ``index``'s params, given n_obj
        lists of gradients aligned with them. Writes nothing and returns False if any gradient is non-finite, so
        the caller can skip that individual."""
        params = self.param_groups[index]['params']
        for grads in grads_per_objective:
            if len(grads) != len(params):
                raise ValueError(f'{len(grads)} gradients for the {len(params)} params of individual {index}')
        mixed = mix_normalized_gradients(grads_per_objective, self.ref_dirs[index].tolist(), self.grad_eps)
        if not torch.stack(torch._foreach_norm(mixed)).isfinite().all():  # non-finite in, non-finite out
            return False
        for p, grad in zip(params, mixed):
            p.grad = grad
        return True

    @torch.no_grad()
    def evolve(self, evaluate: Callable[[list[Tensor]], Tensor], generations: int, max_replacements: int | None = None,
               archive: Archive | None = None) -> dict:
        """Run ``generations`` MOEA/D generations on the population's current weights.

        ``evaluate(genome)`` gets a list of tensors aligned with a group's params (read-only) and returns its
        ``[n_obj]`` objectives to minimise. ``max_replacements``: see ``moead_generation``. ``archive`` is offered
        the population at the start, then every child; its members are genomes keyed ``'0', '1', ...`` in the order
        of a group's params. The surviving genomes are copied into the live parameters in place and every Adam state
        is reset, since the moments belong to weights that moved; each group's lr stays.
        Returns ``objectives_before`` and ``objectives`` ``[P, n_obj]``, ``distinct_before`` and ``distinct`` (how
        many individuals differ), ``ideal``, ``nadir``, ``replacements`` and ``generations``.
        """
        genomes = [{str(k): p.clone() for k, p in enumerate(group['params'])} for group in self.param_groups]

        def objectives(genome):
            return evaluate(list(genome.values()))

        F = torch.stack([torch.as_tensor(objectives(genome), dtype=torch.float64).cpu() for genome in genomes])
        if F.shape != self.ref_dirs.shape:
            raise ValueError(f'evaluate must return {self.ref_dirs.shape[1]} objectives, got {tuple(F.shape[1:])}')
        F_before, distinct_before = F.clone(), distinct_count(genomes)
        if archive is not None:
            for genome, f in zip(genomes, F):
                archive.offer(genome, f)
        ideal, nadir = ideal_nadir(F)
        replacements = 0
        for _ in range(generations):
            genomes, F, ideal, nadir, replaced = moead_generation(
                genomes, F, self.ref_dirs, self.neighborhoods, ideal, nadir, objectives, self.generator, self.frozen,
                max_replacements=max_replacements, archive=archive, **self.variation)
            replacements += replaced
        for group, genome in zip(self.param_groups, genomes):
            torch._foreach_copy_(group['params'], list(genome.values()))
        self.state.clear()
        self.ea_phases += 1
        return {'objectives_before': F_before, 'objectives': F, 'distinct_before': distinct_before,
                'distinct': distinct_count(genomes), 'ideal': ideal, 'nadir': nadir, 'replacements': replacements,
                'generations': generations}

    def state_dict(self) -> dict:
        """Adam's state plus ``'ea'``: the preferences, the EA generator's state and the number of EA phases run."""
        state_dict = super().state_dict()
        state_dict['ea'] = {'ref_dirs': self.ref_dirs.clone(), 'generator': self.generator.get_state(),
                            'phases': self.ea_phases}
        return state_dict

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        ea = state_dict.pop('ea')
        super().load_state_dict(state_dict)
        self.ref_dirs = _checked_ref_dirs(ea['ref_dirs'], len(self.param_groups))
        self.neighborhoods = neighbors(self.ref_dirs, self.n_neighbors)
        self.generator.set_state(ea['generator'])
        self.ea_phases = int(ea['phases'])
