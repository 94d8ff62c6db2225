"""Figures drawn with matplotlib's object-oriented API (``matplotlib.figure.Figure``, no pyplot), so this project
never chooses or changes the process's backend (a user's notebook or GUI keeps its own), written atomically.

``plot_tradeoff`` draws two-objective points (the evaluation's perception-distortion plot, the EA phases' fronts) so
that a person can read them: a diverged model far from the others is drawn at the plot's edge and named in a note
instead of squashing every other point into a corner (Tukey's far fences, ``clip_to_fences``; a point no other
dominates is never clipped), the points no other point dominates are ringed (``non_dominated_mask``), each method's
own front is a line, and the labels are placed where they cover neither each other nor a point (``place_labels``).
The layout functions are pure, and tested so.
"""
import io
import textwrap
from dataclasses import dataclass, field

import numpy as np
import torch
from matplotlib.figure import Figure

from basicsr_ea.evolution.pareto import non_dominated_sort
from basicsr_ea.files import write_atomic

TUKEY_K = 3.0  # Tukey's far fences: points beyond Q1 - 3 IQR or Q3 + 3 IQR are "far out"
LABEL_RADII = (3, 8, 14, 22, 32, 45, 60, 80)  # label offsets tried, in points, nearest first
DIRECTIONS = ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))
MARKER_SIZE = 7  # points: the box every marker keeps free of labels


def new_figure(figsize):
    """(figure, axes) of one plot."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def save_figure(fig, path, dpi=120):
    """PNG of ``fig`` at ``path``, written atomically (a failed write names the file)."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=dpi)
    write_atomic(path, buffer.getvalue())


def clip_to_fences(values, k=TUKEY_K, margin=0.08, keep=None):
    """``(positions, outside, (low, high))`` for one axis: ``outside`` marks the values beyond Tukey's fences
    (``k`` IQR outside the quartiles) but not in ``keep`` (bool mask: values never clipped), the axis spans the
    others (widened by ``margin`` of their range) and ``positions`` are the values clamped to it, so an outlier sits
    on the edge; a far value inside that span is not outside. Fewer than four values, or no spread between the
    quartiles, clip nothing: there is no robust scale to call a value far by."""
    values = np.asarray(values, dtype=np.float64)
    q1, q3 = np.percentile(values, [25, 75])
    iqr = q3 - q1
    outside = np.zeros(values.shape, dtype=bool)
    if len(values) >= 4 and iqr > 0:
        outside = (values < q1 - k * iqr) | (values > q3 + k * iqr)
    if keep is not None:
        outside &= ~np.asarray(keep, dtype=bool)
    low, high = values[~outside].min(), values[~outside].max()
    pad = margin * ((high - low) or abs(high) or 1.0)
    low, high = low - pad, high + pad
    outside &= (values < low) | (values > high)  # a far value the kept ones span anyway is drawn where it lies
    return np.clip(values, low, high), outside, (low, high)


def non_dominated_mask(points, senses):
    """Bool ``[N]``: no other point of ``points [N, 2]`` is at least as good everywhere and better somewhere.
    ``senses`` per column: 1 where lower is better, -1 where higher is. Equal points do not dominate each other."""
    minimised = torch.as_tensor(np.asarray(points, dtype=np.float64) * np.asarray(senses, dtype=np.float64))
    mask = np.zeros(len(minimised), dtype=bool)
    mask[non_dominated_sort(minimised)[0]] = True
    return mask


def _overlaps(a, b):
    """Boxes ``(x0, y0, x1, y1)`` intersect (touching edges do not)."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def label_box(anchor, size, offset):
    """The box of a label of ``size (w, h)`` placed at ``offset`` from ``anchor``: the offset's signs say on which
    side of the anchor the box lies (0: centred on that axis)."""
    (x, y), (w, h), (dx, dy) = anchor, size, offset
    x0 = x + dx if dx > 0 else x + dx - w if dx < 0 else x - w / 2
    y0 = y + dy if dy > 0 else y + dy - h if dy < 0 else y - h / 2
    return x0, y0, x0 + w, y0 + h


def place_labels(anchors, sizes, bounds, obstacles=()):
    """Offsets ``(dx, dy)`` (points) of each label from its anchor (points), chosen greedily in order: the nearest
    of ``LABEL_RADII`` x ``DIRECTIONS`` whose box stays in ``bounds (x0, y0, x1, y1)`` and covers no label placed
    before and no obstacle box (the markers); a label with no free place takes the nearest in bounds."""
    placed, offsets = list(obstacles), []
    for anchor, size in zip(anchors, sizes):
        candidates = [(r * dx, r * dy) for r in LABEL_RADII for dx, dy in DIRECTIONS]
        inside = [c for c in candidates if _inside(label_box(anchor, size, c), bounds)] or candidates[:1]
        free = next((c for c in inside if not any(_overlaps(label_box(anchor, size, c), box) for box in placed)),
                    inside[0])
        offsets.append(free)
        placed.append(label_box(anchor, size, free))
    return offsets


def _inside(box, bounds):
    return bounds[0] <= box[0] and bounds[1] <= box[1] and box[2] <= bounds[2] and box[3] <= bounds[3]


@dataclass
class Series:
    """One method's points ``[N, 2]`` in the axes' units, the tag written beside each (empty: none), and whether
    its own front is drawn as a line."""
    name: str
    points: np.ndarray
    tags: list
    marker: str = 'o'
    line: bool = True


@dataclass
class TradeoffLayout:
    """What ``plot_tradeoff`` drew: the outliers named in the note (name, tag, x, y), which points are
    ringed (per series, in order), and the label boxes in points."""
    outliers: list = field(default_factory=list)
    ringed: list = field(default_factory=list)
    label_boxes: list = field(default_factory=list)


def plot_tradeoff(ax, series, senses, titles, fontsize=7):
    """Draw ``series`` on ``ax`` (x: ``titles[0]``, y: ``titles[1]``; ``senses`` as in ``non_dominated_mask``);
    returns the ``TradeoffLayout``. Each series' points are joined dotted in their order (preference, alpha; not
    through outliers) and its own non-dominated points by a solid line. The outlier note is the x label's second
    line."""
    points = np.concatenate([np.asarray(s.points, dtype=np.float64).reshape(-1, 2) for s in series])
    # A non-dominated point is never clipped: the front's ends are what the plot is for, and a tight cluster (an
    # interpolation curve, coinciding frozen individuals) would otherwise make them "far" by the IQR.
    ringed = non_dominated_mask(points, senses)
    clipped = [clip_to_fences(points[:, axis], keep=ringed) for axis in (0, 1)]
    shown = np.stack([clipped[0][0], clipped[1][0]], axis=1)
    outside = clipped[0][1] | clipped[1][1]
    layout, start = TradeoffLayout(), 0
    for k, s in enumerate(series):
        color, end = f'C{k % 10}', start + len(s.tags)
        xy, out = shown[start:end], outside[start:end]
        ax.scatter(*xy[~out].T, marker=s.marker, color=color, zorder=3, label=s.name, s=28)
        for (x, y), i in zip(xy[out], np.flatnonzero(out) + start):
            ax.scatter(x, y, marker=_edge_marker(points[i], shown[i]), color=color, zorder=3, s=40, clip_on=False)
        if s.line and len(s.tags) > 1:
            ax.plot(*np.where(out[:, None], np.nan, xy).T, color=color, linewidth=0.7, linestyle=':', zorder=2)
            front = np.flatnonzero(non_dominated_mask(points[start:end], senses))
            front = front[np.argsort(xy[front, 0])]
            ax.plot(*xy[front].T, color=color, linewidth=1.2, zorder=2)
        layout.ringed.append(ringed[start:end].tolist())
        layout.outliers += [(s.name, s.tags[i - start], *points[i]) for i in np.flatnonzero(out) + start]
        start = end
    ax.scatter(*shown[ringed].T, s=150, facecolors='none', edgecolors='black', linewidths=1.0, zorder=4,
               clip_on=False, label='non-dominated (all points)')
    ax.set_xlim(*clipped[0][2])
    ax.set_ylim(*clipped[1][2])
    layout.label_boxes = _draw_labels(ax, series, shown, fontsize)
    note = ''
    if layout.outliers:
        x_name, y_name = (title.split()[0] for title in titles)
        named = ', '.join(f'{name} {tag} ({x_name} {x:.4g}, {y_name} {y:.4g})'.replace('  ', ' ')
                          for name, tag, x, y in layout.outliers)
        note = '\n' + textwrap.fill(f'drawn at the edge (dominated, beyond {TUKEY_K:g} IQR, Tukey): {named}', 90)
    ax.set_xlabel(titles[0] + note)
    ax.set_ylabel(titles[1])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=fontsize)
    return layout


def _edge_marker(value, shown):
    """A triangle pointing to where a clipped point really lies."""
    if value[0] != shown[0]:
        return '>' if value[0] > shown[0] else '<'
    return '^' if value[1] > shown[1] else 'v'


def _draw_labels(ax, series, shown, fontsize):
    """Tags beside their points, coinciding points' tags joined by '='; placed by ``place_labels`` in points."""
    fig = ax.figure
    fig.tight_layout()  # the axes' final extent, so that distances in points hold in the saved image
    to_points = 72 / fig.dpi
    anchors_px = ax.transData.transform(shown) * to_points
    groups = {}
    k = 0
    for number, s in enumerate(series):
        for tag in s.tags:
            if tag:
                groups.setdefault(tuple(np.round(shown[k], 12)), []).append((tag, f'C{number % 10}'))
            k += 1
    bbox = ax.get_window_extent()
    bounds = (bbox.x0 * to_points, bbox.y0 * to_points, bbox.x1 * to_points, bbox.y1 * to_points)
    half = MARKER_SIZE / 2
    obstacles = [(x - half, y - half, x + half, y + half) for x, y in anchors_px]
    keys = list(groups)
    texts = [' = '.join(dict.fromkeys(tag for tag, _ in groups[key])) for key in keys]
    anchors = ax.transData.transform(np.array(keys, dtype=np.float64).reshape(-1, 2)) * to_points
    sizes = [(0.6 * fontsize * len(text) + 2, 1.25 * fontsize) for text in texts]
    offsets = place_labels(anchors, sizes, bounds, obstacles)
    for key, text, (dx, dy) in zip(keys, texts, offsets):
        color = groups[key][0][1] if len({c for _, c in groups[key]}) == 1 else 'black'
        ax.annotate(text, key, xytext=(dx, dy), textcoords='offset points', fontsize=fontsize, color=color,
                    ha='left' if dx > 0 else 'right' if dx < 0 else 'center',
                    va='bottom' if dy > 0 else 'top' if dy < 0 else 'center',
                    arrowprops={'arrowstyle': '-', 'color': color, 'lw': 0.5} if max(abs(dx), abs(dy)) > 8 else None)
    return [label_box(a, size, o) for a, size, o in zip(anchors, sizes, offsets)]
