"""Run every model over every test set and collect the table's cells."""
import os
from dataclasses import dataclass, field

import torch
from basicsr.metrics import calculate_metric
from basicsr.utils import tensor2img
from tqdm import tqdm

from basicsr_ea.archs.arch_util import size_multiple
from basicsr_ea.evaluation.inputs import (build_eval_dataset, build_metrics, check_checkpoints, check_keys,
                                          expand_models, load_network, require_keys)
from basicsr_ea.tiling import check_tile, restore

PROTOCOLS = ('sr', 'allinone')
AVERAGE = 'Average'  # the all-in-one protocol's column group over all tasks
OPTION_KEYS = ('name', 'protocol', 'scale', 'crop_border', 'device', 'models', 'datasets', 'metrics', 'tile')
NIQE_BLOCK = 96  # BasicSR's NIQE needs two 96x96 blocks (192x96 or 96x192 pixels); with fewer its SVD fails


@dataclass
class EvalTable:
    """Every cell of an evaluation: a float, or a string starting with ``n/a:`` that says why there is none."""
    name: str
    protocol: str
    labels: list
    columns: list  # (dataset, metric name) in table order
    metrics: dict  # metric name -> Metric
    cells: dict = field(default_factory=dict)  # label -> {(dataset, metric name): value}
    fronts: dict = field(default_factory=dict)  # front name -> its labels in population order
    plots: dict = field(default_factory=dict)  # dataset -> (png path, perception metric name) or 'n/a: ...'

    def value(self, label, dataset, metric):
        return self.cells[label][(dataset, metric)]


def not_applicable(metric, img, img_name):
    """Why ``metric`` cannot measure ``img`` (HWC), or None."""
    if metric.opt['type'] != 'calculate_niqe':
        return None
    crop = metric.opt.get('crop_border', 0)
    height, width = img.shape[0] - 2 * crop, img.shape[1] - 2 * crop
    if (height // NIQE_BLOCK) * (width // NIQE_BLOCK) < 2:
        return f'n/a: image smaller than 192x96 after a {crop} px crop ({img_name}: {width}x{height})'
    return None


def evaluate_dataset(net, dataset, metrics, device, unavailable, pbar, tile=None, scale=1, multiple=1):
    """Mean of every metric over ``dataset`` for one network, computed as ``SRModel.nondist_validation`` does
    (``tensor2img`` of output and target, sum in dataset order, divide), so the values equal its values exactly.
    ``unavailable`` (metric name -> reason) carries missing weights over to the next models; ``tile`` is the
    options' ``tile`` (``basicsr_ea.tiling.check_tile``), None for one pass per image; ``multiple`` the network's
    ``size_multiple``."""
    sums = {name: 0 for name in metrics}
    reasons = {name: unavailable[name] for name in metrics if name in unavailable}
    for index in range(len(dataset)):
        data = dataset[index]
        img_name = os.path.basename(data.get('lq_path', str(index)))
        with torch.no_grad():
            output = restore(net, data['lq'][None].to(device), tile, scale, multiple)
        sr_img, gt_img = tensor2img([output.detach().cpu()]), tensor2img([data['gt'][None]])
        if sr_img.shape != gt_img.shape:
            raise ValueError(f'{dataset.opt["name"]}: the output for {data.get("lq_path")} is {sr_img.shape[:2]}, '
                             f'its target {data.get("gt_path")} is {gt_img.shape[:2]}: is the scale right?')
        for name, metric in metrics.items():
            if reasons.get(name) is None:
                reasons[name] = not_applicable(metric, sr_img, img_name)
            if reasons[name] is not None:
                continue
            try:
                sums[name] += calculate_metric({'img': sr_img, 'img2': gt_img}, metric.opt)
            except FileNotFoundError as err:  # a learned metric's weights are missing: so for every model
                unavailable[name] = reasons[name] = f'n/a: {err}'
        pbar.update(1)
    return {name: reasons.get(name) or float(sums[name] / len(dataset)) for name in metrics}


def average_over_tasks(row, tasks, metric):
    """The all-in-one tables' average: the mean over tasks of the per-task means."""
    values = [row[(task, metric)] for task in tasks]
    if any(isinstance(v, str) for v in values):
        return 'n/a: not every task has a value'
    return sum(values) / len(values)


def resolve_device(name):
    if name in (None, 'auto'):
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return torch.device(name)


def prepare(opt):
    """Check the options and build what they name (rows, datasets, metrics) without running any network."""
    check_keys(opt, OPTION_KEYS, 'Options')
    require_keys(opt, ('name', 'models', 'datasets'), 'Options')
    check_tile(opt.get('tile'))
    protocol = opt.get('protocol', 'sr')
    if protocol not in PROTOCOLS:
        raise ValueError(f'Options: protocol {protocol!r} is not one of {", ".join(PROTOCOLS)}.')
    scale = int(opt.get('scale', 4 if protocol == 'sr' else 1))
    metrics = build_metrics(protocol, opt.get('crop_border', scale if protocol == 'sr' else 0), opt.get('metrics'))
    models = expand_models(opt['models'])
    check_checkpoints(models)
    for model in models:
        check_tile(opt.get('tile'), size_multiple(model.network))
    if not isinstance(opt['datasets'], dict) or not opt['datasets']:
        raise ValueError('Options: datasets must be a non-empty mapping of name to folders.')
    if protocol == 'allinone' and AVERAGE in opt['datasets']:
        raise ValueError(f'Options: {AVERAGE!r} names the average over tasks; rename that dataset.')
    datasets = {name: build_eval_dataset(name, d_opt, scale) for name, d_opt in opt['datasets'].items()}
    return protocol, metrics, models, datasets, scale


def run_evaluation(opt, progress=True):
    """The ``EvalTable`` of the options (see ``options/eval_demo.yml``); writes nothing."""
    protocol, metrics, models, datasets, scale = prepare(opt)
    device = resolve_device(opt.get('device'))
    names = list(datasets) + ([AVERAGE] if protocol == 'allinone' else [])
    table = EvalTable(opt['name'], protocol, [m.label for m in models], [(d, m) for d in names for m in metrics],
                      metrics)
    for model in models:
        if model.front:
            table.fronts.setdefault(model.front, []).append(model.label)
    unavailable = {}
    total = len(models) * sum(len(d) for d in datasets.values())
    with tqdm(total=total, unit='image', desc=opt['name'], disable=not progress) as pbar:
        for model in models:
            net = load_network(model, device)
            row = table.cells[model.label] = {}
            for name, dataset in datasets.items():
                pbar.set_postfix_str(f'{model.label} | {name}')
                values = evaluate_dataset(net, dataset, metrics, device, unavailable, pbar, opt.get('tile'), scale,
                                          size_multiple(model.network))
                row.update({(name, metric): value for metric, value in values.items()})
            if protocol == 'allinone':
                row.update({(AVERAGE, metric): average_over_tasks(row, datasets, metric) for metric in metrics})
    return table
