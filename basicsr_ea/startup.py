"""Checks of a training run's options, once BasicSR has parsed them (``--force_yml`` applied, the world size known)
and before it makes a folder or reads an image: typos, wrong types, missing files and values that would only fail
later (an EA objective that cannot run on the fitness patches, a batch larger than an epoch, a metric's weights
file) are errors now, and a run never moves an earlier run's checkpoints out of the way."""
import math
import os
from copy import deepcopy

from basicsr.archs import build_network  # noqa: F401  (ARCH_REGISTRY filled by BasicSR's archs)
from basicsr.losses import build_loss  # noqa: F401  (LOSS_REGISTRY filled by BasicSR's losses)
from basicsr.archs import vgg_arch
from basicsr.models import lr_scheduler
from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY

from basicsr_ea.archs.fusion_arch import expert_paths
from basicsr_ea.compat import check_vgg_weights, needs_vgg
from basicsr_ea.losses import nss_loss
from basicsr_ea.models.fitness import check_fitness_folders, check_objectives_run
from basicsr_ea.models.train_options import AllInOneTrainOptions, EAAdamTrainOptions, FusionTrainOptions
from basicsr_ea.optim import OPTIMIZER_REGISTRY
from basicsr_ea.options import OptionError, check_buildable, check_call, parse
from basicsr_ea.tiling import parse_tile

SCHEDULERS = {'MultiStepLR': lr_scheduler.MultiStepRestartLR, 'MultiStepRestartLR': lr_scheduler.MultiStepRestartLR,
              'CosineAnnealingRestartLR': lr_scheduler.CosineAnnealingRestartLR}
TRAIN_OPTIONS = {'EAAdamModel': EAAdamTrainOptions, 'FusionModel': FusionTrainOptions,
                 'AllInOneModel': AllInOneTrainOptions}
# Options of learned metrics that name a weights file.
METRIC_WEIGHT_KEYS = ('backbone_path', 'calibration_path')


def check_training_options(opt):
    """Every check below; raises ``OptionError`` (or FileNotFoundError / FileExistsError) naming the option."""
    check_not_overwriting(opt)
    check_networks(opt)
    if opt['model_type'] in TRAIN_OPTIONS:
        train_options = parse(TRAIN_OPTIONS[opt['model_type']], opt['train'], 'train')
        check_train_losses(opt['train'])
        if opt['model_type'] == 'EAAdamModel':
            check_ea_adam(opt, train_options)
    parse_tile(opt.get('tile'))
    check_files(opt)
    check_datasets(opt)


def check_test_options(opt):
    """What ``check_training_options`` checks of a test run: the networks, ``tile``, the weight files, the sets."""
    check_networks(opt)
    parse_tile(opt.get('tile'))
    check_files(opt)
    check_datasets(opt)


def resuming(opt):
    """Whether this run continues a saved one (then its start model and folder are the saved run's)."""
    states = opt['path'].get('training_states')
    return bool(opt['path'].get('resume_state')) or bool(
        opt.get('auto_resume') and states is not None and os.path.isdir(states) and
        any(name.endswith('.state') for name in os.listdir(states)))


def check_not_overwriting(opt):
    """BasicSR moves an existing experiment folder to ``<name>_archived_<time>`` when a run of that name starts
    afresh, where the options that point at its checkpoints (fusion experts, evaluation rows) no longer find them."""
    root = opt['path']['experiments_root']
    if resuming(opt) or not os.path.isdir(root):
        return
    saved = [os.path.join(sub, name) for sub in ('models', 'training_states') if os.path.isdir(os.path.join(root, sub))
             for name in os.listdir(os.path.join(root, sub)) if name.endswith(('.pth', '.state'))]
    if saved:
        raise FileExistsError(f'{root} already holds an earlier run ({len(saved)} checkpoints, e.g. {saved[0]}): '
                              'continue it with --auto_resume, give this run another name (name:, or --force_yml '
                              'name=...), or move that folder away yourself. (BasicSR would move it to '
                              f'{root}_archived_<time>, where the options that point at it would not find it.)')


def check_networks(opt):
    for key in ('network_g', 'network_d'):
        if key in opt:
            check_buildable(ARCH_REGISTRY, opt[key], key)
    network_g = opt.get('network_g') or {}
    if network_g.get('type') == 'PopulationFusion':
        expert_paths(network_g['experts'], network_g.get('expert_iter', 'latest'),
                     network_g.get('experts_from', 'population'))


def check_train_losses(train_opt):
    """Every ``*_opt`` of ``train`` names a registered loss taking its arguments, every ``optim_*`` a registered
    optimizer, and ``scheduler`` one of BasicSR's schedulers."""
    for key, value in train_opt.items():
        if key.endswith('_opt') and value is not None:
            check_buildable(LOSS_REGISTRY, value, f'train.{key}')
            check_layer_weights(value, f'train.{key}')
        if key.startswith('optim_') and value is not None:
            check_buildable(OPTIMIZER_REGISTRY, value, f'train.{key}', skip=1)
    scheduler = dict(train_opt['scheduler'])
    kind = scheduler.pop('type', None)
    if kind not in SCHEDULERS:
        raise OptionError(f'train.scheduler.type: {kind!r} is not one of BasicSR\'s {", ".join(SCHEDULERS)}')
    check_call(SCHEDULERS[kind], scheduler, 'train.scheduler', skip=1)


def check_layer_weights(loss_opt, where):
    """``layer_weights`` of a perceptual loss name its layers: VGG's for BasicSR's ``PerceptualLoss`` (which fails
    on a typo only as it builds), the statistics of ``NSSLoss``."""
    if 'layer_weights' not in loss_opt or loss_opt.get('type') not in ('PerceptualLoss', 'NSSLoss'):
        return
    if loss_opt['type'] == 'NSSLoss':
        kind, names = 'NSSLoss', nss_loss.FEATURES
    else:
        kind = loss_opt.get('vgg_type', 'vgg19')
        if kind.replace('_bn', '') not in vgg_arch.NAMES:
            raise OptionError(f'{where}.vgg_type: {kind!r} is not one of {", ".join(vgg_arch.NAMES)} (or their _bn)')
        names = vgg_arch.NAMES[kind.replace('_bn', '')]
        names = vgg_arch.insert_bn(names) if 'bn' in kind else names
    for layer in loss_opt['layer_weights']:
        if layer not in names:
            raise OptionError(f'{where}.layer_weights.{layer}: not a layer of {kind}; layers: {", ".join(names)}')


def check_ea_adam(opt, train_options):
    ea = train_options.ea
    check_fitness_folders(ea.fitness)
    check_objectives_run(ea.objectives, ea.fitness.patch_size)
    path = opt['path'].get('pretrain_network_g')
    if path and not resuming(opt):
        for i in range(train_options.population_size):
            if not os.path.isfile(path.format(i=i)):
                raise FileNotFoundError(f'path.pretrain_network_g: {path.format(i=i)} (individual {i}) not found.')


def check_files(opt):
    """The weight files the options name exist: start models (but a population's ``{i}`` paths, checked above),
    VGG for a perceptual loss, and learned metrics' backbones."""
    for key, path in opt['path'].items():
        if key.startswith('pretrain_network_') and isinstance(path, str) and '{i}' not in path and not resuming(opt):
            if not os.path.isfile(path):
                raise FileNotFoundError(f'path.{key}: {path} not found.')
    if needs_vgg(opt):
        check_vgg_weights(opt['path'].get('pretrain_network_vgg') or 'experiments/pretrained_models/'
                          'vgg19-dcbb9e9d.pth')
    for name, metric in ((opt.get('val') or {}).get('metrics') or {}).items():
        for key in METRIC_WEIGHT_KEYS:
            if metric.get(key) and not os.path.isfile(metric[key]):
                raise FileNotFoundError(f'val.metrics.{name}.{key}: {metric[key]} not found.')


def check_datasets(opt):
    """Every dataset is built (so its options, folders and list files are checked now); the train set must give
    each process at least one batch per epoch, or the run would train nothing and save its start model."""
    for phase, dataset_opt in opt['datasets'].items():
        if dataset_opt.get('type') not in DATASET_REGISTRY:
            raise OptionError(f'datasets.{phase}.type: no {dataset_opt.get("type")!r} in the dataset registry')
        # not BasicSR's build_dataset: its log line would set up BasicSR's logger before the pipeline does
        dataset = DATASET_REGISTRY.get(dataset_opt['type'])(deepcopy(dataset_opt))
        if phase == 'train':
            batch = dataset_opt['batch_size_per_gpu'] * (1 if opt['dist'] else max(opt['num_gpu'], 1))
            per_process = math.ceil(len(dataset) * dataset_opt.get('dataset_enlarge_ratio', 1) / opt['world_size'])
            if per_process < batch:
                raise OptionError(f'datasets.train.batch_size_per_gpu: {batch} is more than the {per_process} samples '
                                  'an epoch gives each process (images x dataset_enlarge_ratio / processes): the run '
                                  'would train nothing. Lower it or raise dataset_enlarge_ratio.')
