"""End to end through basicsr_ea/train.py with a stock BasicSR arch, from folders and LMDB, and exact resume."""
import os

import pytest
import torch
from builders import tiny_demo_options
from helpers import logged_values, remove_experiment, run_train


@pytest.mark.parametrize('backend', ['disk', 'lmdb'])
def test_training_learns_checkpoints_and_validates(demo_data, experiment_name, tmp_path, backend):
    opt = tiny_demo_options(experiment_name, demo_data, backend)
    exp_dir, output = run_train(opt, tmp_path)
    losses = logged_values(output, 'l_pix')
    assert len(losses) == 60 and sum(losses[-10:]) < 0.5 * sum(losses[:10]), losses
    psnr = logged_values(output, '# psnr')
    assert len(psnr) == 2 and 15 < psnr[-1] < 40
    for file_name in ('net_g_30.pth', 'net_g_60.pth', 'net_g_latest.pth'):
        params = torch.load(os.path.join(exp_dir, 'models', file_name), weights_only=True)['params']
        assert 'conv_first.weight' in params
    assert sorted(os.listdir(os.path.join(exp_dir, 'training_states'))) == ['30.state', '60.state']


def test_auto_resume_reproduces_the_uninterrupted_run(demo_data, experiment_name, tmp_path):
    opt = tiny_demo_options(experiment_name, demo_data, total_iter=30)
    exp_dir, _ = run_train(opt, tmp_path)
    models = os.path.join(exp_dir, 'models')
    uninterrupted = torch.load(os.path.join(models, 'net_g_latest.pth'), weights_only=True)['params']
    for stale in ('net_g_30.pth', 'net_g_latest.pth', os.path.join('..', 'training_states', '30.state')):
        os.remove(os.path.join(models, stale))
    _, output = run_train(opt, tmp_path, '--auto_resume')
    assert 'Resuming training from epoch' in output and 'iter: 15.' in output
    resumed = torch.load(os.path.join(models, 'net_g_latest.pth'), weights_only=True)['params']
    for key, value in uninterrupted.items():
        assert torch.equal(value, resumed[key]), key


def test_sigkill_while_saving_then_auto_resume_finishes_like_an_uninterrupted_run(demo_data, experiment_name,
                                                                                   tmp_path):
    opt = tiny_demo_options(experiment_name, demo_data, total_iter=30)
    opt['logger']['save_checkpoint_freq'] = 10
    exp_dir, _ = run_train(opt, tmp_path)
    models = os.path.join(exp_dir, 'models')
    uninterrupted = torch.load(os.path.join(models, 'net_g_latest.pth'), weights_only=True)['params']
    remove_experiment(experiment_name)
    # saves: net_g_10, 10.state, net_g_20, 20.state -> killed while writing 20.state
    _, output = run_train(opt, tmp_path, entry=os.path.join(os.path.dirname(__file__), 'kill_during_save.py'),
                          env={'KILL_AT_SAVE': '4'}, check=False)
    states = os.path.join(exp_dir, 'training_states')
    assert sorted(n for n in os.listdir(states) if n.endswith('.state')) == ['10.state']  # 20.state never landed
    assert any('.tmp' in n for n in os.listdir(states))  # the write the kill interrupted
    _, output = run_train(opt, tmp_path, '--auto_resume')
    assert 'iter: 10.' in output
    resumed = torch.load(os.path.join(models, 'net_g_latest.pth'), weights_only=True)['params']
    for key, value in uninterrupted.items():
        assert torch.equal(value, resumed[key]), key
