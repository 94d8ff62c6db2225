"""Evaluate checkpoints on test sets in the papers' protocols and write their tables (rows = models, columns =
dataset x metric) as markdown and CSV, with a perception-distortion plot per dataset.

Protocols: ``sr`` (PSNR/SSIM on the Y channel with a ``scale``-pixel border crop, LPIPS, DISTS, NIQE: what the
EA-Adam paper reports) and ``allinone`` (PSNR/SSIM on RGB without crop, per task and averaged over the tasks: what
MEASNet's reports). Images are read and metrics computed as BasicSR's own ``SRModel`` validation does
(``PairedImageDataset``, ``tensor2img``, ``calculate_metric``), so a PSNR here is the PSNR a BasicSR test run logs
for the same checkpoint. Options: ``options/eval_demo.yml``; entry point ``scripts/evaluate.py``.
"""
import os

import yaml

from basicsr_ea.evaluation.runner import AVERAGE, PROTOCOLS, EvalTable, run_evaluation

__all__ = ['AVERAGE', 'PROTOCOLS', 'EvalTable', 'evaluate', 'load_options', 'run_evaluation']


def load_options(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f'Options file {path} does not exist.')
    with open(path, encoding='utf-8') as f:
        return yaml.safe_load(f)


def evaluate(opt, results_root, progress=True):
    """Run the evaluation ``opt`` describes and write ``table.md``, ``table.csv`` and ``pd_<dataset>.png`` to
    ``results_root/<name>``. Every input is checked before the first network runs."""
    from basicsr_ea.evaluation.report import save_pd_plots, write_tables  # matplotlib only when writing
    table = run_evaluation(opt, progress=progress)
    folder = os.path.join(results_root, opt['name'])
    os.makedirs(folder, exist_ok=True)
    write_tables(table, folder)
    table.plots = save_pd_plots(table, folder)
    return table
