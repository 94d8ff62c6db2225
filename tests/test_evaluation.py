"""scripts/evaluate.py and basicsr_ea.evaluation on tiny generated test sets and checkpoints: values equal BasicSR's
own SRModel validation exactly, tables have the papers' layout, missing weights and too-small images say why."""
import csv
import os

import cv2
import numpy as np
import pytest
import torch
from basicsr.archs import build_network
from basicsr.data import build_dataloader, build_dataset
from basicsr.models.sr_model import SRModel
from scripts_loader import load_script

from basicsr_ea.evaluation import AVERAGE, evaluate, run_evaluation
from basicsr_ea.evaluation.inputs import ModelOptions, expand_models
from basicsr_ea.checkpoints import CheckpointError
from basicsr_ea.options import OptionError, parse
from builders import save_random_backbone

SR_NET = {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 4}
DENOISE_NET = {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_conv': 2,
               'upscale': 1}
NO_LEARNED_METRICS = {'lpips': None, 'dists': None, 'niqe': None}


def write_image(path, height, width, seed):
    """A smooth random BGR image: structure at a few scales, like a natural image's."""
    coarse = np.random.default_rng(seed).uniform(0, 255, (height // 6 + 2, width // 6 + 2, 3)).astype(np.float32)
    img = np.clip(cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC), 0, 255).round()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, img.astype(np.uint8))
    return img.astype(np.uint8)


def write_pairs(root, sizes, scale=4, seed=0):
    """``root/HR`` and ``root/LR`` with one pair per (name, HR height, HR width); LR is the HR's size // scale."""
    for k, (name, height, width) in enumerate(sizes):
        hr = write_image(os.path.join(root, 'HR', f'{name}.png'), height, width, seed + k)
        lr = cv2.resize(hr, (width // scale, height // scale), interpolation=cv2.INTER_AREA)
        os.makedirs(os.path.join(root, 'LR'), exist_ok=True)
        cv2.imwrite(os.path.join(root, 'LR', f'{name}.png'), lr)
    return {'dataroot_gt': os.path.join(root, 'HR'), 'dataroot_lq': os.path.join(root, 'LR')}


def save_checkpoint(path, network, seed, key='params'):
    torch.manual_seed(seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({key: build_network(network).state_dict()}, path)
    return path


@pytest.fixture(scope='module')
def sr_data(tmp_path_factory):
    """Two x4 test sets (``small``: 2 images, one of them not a multiple of 4 a side, as in Set14; ``big``: one
    200x104 image, NIQE-sized after a 4 px crop), one checkpoint and a population of four."""
    root = tmp_path_factory.mktemp('eval')
    small = write_pairs(str(root / 'small'), [('a', 48, 40), ('b', 42, 50)])
    big = write_pairs(str(root / 'big'), [('c', 104, 200)], seed=5)
    population = root / 'population'
    for i in range(4):
        save_checkpoint(str(population / f'net_g_{i}_latest.pth'), SR_NET, seed=10 + i)
    save_checkpoint(str(population / 'net_g_1_120.pth'), SR_NET, seed=20)
    save_checkpoint(str(population / 'net_d_0_latest.pth'), SR_NET, seed=21)
    return {'root': root, 'small': small, 'big': big, 'population': str(population),
            'checkpoint': save_checkpoint(str(root / 'psnr' / 'net_g_latest.pth'), SR_NET, seed=1)}


def sr_options(sr_data, datasets=('small', ), metrics=None, **extra):
    return {
        'name': 'pytest_eval', 'scale': 4, 'device': 'cpu',
        'models': [{'label': 'PSNR model', 'network': SR_NET, 'checkpoint': sr_data['checkpoint']}],
        'datasets': {name: sr_data[name] for name in datasets},
        'metrics': NO_LEARNED_METRICS if metrics is None else metrics, **extra
    }


def basicsr_validation(network, checkpoint, dataset_opt, scale, metrics):
    """What BasicSR's own SRModel logs as validation metrics for a checkpoint (its test.py / train.py path)."""
    opt = {'name': 'pytest_reference', 'model_type': 'SRModel', 'is_train': False, 'dist': False, 'num_gpu': 0,
           'rank': 0, 'world_size': 1, 'scale': scale, 'network_g': dict(network),
           'path': {'pretrain_network_g': checkpoint, 'param_key_g': 'params', 'strict_load_g': True},
           'val': {'metrics': metrics, 'save_img': False}}
    model = SRModel(opt)
    dataset_opt = dict(dataset_opt, name='reference', type='PairedImageDataset', io_backend={'type': 'disk'},
                       phase='val', scale=scale)
    loader = build_dataloader(build_dataset(dataset_opt), dataset_opt, num_gpu=0, dist=False)
    model.nondist_validation(loader, current_iter=0, tb_logger=None, save_img=False)
    return model.metric_results


def test_psnr_ssim_equal_basicsr_srmodel_validation(sr_data):
    table = run_evaluation(sr_options(sr_data, datasets=('small', 'big')), progress=False)
    metrics = {name: {'type': f'calculate_{name}', 'crop_border': 4, 'test_y_channel': True}
               for name in ('psnr', 'ssim')}
    for dataset in ('small', 'big'):
        reference = basicsr_validation(SR_NET, sr_data['checkpoint'], sr_data[dataset], 4, metrics)
        assert table.value('PSNR model', dataset, 'psnr') == reference['psnr']
        assert table.value('PSNR model', dataset, 'ssim') == reference['ssim']
    assert 10 < table.value('PSNR model', 'small', 'psnr') < 60


def test_tables_plot_and_not_applicable_cells(sr_data, tmp_path):
    alexnet_path = str(tmp_path / 'alexnet.pth')
    save_random_backbone('alexnet', alexnet_path)
    missing_vgg = str(tmp_path / 'missing' / 'vgg16.pth')
    opt = sr_options(sr_data, datasets=('small', 'big'),
                     metrics={'lpips': {'backbone_path': alexnet_path}, 'dists': {'backbone_path': missing_vgg}})
    opt['models'].append({'label': 'EA #{i}', 'network': SR_NET, 'population': sr_data['population']})
    table = evaluate(opt, str(tmp_path / 'results'), progress=False)
    labels = ['PSNR model', 'EA #0', 'EA #1', 'EA #2', 'EA #3']
    folder = tmp_path / 'results' / 'pytest_eval'

    with open(folder / 'table.csv', newline='') as f:
        rows = list(csv.reader(f))
    metric_titles = ('PSNR', 'SSIM', 'LPIPS', 'DISTS', 'NIQE')
    assert rows[0] == ['model'] + [f'{d} {m}' for d in ('small', 'big') for m in metric_titles]
    assert [row[0] for row in rows[1:]] == labels
    markdown = (folder / 'table.md').read_text()
    header = '| Model | small PSNR↑ | small SSIM↑ | small LPIPS↓ | small DISTS↓ | small NIQE↓ | big PSNR↑'
    assert header in markdown
    assert [line.split(' | ')[0] for line in markdown.splitlines() if line.startswith('| EA')] == [
        f'| {label}' for label in labels[1:]]

    for label in labels:
        assert isinstance(table.value(label, 'small', 'lpips'), float)
        assert table.value(label, 'small', 'dists') == f'n/a: no VGG16 weights at {missing_vgg}'
        assert table.value(label, 'small', 'niqe').startswith('n/a: image smaller than 192x96 after a 4 px crop')
        assert isinstance(table.value(label, 'big', 'niqe'), float)
    assert rows[1][4] == f'n/a: no VGG16 weights at {missing_vgg}'
    assert float(rows[1][1]) == table.value('PSNR model', 'small', 'psnr')  # the CSV keeps full precision
    assert table.fronts == {'EA': labels[1:]}
    for dataset in ('small', 'big'):
        path, perception = table.plots[dataset]
        assert perception == 'lpips' and os.path.getsize(path) > 0


def test_plot_falls_back_to_niqe_then_says_why(sr_data, tmp_path):
    opt = sr_options(sr_data, datasets=('small', 'big'), metrics={'lpips': None, 'dists': None})
    table = evaluate(opt, str(tmp_path), progress=False)
    assert table.plots['big'][1] == 'niqe'
    assert table.plots['small'].startswith('n/a:')
    assert sorted(os.listdir(tmp_path / 'pytest_eval')) == ['pd_big.png', 'table.csv', 'table.md']


def test_population_rows_in_index_order_for_the_iteration(tmp_path):
    for name in [f'net_g_{i}_latest.pth' for i in range(11)] + ['net_g_0_120.pth', 'net_d_0_latest.pth']:
        (tmp_path / name).write_bytes(b'')
    entry = {'label': 'EA-Adam #{i} @{iter}', 'network': SR_NET, 'population': str(tmp_path)}
    models = expand_models([parse(ModelOptions, entry, 'models[0]')])
    assert [m.label for m in models] == [f'EA-Adam #{i} @latest' for i in range(11)]  # 10 after 9, not after 1
    assert [os.path.basename(m.checkpoint) for m in models] == [f'net_g_{i}_latest.pth' for i in range(11)]
    assert {m.front for m in models} == {'EA-Adam @latest'}
    models = expand_models([parse(ModelOptions, dict(entry, iter=120, front_label='front'), 'models[0]')])
    assert [(m.label, m.front) for m in models] == [('EA-Adam #0 @120', 'front')]
    (tmp_path / 'net_g_5_latest.pth').unlink()
    with pytest.raises(FileNotFoundError, match=r'individuals \[5\] are missing'):
        expand_models([parse(ModelOptions, entry, 'models[0]')])


def test_allinone_per_task_and_average_equal_basicsr(tmp_path):
    tasks = {}
    for k, task in enumerate(('rain', 'haze')):
        tasks[task] = write_pairs(str(tmp_path / task), [('x', 40, 32), ('y', 36, 44)], scale=1, seed=10 * k)
        write_pairs(str(tmp_path / task / 'degraded'), [('x', 40, 32), ('y', 36, 44)], scale=1, seed=10 * k + 3)
        tasks[task]['dataroot_lq'] = str(tmp_path / task / 'degraded' / 'HR')
    tasks['haze'] = dict(tasks['haze'], type='PairedImageDataset', io_backend={'type': 'disk'})  # any dataset type
    checkpoint = save_checkpoint(str(tmp_path / 'net.pth'), DENOISE_NET, seed=3)
    opt = {'name': 'pytest_allinone', 'protocol': 'allinone', 'device': 'cpu', 'datasets': tasks,
           'models': [{'label': 'net', 'network': DENOISE_NET, 'checkpoint': checkpoint}]}
    table = run_evaluation(opt, progress=False)
    assert [c for c in table.columns] == [(d, m) for d in ('rain', 'haze', AVERAGE) for m in ('psnr', 'ssim')]
    metrics = {name: {'type': f'calculate_{name}', 'crop_border': 0, 'test_y_channel': False}
               for name in ('psnr', 'ssim')}
    for metric in ('psnr', 'ssim'):
        per_task = [basicsr_validation(DENOISE_NET, checkpoint, tasks[task], 1, metrics)[metric]
                    for task in ('rain', 'haze')]
        assert [table.value('net', task, metric) for task in ('rain', 'haze')] == per_task
        assert table.value('net', AVERAGE, metric) == sum(per_task) / 2


def broken(sr_data, tmp_path, case):
    """Options (and files) with one thing wrong; returns them and what the error must say."""
    data = write_pairs(str(tmp_path / 'set'), [('a', 48, 40), ('b', 40, 40)])
    opt = sr_options(sr_data)
    opt['datasets'] = {'set': data}
    if case == 'missing folder':
        opt['datasets']['set'] = dict(data, dataroot_lq=str(tmp_path / 'nowhere'))
        return opt, FileNotFoundError, 'nowhere'
    if case == 'HR without LR':
        os.remove(os.path.join(data['dataroot_lq'], 'b.png'))
        return opt, ValueError, 'HR/b.png has no lq partner .*LR/b.png'
    if case == 'LR without HR':
        write_image(os.path.join(data['dataroot_lq'], 'z.png'), 10, 10, 0)
        return opt, ValueError, 'LR/z.png has no gt partner'
    if case == 'LR not x4':
        write_image(os.path.join(data['dataroot_lq'], 'b.png'), 10, 11, 0)
        return opt, ValueError, r'LR/b.png is 11x10 but .*HR/b.png is 40x40: not x4'
    if case == 'not an image':
        (tmp_path / 'set' / 'HR' / 'notes.txt').write_text('x')
        return opt, ValueError, 'notes.txt is not an image'
    if case == 'missing checkpoint':
        opt['models'][0]['checkpoint'] = str(tmp_path / 'none.pth')
        return opt, FileNotFoundError, 'PSNR model: checkpoint .*none.pth does not exist'
    if case == 'wrong param_key':
        opt['models'][0]['param_key'] = 'params_g'
        return opt, CheckpointError, "PSNR model: .*has no 'params_g' weights \\(it holds params\\)"
    if case == 'wrong arch':
        opt['models'][0]['network'] = dict(SR_NET, num_feat=16)
        return opt, CheckpointError, 'PSNR model: .* does not fit this MSRResNet: conv_first.weight has shape'
    if case == 'population label':
        opt['models'] = [{'label': 'EA', 'network': SR_NET, 'population': sr_data['population']}]
        return opt, ValueError, 'needs {i}'
    if case == 'empty population':
        opt['models'] = [{'label': 'EA #{i}', 'network': SR_NET, 'population': sr_data['population'], 'iter': 7}]
        return opt, FileNotFoundError, 'holds no net_g_{i}_7.pth'
    if case == 'repeated label':
        opt['models'] *= 2
        return opt, ValueError, 'repeated: PSNR model'
    if case == 'unknown option':
        opt['sclae'] = 2
        return opt, OptionError, 'options.sclae: unknown option'
    if case == 'unknown protocol':
        opt['protocol'] = 'denoise'
        return opt, OptionError, "options.protocol: must be one of 'sr', 'allinone', got 'denoise'"
    opt['metrics'] = {'fid': {}}
    return opt, OptionError, 'metrics.fid: not one of protocol sr'


@pytest.mark.parametrize('case', [
    'missing folder', 'HR without LR', 'LR without HR', 'LR not x4', 'not an image', 'missing checkpoint',
    'wrong param_key', 'wrong arch', 'population label', 'empty population', 'repeated label', 'unknown option',
    'unknown protocol', 'unknown metric'
])
def test_bad_inputs_are_clear_errors(sr_data, tmp_path, case):
    opt, error, message = broken(sr_data, tmp_path, case)
    with pytest.raises(error, match=message):
        run_evaluation(opt, progress=False)


def test_script_writes_and_prints_the_table(sr_data, tmp_path, capsys):
    import yaml
    opt_path = tmp_path / 'eval.yml'
    opt_path.write_text(yaml.safe_dump(sr_options(sr_data)))
    load_script('evaluate').main(['-opt', str(opt_path), '--results_root', str(tmp_path), '--no_progress'])
    out = capsys.readouterr().out
    assert '| PSNR model |' in out and (tmp_path / 'pytest_eval' / 'table.md').is_file()
    opt_path.write_text(yaml.safe_dump(dict(sr_options(sr_data), protocol='x')))
    with pytest.raises(SystemExit, match="error: .*eval.yml: options.protocol: must be one of 'sr', 'allinone', got 'x'"):
        load_script('evaluate').main(['-opt', str(opt_path), '--results_root', str(tmp_path)])


def test_archive_rows_are_the_archive_members_only(tmp_path):
    for name in ['net_g_0_latest.pth', 'net_g_1_latest.pth'] + [f'net_g_archive_{k}_latest.pth' for k in range(3)]:
        (tmp_path / name).write_bytes(b'')
    entry = {'label': 'archive #{i}', 'network': SR_NET, 'population': str(tmp_path), 'members': 'archive'}
    models = expand_models([parse(ModelOptions, entry, 'models[0]')])
    assert [os.path.basename(m.checkpoint) for m in models] == [f'net_g_archive_{k}_latest.pth' for k in range(3)]
    population = expand_models([parse(ModelOptions, dict(entry, members='population', label='#{i}'), 'models[0]')])
    assert [os.path.basename(m.checkpoint) for m in population] == ['net_g_0_latest.pth', 'net_g_1_latest.pth']
    with pytest.raises(OptionError, match='members: must be one of'):
        parse(ModelOptions, dict(entry, members='front'), 'models[0]')
