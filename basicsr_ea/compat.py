"""Repairs of basicsr 1.4.2 (PyPI, unmaintained since 2024) for torch 2.14 / torchvision 0.29 and CPU-only machines.

This is the only module of the project that touches BasicSR's internals, and it changes stock BasicSR only where it
must:

- on import, one repair: BasicSR does not import at all on torchvision >= 0.17 without it (``functional_tensor``);
- ``PipelineRepairs``: the repairs of BasicSR's training and test pipelines, active only while this project's
  entry points (``basicsr_ea/train.py``, ``test.py``, ``scripts/evaluate.py``) run them, undone on exit;
- ``RepairedModel``: what this project's models change in BasicSR's ``BaseModel``, as a base class of theirs, so
  BasicSR's own models are untouched;
- ``perceptual_weights(opt)``: BasicSR's perceptual loss from the options' local VGG file, for one build.

Each repair says why it exists and to which BasicSR versions it applies (``REPAIRED_VERSIONS``); README.md lists
what they change in BasicSR's behaviour.
"""
import importlib.util
import logging
import os
import sys
import types
from contextlib import ExitStack, contextmanager
from unittest import mock

import torch
import torchvision.transforms.functional as tv_functional


def _shim_functional_tensor():
    """torchvision 0.17 removed ``transforms.functional_tensor``; ``basicsr.data.degradations`` still imports
    ``rgb_to_grayscale`` from it, so ``import basicsr`` fails without this alias. Only where the module is gone."""
    name = 'torchvision.transforms.functional_tensor'
    if name not in sys.modules and importlib.util.find_spec(name) is None:
        module = types.ModuleType(name)
        module.rgb_to_grayscale = tv_functional.rgb_to_grayscale
        sys.modules[name] = module


_shim_functional_tensor()

import basicsr  # noqa: E402  (must follow the shim)
import basicsr.test  # noqa: E402
import basicsr.train  # noqa: E402
from basicsr.archs import vgg_arch  # noqa: E402
from basicsr.data import paired_image_dataset  # noqa: E402
from basicsr.data.data_sampler import EnlargedSampler  # noqa: E402
from basicsr.models import base_model  # noqa: E402
from basicsr.utils import dist_util, file_client, img_util, set_random_seed  # noqa: E402
from basicsr.utils.misc import check_resume, scandir  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from basicsr_ea.checkpoints import (CheckpointError, load_network, read_checkpoint, save_checkpoint,  # noqa: E402
                                    strip_module_prefix)
from basicsr_ea.image_formats import decode_color, decode_opencv  # noqa: E402
from basicsr_ea.options import OptionError  # noqa: E402
from basicsr_ea.utils import get_rng_states, resolve_device, set_rng_states  # noqa: E402

# The BasicSR releases these repairs were written for: 1.4.2 is the last one; a later release is left alone.
REPAIRED_VERSIONS = ((1, 4, 2), )
BASICSR_VERSION = tuple(int(part) for part in basicsr.__version__.split('.')[:3])


def repairs_apply():
    return BASICSR_VERSION in REPAIRED_VERSIONS


# -- the pipeline repairs ---------------------------------------------------------------------------------------


def newest_intact_state(state_path, log):
    """(path, state) of the newest ``<iter>.state`` in ``state_path`` that reads, or (None, None): a state cut
    short by a kill or a full disk is skipped, saying so, and the run resumes from the one before."""
    iterations = sorted((int(name.split('.state')[0]) for name in scandir(state_path, suffix='.state')
                         if name.split('.state')[0].isdigit()), reverse=True)
    for iteration in iterations:
        path = os.path.join(state_path, f'{iteration}.state')
        try:
            return path, read_checkpoint(path, map_location=resolve_device())
        except CheckpointError as err:
            log.warning(f'auto_resume: {err} Trying the state before it.')
    return None, None


class PipelineRepairs:
    """``with PipelineRepairs(): train_pipeline(root)``: BasicSR 1.4.2's pipelines (``train_pipeline``,
    ``test_pipeline``) with their repairs, applied on enter and undone on exit. A resumed run's place in its data
    is kept on this object, not in a module global."""

    def __init__(self, check_options=None):
        self.check_options = check_options
        self.pending_resume = None
        self.stack = ExitStack()

    def __enter__(self):
        if not repairs_apply():
            return self
        patches = [
            (basicsr.train, 'load_resume_state', self.load_resume_state),
            (base_model.BaseModel, 'get_optimizer', _get_optimizer),
            (vgg_arch.VGGFeatureExtractor, '__init__', _vgg_init(vgg_arch.VGGFeatureExtractor.__init__)),
            (paired_image_dataset.PairedImageDataset, '__init__',
             _paired_init(paired_image_dataset.PairedImageDataset.__init__)),
            (paired_image_dataset.PairedImageDataset, '__getitem__',
             _paired_getitem(paired_image_dataset.PairedImageDataset.__getitem__)),
            (file_client.LmdbBackend, 'get', _lmdb_get(file_client.LmdbBackend.get)),
        ]
        # BasicSR's own models get what this project's models have (see RepairedModel): atomic checkpoints, training
        # states with the RNG states exact resume needs, named load errors.
        patches += [(base_model.BaseModel, name, getattr(RepairedModel, name))
                    for name in ('save_network', 'save_training_state', 'load_network')]
        if not torch.cuda.is_available():
            patches += [(dist_util, '_init_dist_pytorch', _init_dist_cpu),
                        (base_model.BaseModel, 'model_to_device', RepairedModel.model_to_device)]
        if self.check_options is not None:
            for pipeline in (basicsr.train, basicsr.test):
                patches.append((pipeline, 'parse_options', self._checked_parse(pipeline.parse_options)))
        for module_name, module in list(sys.modules.items()):  # every BasicSR module that bound imfrombytes
            if module_name.split('.')[0] == 'basicsr' and getattr(module, 'imfrombytes', None) is img_util.imfrombytes:
                patches.append((module, 'imfrombytes', imfrombytes))
        for owner, name, replacement in patches:
            self.stack.enter_context(mock.patch.object(owner, name, replacement))
        # which their save_training_state reads through a method BaseModel lacks
        self.stack.enter_context(mock.patch.object(base_model.BaseModel, 'training_state',
                                                   RepairedModel.training_state, create=True))
        return self

    def __exit__(self, *exc):
        self.stack.close()
        return False

    def _checked_parse(self, original_parse):

        def parse_options(root_path, is_train=True):
            """BasicSR's option parsing, then ``check_options(opt)`` before the pipeline makes a folder or reads
            data; an option error is prefixed with the options file. BasicSR seeds its generators before it applies
            ``--force_yml``, so ``--force_yml manual_seed=N`` changed the log and nothing else: they are seeded
            again from the final options (the same seed as before when it was not forced)."""
            opt, args = original_parse(root_path, is_train)
            set_random_seed(opt['manual_seed'] + opt['rank'])
            try:
                self.check_options(opt)
            except OptionError as err:
                raise OptionError(f'{args.opt}: {err}') from err
            return opt, args

        return parse_options

    def load_resume_state(self, opt):
        """BasicSR's maps storages with ``torch.cuda.current_device()`` (fails on CPU), looks for ``experiments/``
        relative to the working directory instead of the experiment root, and fails on a truncated newest state;
        this one resumes from the newest intact state and remembers where the run stood in its data."""
        log = logging.getLogger('basicsr')
        path, state = None, None
        if opt['auto_resume']:
            if os.path.isdir(opt['path']['training_states']):
                path, state = newest_intact_state(opt['path']['training_states'], log)
        elif opt['path'].get('resume_state'):
            path = opt['path']['resume_state']
            state = read_checkpoint(path, map_location=resolve_device())
        if state is None:
            return None
        opt['path']['resume_state'] = path
        check_resume(opt, state['iter'])
        self.pending_resume = {'iter': state['iter'], 'rng': state.get('rng'),
                               'batch_size': opt['datasets']['train']['batch_size_per_gpu']}
        self.stack.enter_context(mock.patch.object(EnlargedSampler, '__iter__',
                                                   self._sampler_iter(EnlargedSampler.__iter__)))
        return state

    def _sampler_iter(self, original_iter):
        repairs = self

        def sampler_iter(sampler):
            """BasicSR restarts a resumed epoch from its first batch and does not restore RNGs, so a resumed run
            sees other data than an uninterrupted one. Skip the batches the saved run consumed (every epoch holds
            ``len // batch`` batches: the train loader drops the last one) and restore the RNG states saved with
            them, at the epoch's first batch, after the DataLoader drew its own seed, where the saved run stood.
            With ``num_worker_per_gpu: 0`` resume is exact; with workers, augmentation RNG lives in the workers."""
            indices = list(original_iter(sampler))
            resume, repairs.pending_resume = repairs.pending_resume, None
            if resume is not None:  # the first epoch after resuming
                batch_size = resume['batch_size']
                consumed = resume['iter'] - sampler.epoch * (len(indices) // batch_size)
                indices = indices[consumed * batch_size:]
                if resume['rng'] is not None:
                    set_rng_states(resume['rng'])
            return iter(indices)

        return sampler_iter


def _init_dist_cpu(backend='nccl', **kwargs):
    """BasicSR divides by the GPU count (zero on CPU) and forces NCCL; on a CPU-only machine use gloo."""
    torch.distributed.init_process_group(backend='gloo', **kwargs)


def _get_optimizer(self, optim_type, params, lr, **kwargs):
    """BasicSR 1.4.2 knows only Adam; resolve every ``optim_*`` type through the project's optimizer registry
    (torch's Adam for ``Adam``, as in BasicSR)."""
    from basicsr_ea.optim import OPTIMIZER_REGISTRY
    return OPTIMIZER_REGISTRY.get(optim_type)(params, lr=lr, **kwargs)


def _vgg_init(original_init):

    def vgg_init(self, *args, **kwargs):
        """BasicSR downloads ImageNet VGG weights when its local file is missing; nothing downloads here."""
        check_vgg_weights(vgg_arch.VGG_PRETRAIN_PATH)
        original_init(self, *args, **kwargs)

    return vgg_init


def _paired_init(original_init):

    def paired_init(self, opt):
        """BasicSR fails deep inside (a scandir traceback, or a zero division once training starts) when a data
        root is missing or holds no images, and reads an empty image file only when it is drawn; name the folder or
        the file at construction, before training starts."""
        local = opt['io_backend']['type'] in ('disk', 'lmdb')  # other backends (memcached, petrel) read remote roots
        for key in ('dataroot_lq', 'dataroot_gt'):
            if local and not os.path.isdir(opt[key]):
                raise FileNotFoundError(f'{key} {opt[key]} not found.')
        original_init(self, opt)
        if not self.paths:
            raise ValueError(f"{opt['dataroot_gt']} and {opt['dataroot_lq']} hold no images.")
        if opt['io_backend']['type'] == 'disk':
            empty = next((path for pair in self.paths for path in (pair['gt_path'], pair['lq_path'])
                          if os.path.getsize(path) == 0), None)
            if empty is not None:
                raise ValueError(f'{empty} is empty (0 bytes): an interrupted copy?')

    return paired_init


def _paired_getitem(original_getitem):

    def paired_getitem(self, index):
        """BasicSR's errors on a bad pair (an undecodable image, LQ and GT sizes off the scale) do not name its
        files."""
        try:
            return original_getitem(self, index)
        except ValueError as err:
            pair = self.paths[index]
            lq, gt = pair['lq_path'], pair['gt_path']
            if 'db_paths' in self.io_backend_opt:  # LMDB: the paths are keys
                lq, gt = f'key {lq} of {self.lq_folder}', f'key {gt} of {self.gt_folder}'
            # paired_random_crop passes its message to ValueError in two parts
            raise ValueError(f"LQ {lq} / GT {gt}: {''.join(map(str, err.args))}") from err

    return paired_getitem


def imfrombytes(content, flag='color', float32=False):
    """BasicSR's ``imfrombytes`` returns None for bytes that are not an image, which fails later as an
    AttributeError far from the file, cuts 16-bit images to 8 bits and silently drops an alpha channel. Colour
    float images (what every BasicSR dataset reads) come from ``image_formats.decode_color``: full bit depth,
    transparent images refused; the other reads from ``decode_opencv``/OpenCV. Bytes that are not an image raise
    ValueError (callers add the file's name)."""
    if flag == 'color' and float32:
        return decode_color(content)
    img = decode_opencv(content, flag)
    return img.astype('float32') / 255. if float32 else img


def _lmdb_get(original_get):

    def lmdb_get(self, filepath, client_key):
        """BasicSR returns None for a key missing from the LMDB (e.g. listed in a stale meta_info.txt), which fails
        later far from the key; name the key and the LMDB."""
        value = original_get(self, filepath, client_key)
        if value is None:
            db_path = dict(zip(self._client, self.db_paths))[client_key]
            raise KeyError(f'key {filepath} (listed in meta_info.txt) is missing from the LMDB {db_path}.')
        return value

    return lmdb_get


# -- VGG weights ------------------------------------------------------------------------------------------------


def needs_vgg(opt):
    """Whether the options' ``train.perceptual_opt`` is BasicSR's VGG ``PerceptualLoss`` (``NSSLoss`` needs no
    weights)."""
    return ((opt.get('train') or {}).get('perceptual_opt') or {}).get('type') == 'PerceptualLoss'


def check_vgg_weights(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'VGG weights for the perceptual loss not found at {os.path.abspath(path)}. Put torchvision\'s '
            'vgg19-dcbb9e9d.pth there (or set path.pretrain_network_vgg in the options); nothing is downloaded.')


@contextmanager
def perceptual_weights(opt):
    """BasicSR's ``VGGFeatureExtractor`` (the perceptual loss) reads the module global ``VGG_PRETRAIN_PATH`` and
    downloads ImageNet weights when that file is missing. When ``train.perceptual_opt`` is that loss, point it at
    ``path.pretrain_network_vgg`` (default BasicSR's ``experiments/pretrained_models/vgg19-dcbb9e9d.pth``),
    which must exist, for the builds inside only; otherwise change nothing."""
    if not needs_vgg(opt):
        yield None
        return
    path = opt['path'].get('pretrain_network_vgg') or vgg_arch.VGG_PRETRAIN_PATH
    check_vgg_weights(path)
    with mock.patch.object(vgg_arch, 'VGG_PRETRAIN_PATH', path):
        yield path


# -- the models' repairs ----------------------------------------------------------------------------------------


class RepairedModel:
    """Put before BasicSR's model class in this project's models (``class X(RepairedModel, SRModel)``): what they
    change in ``BaseModel`` for themselves, leaving BasicSR's own models as they are."""

    def model_to_device(self, net):
        """BasicSR passes ``device_ids=[torch.cuda.current_device()]`` to DDP, which fails in CPU processes."""
        net = net.to(self.device)
        if self.opt['dist']:
            device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
            find_unused = self.opt.get('find_unused_parameters', False)
            return DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=find_unused)
        if self.opt['num_gpu'] > 1:
            return torch.nn.DataParallel(net)
        return net

    get_optimizer = _get_optimizer

    def setup_schedulers(self):
        """BasicSR pops ``type`` from the options it was given, so a second call (population models) raises
        KeyError: give it a copy."""
        scheduler_opt = self.opt['train']['scheduler']
        self.opt['train']['scheduler'] = dict(scheduler_opt)
        try:
            super().setup_schedulers()
        finally:
            self.opt['train']['scheduler'] = scheduler_opt

    def save_network(self, net, net_label, current_iter, param_key='params'):
        """BasicSR's version writes in place and ignores write errors after three tries: write atomically and say
        which file could not be written (a full disk keeps the previous checkpoint)."""
        if self.opt.get('rank', 0) != 0:
            return
        nets = net if isinstance(net, list) else [net]
        param_keys = param_key if isinstance(param_key, list) else [param_key]
        save_dict = {key: {k: v.cpu() for k, v in strip_module_prefix(self.get_bare_model(net_).state_dict()).items()}
                     for net_, key in zip(nets, param_keys, strict=True)}
        label = 'latest' if current_iter == -1 else current_iter
        save_checkpoint(save_dict, os.path.join(self.opt['path']['models'], f'{net_label}_{label}.pth'))

    def training_state(self, epoch, current_iter):
        """What ``save_training_state`` writes; a model adds its own entries here."""
        return {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in self.optimizers],
                'schedulers': [s.state_dict() for s in self.schedulers], 'rng': get_rng_states()}

    def save_training_state(self, epoch, current_iter):
        """BasicSR's version writes in place and saves no RNG state, which exact resume needs."""
        if current_iter == -1 or self.opt.get('rank', 0) != 0:
            return
        save_checkpoint(self.training_state(epoch, current_iter),
                        os.path.join(self.opt['path']['training_states'], f'{current_iter}.state'))

    def load_network(self, net, load_path, strict=True, param_key='params'):
        """BasicSR passes torch's raw errors on (missing, truncated or foreign files, unpickling) and loads NaN
        weights; ``checkpoints.load_network`` names the file and what is wrong."""
        load_network(self.get_bare_model(net), load_path, param_key, strict)
