"""Order in which exposure groups are aligned when the reference catalog grows.

With ``expand_refcat`` on and ``enforce_user_order`` off, tweakreg aligns
first the pair of groups that overlap most, then, one at a time, the group
that overlaps most with everything aligned so far. tweakwcs finds that order
with exact spherical-polygon intersections of every pair at every step,
which takes seconds for eight images and grows as the cube of the number of
groups (about a minute for fifty images). Here the same greedy order is
found from a cheaper and more relevant overlap measure: the number of
catalog sources of one group that fall inside the footprint of the other,
computed only for groups whose footprints can touch, on one tangent plane.
"""

from __future__ import annotations

import numpy as np

from .geometry import gnomonic, mean_direction

__all__ = ["alignment_order", "overlap_scores"]


def overlap_scores(footprints, sources):
    """Pairwise overlap scores of groups.

    Parameters
    ----------
    footprints : list of list of numpy.ndarray
        Per group, the (N, 2) RA/Dec corner arrays of its images.
    sources : list of numpy.ndarray
        Per group, the (M, 2) RA/Dec of its catalog sources.

    Returns
    -------
    numpy.ndarray
        Symmetric (G, G) matrix: sources of one group inside the footprint
        of the other, summed both ways; zero on the diagonal and for groups
        whose footprints cannot touch.
    """
    from matplotlib.path import Path
    from scipy.spatial import cKDTree

    ngroups = len(footprints)
    allc = np.vstack([np.vstack(f) for f in footprints])
    ra0, dec0 = mean_direction(allc[:, 0], allc[:, 1])
    polys, centers, radii, pts = [], [], [], []
    for fps, src in zip(footprints, sources):
        gp = [np.column_stack(gnomonic(f[:, 0], f[:, 1], ra0, dec0)) for f in fps]
        corners = np.vstack(gp)
        c = corners.mean(axis=0)
        polys.append([Path(p) for p in gp])
        centers.append(c)
        radii.append(float(np.max(np.hypot(*(corners - c).T))))
        s = np.asarray(src, float).reshape(-1, 2)
        pts.append(np.column_stack(gnomonic(s[:, 0], s[:, 1], ra0, dec0)) if len(s) else np.zeros((0, 2)))
    scores = np.zeros((ngroups, ngroups))
    if ngroups < 2:
        return scores
    pairs = cKDTree(np.array(centers)).query_pairs(2.0 * max(radii))
    for a, b in pairs:
        if np.hypot(*(centers[a] - centers[b])) > radii[a] + radii[b]:
            continue
        n = 0
        for src, target in ((pts[a], polys[b]), (pts[b], polys[a])):
            if len(src):
                inside = np.zeros(len(src), dtype=bool)
                for path in target:
                    inside |= path.contains_points(src)
                n += int(inside.sum())
        scores[a, b] = scores[b, a] = n
    return scores


def alignment_order(footprints, sources):
    """Greedy max-overlap order of groups (indices), first the reference.

    The first two are the pair with the largest overlap score, the one with
    the larger total overlap first (it becomes the reference); each next
    group is the one overlapping most with all groups already placed. Groups
    that overlap nothing placed so far follow in their input order.
    """
    scores = overlap_scores(footprints, sources)
    n = len(scores)
    if n < 2 or not np.any(scores > 0):
        return list(range(n))
    i, j = np.unravel_index(np.argmax(scores), scores.shape)
    if scores[i].sum() < scores[j].sum():
        i, j = j, i
    order = [int(i), int(j)]
    placed = np.zeros(n, dtype=bool)
    placed[[i, j]] = True
    total = scores[i] + scores[j]
    while not placed.all():
        cand = np.where(placed, -1.0, total)
        k = int(np.argmax(cand))  # first index among ties: input order
        order.append(k)
        placed[k] = True
        total = total + scores[k]
    return order
