"""The paper's claim at demo scale: at equal gradient steps, does the EA phase give a better front than Adam alone?

    python benchmarks/ea_vs_adam.py [--iters 150] [--tag EAvsAdam]

Trains, from the same PSNR-oriented start model and with the same preferences, data order and seed, (a) the EA-Adam
population of ``options/train_EAAdam_demo.yml`` and (b) the same population with the EA phase off
(``train.ea.interval 0``: P independent fixed-preference Adam runs), then fuses and collapses (a). All of them are
evaluated on held-out images (the demo validation set, used by neither training nor the EA's fitness set) with PSNR
(distortion) and NIQE (perception), and the fronts are compared by hypervolume after a joint normalisation.
Reports what it measures, whichever way it comes out.
"""
import argparse
import os
import subprocess
import sys

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import basicsr_ea  # noqa: E402,F401
from basicsr_ea.evaluation import evaluate, load_options  # noqa: E402
from basicsr_ea.evolution import non_dominated_sort  # noqa: E402
from basicsr_ea.models.ea_report import normalized_hypervolumes  # noqa: E402

START_MODEL = 'experiments/SRResNet_demo_x4/models/net_g_latest.pth'


def run(*args):
    """Run a step quietly; on failure show the end of its log."""
    print('$', ' '.join(args), flush=True)
    proc = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f'step failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}')


def ensure_start_model():
    """The demo data and the PSNR start model both arms begin from, made once."""
    if not os.path.isfile(os.path.join(REPO_ROOT, START_MODEL)):
        run('scripts/make_demo_data.py')
        run('basicsr_ea/train.py', '-opt', 'options/train_SRResNet_demo.yml')


def train_all(tag, iters):
    ensure_start_model()
    ea, adam, fusion = f'{tag}_ea', f'{tag}_adam', f'{tag}_fusion'
    for name, interval in ((ea, 40), (adam, 0)):
        run('basicsr_ea/train.py', '-opt', 'options/train_EAAdam_demo.yml', '--force_yml', f'name={name}',
            f'train:total_iter={iters}', f'train:ea:interval={interval}')
    run('basicsr_ea/train.py', '-opt', 'options/train_Fusion_demo.yml', '--force_yml', f'name={fusion}',
        f'network_g:experts=experiments/{ea}/models', f'path:pretrain_network_d=experiments/{ea}/models/'
        'net_d_3_latest.pth')
    collapsed = f'experiments/{fusion}/collapsed.pth'
    run('scripts/collapse_fusion.py', '-opt', 'options/train_Fusion_demo.yml', '--checkpoint',
        f'experiments/{fusion}/models/net_g_latest.pth', '--calib', 'datasets/demo_x4/train/LR_bicubic_x4',
        '--out', collapsed)
    return ea, adam, collapsed


def evaluation_options(tag, ea, adam, collapsed):
    """The demo's evaluation options restricted to PSNR and NIQE, pointed at this run's checkpoints."""
    opt = load_options(os.path.join(REPO_ROOT, 'options', 'eval_demo.yml'))
    network = opt['models'][0]['network']
    opt['name'] = tag
    opt['models'] = [
        {'label': 'EA-Adam #{i}', 'network': network, 'population': f'experiments/{ea}/models', 'iter': 'latest'},
        {'label': 'Adam #{i}', 'network': network, 'population': f'experiments/{adam}/models', 'iter': 'latest'},
        {'label': 'collapsed fusion', 'network': network, 'checkpoint': collapsed}]
    opt['metrics'] = {'ssim': None, 'lpips': None, 'dists': None, 'niqe': {'crop_border': 0}}
    return opt


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--iters', type=int, default=150, help='gradient steps of each population')
    parser.add_argument('--tag', default='EAvsAdam', help='prefix of the experiment names')
    args = parser.parse_args(argv)
    os.chdir(REPO_ROOT)
    ea, adam, collapsed = train_all(args.tag, args.iters)
    table = evaluate(evaluation_options(args.tag, ea, adam, collapsed), 'results', progress=False)
    dataset = next(iter(table.columns))[0]

    def point(label):  # minimisation: (-PSNR, NIQE)
        return torch.tensor([-table.value(label, dataset, 'psnr'), table.value(label, dataset, 'niqe')],
                            dtype=torch.float64)

    fronts = {name: torch.stack([point(label) for label in labels]) for name, labels in table.fronts.items()}
    fused = point('collapsed fusion')
    hypervolumes = normalized_hypervolumes(*fronts.values(), fused[None])
    print(f'\nHeld-out images: {dataset}; {args.iters} gradient steps per population; objectives PSNR (Y, 4 px crop) '
          'and NIQE; hypervolume after joint normalisation of all points, reference point 1.1 (higher is better)')
    print('| population | PSNR per individual | NIQE per individual | non-dominated | hypervolume |')
    print('|---|---|---|---|---|')
    for (name, front), hv in zip(fronts.items(), hypervolumes):
        print(f'| {name} | {", ".join(f"{-v:.3f}" for v in front[:, 0].tolist())} | '
              f'{", ".join(f"{v:.3f}" for v in front[:, 1].tolist())} | {len(non_dominated_sort(front)[0])} | '
              f'{hv:.4f} |')
    names = list(fronts)
    print(f'hypervolume ratio {names[0]} / {names[1]}: {hypervolumes[0] / max(hypervolumes[1], 1e-12):.3f}')
    dominated_by = [name for name, front in fronts.items() if ((front <= fused).all(1) & (front < fused).any(1)).any()]
    print(f'collapsed fused model: PSNR {-fused[0]:.3f}, NIQE {fused[1]:.3f}; dominated by a member of: '
          f'{", ".join(dominated_by) or "neither front"}')


if __name__ == '__main__':
    main()
