"""The paper's claim at demo scale, over seeds: at equal gradient steps, does the EA phase give a better front than
Adam alone and than network interpolation?

    python benchmarks/ea_vs_adam.py [--iters 150] [--seeds 0 1 2] [--tag EAvsAdam] \
        [--out benchmarks/results/ea_vs_adam.md] [--evaluate-only]

Per seed N, from the same PSNR start model and as ``scripts/run_demo.sh`` runs them, each with ``--force_yml
manual_seed=N train:optim_g:seed=N`` (data order, discriminator init, EA draws): (a) the EA-Adam population of
``options/train_EAAdam_demo.yml``, (b) the same options with ``train.ea.interval 0`` (Adam alone: P fixed-preference
runs), both ``--iters`` gradient steps; (c) network interpolation from the start model to (b)'s individual trained
for perception alone (#P-1, as ESRGAN interpolates towards its GAN model; ``scripts/interpolate.py``, alphas 0.1 to
0.9, and 0 and 1, which are its two ends bit for bit, so the curve is a front from end to end); (d) (a) fused with
``options/train_Fusion_demo.yml`` (seed N) and collapsed into one plain network. Everything is evaluated on held-out
images (the demo validation set, used by neither training nor the EA's fitness set) with PSNR (distortion) and NIQE
(perception). Per seed: the three fronts' hypervolumes after a joint normalisation of all that seed's points,
EA-Adam's ratios to the other two, and which front members dominate the collapsed model; then mean +- sample std
over seeds. The markdown is printed and written to --out, whichever way the numbers come out. ``--evaluate-only``
evaluates the checkpoints an earlier run of the same tag, iters and seeds left, after a change to the evaluation.
"""
import os
import sys
import tempfile
import time
from typing import NamedTuple

import torch
import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from basicsr_ea.evaluation import evaluate, load_options  # noqa: E402  (first: repairs BasicSR)
from basicsr_ea.models.ea_report import normalized_hypervolumes  # noqa: E402
from benchmarks.common import mean_std, parse_seed_args, publish, run, seeds_parser  # noqa: E402

START_MODEL = 'experiments/SRResNet_demo_x4/models/net_g_latest.pth'
EA_OPTIONS = 'options/train_EAAdam_demo.yml'
FUSION_OPTIONS = 'options/train_Fusion_demo.yml'
EVAL_OPTIONS = 'options/eval_demo.yml'
ALPHAS = (0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1)
FRONTS = ('EA-Adam', 'Adam alone', 'interpolation')  # the front names evaluation_options gives, EA-Adam first
FUSED = 'collapsed fusion'


def ensure_start_model():
    """The demo data and the PSNR start model both arms begin from, made once; True when made by this call."""
    if os.path.isfile(os.path.join(REPO_ROOT, START_MODEL)):
        return False
    run('scripts/make_demo_data.py')
    run('basicsr_ea/train.py', '-opt', 'options/train_SRResNet_demo.yml')
    return True


def fusion_options(ea, fusion, seed, folder):
    """``options/train_Fusion_demo.yml`` for one seed, written to ``folder``: this seed's EA-Adam run as the experts
    and the discriminator the options name taken from it. A file, not ``--force_yml``: the collapse reads
    ``network_g`` from the options file alone."""
    opt = load_options(FUSION_OPTIONS)
    opt.update(name=fusion, manual_seed=seed)
    opt['network_g']['experts'] = f'experiments/{ea}/models'
    opt['path']['pretrain_network_d'] = f'experiments/{ea}/models/{os.path.basename(opt["path"]["pretrain_network_d"])}'
    path = os.path.join(folder, f'{fusion}.yml')
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(opt, f)
    return path


def seed_runs(tag, iters, seed):
    """The experiment names of one seed's EA-Adam, Adam-alone, fusion and interpolation runs."""
    return tuple(f'{tag}_{arm}_{iters}it_seed{seed}' for arm in ('ea', 'adam', 'fusion', 'interp'))


def trained_seed(tag, iters, seed):
    """What ``train_seed`` returns, from the folders a run left; exits if one is missing."""
    ea, adam, fusion, interp = seed_runs(tag, iters, seed)
    collapsed = f'experiments/{fusion}/collapsed.pth'
    for path in (f'experiments/{ea}/models', f'experiments/{adam}/models', f'experiments/{interp}', collapsed):
        if not os.path.exists(path):
            sys.exit(f'seed {seed}: {path} is missing; a run without --evaluate-only trains it')
    return ea, adam, f'experiments/{interp}', collapsed


def train_seed(tag, iters, seed):
    """Both arms, the interpolation and the collapsed fusion of one seed; returns the arms' experiment names, the
    interpolation folder and the collapsed checkpoint."""
    ea, adam, fusion, interp = seed_runs(tag, iters, seed)
    seeds = (f'manual_seed={seed}', f'train:optim_g:seed={seed}')
    for name, extra in ((ea, ()), (adam, ('train:ea:interval=0', ))):
        run('basicsr_ea/train.py', '-opt', EA_OPTIONS, '--force_yml', f'name={name}', f'train:total_iter={iters}',
            *seeds, *extra)
    last = load_options(EA_OPTIONS)['train']['population_size'] - 1
    perception_end = f'experiments/{adam}/models/net_g_{last}_latest.pth'
    run('scripts/interpolate.py', '-opt', EA_OPTIONS, '--a', START_MODEL, '--b', perception_end,
        '--alphas', *(f'{alpha:g}' for alpha in ALPHAS), '--out', f'experiments/{interp}/net_g_alpha{{alpha}}.pth')
    collapsed = f'experiments/{fusion}/collapsed.pth'
    with tempfile.TemporaryDirectory() as scratch:
        fusion_opt = fusion_options(ea, fusion, seed, scratch)
        run('basicsr_ea/train.py', '-opt', fusion_opt)
        run('scripts/collapse_fusion.py', '-opt', fusion_opt, '--checkpoint',
            f'experiments/{fusion}/models/net_g_latest.pth', '--calib', 'datasets/demo_x4/train/LR_bicubic_x4',
            '--out', collapsed)
    return trained_seed(tag, iters, seed)


def evaluation_options(name, ea, adam, interp, collapsed):
    """The demo's evaluation options restricted to PSNR and NIQE, pointed at one seed's checkpoints."""
    opt = load_options(EVAL_OPTIONS)
    network = opt['models'][0]['network']
    opt['name'] = name
    opt['models'] = [
        {'label': 'EA-Adam #{i}', 'network': network, 'population': f'experiments/{ea}/models', 'iter': 'latest'},
        {'label': 'Adam #{i}', 'network': network, 'population': f'experiments/{adam}/models', 'iter': 'latest',
         'front_label': 'Adam alone'},
        *({'label': f'interpolation {alpha:g}', 'network': network, 'front_label': 'interpolation',
           'checkpoint': f'{interp}/net_g_alpha{alpha:g}.pth'} for alpha in ALPHAS),
        {'label': FUSED, 'network': network, 'checkpoint': collapsed}]
    opt['metrics'] = {'ssim': None, 'lpips': None, 'dists': None, 'niqe': {'crop_border': 0}}
    return opt


def dominators(point, members):
    """Labels of the ``members`` ({label: point}) that dominate ``point`` (minimisation: no worse in every objective,
    better in one)."""
    return [label for label, other in members.items() if (other <= point).all() and (other < point).any()]


def measures(fronts, fused):
    """{name: value}: the hypervolume of each of ``fronts`` ({name: [P, 2]}, minimisation) after a joint normalisation
    of all their points and ``fused``'s, and EA-Adam's ratio to each other front (higher is better)."""
    hypervolumes = dict(zip(fronts, normalized_hypervolumes(*fronts.values(), fused[None])))
    return {**{f'HV {name}': hv for name, hv in hypervolumes.items()},
            **{f'EA-Adam / {name}': hypervolumes['EA-Adam'] / hypervolumes[name] for name in FRONTS[1:]}}


class SeedResult(NamedTuple):
    """One seed's fronts ({name: [P, 2]}) and collapsed model as (-PSNR, NIQE) points, its ``measures`` and the
    labels of the front members that dominate the collapsed model."""
    fronts: dict
    fused: torch.Tensor
    measures: dict
    dominators: list


def measure_seed(tag, iters, seed, evaluate_only=False):
    """Train (unless ``evaluate_only``) and evaluate one seed."""
    ea, adam, interp, collapsed = (trained_seed if evaluate_only else train_seed)(tag, iters, seed)
    table = evaluate(evaluation_options(f'{tag}_{iters}it_seed{seed}', ea, adam, interp, collapsed), 'results',
                     progress=False)
    dataset = next(iter(table.columns))[0]
    points = {label: torch.tensor([-table.value(label, dataset, 'psnr'), table.value(label, dataset, 'niqe')],
                                  dtype=torch.float64) for label in table.labels}
    fronts = {name: torch.stack([points[label] for label in table.fronts[name]]) for name in FRONTS}
    members = {label: points[label] for name in FRONTS for label in table.fronts[name]}
    return SeedResult(fronts, points[FUSED], measures(fronts, points[FUSED]), dominators(points[FUSED], members))


def held_out_images():
    """The evaluation's datasets as ``name: n images (folder: file names)``."""
    described = []
    for name, dataset in load_options(EVAL_OPTIONS)['datasets'].items():
        files = sorted(os.listdir(dataset['dataroot_gt']))
        described.append(f'{name}: {len(files)} images ({dataset["dataroot_gt"]}: {", ".join(files)})')
    return '; '.join(described)


def report(args, results, timing):
    """The markdown: the command and setting, per-seed measures, their mean +- sample std, and every point."""
    names = list(results[0].measures)
    dominated = sum(bool(result.dominators) for result in results)
    lines = [
        '# EA-Adam against Adam alone and network interpolation (demo scale)', '',
        f'`python benchmarks/ea_vs_adam.py --iters {args.iters} --seeds {" ".join(map(str, args.seeds))} '
        f'--tag {args.tag} --out {args.out}' + (' --evaluate-only' if args.evaluate_only else '') + '`', '',
        f'- Training: `{EA_OPTIONS}` from the PSNR start model, {args.iters} gradient steps per arm (Adam alone: '
        '`train:ea:interval=0`), `--force_yml manual_seed=N train:optim_g:seed=N`; interpolation from the start model '
        'to Adam alone\'s individual #P-1 (preference (0, 1): perception alone) at alpha 0, 0.1, ..., 0.9, 1; the '
        f'EA-Adam population fused (`{FUSION_OPTIONS}`, manual_seed N) and collapsed.',
        f'- Held-out images: {held_out_images()}. PSNR on Y with a 4 px crop, NIQE without crop.',
        '- Hypervolume: per seed, all its points (the three fronts and the collapsed model) normalised jointly to '
        '[0, 1] in (-PSNR, NIQE), reference point 1.1, higher is better; comparable within a seed only.',
        f'- Seeds {", ".join(map(str, args.seeds))}; wall time {timing}.',
        '', '| seed | ' + ' | '.join(names) + ' | collapsed fusion PSNR / NIQE | dominated by |',
        '|---|' + '---|' * (len(names) + 2)]
    for seed, result in zip(args.seeds, results):
        lines.append(f'| {seed} | ' + ' | '.join(f'{result.measures[name]:.4f}' for name in names) +
                     f' | {-result.fused[0]:.3f} / {result.fused[1]:.3f} | {", ".join(result.dominators) or "none"} |')
    lines += ['', '| over seeds | mean +- sample std |', '|---|---|']
    lines += [f'| {name} | {mean_std([result.measures[name] for result in results], 4)} |' for name in names]
    lines += [f'| collapsed fusion dominated | {dominated} of {len(results)} seeds |', '',
              '| seed | front | PSNR / NIQE per member (individual #0 first; interpolation: alpha 0 to 1) |',
              '|---|---|---|']
    for seed, result in zip(args.seeds, results):
        lines += [f'| {seed} | {name} | ' + ', '.join(f'{-psnr:.3f} / {niqe:.3f}' for psnr, niqe in front.tolist())
                  + ' |' for name, front in result.fronts.items()]
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = seeds_parser(__doc__, 150, 'EAvsAdam', 'benchmarks/results/ea_vs_adam.md')
    parser.add_argument('--evaluate-only', action='store_true', help="evaluate an earlier run's checkpoints")
    args = parse_seed_args(parser, argv)
    os.chdir(REPO_ROOT)
    start = time.perf_counter()
    made = not args.evaluate_only and ensure_start_model()
    seeds_start = time.perf_counter()
    results = [measure_seed(args.tag, args.iters, seed, args.evaluate_only) for seed in args.seeds]
    what = 'evaluating the seeds (trained by an earlier run)' if args.evaluate_only else 'the seeds'
    timing = f'{(time.perf_counter() - seeds_start) / 60:.1f} min for {what}, ' + (
        f'{(seeds_start - start) / 60:.1f} min more for the demo data and start model' if made else
        f'the start model an existing one ({START_MODEL})')
    publish(report(args, results, timing), args.out)

if __name__ == '__main__':
    main()
