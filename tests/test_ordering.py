"""tweakflow.ordering: the greedy max-overlap order of groups."""

import numpy as np

from tweakflow.ordering import alignment_order, overlap_scores


def _square(ra0, dec0, size=0.01):
    return np.array([[ra0, dec0], [ra0 + size, dec0], [ra0 + size, dec0 + size], [ra0, dec0 + size]])


def _sources(ra0, dec0, n, rng, size=0.01):
    return np.c_[ra0 + rng.uniform(0, size, n), dec0 + rng.uniform(0, size, n)]


def test_overlap_scores_count_sources_inside_the_other_footprints():
    rng = np.random.default_rng(1)
    fps = [[_square(10.0, 0.0)], [_square(10.005, 0.0)], [_square(11.0, 0.0)]]
    src = [_sources(10.0, 0.0, 100, rng), _sources(10.005, 0.0, 100, rng), _sources(11.0, 0.0, 100, rng)]
    s = overlap_scores(fps, src)
    assert s[0, 1] == s[1, 0] and 60 < s[0, 1] < 140  # half of each group's sources fall in the other
    assert s[0, 2] == 0 and s[1, 2] == 0 and np.all(np.diag(s) == 0)


def test_alignment_order_starts_with_the_largest_overlap_and_grows():
    rng = np.random.default_rng(2)
    # a chain 0 - 1 - 2 - 3 with overlaps 25%, 75%, 50%; group 4 overlaps nothing
    offsets = [0.0, 0.0075, 0.01, 0.015]
    fps = [[_square(10.0 + o, 0.0)] for o in offsets] + [[_square(12.0, 0.0)]]
    src = [_sources(10.0 + o, 0.0, 200, rng) for o in offsets] + [_sources(12.0, 0.0, 200, rng)]
    order = alignment_order(fps, src)
    assert order[:2] in ([1, 2], [2, 1]) and set(order[2:4]) == {0, 3} and order[4] == 4


def test_no_overlap_keeps_the_input_order():
    rng = np.random.default_rng(3)
    fps = [[_square(10.0 + k, 0.0)] for k in range(3)]
    assert alignment_order(fps, [_sources(10.0 + k, 0.0, 10, rng) for k in range(3)]) == [0, 1, 2]
