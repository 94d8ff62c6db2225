"""What an evaluation reads, each checked before the first network runs: the model rows (single checkpoints and
EA-Adam populations), the test sets (BasicSR's paired folders or any registered dataset) and the metrics."""
import io
import os
import re
from copy import deepcopy
from dataclasses import dataclass

import torch
from basicsr.archs import build_network
from basicsr.data import build_dataset
from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.utils import scandir
from PIL import Image

from basicsr_ea.image_formats import decode_color, has_alpha

IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
# Column titles, directions and decimals of the metrics the protocols know, by BasicSR metric type.
METRIC_TYPES = {
    'calculate_psnr': ('PSNR', 'higher', 2),
    'calculate_ssim': ('SSIM', 'higher', 4),
    'calculate_lpips': ('LPIPS', 'lower', 4),
    'calculate_dists': ('DISTS', 'lower', 4),
    'calculate_niqe': ('NIQE', 'lower', 4),
}
MODEL_KEYS = {'label', 'network', 'checkpoint', 'param_key', 'strict_load', 'population', 'iter', 'front_label'}


@dataclass(frozen=True)
class Metric:
    """One kind of column: ``opt`` is what BasicSR's ``calculate_metric`` receives (``type`` plus arguments)."""
    name: str
    title: str
    better: str
    digits: int
    opt: dict


@dataclass(frozen=True)
class ModelEntry:
    """One row: the network ``network`` builds, with the ``param_key`` weights of ``checkpoint``; ``front`` names
    the population the row belongs to (its points are joined in the plot), None for a single model."""
    label: str
    network: dict
    checkpoint: str
    param_key: str = 'params'
    strict_load: bool = True
    front: str = None


def check_keys(entry, allowed, where):
    """Typos in options fail loudly instead of silently falling back to a default."""
    if not isinstance(entry, dict):
        raise ValueError(f'{where}: expected a mapping, got {entry!r}.')
    unknown = sorted(set(entry) - set(allowed))
    if unknown:
        raise ValueError(f'{where}: unknown option(s) {", ".join(unknown)}; allowed: {", ".join(sorted(allowed))}.')


def require_keys(entry, required, where):
    for key in required:
        if key not in entry:
            raise ValueError(f'{where}: {key} is missing.')


def expand_population(entry):
    """One row per ``net_g_{i}_{iter}.pth`` of a population folder, in the order of ``i`` (the preference order,
    which traces the front); ``label`` formats ``{i}`` and ``{iter}``."""
    folder, iteration = entry['population'], str(entry.get('iter', 'latest'))
    if '{i}' not in entry['label']:
        raise ValueError(f'Population {folder}: label {entry["label"]!r} needs {{i}}, or every row reads the same.')
    if not os.path.isdir(folder):
        raise FileNotFoundError(f'Population folder {folder} does not exist.')
    pattern = re.compile(rf'net_g_(\d+)_{re.escape(iteration)}\.pth')
    indices = sorted(int(m.group(1)) for m in map(pattern.fullmatch, os.listdir(folder)) if m)
    if not indices:
        raise FileNotFoundError(f'Population folder {folder} holds no net_g_{{i}}_{iteration}.pth.')
    front = entry.get('front_label') or re.sub(r'\s*#?\{i\}', '', entry['label']).format(iter=iteration)
    front = front.strip(' -_:') or folder
    return [
        ModelEntry(entry['label'].format(i=i, iter=iteration), entry['network'],
                   os.path.join(folder, f'net_g_{i}_{iteration}.pth'), entry.get('param_key', 'params'),
                   entry.get('strict_load', True), front) for i in indices
    ]


def expand_models(entries):
    """The table's rows from the ``models`` options, in their order; labels must be unique."""
    if not isinstance(entries, list) or not entries:
        raise ValueError('Options: models must be a non-empty list.')
    models = []
    for k, entry in enumerate(entries):
        check_keys(entry, MODEL_KEYS, f'models[{k}]')
        require_keys(entry, ('label', 'network'), f'models[{k}]')
        if ('checkpoint' in entry) == ('population' in entry):
            raise ValueError(f'models[{k}] ({entry["label"]}): give either checkpoint or population.')
        if 'population' in entry:
            models.extend(expand_population(entry))
        else:
            models.append(ModelEntry(entry['label'], entry['network'], entry['checkpoint'],
                                     entry.get('param_key', 'params'), entry.get('strict_load', True)))
    labels = [m.label for m in models]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f'Options: model labels must be unique; repeated: {", ".join(repeated)}.')
    return models


def check_checkpoints(models):
    for model in models:
        if not os.path.isfile(model.checkpoint):
            raise FileNotFoundError(f'{model.label}: checkpoint {model.checkpoint} does not exist.')


def load_network(model, device):
    """``build_network`` plus the checkpoint's ``param_key`` weights (``param_key: ~`` for a bare state dict;
    DataParallel's ``module.`` prefixes dropped, as BasicSR does), in eval mode."""
    net = build_network(model.network)
    state = torch.load(model.checkpoint, map_location='cpu', weights_only=True)
    if model.param_key is not None:
        if model.param_key not in state:
            raise KeyError(f'{model.label}: {model.checkpoint} has no {model.param_key!r} '
                           f'(it has {", ".join(map(str, state))}); set param_key.')
        state = state[model.param_key]
    state = {k.removeprefix('module.'): v for k, v in state.items()}
    try:
        net.load_state_dict(state, strict=model.strict_load)
    except RuntimeError as err:
        raise RuntimeError(f'{model.label}: {model.checkpoint} does not fit {model.network["type"]}: {err}') from err
    return net.to(device).eval()


def checked_image_size(path):
    """(width, height) from the file header, without decoding the pixels, unless the image has an alpha channel:
    then it is decoded as the dataset will decode it, so that a transparent image fails before any network runs."""
    with open(path, 'rb') as f:
        content = f.read()
    try:
        if has_alpha(content):
            decode_color(content)
        with Image.open(io.BytesIO(content)) as img:
            return img.size
    except ValueError as err:
        raise ValueError(f'{path}: {err}') from err
    except OSError as err:
        raise ValueError(f'{path} is not an image PIL can read ({err.__class__.__name__}).') from err


def check_paired_folders(name, gt_folder, lq_folder, scale, filename_tmpl='{}'):
    """What BasicSR would assert on without naming the file, or silently crop: a missing folder, a file without
    its partner, an LR image that is not the HR's size divided by ``scale``. An HR side that is not a multiple of
    ``scale`` is fine: BasicSR's validation crops it, as the usual benchmark sets need."""
    for folder in (gt_folder, lq_folder):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f'Dataset {name}: folder {folder} does not exist.')
    gt_files, lq_files = sorted(scandir(gt_folder)), set(scandir(lq_folder))
    for folder, files in ((gt_folder, gt_files), (lq_folder, lq_files)):
        for file_name in sorted(files):
            if not file_name.lower().endswith(IMG_EXTENSIONS):
                raise ValueError(f'Dataset {name}: {os.path.join(folder, file_name)} is not an image.')
    if not gt_files:
        raise ValueError(f'Dataset {name}: {gt_folder} holds no image.')
    pairs = {}
    for gt_file in gt_files:
        stem, ext = os.path.splitext(gt_file)
        lq_file = f'{filename_tmpl.format(stem)}{ext}'
        if lq_file not in lq_files:
            raise ValueError(f'Dataset {name}: {os.path.join(gt_folder, gt_file)} has no lq partner '
                             f'{os.path.join(lq_folder, lq_file)}.')
        pairs[lq_file] = gt_file
    for lq_file in sorted(lq_files - set(pairs)):
        raise ValueError(f'Dataset {name}: {os.path.join(lq_folder, lq_file)} has no gt partner in {gt_folder}.')
    for lq_file, gt_file in pairs.items():
        gt_path, lq_path = os.path.join(gt_folder, gt_file), os.path.join(lq_folder, lq_file)
        (gt_w, gt_h), (lq_w, lq_h) = checked_image_size(gt_path), checked_image_size(lq_path)
        if (lq_w, lq_h) != (gt_w // scale, gt_h // scale):
            raise ValueError(f'Dataset {name}: {lq_path} is {lq_w}x{lq_h} but {gt_path} is {gt_w}x{gt_h}: not x{scale} '
                             f'(expected {gt_w // scale}x{gt_h // scale}).')


def build_eval_dataset(name, opt, scale):
    """``{dataroot_gt, dataroot_lq[, filename_tmpl]}``: checked paired folders, read by BasicSR's
    ``PairedImageDataset`` as its validation reads them; ``{type: ..., ...}``: any registered dataset (LMDB,
    ``AllInOneTestDataset`` with its seeded noise, ...), checked as it is read."""
    where = f'datasets.{name}'
    if 'type' in (opt or {}):
        dataset = build_dataset({'io_backend': {'type': 'disk'}, **deepcopy(opt), 'name': name, 'phase': 'val',
                                 'scale': scale})
    else:
        check_keys(opt, ('dataroot_gt', 'dataroot_lq', 'filename_tmpl'), f'{where} (use type: for other datasets)')
        require_keys(opt, ('dataroot_gt', 'dataroot_lq'), where)
        check_paired_folders(name, opt['dataroot_gt'], opt['dataroot_lq'], scale, opt.get('filename_tmpl', '{}'))
        dataset = PairedImageDataset(dict(deepcopy(opt), name=name, phase='val', scale=scale,
                                          io_backend={'type': 'disk'}))
    if len(dataset) == 0:
        raise ValueError(f'Dataset {name}: no image.')
    return dataset


def build_metrics(protocol, crop_border, overrides):
    """The protocol's metrics with the options' ``metrics`` merged in: a known name takes new arguments,
    ``name: ~`` drops its columns, a new name with ``type`` (any registered BasicSR metric) adds columns; ``better``
    (higher/lower, BasicSR's key) sets the direction of a new one."""
    pixel = {'crop_border': crop_border, 'test_y_channel': protocol == 'sr'}
    defaults = {'psnr': {'type': 'calculate_psnr', **pixel}, 'ssim': {'type': 'calculate_ssim', **pixel}}
    if protocol == 'sr':
        for name in ('lpips', 'dists', 'niqe'):
            defaults[name] = {'type': f'calculate_{name}', 'crop_border': crop_border}
    merged = dict(defaults)
    for name, opt in (overrides or {}).items():
        if opt is None:
            merged.pop(name, None)
        elif name in defaults or 'type' in opt:
            merged[name] = {**defaults.get(name, {}), **opt}
        else:
            raise ValueError(f'Metric {name}: not one of protocol {protocol} ({", ".join(defaults)}); give its type.')
    metrics = {}
    for name, opt in merged.items():
        opt = dict(opt)
        title, better, digits = METRIC_TYPES.get(opt['type'], (name, 'higher', 4))
        metrics[name] = Metric(name, title if name in defaults else name, opt.pop('better', better), digits, opt)
    if not metrics:
        raise ValueError('Options: no metric left to compute.')
    return metrics
