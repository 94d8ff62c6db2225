"""How the limit on replacements per child (``train.ea.max_replacements``, MOEA/D-DE's ``nr``) keeps the population
apart: the demo's EA-Adam run once per limit, the same seed, data and start model.

    python benchmarks/ea_replacement_limit.py [--iters 120] [--tag EAnr]

Reads each phase's report (``ea/objectives_<iter>.md``) and prints, per limit and per phase, how many individuals
are distinct before and after the phase, and the hypervolumes on the fitness set of the population and of the
archive before and after it (normalised jointly within a phase, so comparable along a row only). Reports what it
measures, whichever way it comes out.
"""
import argparse
import os
import re

from common import REPO_ROOT, run
from ea_vs_adam import ensure_start_model

LIMITS = ('1', '2', '~')  # '~': no limit, the authors' loop


def phase_reports(name):
    """``{iter: (distinct before, distinct after, population HV before, after, archive HV before, after)}``."""
    folder = os.path.join(REPO_ROOT, 'experiments', name, 'ea')
    reports = {}
    for file in os.listdir(folder):
        match = re.fullmatch(r'objectives_(\d+)\.md', file)
        if match is None:
            continue
        with open(os.path.join(folder, file)) as f:
            text = f.read()
        distinct = re.search(r'distinct individuals: before (\d+), after (\d+)', text).groups()
        population = re.search(r'population before ([\d.]+), after ([\d.]+)', text).groups()
        archive = re.search(r'archive: .*hypervolume before ([\d.]+), after ([\d.]+)', text).groups()
        reports[int(match[1])] = (*map(int, distinct), *map(float, population + archive))
    return dict(sorted(reports.items()))


def table_rows(limit, name):
    return [f'| {"none" if limit == "~" else limit} | {it} | {before} -> {after} | {hv[0]:.4f} -> {hv[1]:.4f} | '
            f'{hv[2]:.4f} -> {hv[3]:.4f} |' for it, (before, after, *hv) in phase_reports(name).items()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--iters', type=int, default=120, help='gradient steps (an EA phase every 40)')
    parser.add_argument('--tag', default='EAnr', help='prefix of the experiment names')
    args = parser.parse_args(argv)
    os.chdir(REPO_ROOT)
    ensure_start_model()
    print('| max_replacements | EA phase at iter | distinct before -> after | population HV before -> after | '
          'archive HV before -> after |')
    print('|---|---|---|---|---|')
    for limit in LIMITS:
        name = f'{args.tag}_{"none" if limit == "~" else limit}'
        run('basicsr_ea/train.py', '-opt', 'options/train_EAAdam_demo.yml', '--force_yml', f'name={name}',
            f'train:total_iter={args.iters}', f'train:ea:max_replacements={limit}')
        print('\n'.join(table_rows(limit, name)), flush=True)


if __name__ == '__main__':
    main()
