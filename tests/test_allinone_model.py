"""AllInOneModel: the auxiliary loss's gradient and log, per-task validation with the cross-task average, and BasicSR
mixing both ways (MEASNet under SRModel, a stock arch under AllInOneModel)."""
import os
from copy import deepcopy

import cv2
import numpy as np
import pytest
import torch
from basicsr.data import build_dataloader, build_dataset
from basicsr.models import build_model
from basicsr.utils.registry import ARCH_REGISTRY
from builders import model_options
from helpers import REPO_ROOT, load_options, logged_values, run_train
from scripts_loader import load_script
from torch import nn
from torch.nn import functional as F

SIZE = 24


@ARCH_REGISTRY.register()
class AuxToyNet(nn.Module):
    """One conv with a residual, whose auxiliary loss (mean squared activation) depends on the weights."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.aux_loss = torch.zeros(())

    def forward(self, x):
        feat = self.conv(x)
        self.aux_loss = feat.pow(2).mean() if self.training else torch.zeros(())
        return x + feat


def random_batch(seed, batch=2):
    generator = torch.Generator().manual_seed(seed)
    gt = torch.rand(batch, 3, SIZE, SIZE, generator=generator)
    return {'lq': (gt + 0.1 * torch.randn(gt.shape, generator=generator)).clamp(0, 1), 'gt': gt}


@pytest.mark.parametrize('aux_weight', [0.001, 0.5])
def test_aux_loss_gradient_is_that_of_l1_plus_weighted_aux(aux_weight):
    torch.manual_seed(0)
    opt = model_options({'type': 'AuxToyNet'})
    opt['train']['aux_weight'] = aux_weight
    model = build_model(opt)
    reference = AuxToyNet()  # not a deepcopy, which would copy the model's forward hook too
    reference.load_state_dict(model.net_g.state_dict())
    data = random_batch(0)
    model.feed_data(data)
    model.optimize_parameters(1)
    output = reference(data['lq'])
    (F.l1_loss(output, data['gt']) + aux_weight * reference.aux_loss).backward()
    for (name, param), expected in zip(model.net_g.named_parameters(), reference.parameters()):
        assert torch.allclose(param.grad, expected.grad, atol=1e-7), name
    assert model.get_current_log()['l_aux'] == pytest.approx(reference.aux_loss.item(), rel=1e-6)
    assert model.get_current_log()['l_pix'] == pytest.approx(F.l1_loss(output, data['gt']).item(), rel=1e-6)


def test_stock_arch_trains_as_under_srmodel():
    network_g = {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_conv': 2, 'upscale': 1}
    data = random_batch(1)
    grads = {}
    for model_type in ('SRModel', 'AllInOneModel'):
        torch.manual_seed(0)
        model = build_model({**model_options(network_g), 'model_type': model_type})
        model.feed_data(data)
        model.optimize_parameters(1)
        grads[model_type] = [p.grad.clone() for p in model.net_g.parameters()]
        assert 'l_aux' not in model.get_current_log()
    for ours, stock in zip(grads['AllInOneModel'], grads['SRModel']):
        assert torch.equal(ours, stock)


def test_metric_options_default_to_rgb_without_border_crop():
    opt = model_options({'type': 'AuxToyNet'}, psnr={'type': 'calculate_psnr'},
                        ssim={'type': 'calculate_ssim', 'crop_border': 4, 'test_y_channel': True})
    given = deepcopy(opt)
    model = build_model(opt)
    assert opt == given
    assert model.opt['val']['metrics']['psnr'] == {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}
    assert model.opt['val']['metrics']['ssim']['crop_border'] == 4  # an explicit choice stands (with a warning)


class ScalarRecorder:
    """Stands in for TensorBoard's SummaryWriter."""

    def __init__(self):
        self.scalars = {}

    def add_scalar(self, tag, value, step):
        self.scalars[(tag, step)] = value


def val_loader(root, task, seed):
    """A one-task validation loader over three small images (the degraded ones: noise of ``seed``)."""
    rng = np.random.default_rng(seed)
    for i in range(3):
        clean = cv2.resize(rng.integers(0, 256, (6, 6, 3)).astype(np.uint8), (SIZE, SIZE))
        for folder, img in (('target', clean), ('input', np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255))):
            os.makedirs(os.path.join(root, task, folder), exist_ok=True)
            cv2.imwrite(os.path.join(root, task, folder, f'{i}.png'), img.astype(np.uint8))
    opt = {'name': task, 'type': 'AllInOneTestDataset', 'phase': 'val', 'task': task, 'io_backend': {'type': 'disk'},
           'dataroot_gt': os.path.join(root, task, 'target'), 'dataroot_lq': os.path.join(root, task, 'input')}
    return build_dataloader(build_dataset(opt), opt)


def test_validation_logs_each_task_and_their_average(tmp_path):
    torch.manual_seed(0)
    model = build_model(model_options({'type': 'AuxToyNet'}, val_names=('deblur', 'enhance')))
    loaders = [val_loader(str(tmp_path), task, seed) for seed, task in enumerate(('deblur', 'enhance'))]
    tb_logger = ScalarRecorder()
    for current_iter in (5, 10):
        model.validation(loaders[0], current_iter, tb_logger)
        assert ('metrics/average/psnr', current_iter) not in tb_logger.scalars  # one task of two is no average
        model.validation(loaders[1], current_iter, tb_logger)
        for metric in ('psnr', 'ssim'):
            per_task = [tb_logger.scalars[(f'metrics/{task}/{metric}', current_iter)] for task in ('deblur', 'enhance')]
            assert per_task[0] != per_task[1]
            assert tb_logger.scalars[(f'metrics/average/{metric}', current_iter)] == pytest.approx(np.mean(per_task))
    best = model.best_metric_results['average']['psnr']
    assert best['val'] == max(tb_logger.scalars[('metrics/average/psnr', i)] for i in (5, 10))


def test_stock_arch_trains_under_allinone_model_on_allinone_data(tmp_path):
    """SwinIR (BasicSR's, tiny) on AllInOneTrainDataset batches, through build_dataset/build_dataloader/build_model."""
    for i in range(2):
        clean = cv2.resize(np.random.default_rng(i).integers(0, 256, (4, 4, 3)).astype(np.uint8), (32, 32))
        os.makedirs(tmp_path / 'Denoise', exist_ok=True)
        cv2.imwrite(str(tmp_path / 'Denoise' / f'{i}.png'), clean)
    data_opt = {'name': 'train', 'type': 'AllInOneTrainDataset', 'phase': 'train', 'scale': 1,
                'dataroot': str(tmp_path), 'de_type': ['denoise_25', 'denoise_50'], 'io_backend': {'type': 'disk'},
                'gt_size': 16, 'use_hflip': True, 'use_rot': True, 'batch_size_per_gpu': 4, 'num_worker_per_gpu': 0}
    loader = build_dataloader(build_dataset(data_opt), data_opt, num_gpu=0)
    network_g = {'type': 'SwinIR', 'upscale': 1, 'in_chans': 3, 'img_size': 16, 'window_size': 4, 'img_range': 1.,
                 'depths': [1], 'embed_dim': 12, 'num_heads': [2], 'mlp_ratio': 2, 'upsampler': '',
                 'resi_connection': '1conv'}
    torch.manual_seed(0)
    model = build_model(model_options(network_g))
    before = [p.detach().clone() for p in model.net_g.parameters()]
    for current_iter, batch in enumerate(loader, 1):
        assert set(batch['task']) <= {'denoise_25', 'denoise_50'} and batch['lq'].shape == (4, 3, 16, 16)
        assert batch['task_id'].tolist() == [{'denoise_25': 1, 'denoise_50': 2}[task] for task in batch['task']]
        model.feed_data(batch)
        model.optimize_parameters(current_iter)
        assert 0 < model.get_current_log()['l_pix'] < 1 and 'l_aux' not in model.get_current_log()
    assert current_iter == 3  # 2 images x 2 tasks x 3 repeats, 4 a batch
    assert all(not torch.equal(p, q) for p, q in zip(model.net_g.parameters(), before) if p.requires_grad)


NARROW_MEASNET = {'type': 'MEASNet', 'dim': 16, 'num_blocks': [1, 1, 1, 1], 'num_refinement_blocks': 1,
                  'num_experts': 4, 'top_k': 2, 'prompt_dim': 32, 'num_prompts': 4}


def test_measnet_trains_under_stock_srmodel_on_paired_images(tmp_path):
    """MEASNet is an ordinary BasicSR arch: SRModel trains it on PairedImageDataset and ignores its aux loss."""
    rng = np.random.default_rng(0)
    for i in range(2):
        clean = cv2.resize(rng.integers(0, 256, (4, 4, 3)).astype(np.uint8), (20, 28))  # not a multiple of 8
        for folder, img in (('gt', clean), ('lq', np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255))):
            os.makedirs(tmp_path / folder, exist_ok=True)
            cv2.imwrite(str(tmp_path / folder / f'{i}.png'), img.astype(np.uint8))
    data_opt = {'name': 'paired', 'type': 'PairedImageDataset', 'phase': 'train', 'scale': 1,
                'dataroot_gt': str(tmp_path / 'gt'), 'dataroot_lq': str(tmp_path / 'lq'),
                'io_backend': {'type': 'disk'}, 'gt_size': 16, 'use_hflip': True, 'use_rot': True,
                'batch_size_per_gpu': 2, 'num_worker_per_gpu': 0}
    torch.manual_seed(0)
    model = build_model({**model_options(NARROW_MEASNET), 'model_type': 'SRModel'})
    before = deepcopy(model.net_g.state_dict())
    for current_iter, batch in enumerate(build_dataloader(build_dataset(data_opt), data_opt, num_gpu=0), 1):
        model.feed_data(batch)
        model.optimize_parameters(current_iter)
    assert list(model.get_current_log()) == ['l_pix'] and 0 < model.get_current_log()['l_pix'] < 1
    assert not torch.equal(before['output.weight'], model.net_g.state_dict()['output.weight'])
    val_opt = {**data_opt, 'phase': 'val'}
    model.feed_data(next(iter(build_dataloader(build_dataset(val_opt), val_opt))))
    model.test()
    assert model.output.shape == model.gt.shape == (1, 3, 28, 20)


def test_measnet_aux_loss_reaches_its_gates_and_few_steps_lower_the_loss():
    batch = random_batch(2, batch=2)
    grads, logs = {}, {}
    for model_type in ('SRModel', 'AllInOneModel'):
        torch.manual_seed(0)
        model = build_model({**model_options(NARROW_MEASNET), 'model_type': model_type})
        model.feed_data(batch)
        torch.manual_seed(1)  # the same noisy gating in both runs
        model.optimize_parameters(1)
        grads[model_type] = {name: p.grad.clone() for name, p in model.net_g.named_parameters() if p.grad is not None}
        logs[model_type] = model.get_current_log()
    assert logs['AllInOneModel']['l_pix'] == pytest.approx(logs['SRModel']['l_pix'], rel=1e-6)
    assert logs['AllInOneModel']['l_aux'] > 0 and 'l_aux' not in logs['SRModel']
    changed = [name for name, grad in grads['AllInOneModel'].items() if not torch.equal(grad, grads['SRModel'][name])]
    assert changed and all(name.startswith(('encoder', 'prompt')) for name in changed), changed
    losses = [logs['AllInOneModel']['l_pix']]
    for current_iter in range(2, 16):
        model.feed_data(batch)
        model.optimize_parameters(current_iter)
        losses.append(model.get_current_log()['l_pix'])
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


def test_demo_options_train_and_log_each_task_and_the_average(experiment_name, tmp_path):
    data_root = str(tmp_path / 'allinone_demo')
    load_script('make_allinone_demo').make_allinone_demo(data_root)
    opt = load_options(os.path.join(REPO_ROOT, 'options', 'train_MEASNet_demo.yml'))
    for dataset in opt['datasets'].values():
        for key in ('dataroot', 'dataroot_gt', 'dataroot_lq'):
            if key in dataset:
                dataset[key] = dataset[key].replace('datasets/allinone_demo', data_root)
    opt['name'] = experiment_name
    opt['datasets']['train'].update(gt_size=32, batch_size_per_gpu=2)
    opt['train'].update(total_iter=4, warmup_iter=-1)
    opt['train']['scheduler']['periods'] = [2, 2]
    opt['val']['val_freq'] = 100  # only the validation after training
    opt['logger'].update(print_freq=1, save_checkpoint_freq=100, use_tb_logger=False)
    _, output = run_train(opt, tmp_path)
    assert len(logged_values(output, 'l_pix')) == 4 and all(v > 0 for v in logged_values(output, 'l_aux'))
    tasks = [opt['datasets'][f'val_{i}']['name'] for i in range(1, 6)]
    psnr = dict(zip(tasks + ['average'], logged_values(output, '# psnr')))
    assert [line.split('Validation ')[1] for line in output.splitlines() if 'INFO: Validation ' in line] == tasks + [
        'average']
    assert psnr['average'] == pytest.approx(np.mean([psnr[task] for task in tasks]), abs=1e-3)
    assert all(5 < value < 40 for value in psnr.values()), psnr


@pytest.mark.parametrize('setting', ['3task', '5task', 'demo'])
def test_train_and_test_options_agree(setting):
    train, test = (load_options(os.path.join(REPO_ROOT, 'options', f'{phase}_MEASNet_{setting}.yml'))
                   for phase in ('train', 'test'))
    val_sets = [dataset for phase, dataset in sorted(train['datasets'].items()) if phase != 'train']
    assert val_sets == [dataset for _, dataset in sorted(test['datasets'].items())]
    assert {dataset['task'] for dataset in val_sets} <= set(train['datasets']['train']['de_type'])
    assert train['network_g'] == test['network_g'] and train['model_type'] == test['model_type'] == 'AllInOneModel'
    schedule = train['train']
    # warm-up, then one cosine from the peak: BasicSR restarts 2 iterations after the first period's length
    assert schedule['scheduler']['periods'][0] == schedule['warmup_iter'] - 2
    assert sum(schedule['scheduler']['periods']) == schedule['total_iter']
    if setting != 'demo':
        network = ARCH_REGISTRY.get('MEASNet')(**{k: v for k, v in train['network_g'].items() if k != 'type'})
        assert 31.5e6 < sum(p.numel() for p in network.parameters()) < 32e6  # the paper's 31.7 M
        assert schedule['optim_g']['type'] == 'AdamW' and schedule['optim_g']['lr'] == 2e-4
        assert train['datasets']['train']['gt_size'] == 128 and train['datasets']['train']['batch_size_per_gpu'] == 8


def test_two_processes_train_like_one_with_the_same_global_batch(fixed_patch_data, experiment_name,
                                                                   one_and_two_processes):
    """A narrow MEASNet under AllInOneModel, 2 processes x batch 2 against 1 process x batch 4 (4 iterations), on
    the 32 px LR patches as both input and target (an identity task: any fixed pairs do, crops draw nothing).
    DDP needs ``find_unused_parameters`` (each image uses 2 of the experts of every ensemble). Three things are off
    here, on purpose:

    - ``gate_noise: false``: STP-G-MESE's training noise comes from each process's own random stream (BasicSR seeds
      rank r with seed + r), so with it on no two runs route alike.
    - ``lowpass_batch_norm: false``: FD-MEE's BatchNorm (the authors') normalises each process's own batch.
    - ``aux_weight: 0``: the load-balancing loss is a cv^2 over the tokens of the process's own batch, which does not
      decompose over processes. With it on, DDP trains the average of the per-process load balances (as the
      authors' code does under DDP), not the load balance of the global batch.

    Tolerance, as for EA-Adam: the all-reduce sums in another order than one process does (differences ~1e-7), and
    Adam's ``m / sqrt(v)`` turns such a difference into up to ``lr`` per step where an element's gradient is near
    zero. So: at least 99.5% of the weights agree to 1e-5, and every weight to 2 x lr x steps."""
    opt = load_options(os.path.join(REPO_ROOT, 'options', 'train_MEASNet_demo.yml'))
    lr_folder = {split: os.path.join(fixed_patch_data, split, 'LR_bicubic_x4') for split in ('train', 'val')}
    opt['datasets'] = {
        'train': {'name': 'patches', 'type': 'PairedImageDataset', 'dataroot_gt': lr_folder['train'],
                  'dataroot_lq': lr_folder['train'], 'io_backend': {'type': 'disk'}, 'gt_size': 32,
                  'use_hflip': False, 'use_rot': False, 'num_worker_per_gpu': 0, 'dataset_enlarge_ratio': 1,
                  'prefetch_mode': None},
        'val': {'name': 'patches_val', 'type': 'PairedImageDataset', 'dataroot_gt': lr_folder['val'],
                'dataroot_lq': lr_folder['val'], 'io_backend': {'type': 'disk'}}}
    assert opt['find_unused_parameters'] is True
    opt['network_g'].update(gate_noise=False, lowpass_batch_norm=False)
    opt['train'].update(aux_weight=0, total_iter=4, warmup_iter=-1)
    opt['train']['scheduler']['periods'] = [2, 2]
    opt['val']['val_freq'] = 100  # only the validation after training
    opt['logger'].update(print_freq=1, save_checkpoint_freq=100, use_tb_logger=False)
    diffs = one_and_two_processes(opt)
    lr, steps = opt['train']['optim_g']['lr'], opt['train']['total_iter']
    assert (diffs <= 1e-5).float().mean() >= 0.995 and diffs.max() <= 2 * lr * steps, (diffs.max(), diffs.mean())
