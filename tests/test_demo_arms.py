"""The demo's two arms, EA-Adam and Adam alone, are the same experiment but for the EA phase: scripts/run_demo.sh
trains both from options/train_EAAdam_demo.yml, and nothing but the EA keys (and the run's name) may differ; the EA
phase draws from none of the global generators the data pipeline uses, so both arms see the same batches."""
import os
import random
import shlex
import sys

import numpy as np
import torch
from basicsr.models import build_model
from basicsr.utils.options import parse_options
from helpers import REPO_ROOT

EA_DEMO = 'options/train_EAAdam_demo.yml'


def demo_arm_commands():
    """The arguments after ``basicsr_ea/train.py`` of every run_demo.sh command that trains from the EA-Adam demo
    options, in order."""
    with open(os.path.join(REPO_ROOT, 'scripts', 'run_demo.sh')) as f:
        script = f.read().replace('\\\n', ' ')
    commands = []
    for line in script.splitlines():
        words = shlex.split(line, comments=True)
        if 'basicsr_ea/train.py' in words:
            args = words[words.index('basicsr_ea/train.py') + 1:]
            if args[:2] == ['-opt', EA_DEMO]:
                commands.append(args)
    return commands


def parsed(args, monkeypatch):
    """The options BasicSR's train pipeline makes of these command-line arguments."""
    args = [os.path.join(REPO_ROOT, a) if a == EA_DEMO else a for a in args]
    monkeypatch.setattr(sys, 'argv', ['train.py', *args])
    return parse_options(REPO_ROOT, is_train=True)[0]


def flat(opt, prefix=''):
    items = {}
    for key, value in opt.items():
        if isinstance(value, dict):
            items.update(flat(value, f'{prefix}{key}.'))
        else:
            items[f'{prefix}{key}'] = value
    return items


def test_adam_arm_differs_from_ea_arm_only_in_the_ea_phase(monkeypatch):
    commands = demo_arm_commands()
    assert len(commands) == 2, commands  # EA-Adam, then Adam alone
    ea, adam = (flat(parsed(args, monkeypatch)) for args in commands)
    assert ea.keys() == adam.keys()
    differing = {key for key in ea if ea[key] != adam[key]}
    run_folders = {key for key in differing if key.startswith('path.') and adam['name'] in str(adam[key])}
    assert differing - run_folders == {'name', 'train.ea.interval'}
    assert ea['train.ea.interval'] > 0 and adam['train.ea.interval'] == 0
    # what makes the comparison fair, spelled out (the diff above already covers it)
    for key in ('manual_seed', 'path.pretrain_network_g', 'train.total_iter', 'train.perceptual_opt.type',
                'train.gan_opt.loss_weight', 'datasets.train.batch_size_per_gpu', 'train.optim_g.seed'):
        assert ea[key] == adam[key] and ea[key] is not None, key


def test_ea_phase_leaves_the_global_generators_alone(ea_opt):
    """Random crops and flips (Python's random), BasicSR's sampler and the networks' init (torch) and NumPy: an EA
    phase drawing from them would give the EA arm other batches than the Adam arm after its first phase."""
    model = build_model(ea_opt)
    g = torch.Generator().manual_seed(0)
    model.feed_data({'lq': torch.rand(2, 3, 32, 32, generator=g), 'gt': torch.rand(2, 3, 128, 128, generator=g)})
    model.optimize_parameters(current_iter=1)
    states = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    model.run_ea_phase(current_iter=1)
    assert model.last_ea_report['generations'] == ea_opt['train']['ea']['generations']
    assert random.getstate() == states[0]
    assert np.array_equal(np.random.get_state()[1], states[1]) and torch.equal(torch.get_rng_state(), states[2])


def test_seed_given_on_the_command_line_seeds_the_run(monkeypatch):
    """Arms are compared over seeds with ``--force_yml manual_seed=N``; BasicSR seeds before applying it."""
    from basicsr_ea.compat import PipelineRepairs
    args = ['-opt', os.path.join(REPO_ROOT, EA_DEMO), '--force_yml', 'manual_seed=5']
    monkeypatch.setattr(sys, 'argv', ['train.py', *args])
    with PipelineRepairs(check_options=lambda opt: None):
        import basicsr.train
        opt, _ = basicsr.train.parse_options(REPO_ROOT, is_train=True)
    drawn = torch.rand(4), np.random.random(), random.random()
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    assert opt['manual_seed'] == 5
    assert torch.equal(drawn[0], torch.rand(4)) and drawn[1:] == (np.random.random(), random.random())
