"""Do MEASNet's experts earn their parameters? MEASNet against the same backbone without experts, widened to the
same parameter count, at equal steps on the same data, over several seeds.

    python benchmarks/measnet_vs_plain.py [--iters 300] [--seeds 0 1 2] [--out benchmarks/results/measnet_vs_plain.md]

Both networks are ``options/train_MEASNet_demo.yml``'s narrow MEASNet; the plain one drops the task prompt,
STP-G-MESE and FD-MEE (the Restormer U-Net and AFLB stay) and is widened back to MEASNet's parameter count
(``matched_plain``). Each run is ``basicsr_ea/train.py`` on the demo's options (``AllInOneModel``: L1 + 0.001 x the
load-balancing loss, AdamW, warm-up then cosine) restricted to the 3-task setting (noise 15/25/50, rain, haze) of
``scripts/make_allinone_demo.py``'s training split, with ``manual_seed`` the seed. Every checkpoint is then scored by
``scripts/evaluate.py``'s runner in the all-in-one protocol (PSNR/SSIM on RGB, no crop) on the demo's test split,
which training never reads. The markdown table (mean +- sample std over seeds) is printed and written to --out,
whichever way it comes out.
"""
import copy
import os
import statistics
import sys
import tempfile
import time

import torch
import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from basicsr_ea.evaluation import AVERAGE, load_options, run_evaluation  # noqa: E402  (first: repairs BasicSR)
from basicsr.archs import build_network  # noqa: E402
from benchmarks.common import mean_std, parse_seed_args, publish, run, seeds_parser  # noqa: E402
from benchmarks.measnet import parameter_count  # noqa: E402

DEMO_OPTIONS = os.path.join(REPO_ROOT, 'options', 'train_MEASNet_demo.yml')
TASKS = ('denoise_15', 'denoise_25', 'denoise_50', 'derain', 'dehaze')
METRICS = ('psnr', 'ssim')
NETWORKS = ('MEASNet', 'plain')


def network_size(network_opt):
    """Parameter count of a registered network, built on the meta device (no memory, no initialisation)."""
    with torch.device('meta'):
        return parameter_count(build_network(network_opt))


def matched_plain(network_opt, tolerance=0.02):
    """(plain options, MEASNet's count, plain count): ``network_opt`` without prompt, STP-G-MESE and FD-MEE, with the
    widest even ``dim`` whose count stays at or below MEASNet's (even: the downsampling halves the channels and
    AFLB splits 2 dim into 4 heads), then the FFN expansion factor raised in 0.01 steps to the count closest to
    MEASNet's. Raises if that is still more than ``tolerance`` (relative) away."""
    target = network_size(network_opt)
    plain = dict(network_opt, stp_levels=[], stp_aux_levels=[], use_fdmee=False)
    while network_size(dict(plain, dim=plain['dim'] + 2)) <= target:
        plain['dim'] += 2
    below = dict(plain)
    while (count := network_size(plain)) < target:
        below = dict(plain)
        plain['ffn_expansion_factor'] = round(plain['ffn_expansion_factor'] + 0.01, 2)
    if abs(network_size(below) - target) < count - target:
        plain, count = below, network_size(below)
    if abs(count - target) > tolerance * target:
        raise ValueError(f'no plain network within {tolerance:.0%} of {target} parameters (closest {count})')
    return plain, target, count


def train_options(network_opt, name, seed, iters, data_root):
    """The demo's training options on the 3-task split, ``iters`` steps with the demo's warm-up share (5%) and one
    cosine after it, no validation (every score comes from the test split, after training)."""
    opt = load_options(DEMO_OPTIONS)
    opt.update(name=name, manual_seed=seed, network_g=copy.deepcopy(network_opt))
    opt['datasets'] = {'train': dict(opt['datasets']['train'], dataroot=os.path.join(data_root, 'Train'),
                                     de_type=list(TASKS), repeat={task: 1 for task in TASKS})}
    opt.pop('val')
    warmup = max(iters // 20, 3)
    # BasicSR's scheduler restarts one step after a period, from iteration 2: see train_MEASNet_3task.yml.
    opt['train'].update(total_iter=iters, warmup_iter=warmup)
    opt['train']['scheduler']['periods'] = [warmup - 2, iters - warmup + 2]
    opt['logger'].update(print_freq=max(iters // 10, 1), save_checkpoint_freq=iters, use_tb_logger=False)
    return opt


def test_datasets(data_root):
    """The demo's test split, one ``AllInOneTestDataset`` per task (noise seeded)."""
    test = os.path.join(data_root, 'Test')
    datasets = {}
    for task in TASKS:
        if task.startswith('denoise'):
            datasets[task] = {'type': 'AllInOneTestDataset', 'task': task, 'dataroot_gt': os.path.join(test, 'denoise')}
        else:
            datasets[task] = {'type': 'AllInOneTestDataset', 'task': task,
                              'dataroot_gt': os.path.join(test, task, 'target'),
                              'dataroot_lq': os.path.join(test, task, 'input')}
    return datasets


def train(opt, scratch):
    """Train one run with basicsr_ea/train.py (its options written to ``scratch``); returns its wall seconds."""
    opt_path = os.path.join(scratch, f'{opt["name"]}.yml')
    with open(opt_path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(opt, f)
    start = time.perf_counter()
    run('basicsr_ea/train.py', '-opt', opt_path)
    return time.perf_counter() - start


def report(table, args, plain, counts, seconds):
    """The markdown report: per-task mean +- sample std over seeds of each network and of the per-seed
    difference, then each seed's average."""
    digits = {'psnr': 2, 'ssim': 4}

    def values(network, task, metric):
        return [table.value(f'{network} seed {seed}', task, metric) for seed in args.seeds]

    def cells(task, metric):
        measnet, other = values('MEASNet', task, metric), values('plain', task, metric)
        delta = [a - b for a, b in zip(measnet, other)]
        return [mean_std(v, digits[metric]) for v in (measnet, other, delta)]

    timing = ', '.join(f'{name} {statistics.mean(s) / 60:.1f} min' if s else f'{name} n/a (checkpoints reused)'
                       for name, s in seconds.items())
    lines = [
        '# MEASNet against the same network without experts (demo scale)', '',
        f'`python benchmarks/measnet_vs_plain.py --iters {args.iters} --seeds {" ".join(map(str, args.seeds))}`', '',
        f'- MEASNet: `options/train_MEASNet_demo.yml`\'s network, {counts[0]:,} parameters.',
        f'- plain: no task prompt, STP-G-MESE or FD-MEE, widened to dim {plain["dim"]}, FFN expansion '
        f'{plain["ffn_expansion_factor"]}: {counts[1]:,} parameters ({100 * (counts[1] / counts[0] - 1):+.2f}%).',
        f'- Training: {args.iters} steps each (batch 4, 64 px patches, the demo\'s optimiser and warm-up + cosine), '
        'the 3-task training split of `scripts/make_allinone_demo.py` (noise 15/25/50, rain, haze); '
        f'seeds {", ".join(map(str, args.seeds))}; wall time per run ({args.threads} thread): {timing}.',
        '- Test: the demo\'s test split (3 held-out 128 px images per task, noise seeded), PSNR (dB) and SSIM on RGB '
        'without crop; mean +- sample std over seeds; delta = MEASNet - plain, seed by seed.', '',
        '| task | MEASNet PSNR | plain PSNR | delta PSNR | MEASNet SSIM | plain SSIM | delta SSIM |',
        '|---|---|---|---|---|---|---|']
    for task in TASKS + (AVERAGE, ):
        lines.append(f'| {task} | ' + ' | '.join(cells(task, 'psnr') + cells(task, 'ssim')) + ' |')
    lines += ['', '| seed | MEASNet average PSNR / SSIM | plain average PSNR / SSIM |', '|---|---|---|']
    for seed in args.seeds:
        lines.append(f'| {seed} | ' + ' | '.join(
            f'{table.value(f"{network} seed {seed}", AVERAGE, "psnr"):.2f} / '
            f'{table.value(f"{network} seed {seed}", AVERAGE, "ssim"):.4f}' for network in NETWORKS) + ' |')
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = seeds_parser(__doc__, 300, 'MEASNetVsPlain', 'benchmarks/results/measnet_vs_plain.md')
    parser.add_argument('--data', default='datasets/allinone_demo', help='demo data set root (made if missing)')
    parser.add_argument('--threads', type=int, default=1, help='CPU threads of every run')
    args = parse_seed_args(parser, argv)
    os.chdir(REPO_ROOT)
    os.environ['OMP_NUM_THREADS'] = str(args.threads)
    torch.set_num_threads(args.threads)
    run('scripts/make_allinone_demo.py', '--root', args.data)
    measnet = load_options(DEMO_OPTIONS)['network_g']
    plain, *counts = matched_plain(measnet)
    print(f'parameters: MEASNet {counts[0]:,}, plain (dim {plain["dim"]}, FFN expansion '
          f'{plain["ffn_expansion_factor"]}) {counts[1]:,}', flush=True)
    models, seconds = [], {name: [] for name in NETWORKS}
    with tempfile.TemporaryDirectory() as scratch:
        for seed in args.seeds:
            for name, network in zip(NETWORKS, (measnet, plain)):
                experiment = f'{args.tag}_{name}_{args.iters}it_seed{seed}'
                checkpoint = f'experiments/{experiment}/models/net_g_latest.pth'
                if os.path.isfile(checkpoint):
                    print(f'reusing {checkpoint}', flush=True)
                else:
                    seconds[name].append(train(train_options(network, experiment, seed, args.iters, args.data),
                                               scratch))
                    print(f'{experiment}: {seconds[name][-1]:.0f} s', flush=True)
                models.append({'label': f'{name} seed {seed}', 'network': network, 'checkpoint': checkpoint})
    table = run_evaluation({'name': args.tag, 'protocol': 'allinone', 'device': 'cpu', 'models': models,
                            'datasets': test_datasets(args.data)}, progress=False)
    publish(report(table, args, plain, counts, seconds), args.out)


if __name__ == '__main__':
    main()
