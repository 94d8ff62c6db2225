"""MEASNet against the authors' code: their weights, converted by scripts/convert_measnet.py, give their outputs
(fixtures made with their code, tests/data/README.md), and none of their limits is ours."""
import argparse
import csv
import os
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.archs import build_network
from torch.testing import assert_close

from basicsr_ea.archs.measnet_arch import MEASNet
from basicsr_ea.archs.moe_layers import NoisyTopKRouter
from scripts_loader import load_script

from helpers import REPO_ROOT

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')
PARITY = 1e-5


def load_fixture(name):
    return torch.load(os.path.join(DATA, name), weights_only=True)


def our_options(authors_config):
    """Our MEASNet options for the authors' ``IRmodel`` arguments (their other arguments are our defaults)."""
    return {key: authors_config[key] for key in ('dim', 'num_blocks', 'num_refinement_blocks')}


def converted(fixture, state_key='authors_state_dict'):
    """The fixture's network, converted into ours, in eval mode."""
    convert = load_script('convert_measnet')
    net = MEASNet(**our_options(fixture['authors_config']))
    net.load_state_dict(convert.convert_state_dict(fixture[state_key], net))
    return net.eval()


def test_parameter_count_of_the_paper_configuration_is_the_authors():
    with torch.device('meta'):
        assert sum(p.numel() for p in MEASNet().parameters()) == 31_680_752  # the authors' IRmodel()


def test_authors_small_fixture_gives_the_authors_outputs():
    fixture = load_fixture('measnet_authors_small.pt')
    net = converted(fixture)
    with torch.no_grad():
        for name in ('', '_2'):
            assert (net(fixture[f'input{name}']) - fixture[f'output{name}']).abs().max() <= PARITY


def test_authors_fixture_with_blocks_and_trained_batch_norm_gives_their_outputs_in_eval_and_training():
    """Restormer blocks, trained-looking BatchNorm statistics, a 512 px input whose third AFLB has a non-empty low
    band, and one training forward at batch 2 (noisy gating from the same seed, BatchNorm on the batch)."""
    fixture = load_fixture('measnet_authors_blocks.pt')
    net = converted(fixture, 'authors_state_dict_float16')
    large = fixture['input_large_uint8_half'].repeat_interleave(2, dim=2).repeat_interleave(2, dim=3).float() / 255
    with torch.no_grad():
        assert (net(fixture['input']) - fixture['output']).abs().max() <= PARITY
        assert (net(large)[..., ::4, ::4] - fixture['output_large_every_4th']).abs().max() <= PARITY
    assert fixture['large_half_sizes'][2] == (256, 256, 1, 1)
    net.train()
    torch.manual_seed(3)
    out = net(fixture['input_train'])
    assert (out - fixture['output_train']).abs().max() <= PARITY
    assert_close(net.aux_loss, fixture['aux_loss_train'], rtol=PARITY, atol=0)
    for level in range(3):
        assert_close(net.decoder[level].fdmee.split.norm.running_mean,
                     fixture['running_mean_after_train'][f'fe_mee{level + 1}'], rtol=0, atol=PARITY)


def test_none_of_the_authors_limits_is_ours():
    """Theirs runs in eval only at batch 1 (FD-MEE's top-k index), in training only at batch >= 2 (BatchNorm on one
    value per channel), only at sides that are multiples of 8 and >= 64 (the context's strided convs, the prompt's
    unpadded convs, the U-Net)."""
    net = converted(load_fixture('measnet_authors_blocks.pt', ), 'authors_state_dict_float16')
    x = torch.rand(3, 3, 72, 88, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert_close(net(x), torch.cat([net(x[i:i + 1]) for i in range(3)]), rtol=0, atol=PARITY)
    for size in [(1, 1), (5, 7), (20, 36), (33, 17)]:
        image = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            out = net.eval()(image)
        assert out.shape == image.shape and torch.isfinite(out).all()
        net.train()
        out = net(image[:1])
        (out.mean() + net.aux_loss).backward()
        assert out.shape == (1, 3, *size) and torch.isfinite(out).all()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
        net.zero_grad()


def test_authors_weights_at_input_scale_100_give_finite_outputs_and_gradients():
    """The authors' log(sum g * exp(out)) gives NaN here; ours is the stable logsumexp, and the top-k gates that
    underflow to 0 at this scale (checked) give no NaN gradient."""
    net = converted(load_fixture('measnet_authors_small.pt')).train()
    gates = []
    net.encoder[0].stp.router.register_forward_hook(lambda module, args, out: gates.append(out[1].detach()))
    x = 100 * torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    out = net(x)
    (out.mean() + net.aux_loss).backward()
    assert (gates[0] == 0).any()
    assert torch.isfinite(out).all() and torch.isfinite(net.aux_loss)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    with torch.no_grad():
        assert torch.isfinite(net.eval()(x[:1])).all()


def lightning_checkpoint(state_dict):
    """A checkpoint in the layout the authors' train.py writes (Lightning 2.x: their IRModel's weights under
    ``net.``, loop counters, ModelCheckpoint state, AdamW and scheduler states)."""
    return {'epoch': 149, 'global_step': 1000, 'pytorch-lightning_version': '2.0.1',
            'state_dict': {f'net.{key}': value for key, value in state_dict.items()},
            'loops': {'fit_loop': {'state_dict': {}, 'epoch_loop.state_dict': {'_batches_that_stepped': 1000}}},
            'callbacks': {"ModelCheckpoint{'monitor': None, 'mode': 'min'}": {
                'monitor': None, 'best_model_score': None, 'best_model_path': 'ckpt/epoch=149-step=1000.ckpt',
                'dirpath': 'ckpt', 'best_k_models': {}, 'kth_value': torch.tensor(float('inf'))}},
            'optimizer_states': [{'state': {0: {'step': torch.tensor(1000.0), 'exp_avg': torch.zeros(3)}},
                                  'param_groups': [{'lr': 2e-4, 'betas': (0.9, 0.999), 'params': [0]}]}],
            'lr_schedulers': [{'warmup_epochs': 15, 'max_epochs': 180, 'base_lrs': [2e-4], 'last_epoch': 149}]}


def test_converter_reads_a_lightning_checkpoint_and_writes_params(tmp_path):
    convert = load_script('convert_measnet')
    fixture = load_fixture('measnet_authors_small.pt')
    torch.save(lightning_checkpoint(fixture['authors_state_dict']), tmp_path / 'authors.ckpt')
    options = tmp_path / 'options.yml'
    options.write_text('network_g:\n  type: MEASNet\n  dim: 8\n  num_blocks: [0, 0, 0, 0]\n'
                       '  num_refinement_blocks: 0\n')
    convert.main([str(tmp_path / 'authors.ckpt'), str(tmp_path / 'ours.pth'), '-opt', str(options)])
    saved = torch.load(tmp_path / 'ours.pth', weights_only=True)
    assert list(saved) == ['params'] and not any(name.startswith('ours.pth.tmp') for name in os.listdir(tmp_path))
    net = MEASNet(dim=8, num_blocks=[0, 0, 0, 0], num_refinement_blocks=0)
    net.load_state_dict(saved['params'])
    with torch.no_grad():
        assert (net.eval()(fixture['input']) - fixture['output']).abs().max() <= PARITY


def test_converter_refuses_a_missing_key_an_extra_key_a_wrong_shape_and_a_wrong_constant_naming_it():
    convert = load_script('convert_measnet')
    state = load_fixture('measnet_authors_small.pt')['authors_state_dict']
    net = MEASNet(dim=8, num_blocks=[0, 0, 0, 0], num_refinement_blocks=0)
    missing = {k: v for k, v in state.items() if k != 'fe_mee2.low_block.block.proj.bias'}
    with pytest.raises(convert.ConversionError, match=r"our key 'decoder\.1\.fdmee\.low\.mese\.project_out\.bias'"):
        convert.convert_state_dict(missing, net)
    with pytest.raises(convert.ConversionError, match=r"authors' key 'block2\.extra_gate\.weight': no rule"):
        convert.convert_state_dict({**state, 'block2.extra_gate.weight': torch.zeros(1)}, net)
    with pytest.raises(convert.ConversionError, match=r"authors' key 'fe_mee4\.proj\.weight': no rule"):
        convert.convert_state_dict({**state, 'fe_mee4.proj.weight': torch.zeros(1)}, net)
    wrong = {**state, 'block1.cross_layer_low.kv.weight': torch.zeros(128, 32, 1, 1)}
    with pytest.raises(convert.ConversionError, match=r"'block1\.cross_layer_low\.kv\.weight': shape \(128, 32, 1, 1\) "
                                                      r"does not fit our 'decoder\.0\.aflb\.cross_high\.kv\.0\.weight'"):
        convert.convert_state_dict(wrong, net)
    with pytest.raises(convert.ConversionError, match=r"'stpg_g_mese2\.model\.std': expected the constant 1\.0"):
        convert.convert_state_dict({**state, 'stpg_g_mese2.model.std': torch.tensor([2.0])}, net)
    with pytest.raises(convert.ConversionError, match=r"has no place in this network"):
        convert.convert_state_dict(state, MEASNet(dim=8, num_blocks=[0, 0, 0, 0], num_refinement_blocks=0,
                                                  stp_levels=[1], stp_aux_levels=[]))
    with pytest.raises(convert.ConversionError, match=r"missing from the authors' checkpoint"):
        convert.convert_state_dict(state, MEASNet(dim=8, num_blocks=[1, 0, 0, 0], num_refinement_blocks=0))


def test_converter_refuses_a_file_that_needs_more_than_plain_types(tmp_path):
    """Loading is weights_only=True with nothing allowed beyond torch's own types: a pickled class is refused."""
    convert = load_script('convert_measnet')
    state = load_fixture('measnet_authors_small.pt')['authors_state_dict']
    torch.save({**lightning_checkpoint(state), 'hyper_parameters': argparse.Namespace(lr=2e-4)}, tmp_path / 'a.ckpt')
    with pytest.raises(convert.ConversionError, match=r'a\.ckpt: cannot be read as a checkpoint of plain tensors'):
        convert.read_authors_checkpoint(str(tmp_path / 'a.ckpt'))
    torch.save({'state_dict': {'model.patch_embed.proj.weight': torch.zeros(1)}}, tmp_path / 'b.ckpt')
    with pytest.raises(convert.ConversionError, match=r"'model\.patch_embed\.proj\.weight' is not under"):
        convert.read_authors_checkpoint(str(tmp_path / 'b.ckpt'))


def test_paper_routers_are_the_authors_noisy_top_2_of_6():
    with torch.device('meta'):
        net = MEASNet()
    routers = [m for m in net.modules() if isinstance(m, NoisyTopKRouter)]
    assert [(r.num_experts, r.top_k, r.noise) for r in routers] == [(6, 2, True)] * 3
    assert [level.stp_output for level in net.encoder] == [True, False, False]


def authors_options(name):
    with open(os.path.join(REPO_ROOT, 'options', name)) as f:
        return yaml.safe_load(f)


def test_authors_options_are_the_paper_protocol_on_the_authors_network():
    test = authors_options('test_MEASNet_3task_authors.yml')
    evaluation = authors_options('eval_MEASNet_3task_authors.yml')
    paper = [('BSD68_sigma15', 'denoise_15'), ('BSD68_sigma25', 'denoise_25'), ('BSD68_sigma50', 'denoise_50'),
             ('Rain100L', 'derain'), ('SOTS_outdoor', 'dehaze')]
    assert [(d['name'], d['task']) for _, d in sorted(test['datasets'].items())] == paper
    assert [(name, d['task']) for name, d in evaluation['datasets'].items()] == paper
    assert all(d['type'] == 'AllInOneTestDataset' and d['crop_base'] == 16 for d in evaluation['datasets'].values())
    assert {m: o['crop_border'] for m, o in test['val']['metrics'].items()} == {'psnr': 0, 'ssim': 0}
    assert not any(o['test_y_channel'] for o in test['val']['metrics'].values())
    assert evaluation['protocol'] == 'allinone'
    with torch.device('meta'):
        networks = [build_network(test['network_g']), build_network(evaluation['models'][0]['network'])]
    for net in networks:
        assert sum(p.numel() for p in net.parameters()) == 31_680_752
    assert test['path']['pretrain_network_g'] == evaluation['models'][0]['checkpoint']


def write_clean_images(folder, count=2, size=(64, 48)):
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    for i in range(count):
        img = cv2.resize(rng.integers(0, 256, (6, 5, 3)).astype(np.uint8), size, interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(os.path.join(folder, f'{i}.png'), img)


def test_converted_checkpoint_runs_in_test_py_and_evaluate_py_without_the_converter(tmp_path, experiment_name):
    """The user's sequence: convert, then BasicSR's test pipeline and the evaluation, each in its own process (so
    nothing of the converter is imported there), on the authors' options pointed at a small local set."""
    fixture = load_fixture('measnet_authors_small.pt')
    torch.save(lightning_checkpoint(fixture['authors_state_dict']), tmp_path / 'authors.ckpt')
    network = {'type': 'MEASNet', **our_options(fixture['authors_config'])}
    load_script('convert_measnet').convert(str(tmp_path / 'authors.ckpt'), str(tmp_path / 'ours.pth'), network)
    write_clean_images(str(tmp_path / 'bsd'))
    test = authors_options('test_MEASNet_3task_authors.yml')
    test.update(name=experiment_name, num_gpu=0, network_g={**test['network_g'], **network})
    test['datasets'] = {'test_1': {**test['datasets']['test_2'], 'dataroot_gt': str(tmp_path / 'bsd')}}
    test['path']['pretrain_network_g'] = str(tmp_path / 'ours.pth')
    test['val']['save_img'] = False
    evaluation = authors_options('eval_MEASNet_3task_authors.yml')
    evaluation.update(device='cpu', datasets={'BSD68_sigma25': {**evaluation['datasets']['BSD68_sigma25'],
                                                                'dataroot_gt': str(tmp_path / 'bsd')}})
    evaluation['models'][0].update(network=network, checkpoint=str(tmp_path / 'ours.pth'))
    outputs = {}
    for entry, opt, extra in (('basicsr_ea/test.py', test, []),
                              ('scripts/evaluate.py', evaluation, ['--results_root', str(tmp_path), '--no_progress'])):
        path = tmp_path / f'{os.path.basename(entry)}.yml'
        path.write_text(yaml.safe_dump(opt))
        proc = subprocess.run([sys.executable, entry, '-opt', str(path), *extra], cwd=REPO_ROOT, capture_output=True,
                              text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})
        outputs[entry] = proc.stdout + proc.stderr
        assert proc.returncode == 0, outputs[entry][-3000:]
    shutil.rmtree(os.path.join(REPO_ROOT, 'results', experiment_name), ignore_errors=True)
    psnr = float(re.search(r'# psnr: ([0-9.]+)', outputs['basicsr_ea/test.py']).group(1))
    with open(tmp_path / 'eval_MEASNet_3task_authors' / 'table.csv') as f:
        rows = list(csv.reader(f))
    evaluated = float(rows[1][rows[0].index('BSD68_sigma25 PSNR')])
    assert 10 < psnr < 50 and evaluated == pytest.approx(psnr, abs=1e-3)
