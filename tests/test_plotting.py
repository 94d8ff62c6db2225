"""The readable trade-off plots (``basicsr_ea.plotting``): far outliers are clipped to the edge and named, the
non-dominated points are the ones ringed, and labels never cover each other."""
import itertools

import numpy as np
import torch

from basicsr_ea.models.ea_report import save_front_plot
from basicsr_ea.plotting import (Series, _overlaps, clip_to_fences, label_box, new_figure, non_dominated_mask,
                                 place_labels, plot_tradeoff)


def test_far_outliers_are_clipped_to_the_edge():
    values = [9.4, 10.3, 10.9, 11.1, 12.2, 12.6, 235.5]  # the demo's NIQE values with the diverged individual
    positions, outside, (low, high) = clip_to_fences(values)
    assert outside.tolist() == [False] * 6 + [True]
    assert positions[-1] == high and low < 9.4 and 12.6 < high < 13.5
    assert positions[:-1].tolist() == values[:-1]
    for unclipped in ([1.0, 2.0, 3.0, 4.0, 5.0], [7.0, 7.0, 7.0, 9.0], [1.0, 100.0, 3.0]):  # no far value; IQR 0; n<4
        positions, outside, _ = clip_to_fences(unclipped)
        assert not outside.any() and positions.tolist() == unclipped
    kept = [False] * 6 + [True]
    positions, outside, (low, high) = clip_to_fences(values, keep=kept)  # a kept value is never clipped
    assert not outside.any() and positions.tolist() == values and high > 235.5
    spanned = [9.4, 10.3, 10.9, 11.1, 12.2, 12.6, 13.0, 30.0, 40.0]  # 30 and 40 far; the kept 40 spans 30
    positions, outside, _ = clip_to_fences(spanned, keep=[False] * 8 + [True])
    assert not outside.any() and positions.tolist() == spanned
    assert clip_to_fences(spanned)[1].tolist() == [False] * 7 + [True, True]


def test_non_dominated_points_by_hand():
    points = [(10.0, 28.0), (11.0, 28.5), (12.0, 27.0), (10.0, 28.0), (9.0, 20.0)]  # (NIQE lower, PSNR higher)
    assert non_dominated_mask(points, [1, -1]).tolist() == [True, True, False, True, True]
    assert non_dominated_mask(points, [1, 1]).tolist() == [False, False, False, False, True]


def test_labels_do_not_overlap_each_other_or_the_markers():
    rng = np.random.default_rng(0)
    anchors = np.concatenate([np.full((6, 2), 100.0), rng.uniform(80, 140, (14, 2))])  # 6 coinciding, 14 near
    sizes = [(10 + 4 * (k % 5), 9) for k in range(len(anchors))]
    markers = [(x - 3.5, y - 3.5, x + 3.5, y + 3.5) for x, y in anchors]
    bounds = (0, 0, 400, 300)
    boxes = [label_box(a, s, o) for a, s, o in zip(anchors, sizes, place_labels(anchors, sizes, bounds, markers))]
    assert not any(_overlaps(a, b) for a, b in itertools.combinations(boxes, 2))
    assert not any(_overlaps(box, marker) for box in boxes for marker in markers)
    assert all(bounds[0] <= b[0] and bounds[1] <= b[1] and b[2] <= bounds[2] and b[3] <= bounds[3] for b in boxes)
    alone = place_labels([(200, 150)], [(10, 9)], bounds, [(196.5, 146.5, 203.5, 153.5)])
    assert alone == [(8, 8)]  # the nearest free place, up and right


def test_plot_reports_clipped_points_and_rings_the_front(tmp_path):
    fig, ax = new_figure(figsize=(6, 4.5))
    series = [Series('EA', np.array([[9.4, 12.0], [10.9, 28.1], [12.2, 27.7], [12.6, 27.9]]),
                     ['#0', '#1', '#2', '#3']),
              Series('Adam', np.array([[10.3, 28.1], [235.5, 23.0], [12.6, 27.9]]), ['#0', '#1', '#2'])]
    layout = plot_tradeoff(ax, series, [1, -1], ('NIQE (lower is better)', 'PSNR (dB)'))
    # EA #0 is far on PSNR too, but no point dominates it (the best NIQE): an end of the front stays in the plot
    assert [(name, tag) for name, tag, _, _ in layout.outliers] == [('Adam', '#1')]
    note = ax.get_xlabel().replace('\n', ' ')
    assert 'drawn at the edge (dominated' in note and 'Adam #1 (NIQE 235.5, PSNR 23)' in note
    assert layout.ringed == [[True, False, False, False], [True, False, False]]  # Adam #0 dominates EA #1
    assert ax.get_xlim()[1] < 20  # the outlier does not stretch the axis
    assert ax.get_ylim()[0] < 12.0  # the kept end is inside the axis
    assert not any(_overlaps(a, b) for a, b in itertools.combinations(layout.label_boxes, 2))


def test_ea_front_plot_is_written(tmp_path):
    before = torch.tensor([[0.05, 14.0], [0.06, 12.0], [0.07, 11.0], [0.08, 10.5], [0.09, 240.0]])
    after = before - torch.tensor([0.001, 0.5])
    signs = torch.tensor([1.0, 1.0])
    layout = save_front_plot(str(tmp_path / 'front.png'), ['l1', 'niqe'], before, after, signs, 'EA phase')
    assert (tmp_path / 'front.png').stat().st_size > 0
    assert [(name, tag) for name, tag, _, _ in layout.outliers] == [('before EA', '4'), ('after EA', '4')]
    assert layout.ringed == [[False] * 5, [True, True, True, True, False]]
