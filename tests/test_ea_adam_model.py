"""EAAdamModel: population training, the EA phase and its reports, errors, exact resume, and 2 processes."""
import copy
import os

import pytest
import torch
from basicsr.models import build_model
from builders import snapshot, tiny_ea_options
from helpers import logged_values, run_train


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {'lq': torch.rand(2, 3, 32, 32, generator=g), 'gt': torch.rand(2, 3, 128, 128, generator=g)}


def test_adam_phase_moves_every_individual_but_the_frozen_one(ea_opt):
    model = build_model(ea_opt)
    before = snapshot(model)
    model.feed_data(batch())
    model.optimize_parameters(current_iter=1)
    after = snapshot(model)
    assert all(torch.equal(a, b) for a, b in zip(before[0], after[0]))
    for i in (1, 2):
        assert any(not torch.equal(a, b) for a, b in zip(before[i], after[i]))
    assert {f'l_pix_{i}' for i in (1, 2)} <= set(model.log_dict) and 'l_pix_0' not in model.log_dict
    assert all(torch.isfinite(torch.tensor(v)) for v in model.log_dict.values())


def test_each_individual_moves_towards_its_own_preference(ea_opt, random_vgg19):
    """Three copies of one network, trained by Adam alone on the same batch with preferences (1, 0), (0.5, 0.5) and
    (0, 1) over (L1, perceptual): the distortion end reaches the lowest L1, the perception end the lowest perceptual
    loss, and the balanced one lies between them on both."""
    train = ea_opt['train']
    train['optim_g']['frozen'] = []
    train['ea'].update(interval=0, objectives=[{'type': 'l1'}, {'type': 'perceptual'}])
    train.pop('gan_opt')
    train['perceptual_opt'] = {'type': 'PerceptualLoss', 'layer_weights': {'conv3_4': 1.0}, 'vgg_type': 'vgg19',
                               'use_input_norm': True, 'perceptual_weight': 1.0, 'style_weight': 0, 'criterion': 'l1'}
    ea_opt['path']['pretrain_network_vgg'] = random_vgg19
    torch.manual_seed(0)
    model = build_model(ea_opt)
    for net in model.net_g[1:]:
        net.load_state_dict(model.net_g[0].state_dict())
    model.feed_data(batch())
    for it in range(1, 21):
        model.optimize_parameters(current_iter=it)
    with torch.no_grad():
        outputs = [net(model.lq) for net in model.net_g]
        l1 = [model.cri_pix(sr, model.gt).item() for sr in outputs]
        percep = [model.cri_perceptual(sr, model.gt)[0].item() for sr in outputs]
    assert l1[0] < l1[1] < l1[2]
    assert percep[2] < percep[1] < percep[0]


def test_ea_phase_writes_table_plot_and_keeps_frozen_anchor(ea_opt):
    model = build_model(ea_opt)
    anchor = snapshot(model)[0]
    model.feed_data(batch())
    model.optimize_parameters(current_iter=4)  # interval 4: the EA phase runs after this step
    report = model.last_ea_report
    assert report['objectives'].shape == (3, 2) and report['generations'] == 2
    assert all(torch.equal(a, b) for a, b in zip(anchor, model.net_g[0].parameters()))
    assert model.optimizer_g.state == {}  # Adam moments reset after the weights moved
    ea_dir = os.path.join(ea_opt['path']['experiments_root'], 'ea')
    assert sorted(os.listdir(ea_dir)) == ['front_4.png', 'objectives_4.md']
    with open(os.path.join(ea_dir, 'objectives_4.md')) as f:
        table = f.read()
    assert '| individual | l1 before | l1 after | psnr before | psnr after |' in table and 'hypervolume' in table
    assert f'distinct individuals: before 3, after {report["distinct"]} of 3' in table
    assert f'archive: 0 -> {len(model.archive)} members' in table and 1 <= len(model.archive) <= 10
    psnr_after = -report['objectives'][:, 1]
    assert ((psnr_after > 5) & (psnr_after < 50)).all()  # reported in dB, as the metric's own direction
    assert 0 < model.log_dict['ea_hypervolume'] <= 1.21 + 1e-9  # normalised, ref point (1.1, 1.1)


def test_fitness_ground_truth_side_is_prepared_once_per_phase(ea_opt, monkeypatch):
    from basicsr_ea.models import fitness
    calls = []
    original = fitness.L1Objective.prepare
    monkeypatch.setattr(fitness.L1Objective, 'prepare', lambda self, gt: calls.append(1) or original(self, gt))
    model = build_model(ea_opt)
    model.feed_data(batch())
    model.optimize_parameters(current_iter=4)
    n_batches = -(-model.fitness_lq.shape[0] // ea_opt['train']['ea']['batch_size'])
    assert len(calls) == n_batches


@pytest.mark.parametrize('option', ['channels_last', 'nnpack'])
def test_ea_phase_decides_alike_with_each_speed_option_on_or_off(ea_opt, monkeypatch, option):
    """Each option reaches the evaluator, and the phase takes the same decisions either way. For NNPACK the generator
    is widened to 64 channels, where its convolutions take that path."""
    from basicsr_ea.models import fitness
    settings, results = [], {}
    original = fitness.FitnessEvaluator.__init__

    def recording_init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        settings.append(self.lq.is_contiguous(memory_format=torch.channels_last) if option == 'channels_last'
                        else self.nnpack)
    monkeypatch.setattr(fitness.FitnessEvaluator, '__init__', recording_init)
    if option == 'nnpack':
        ea_opt['network_g'].update(num_feat=64, num_block=1)
    for on in (True, False):
        ea_opt['train']['ea'][option] = on
        torch.manual_seed(0)
        model = build_model(ea_opt)
        model.feed_data(batch())
        model.optimize_parameters(current_iter=4)
        results[on] = model.last_ea_report, snapshot(model)
    assert settings == [True, False] or (option == 'nnpack' and not fitness.nnpack_usable())
    (report, weights), (report_off, weights_off) = results[True], results[False]
    assert report['replacements'] == report_off['replacements']
    torch.testing.assert_close(report['objectives'], report_off['objectives'], rtol=1e-6, atol=0)
    assert all(torch.equal(a, b) for net, net_off in zip(weights, weights_off) for a, b in zip(net, net_off))


def test_non_finite_loss_skips_only_that_individual(ea_opt, caplog, monkeypatch):
    from basicsr.utils import get_root_logger
    model = build_model(ea_opt)
    monkeypatch.setattr(get_root_logger(), 'propagate', True)  # BasicSR's logger hides from caplog
    before = snapshot(model)
    broken = model.net_g[2]
    original_forward = broken.forward
    broken.forward = lambda x: original_forward(x) * float('nan')
    model.feed_data(batch())
    model.optimize_parameters(current_iter=1)
    after = snapshot(model)
    assert all(torch.equal(a, b) for a, b in zip(before[2], after[2]))
    assert any(not torch.equal(a, b) for a, b in zip(before[1], after[1]))
    assert all(torch.isfinite(p).all() for net in after for p in net)
    assert 'individual 2 has a non-finite loss' in caplog.text


@pytest.mark.parametrize('change, error, message', [
    (lambda o: o['train'].update(population_size=1), ValueError, 'at least 2'),
    (lambda o: o['train']['optim_g'].update(ref_dirs=[[1.0, 0.0], [0.0, 1.0]]), ValueError, 'one row per individual'),
    (lambda o: o['train']['ea']['fitness'].update(dataroot_gt='/no/such/folder'), FileNotFoundError, '/no/such'),
    (lambda o: o['train']['ea']['fitness'].update(patch_size=4096), ValueError, 'no image is at least 4096'),
    (lambda o: o['train']['ea']['fitness'].update(max_patches_per_image=1, num_images=2), ValueError,
     'fewer than the population'),
    (lambda o: o['train']['ea']['objectives'].__setitem__(1, {'type': 'fid'}), ValueError,
     "unknown EA objective 'fid'"),
    (lambda o: o['train']['ea'].update(intervall=3), ValueError, 'train.ea.intervall: unknown option'),
    (lambda o: o['train']['ea'].update(interval='often'), ValueError, 'train.ea.interval: expected int'),
    (lambda o: o['train']['ea'].update(max_replacement=1), ValueError, 'train.ea.max_replacement: unknown option'),
    (lambda o: o['train']['ea'].update(max_replacements=0), ValueError, 'train.ea.max_replacements: must be pos'),
    (lambda o: o['train']['ea'].update(archive_size=1.5), ValueError, 'train.ea.archive_size: expected int'),
    (lambda o: o['train']['ea'].update(archive_size=1), ValueError, 'train.ea.archive_size: must be 0'),
    (lambda o: o['train']['ea'].update(channels_last='yes'), ValueError, 'train.ea.channels_last: expected bool'),
    (lambda o: o['train']['ea'].update(nnpack=1), ValueError, 'train.ea.nnpack: expected bool'),
    (lambda o: o['train'].update(optim_g={'type': 'Adam', 'lr': 1e-4}), ValueError, 'optim_g.type: must be .*EAAdam'),
])
def test_bad_options_are_clear_errors(ea_opt, change, error, message):
    change(ea_opt)
    with pytest.raises(error, match=message):
        build_model(ea_opt)


def test_empty_fitness_folder_is_an_error(ea_opt, tmp_path):
    for sub in ('gt', 'lq'):
        (tmp_path / sub).mkdir()
    ea_opt['train']['ea']['fitness'].update(dataroot_gt=str(tmp_path / 'gt'), dataroot_lq=str(tmp_path / 'lq'))
    with pytest.raises(ValueError, match='holds no images'):
        build_model(ea_opt)


def test_end_to_end_saves_population_and_validates_each_individual(demo_data, experiment_name, tmp_path):
    exp_dir, output = run_train(tiny_ea_options(experiment_name, demo_data), tmp_path)
    models = sorted(os.listdir(os.path.join(exp_dir, 'models')))
    for i in range(3):
        assert {f'net_g_{i}_4.pth', f'net_g_{i}_8.pth', f'net_g_{i}_latest.pth', f'net_d_{i}_8.pth'} <= set(models)
    assert {'net_g_archive_0_8.pth', 'net_g_archive_0_latest.pth'} <= set(models)
    assert sorted(os.listdir(os.path.join(exp_dir, 'ea'))) == ['front_4.png', 'front_8.png', 'objectives_4.md',
                                                                'objectives_8.md']
    for i in range(3):
        assert 15 < logged_values(output, f'# psnr_{i}')[-1] < 40


def test_auto_resume_after_a_stop_reproduces_the_uninterrupted_run(demo_data, experiment_name, tmp_path):
    opt = tiny_ea_options(experiment_name, demo_data, total_iter=12)
    opt['logger']['save_checkpoint_freq'] = 6  # the stop falls between two EA phases (iters 4, 8, 12)
    exp_dir, _ = run_train(opt, tmp_path)
    models = os.path.join(exp_dir, 'models')
    uninterrupted = [torch.load(os.path.join(models, f'net_g_{i}_latest.pth'), weights_only=True) for i in range(3)]
    archived = {name: torch.load(os.path.join(models, name), weights_only=True)['params'] for name in os.listdir(models)
                if name.startswith('net_g_archive_') and name.endswith('_latest.pth')}
    archived_6 = {name for name in os.listdir(models) if name.startswith('net_g_archive_') and name.endswith('_6.pth')}
    assert archived and archived_6  # the archive is saved, and restored below before the EA phases at 8 and 12
    for name in os.listdir(models):
        if not name.endswith('_6.pth'):
            os.remove(os.path.join(models, name))
    os.remove(os.path.join(exp_dir, 'training_states', '12.state'))
    _, output = run_train(opt, tmp_path, '--auto_resume')
    assert 'iter: 6.' in output
    for i in range(3):
        resumed = torch.load(os.path.join(models, f'net_g_{i}_latest.pth'), weights_only=True)['params']
        for key, value in uninterrupted[i]['params'].items():
            assert torch.equal(value, resumed[key]), (i, key)
    assert {name for name in os.listdir(models) if name.startswith('net_g_archive_') and
            name.endswith('_latest.pth')} == set(archived)
    for name, state in archived.items():
        resumed = torch.load(os.path.join(models, name), weights_only=True)['params']
        assert all(torch.equal(value, resumed[key]) for key, value in state.items()), name


def test_resume_with_another_population_size_is_refused(demo_data, experiment_name, tmp_path):
    opt = tiny_ea_options(experiment_name, demo_data)
    run_train(opt, tmp_path)
    opt['train']['population_size'] = 2
    opt['train']['optim_g']['n_neighbors'] = 2
    _, output = run_train(opt, tmp_path, '--auto_resume', check=False)
    assert 'holds more individuals than population_size=2' in output


def test_two_processes_hold_identical_populations(demo_data, experiment_name, tmp_path):
    opt = tiny_ea_options(experiment_name, demo_data)
    _, output = run_train(opt, tmp_path, launcher=2)
    assert output.count('population identical on all 2 ranks') == 2  # checked after each EA phase


def test_discriminator_update_matches_basicsr_esrgan(ea_opt):
    """One discriminator step of an individual equals BasicSR's ESRGANModel step from the same weights and batch."""
    model = build_model(ea_opt)
    esrgan_opt = copy.deepcopy(ea_opt)
    esrgan_opt['model_type'] = 'ESRGANModel'
    esrgan_opt['train'] = {key: ea_opt['train'][key] for key in ('pixel_opt', 'gan_opt', 'optim_d', 'scheduler')}
    esrgan_opt['train']['optim_g'] = {'type': 'Adam', 'lr': 1e-4}
    esrgan = build_model(esrgan_opt)
    esrgan.net_g.load_state_dict(model.net_g[1].state_dict())
    esrgan.net_d.load_state_dict(model.net_d[1].state_dict())
    data = batch()
    model.feed_data(data)
    model.optimize_parameters(current_iter=1)
    esrgan.feed_data(data)
    esrgan.optimize_parameters(current_iter=1)
    for ours, theirs in zip(model.net_d[1].parameters(), esrgan.net_d.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert model.log_dict['l_d_real_1'] == pytest.approx(esrgan.log_dict['l_d_real'], rel=1e-5)
    assert model.log_dict['l_g_gan_1'] == pytest.approx(esrgan.log_dict['l_g_gan'], rel=1e-5)


def test_interval_zero_is_the_fixed_preference_baseline(ea_opt):
    ea_opt['train']['ea']['interval'] = 0
    model = build_model(ea_opt)
    model.feed_data(batch())
    for it in (4, 8):
        model.optimize_parameters(current_iter=it)
    assert model.optimizer_g.ea_phases == 0 and model.optimizer_g.state != {}
    assert not os.listdir(os.path.join(ea_opt['path']['experiments_root'], 'ea'))


def test_two_processes_train_like_one_with_the_same_global_batch(fixed_patch_data, random_vgg19, experiment_name,
                                                                   one_and_two_processes):
    """2 processes x batch 2 against 1 process x batch 4, four Adam steps, then an EA phase. The discriminator's batch
    norm sees each process's batch only, so the perception side here is the perceptual loss (random VGG weights).

    Tolerance: the all-reduce sums in another order than one process does (differences ~1e-7), and Adam's
    ``m / sqrt(v)`` turns such a difference into up to ``lr`` per step where an element's normalised gradient is near
    zero (every element's first step is ``lr * sign``). So: at least 90% of the weights agree to 1e-5, and every weight
    to 2 x lr x steps; an EA decision taken differently on the two runs would copy another child (differences of the
    weights' own size) and fail the bound."""
    opt = tiny_ea_options(experiment_name, fixed_patch_data, total_iter=4)
    opt['datasets']['train'].update(use_hflip=False, use_rot=False, dataset_enlarge_ratio=1)
    opt['path']['pretrain_network_vgg'] = random_vgg19
    opt['train'].pop('gan_opt')
    opt['train']['perceptual_opt'] = {'type': 'PerceptualLoss', 'layer_weights': {'conv2_2': 1.0, 'conv3_4': 1.0},
                                      'vgg_type': 'vgg19', 'use_input_norm': True, 'perceptual_weight': 1.0,
                                      'style_weight': 0, 'criterion': 'l1'}
    opt['train']['ea'].update(interval=4, objectives=[{'type': 'l1'}, {'type': 'perceptual'}])
    opt['train']['ea']['fitness'].update(dataroot_gt=os.path.join(fixed_patch_data, 'train', 'HR'),
                                         dataroot_lq=os.path.join(fixed_patch_data, 'train', 'LR_bicubic_x4'),
                                         num_images=8, patch_size=64, max_patches_per_image=1)
    diffs = one_and_two_processes(opt, [f'net_g_{i}_latest.pth' for i in range(3)])
    lr, steps = opt['train']['optim_g']['lr'], opt['train']['total_iter']
    assert (diffs <= 1e-5).float().mean() >= 0.9 and diffs.max() <= 2 * lr * steps, (diffs.max(), diffs.mean())
