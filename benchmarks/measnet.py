"""MEASNet on the CPU: what the experts cost and where the parameters and MACs of the default network are.

    python benchmarks/measnet.py [--repeats 5] [--size 256] [--train_size 128] [--train_batch 2] [--threads 1 2]
                                 [--authors CLONE/MEASNet]

(a) STP-G-MESE expert dispatch, sparse (each expert on its own tokens) against dense (every expert on every token,
    unselected ones weighted 0), on the token count and width of each encoder level at --size, same tokens and
    gates; (b) the default network against the same network without experts (no prompt, STP-G-MESE or FD-MEE;
    same widths, blocks and AFLB), eval (batch 1, --size, no_grad) and one training step (--train_batch x
    --train_size, L1 + 0.001 aux loss, backward, AdamW step), at each of --threads; (c) parameters and MACs per
    component; (d) with --authors (the MEASNet/ folder of a clone of zhoushen1/MEASNet, einops importable), one
    training step of ours against the authors' ``IRmodel`` (default configurations) at batch 1 and --train_batch:
    their training fails at batch 1 (BatchNorm of one value per channel), so there their three FD BatchNorms run
    on their running statistics, as ours do. MACs are those of convolutions and matrix products (torch's
    FlopCounterMode / 2): FFTs and element-wise ops are not counted. Times are medians over --repeats after one
    warm-up, wall clock and process CPU time; in (b) and (d) the networks alternate run by run, so load from other
    jobs falls on all alike.
"""
import argparse
import os
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from basicsr_ea.archs.aflb import AFLB  # noqa: E402  (basicsr_ea first: it repairs BasicSR)
from basicsr_ea.archs.frequency_layers import FDMEE  # noqa: E402
from basicsr_ea.archs.measnet_arch import MEASNet  # noqa: E402
from basicsr_ea.archs.moe_layers import (STPGMESE, TaskPrompt, dense_dispatch, sparse_dispatch,  # noqa: E402
                                         top_k_gating)

COMPONENTS = {'prompt': TaskPrompt, 'STP-G-MESE': STPGMESE, 'FD-MEE': FDMEE, 'AFLB': AFLB}


def parameter_count(module):
    return sum(p.numel() for p in module.parameters())


def median_times(fn, repeats):
    """Median (wall, CPU) seconds of ``repeats`` calls after one warm-up. CPU time (summed over threads) is the
    steadier figure on a machine shared with other jobs; wall time is the latency."""
    fn()
    times = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return tuple(statistics.median(column) for column in zip(*times))


def interleaved_times(fns, repeats):
    """``median_times`` of each of ``fns``, the calls alternating between them (A, B, A, B, ...)."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, column in zip(fns, times):
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            column.append((time.perf_counter() - wall, time.process_time() - cpu))
    return [tuple(statistics.median(c) for c in zip(*column)) for column in times]


def timing_cells(times, reference, unit=1.0, digits=2):
    """Wall and CPU time in ``unit`` seconds, then each as a ratio to ``reference`` (wall, CPU)."""
    return ([f'{t / unit:.{digits}f}' for t in times] + [f'{t / r:.2f}' for t, r in zip(times, reference)])


def print_table(header, rows):
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    for row in [header, ['-' * w for w in widths]] + rows:
        print('  '.join(str(cell).rjust(w) for cell, w in zip(row, widths)))
    print()


@torch.no_grad()
def dispatch_rows(size, repeats, dim=48, num_experts=6, top_k=2):
    """Rows of (a): one per encoder level, at the token count and width that level has for a size x size input."""
    rows = []
    for level in range(3):
        width, tokens = dim * 2**level, (size // 2**level)**2
        block = STPGMESE(width, prompt_dim=256, num_experts=num_experts, top_k=top_k)
        x = torch.randn(tokens, width)
        indices, gates = top_k_gating(torch.randn(tokens, num_experts), top_k)
        sparse, dense = (median_times(lambda: dispatch(x, indices, gates, block.run_expert, num_experts), repeats)
                         for dispatch in (sparse_dispatch, dense_dispatch))
        rows.append([level + 1, tokens, width] + timing_cells(sparse, dense, unit=1e-3, digits=1) +
                    [f'{t * 1e3:.1f}' for t in dense])
    return rows


def training_step(net, x):
    """One training step of ``net`` on ``x`` (its own target): L1 + 0.001 aux loss, backward, AdamW step."""
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-6)

    def step():
        optimizer.zero_grad()
        loss = (net(x) - x).abs().mean() + 0.001 * net.aux_loss
        loss.backward()
        optimizer.step()
    return step


def network_rows(args):
    """Rows of (b): eval and training step of the default network and the one without experts, per thread count."""
    torch.manual_seed(0)
    nets = [MEASNet(), MEASNet(stp_levels=[], stp_aux_levels=[], use_fdmee=False)]
    x = torch.rand(1, 3, args.size, args.size)
    x_train = torch.rand(args.train_batch, 3, args.train_size, args.train_size)
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for net in nets:
            net.eval()
        with torch.no_grad():
            evals = interleaved_times([lambda net=net: net(x) for net in nets], args.repeats)
        for net in nets:
            net.train()
        steps = interleaved_times([training_step(net, x_train) for net in nets], args.repeats)
        for mode, times in ((f'eval 1x{args.size}', evals), (f'train {args.train_batch}x{args.train_size}', steps)):
            rows += [[threads, mode, name] + timing_cells(t, times[1])
                     for name, t in zip(('MEASNet (default)', 'without experts'), times)]
    return rows


def authors_rows(args):
    """Rows of (d): our training step against the authors' at batch 1 and --train_batch, per thread count."""
    sys.path.insert(0, os.path.abspath(args.authors))
    from net.MEASNet import IRmodel  # the authors' code, from their clone

    class Authors(IRmodel):
        """Their network with our interface: the output alone, the aux loss in ``aux_loss``."""

        def forward(self, x):
            out, self.aux_loss = super().forward(x)
            return out

    torch.manual_seed(0)
    nets = [MEASNet().train(), Authors().train()]
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in sorted({1, args.train_batch}):
            for module in nets[1].modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.train(batch > 1)
            x = torch.rand(batch, 3, args.train_size, args.train_size)
            times = interleaved_times([training_step(net, x) for net in nets], args.repeats)
            rows += [[threads, f'train {batch}x{args.train_size}', name] + timing_cells(t, times[1])
                     for name, t in zip(('ours (default)', 'authors'), times)]
    return rows


def component_rows(net, size):
    """Rows of (c): parameters and MACs of each component, the backbone being everything else."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.rand(1, 3, size, size))
    flops = counter.get_flop_counts()
    totals = {}
    for name, module in net.named_modules():
        kind = next((k for k, cls in COMPONENTS.items() if isinstance(module, cls)), None)
        if kind is not None:
            params, macs = totals.get(kind, (0, 0))
            totals[kind] = (params + parameter_count(module),
                            macs + sum(flops.get(f'MEASNet.{name}', {}).values()) // 2)
    all_params, all_macs = parameter_count(net), counter.get_total_flops() // 2
    parts_params, parts_macs = (sum(column) for column in zip(*totals.values()))
    totals['backbone'] = (all_params - parts_params, all_macs - parts_macs)
    totals['total'] = (all_params, all_macs)
    return [[kind, f'{params / 1e6:.3f}', f'{macs / 1e9:.2f}', f'{100 * macs / all_macs:.1f}']
            for kind, (params, macs) in totals.items()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--repeats', type=int, default=5, help='timed runs per measurement (after one warm-up)')
    parser.add_argument('--size', type=int, default=256, help='input height and width (eval)')
    parser.add_argument('--train_size', type=int, default=128, help='input height and width (training step)')
    parser.add_argument('--train_batch', type=int, default=2, help='images per training step')
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2], help='torch CPU threads, one run each')
    parser.add_argument('--authors', help="the MEASNet/ folder of a clone of the authors' repository, for (d)")
    parser.add_argument('--parts', default='abcd', help='which of the parts (a) to (d) to run')
    args = parser.parse_args()
    torch.set_num_threads(args.threads[0])
    torch.manual_seed(0)
    print(f'torch {torch.__version__}, {args.threads} CPU threads, input {args.size}x{args.size}, '
          f'median of {args.repeats}\n')

    if 'a' in args.parts:
        print('(a) STP-G-MESE expert dispatch, 6 experts, top-2, forward: sparse, then dense (ms)')
        print_table(['level', 'tokens', 'C', 'wall', 'cpu', 'wall/dense', 'cpu/dense', 'dense wall', 'dense cpu'],
                    dispatch_rows(args.size, args.repeats))
    if 'b' in args.parts:
        print('(b) whole network (s); ratios to the network without experts, same threads and mode')
        print_table(['threads', 'mode', 'network', 'wall', 'cpu', 'wall ratio', 'cpu ratio'], network_rows(args))
    if 'c' in args.parts:
        torch.set_num_threads(args.threads[0])
        net = MEASNet().eval()
        print(f'(c) default MEASNet per component ({args.size}x{args.size})')
        print_table(['component', 'params (M)', 'GMACs', 'MACs %'], component_rows(net, args.size))
        print(f'parameters: {parameter_count(net):,} with AFLB, {parameter_count(MEASNet(use_aflb=False)):,} without '
              '(authors: 31,680,752 with AFLB)')
    if 'd' in args.parts and args.authors:
        print("(d) training step, ours against the authors' code (s); ratios to theirs")
        print_table(['threads', 'mode', 'network', 'wall', 'cpu', 'wall ratio', 'cpu ratio'], authors_rows(args))


if __name__ == '__main__':
    main()
