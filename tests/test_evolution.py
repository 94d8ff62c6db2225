"""The EA kernels: exact values worked out by hand, determinism, and a MOEA/D run on a toy problem."""
import math

import pytest
import torch

from basicsr_ea.evolution import (Archive, cross_sbx, das_dennis, distinct_count, hypervolume_2d, ideal_nadir,
                                  mix_normalized_gradients, moead_generation, mutate_gaussian, neighbors,
                                  non_dominated_sort, sbx_spread_factor, tchebycheff, uniform_ref_dirs)


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def test_uniform_ref_dirs_are_the_papers_preferences():
    assert torch.equal(uniform_ref_dirs(5), torch.tensor([[1, 0], [.75, .25], [.5, .5], [.25, .75], [0, 1]]).double())
    with pytest.raises(ValueError, match='at least 2'):
        uniform_ref_dirs(1)


def test_das_dennis_covers_the_simplex_grid():
    dirs = das_dennis(2, 3)
    expected = {(1, 0, 0), (.5, .5, 0), (.5, 0, .5), (0, 1, 0), (0, .5, .5), (0, 0, 1)}
    assert {tuple(row) for row in dirs.tolist()} == expected and len(dirs) == 6


def test_neighbors_are_adjacent_preferences_clamped_at_the_ends():
    hood = neighbors(uniform_ref_dirs(6), 3)
    assert hood[0].tolist() == [0, 1, 2] and hood[5].tolist() == [5, 4, 3]
    for i in range(1, 5):
        assert hood[i, 0] == i and set(hood[i].tolist()) == {i - 1, i, i + 1}
    duplicated = torch.tensor([[.5, .5], [.5, .5], [1., 0.]])
    assert neighbors(duplicated, 2)[1].tolist() == [1, 0]  # self first even against an equal preference
    with pytest.raises(ValueError, match='n_neighbors'):
        neighbors(uniform_ref_dirs(3), 4)


def test_tchebycheff_by_hand():
    ideal, nadir = torch.tensor([1., 0.]), torch.tensor([5., 4.])
    # w = (.25, .75), f = (3, 1): max(.25 * 2 / 4, .75 * 1 / 4) = .1875
    assert tchebycheff(torch.tensor([3., 1.]), torch.tensor([.25, .75]), ideal, nadir, eps=0).item() == .1875
    # one point under three preferences: max(1 * 2/4, 0) = .5, max(.5 * 2/4, .5 * 1/4) = .25, max(0, 1/4) = .25
    values = tchebycheff(torch.tensor([3., 1.]), torch.tensor([[1., 0.], [.5, .5], [0., 1.]]), ideal, nadir, eps=0)
    assert values.tolist() == [.5, .25, .25]
    # eps keeps a collapsed range finite: |2 - 2| / (0 + eps) = 0 and 1 * |3 - 1| / (2 + 1e-5)
    value = tchebycheff(torch.tensor([3., 2.]), torch.tensor([1., 1.]), torch.tensor([1., 2.]), torch.tensor([3., 2.]))
    assert value.item() == pytest.approx(2 / (2 + 1e-5))


def test_sbx_spread_factor_by_hand():
    u = torch.tensor([.25, .5, .75], dtype=torch.float64)
    assert sbx_spread_factor(u, eta=1).tolist() == pytest.approx([math.sqrt(.5), 1., math.sqrt(2)])
    assert sbx_spread_factor(u, eta=20)[1].item() == 1.


def two_parents(seed=0):
    g = seeded(seed)
    a = {'weight': torch.randn(4, 3, generator=g), 'bias': torch.randn(4, generator=g)}
    b = {'weight': torch.randn(4, 3, generator=g), 'bias': torch.randn(4, generator=g)}
    return a, b


def test_cross_sbx_uses_one_spread_factor_per_tensor():
    a, b = two_parents()
    child = cross_sbx(a, b, eta=2, generator=seeded(7))
    betas = sbx_spread_factor(torch.rand(2, generator=seeded(7), dtype=torch.float64), eta=2).tolist()
    for (name, beta) in zip(a, betas):
        torch.testing.assert_close(child[name], ((1 + beta) * a[name] + (1 - beta) * b[name]) / 2)
        offset = (child[name] - (a[name] + b[name]) / 2) / ((a[name] - b[name]) / 2)
        torch.testing.assert_close(offset, torch.full_like(offset, beta))
        if beta <= 1:  # a contracting factor keeps the child between its parents
            assert (child[name] >= torch.minimum(a[name], b[name]) - 1e-6).all()
            assert (child[name] <= torch.maximum(a[name], b[name]) + 1e-6).all()


def test_cross_sbx_is_parent_a_when_the_spread_factor_is_one():
    a, b = two_parents()
    child = cross_sbx(a, b, eta=math.inf, generator=seeded(0))  # exponent 0: beta == 1 for every tensor
    assert all(torch.equal(child[name], a[name]) for name in a)


def test_cross_sbx_is_deterministic_per_seed():
    a, b = two_parents()
    first, again, other = (cross_sbx(a, b, 20, seeded(seed)) for seed in (3, 3, 4))
    assert all(torch.equal(first[name], again[name]) for name in a)
    assert not all(torch.equal(first[name], other[name]) for name in a)


def test_mutate_gaussian_hits_about_prob_of_the_elements_biases_too():
    state = {'weight': torch.zeros(400, 500), 'bias': torch.zeros(100_000)}
    child = mutate_gaussian(state, prob=.1, std=2., generator=seeded(0))
    for name, tensor in child.items():
        hit = tensor != 0
        assert hit.float().mean().item() == pytest.approx(.1, abs=.005)  # about 5 standard errors
        assert tensor[hit].std().item() == pytest.approx(2., rel=.03)
    assert not state['weight'].any()  # the parent is left alone


def test_mutate_gaussian_with_zero_prob_is_the_identity():
    a, _ = two_parents()
    child = mutate_gaussian(a, prob=0., std=1., generator=seeded(0))
    assert all(torch.equal(child[name], a[name]) for name in a)


def test_mix_normalized_gradients_by_hand():
    g_d = [torch.tensor([3., 4.]), torch.tensor([0., 2.])]  # norms 5 and 2
    g_p = [torch.tensor([0., 1.]), torch.tensor([10., 0.])]  # norms 1 and 10
    mixed = mix_normalized_gradients([g_d, g_p], [.25, .75], eps=0)
    # .25 * (.6, .8) + .75 * (0, 1) and .25 * (0, 1) + .75 * (1, 0)
    torch.testing.assert_close(mixed, [torch.tensor([.15, .95]), torch.tensor([.75, .25])])
    zero = mix_normalized_gradients([[torch.zeros(3)], [torch.tensor([0., 0., 2.])]], [.5, .5])
    torch.testing.assert_close(zero, [torch.tensor([0., 0., .5])], atol=1e-6, rtol=0)  # eps: no 0 / 0
    with pytest.raises(ValueError, match='objectives'):
        mix_normalized_gradients([g_d, g_p], [1.])


def brute_force_fronts(F):
    """Front index = length of the longest chain of dominators above a point, by plain recursion."""
    points = F.tolist()

    def dominated_by(p, q):
        return all(b <= a for a, b in zip(p, q)) and any(b < a for a, b in zip(p, q))

    rank = {}

    def front_of(i):
        if i not in rank:
            rank[i] = max((front_of(j) + 1 for j in range(len(points)) if dominated_by(points[i], points[j])),
                          default=0)
        return rank[i]

    fronts = [[] for _ in range(1 + max(front_of(i) for i in range(len(points))))]
    for i in range(len(points)):
        fronts[front_of(i)].append(i)
    return fronts


@pytest.mark.parametrize('n_obj', [2, 3])
def test_non_dominated_sort_matches_brute_force(n_obj):
    F = torch.randint(0, 6, (40, n_obj), generator=seeded(n_obj)).float()  # small range: ties and duplicates
    assert non_dominated_sort(F) == brute_force_fronts(F)


def test_hypervolume_2d_by_hand():
    front = torch.tensor([[1., 3.], [2., 2.], [3., 1.]])
    assert hypervolume_2d(front, (4., 4.)) == 3 + 2 + 1  # slabs (4-1)(4-3), (4-2)(3-2), (4-3)(2-1)
    extra = torch.tensor([[3., 3.], [2., 2.], [5., 0.], [4., 0.]])  # dominated, duplicate, outside, on the border
    assert hypervolume_2d(torch.cat([front, extra]), (4., 4.)) == 6
    assert hypervolume_2d(torch.tensor([[0., 0.]]), (2., 3.)) == 6
    assert hypervolume_2d(torch.tensor([[5., 5.]]), (4., 4.)) == 0


def test_ideal_nadir_ignores_diverged_individuals():
    ideal, nadir = ideal_nadir(torch.tensor([[1., 5.], [math.nan, 2.], [3., math.inf]]))
    assert ideal.tolist() == [1., 2.] and nadir.tolist() == [3., 5.]


def toy_objectives(state):
    """Two conflicting objectives of one number, Pareto set [0, 2]."""
    x = state['x'][0]
    return torch.stack((x ** 2, (x - 2) ** 2))


def toy_population(xs):
    states = [{'x': torch.tensor([x])} for x in xs]
    return states, torch.stack([toy_objectives(s) for s in states]).double()


def run_generations(states, F, generations, seed=0, evaluate=toy_objectives, frozen=(0, )):
    ref_dirs = uniform_ref_dirs(len(states))
    hood = neighbors(ref_dirs, 3)
    ideal, nadir = ideal_nadir(F)
    generator, replacements = seeded(seed), 0
    for _ in range(generations):
        states, F, ideal, nadir, replaced = moead_generation(states, F, ref_dirs, hood, ideal, nadir, evaluate,
                                                             generator, frozen=frozen, mutation_prob=1.,
                                                             mutation_std=.3)
        replacements += replaced
    return states, F, ideal, nadir, replacements


def test_moead_generation_improves_the_decomposed_objectives_and_spares_frozen():
    states, F = toy_population([-1., 3., 5., -2., 4.])
    new_states, new_F, ideal, nadir, replacements = run_generations(states, F, 30)
    ref_dirs = uniform_ref_dirs(5)
    assert tchebycheff(new_F, ref_dirs, ideal, nadir).sum() < .5 * tchebycheff(F, ref_dirs, ideal, nadir).sum()
    assert replacements > 0
    assert new_states[0] is states[0] and torch.equal(new_F[0], F[0])  # frozen: never replaced
    assert all(0 <= s['x'].item() <= 2.05 for s in new_states[1:])  # drawn onto the Pareto set [0, 2]
    assert torch.equal(new_F, torch.stack([toy_objectives(s) for s in new_states]).double())
    tensors = [s['x'] for s in new_states]
    assert len({id(t) for t in tensors}) == len(tensors)  # copies, never aliases
    assert [s['x'].item() for s in states] == [-1., 3., 5., -2., 4.]  # the input population is untouched
    assert (ideal <= new_F.min(0).values).all() and (ideal <= F.min(0).values).all()  # children it ever saw too
    assert (nadir >= new_F.max(0).values).all() and (nadir >= F.max(0).values).all()


def test_a_child_replacing_several_neighbours_leaves_separate_copies():
    states, F = toy_population([10., 11., 12.])
    calls = []

    def evaluate(state):  # the first child is ideal, every later one is worse than anyone
        calls.append(state)
        return torch.zeros(2) if len(calls) == 1 else torch.full((2, ), 1e3)

    ref_dirs = uniform_ref_dirs(3)
    new_states, _, _, _, replacements = moead_generation(states, F, ref_dirs, neighbors(ref_dirs, 3), *ideal_nadir(F),
                                                         evaluate, seeded(0), prob_crossover=1.)
    assert replacements == 3
    assert all(torch.equal(s['x'], calls[0]['x']) for s in new_states)
    assert len({id(s['x']) for s in new_states}) == 3


def test_moead_generation_is_deterministic_per_seed():
    states, F = toy_population([-1., 3., 5., -2., 4.])
    first, again, other = (run_generations(states, F, 2, seed=seed)[1] for seed in (1, 1, 2))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_moead_generation_drops_diverged_children_and_replaces_diverged_individuals():
    states, F = toy_population([-1., 3., 5., -2., 4.])
    _, same_F, ideal, nadir, replacements = run_generations(states, F, 2, evaluate=lambda s: torch.full((2, ), 1e400))
    assert replacements == 0 and torch.equal(same_F, F)
    assert torch.equal(ideal, ideal_nadir(F)[0]) and torch.equal(nadir, ideal_nadir(F)[1])
    F[2] = math.nan
    assert run_generations(states, F, 1)[1][2].isfinite().all()


def test_moead_generation_checks_the_number_of_objectives():
    states, F = toy_population([-1., 3., 5.])
    with pytest.raises(ValueError, match='2 objectives'):
        run_generations(states, F, 1, evaluate=lambda s: torch.zeros(3))


def test_a_child_replaces_at_most_max_replacements_neighbours_in_random_order():
    states, F = toy_population([10., 11., 12., 13., 14.])
    ref_dirs = uniform_ref_dirs(5)
    hood = neighbors(ref_dirs, 3)
    replaced_slots = set()
    for seed in range(8):
        new_states, _, _, _, replacements = moead_generation(
            states, F, ref_dirs, hood, *ideal_nadir(F), lambda s: torch.zeros(2), seeded(seed), prob_crossover=1.,
            max_replacements=1)
        assert replacements <= 5  # every child is ideal, yet replaces one neighbour only
        per_child = [j for j, (new, old) in enumerate(zip(new_states, states)) if new is not old]
        replaced_slots.update(per_child)
    assert replaced_slots == set(range(5))  # the limit does not favour the lowest index of a neighbourhood


def test_frozen_individual_has_children_but_is_never_replaced_and_unvaried_children_replace_nobody():
    states, F = toy_population([1., 3., 5.])
    ref_dirs = uniform_ref_dirs(3)
    calls = []

    def evaluate(state):
        calls.append(state)
        return torch.zeros(2)

    new_states, new_F, _, _, replacements = moead_generation(states, F, ref_dirs, neighbors(ref_dirs, 3),
                                                             *ideal_nadir(F), evaluate, seeded(0), frozen=(0, ),
                                                             prob_crossover=1., max_replacements=None)
    assert new_states[0] is states[0] and torch.equal(new_F[0], F[0])
    assert replacements > 0 and any(torch.equal(s['x'], calls[0]['x']) for s in new_states[1:])  # 0's child won
    n_calls = len(calls)
    unvaried = moead_generation(states, F, ref_dirs, neighbors(ref_dirs, 3), *ideal_nadir(F), evaluate, seeded(0),
                                prob_crossover=0., prob_mutation=0.)
    assert unvaried.replacements == 0 and all(a is b for a, b in zip(unvaried.states, states)) and len(calls) == n_calls


def test_mutation_leaves_the_tensors_not_named_alone():
    state = {'weight': torch.zeros(50, 40), 'bias': torch.zeros(50)}
    child = mutate_gaussian(state, prob=.5, std=1., generator=seeded(0), names={'weight'})
    assert child['weight'].ne(0).any() and torch.equal(child['bias'], state['bias'])


def test_distinct_count_compares_bit_for_bit():
    a, b = two_parents()
    assert distinct_count([a, dict(a), b, {k: v.clone() for k, v in b.items()}]) == 2


def zdt1(x):
    """A synthetic two-objective problem (ZDT1, one variable and a distance term): front f1 = 1 - sqrt(f0)."""
    return torch.stack((x[0], (1 + 9 * x[1]) * (1 - (x[0] / (1 + 9 * x[1])).sqrt()))).double()


def brute_force_front(points):
    return {tuple(p.tolist()) for p in points if not any((q <= p).all() and (q < p).any() for q in points)}


def test_archive_never_loses_a_non_dominated_point_below_its_size():
    g = seeded(0)
    archive, offered = Archive(size=64), []
    for _ in range(60):
        f = zdt1(torch.rand(2, generator=g, dtype=torch.float64) * torch.tensor([1., .2], dtype=torch.float64))
        offered.append(f.tolist())
        archive.offer({'x': f.clone()}, f)
        offered_points = [torch.tensor(p, dtype=torch.float64) for p in offered]
        assert {tuple(p) for p in archive.F.tolist()} == brute_force_front(offered_points)
        assert all(torch.equal(s['x'], f_) for s, f_ in zip(archive.states, archive.F))  # states follow their rows


def test_archive_prunes_the_least_contributing_keeps_extremes_and_never_loses_hypervolume():
    g = seeded(1)
    archive, ref = Archive(size=5), (2., 11.)
    hv = 0.
    for _ in range(80):
        f = zdt1(torch.rand(2, generator=g, dtype=torch.float64) * torch.tensor([1., .2], dtype=torch.float64))
        best_before = archive.F.amin(0) if len(archive) else torch.full((2, ), math.inf, dtype=torch.float64)
        archive.offer({'x': f.clone()}, f)
        assert len(archive) <= 5 and (archive.F.amin(0) <= best_before).all()  # the extremes stay
        assert (archive.F.amin(0) <= f).any()
        new_extreme = (f < best_before).any()
        new_hv = hypervolume_2d(archive.F, ref)
        if not new_extreme:  # for any reference point; a new extreme always enters (see Archive)
            assert new_hv >= hv - 1e-12
        hv = new_hv
    assert len(archive) == 5
    # a child that dominates everything: it alone remains, and the hypervolume rises to its own
    best = torch.tensor([-1., -1.], dtype=torch.float64)
    assert archive.offer({'x': best}, best)
    assert archive.F.tolist() == [[-1., -1.]] and hypervolume_2d(archive.F, ref) > hv
    assert not archive.offer({'x': best}, best) and not archive.offer({'x': best}, torch.tensor([math.nan, -2.]))


def test_archive_takes_copies_and_restores_exactly():
    archive = Archive(size=3)
    state = {'w': torch.tensor([1., 2.])}
    archive.offer(state, torch.tensor([0., 1.]))
    state['w'].add_(1)
    assert archive.states[0]['w'].tolist() == [1., 2.]
    restored = Archive(size=3)
    restored.load(archive.states, archive.F)
    assert torch.equal(restored.F, archive.F) and torch.equal(restored.states[0]['w'], archive.states[0]['w'])
    with pytest.raises(ValueError, match='size 1|room'):
        Archive(size=1)
