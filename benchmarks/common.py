"""What the benchmarks over seeds share: running a project script as a step, their arguments, mean +- std cells and
the markdown report written where it is printed."""
import argparse
import os
import statistics
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
    """Run a step quietly; on failure show the end of its log."""
    print('$', ' '.join(args), flush=True)
    proc = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f'step failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}')


def mean_std(values, digits):
    return f'{statistics.mean(values):.{digits}f} +- {statistics.stdev(values):.{digits}f}'


def seeds_parser(doc, iters, tag, out):
    """The arguments of a benchmark over seeds (read them with ``parse_seed_args``); its description is the first
    paragraph of ``doc``."""
    parser = argparse.ArgumentParser(description=doc.split('\n\n')[0])
    parser.add_argument('--iters', type=int, default=iters, help='gradient steps of every run')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2], help='seeds of the runs (>= 2)')
    parser.add_argument('--tag', default=tag, help='prefix of the experiment names')
    parser.add_argument('--out', default=out, help='markdown report')
    return parser


def parse_seed_args(parser, argv):
    args = parser.parse_args(argv)
    if len(args.seeds) < 2:
        parser.error('--seeds: at least two, for a standard deviation')
    return args


def publish(text, out):
    """Print the markdown report and write it to ``out``."""
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, 'w', encoding='utf-8') as f:
        f.write(text)
