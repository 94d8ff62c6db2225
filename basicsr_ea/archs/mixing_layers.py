"""Per-image mixing of K frozen expert layers, the building block of population fusion (Sun et al., TIP 2024,
https://arxiv.org/abs/2312.15408, Stage 2).

Each layer stacks its experts in one tensor per weight, ``(K, ...)`` (timm's ``CondConv2d`` layout), asks a small
router for softmax weights alpha ``(B, K)`` from its own input, mixes with one matmul and runs one grouped operation
for the whole batch. Token layers (Linear, LayerNorm) see ``(N, ..., C)`` inputs whose leading dim may fold several
rows per image (SwinIR's windows): rows of one image must be contiguous (image-major), which window partitioning
keeps; the wrapper tells each layer how many images the current forward holds (``num_images``). A weight forced by
the caller replaces the router and the layer runs as a plain one.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def mix(alpha, experts):
    """(B, K) weights times (K, ...) stacked expert tensors -> (B, ...), in one matmul."""
    return (alpha @ experts.flatten(1)).view(alpha.shape[0], *experts.shape[1:])


def image_rows(x, num_images):
    """View ``x`` (N, ...) as (num_images, N // num_images, ...): the rows each image folded into the batch."""
    if x.shape[0] % num_images:
        raise ValueError(f'a mixing layer got {x.shape[0]} rows for {num_images} images: the leading dim of every '
                         'mixed layer\'s input must fold whole images, image-major')
    return x.reshape(num_images, -1, *x.shape[1:])


def repeat_rows(tensor, rows):
    """Repeat per-image tensors (B, ...) for an input whose batch folds ``rows`` = k * B rows, image-major."""
    return tensor if tensor is None or tensor.shape[0] == rows else tensor.repeat_interleave(rows // tensor.shape[0], 0)


class AlphaMean:
    """Running mean of one site's routing weights over the images it saw (for collapse)."""

    def __init__(self):
        self.total, self.count = 0.0, 0

    def update(self, alpha):
        self.total = self.total + alpha.detach().double().sum(0)
        self.count += alpha.shape[0]

    def mean(self):
        if self.count == 0:
            raise RuntimeError('no image passed through this layer during calibration')
        return (self.total / self.count).float()


def router_head(in_features, hidden, num_experts):
    """Linear -> LeakyReLU 0.2 -> Linear to K logits. The last layer starts at zero: every layer starts at the
    population average, whatever the router's random init."""
    head = nn.Sequential(nn.Linear(in_features, hidden), nn.LeakyReLU(0.2, inplace=True),
                         nn.Linear(hidden, num_experts))
    nn.init.zeros_(head[-1].weight)
    nn.init.zeros_(head[-1].bias)
    return head


class ConvRouter(nn.Module):
    """Expert logits of a conv layer from its (N, C, H, W) input: 3x3 convs with LeakyReLU 0.2 (the paper's 64, 64,
    100 channels), global average pool (over all rows of an image), ``router_head`` (100 -> 15 -> K)."""

    def __init__(self, in_channels, num_experts, channels=(64, 64, 100), hidden=15):
        super().__init__()
        layers = []
        for out_channels in channels:
            layers += [nn.Conv2d(in_channels, out_channels, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True)]
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.head = router_head(in_channels, hidden, num_experts)

    def forward(self, x, num_images):
        return self.head(image_rows(self.features(x).mean(dim=(2, 3)), num_images).mean(1))


class TokenRouter(nn.Module):
    """Expert logits of a token layer from its (N, ..., C) input: mean over every token of an image, then
    Linear to ``channels[-1]`` with LeakyReLU 0.2 and ``router_head``."""

    def __init__(self, in_features, num_experts, channels=(64, 64, 100), hidden=15):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(in_features, channels[-1]), nn.LeakyReLU(0.2, inplace=True))
        self.head = router_head(channels[-1], hidden, num_experts)

    def forward(self, x, num_images):
        tokens = image_rows(x, num_images).reshape(num_images, -1, x.shape[-1])
        return self.head(self.embed(tokens.mean(1)))


class MixingSite(nn.Module):
    """Where expert tensors are mixed: holds them stacked (K, ...) as non-persistent buffers (they come from the
    expert checkpoints, not from this network's own), a forced weight (K,) or None, and an optional recorder."""

    def __init__(self, experts):
        super().__init__()
        self.expert_names = [name for name, tensor in experts.items() if tensor is not None]
        for name, tensor in experts.items():
            self.register_buffer(name, tensor, persistent=False)
        self.num_experts = experts[self.expert_names[0]].shape[0]
        self.forced = None
        self.recorder = None

    def as_weights(self, alpha):
        """``alpha`` as a (K,) tensor beside the experts, checked to be a point of the simplex: mixing off it would
        extrapolate beyond the population."""
        reference = getattr(self, self.expert_names[0])
        alpha = torch.as_tensor(alpha, dtype=reference.dtype, device=reference.device)
        if alpha.shape != (self.num_experts, ) or (alpha < 0).any() or abs(float(alpha.sum()) - 1) > 1e-4:
            raise ValueError(f'mixing weights must be {self.num_experts} non-negative values summing to 1, got {alpha}')
        return alpha

    def record(self, alpha):
        if self.recorder is not None:
            self.recorder.update(alpha)

    def mixed(self, alpha):
        """Every expert tensor mixed with one weight vector (K,): ``{name: tensor}`` in the original layer's shape."""
        return {name: mix(alpha[None], getattr(self, name))[0] for name in self.expert_names}


class MixingLayer(MixingSite):
    """Base of the per-image mixing layers: subclasses give ``plain`` (one weight set) and ``per_image`` (a (B, ...)
    stack of them); the forward either runs the router or the forced weights."""

    router_type = ConvRouter

    def __init__(self, experts, in_features, router_channels=(64, 64, 100), router_hidden=15):
        super().__init__(experts)
        self.num_images = None
        self.router = self.router_type(in_features, self.num_experts, router_channels, router_hidden)

    def forward(self, x):
        if self.forced is not None:
            return self.plain(x, **self.mixed(self.forced))
        if self.num_images is None:
            raise RuntimeError('mixing layers run inside PopulationFusion.forward, which tells them the image count')
        alpha = self.router(x, self.num_images).softmax(dim=1)
        self.record(alpha)
        return self.per_image(x, **{name: mix(alpha, getattr(self, name)) for name in self.expert_names})


class MixedConv2d(MixingLayer):
    """``nn.Conv2d`` with K experts: weight (K, out, in / groups, kh, kw), bias (K, out) or None."""

    def __init__(self, conv, experts, **router_opt):
        super().__init__(experts, conv.in_channels, **router_opt)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups
        self.padding_mode, self.reversed_padding = conv.padding_mode, conv._reversed_padding_repeated_twice

    def _conv(self, x, weight, bias, groups):
        padding = self.padding
        if self.padding_mode != 'zeros':
            x, padding = F.pad(x, self.reversed_padding, mode=self.padding_mode), 0
        return F.conv2d(x, weight, bias, self.stride, padding, self.dilation, groups)

    def plain(self, x, weight, bias=None):
        return self._conv(x, weight, bias, self.groups)

    def per_image(self, x, weight, bias=None):
        n = x.shape[0]
        weight, bias = repeat_rows(weight, n), repeat_rows(bias, n)
        out = self._conv(x.reshape(1, -1, *x.shape[2:]), weight.flatten(0, 1),
                         None if bias is None else bias.flatten(), self.groups * n)
        return out.view(n, -1, *out.shape[2:])

    def extra_repr(self):
        return f'experts={self.num_experts}, weight={tuple(self.weight.shape[1:])}, stride={self.stride}'


class MixedLinear(MixingLayer):
    """``nn.Linear`` with K experts on (N, ..., in) inputs: weight (K, out, in), bias (K, out) or None."""

    router_type = TokenRouter

    def __init__(self, linear, experts, **router_opt):
        super().__init__(experts, linear.in_features, **router_opt)

    def plain(self, x, weight, bias=None):
        return F.linear(x, weight, bias)

    def per_image(self, x, weight, bias=None):
        rows = image_rows(x, weight.shape[0]).reshape(weight.shape[0], -1, x.shape[-1])
        out = rows @ weight.transpose(1, 2)
        if bias is not None:
            out = out + bias[:, None]
        return out.reshape(*x.shape[:-1], weight.shape[1])

    def extra_repr(self):
        return f'experts={self.num_experts}, weight={tuple(self.weight.shape[1:])}'


class MixedLayerNorm(MixingLayer):
    """``nn.LayerNorm`` with K experts: weight and bias (K, *normalized_shape), bias may be None."""

    router_type = TokenRouter

    def __init__(self, norm, experts, **router_opt):
        super().__init__(experts, norm.normalized_shape[-1], **router_opt)
        self.normalized_shape, self.eps = norm.normalized_shape, norm.eps

    def plain(self, x, weight=None, bias=None):
        return F.layer_norm(x, self.normalized_shape, weight, bias, self.eps)

    def per_image(self, x, weight=None, bias=None):
        num_images = (weight if weight is not None else bias).shape[0]
        out = F.layer_norm(x, self.normalized_shape, eps=self.eps)
        out = image_rows(out, num_images).reshape(num_images, -1, *self.normalized_shape)
        affine_shape = (num_images, 1, *self.normalized_shape)
        if weight is not None:
            out = out * weight.view(affine_shape)
        if bias is not None:
            out = out + bias.view(affine_shape)
        return out.reshape(x.shape)

    def extra_repr(self):
        return f'experts={self.num_experts}, normalized_shape={self.normalized_shape}'


class MixedParameter(MixingSite):
    """A raw ``nn.Parameter`` of a custom block (SwinIR's ``relative_position_bias_table``, ``absolute_pos_embed``)
    that the block uses in ways no layer can mix per image (indexing a table, adding to every window): mixed with
    one learned, input-independent softmax weight (K,), uniform at the start. ``forward()`` returns the tensor."""

    def __init__(self, experts):
        super().__init__({'experts': experts})
        self.logits = nn.Parameter(torch.zeros(self.num_experts))

    def forward(self):
        if self.forced is not None:
            return self.mixed(self.forced)['experts']
        alpha = self.logits.softmax(dim=0)
        self.record(alpha[None])
        return self.mixed(alpha)['experts']

    def extra_repr(self):
        return f'experts={self.num_experts}, shape={tuple(self.experts.shape[1:])}'


MIXING_LAYERS = {nn.Conv2d: MixedConv2d, nn.Linear: MixedLinear, nn.LayerNorm: MixedLayerNorm}
