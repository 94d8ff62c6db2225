"""Convert a checkpoint of the authors' MEASNet (zhoushen1/MEASNet) into a BasicSR checkpoint of ours.

    python scripts/convert_measnet.py authors.ckpt converted.pth [-opt options/test_MEASNet_3task_authors.yml]

Reads the Lightning checkpoint their ``train.py`` writes (the ``IRmodel`` weights under ``state_dict``, prefixed
``net.`` by their ``IRModel``), or a bare ``IRmodel`` state dict; maps every key onto the ``MEASNet`` that the
options' ``network_g`` builds (without ``-opt``: the default MEASNet, which is the authors' network); writes
``{'params': ...}`` atomically, which BasicSR's models, ``basicsr_ea/test.py`` and ``scripts/evaluate.py`` load.

Safe loading: ``torch.load(..., weights_only=True)`` with no type allowed beyond torch's own (tensors, dicts, lists,
strings, numbers): a checkpoint written by their ``train.py`` (measured with Lightning 2.6.6: loop counters,
ModelCheckpoint state, AdamW and scheduler states) holds nothing else. A file that needs any other type is refused.

A key that no rule maps, a key of ours that nothing fills and a shape that does not fit are refused, each named.
The authors' two constant buffers per STP-G-MESE (``model.mean`` = 0 and ``model.std`` = 1, the standard normal
of their load estimate) are checked and dropped; their gate matrices ``w_g`` / ``w_n`` (in, experts) are
transposed into our linear weights (experts, in).
"""
import argparse
import os
import re
import sys

import torch
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from basicsr_ea.archs.measnet_arch import MEASNet  # noqa: E402
from basicsr_ea.checkpoints import save_checkpoint  # noqa: E402

LIGHTNING_PREFIX = 'net.'
PARAM = r'(weight|bias)'

# Module prefixes: authors' (regex) -> ours (template with the regex's groups) and the kind of module there.
PREFIXES = [
    (r'patch_embed\.proj\.', 'encoder.0.entry.', 'conv'),
    (r'down1_2\.body\.0\.', 'encoder.1.entry.0.', 'conv'),
    (r'down2_3\.body\.0\.', 'encoder.2.entry.0.', 'conv'),
    (r'down3_4\.body\.0\.', 'latent.0.0.', 'conv'),
    (r'encoder_level([123])\.(\d+)\.', lambda m: f'encoder.{int(m[1]) - 1}.blocks.{m[2]}.', 'block'),
    (r'latent\.(\d+)\.', r'latent.1.\1.', 'block'),
    (r'decoder_level([123])\.(\d+)\.', lambda m: f'decoder.{3 - int(m[1])}.blocks.{m[2]}.', 'block'),
    (r'refinement\.(\d+)\.', r'refinement.\1.', 'block'),
    (r'output\.', 'output.', 'conv'),
    (r'up4_3\.body\.0\.', 'decoder.0.up.0.', 'conv'),
    (r'up3_2\.body\.0\.', 'decoder.1.up.0.', 'conv'),
    (r'up2_1\.body\.0\.', 'decoder.2.up.0.', 'conv'),
    (r'reduce_chan_level3\.', 'decoder.0.reduce.', 'conv'),
    (r'reduce_chan_level2\.', 'decoder.1.reduce.', 'conv'),
    (r'block([123])\.', lambda m: f'decoder.{int(m[1]) - 1}.aflb.', 'aflb'),
    (r'fe_mee([123])\.', lambda m: f'decoder.{int(m[1]) - 1}.fdmee.', 'fdmee'),
    (r'stpg_g_mese([123])\.', lambda m: f'encoder.{int(m[1]) - 1}.stp.', 'stp'),
    (r'task_prompt\.', 'prompt.', 'prompt'),
]

CROSS_ATTENTION = [(r'temperature', 'temperature'), (rf'q\.{PARAM}', r'q.0.\1'), (rf'q_dwconv\.{PARAM}', r'q.1.\1'),
                   (rf'kv\.{PARAM}', r'kv.0.\1'), (rf'kv_dwconv\.{PARAM}', r'kv.1.\1'),
                   (rf'project_out\.{PARAM}', r'project_out.\1')]


def nested(prefix_from, prefix_to, rules):
    return [(prefix_from + pattern, prefix_to + repl) for pattern, repl in rules]


# Within each kind of module: authors' rest of the key (full match) -> ours.
RULES = {
    'conv': [(PARAM, r'\1')],
    'block': [
        (rf'norm([12])\.body\.{PARAM}', r'norm\1.\2'),
        (r'attn\.temperature', 'attn.temperature'),
        (rf'attn\.qkv\.{PARAM}', r'attn.qkv.0.\1'),
        (rf'attn\.qkv_dwconv\.{PARAM}', r'attn.qkv.1.\1'),
        (rf'attn\.project_out\.{PARAM}', r'attn.project_out.\1'),
        (rf'ffn\.project_in\.{PARAM}', r'ffn.project_in.0.\1'),
        (rf'ffn\.dwconv\.{PARAM}', r'ffn.project_in.1.\1'),
        (rf'ffn\.project_out\.{PARAM}', r'ffn.project_out.\1'),
    ],
    'aflb': [
        (r'param_alpha', 'alpha'),
        (r'param_beta', 'beta'),
        (r'aux_conv\.weight', 'embed.weight'),
        (r'initial_conv\.weight', 'unused.initial_conv_weight'),
        (rf'score_generator\.{PARAM}', r'unused.score_generator_\1'),
        # the authors' names are swapped: their cross_layer_low attends from the high band, and the other way round
        *nested(r'cross_layer_low\.', 'cross_high.', CROSS_ATTENTION),
        *nested(r'cross_layer_high\.', 'cross_low.', CROSS_ATTENTION),
        *nested(r'cross_layer_agg\.', 'cross_out.', CROSS_ATTENTION),
        (r'freq_refinement\.modulate1\.spatial\.weight', 'spatial_gate.conv.weight'),
        (r'freq_refinement\.modulate2\.squential\.([02])\.weight', r'channel_gate.mlp.\1.weight'),
        (rf'freq_refinement\.conv\.{PARAM}', r'merge.\1'),
        (r'rate_adaptive_conv\.([02])\.weight', r'rate_conv.\1.weight'),
    ],
    'fdmee': [
        (r'spilit\.(lamb_[lh])', r'split.unused.\1'),
        (r'spilit\.conv\.weight', 'split.to_kernels.weight'),
        (r'spilit\.bn\.(weight|bias|running_mean|running_var|num_batches_tracked)', r'split.norm.\1'),
        (rf'proj\.{PARAM}', r'fuse.\1'),
        *[rule for band in ('high', 'low') for rule in nested(rf'{band}_block\.', f'{band}.', [
            (rf'norm_1\.{PARAM}', r'norm.\1'),
            (rf'norm_2\.{PARAM}', r'unused.norm_2_\1'),
            (rf'block\.conv_1\.([02])\.{PARAM}', r'mese.project_in.\1.\2'),
            (rf'block\.conv_2\.0\.conv\.([01])\.{PARAM}', r'mese.striped.\1.\2'),
            (rf'block\.agg_conv\.0\.{PARAM}', r'mese.context_down.0.\1'),
            (rf'block\.conv\.([01])\.{PARAM}', r'mese.context.\1.\2'),
            (rf'block\.moe_layer\.experts\.(\d+)\.conv_([123])\.{PARAM}', r'mese.experts.\1.w\2.\3'),
            (r'block\.moe_layer\.wet\.body\.2\.weight', 'mese.router.fc.weight'),
            (rf'block\.proj\.{PARAM}', r'mese.project_out.\1'),
        ])],
    ],
    'stp': [
        (rf'fc\.{PARAM}', r'prompt_proj.\1'),
        (r'model\.w_g', 'router.w_gate.weight'),
        (r'model\.w_n', 'router.w_noise.weight'),
        (rf'model\.el\.(\d+)\.(fc[12])\.{PARAM}', r'experts.\1.\2.\3'),
    ],
    'prompt': [
        (rf'CondNet\.([02468])\.{PARAM}', r'encoder.\1.\2'),
        (rf'lastOut\.{PARAM}', r'to_weights.\1'),
        (r'dictionary', 'atoms'),
    ],
}
TRANSPOSED = re.compile(r'encoder\.\d\.stp\.router\.w_(gate|noise)\.weight')
# The authors' constant buffers: key (within an STP-G-MESE) -> the value it must hold.
CONSTANTS = {'model.mean': 0.0, 'model.std': 1.0}


class ConversionError(ValueError):
    """The authors' checkpoint does not fit the network it is converted for; the message names the keys."""


def our_key(key):
    """Our name for the authors' ``key``, None for a checked constant, or a ConversionError naming the key."""
    for pattern, repl, kind in PREFIXES:
        match = re.match(pattern, key)
        if match is None:
            continue
        rest = key[match.end():]
        if kind == 'stp' and rest in CONSTANTS:
            return None
        prefix = repl(match) if callable(repl) else match.expand(repl)
        for rule, rule_repl in RULES[kind]:
            rule_match = re.fullmatch(rule, rest)
            if rule_match is not None:
                return prefix + rule_match.expand(rule_repl)
    raise ConversionError(f'authors\' key {key!r}: no rule maps it onto MEASNet')


def check_constant(key, value):
    expected = CONSTANTS[key.split('.', 1)[1]]
    if value.numel() != 1 or value.item() != expected:
        raise ConversionError(f'authors\' key {key!r}: expected the constant {expected}, got {value.tolist()}')


def convert_state_dict(authors_state, network):
    """The authors' ``IRmodel`` state dict -> the state dict of ``network`` (our MEASNet), checked key by key."""
    converted, sources = {}, {}
    for key, value in authors_state.items():
        mapped = our_key(key)
        if mapped is None:
            check_constant(key, value)
            continue
        if mapped in sources:
            raise ConversionError(f'authors\' keys {sources[mapped]!r} and {key!r} both map to {mapped!r}')
        sources[mapped] = key
        converted[mapped] = value.t() if TRANSPOSED.fullmatch(mapped) else value
    expected = network.state_dict()
    extra = sorted(set(converted) - set(expected))
    if extra:
        raise ConversionError(f'authors\' key {sources[extra[0]]!r} (our {extra[0]!r}) has no place in this network '
                              f'({len(extra)} such keys); does network_g match the checkpoint\'s configuration?')
    missing = sorted(set(expected) - set(converted))
    if missing:
        raise ConversionError(f'our key {missing[0]!r} is missing from the authors\' checkpoint ({len(missing)} '
                              'missing keys); does network_g match the checkpoint\'s configuration?')
    for key, value in converted.items():
        if value.shape != expected[key].shape:
            raise ConversionError(f'authors\' key {sources[key]!r}: shape {tuple(value.shape)} does not fit our '
                                  f'{key!r} of shape {tuple(expected[key].shape)}')
    return {key: converted[key].to(expected[key].dtype).contiguous() for key in expected}


def read_authors_checkpoint(path):
    """The ``IRmodel`` state dict in ``path``: a Lightning checkpoint (``state_dict`` with ``net.`` prefixes) or a
    bare state dict. Loaded with ``weights_only=True`` and nothing allowed beyond torch's own types."""
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch raises UnpicklingError for a forbidden type, RuntimeError for a broken file
        raise ConversionError(f'{path}: cannot be read as a checkpoint of plain tensors and containers: {err}') from err
    if not isinstance(checkpoint, dict):
        raise ConversionError(f'{path}: expected a dict, got {type(checkpoint).__name__}')
    if 'state_dict' not in checkpoint:
        if not all(torch.is_tensor(v) for v in checkpoint.values()):
            raise ConversionError(f'{path}: neither a Lightning checkpoint (no state_dict) nor a bare state dict')
        return checkpoint
    state = checkpoint['state_dict']
    outside = [key for key in state if not key.startswith(LIGHTNING_PREFIX)]
    if outside:
        raise ConversionError(f'{path}: state_dict key {outside[0]!r} is not under the IRModel\'s {LIGHTNING_PREFIX!r}')
    return {key[len(LIGHTNING_PREFIX):]: value for key, value in state.items()}


def network_options(options_path=None):
    """``network_g`` of an options file (the default MEASNet without a file)."""
    if options_path is None:
        return {'type': 'MEASNet'}
    with open(options_path) as f:
        return dict((yaml.safe_load(f) or {}).get('network_g') or {'type': 'MEASNet'})


def convert(authors_path, out_path, network_g=None):
    """Convert ``authors_path`` for the MEASNet that ``network_g`` (``{type: MEASNet, ...}``, default: the default
    MEASNet) describes and write ``{'params': ...}`` to ``out_path``; returns the params."""
    options = dict(network_g or {'type': 'MEASNet'})
    if options.pop('type', None) != 'MEASNet':
        raise ConversionError(f'network_g must be a MEASNet, got type {(network_g or {}).get("type")!r}')
    with torch.device('meta'):  # only names and shapes are needed
        network = MEASNet(**options)
    params = convert_state_dict(read_authors_checkpoint(authors_path), network)
    save_checkpoint({'params': params}, out_path)
    return params


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('authors_checkpoint', help="the authors' Lightning checkpoint (or a bare IRmodel state dict)")
    parser.add_argument('output', help='the BasicSR checkpoint to write ({"params": ...})')
    parser.add_argument('-opt', help='options whose network_g the checkpoint is for (default: the default MEASNet)')
    args = parser.parse_args(argv)
    try:
        params = convert(args.authors_checkpoint, args.output, network_options(args.opt))
    except (ConversionError, FileNotFoundError) as err:
        sys.exit(f'error: {err}')
    print(f'{args.output}: {len(params)} tensors, {sum(v.numel() for v in params.values()):,} values')


if __name__ == '__main__':
    main()
