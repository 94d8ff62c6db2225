"""FusionModel trains only the routers, with each GAN variant, and resumes exactly; the options match the EA-Adam
runs they fuse; the collapsed checkpoint loads in plain BasicSR and reproduces the fused network."""
import copy
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.archs import build_network
from basicsr.models import build_model
from builders import BACKBONE, ROUTER, fusion, in_process, randomize_routers, tiny_fusion_options
from helpers import REPO_ROOT, load_options, logged_values, point_at_demo_data, run_train
from scripts_loader import load_script


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {'lq': torch.rand(2, 3, 32, 32, generator=g), 'gt': torch.rand(2, 3, 128, 128, generator=g)}


def train_steps(model, steps, first=1):
    for it in range(first, first + steps):
        model.feed_data(batch(it))
        model.optimize_parameters(it)


def router_state(model):
    return {name: p.detach().clone() for name, p in model.net_g.named_parameters()}


def test_training_moves_only_the_routers(run_files, tmp_path):
    models, d_path = run_files
    opt = in_process(tiny_fusion_options('unit', models, d_path), tmp_path)
    opt['train']['optim_g']['lr'] = 1e-2  # random experts give the routers' inner layers tiny gradients
    model = build_model(opt)
    assert opt['train']['optim_g']['type'] == 'Adam'  # the options were not consumed
    for key, value in torch.load(d_path, weights_only=True)['params'].items():
        assert torch.equal(model.net_d.state_dict()[key], value)  # the discriminator starts as the EA stage's
    routers = router_state(model)
    assert sum(len(group['params']) for group in model.optimizer_g.param_groups) == len(routers)
    train_steps(model, 2)
    assert {'l_g_pix', 'l_g_gan', 'l_d_real', 'l_d_fake'} <= set(model.log_dict)
    after = router_state(model)
    outputs = [name for name in routers if '.router.head.2.' in name]
    assert len(outputs) == 2 * len(model.net_g.layers)
    for name in outputs:  # every router's output layer (which starts at zero) moves
        assert not torch.equal(routers[name], after[name]), name
    for name, param in model.net_g.named_parameters():  # and the layers before it learn: the second step's gradients
        assert param.grad is not None and param.grad.abs().max() > 0, name  # (~1e-14 here, below Adam's eps)
    experts = [torch.load(os.path.join(models, f'net_g_{k}_latest.pth'), weights_only=True)['params']
               for k in range(3)]
    for name, layer in model.net_g.layers.items():
        for k in range(3):
            assert torch.equal(layer.weight[k], experts[k][f'{name}.weight'])
            assert torch.equal(layer.bias[k], experts[k][f'{name}.bias'])


@pytest.mark.parametrize('variant, d_calls', [('relativistic', 5), ('vanilla', 3), ('no_gan', 0)])
def test_gan_variants(variant, d_calls, run_files, tmp_path):
    """ESRGAN's step calls the discriminator 5 times (2 for G, 3 for D), SRGAN's 3 times; without gan_opt there is
    no discriminator at all and only net_g is saved."""
    opt = in_process(tiny_fusion_options('unit', *run_files), tmp_path)
    opt['train']['relativistic_gan'] = variant == 'relativistic'
    if variant == 'no_gan':
        del opt['train']['gan_opt']
    model = build_model(opt)
    calls = []
    if variant != 'no_gan':
        model.net_d.register_forward_hook(lambda *args: calls.append(1))
    train_steps(model, 1)
    assert len(calls) == d_calls
    assert ('l_pix' in model.log_dict) == (variant == 'no_gan')
    model.save(0, 1)
    assert sorted(os.listdir(tmp_path / 'models')) == (['net_g_1.pth'] if variant == 'no_gan' else
                                                        ['net_d_1.pth', 'net_g_1.pth'])


def test_resume_gives_identical_outputs(run_files, tmp_path):
    opt = in_process(tiny_fusion_options('unit', *run_files), tmp_path)
    model = build_model(opt)
    train_steps(model, 2)
    model.save(0, 2)
    saved = torch.load(tmp_path / 'models' / 'net_g_2.pth', weights_only=True)['params']
    assert set(saved) == set(router_state(model))  # the experts come from their own files, not from net_g
    resumed_opt = copy.deepcopy(opt)
    resumed_opt['path'].update(pretrain_network_g=str(tmp_path / 'models' / 'net_g_2.pth'),
                               pretrain_network_d=str(tmp_path / 'models' / 'net_d_2.pth'))
    resumed = build_model(resumed_opt)
    resumed.resume_training(torch.load(tmp_path / 'training_states' / '2.state', weights_only=True))
    train_steps(model, 2, first=3)
    train_steps(resumed, 2, first=3)
    for name, value in router_state(model).items():
        assert torch.equal(value, router_state(resumed)[name]), name
    with torch.no_grad():
        assert torch.equal(model.net_g(batch(9)['lq']), resumed.net_g(batch(9)['lq']))


def test_options_fuse_the_ea_adam_runs_they_name():
    for fusion_file, ea_file in (('train_Fusion_demo.yml', 'train_EAAdam_demo.yml'),
                                 ('train_Fusion_x4.yml', 'train_EAAdam_x4.yml')):
        fusion_opt, ea_opt = (load_options(os.path.join(REPO_ROOT, 'options', f)) for f in (fusion_file, ea_file))
        net_g = fusion_opt['network_g']
        assert fusion_opt['model_type'] == 'FusionModel' and net_g['type'] == 'PopulationFusion'
        assert net_g['backbone'] == ea_opt['network_g'] and fusion_opt['network_d'] == ea_opt['network_d']
        assert net_g['experts'] == f'experiments/{ea_opt["name"]}/models'
        assert fusion_opt['path']['pretrain_network_d'].startswith(net_g['experts'] + '/net_d_')
    paper = load_options(os.path.join(REPO_ROOT, 'options', 'train_Fusion_x4.yml'))
    train = paper['train']
    assert (train['pixel_opt']['loss_weight'], train['perceptual_opt']['perceptual_weight'],
            train['gan_opt']['loss_weight'], train['optim_g']['lr']) == (0.1, 1.0, 0.005, 5e-5)
    assert (paper['network_g']['router_channels'], paper['network_g']['router_hidden']) == ([64, 64, 100], 15)


PLAIN_BASICSR = """
import json, sys, types
import torch
import torchvision.transforms.functional as F
# Plain BasicSR, nothing of basicsr-ea: only the one alias BasicSR 1.4.2 needs to import on this torchvision
# (basicsr_ea/compat.py adds the same); importing basicsr_ea here would defeat the test.
shim = types.ModuleType('torchvision.transforms.functional_tensor')
shim.rgb_to_grayscale = F.rgb_to_grayscale
sys.modules['torchvision.transforms.functional_tensor'] = shim
from basicsr.models.sr_model import SRModel
network_g, checkpoint, lq_path, out_path = json.loads(sys.argv[1])
model = SRModel({'is_train': False, 'dist': False, 'num_gpu': 0, 'network_g': network_g,
                 'path': {'pretrain_network_g': checkpoint, 'strict_load_g': True}})
model.feed_data({'lq': torch.load(lq_path)})
model.test()
torch.save(model.output, out_path)
assert not any(name.startswith('basicsr_ea') for name in sys.modules)
"""


def test_collapsed_checkpoint_loads_in_plain_basicsr(run_files, tmp_path):
    models, _ = run_files
    net = randomize_routers(fusion(models, BACKBONE))
    checkpoint = str(tmp_path / 'net_g_fusion.pth')
    torch.save({'params': net.state_dict()}, checkpoint)
    opt_path = tmp_path / 'fusion.yml'
    opt_path.write_text(yaml.safe_dump({'network_g': dict(type='PopulationFusion', backbone=BACKBONE, experts=models,
                                                          **ROUTER)}))
    calib = tmp_path / 'calib'
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i, size in enumerate((16, 20, 24)):
        cv2.imwrite(str(calib / f'{i}.png'), (rng.random((size, size, 3)) * 255 * (1 - i / 4)).astype(np.uint8))
    out = str(tmp_path / 'collapsed' / 'MSRResNet_fused.pth')
    collapse = load_script('collapse_fusion')
    collapse.main(['-opt', str(opt_path), '--checkpoint', checkpoint, '--calib', str(calib), '--out', out])

    loaded = collapse.load_fusion(str(opt_path), checkpoint)
    weights = collapse.calibrate(loaded, collapse.calibration_images(str(calib)))
    by_hand = []
    with torch.no_grad():
        for i in range(3):
            image = cv2.cvtColor(cv2.imread(str(calib / f'{i}.png')), cv2.COLOR_BGR2RGB)
            with loaded.calibration() as one:
                loaded(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
            by_hand.append(one.mean_weights())
    for name, mean in weights.items():
        torch.testing.assert_close(mean, sum(w[name] for w in by_hand) / 3, rtol=0, atol=1e-6)

    lq = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), loaded.forced_weights(weights):
        expected = loaded(lq)
    torch.save(lq, tmp_path / 'lq.pth')
    args = json.dumps([BACKBONE, out, str(tmp_path / 'lq.pth'), str(tmp_path / 'sr.pth')])
    proc = subprocess.run([sys.executable, '-c', PLAIN_BASICSR, args], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert proc.returncode == 0, proc.stderr[-3000:]
    torch.testing.assert_close(torch.load(tmp_path / 'sr.pth'), expected, rtol=0, atol=1e-5)
    with torch.no_grad(), loaded.forced_weights(torch.full((3, ), 1 / 3)):
        assert (loaded(lq) - expected).abs().max() > 1e-4  # the calibrated weights matter


@pytest.mark.parametrize('processes', [None, 2])
def test_training_pipeline_end_to_end(processes, demo_data, experiment_name, run_files, tmp_path):
    """BasicSR's own train.py on the demo options, in one process and in two (DDP, gloo): 2 iterations, validation,
    checkpoints that the collapse reads."""
    opt = point_at_demo_data(tiny_fusion_options(experiment_name, *run_files), demo_data)
    opt['datasets']['train']['batch_size_per_gpu'] = 2
    opt['train']['total_iter'] = 2
    opt['val']['val_freq'] = 2
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False)
    exp_dir, output = run_train(opt, tmp_path, launcher=processes)
    assert len(logged_values(output, 'l_g_pix')) == 2 and 10 < logged_values(output, 'psnr')[-1] < 50
    assert {'net_g_latest.pth', 'net_d_latest.pth', 'net_g_2.pth'} <= set(os.listdir(os.path.join(exp_dir, 'models')))
    out = str(tmp_path / 'collapsed.pth')
    load_script('collapse_fusion').collapse_fusion(os.path.join(exp_dir, f'{experiment_name}.yml'),
                                                   os.path.join(exp_dir, 'models', 'net_g_latest.pth'),
                                                   os.path.join(demo_data, 'val', 'LR_bicubic_x4'), out)
    state = torch.load(out, weights_only=True)['params']
    assert list(state) == list(build_network(BACKBONE).state_dict())


def test_two_processes_train_like_one_with_the_same_global_batch(fixed_patch_data, experiment_name, run_files,
                                                                   one_and_two_processes):
    """2 processes x batch 2 against 1 process x batch 4 (4 iterations of the routers) on patches of exactly the
    training size. L1 only, without ``gan_opt``: the VGGStyleDiscriminator's batch norm sees each process's batch
    only, so with the GAN on, two processes train another discriminator (and so another generator) than one.

    Tolerance, as for EA-Adam: the all-reduce sums in another order than one process does (differences ~1e-7), and
    Adam's ``m / sqrt(v)`` turns such a difference into up to ``lr`` per step where an element's gradient is near
    zero. So: at least 99.5% of the weights agree to 1e-5, and every weight to 2 x lr x steps."""
    opt = point_at_demo_data(tiny_fusion_options(experiment_name, *run_files), fixed_patch_data)
    opt['datasets']['train'].update(use_hflip=False, use_rot=False, dataset_enlarge_ratio=1)
    opt['train'].pop('gan_opt')
    opt['train']['total_iter'] = 4
    opt['val']['val_freq'] = 100  # only the validation after training
    opt['logger'].update(print_freq=1, save_checkpoint_freq=100, use_tb_logger=False)
    diffs = one_and_two_processes(opt)
    lr, steps = opt['train']['optim_g']['lr'], opt['train']['total_iter']
    assert (diffs <= 1e-5).float().mean() >= 0.995 and diffs.max() <= 2 * lr * steps, (diffs.max(), diffs.mean())
