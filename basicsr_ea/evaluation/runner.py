"""Run every model over every test set and collect the table's cells."""
import os
import typing
from dataclasses import dataclass, field

import torch
from basicsr.metrics import calculate_metric
from basicsr.utils import tensor2img
from tqdm import tqdm

from basicsr_ea.archs.arch_util import size_multiple
from basicsr_ea.compat import PipelineRepairs
from basicsr_ea.evaluation.inputs import (EvalOptions, build_eval_dataset, build_metrics, check_checkpoints,
                                          expand_models, load_network)
from basicsr_ea.options import OptionError, parse
from basicsr_ea.tiling import restore
from basicsr_ea.utils import resolve_device

PROTOCOLS = typing.get_args(typing.get_type_hints(EvalOptions)['protocol'])
AVERAGE = 'Average'  # the all-in-one protocol's column group over all tasks
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
    options' ``Tile`` (``basicsr_ea.tiling``), None for one pass per image; ``multiple`` the network's
    ``size_multiple``."""
    sums = {name: 0 for name in metrics}
    reasons = {name: unavailable[name] for name in metrics if name in unavailable}
    for index in range(len(dataset)):
        data = dataset[index]
        img_name = os.path.basename(data.get('lq_path', str(index)))
        with torch.no_grad():
            output = restore(net, data['lq'][None].to(device), tile, scale, multiple)
        if not torch.isfinite(output).all():  # tensor2img would turn NaN into a plausible-looking image
            raise ValueError(f'{dataset.opt["name"]}: the network\'s output for {data.get("lq_path")} is not finite '
                             '(NaN or Inf); no table is written with it.')
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



def prepare(opt):
    """Check the options and build what they name (rows, datasets, metrics) without running any network."""
    options = parse(EvalOptions, opt, 'options')
    protocol = options.protocol
    scale = options.scale or (4 if protocol == 'sr' else 1)
    crop_border = options.crop_border if options.crop_border is not None else (scale if protocol == 'sr' else 0)
    metrics = build_metrics(protocol, crop_border, options.metrics)
    models = expand_models(options.models)
    check_checkpoints(models)
    for model in models:
        if options.tile is not None:
            options.tile.check_multiple(size_multiple(model.network))
    if protocol == 'allinone' and AVERAGE in options.datasets:
        raise OptionError(f'datasets.{AVERAGE}: {AVERAGE!r} names the average over tasks; rename that dataset')
    datasets = {name: build_eval_dataset(name, d_opt, scale) for name, d_opt in options.datasets.items()}
    return options, metrics, models, datasets, scale


def run_evaluation(opt, progress=True):
    """The ``EvalTable`` of the options (see ``options/eval_demo.yml``); writes nothing. BasicSR's datasets read
    with the pipeline repairs (full bit depth, named errors), as in ``basicsr_ea/test.py``."""
    with PipelineRepairs():
        return evaluate_models(opt, progress)


def evaluate_models(opt, progress):
    options, metrics, models, datasets, scale = prepare(opt)
    protocol, device = options.protocol, resolve_device(options.device)
    names = list(datasets) + ([AVERAGE] if protocol == 'allinone' else [])
    table = EvalTable(options.name, protocol, [m.label for m in models], [(d, m) for d in names for m in metrics],
                      metrics)
    for model in models:
        if model.front:
            table.fronts.setdefault(model.front, []).append(model.label)
    unavailable = {}
    total = len(models) * sum(len(d) for d in datasets.values())
    with tqdm(total=total, unit='image', desc=options.name, disable=not progress) as pbar:
        for model in models:
            net = load_network(model, device)
            row = table.cells[model.label] = {}
            for name, dataset in datasets.items():
                pbar.set_postfix_str(f'{model.label} | {name}')
                values = evaluate_dataset(net, dataset, metrics, device, unavailable, pbar, options.tile, scale,
                                          size_multiple(model.network))
                row.update({(name, metric): value for metric, value in values.items()})
            if protocol == 'allinone':
                row.update({(AVERAGE, metric): average_over_tasks(row, datasets, metric) for metric in metrics})
    return table
