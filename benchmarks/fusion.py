"""Population fusion on the CPU: what the fused network costs to train, and that its collapse costs one backbone.

    python benchmarks/fusion.py [--backbones MSRResNet RRDB-small] [--experts 5] [--size 32] [--batch 4]
                                [--repeats 5] [--threads 1]

For each backbone, K random experts are fused (paper-width routers: 64, 64, 100 -> 15 -> K), calibrated on a few
random images and collapsed. Reported, as ratios to the plain backbone on the same input:
(a) inference (eval, no_grad) of the collapsed checkpoint loaded in the plain arch (1.0 expected: it is the plain arch)
    and of the fused network itself;
(b) one training step (forward, L1 backward, Adam step) of the fused network, whose trainable parameters are the
    routers, against one step of one expert (all its parameters). Discriminator and VGG costs are left out: they are
    the same for both.
Times are medians of --repeats runs (torch.utils.benchmark); LR input --batch x 3 x --size x --size.
"""
import argparse
import os
import sys
import tempfile

import torch
import torch.nn.functional as F
from torch.utils import benchmark

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import basicsr_ea  # noqa: E402,F401  (repairs BasicSR, registers PopulationFusion)
from basicsr.archs import build_network  # noqa: E402

BACKBONES = {
    'MSRResNet': dict(type='MSRResNet', num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, upscale=4),
    'RRDB-small': dict(type='RRDBNet', num_in_ch=3, num_out_ch=3, num_feat=64, num_block=2, num_grow_ch=32),
}


def median_seconds(fn, repeats, threads):
    fn()  # warm-up
    return benchmark.Timer('fn()', globals={'fn': fn}, num_threads=threads).timeit(repeats).median


def training_step(net, lq, gt):
    """One L1 step of ``net``'s trainable parameters, as a closure for timing."""
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-6)

    def step():
        optimizer.zero_grad()
        F.l1_loss(net(lq), gt).backward()
        optimizer.step()
    return step


def inference(net, lq):
    def run():
        with torch.no_grad():
            net(lq)
    return run


def measure(backbone, experts, size, batch, repeats, threads):
    """Rows of the table for one backbone: (what, seconds, ratio to the plain backbone)."""
    g = torch.Generator().manual_seed(0)
    lq = torch.rand(batch, 3, size, size, generator=g)
    gt = torch.rand(batch, 3, 4 * size, 4 * size, generator=g)
    with tempfile.TemporaryDirectory() as folder:
        for k in range(experts):
            torch.manual_seed(k)
            torch.save({'params': build_network(backbone).state_dict()}, os.path.join(folder, f'net_g_{k}_latest.pth'))
        fused = build_network(dict(type='PopulationFusion', backbone=backbone, experts=folder))
    plain = build_network(backbone)
    with torch.no_grad(), fused.eval().calibration() as calibration:
        fused(torch.rand(2, 3, size, size, generator=g))
    collapsed = build_network(backbone)
    collapsed.load_state_dict(fused.collapsed_state_dict(calibration.mean_weights()))
    nets = {'plain backbone': plain, 'collapsed checkpoint': collapsed, 'fused network': fused}
    infer = {name: median_seconds(inference(net.eval(), lq), repeats, threads) for name, net in nets.items()}
    train = {name: median_seconds(training_step(net.train(), lq, gt), repeats, threads)
             for name, net in (('one expert', plain), ('fused network (routers)', fused))}
    rows = ([(f'{name}, inference', t, t / infer['plain backbone']) for name, t in infer.items()] +
            [(f'{name}, training step', t, t / train['one expert']) for name, t in train.items()])
    trainable = sum(p.numel() for p in fused.parameters())
    return rows, trainable


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--backbones', nargs='+', default=list(BACKBONES), choices=list(BACKBONES))
    parser.add_argument('--experts', type=int, default=5)
    parser.add_argument('--size', type=int, default=32, help='LR side (GT is 4x)')
    parser.add_argument('--batch', type=int, default=4)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f'K={args.experts} experts, LR {args.batch}x3x{args.size}x{args.size}, {args.threads} thread(s), '
          f'median of {args.repeats}\n')
    for name in args.backbones:
        backbone = BACKBONES[name]
        rows, trainable = measure(backbone, args.experts, args.size, args.batch, args.repeats, args.threads)
        params = sum(p.numel() for p in build_network(backbone).parameters())
        print(f'{name}: {params / 1e6:.2f}M parameters per expert, {trainable / 1e6:.2f}M trainable in the fusion')
        width = max(len(what) for what, *_ in rows)
        for what, seconds, ratio in rows:
            print(f'  {what.ljust(width)}  {seconds * 1e3:9.1f} ms  x{ratio:.2f}')
        print()


if __name__ == '__main__':
    main()
