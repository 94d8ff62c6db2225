"""Peak memory of restoring one large image, in one pass and tile by tile (the ``tile`` option).

    python benchmarks/tiled_memory.py [--archs MEASNet RRDB] [--size 2048] [--device cpu|cuda] [--threads N]

The networks are the paper-scale ones: MEASNet's default configuration (``options/test_MEASNet_3task.yml``) on a
``--size`` x ``--size`` image, and the x4 RRDBNet (64 features, 23 blocks) that ``scripts/collapse_fusion.py``
writes for the EA-Adam population (a plain ``RRDBNet`` checkpoint), restoring a ``--size`` x ``--size`` output from
its ``--size / 4`` LR image (``--rrdb_lr_size`` sets the LR side instead). Random weights: memory and time do not
depend on the values. Each case runs in a fresh process (peak memory is a per-process high-water mark), through
``basicsr_ea.tiling.restore``, eval mode, no_grad, batch 1. Memory: on the CPU the process's peak resident set
(``ru_maxrss``) minus its resident set just before the forward (network and input loaded); on CUDA the peak of
``torch.cuda.max_memory_allocated`` minus the allocation before it. Reported as MB and as the ratio tiled/one pass.
"""
import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import basicsr_ea  # noqa: E402,F401  (repairs BasicSR, registers MEASNet)
from basicsr.archs import build_network  # noqa: E402

from basicsr_ea.tiling import restore  # noqa: E402

NETWORKS = {
    'MEASNet': ({'type': 'MEASNet'}, 1),
    'RRDB': ({'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_block': 23,
              'num_grow_ch': 32, 'scale': 4}, 4),
}


def resident_bytes():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def run_case(arch, input_size, tile, device):
    """One restoration in this process: {seconds, peak_mb (above the pre-forward state), output shape}."""
    network, scale = NETWORKS[arch]
    net = build_network(dict(network)).to(device).eval()
    lq = torch.rand(1, 3, input_size, input_size, generator=torch.Generator().manual_seed(0)).to(device)
    if device.type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = resident_bytes()
    start = time.perf_counter()
    with torch.no_grad():
        output = restore(net, lq, tile, scale)
    if device.type == 'cuda':
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {'seconds': time.perf_counter() - start, 'peak_mb': (peak - before) / 2**20,
            'output': list(output.shape[-2:])}


def run_in_fresh_process(arch, input_size, tile, args):
    cmd = [sys.executable, os.path.abspath(__file__), '--case', arch, str(input_size), json.dumps(tile),
           '--device', args.device, '--threads', str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == -signal.SIGKILL:
        return {'error': 'killed by SIGKILL (out of memory, most likely)'}
    if proc.returncode != 0:
        return {'error': (proc.stderr.strip().splitlines() or [f'exit status {proc.returncode}'])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--archs', nargs='+', default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument('--size', type=int, default=2048, help='side of the restored image')
    parser.add_argument('--rrdb_lr_size', type=int, help='LR side for RRDB (default --size / 4)')
    parser.add_argument('--measnet_tile', type=int, nargs=2, default=[256, 32], metavar=('SIZE', 'PAD'))
    parser.add_argument('--rrdb_tile', type=int, nargs=2, default=[128, 16], metavar=('SIZE', 'PAD'),
                        help='in LR pixels')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--case', nargs=3, help=argparse.SUPPRESS)  # arch, input size, tile (JSON): one run
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.case:
        arch, input_size, tile = args.case
        print(json.dumps(run_case(arch, int(input_size), json.loads(tile), torch.device(args.device))))
        return
    memory_gb = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30
    print(f'device {args.device}, {args.threads} thread(s), {memory_gb:.1f} GiB of memory\n')
    for arch in args.archs:
        input_size = args.size if arch == 'MEASNet' else (args.rrdb_lr_size or args.size // 4)
        tile_size, tile_pad = args.measnet_tile if arch == 'MEASNet' else args.rrdb_tile
        tile = {'tile_size': tile_size, 'tile_pad': tile_pad}
        results = {'one pass': run_in_fresh_process(arch, input_size, None, args),
                   f'tiles {tile_size}, overlap {tile_pad}': run_in_fresh_process(arch, input_size, tile, args)}
        print(f'{arch}: input {input_size}x{input_size}')
        one_pass = results['one pass']
        for what, result in results.items():
            if 'error' in result:
                print(f'  {what:24s} failed: {result["error"]}')
                continue
            line = (f'  {what:24s} output {result["output"][0]}x{result["output"][1]}  peak {result["peak_mb"]:9.1f} '
                    f'MB  {result["seconds"]:8.1f} s')
            if what != 'one pass' and 'error' not in one_pass:
                line += (f'  (x{result["peak_mb"] / one_pass["peak_mb"]:.3f} memory, '
                         f'x{result["seconds"] / one_pass["seconds"]:.2f} time of one pass)')
            print(line)
        print()


if __name__ == '__main__':
    main()
