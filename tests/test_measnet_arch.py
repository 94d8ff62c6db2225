"""MEASNet as a BasicSR arch: sizes, batch independence in eval, auxiliary loss, gradients, paper-scale build."""
import pytest
import torch
from basicsr.archs import build_network
from builders import NARROW
from torch.testing import assert_close

from basicsr_ea.archs.aflb import AFLB
from basicsr_ea.archs.frequency_layers import FDMEE
from basicsr_ea.archs.measnet_arch import MEASNet
from basicsr_ea.archs.moe_layers import STPGMESE, GlobalRouter, TaskPrompt

# YAML gives lists: the fast configuration is written as a config file would write it.


def narrow(**overrides):
    torch.manual_seed(0)
    return MEASNet(**{**NARROW, **overrides})


def count(net, kind):
    return sum(isinstance(m, kind) for m in net.modules())


def parameter_count(net):
    return sum(p.numel() for p in net.parameters())


def test_builds_from_yaml_style_options_without_consuming_them():
    opt = {'type': 'MEASNet', **NARROW}
    net = build_network(opt)
    assert opt['type'] == 'MEASNet' and isinstance(net, MEASNet)
    assert (count(net, TaskPrompt), count(net, STPGMESE), count(net, FDMEE), count(net, AFLB)) == (1, 3, 3, 3)


@pytest.mark.parametrize('train', [True, False])
def test_odd_sizes_come_back_at_their_size(train):
    net = narrow().train(train)
    x = torch.rand(1, 3, 97, 131)
    with torch.set_grad_enabled(train):
        out = net(x)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_eval_on_a_batch_equals_eval_on_each_image_alone():
    net = narrow().eval()
    for module in net.modules():  # route by content, not by the zero initialisation
        if isinstance(module, STPGMESE):
            torch.nn.init.normal_(module.router.w_gate.weight, std=0.5)
    x = torch.rand(3, 3, 24, 40)
    with torch.no_grad():
        batch = net(x)
        singles = torch.cat([net(x[i:i + 1]) for i in range(3)])
        again = net(x)
    assert_close(batch, singles, atol=1e-5, rtol=1e-5)
    assert torch.equal(batch, again)


def test_aux_loss_carries_grad_in_training_and_is_zero_in_eval():
    net = narrow()
    x = torch.rand(2, 3, 16, 16)
    net(x)
    assert net.aux_loss.dim() == 0 and net.aux_loss.requires_grad and net.aux_loss.item() > 0
    net.eval()
    with torch.no_grad():
        net(x)
    assert net.aux_loss.dim() == 0 and net.aux_loss.item() == 0


def selected_experts(net):
    """Forward hooks recording which low-rank experts each FD-MEE router picked, keyed by the router's name."""
    picked = {}
    for name, module in net.named_modules():
        if isinstance(module, GlobalRouter):
            module.register_forward_hook(
                lambda m, args, out, name=name: picked.setdefault(name, set()).update(out[0].flatten().tolist()))
    return picked


def test_backward_reaches_every_parameter_that_should_learn():
    """timm-style: after one backward every parameter has a finite, non-zero gradient, except the FD-MEE experts
    their routers did not pick (a zero gradient, as in the authors' training), AFLB's ``rate_conv`` (integer band
    size, as in AdaIR) and the authors' parameters their forward never reads (``unused``). The gates and the
    zero-initialised AFLB scale are perturbed first so that every path carries a signal; the non-empty low band gives
    both AFLB bands content."""
    net = narrow(aflb_low_band='nonempty')
    for name, param in net.named_parameters():
        if name.endswith(('w_gate.weight', 'aflb.alpha')):
            torch.nn.init.normal_(param, std=0.1)
    picked = selected_experts(net)
    out = net(torch.rand(2, 3, 32, 32))
    (out.mean() + net.aux_loss).backward()
    for name, param in net.named_parameters():
        router, _, expert = name.partition('.experts.')
        if expert and f'{router}.router' in picked:
            has_grad = int(expert.split('.')[0]) in picked[f'{router}.router']
            assert bool(param.grad.any()) == has_grad, name
        elif '.rate_conv.' in name:
            assert param.grad is None or not param.grad.any(), name
        elif '.unused.' in name:
            assert param.grad is None, name
        else:
            assert param.grad is not None and param.grad.any(), name
        assert param.grad is None or torch.isfinite(param.grad).all(), name
    assert len(picked) == 6  # two MESE per FD-MEE, three decoder levels


def test_combine_and_stp_levels_options():
    x = torch.rand(1, 3, 16, 16)
    net_sum, net_lse = narrow(combine='sum').eval(), narrow().eval()
    with torch.no_grad():
        assert not torch.allclose(net_sum(x), net_lse(x))
    with pytest.raises(ValueError, match='stp_levels'):
        narrow(stp_levels=[4])
    with pytest.raises(ValueError, match='disjoint'):
        narrow(stp_levels=[1, 2], stp_aux_levels=[2, 3])
    with pytest.raises(ValueError, match='combine'):
        narrow(combine='max')


def test_aux_only_levels_add_their_loss_in_training_and_leave_the_output_alone():
    """The authors' levels 2 and 3: their STP-G-MESE output is discarded and only the load-balancing loss counts.
    So the output is that of the network without them (same weights, same seed: level 1 draws its noise first in
    both), the aux loss is larger by their terms, and their experts get no gradient."""
    authors = narrow(stp_levels=[1], stp_aux_levels=[2, 3])
    level_1_only = narrow(stp_levels=[1], stp_aux_levels=[])
    assert level_1_only.load_state_dict(authors.state_dict(), strict=False).missing_keys == []
    assert count(authors, STPGMESE) == 3 and count(level_1_only, STPGMESE) == 1
    x = torch.rand(2, 3, 16, 24)
    with torch.no_grad():
        assert torch.equal(authors.eval()(x), level_1_only.eval()(x)) and authors.aux_loss.item() == 0
    outputs, losses = [], []
    for net in (authors.train(), level_1_only.train()):
        torch.manual_seed(0)
        outputs.append(net(x))
        losses.append(net.aux_loss)
    assert torch.equal(outputs[0], outputs[1])
    assert losses[0].item() > losses[1].item() > 0
    (outputs[0].mean() + losses[0]).backward()
    assert all(p.grad is None for level in (1, 2) for p in authors.encoder[level].stp.experts.parameters())
    assert authors.encoder[1].stp.router.w_gate.weight.grad.abs().sum() > 0


def test_switches_remove_their_components():
    full = narrow()
    plain = narrow(stp_levels=[], use_fdmee=False, use_aflb=False)
    assert (count(plain, TaskPrompt), count(plain, STPGMESE), count(plain, FDMEE), count(plain, AFLB)) == (0, 0, 0, 0)
    assert parameter_count(plain) < parameter_count(narrow(use_aflb=False)) < parameter_count(full)
    x = torch.rand(2, 3, 20, 12)
    assert plain(x).shape == x.shape
    assert plain.aux_loss.item() == 0 and not plain.aux_loss.requires_grad


def test_paper_scale_default_builds_and_trains_one_step():
    torch.manual_seed(0)
    net = MEASNet()
    assert parameter_count(net) == 31_680_752  # the authors' IRmodel()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.rand(1, 3, 32, 32)
    before = net.output.weight.detach().clone()
    out = net(x)
    loss = (out - x).abs().mean() + 0.001 * net.aux_loss
    loss.backward()
    optimizer.step()
    assert out.shape == x.shape and torch.isfinite(loss)
    assert not torch.equal(before, net.output.weight)
