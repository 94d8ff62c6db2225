"""Repairs of basicsr 1.4.2 (PyPI, unmaintained) for torch 2.14 / torchvision 0.29 and CPU-only machines.

This is the only module of the project that touches BasicSR's internals. It is imported by
``basicsr_ea/__init__.py`` before anything else imports BasicSR; each repair says why it exists.
"""
import os
import pickle
import sys
import types

import cv2
import numpy as np
import torch
import torchvision.transforms.functional as tv_functional


def _shim_functional_tensor():
    """torchvision 0.17 removed ``transforms.functional_tensor``; ``basicsr.data.degradations`` still imports
    ``rgb_to_grayscale`` from it, so ``import basicsr`` fails without this alias."""
    name = 'torchvision.transforms.functional_tensor'
    if name not in sys.modules:
        module = types.ModuleType(name)
        module.rgb_to_grayscale = tv_functional.rgb_to_grayscale
        sys.modules[name] = module


_shim_functional_tensor()

import basicsr.train  # noqa: E402  (must follow the shim)
from basicsr.archs import vgg_arch  # noqa: E402
from basicsr.data import paired_image_dataset  # noqa: E402
from basicsr.data.data_sampler import EnlargedSampler  # noqa: E402
from basicsr.models import base_model  # noqa: E402
from basicsr.utils import dist_util, file_client, img_util  # noqa: E402
from basicsr.utils.misc import check_resume, scandir  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from basicsr_ea.image_formats import decode_color  # noqa: E402
from basicsr_ea.utils import atomic_torch_save, get_rng_states, set_rng_states  # noqa: E402

# Where a resumed run stands in its data: set by ``load_resume_state``, consumed by the train sampler's first epoch.
_pending_resume = {}


def storage_device():
    """The device checkpoints are mapped to: this rank's GPU when there is one, else the CPU."""
    if torch.cuda.is_available():
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


def load_resume_state(opt):
    """Replaces ``basicsr.train.load_resume_state``, which maps storages with ``torch.cuda.current_device()`` (fails
    on CPU) and looks for ``experiments/`` relative to the working directory instead of the experiment root."""
    resume_state_path = None
    if opt['auto_resume']:
        state_path = opt['path']['training_states']
        if os.path.isdir(state_path):
            states = [int(v.split('.state')[0]) for v in scandir(state_path, suffix='state', recursive=False)]
            if states:
                resume_state_path = os.path.join(state_path, f'{max(states)}.state')
                opt['path']['resume_state'] = resume_state_path
    elif opt['path'].get('resume_state'):
        resume_state_path = opt['path']['resume_state']
    if resume_state_path is None:
        return None
    resume_state = torch.load(resume_state_path, map_location=storage_device(), weights_only=True)
    check_resume(opt, resume_state['iter'])
    _pending_resume.update(iter=resume_state['iter'], rng=resume_state.get('rng'),
                           batch_size=opt['datasets']['train']['batch_size_per_gpu'])
    return resume_state


_original_sampler_iter = EnlargedSampler.__iter__


def _sampler_iter(self):
    """BasicSR restarts a resumed epoch from its first batch and does not restore RNGs, so a resumed run sees other
    data than an uninterrupted one. Skip the batches the saved run already consumed (every epoch holds
    ``len // batch`` batches: the train loader drops the last one) and restore the RNG states saved with them. Runs
    lazily at the epoch's first batch, after the DataLoader drew its own seed, exactly where the saved run stood.
    With ``num_worker_per_gpu: 0`` this makes resume exact; with workers, augmentation RNG lives in the workers."""
    indices = list(_original_sampler_iter(self))
    if _pending_resume:
        resume = dict(_pending_resume)
        _pending_resume.clear()
        batch_size = resume['batch_size']
        consumed = resume['iter'] - self.epoch * (len(indices) // batch_size)
        indices = indices[consumed * batch_size:]
        if resume['rng'] is not None:
            set_rng_states(resume['rng'])
    return iter(indices)


def _init_dist_pytorch(backend='nccl', **kwargs):
    """BasicSR divides by the GPU count (zero on CPU) and forces NCCL; on a CPU-only machine use gloo."""
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', os.environ['RANK'])) % torch.cuda.device_count())
    else:
        backend = 'gloo'
    torch.distributed.init_process_group(backend=backend, **kwargs)


def _model_to_device(self, net):
    """BasicSR passes ``device_ids=[torch.cuda.current_device()]`` to DDP, which fails on CPU processes."""
    net = net.to(self.device)
    if self.opt['dist']:
        device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
        find_unused = self.opt.get('find_unused_parameters', False)
        return DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=find_unused)
    if self.opt['num_gpu'] > 1:
        return torch.nn.DataParallel(net)
    return net


def _get_optimizer(self, optim_type, params, lr, **kwargs):
    """BasicSR 1.4.2 knows only Adam; resolve every ``optim_*`` type through the project's optimizer registry."""
    from basicsr_ea.optim import OPTIMIZER_REGISTRY
    return OPTIMIZER_REGISTRY.get(optim_type)(params, lr=lr, **kwargs)


_original_setup_schedulers = base_model.BaseModel.setup_schedulers


def _setup_schedulers(self):
    """BasicSR pops ``type`` from the options it was given, so a second call (population models) raises KeyError."""
    scheduler_opt = self.opt['train']['scheduler']
    self.opt['train']['scheduler'] = dict(scheduler_opt)
    try:
        _original_setup_schedulers(self)
    finally:
        self.opt['train']['scheduler'] = scheduler_opt


_original_vgg_init = vgg_arch.VGGFeatureExtractor.__init__


def _vgg_init(self, *args, **kwargs):
    """BasicSR downloads ImageNet VGG weights when its local file is missing; nothing downloads here."""
    path = vgg_arch.VGG_PRETRAIN_PATH
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'VGG weights for the perceptual loss not found at {os.path.abspath(path)}. Put torchvision\'s '
            'vgg19-dcbb9e9d.pth there (or set path.pretrain_network_vgg in the options); nothing is downloaded.')
    _original_vgg_init(self, *args, **kwargs)


def _save_training_state(self, epoch, current_iter):
    """BasicSR's version writes in place (a crash mid-save loses the last state) and saves no RNG state."""
    if current_iter == -1 or self.opt['rank'] != 0:
        return
    state = {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in self.optimizers],
             'schedulers': [s.state_dict() for s in self.schedulers], 'rng': get_rng_states()}
    atomic_torch_save(state, os.path.join(self.opt['path']['training_states'], f'{current_iter}.state'))


def _save_network(self, net, net_label, current_iter, param_key='params'):
    """BasicSR's version writes in place and swallows write errors after three tries; write atomically and raise."""
    if self.opt['rank'] != 0:
        return
    nets = net if isinstance(net, list) else [net]
    param_keys = param_key if isinstance(param_key, list) else [param_key]
    save_dict = {}
    for net_, key in zip(nets, param_keys, strict=True):
        state_dict = self.get_bare_model(net_).state_dict()
        save_dict[key] = {k.removeprefix('module.'): v.cpu() for k, v in state_dict.items()}
    label = 'latest' if current_iter == -1 else current_iter
    atomic_torch_save(save_dict, os.path.join(self.opt['path']['models'], f'{net_label}_{label}.pth'))


_original_load_network = base_model.BaseModel.load_network


def _load_network(self, net, load_path, strict=True, param_key='params'):
    """BasicSR passes torch's raw errors on for a missing checkpoint or one that needs arbitrary unpickling."""
    if not os.path.isfile(load_path):
        raise FileNotFoundError(f'network checkpoint {load_path} not found (check path.pretrain_network_* '
                                'in the options).')
    try:
        _original_load_network(self, net, load_path, strict, param_key)
    except pickle.UnpicklingError as err:
        raise pickle.UnpicklingError(f'{load_path} is not a weights-only checkpoint (it holds pickled objects '
                                     'other than tensors and plain containers); it is not loaded.') from err


_original_paired_init = paired_image_dataset.PairedImageDataset.__init__
_original_paired_getitem = paired_image_dataset.PairedImageDataset.__getitem__


def _paired_init(self, opt):
    """BasicSR fails deep inside (a scandir traceback, or a zero division once training starts) when a data root is
    missing or holds no images; name the folder at construction, before training starts."""
    local = opt['io_backend']['type'] in ('disk', 'lmdb')  # other backends (memcached, petrel) read remote roots
    for key in ('dataroot_lq', 'dataroot_gt'):
        if local and not os.path.isdir(opt[key]):
            raise FileNotFoundError(f'{key} {opt[key]} not found.')
    _original_paired_init(self, opt)
    if not self.paths:
        raise ValueError(f"{opt['dataroot_gt']} and {opt['dataroot_lq']} hold no images.")


def _paired_getitem(self, index):
    """BasicSR's errors on a bad pair (an undecodable image, LQ and GT sizes off the scale) do not name its files."""
    try:
        return _original_paired_getitem(self, index)
    except ValueError as err:
        pair = self.paths[index]
        lq, gt = pair['lq_path'], pair['gt_path']
        if 'db_paths' in self.io_backend_opt:  # LMDB: the paths are keys
            lq, gt = f'key {lq} of {self.lq_folder}', f'key {gt} of {self.gt_folder}'
        # paired_random_crop passes its message to ValueError in two parts
        raise ValueError(f"LQ {lq} / GT {gt}: {''.join(map(str, err.args))}") from err


_original_imfrombytes = img_util.imfrombytes
_IMREAD_FLAGS = {'color': cv2.IMREAD_COLOR, 'grayscale': cv2.IMREAD_GRAYSCALE, 'unchanged': cv2.IMREAD_UNCHANGED}


def _imfrombytes(content, flag='color', float32=False):
    """BasicSR's ``imfrombytes`` returns None for bytes that are not an image, which fails later as an AttributeError
    far from the file, cuts 16-bit images to 8 bits and silently drops an alpha channel. Colour float images (what
    every BasicSR dataset reads) come from ``image_formats.decode_color``: full bit depth, transparent images
    refused; other reads raise ValueError for bytes that are not an image (callers add the file's name)."""
    if flag == 'color' and float32:
        return decode_color(content)
    img = cv2.imdecode(np.frombuffer(content, np.uint8), _IMREAD_FLAGS[flag])
    if img is None:
        raise ValueError('the file is not an image OpenCV can decode (corrupt or truncated).')
    return img.astype(np.float32) / 255. if float32 else img


_original_lmdb_get = file_client.LmdbBackend.get


def _lmdb_get(self, filepath, client_key):
    """BasicSR returns None for a key missing from the LMDB (e.g. listed in a stale meta_info.txt), which fails later
    far from the key; name the key and the LMDB."""
    value = _original_lmdb_get(self, filepath, client_key)
    if value is None:
        db_path = dict(zip(self._client, self.db_paths))[client_key]
        raise KeyError(f'key {filepath} (listed in meta_info.txt) is missing from the LMDB {db_path}.')
    return value


def set_vgg_weights_path(path):
    """Point BasicSR's ``VGGFeatureExtractor`` (perceptual loss) at a local weight file."""
    vgg_arch.VGG_PRETRAIN_PATH = path


basicsr.train.load_resume_state = load_resume_state
EnlargedSampler.__iter__ = _sampler_iter
base_model.BaseModel.save_training_state = _save_training_state
base_model.BaseModel.save_network = _save_network
dist_util._init_dist_pytorch = _init_dist_pytorch
base_model.BaseModel.model_to_device = _model_to_device
base_model.BaseModel.get_optimizer = _get_optimizer
base_model.BaseModel.setup_schedulers = _setup_schedulers
vgg_arch.VGGFeatureExtractor.__init__ = _vgg_init
base_model.BaseModel.load_network = _load_network
paired_image_dataset.PairedImageDataset.__init__ = _paired_init
paired_image_dataset.PairedImageDataset.__getitem__ = _paired_getitem
file_client.LmdbBackend.get = _lmdb_get
for _module_name, _module in list(sys.modules.items()):  # BasicSR's modules that bound imfrombytes; importers after
    if _module_name.split('.')[0] == 'basicsr' and getattr(_module, 'imfrombytes', None) is _original_imfrombytes:
        _module.imfrombytes = _imfrombytes
