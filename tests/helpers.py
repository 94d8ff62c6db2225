"""Run ``basicsr_ea/train.py`` on an options dict, as a user would, and read what it leaves behind."""
import os
import re
import shutil
import subprocess
import sys

import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_OPTIONS = os.path.join(REPO_ROOT, 'options', 'train_SRResNet_demo.yml')


def load_options(path):
    with open(path) as f:
        return yaml.safe_load(f)


def point_at_demo_data(opt, data_root, backend='disk'):
    """Rewrite the demo data paths of ``opt`` to ``data_root`` (folders or LMDB)."""
    suffix = '.lmdb' if backend == 'lmdb' else ''
    for phase, dataset in opt['datasets'].items():
        split = 'train' if phase == 'train' else 'val'
        dataset['dataroot_gt'] = os.path.join(data_root, split, 'HR' + suffix)
        dataset['dataroot_lq'] = os.path.join(data_root, split, 'LR_bicubic_x4' + suffix)
        dataset['io_backend'] = {'type': backend}
    return opt


def run_train(opt, tmp_path, *args, env=None, check=True, launcher=None, entry=None):
    """Run the training entry point (or the script ``entry`` that wraps it) on ``opt`` (written to ``tmp_path``);
    returns (experiment folder, output)."""
    opt_path = os.path.join(tmp_path, f"{opt['name']}.yml")
    with open(opt_path, 'w') as f:
        yaml.safe_dump(opt, f)
    entry = entry or os.path.join(REPO_ROOT, 'basicsr_ea', 'train.py')
    cmd = [sys.executable, entry, '-opt', opt_path, *args]
    if launcher is not None:
        cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', str(launcher), '--master_port',
               str(29500 + os.getpid() % 1000)] + cmd[1:] + ['--launcher', 'pytorch']
    env = {**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})}  # see the one_torch_thread fixture in conftest.py
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=env)
    output = proc.stdout + proc.stderr
    if check and proc.returncode != 0:
        raise AssertionError(f'training failed ({proc.returncode}):\n{output[-6000:]}')
    return os.path.join(REPO_ROOT, 'experiments', opt['name']), output


def remove_experiment(name):
    for folder in ('experiments', 'tb_logger'):
        shutil.rmtree(os.path.join(REPO_ROOT, folder, name), ignore_errors=True)


def logged_values(output, key):
    """Every value logged for ``key`` (e.g. ``l_pix`` or ``psnr``) in a BasicSR training log, in order."""
    return [float(v) for v in re.findall(rf'{key}: ?([-+0-9.e]+)', output)]
