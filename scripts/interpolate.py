"""Interpolate two checkpoints of one arch at given alphas into plain BasicSR checkpoints (ESRGAN's net_interp).

    python scripts/interpolate.py -opt options/train_EAAdam_demo.yml \\
        --a experiments/SRResNet_demo_x4/models/net_g_latest.pth --b experiments/AdamBaseline_demo_x4/models \\
        --alphas 0.1 0.2 0.3 --out 'experiments/Interpolation_demo_x4/net_g_alpha{alpha}.pth'

Writes ``{'params': (1 - alpha) theta_a + alpha theta_b}`` for each alpha (``{alpha}`` in --out becomes ``0.1``,
``0.5``, ``1``), atomically, loadable by BasicSR's ``SRModel`` with nothing of this project imported. Both
inputs are checked against ``network_g`` of the options (any train or test options file), so checkpoints of another
arch or size are an error naming the file and the tensor. --b may be an EA-Adam population folder
(``net_g_{i}_{iter}.pth``): then its most perceptual individual is taken, the one with the best value of the last
objective of ``train.ea.objectives`` (the perception side) on the options' EA fitness set, among those whose weights
are not --a's (the frozen start model), and every individual's value is printed. Relative paths are read from the
working directory, as BasicSR's are.
"""
import argparse
import os

import torch
import yaml

import basicsr_ea  # noqa: F401  (repairs BasicSR's import, registers the plugin's archs)
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr_ea.checkpoints import check_fits, network_state, population_paths, read_checkpoint, save_checkpoint
from basicsr_ea.cli import run
from basicsr_ea.compat import perceptual_weights
from basicsr_ea.interpolation import InterpolationError, interpolate_states
from basicsr_ea.models.fitness import FitnessEvaluator, PerceptualObjective, build_objective, load_fitness_patches
from basicsr_ea.models.train_options import EAOptions
from basicsr_ea.options import OptionError, parse


def load_options(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f'options file {path} not found.')
    with open(path, encoding='utf-8') as f:
        opt = yaml.safe_load(f)
    if not isinstance(opt, dict) or 'network_g' not in opt:
        raise OptionError(f'{path}: no network_g to check the checkpoints against')
    return opt


def read_state(path, template, arch, param_key='params'):
    """The weights of ``path``, checked to fit the options' network (``checkpoints.check_fits``)."""
    state = network_state(read_checkpoint(path), path, param_key)
    check_fits(state, template, path, arch)
    return state


def perception_values(opt, paths, template, arch):
    """The last EA objective of each checkpoint of ``paths`` on the options' fitness set, measured as the EA
    measures it, and that objective's sign (1: lower is better, -1: higher; the values times it are minimised)."""
    ea_opt = (opt.get('train') or {}).get('ea')
    if ea_opt is None:
        raise OptionError('--b is a population folder, whose most perceptual individual is found with '
                          'train.ea.objectives on train.ea.fitness: the options have no train.ea')
    ea = parse(EAOptions, ea_opt, 'train.ea')
    where = f'train.ea.objectives[{len(ea.objectives) - 1}]'
    perceptual = None
    if ea.objectives[-1]['type'] == 'perceptual':
        with perceptual_weights(opt):
            perceptual = PerceptualObjective(build_loss(opt['train']['perceptual_opt']))
    objective = build_objective(ea.objectives[-1], perceptual, where)
    lq, gt = load_fitness_patches(ea.fitness, opt.get('scale', 1))
    net = build_network(opt['network_g']).eval()
    evaluator = FitnessEvaluator([objective], lq, gt, net, ea.batch_size, ea.channels_last, ea.nnpack)
    sign = evaluator.signs[0].item()
    values = []
    for path in paths:
        net.load_state_dict(read_state(path, template, arch))
        values.append(sign * evaluator([p.detach().clone() for p in net.parameters()])[0].item())
    return values, sign


def same_weights(state, other):
    return all(torch.equal(value, other[key]) for key, value in state.items())


def most_perceptual(opt, folder, template, arch, state_a, iteration='latest'):
    """The checkpoint of the population in ``folder`` with the best perception objective, and ``{path: value}``
    in the objective's own units (None: skipped). Individuals with the weights of ``state_a`` are skipped: the
    population's frozen start model can be its best on NIQE (the demo's is), and interpolating a network with
    itself draws no curve."""
    population = population_paths(folder, iteration)
    paths = [path for path in population if not same_weights(read_state(path, template, arch), state_a)]
    if not paths:
        raise ValueError(f'{folder}: every individual has the weights of --a; nothing to interpolate towards')
    values, sign = perception_values(opt, paths, template, arch)
    best = min(range(len(paths)), key=lambda i: sign * values[i])
    measured = dict(zip(paths, values))
    return paths[best], {path: measured.get(path) for path in population}


def output_paths(template_path, alphas, inputs):
    """``--out`` formatted per alpha; refused when two alphas would share a file or one would replace an input."""
    if len(alphas) > 1 and '{alpha}' not in template_path:
        raise OptionError(f'--out {template_path}: several alphas need {{alpha}} in the path')
    paths = [template_path.format(alpha=f'{alpha:g}') for alpha in alphas]
    if len(set(paths)) < len(paths):
        raise OptionError(f'--alphas {" ".join(f"{alpha:g}" for alpha in alphas)}: an alpha is repeated')
    for path in paths:
        if any(os.path.abspath(path) == os.path.abspath(source) for source in inputs):
            raise OptionError(f'--out: {path} would overwrite an input checkpoint')
    return paths


def interpolate(args):
    opt = load_options(args.opt)
    net = build_network(opt['network_g'])
    template, arch = net.state_dict(), type(net).__name__
    state_a = read_state(args.a, template, arch, args.param_key)
    b_path = args.b
    if os.path.isdir(args.b):
        b_path, values = most_perceptual(opt, args.b, template, arch, state_a, args.iter)
        name = opt['train']['ea']['objectives'][-1]['type']
        for path, value in values.items():
            measured = 'skipped: the weights of --a' if value is None else f'{name} {value:.4f}'
            print(f'{os.path.basename(path)}: {measured}{" <- most perceptual" * (path == b_path)}')
    outputs = output_paths(args.out, args.alphas, [args.a, b_path])
    state_b = read_state(b_path, template, arch, args.param_key)
    for alpha, out in zip(args.alphas, outputs):
        try:
            state = interpolate_states(state_a, state_b, alpha)
        except InterpolationError as err:
            raise InterpolationError(f'{args.a} and {b_path}: {err}') from err
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        save_checkpoint({'params': state}, out)
        print(f'alpha {alpha:g}: {out}')
    return b_path, outputs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('-opt', required=True, help='options whose network_g is the arch of both checkpoints')
    parser.add_argument('--a', required=True, help='the alpha 0 checkpoint (e.g. the PSNR-oriented model)')
    parser.add_argument('--b', required=True, help='the alpha 1 checkpoint, or an EA-Adam population folder')
    parser.add_argument('--iter', default='latest', help='with a population folder: which net_g_{i}_{iter}.pth')
    parser.add_argument('--alphas', nargs='+', type=float, required=True, help='weights of --b, each in [0, 1]')
    parser.add_argument('--out', required=True, help='output path; {alpha} is replaced by each alpha (0.1, 0.5, 1)')
    parser.add_argument('--param_key', default='params', help='params, or params_ema for an EMA run')
    parser.add_argument('--debug', action='store_true', help='tracebacks instead of one-line errors')
    args = parser.parse_args(argv)
    return run(lambda: interpolate(args), argv)


if __name__ == '__main__':
    main()
