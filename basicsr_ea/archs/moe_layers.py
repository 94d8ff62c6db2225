"""Sparse mixture of experts for MEASNet (arXiv 2407.19139): the unsupervised task prompt and STP-G-MESE.

The routing kernels follow Shazeer et al., "Outrageously large neural networks" (arXiv 1701.06538): noisy top-k
gating and the cv^2 load-balancing loss with a smooth load. ``sparse_dispatch`` sends each routed unit (a pixel
token here, a whole image in FD-MEE) only to the experts it was given; ``dense_dispatch`` is its reference.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from basicsr_ea.archs.arch_util import pad_reflect

COMBINE_MODES = ('sum', 'logsumexp')


def top_k_gating(logits, k):
    """Keep the k largest logits per row and softmax over them: returns (indices, gates), both (N, k)."""
    top_logits, indices = logits.topk(k, dim=1)
    return indices, top_logits.softmax(dim=1)


def softmax_top_k(logits, k):
    """Softmax over all logits, then keep the k most probable: returns (indices, weights), both (N, k); the
    weights are the softmax probabilities (not renormalised), as in FD-MEE's global router."""
    weights, indices = logits.softmax(dim=1).topk(k, dim=1)
    return indices, weights


def dense_gates(indices, gates, num_experts):
    """The (N, num_experts) gate matrix with ``gates`` at ``indices`` and zeros elsewhere."""
    return gates.new_zeros(gates.shape[0], num_experts).scatter(1, indices, gates)


def prob_in_top_k(clean_logits, noisy_logits, noise_std, k):
    """Smooth load: probability that each expert stays in the top k when only its own noise is drawn again.

    For expert i the threshold it has to beat is the k-th largest of the *other* noisy logits: the (k+1)-th
    largest overall when i is in the top k now, the k-th when it is not. All arguments are (N, E), E > k.
    """
    top = noisy_logits.topk(k + 1, dim=1).values
    threshold_if_in, threshold_if_out = top[:, k:k + 1], top[:, k - 1:k]
    prob_if_in = torch.special.ndtr((clean_logits - threshold_if_in) / noise_std)
    prob_if_out = torch.special.ndtr((clean_logits - threshold_if_out) / noise_std)
    return torch.where(noisy_logits > threshold_if_in, prob_if_in, prob_if_out)


def cv_squared(x, eps=1e-10):
    """Squared coefficient of variation: 0 when all entries are equal, so it rewards an even spread."""
    if x.numel() == 1:
        return x.new_zeros(())
    x = x.float()
    return x.var() / (x.mean() ** 2 + eps)


def load_balancing_loss(importance, load):
    """cv^2(importance) + cv^2(load), both (E,): the summed gates and the (smooth) token count of each expert."""
    return cv_squared(importance) + cv_squared(load)


def combine_expert_outputs(outputs, gates, combine='sum'):
    """Mix (N, k, ...) expert outputs with (N, k) gates.

    ``sum`` is the plain weighted sum; ``logsumexp`` is log(sum g * exp(out)) as in the authors' code, computed
    stably: where their ``exp`` overflows (inf, then NaN) or underflows (they substitute log(eps) = -36) this is the
    exact value. Zero gates drop out in both, so a dense (N, E, ...) input gives the same result. A zero gate's log
    is taken of 1 and masked to -inf afterwards: ``gates.log()`` would give it the gradient 0 / 0 = NaN (a top-k
    softmax gate underflows to exactly 0 when the logits are far apart).
    """
    gates = gates.reshape(gates.shape + (1, ) * (outputs.dim() - 2))
    if combine == 'sum':
        return (gates * outputs).sum(dim=1)
    if combine == 'logsumexp':
        kept = gates > 0
        log_gates = torch.where(kept, torch.where(kept, gates, 1).log(), -torch.inf)
        return torch.logsumexp(outputs + log_gates, dim=1)
    raise ValueError(f'combine must be one of {COMBINE_MODES}, got {combine!r}')


def sparse_dispatch(x, indices, gates, expert, num_experts, combine='sum'):
    """Run each expert only on the units routed to it and mix the results.

    Args:
        x: (N, ...) the routed units.
        indices, gates: (N, k) the experts of each unit and their weights.
        expert: callable ``expert(e, units) -> outputs`` for expert index e.
    The unit-expert pairs are sorted by expert, each expert's units gathered, and the outputs scattered back to
    (N, k, ...) before ``combine_expert_outputs``.
    """
    n, k = indices.shape
    order = indices.reshape(-1).argsort(stable=True)
    counts = torch.bincount(indices.reshape(-1), minlength=num_experts).tolist()
    outputs = torch.cat([expert(e, x[units]) for e, units in enumerate((order // k).split(counts)) if counts[e]])
    unsorted = torch.empty_like(outputs).index_copy(0, order, outputs)
    return combine_expert_outputs(unsorted.reshape((n, k) + outputs.shape[1:]), gates, combine)


def dense_dispatch(x, indices, gates, expert, num_experts, combine='sum'):
    """Reference for ``sparse_dispatch``: every expert runs on every unit, unselected ones get a zero gate."""
    outputs = torch.stack([expert(e, x) for e in range(num_experts)], dim=1)
    return combine_expert_outputs(outputs, dense_gates(indices, gates, num_experts), combine)


class NoisyTopKRouter(nn.Module):
    """Noisy top-k gating: logits = W_g x (+ N(0, 1) * (softplus(W_n x) + noise_eps) in training only).

    W_g starts from a standard normal and W_n at zero, as in the authors' code; ``zero_init`` starts W_g at zero
    too, as in the MoE code MEASNet builds on, so that every expert starts equally likely. ``forward`` returns
    (indices, gates, aux_loss) with aux_loss the load-balancing loss in training and 0 in eval. ``forward(x,
    context)`` routes on cat([x, context of each row's group]) without building it (x: (B * n, F1) in groups of n
    rows, context: (B, F2), in_features = F1 + F2): the context's share of each logit is computed once per group.
    ``noise=False`` gates on the clean logits in training too (deterministic training, e.g. to compare runs whose
    random streams differ); the load is then the hard count of selections and W_n stays unused (it is kept, so
    checkpoints load either way).
    """

    def __init__(self, in_features, num_experts, top_k, noise_eps=0.01, noise=True, zero_init=False):
        super().__init__()
        if not 0 < top_k <= num_experts:
            raise ValueError(f'top_k must be in [1, num_experts={num_experts}], got {top_k}')
        self.num_experts, self.top_k, self.noise_eps, self.noise = num_experts, top_k, noise_eps, noise
        self.w_gate = nn.Linear(in_features, num_experts, bias=False)
        self.w_noise = nn.Linear(in_features, num_experts, bias=False)
        if zero_init:
            nn.init.zeros_(self.w_gate.weight)
        else:
            nn.init.normal_(self.w_gate.weight)
        nn.init.zeros_(self.w_noise.weight)

    @staticmethod
    def linear(layer, x, context):
        if context is None:
            return layer(x)
        rows = F.linear(x, layer.weight[:, :x.shape[1]]).unflatten(0, (context.shape[0], -1))
        return (rows + F.linear(context, layer.weight[:, x.shape[1]:])[:, None]).flatten(0, 1)

    def forward(self, x, context=None):
        clean_logits = self.linear(self.w_gate, x, context)
        if not self.training:
            indices, gates = top_k_gating(clean_logits, self.top_k)
            return indices, gates, clean_logits.new_zeros(())
        if self.noise:
            noise_std = F.softplus(self.linear(self.w_noise, x, context)) + self.noise_eps
            noisy_logits = clean_logits + torch.randn_like(clean_logits) * noise_std
        else:
            noisy_logits = clean_logits
        indices, gates = top_k_gating(noisy_logits, self.top_k)
        importance = dense_gates(indices, gates, self.num_experts).sum(dim=0)
        if self.noise and self.top_k < self.num_experts:
            load = prob_in_top_k(clean_logits, noisy_logits, noise_std, self.top_k).sum(dim=0)
        else:
            load = torch.bincount(indices.reshape(-1), minlength=self.num_experts).to(gates)
        return indices, gates, load_balancing_loss(importance, load)


class GlobalRouter(nn.Module):
    """One routing decision per image: global average pool -> linear (no bias) -> ``softmax_top_k``.

    Input (B, C, H, W); returns (indices, weights), both (B, top_k). Deterministic, so images never interact.
    """

    def __init__(self, dim, num_experts, top_k):
        super().__init__()
        self.top_k = top_k
        self.fc = nn.Linear(dim, num_experts, bias=False)

    def forward(self, x):
        return softmax_top_k(self.fc(x.mean(dim=(2, 3))), self.top_k)


class ExpertMLP(nn.Module):
    """A token expert: Linear(C, hidden) -> GELU -> Linear(hidden, C)."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class STPGMESE(nn.Module):
    """Task-prompt-guided pixel-level multi-expert selection and ensemble: a sparse MoE over the pixel tokens.

    The router sees each token concatenated with the image's prompt projected to C; the experts see the token
    alone. Output: token + combined expert outputs. Input (B, C, H, W) and prompt (B, prompt_dim); ``forward``
    returns (output, aux_loss); ``routing_loss`` returns the aux_loss alone without running the experts (the
    authors' levels 2 and 3, whose output their network discards).

    Args:
        dim: channels C of the feature map.
        prompt_dim: length of the task prompt.
        num_experts, top_k: E experts, k of them per token.
        hidden_factor: expert MLP width as a multiple of C.
        combine: 'logsumexp' (the authors') or 'sum' (see ``combine_expert_outputs``).
        gate_noise: the router's training noise (see ``NoisyTopKRouter``'s ``noise``).
        zero_gate_init: start the gate weights at zero (see ``NoisyTopKRouter``'s ``zero_init``).
    """

    def __init__(self, dim, prompt_dim, num_experts=6, top_k=2, hidden_factor=2.66, combine='logsumexp',
                 gate_noise=True, zero_gate_init=False):
        super().__init__()
        if combine not in COMBINE_MODES:
            raise ValueError(f'combine must be one of {COMBINE_MODES}, got {combine!r}')
        self.combine = combine
        self.prompt_proj = nn.Linear(prompt_dim, dim)
        self.router = NoisyTopKRouter(2 * dim, num_experts, top_k, noise=gate_noise, zero_init=zero_gate_init)
        self.experts = nn.ModuleList([ExpertMLP(dim, int(dim * hidden_factor)) for _ in range(num_experts)])

    def run_expert(self, e, tokens):
        return self.experts[e](tokens)

    def route(self, x, prompt):
        """(tokens (B*H*W, C), the router's (indices, gates, aux_loss)) of x (B, C, H, W)."""
        tokens = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
        return tokens, self.router(tokens, self.prompt_proj(prompt))

    def routing_loss(self, x, prompt):
        return self.route(x, prompt)[1][2]

    def forward(self, x, prompt):
        b, c, h, w = x.shape
        tokens, (indices, gates, aux_loss) = self.route(x, prompt)
        out = tokens + sparse_dispatch(tokens, indices, gates, self.run_expert, len(self.experts), self.combine)
        return out.reshape(b, h, w, c).permute(0, 3, 1, 2), aux_loss


class TaskPrompt(nn.Module):
    """Unsupervised degradation-aware prompt: one prompt_dim vector per image, a soft pick from a learned dictionary.

    Strided conv encoder of the degraded image (two 3x3 stride-3 convs without padding, as the authors') -> global
    average pool -> linear -> softmax over ``num_prompts`` atoms -> weighted sum of the atoms -> GELU. Input
    (B, C, H, W), output (B, prompt_dim). Sides below 9 px, where the two unpadded convs leave nothing (the
    authors' code fails there), are reflect-padded to 9 first.
    """

    min_size = 9

    def __init__(self, inp_channels=3, prompt_dim=256, num_prompts=32, num_feat=64):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(inp_channels, num_feat, 3, stride=3), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(num_feat, num_feat, 3, stride=3), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(num_feat, num_feat, 1), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(num_feat, num_feat, 1), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(num_feat, num_prompts, 1))
        self.to_weights = nn.Linear(num_prompts, num_prompts)
        self.atoms = nn.Parameter(torch.randn(num_prompts, prompt_dim))

    def forward(self, x):
        h, w = x.shape[-2:]
        if min(h, w) < self.min_size:
            x = pad_reflect(x, (0, max(0, self.min_size - w), 0, max(0, self.min_size - h)))
        weights = self.to_weights(self.encoder(x).mean(dim=(2, 3))).softmax(dim=1)
        return F.gelu(weights @ self.atoms)
