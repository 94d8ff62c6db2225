"""What an evaluation reads, each checked before the first network runs: the model rows (single checkpoints and
EA-Adam populations), the test sets (BasicSR's paired folders or any registered dataset) and the metrics."""
import inspect
import io
import os
import re
import typing
from copy import deepcopy
from dataclasses import dataclass

from basicsr.data import build_dataset
from basicsr.data.paired_image_dataset import PairedImageDataset
from basicsr.utils import scandir
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, METRIC_REGISTRY
from PIL import Image

from basicsr_ea.checkpoints import MEMBER_LABELS, CheckpointError, build_and_load, population_paths
from basicsr_ea.image_formats import IMAGE_EXTENSIONS, decode_color, has_alpha
from basicsr_ea.options import OptionError, check_buildable, check_call, parse, registered
from basicsr_ea.tiling import Tile

# Column titles, directions and decimals of the metrics the protocols know, by BasicSR metric type.
METRIC_TYPES = {
    'calculate_psnr': ('PSNR', 'higher', 2),
    'calculate_ssim': ('SSIM', 'higher', 4),
    'calculate_lpips': ('LPIPS', 'lower', 4),
    'calculate_dists': ('DISTS', 'lower', 4),
    'calculate_niqe': ('NIQE', 'lower', 4),
}
# The parameters of a BasicSR metric function that take the images, not options.
METRIC_IMAGE_PARAMETERS = ('img', 'img2')


@dataclass(frozen=True)
class Metric:
    """One kind of column: ``opt`` is what BasicSR's ``calculate_metric`` receives (``type`` plus arguments)."""
    name: str
    title: str
    better: str
    digits: int
    opt: dict


@dataclass(frozen=True)
class ModelOptions:
    """One entry of ``models``: a ``checkpoint`` (one row) or a ``population`` folder (one row per individual,
    ``label`` formatting ``{i}`` and ``{iter}``; with ``members: archive`` one per member of the EA's archive), of the
    network ``network`` builds."""
    label: str
    network: dict
    checkpoint: str | None = None
    population: str | None = None
    iter: int | str = 'latest'
    param_key: str | None = 'params'
    strict_load: bool = True
    front_label: str | None = None
    members: typing.Literal['population', 'archive'] = 'population'

    def __post_init__(self):
        if (self.checkpoint is None) == (self.population is None):
            raise OptionError(f'checkpoint: give either checkpoint or population ({self.label})')
        if self.population is not None and '{i}' not in self.label:
            raise OptionError(f'label: {self.label!r} needs {{i}} for a population, or every row reads the same')
        check_buildable(ARCH_REGISTRY, self.network, 'network')


@dataclass(frozen=True)
class PairedFolders:
    """A test set as BasicSR's paired folders (``PairedImageDataset``'s keys)."""
    dataroot_gt: str
    dataroot_lq: str
    filename_tmpl: str = '{}'


@dataclass(frozen=True)
class EvalOptions:
    """``scripts/evaluate.py``'s options (``options/eval_demo.yml``). ``datasets``: name -> ``PairedFolders`` keys,
    or ``{type: ..., ...}`` of any registered dataset; ``metrics``: overrides of the protocol's (``build_metrics``)."""
    name: str
    models: list[ModelOptions]
    datasets: dict[str, dict]
    protocol: typing.Literal['sr', 'allinone'] = 'sr'
    scale: int | None = None
    crop_border: int | None = None
    device: str = 'auto'
    metrics: dict[str, dict | None] | None = None
    tile: Tile | None = None

    def __post_init__(self):
        if not self.models:
            raise OptionError('models: must be a non-empty list')
        if not self.datasets:
            raise OptionError('datasets: must be a non-empty mapping of name to folders')
        for name, dataset in self.datasets.items():
            if 'type' not in dataset:
                parse(PairedFolders, dataset, f'datasets.{name}')
            elif not registered(DATASET_REGISTRY, dataset['type']):
                raise OptionError(f'datasets.{name}.type: no {dataset["type"]!r} in the dataset registry')
            elif hasattr(DATASET_REGISTRY.get(dataset['type']), 'options_type'):  # this project's datasets
                parse(DATASET_REGISTRY.get(dataset['type']).options_type, {**dataset, 'name': name},
                      f'datasets.{name}')


@dataclass(frozen=True)
class ModelEntry:
    """One row: the network ``network`` builds, with the ``param_key`` weights of ``checkpoint``; ``front`` names
    the population the row belongs to (its points are joined in the plot), None for a single model."""
    label: str
    network: dict
    checkpoint: str
    param_key: str | None = 'params'
    strict_load: bool = True
    front: str | None = None


def expand_population(entry):
    """One row per ``net_g_{i}_{iter}.pth`` of a population folder, in the order of ``i`` (the preference order,
    which traces the front)."""
    iteration = str(entry.iter)
    paths = population_paths(entry.population, iteration, MEMBER_LABELS[entry.members])
    front = entry.front_label or re.sub(r'\s*#?\{i\}', '', entry.label).format(iter=iteration)
    front = front.strip(' -_:') or entry.population
    return [ModelEntry(entry.label.format(i=i, iter=iteration), entry.network, path, entry.param_key,
                       entry.strict_load, front) for i, path in enumerate(paths)]


def expand_models(entries):
    """The table's rows from the parsed ``models`` options, in their order; labels must be unique."""
    models = []
    for entry in entries:
        if entry.population is not None:
            models.extend(expand_population(entry))
        else:
            models.append(ModelEntry(entry.label, entry.network, entry.checkpoint, entry.param_key, entry.strict_load,
                                     entry.front_label))
    labels = [m.label for m in models]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise OptionError(f'models: labels must be unique; repeated: {", ".join(repeated)}')
    return models


def check_checkpoints(models):
    """Every row's file before any network runs; the error says where to put it (released weights are never
    downloaded)."""
    for model in models:
        if not os.path.isfile(model.checkpoint):
            raise FileNotFoundError(f'{model.label}: checkpoint {model.checkpoint} does not exist: put the file at '
                                    f'{os.path.abspath(model.checkpoint)}.')


def load_network(model, device):
    """The row's network with its checkpoint's weights (``checkpoints.build_and_load``), in eval mode."""
    try:
        return build_and_load(model.network, model.checkpoint, model.param_key, model.strict_load).to(device)
    except CheckpointError as err:
        raise CheckpointError(f'{model.label}: {err}') from err


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
            if not file_name.lower().endswith(IMAGE_EXTENSIONS):
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
    if 'type' in opt:
        dataset = build_dataset({'io_backend': {'type': 'disk'}, **deepcopy(opt), 'name': name, 'phase': 'val',
                                 'scale': scale})
    else:
        folders = parse(PairedFolders, opt, where)
        check_paired_folders(name, folders.dataroot_gt, folders.dataroot_lq, scale, folders.filename_tmpl)
        dataset = PairedImageDataset(dict(vars(folders), name=name, phase='val', scale=scale,
                                          io_backend={'type': 'disk'}))
    if len(dataset) == 0:
        raise ValueError(f'Dataset {name}: no image.')
    return dataset


def check_metric(name, opt):
    """A metric's keys against its function's named parameters: BasicSR's metrics take ``**kwargs`` and drop what
    they do not know, so a misspelt key would silently compute the default."""
    if opt['type'] not in METRIC_REGISTRY:
        raise OptionError(f'options.metrics.{name}.type: no {opt["type"]!r} in the metric registry')
    fn = METRIC_REGISTRY.get(opt['type'])
    images = sum(p in METRIC_IMAGE_PARAMETERS for p in inspect.signature(fn).parameters)
    check_call(fn, {k: v for k, v in opt.items() if k not in ('type', 'better')}, f'options.metrics.{name}',
               skip=images, named_only=True)


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
            raise OptionError(f'metrics.{name}: not one of protocol {protocol} ({", ".join(defaults)}); give its type')
    metrics = {}
    for name, opt in merged.items():
        check_metric(name, opt)
        opt = dict(opt)
        title, better, digits = METRIC_TYPES.get(opt['type'], (name, 'higher', 4))
        metrics[name] = Metric(name, title if name in defaults else name, opt.pop('better', better), digits, opt)
    if not metrics:
        raise OptionError('metrics: no metric left to compute')
    return metrics
