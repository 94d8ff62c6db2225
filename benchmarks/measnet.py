"""MEASNet on the CPU: what the sparse experts cost and where the parameters and MACs of the default network are.

    python benchmarks/measnet.py [--repeats 3] [--size 256] [--threads N]

(a) STP-G-MESE expert dispatch, sparse (each expert on its own tokens) against dense (every expert on every token,
    unselected ones weighted 0), on the token count and width of each encoder level at --size, same tokens and
    gates; (b) latency of the default network (eval, batch 1, no_grad) against the same network without experts
    (no prompt, STP-G-MESE or FD-MEE; same widths, blocks and AFLB); (c) parameters and MACs per component.
MACs are those of convolutions and matrix products (torch's FlopCounterMode / 2): FFTs and element-wise ops are
not counted. Times are medians of --repeats runs after one warm-up run, wall clock and process CPU time.
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
    parser.add_argument('--repeats', type=int, default=3, help='timed runs per measurement (after one warm-up)')
    parser.add_argument('--size', type=int, default=256, help='input height and width')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads(), help='torch CPU threads')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f'torch {torch.__version__}, {args.threads} CPU threads, input {args.size}x{args.size}, '
          f'median of {args.repeats}\n')

    print('(a) STP-G-MESE expert dispatch, 6 experts, top-2, forward: sparse, then dense (ms)')
    print_table(['level', 'tokens', 'C', 'wall', 'cpu', 'wall/dense', 'cpu/dense', 'dense wall', 'dense cpu'],
                dispatch_rows(args.size, args.repeats))

    net = MEASNet().eval()
    plain = MEASNet(stp_levels=[], use_fdmee=False).eval()
    x = torch.rand(1, 3, args.size, args.size)
    with torch.no_grad():
        times = [median_times(lambda: model(x), args.repeats) for model in (net, plain)]
    rows = [[name, f'{parameter_count(model) / 1e6:.2f}'] + timing_cells(t, times[1])
            for name, model, t in (('MEASNet (default)', net, times[0]), ('without experts', plain, times[1]))]
    print('(b) whole network, eval, batch 1, no_grad (s); ratios to the network without experts')
    print_table(['network', 'params (M)', 'wall', 'cpu', 'wall ratio', 'cpu ratio'], rows)

    print(f'(c) default MEASNet per component ({args.size}x{args.size})')
    print_table(['component', 'params (M)', 'GMACs', 'MACs %'], component_rows(net, args.size))
    print(f'parameters: {parameter_count(net) / 1e6:.2f} M with AFLB, '
          f'{parameter_count(MEASNet(use_aflb=False)) / 1e6:.2f} M without '
          '(authors: 31.68 M with AFLB)')


if __name__ == '__main__':
    main()
