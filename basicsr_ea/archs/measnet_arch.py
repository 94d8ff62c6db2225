"""MEASNet: X. Yu, S. Zhou, H. Li, L. Zhu, "Multi-Expert Adaptive Selection: Task-Balancing for All-in-One Image
Restoration", IEEE TCSVT 35(5), 2025 (https://arxiv.org/abs/2407.19139).

A Restormer U-Net with a task prompt guiding pixel-level sparse experts (STP-G-MESE) at the encoder levels,
frequency-decomposed expert ensembles (FD-MEE) at the decoder levels and, optionally, AdaIR's AFLB.

Parameters of the default configuration: 31,680,752, the authors' count (``tests/test_measnet_parity.py``).
"""
import torch
import torch.nn as nn

from basicsr.utils.registry import ARCH_REGISTRY
from basicsr_ea.archs.aflb import AFLB
from basicsr_ea.archs.frequency_layers import FDMEE
from basicsr_ea.archs.moe_layers import STPGMESE, TaskPrompt
from basicsr_ea.archs.arch_util import pad_to_multiple
from basicsr_ea.archs.restormer_blocks import conv1x1, conv3x3, downsample, transformer_blocks, upsample


class EncoderLevel(nn.Module):
    """``entry`` (patch embedding or downsampling) -> optional STP-G-MESE -> Restormer blocks.

    With ``stp_output=False`` the STP-G-MESE only adds its load-balancing loss (its router runs in training, its
    experts never; the authors' levels 2 and 3 compute their output and discard it). ``forward(x, prompt)`` returns
    (feature, aux_loss or None).
    """

    def __init__(self, entry, blocks, stp=None, stp_output=True):
        super().__init__()
        self.entry, self.stp, self.blocks, self.stp_output = entry, stp, blocks, stp_output

    def forward(self, x, prompt):
        x = self.entry(x)
        aux_loss = None
        if self.stp is not None and self.stp_output:
            x, aux_loss = self.stp(x, prompt)
        elif self.stp is not None and self.training:
            aux_loss = self.stp.routing_loss(x, prompt)
        return self.blocks(x), aux_loss


class DecoderLevel(nn.Module):
    """Optional AFLB on the coarser feature -> upsample -> concat skip -> channel reduction -> optional FD-MEE ->
    Restormer blocks. ``forward(x, skip, img)`` with ``img`` the (padded) input image for the AFLB."""

    def __init__(self, in_dim, out_dim, blocks, aflb=None, fdmee=None, bias=False):
        super().__init__()
        self.aflb, self.up = aflb, upsample(in_dim)
        self.reduce = conv1x1(in_dim, out_dim, bias) if in_dim != out_dim else nn.Identity()
        self.fdmee = fdmee if fdmee is not None else nn.Identity()
        self.blocks = blocks

    def forward(self, x, skip, img):
        if self.aflb is not None:
            x = self.aflb(img, x)
        x = self.reduce(torch.cat([self.up(x), skip], dim=1))
        return self.blocks(self.fdmee(x))


@ARCH_REGISTRY.register()
class MEASNet(nn.Module):
    """Multi-expert adaptive selection network for all-in-one restoration.

    The default options are the authors' network (``IRmodel`` of zhoushen1/MEASNet): their checkpoints load
    (``scripts/convert_measnet.py``) and give their outputs. Their failures are fixed without changing any output
    their code produces: any batch size in eval and training, any image size, no NaN at large input scales.

    Args:
        inp_channels, out_channels: image channels.
        dim: width of level 1 (levels are dim, 2 dim, 4 dim, 8 dim).
        num_blocks: Restormer blocks per level, encoder levels 1-3 and the latent level 4.
        num_refinement_blocks: blocks after decoder level 1 (width 2 dim, as in Restormer).
        heads, ffn_expansion_factor, bias: Restormer's options, heads per level.
        num_experts, top_k: STP-G-MESE experts and experts per pixel.
        stp_levels: encoder levels (1-3) whose STP-G-MESE output feeds the encoder.
        stp_aux_levels: encoder levels whose STP-G-MESE only adds its load-balancing loss: the authors' network
            computes levels 2 and 3 and discards their output (default ``[1]`` and ``[2, 3]``). ``stp_levels:
            [1, 2, 3], stp_aux_levels: []`` routes all three; both empty removes STP-G-MESE and the prompt.
        combine: STP-G-MESE's mixing, 'logsumexp' (the authors') or 'sum' (the plain weighted sum).
        prompt_dim, num_prompts: task prompt length and dictionary size.
        use_fdmee: FD-MEE at the start of each decoder level (after the skip concat and reduction).
        use_aflb: AdaIR's AFLB before each upsampling (after the latent and decoder levels 3 and 2, as in AdaIR).
        gate_noise: STP-G-MESE's noisy gating in training (the paper's); ``False`` gates on the clean logits, so
            training draws no random numbers in the routers (e.g. to compare runs whose random streams differ).
        zero_gate_init: STP-G-MESE gate weights start at zero (every expert equally likely) instead of the
            authors' standard normal.
        aflb_low_band: 'authors' (empty below 256 px) or 'nonempty' (at least one bin), see ``low_band_half_size``.
        lowpass_batch_norm: the authors' BatchNorm in FD-MEE's dynamic low-pass; ``False`` leaves it out, so no
            image of a training batch affects another's split.

    ``forward(x)`` takes (B, inp_channels, H, W) of any size (reflect-padded to a multiple of 8 inside, cropped
    back) and returns only the restored image, so BasicSR's models train it as they are. The load-balancing loss
    of that forward, summed over the STP-G-MESE blocks, is left in ``aux_loss`` (0-dim; carries grad in training,
    0 in eval or without STP-G-MESE).
    """

    def __init__(self, inp_channels=3, out_channels=3, dim=48, num_blocks=(4, 4, 6, 8), num_refinement_blocks=4,
                 heads=(1, 2, 4, 8), ffn_expansion_factor=2.66, bias=False, num_experts=6, top_k=2,
                 stp_levels=(1, ), stp_aux_levels=(2, 3), combine='logsumexp', prompt_dim=256, num_prompts=32,
                 use_aflb=True, use_fdmee=True, gate_noise=True, zero_gate_init=False, aflb_low_band='authors',
                 lowpass_batch_norm=True):
        super().__init__()
        stp_levels, stp_aux_levels = set(stp_levels), set(stp_aux_levels)
        if not stp_levels | stp_aux_levels <= {1, 2, 3} or stp_levels & stp_aux_levels:
            raise ValueError(f'stp_levels {sorted(stp_levels)} and stp_aux_levels {sorted(stp_aux_levels)} must be '
                             'disjoint sets of the encoder levels 1, 2, 3')
        widths = [dim, 2 * dim, 4 * dim, 8 * dim]
        self.residual = inp_channels == out_channels
        self.prompt = TaskPrompt(inp_channels, prompt_dim, num_prompts) if stp_levels | stp_aux_levels else None

        def blocks(level, width=None, count=None):
            return transformer_blocks(num_blocks[level] if count is None else count, width or widths[level],
                                      heads[level], ffn_expansion_factor, bias)

        self.encoder = nn.ModuleList()
        for level, entry in enumerate([conv3x3(inp_channels, dim, bias), downsample(widths[0]), downsample(widths[1])]):
            stp = (STPGMESE(widths[level], prompt_dim, num_experts, top_k, ffn_expansion_factor, combine, gate_noise,
                            zero_gate_init) if level + 1 in stp_levels | stp_aux_levels else None)
            self.encoder.append(EncoderLevel(entry, blocks(level), stp, stp_output=level + 1 in stp_levels))
        self.latent = nn.Sequential(downsample(widths[2]), blocks(3))
        self.decoder = nn.ModuleList()
        for level in (2, 1, 0):  # decoder levels 3, 2, 1
            width = max(widths[level], widths[1])  # level 1 keeps the concatenated width 2 dim, as in Restormer
            aflb = AFLB(widths[level + 1], heads[2], bias, low_band=aflb_low_band) if use_aflb else None
            fdmee = FDMEE(width, batch_norm=lowpass_batch_norm) if use_fdmee else None
            self.decoder.append(DecoderLevel(widths[level + 1], width, blocks(level, width), aflb, fdmee, bias))
        self.refinement = blocks(0, width=widths[1], count=num_refinement_blocks)
        self.output = conv3x3(widths[1], out_channels, bias)
        self.aux_loss = torch.zeros(())

    def forward(self, x):
        h, w = x.shape[-2:]
        img = pad_to_multiple(x, 8)
        prompt = self.prompt(img) if self.prompt is not None else None
        feat, skips, aux_losses = img, [], []
        for level in self.encoder:
            feat, aux_loss = level(feat, prompt)
            skips.append(feat)
            if aux_loss is not None:
                aux_losses.append(aux_loss)
        feat = self.latent(feat)
        for level, skip in zip(self.decoder, reversed(skips)):
            feat = level(feat, skip, img)
        out = self.output(self.refinement(feat))
        if self.residual:
            out = out + img
        self.aux_loss = sum(aux_losses, img.new_zeros(()))
        if self.training:
            # DDP (find_unused_parameters) looks for the parameters used from the output: the routers of the
            # aux-only levels reach only aux_loss, and without this would count as unused, then fail when their
            # gradient arrives. The output's values are unchanged.
            out = out + 0 * self.aux_loss
        return out[..., :h, :w]
