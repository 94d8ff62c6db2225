"""Evaluate checkpoints on test sets and write the papers' table (markdown, CSV) and perception-distortion plots.

    python scripts/evaluate.py -opt options/eval_demo.yml [--results_root results] [--no_progress]

Writes ``<results_root>/<name>/table.md``, ``table.csv`` and ``pd_<dataset>.png``; prints the markdown table.
Relative paths in the options are read from the working directory, as BasicSR's are.
"""
import argparse
import os

import basicsr_ea  # noqa: F401  (repairs BasicSR, registers the plugin's archs and metrics)
from basicsr_ea.evaluation import evaluate, load_options
from basicsr_ea.cli import run
from basicsr_ea.evaluation.report import markdown
from basicsr_ea.options import OptionError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('-opt', required=True, help='evaluation options (YAML), e.g. options/eval_demo.yml')
    parser.add_argument('--results_root', default=os.path.join(REPO_ROOT, 'results'))
    parser.add_argument('--no_progress', action='store_true', help='no progress bar')
    parser.add_argument('--debug', action='store_true', help='tracebacks instead of one-line errors')
    args = parser.parse_args(argv)
    run(lambda: report(args), argv)


def report(args):
    opt = load_options(args.opt)
    try:
        table = evaluate(opt, args.results_root, progress=not args.no_progress)
    except OptionError as err:
        raise OptionError(f'{args.opt}: {err}') from err
    print(markdown(table))
    folder = os.path.join(args.results_root, opt['name'])
    print(f'Written to {folder}: table.md, table.csv', end='')
    for dataset, plot in table.plots.items():
        print(f', {os.path.basename(plot[0])}' if isinstance(plot, tuple) else f'\n{dataset} plot {plot}', end='')
    print()


if __name__ == '__main__':
    main()
