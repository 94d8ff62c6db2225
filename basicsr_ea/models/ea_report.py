"""What a user sees after an EA phase: the objectives table, the front's hypervolume and a plot of the front."""
import torch

from basicsr_ea.evolution import hypervolume_2d
from basicsr_ea.plotting import Series, new_figure, plot_tradeoff, save_figure


def normalized_hypervolumes(*fronts, margin=0.1):
    """Hypervolume of each ``[P, 2]`` front (minimisation) after scaling all of them together to [0, 1] by their
    joint ideal and nadir, with the reference point ``1 + margin``: comparable across the fronts given together."""
    stacked = torch.cat(fronts)
    ideal, nadir = stacked.amin(0), stacked.amax(0)
    scale = (nadir - ideal).clamp_min(1e-12)
    return [hypervolume_2d((front - ideal) / scale, (1 + margin, 1 + margin)) for front in fronts]


def objectives_table(names, before, after, signs):
    """Markdown table of every individual's objectives before and after the phase, in the metrics' own units."""
    header = '| individual | ' + ' | '.join(f'{n} before | {n} after' for n in names) + ' |'
    rows = [header, '|' + '---|' * (1 + 2 * len(names))]
    for i, (row_before, row_after) in enumerate(zip(before * signs, after * signs)):
        cells = ' | '.join(f'{b:.4f} | {a:.4f}' for b, a in zip(row_before.tolist(), row_after.tolist()))
        rows.append(f'| {i} | {cells} |')
    return '\n'.join(rows)


def save_front_plot(path, names, before, after, signs, title):
    """The population before and after the phase in the objectives' own units, one point per individual (its
    index beside it), each set's non-dominated points joined, outliers at the edge (``plotting.plot_tradeoff``)."""
    series = [Series(label, (front * signs).numpy(), [str(i) for i in range(len(front))], marker)
              for front, label, marker in ((before, 'before EA', 'o'), (after, 'after EA', 's'))]
    fig, ax = new_figure(figsize=(6, 4.5))
    layout = plot_tradeoff(ax, series, signs.tolist(), tuple(names))
    ax.set_title(title)
    save_figure(fig, path, dpi=100)
    return layout
