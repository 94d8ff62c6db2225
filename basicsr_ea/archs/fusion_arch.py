"""Population fusion (Sun et al., TIP 2024, https://arxiv.org/abs/2312.15408, Stage 2): any registered backbone
turned into its dynamic twin over K expert checkpoints of an EA-Adam run, and collapsed back to one plain backbone.

    network_g:
      type: PopulationFusion
      backbone: {type: RRDBNet, num_in_ch: 3, num_out_ch: 3, num_feat: 64, num_block: 23}
      experts: experiments/EAAdam_RRDB_x4      # or its models/ folder, or a list of checkpoint paths
      expert_iter: latest                      # net_g_{i}_{expert_iter}.pth
      experts_from: population                 # or archive: the EA's archive, net_g_archive_{k}_{expert_iter}.pth
      router_channels: [64, 64, 100]
      router_hidden: 15
"""
import os
from collections import OrderedDict
from contextlib import contextmanager

import torch
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from basicsr_ea.archs.mixing_layers import MIXING_LAYERS, AlphaMean, MixedParameter
from basicsr_ea.checkpoints import MEMBER_LABELS, check_fits, network_state, population_paths, read_checkpoint

DEFAULT_STATIC_PARAMS = ('relative_position_bias_table', 'absolute_pos_embed')


def expert_paths(experts, expert_iter='latest', experts_from='population'):
    """The expert checkpoints: a list of paths as given, or ``net_g_{i}_{expert_iter}.pth`` of an EA-Adam experiment
    folder (or of its ``models/``) ordered by individual index i, numerically (``net_g_10`` after ``net_g_9``), so
    expert k is individual k: from pure distortion (0) to pure perception (P-1). ``experts_from: archive`` takes
    the EA's archive instead (``net_g_archive_{k}_{expert_iter}.pth``, k in the order of the distortion objective,
    so again from the distortion end to the perception end)."""
    if experts_from not in MEMBER_LABELS:
        raise ValueError(f'experts_from: must be {" or ".join(map(repr, MEMBER_LABELS))}, got {experts_from!r}')
    if isinstance(experts, (list, tuple)):
        paths = [str(path) for path in experts]
    else:
        folder = os.path.join(experts, 'models') if os.path.isdir(os.path.join(experts, 'models')) else experts
        if not os.path.isdir(folder):
            raise FileNotFoundError(f'experts: {experts} is neither a folder nor a list of checkpoint paths')
        paths = population_paths(folder, expert_iter, MEMBER_LABELS[experts_from])
    if len(paths) < 2:
        raise ValueError(f'fusion needs at least 2 experts, got {paths}')
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f'expert checkpoint not found: {path}')
    return paths


def load_expert(path, template, arch):
    """An expert's state dict (BasicSR's ``{'params': ...}``), checked key by key and shape by shape against the
    backbone built from the options (``template``): a checkpoint of another arch or size is an error."""
    state = network_state(read_checkpoint(path), path)
    check_fits(state, template, path, f'backbone {arch}')
    return state


def is_torch_layer(module):
    """Whether ``module`` is (or subclasses) a torch.nn layer: those without a mixing layer are never mixed
    statically, since a per-image twin is what a user would expect of them."""
    return any(cls.__module__.startswith('torch.') for cls in type(module).__mro__ if cls not in (nn.Module, object))


def differs(key, states):
    return any(not torch.equal(state[key], states[0][key]) for state in states[1:])


class Calibration(dict):
    """``{site: AlphaMean}`` of every mixing site, filled by the forwards run in ``PopulationFusion.calibration``."""

    def mean_weights(self):
        return {name: recorder.mean() for name, recorder in self.items()}


@ARCH_REGISTRY.register()
class PopulationFusion(nn.Module):
    """A backbone whose layers mix K frozen experts with weights predicted per image and per layer.

    Args:
        backbone: options of the backbone arch (``{type: RRDBNet, ...}``), built with BasicSR's ``build_network``.
        experts: a list of checkpoint paths (expert k = the k-th) or an EA-Adam experiment folder (``expert_paths``).
        expert_iter: which checkpoints of a folder: ``latest`` or an iteration.
        experts_from: ``population`` (the individuals) or ``archive`` (the EA's archive) of a folder.
        router_channels, router_hidden: widths of every router (the paper's 64, 64, 100 and 15).
        static_params: names of raw parameters of custom blocks that may be mixed with one learned,
            input-independent weight (``MixedParameter``) when they differ between the experts.

    Every ``nn.Conv2d``, ``nn.Linear`` and ``nn.LayerNorm`` becomes its mixing twin (``mixing_layers``). Any other
    parameter equal in all experts is kept once, frozen, as a buffer; one that differs is a ``MixedParameter`` if
    its name is in ``static_params`` and its module is no torch.nn layer, else an error. Buffers must be equal in all
    experts. Sites are named by their path in the backbone (a parameter by its state-dict key). Trainable: the
    routers and the ``MixedParameter`` logits; the expert tensors come from the checkpoints and are not saved.
    """

    def __init__(self, backbone, experts, expert_iter='latest', router_channels=(64, 64, 100), router_hidden=15,
                 static_params=DEFAULT_STATIC_PARAMS, experts_from='population'):
        super().__init__()
        self.backbone = build_network(backbone)
        template = self.backbone.state_dict()
        self.backbone_keys = list(template)
        states = [load_expert(path, template, backbone['type'])
                  for path in expert_paths(experts, expert_iter, experts_from)]
        # Site names only: the sites live in the module tree, so copies and DataParallel replicas find their own.
        self.layer_names, self.param_keys = [], []
        router_opt = dict(router_channels=tuple(router_channels), router_hidden=router_hidden)
        for name, module in list(self.backbone.named_modules()):
            if type(module) in MIXING_LAYERS and any(p is not None for p in module._parameters.values()):
                self._mix_layer(name, module, states, router_opt)
            else:
                self._mix_parameters(name, module, states, static_params)
        self._load_shared_buffers(states)
        # Every rank loads the experts from the same files and they never change: DDP need not broadcast them.
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self, self.expert_buffer_names())

    def _mix_layer(self, name, module, states, router_opt):
        stacks = {pname: None if param is None else torch.stack([state[f'{name}.{pname}'] for state in states])
                  for pname, param in module._parameters.items()}
        parent, _, child = name.rpartition('.')
        setattr(self.backbone.get_submodule(parent), child, MIXING_LAYERS[type(module)](module, stacks, **router_opt))
        self.layer_names.append(name)

    def _mix_parameters(self, name, module, states, static_params):
        """Parameters a module holds itself: shared when equal in all experts, else statically mixed or an error."""
        for pname, param in list(module.named_parameters(recurse=False)):
            key = f'{name}.{pname}' if name else pname
            delattr(module, pname)
            if not differs(key, states):
                module.register_buffer(pname, param.detach())
            elif pname in static_params and not is_torch_layer(module):
                module.add_module(f'{pname}_mixer', MixedParameter(torch.stack([state[key] for state in states])))
                self.param_keys.append(key)
            else:
                raise TypeError(self._unmixable_message(key, module, pname))

    def _load_shared_buffers(self, states):
        """Everything not mixed is a buffer now (the backbone's own or a shared parameter): equal in all experts."""
        mixed = {f'{name}.{t}' for name, layer in self.layers.items() for t in layer.expert_names}
        mixed.update(self.param_keys)
        for key in self.backbone_keys:
            if key not in mixed:
                if differs(key, states):
                    raise ValueError(f'buffer {key} differs between the experts (e.g. BatchNorm statistics): a fused '
                                     'network cannot hold one value for all of them')
                self.backbone.get_buffer(key).copy_(states[0][key])

    @staticmethod
    def _unmixable_message(key, module, pname):
        if is_torch_layer(module):
            return (f'{key}: {type(module).__name__} has no mixing layer (supported: '
                    f'{", ".join(t.__name__ for t in MIXING_LAYERS)}) and its parameters differ between the experts')
        return (f'{key}: a raw parameter of {type(module).__name__} that differs between the experts and that no '
                f'layer can mix per image; list "{pname}" in static_params to mix it with one learned weight')

    @property
    def layers(self):
        return {name: self.backbone.get_submodule(name) for name in self.layer_names}

    @property
    def params(self):
        return {key: self.backbone.get_submodule(f'{key}_mixer') for key in self.param_keys}

    def expert_buffer_names(self):
        names = [f'backbone.{name}.{t}' for name, layer in self.layers.items() for t in layer.expert_names]
        return names + [f'backbone.{key}_mixer.experts' for key in self.param_keys]

    @property
    def sites(self):
        return {**self.layers, **self.params}

    def _owner(self, key):
        owner, _, pname = key.rpartition('.')
        return self.backbone.get_submodule(owner), pname

    def forward(self, x):
        layers, params = self.layers.values(), self.params
        for layer in layers:
            layer.num_images = x.shape[0]
        try:
            for key, param in params.items():
                setattr(*self._owner(key), param())
            return self.backbone(x)
        finally:
            for layer in layers:
                layer.num_images = None
            for key in params:  # the mixed tensors live for one forward only (they hold its graph)
                owner, pname = self._owner(key)
                vars(owner).pop(pname, None)

    def _weights_per_site(self, weights):
        """``weights``: one (K,) vector for every site, or ``{site: (K,)}`` naming each site exactly once."""
        if not isinstance(weights, dict):
            return dict.fromkeys(self.sites, weights)
        missing, unknown = self.sites.keys() - weights.keys(), weights.keys() - self.sites.keys()
        if missing or unknown:
            raise KeyError(f'mixing weights must name every site once: missing {sorted(missing)[:3]}, '
                           f'unknown {sorted(unknown)[:3]}')
        return weights

    def set_forced_weights(self, weights):
        """Mix with given weights instead of the routers (every image alike); None gives control back."""
        per_site = dict.fromkeys(self.sites) if weights is None else self._weights_per_site(weights)
        for name, site in self.sites.items():
            site.forced = None if per_site[name] is None else site.as_weights(per_site[name])

    @contextmanager
    def forced_weights(self, weights):
        self.set_forced_weights(weights)
        try:
            yield self
        finally:
            self.set_forced_weights(None)

    @contextmanager
    def calibration(self):
        """Record the routing weights of every site over the forwards run inside: ``with net.calibration() as c:
        ...`` then ``c.mean_weights()`` gives ``{site: mean alpha (K,)}`` over the images seen."""
        recorders = Calibration((name, AlphaMean()) for name in self.sites)
        for name, site in self.sites.items():
            site.recorder = recorders[name]
        try:
            yield recorders
        finally:
            for site in self.sites.values():
                site.recorder = None

    def collapsed_state_dict(self, weights):
        """The state dict of the plain backbone with theta = sum_k w_k theta_k at every site (``weights`` as for
        ``set_forced_weights``), in the backbone's own key order: a standard checkpoint of the original arch."""
        per_site = self._weights_per_site(weights)
        state = self.backbone.state_dict()
        for name, layer in self.layers.items():
            state.update({f'{name}.{t}': v for t, v in layer.mixed(layer.as_weights(per_site[name])).items()})
        for key, param in self.params.items():
            state[key] = param.mixed(param.as_weights(per_site[key]))['experts']
        return OrderedDict((key, state[key].detach().cpu().clone()) for key in self.backbone_keys)
