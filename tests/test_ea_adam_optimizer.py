"""EAAdam: mixed gradients, Adam steps per individual, frozen anchors, evolve, exact resume, schedulers, errors."""
import io

import pytest
import torch
from basicsr.models.lr_scheduler import MultiStepRestartLR
from torch import nn

from basicsr_ea.evolution import tchebycheff, uniform_ref_dirs
from basicsr_ea.optim import build_optimizer
from basicsr_ea.optim.ea_adam import EAAdam

X = torch.linspace(-1, 1, 24).reshape(8, 3)
TARGETS = (X.sum(1, keepdim=True), -X[:, :1])  # two regression targets that pull the weights apart


def population(n=4, seed=0):
    torch.manual_seed(seed)
    return [nn.Linear(3, 1) for _ in range(n)]


def evaluate(genome):
    weight, bias = genome
    out = X @ weight.T + bias
    return torch.stack([(out - target).square().mean() for target in TARGETS])


def objective_grads(net):
    return [torch.autograd.grad((net(X) - target).square().mean(), list(net.parameters())) for target in TARGETS]


def adam_iteration(opt, nets):
    for i, net in enumerate(nets):
        assert opt.set_mixed_gradients(i, objective_grads(net))
    opt.step()


def weights(nets):
    return [p.detach().clone() for net in nets for p in net.parameters()]


def test_set_mixed_gradients_by_hand():
    nets = population()
    opt = EAAdam([net.parameters() for net in nets])  # w_1 = (2/3, 1/3)
    g_d = [torch.tensor([[3., 4., 0.]]), torch.tensor([2.])]  # norms 5 and 2
    g_p = [torch.tensor([[0., 0., 1.]]), torch.tensor([-1.])]  # norms 1 and 1
    assert opt.set_mixed_gradients(1, [g_d, g_p])
    weight, bias = nets[1].parameters()
    torch.testing.assert_close(weight.grad, torch.tensor([[2 / 3 * .6, 2 / 3 * .8, 1 / 3]]))
    torch.testing.assert_close(bias.grad, torch.tensor([2 / 3 - 1 / 3]))
    assert nets[0].weight.grad is None


def test_set_mixed_gradients_refuses_non_finite_gradients():
    nets = population()
    opt = EAAdam([net.parameters() for net in nets])
    bad = [torch.tensor([[1., float('nan'), 0.]]), torch.tensor([1.])]
    good = [torch.ones(1, 3), torch.ones(1)]
    assert not opt.set_mixed_gradients(2, [good, bad])
    assert nets[2].weight.grad is None and nets[2].bias.grad is None
    with pytest.raises(ValueError, match='gradients for the 2 params'):
        opt.set_mixed_gradients(2, [good, good[:1]])


def test_step_is_adam_on_the_mixed_gradient_and_spares_frozen():
    nets = population()
    reference_net = population()[2]
    opt = EAAdam([net.parameters() for net in nets], lr=1e-2, frozen=[0])
    reference = torch.optim.Adam(reference_net.parameters(), lr=1e-2)
    frozen_before = weights(nets[:1])
    for _ in range(3):
        adam_iteration(opt, nets)
        grads = [p.grad for p in nets[2].parameters()]
        for p, grad in zip(reference_net.parameters(), grads):
            p.grad = grad.clone()
        reference.step()
    assert all(torch.equal(a, b) for a, b in zip(weights(nets[2:3]), weights([reference_net])))
    assert all(torch.equal(a, b) for a, b in zip(weights(nets[:1]), frozen_before))
    assert nets[0].weight.grad is None and nets[0].weight not in opt.state
    assert not torch.equal(nets[1].weight, population()[1].weight)
    with pytest.raises(TypeError, match='closure'):
        opt.step(lambda: 0.)


def test_evolve_improves_the_population_resets_adam_and_spares_frozen():
    nets = population()
    params = [list(net.parameters()) for net in nets]
    opt = EAAdam(params, lr=1e-2, frozen=[0], seed=1)
    for group, lr in zip(opt.param_groups, (1., 2., 3., 4.)):
        group['lr'] = lr
    adam_iteration(opt, nets)
    frozen_before = weights(nets[:1])
    result = opt.evolve(evaluate, generations=6)
    F_before, F, ideal, nadir = result['objectives_before'], result['objectives'], result['ideal'], result['nadir']
    assert F.shape == F_before.shape == (4, 2) and F.isfinite().all() and result['generations'] == 6
    assert result['replacements'] > 0
    assert (ideal <= F.min(0).values).all() and (nadir >= F.max(0).values).all()
    torch.testing.assert_close(F, torch.stack([evaluate(list(net.parameters())) for net in nets]).double())
    ref_dirs = uniform_ref_dirs(4)
    assert tchebycheff(F, ref_dirs, ideal, nadir).sum() < tchebycheff(F_before, ref_dirs, ideal, nadir).sum()
    assert all(torch.equal(a, b) for a, b in zip(weights(nets[:1]), frozen_before))
    assert [list(net.parameters()) for net in nets] == params  # copied in place, same Parameter objects
    assert len(opt.state) == 0 and [group['lr'] for group in opt.param_groups] == [1., 2., 3., 4.]
    assert opt.ea_phases == 1


def test_state_dict_round_trip_resumes_bit_identically():
    nets = population()
    opt = EAAdam([net.parameters() for net in nets], lr=1e-2, frozen=[0], seed=3)
    adam_iteration(opt, nets)
    opt.evolve(evaluate, generations=2)
    adam_iteration(opt, nets)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    resumed_nets = population(seed=1)
    for net, resumed in zip(nets, resumed_nets):
        resumed.load_state_dict(net.state_dict())
    resumed_opt = EAAdam([net.parameters() for net in resumed_nets], lr=1e-2, frozen=[0], seed=99)
    resumed_opt.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed_opt.ea_phases == 1
    for run_opt, run_nets in ((opt, nets), (resumed_opt, resumed_nets)):
        adam_iteration(run_opt, run_nets)
        run_opt.evolve(evaluate, generations=3)
        adam_iteration(run_opt, run_nets)
    assert all(torch.equal(a, b) for a, b in zip(weights(nets), weights(resumed_nets)))


def test_basicsr_scheduler_drives_every_individual():
    nets = population()
    opt = build_optimizer({'type': 'EAAdam', 'lr': 1e-2, 'frozen': [0]}, [net.parameters() for net in nets])
    scheduler = MultiStepRestartLR(opt, milestones=[2], gamma=.5)
    for _ in range(3):
        adam_iteration(opt, nets)
        scheduler.step()
    assert [group['lr'] for group in opt.param_groups] == [5e-3] * 4
    opt.evolve(evaluate, generations=1)
    assert [group['lr'] for group in opt.param_groups] == [5e-3] * 4


@pytest.mark.parametrize('kwargs, error, match', [
    ({'n': 1}, ValueError, 'at least 2 individuals'),
    ({'ref_dirs': [[1., 0.], [0., 1.]]}, ValueError, 'one row per individual'),
    ({'ref_dirs': [[1., 0.], [.5, .6], [0., 1.]]}, ValueError, 'sum to 1'),
    ({'frozen': [3]}, ValueError, r'frozen indices \[3\]'),
    ({'flat': True}, TypeError, 'list of param groups'),
    ({'mismatch': True}, ValueError, 'individual 2 has parameter shapes'),
])
def test_clear_errors(kwargs, error, match):
    nets = population(kwargs.pop('n', 3))
    groups = [net.parameters() for net in nets]
    if kwargs.pop('flat', False):
        groups = list(nets[0].parameters())
    if kwargs.pop('mismatch', False):
        groups[2] = nn.Linear(3, 2).parameters()
    with pytest.raises(error, match=match):
        EAAdam(groups, **kwargs)


@pytest.mark.parametrize('mutate_biases', [False, True])
def test_mutation_touches_weights_only_unless_biases_are_asked_for(mutate_biases):
    """No crossover and certain mutation: every child differs from its parent by mutation alone. Biases stay those
    the population started with, as in the authors' loop, unless ``mutate_biases``; an archive sees every child."""
    from basicsr_ea.evolution import Archive
    nets = population()
    biases = [net.bias.detach().clone() for net in nets]
    opt = EAAdam([list(net.parameters()) for net in nets], seed=0, prob_crossover=0., prob_mutation=1.,
                 mutation_prob=1., mutation_std=.5, mutate_biases=mutate_biases)
    archive = Archive(size=16)
    result = opt.evolve(evaluate, generations=3, max_replacements=None, archive=archive)
    assert result['replacements'] > 0 and len(archive) >= 1
    survivors = [net.bias for net in nets] + [s['1'] for s in archive.states]  # a child may replace a neighbour
    same_biases = all(any(torch.equal(bias, b) for b in biases) for bias in survivors)
    assert same_biases != mutate_biases
    assert result['distinct_before'] == 4 and 1 <= result['distinct'] <= 4
