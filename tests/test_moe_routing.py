"""Routing kernels of MEASNet's experts: top-k gating, smooth load, load-balancing loss, sparse dispatch."""
import pytest
import torch
from torch.testing import assert_close

from basicsr_ea.archs.moe_layers import (ExpertMLP, NoisyTopKRouter, STPGMESE, combine_expert_outputs, cv_squared,
                                         dense_dispatch, dense_gates, load_balancing_loss, prob_in_top_k,
                                         softmax_top_k, sparse_dispatch, top_k_gating)


@pytest.mark.parametrize('k', [1, 2, 3])
def test_top_k_gating_gives_k_gates_summing_to_one_on_the_largest_logits(k):
    logits = torch.randn(50, 6, generator=torch.Generator().manual_seed(k))
    indices, gates = top_k_gating(logits, k)
    dense = dense_gates(indices, gates, 6)
    assert (dense > 0).sum(dim=1).eq(k).all()
    assert_close(dense.sum(dim=1), torch.ones(50))
    chosen = torch.zeros_like(dense, dtype=torch.bool).scatter(1, logits.topk(k, dim=1).indices, True)
    assert torch.equal(dense > 0, chosen)
    # softmax over the kept logits: gate ratios are exp of the logit differences
    kept = logits.gather(1, indices)
    assert_close(gates[:, 0] / gates[:, -1], (kept[:, 0] - kept[:, -1]).exp())


def test_softmax_top_k_keeps_the_unrenormalised_probabilities_of_the_k_best():
    logits = torch.tensor([[0.0, 2.0, 1.0, -1.0, 0.5]])
    indices, weights = softmax_top_k(logits, 2)
    assert indices.tolist() == [[1, 2]]
    assert_close(weights, logits.softmax(dim=1)[:, [1, 2]])


def test_cv_squared_is_zero_for_equal_entries_and_scale_free():
    assert cv_squared(torch.full((6, ), 3.0)).item() == 0
    assert cv_squared(torch.tensor([5.0])).item() == 0
    x = torch.tensor([1.0, 2.0, 3.0])
    assert_close(cv_squared(x), torch.tensor(1.0 / 4.0))  # unbiased var 1, mean 2
    assert_close(cv_squared(10 * x), cv_squared(x))


def test_load_balancing_loss_is_zero_for_balanced_routing_and_large_for_collapsed_routing():
    tokens, experts = torch.arange(12), 6
    balanced = torch.stack([tokens % experts, (tokens + 1) % experts], dim=1)
    collapsed = torch.tensor([[0, 1]]).expand(12, 2)
    half = torch.full((12, 2), 0.5)

    def loss(indices):
        importance = dense_gates(indices, half, experts).sum(dim=0)
        load = torch.bincount(indices.reshape(-1), minlength=experts).float()
        return load_balancing_loss(importance, load)

    assert loss(balanced).item() < 1e-6
    # importance (6, 6, 0, 0, 0, 0) and load (12, 12, 0, 0, 0, 0) both have cv^2 = 9.6 / 2^2 = 2.4
    assert_close(loss(collapsed), torch.tensor(4.8))


def test_prob_in_top_k_matches_monte_carlo_redraws_of_each_experts_own_noise():
    gen = torch.Generator().manual_seed(0)
    clean = torch.tensor([[0.3, -0.2, 0.1, 0.0]])
    noise_std = torch.tensor([[0.5, 0.8, 0.3, 1.0]])
    noisy = clean + torch.randn(clean.shape, generator=gen) * noise_std
    prob = prob_in_top_k(clean, noisy, noise_std, k=2)[0]
    draws = 40000
    for i in range(4):
        others = torch.cat([noisy[0, :i], noisy[0, i + 1:]])
        threshold = others.topk(2).values[-1]  # expert i is in the top 2 iff it beats the 2nd best of the others
        redrawn = clean[0, i] + torch.randn(draws, generator=gen) * noise_std[0, i]
        assert abs((redrawn > threshold).float().mean().item() - prob[i].item()) < 0.01


def test_prob_in_top_k_becomes_the_hard_selection_as_the_noise_vanishes():
    clean = torch.randn(20, 5, generator=torch.Generator().manual_seed(1))
    noise_std = torch.full_like(clean, 1e-6)
    prob = prob_in_top_k(clean, clean, noise_std, k=2)
    hard = torch.zeros_like(clean).scatter(1, clean.topk(2, dim=1).indices, 1.0)
    assert_close(prob, hard)


def test_noisy_router_is_deterministic_in_eval_and_seeded_noisy_in_training():
    router = NoisyTopKRouter(8, num_experts=4, top_k=2)
    torch.nn.init.normal_(router.w_gate.weight)
    x = torch.randn(64, 8)
    router.eval()
    first, second = router(x), router(x)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert first[2].item() == 0
    router.train()
    draws = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        draws.append(router(x))
    assert torch.equal(draws[0][1], draws[1][1])
    assert not torch.equal(draws[0][1], draws[2][1])
    assert draws[0][2].requires_grad and draws[0][2].item() > 0


def test_router_without_noise_trains_on_the_clean_logits_and_draws_no_random_numbers():
    """``noise=False`` (MEASNet's ``gate_noise=False``): training gates as eval does, the load is the hard count of
    selections, the importance term still carries grad, and the global random stream is left untouched."""
    router = NoisyTopKRouter(8, num_experts=4, top_k=2, noise=False)
    torch.nn.init.normal_(router.w_gate.weight)
    torch.nn.init.normal_(router.w_noise.weight)
    x = torch.randn(64, 8)
    router.eval()
    expected = router(x)
    router.train()
    torch.manual_seed(0)
    indices, gates, aux_loss = router(x)
    after = torch.randn(3)
    torch.manual_seed(0)
    assert torch.equal(after, torch.randn(3))  # the router drew nothing
    assert torch.equal(indices, expected[0]) and torch.equal(gates, expected[1])
    importance = dense_gates(indices, gates, 4).sum(dim=0)
    load = torch.bincount(indices.reshape(-1), minlength=4).float()
    assert_close(aux_loss, load_balancing_loss(importance, load))
    aux_loss.backward()
    assert router.w_gate.weight.grad.abs().sum() > 0 and router.w_noise.weight.grad is None


def test_router_with_a_context_routes_as_on_the_concatenation():
    """``router(x, context)``: the logits of cat([x, context of the row's image]) without the concatenation, in eval
    and (same noise draws) in training."""
    torch.manual_seed(0)
    router = NoisyTopKRouter(8 + 5, num_experts=4, top_k=2)
    torch.nn.init.normal_(router.w_noise.weight)
    x, context = torch.randn(2 * 6, 8), torch.randn(2, 5)
    concatenated = torch.cat([x, context.repeat_interleave(6, dim=0)], dim=1)
    for training in (False, True):
        router.train(training)
        torch.manual_seed(1)
        expected = router(concatenated)
        torch.manual_seed(1)
        for got, want in zip(router(x, context), expected):
            assert_close(got, want)


def make_experts(num_experts=6, dim=8):
    torch.manual_seed(0)
    experts = torch.nn.ModuleList([ExpertMLP(dim, 13) for _ in range(num_experts)])
    return lambda e, units: experts[e](units)


@pytest.mark.parametrize('combine', ['sum', 'logsumexp'])
def test_sparse_dispatch_equals_dense_computation_with_the_same_gates(combine):
    expert = make_experts()
    x = torch.randn(64, 8, requires_grad=True)
    logits = torch.randn(64, 6)
    logits[:, 5] = -100  # expert 5 receives no token: the empty split must be handled
    indices, gates = top_k_gating(logits, 2)
    sparse = sparse_dispatch(x, indices, gates, expert, 6, combine)
    dense = dense_dispatch(x, indices, gates, expert, 6, combine)
    assert_close(sparse, dense, atol=1e-5, rtol=1e-5)
    grad_sparse, = torch.autograd.grad(sparse.sum(), x)
    grad_dense, = torch.autograd.grad(dense.sum(), x)
    assert_close(grad_sparse, grad_dense, atol=1e-5, rtol=1e-5)


def test_sparse_dispatch_runs_each_expert_only_on_its_own_units():
    seen = {}

    def expert(e, units):
        seen[e] = units[:, 0].tolist()
        return units * (e + 1)

    x = torch.arange(5.0)[:, None]
    indices = torch.tensor([[0, 2], [2, 0], [0, 2], [3, 0], [2, 3]])
    gates = torch.full((5, 2), 0.5)
    out = sparse_dispatch(x, indices, gates, expert, 4)
    assert seen == {0: [0.0, 1.0, 2.0, 3.0], 2: [0.0, 1.0, 2.0, 4.0], 3: [3.0, 4.0]}
    assert_close(out[:, 0], torch.tensor([2.0, 2.0, 2.0, 2.5, 3.5]) * torch.arange(5.0))


def test_stp_gmese_routes_each_token_on_its_own_in_eval():
    torch.manual_seed(0)
    block = STPGMESE(dim=8, prompt_dim=4, num_experts=4, top_k=2).eval()
    torch.nn.init.normal_(block.router.w_gate.weight)
    x, prompt = torch.randn(3, 8, 5, 7), torch.randn(3, 4)
    with torch.no_grad():
        out, aux_loss = block(x, prompt)
        singles = torch.cat([block(x[i:i + 1], prompt[i:i + 1])[0] for i in range(3)])
    assert out.shape == x.shape and aux_loss.item() == 0
    assert_close(out, singles, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match='combine'):
        STPGMESE(dim=8, prompt_dim=4, combine='max')


def test_logsumexp_combine_has_finite_gradients_where_a_gate_underflows_to_zero():
    """A top-k softmax gate is exactly 0 when the kept logits are ~100 apart; log(0) must not turn into a NaN
    gradient (it did: 0 * d log(g) / dg = 0 / 0). The zero gate drops out, as in the authors' code."""
    logits = torch.tensor([[200.0, 0.0, -5.0], [1.0, 0.5, 0.0]], requires_grad=True)
    indices, gates = top_k_gating(logits, 2)
    assert gates[0, 1].item() == 0 and gates[1].min() > 0
    outputs = torch.randn(2, 2, 4, requires_grad=True)
    mixed = combine_expert_outputs(outputs, gates, 'logsumexp')
    mixed.sum().backward()
    assert torch.isfinite(logits.grad).all() and torch.isfinite(outputs.grad).all()
    assert_close(mixed[0], outputs[0, 0].detach())  # only the gate of 1 counts
    assert_close(mixed[1], torch.logsumexp(outputs[1].detach() + gates[1, :, None].detach().log(), dim=0))
    assert outputs.grad[0, 1].abs().max() == 0


def test_logsumexp_combine_stays_finite_where_the_authors_exp_overflows():
    """The authors compute log(sum g * exp(out)): exp(100) overflows float32 to inf (and inf * 0 to NaN)."""
    outputs = torch.tensor([[[100.0], [95.0]]])
    gates = torch.tensor([[0.7, 0.3]])
    expected = 100 + torch.log(0.7 + 0.3 * torch.exp(torch.tensor(-5.0)))
    assert_close(combine_expert_outputs(outputs, gates, 'logsumexp'), expected.reshape(1, 1))
    assert torch.isinf((gates[..., None] * outputs.exp()).sum(dim=1)).all()


def test_router_gate_weights_start_standard_normal_as_the_authors_or_at_zero():
    torch.manual_seed(0)
    weight = NoisyTopKRouter(64, num_experts=6, top_k=2).w_gate.weight
    assert abs(weight.std().item() - 1) < 0.1 and abs(weight.mean().item()) < 0.1
    assert not NoisyTopKRouter(64, num_experts=6, top_k=2, zero_init=True).w_gate.weight.any()
