"""Network interpolation (``basicsr_ea.interpolation``, ``scripts/interpolate.py``): alpha 0 and 1 give the inputs
bit for bit, values in between are the weighted means, checkpoints of different networks are errors naming what
differs, and a population's most perceptual individual is the one its measured objective ranks best."""
import os
import re

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from basicsr.archs import build_network
from builders import BACKBONES
from helpers import REPO_ROOT, load_options
from scripts_loader import load_script

from basicsr_ea.checkpoints import CheckpointError, build_and_load
from basicsr_ea.interpolation import InterpolationError, interpolate_states
from basicsr_ea.options import OptionError

NETWORK = BACKBONES['MSRResNet']


def random_state(network, seed):
    torch.manual_seed(seed)
    return build_network(network).state_dict()


@pytest.mark.parametrize('arch', sorted(BACKBONES))
def test_alpha_0_and_1_return_the_inputs_exactly(arch):
    a, b = random_state(BACKBONES[arch], 0), random_state(BACKBONES[arch], 1)
    for alpha, expected in ((0, a), (1, b), (0.0, a), (1.0, b)):
        state = interpolate_states(a, b, alpha)
        assert state.keys() == expected.keys()
        assert all(torch.equal(state[key], value) and state[key].dtype == value.dtype
                   for key, value in expected.items())


def test_values_between_are_the_weighted_means():
    a = {'w': torch.tensor([0., 4., -2.]), 'index': torch.tensor([3, 1])}
    b = {'w': torch.tensor([2., 8., 2.]), 'index': torch.tensor([3, 1])}
    assert interpolate_states(a, b, 0.25)['w'].tolist() == [0.5, 5.0, -1.0]  # exact in binary floating point
    assert interpolate_states(a, b, 0.5)['w'].tolist() == [1.0, 6.0, 0.0]
    assert interpolate_states(a, b, 0.5)['index'].tolist() == [3, 1]  # integer buffers copied, not mixed
    a_net, b_net = random_state(NETWORK, 0), random_state(NETWORK, 1)
    mid = interpolate_states(a_net, b_net, 0.3)
    for key in a_net:
        torch.testing.assert_close(mid[key], 0.7 * a_net[key] + 0.3 * b_net[key], rtol=0, atol=1e-6)


def test_mismatched_states_are_errors_naming_the_key():
    a = random_state(NETWORK, 0)
    wider = random_state(dict(NETWORK, num_feat=16), 1)
    with pytest.raises(InterpolationError, match=r'conv_first.weight has shape \(8, 3, 3, 3\) in the first network, '
                                                 r'\(16, 3, 3, 3\) in the second'):
        interpolate_states(a, wider, 0.5)
    with pytest.raises(InterpolationError, match=r"1 only in the first \['conv_last.bias'\]"):
        interpolate_states(a, {k: v for k, v in a.items() if k != 'conv_last.bias'}, 0.5)
    with pytest.raises(InterpolationError, match='conv_hr.weight is torch.float32 in the first network, torch.float64'):
        interpolate_states(a, dict(a, **{'conv_hr.weight': a['conv_hr.weight'].double()}), 0.5)
    with pytest.raises(InterpolationError, match='index .* differs between the networks'):
        interpolate_states({'index': torch.tensor([0, 1])}, {'index': torch.tensor([1, 0])}, 0.5)
    with pytest.raises(InterpolationError, match='alpha must be in'):
        interpolate_states(a, a, 1.5)


def write_fitness_pair(root):
    """One 8 px random LR image and, as its 32 px HR, its bilinear x4 upscale (what MSRResNet adds its residual
    to), rounded to 8 bits: an MSRResNet whose last conv outputs the constant s has L1 s on it (within 0.5/255)."""
    lq = torch.randint(0, 256, (1, 3, 8, 8), generator=torch.Generator().manual_seed(0)).float()
    gt = F.interpolate(lq, scale_factor=4, mode='bilinear', align_corners=False).round()
    folders = []
    for name, img in (('gt', gt), ('lq', lq)):
        os.makedirs(os.path.join(root, name))
        cv2.imwrite(os.path.join(root, name, 'a.png'), img[0].permute(1, 2, 0).numpy().astype(np.uint8))
        folders.append(os.path.join(root, name))
    return folders


def write_options(tmp_path, network=NETWORK):
    """Options naming the arch and, for a population, the EA's objectives (PSNR, L1) and a fitness set."""
    gt, lq = write_fitness_pair(str(tmp_path / 'fitness'))
    opt = {'scale': 4, 'network_g': network,
           'train': {'ea': {'interval': 0, 'objectives': [{'type': 'psnr'}, {'type': 'l1'}],
                            'fitness': {'dataroot_gt': gt, 'dataroot_lq': lq, 'patch_size': 32}}}}
    path = tmp_path / 'options.yml'
    path.write_text(yaml.safe_dump(opt))
    return str(path)


def save(path, state, key='params'):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({key: state}, path)
    return str(path)


def test_script_writes_plain_checkpoints_at_each_alpha(tmp_path):
    a = save(tmp_path / 'psnr.pth', random_state(NETWORK, 0))
    b = save(tmp_path / 'gan.pth', random_state(NETWORK, 1), key='model_state_dict')  # the authors' format
    out = str(tmp_path / 'interp' / 'net_g_alpha{alpha}.pth')
    _, outputs = load_script('interpolate').main(['-opt', write_options(tmp_path), '--a', a, '--b', b,
                                                  '--alphas', '0', '0.5', '1', '--out', out])
    assert [os.path.basename(p) for p in outputs] == ['net_g_alpha0.pth', 'net_g_alpha0.5.pth', 'net_g_alpha1.pth']
    assert all(list(torch.load(p, weights_only=True)) == ['params'] for p in outputs)
    nets = [build_and_load(NETWORK, p).state_dict() for p in (a, outputs[0], outputs[2])]
    assert all(torch.equal(nets[0][k], nets[1][k]) for k in nets[0])
    assert all(torch.equal(torch.load(b, weights_only=True)['model_state_dict'][k], nets[2][k]) for k in nets[0])


@pytest.mark.parametrize('case', ['other arch', 'several alphas, one path', 'output over an input', 'alpha > 1'])
def test_script_refuses_what_cannot_be_interpolated(tmp_path, case):
    a = save(tmp_path / 'psnr.pth', random_state(NETWORK, 0))
    b = save(tmp_path / 'gan.pth', random_state(NETWORK, 1))
    args, error, message = ['--alphas', '0.5', '--out', str(tmp_path / 'out.pth')], OptionError, None
    if case == 'other arch':
        b = save(tmp_path / 'wide.pth', random_state(dict(NETWORK, num_feat=16), 1))
        error, message = CheckpointError, r'wide.pth does not fit this MSRResNet: conv_first.weight has shape'
    elif case == 'several alphas, one path':
        args[1:2] = ['0.3', '0.6']
        message = 'several alphas need {alpha}'
    elif case == 'output over an input':
        args[-1] = a
        message = 'would overwrite an input checkpoint'
    else:
        args[1] = '1.5'
        error, message = InterpolationError, r'alpha must be in \[0, 1\], got 1.5'
    with pytest.raises(error, match=message):
        load_script('interpolate').main(['-opt', write_options(tmp_path), '--a', a, '--b', b, *args, '--debug'])
    assert not os.path.exists(tmp_path / 'out.pth')


def test_population_folder_gives_its_most_perceptual_individual(tmp_path, capsys):
    """Individuals whose output is the bilinear upscale plus 0.2, 0.1 and 0: the last objective (L1, after PSNR:
    the last decides) ranks the third best and measures each shift."""
    from basicsr_ea.checkpoints import population_file
    folder = tmp_path / 'population'
    for i, shift in enumerate((0.2, 0.1, 0.0)):
        state = random_state(NETWORK, i)
        state['conv_last.weight'].zero_()
        state['conv_last.bias'].fill_(shift)
        save(folder / population_file(i, 'latest'), state)
    a, opt = save(tmp_path / 'psnr.pth', random_state(NETWORK, 5)), write_options(tmp_path)
    b_path, _ = load_script('interpolate').main(['-opt', opt, '--a', a, '--b', str(folder),
                                                 '--alphas', '0.5', '--out', str(tmp_path / 'mid.pth')])
    assert os.path.basename(b_path) == 'net_g_2_latest.pth'
    lines = capsys.readouterr().out.splitlines()
    values = [float(line.split('l1 ')[1].split()[0]) for line in lines[:3]]
    assert values[0] > values[1] > values[2] and lines[2].endswith('<- most perceptual')
    assert all(abs(value - shift) < 0.5 / 255 for value, shift in zip(values, (0.2, 0.1, 0.0)))
    # the best individual is --a itself (the population's frozen start model): skipped, the next best is taken
    b_path, _ = load_script('interpolate').main(['-opt', opt, '--a', b_path, '--b', str(folder),
                                                 '--alphas', '0.5', '--out', str(tmp_path / 'mid.pth')])
    assert os.path.basename(b_path) == 'net_g_1_latest.pth'
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == 'net_g_2_latest.pth: skipped: the weights of --a' and lines[1].endswith('<- most perceptual')


def test_demo_evaluates_the_interpolation_it_makes_and_archives_it():
    """``scripts/run_demo.sh`` writes the checkpoints the nine rows of ``options/eval_demo.yml`` read (one front),
    and moves every run folder the evaluation reads aside before a second demo."""
    with open(os.path.join(REPO_ROOT, 'scripts', 'run_demo.sh')) as f:
        script = f.read()
    call = script[script.index('scripts/interpolate.py'):].split('\nstep')[0]
    alphas = [float(a) for a in re.search(r'--alphas ([0-9. ]+) --out', call)[1].split()]
    out = re.search(r"--out '([^']+)'", call)[1]
    rows = [m for m in load_options(os.path.join(REPO_ROOT, 'options', 'eval_demo.yml'))['models']
            if m.get('front_label') == 'Network interpolation']
    assert alphas == [k / 10 for k in range(1, 10)]
    assert [row['checkpoint'] for row in rows] == [out.format(alpha=f'{alpha:g}') for alpha in alphas]
    archived = re.search(r'for run in ([^;]+); do', script)[1].split()
    evaluated = load_options(os.path.join(REPO_ROOT, 'options', 'eval_demo.yml'))['models']
    folders = {re.match(r'experiments/([^/]+)/', m.get('checkpoint') or m['population'] + '/')[1] for m in evaluated}
    assert folders <= set(archived), folders - set(archived)
