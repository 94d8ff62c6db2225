"""Optimizer registry: BasicSR has none, so ``optim_*: {type: ...}`` options resolve through this one."""
from copy import deepcopy

import torch
from basicsr.utils.registry import Registry

OPTIMIZER_REGISTRY = Registry('optimizer')
for _name in ('Adam', 'AdamW', 'SGD', 'RMSprop', 'Adamax', 'NAdam', 'RAdam'):
    OPTIMIZER_REGISTRY.register(getattr(torch.optim, _name))


def build_optimizer(opt, params):
    """Build a registered optimizer from ``{type: ..., lr: ..., ...}`` without touching ``opt``."""
    opt = deepcopy(opt)
    return OPTIMIZER_REGISTRY.get(opt.pop('type'))(params, **opt)
from basicsr_ea.optim.ea_adam import EAAdam  # noqa: E402,F401
