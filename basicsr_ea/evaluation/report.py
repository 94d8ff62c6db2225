"""What an evaluation leaves in ``results/<name>/``: ``table.md`` (the papers' layout, best value per column in
bold, each metric's exact settings below), ``table.csv`` (full precision) and ``pd_<dataset>.png``."""
import csv
import io
import os
import re

import numpy as np

from basicsr_ea.evaluation.runner import AVERAGE
from basicsr_ea.files import write_text_atomic
from basicsr_ea.plotting import Series, new_figure, plot_tradeoff, save_figure

PERCEPTION_TYPES = ('calculate_lpips', 'calculate_niqe')  # the plot's x axis: LPIPS where it has values, else NIQE


def column_title(table, dataset, metric, arrows):
    m = table.metrics[metric]
    return f'{dataset} {m.title}' + (('↑' if m.better == 'higher' else '↓') if arrows else '')


def best_values(table):
    best = {}
    for col in table.columns:
        numbers = [table.cells[label][col] for label in table.labels if not isinstance(table.cells[label][col], str)]
        if numbers:
            best[col] = (max if table.metrics[col[1]].better == 'higher' else min)(numbers)
    return best


def markdown(table):
    header = ['Model'] + [column_title(table, d, m, arrows=True) for d, m in table.columns]
    lines = ['| ' + ' | '.join(header) + ' |', '|---|' + '---:|' * len(table.columns)]
    best = best_values(table) if len(table.labels) > 1 else {}
    reasons = []  # each distinct 'n/a: why' once, below the table, as a numbered note
    for label in table.labels:
        cells = [label]
        for col in table.columns:
            value = table.cells[label][col]
            if isinstance(value, str):
                if value not in reasons:
                    reasons.append(value)
                cells.append(f'n/a ({reasons.index(value) + 1})')
            else:
                text = f'{value:.{table.metrics[col[1]].digits}f}'
                cells.append(f'**{text}**' if value == best.get(col) else text)
        lines.append('| ' + ' | '.join(cell.replace('|', '\\|') for cell in cells) + ' |')
    notes = [f'({i}) {reason}' for i, reason in enumerate(reasons, 1)]
    settings = [f'- {m.title}: ' + ', '.join(f'{k}={v}' for k, v in m.opt.items()) for m in table.metrics.values()]
    return (f'# {table.name} (protocol {table.protocol})\n\n' + '\n'.join(lines + [''] + notes + [''] * bool(notes) +
                                                                         settings) + '\n')


def write_tables(table, folder):
    write_text_atomic(os.path.join(folder, 'table.md'), markdown(table))
    rows = io.StringIO(newline='')
    writer = csv.writer(rows)
    writer.writerow(['model'] + [column_title(table, d, m, arrows=False) for d, m in table.columns])
    for label in table.labels:
        writer.writerow([label] + [table.cells[label][col] for col in table.columns])
    write_text_atomic(os.path.join(folder, 'table.csv'), rows.getvalue())


def plotted_metric(table, dataset, types):
    """The first metric of one of ``types`` (in that order) with a value for every model on ``dataset``."""
    for metric_type in types:
        for name, metric in table.metrics.items():
            cells = [table.cells[label][(dataset, name)] for label in table.labels]
            if metric.opt['type'] == metric_type and not any(isinstance(v, str) for v in cells):
                return name
    return None


def short_tags(labels):
    """What tells a front's labels apart beside its points: each label without the words all of them share in
    front (``EA-Adam #2`` -> ``#2``, ``Interpolation, alpha 0.3`` -> ``0.3``)."""
    if len(labels) == 1:
        return [labels[0].split()[-1]]
    prefix = os.path.commonprefix(labels)
    cut = prefix.rfind(' ') + 1
    return [label[cut:] or label for label in labels]


def save_pd_plot(path, table, dataset, distortion, perception):
    """Every model as a point (perception metric across, PSNR up): a front per population (and per
    ``front_label``), its own non-dominated points joined; other models in the legend; outliers at the edge
    (``plotting.plot_tradeoff``). Returns the ``TradeoffLayout``."""
    point = {label: (table.value(label, dataset, perception), table.value(label, dataset, distortion))
             for label in table.labels}
    in_front = {label for labels in table.fronts.values() for label in labels}
    series = [Series(front, np.array([point[label] for label in labels]), short_tags(labels))
              for front, labels in table.fronts.items()]
    markers = 'sDPX*hv'
    series += [Series(label, np.array([point[label]]), [''], markers[k % len(markers)], line=False)
               for k, label in enumerate(label for label in table.labels if label not in in_front)]
    p_metric, d_metric = table.metrics[perception], table.metrics[distortion]
    senses = [1 if metric.better == 'lower' else -1 for metric in (p_metric, d_metric)]
    fig, ax = new_figure(figsize=(8, 6))
    layout = plot_tradeoff(ax, series, senses, (f'{p_metric.title} ({p_metric.better} is better)',
                                                f'{d_metric.title} (dB, {d_metric.better} is better)'))
    ax.set_title(f'{table.name}: {dataset}, perception-distortion')
    save_figure(fig, path, dpi=120)
    return layout


def save_pd_plots(table, folder):
    """One plot per dataset; a dataset without PSNR and LPIPS/NIQE values for every model gets the reason."""
    plots, datasets = {}, dict.fromkeys(d for d, _ in table.columns)
    if table.protocol == 'allinone':
        datasets.pop(AVERAGE)
    for dataset in datasets:
        distortion = plotted_metric(table, dataset, ('calculate_psnr', ))
        perception = plotted_metric(table, dataset, PERCEPTION_TYPES)
        if distortion is None or perception is None:
            plots[dataset] = 'n/a: no PSNR, or neither LPIPS nor NIQE, with a value for every model'
            continue
        path = os.path.join(folder, f'pd_{re.sub(r"[^A-Za-z0-9_.-]", "_", dataset)}.png')
        save_pd_plot(path, table, dataset, distortion, perception)
        plots[dataset] = (path, perception)
    return plots
