# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
One-to-one cross-matching of detections to the truth catalogue.

Matching rule (the benchmark protocol)
--------------------------------------
A detection *may* match a truth source (a candidate pair) when

1. its centroid lies within ``radius`` pixels of the truth position
   (default ``max(1.0 * fwhm, 2)`` px, or 3 px when no FWHM is given); or
2. *footprint rule*, for extended sources, when ``truth_segmentation`` is
   given: its centroid pixel lies inside the truth footprint; or, when
   ``detection_segmentation`` is also given, the two footprints overlap
   strongly: intersection over union >= ``min_iou`` (default 0.5).

Among candidate pairs, the one-to-one assignment maximises first the number
of matches and then minimises the summed centroid separation
(`scipy.optimize.linear_sum_assignment` on each connected group of
candidates; candidates come from `scipy.spatial.cKDTree` and from footprint
look-ups, never from an O(N^2) loop). Every detection matches at most one
truth source and vice versa: a second detection of the same source is a
false positive, and a detection between two sources matches only one.
"""

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

__all__ = ['MatchResult', 'default_radius', 'match_sources']

#: Radius (pixels) used when neither ``radius`` nor ``fwhm`` is given.
DEFAULT_RADIUS_PIX = 3.0
#: Minimum radius (pixels) when the radius is derived from the FWHM.
MIN_RADIUS_PIX = 2.0
#: Radius in units of the PSF FWHM.
RADIUS_FWHM = 1.0

# Cost of a forbidden (non-candidate) pair: larger than any separation.
_FORBIDDEN = 1.0e9


def default_radius(fwhm=None):
    """
    Return the default matching radius in pixels.

    Parameters
    ----------
    fwhm : float or None, optional
        PSF full width at half maximum in pixels.

    Returns
    -------
    radius : float
        ``max(1.0 * fwhm, 2.0)`` pixels, or 3 pixels when ``fwhm`` is None.
    """
    if fwhm is None:
        return DEFAULT_RADIUS_PIX
    fwhm = float(fwhm)
    if not np.isfinite(fwhm) or fwhm <= 0:
        msg = f'fwhm must be a positive number, got {fwhm!r}'
        raise ValueError(msg)
    return max(RADIUS_FWHM * fwhm, MIN_RADIUS_PIX)


@dataclass(frozen=True)
class MatchResult:
    """
    The result of `match_sources`.

    Attributes
    ----------
    truth_index, detection_index : 1D int `~numpy.ndarray`
        Row indices (0-based, into the truth and detection tables) of the
        matched pairs, sorted by truth index.
    separation : 1D float `~numpy.ndarray`
        Centroid separation (pixels) of each matched pair.
    truth_matched : 1D bool `~numpy.ndarray`
        For every truth row, whether it was matched (a true positive).
    detection_matched : 1D bool `~numpy.ndarray`
        For every detection row, whether it was matched; unmatched
        detections are false positives.
    truth_match : 1D int `~numpy.ndarray`
        For every truth row, the index of its detection, or -1.
    detection_match : 1D int `~numpy.ndarray`
        For every detection row, the index of its truth source, or -1.
    radius : float
        The matching radius used (pixels).
    """

    truth_index: np.ndarray
    detection_index: np.ndarray
    separation: np.ndarray
    truth_matched: np.ndarray
    detection_matched: np.ndarray
    truth_match: np.ndarray = field(repr=False)
    detection_match: np.ndarray = field(repr=False)
    radius: float = DEFAULT_RADIUS_PIX

    @property
    def n_truth(self):
        """Number of truth sources."""
        return int(self.truth_matched.size)

    @property
    def n_detections(self):
        """Number of detections."""
        return int(self.detection_matched.size)

    @property
    def tp(self):
        """Number of true positives (matched pairs)."""
        return int(self.truth_index.size)

    @property
    def fp(self):
        """Number of false positives (unmatched detections)."""
        return self.n_detections - self.tp

    @property
    def fn(self):
        """Number of false negatives (unmatched truth sources)."""
        return self.n_truth - self.tp

    def __repr__(self):
        return (f'<MatchResult(n_truth={self.n_truth}, '
                f'n_detections={self.n_detections}, tp={self.tp}, '
                f'fp={self.fp}, fn={self.fn}, radius={self.radius:g})>')


def _xy(table, name):
    if table is None:
        return np.zeros((0, 2))
    if isinstance(table, np.ndarray) and table.dtype.names is None:
        xy = np.asarray(table, dtype=float).reshape(-1, 2)
        return xy
    cols = table.colnames if hasattr(table, 'colnames') else table.dtype.names
    for xname, yname in (('x', 'y'), ('xcentroid', 'ycentroid')):
        if xname in cols and yname in cols:
            x = np.asarray(getattr(table[xname], 'value', table[xname]),
                           dtype=float)
            y = np.asarray(getattr(table[yname], 'value', table[yname]),
                           dtype=float)
            return np.column_stack([x, y]).reshape(-1, 2)
    msg = (f'{name} must have x and y (or xcentroid and ycentroid) columns, '
           f'got columns {list(cols)!r}')
    raise ValueError(msg)


def _seg_array(segm, name):
    if segm is None:
        return None
    data = getattr(segm, 'data', segm)
    data = np.asarray(data)
    if data.ndim != 2:
        msg = f'{name} must be a 2D segmentation image, got shape {data.shape}'
        raise ValueError(msg)
    return data


def _pixel_of(xy, shape):
    """Integer (row, col) of positions, and a mask of those inside."""
    ix = np.floor(xy[:, 0] + 0.5).astype(np.int64) if xy.size else \
        np.zeros(0, np.int64)
    iy = np.floor(xy[:, 1] + 0.5).astype(np.int64) if xy.size else \
        np.zeros(0, np.int64)
    finite = np.isfinite(xy).all(axis=1) if xy.size else np.zeros(0, bool)
    inside = finite & (ix >= 0) & (iy >= 0) & (ix < shape[1]) & (iy < shape[0])
    ix[~inside] = 0
    iy[~inside] = 0
    return iy, ix, inside


def _footprint_candidates(truth_xy, det_xy, truth_labels, tseg, dseg,
                          det_labels, min_iou):
    """Candidate (truth, detection) pairs from the footprint rule."""
    pairs_t = []
    pairs_d = []
    nlab = int(max(tseg.max(initial=0), truth_labels.max(initial=0))) + 1
    label_to_row = np.full(nlab, -1, dtype=np.int64)
    valid = (truth_labels > 0) & (truth_labels < nlab)
    label_to_row[truth_labels[valid]] = np.nonzero(valid)[0]

    # centroid pixel inside a truth footprint
    iy, ix, inside = _pixel_of(det_xy, tseg.shape)
    lab = np.where(inside, tseg[iy, ix], 0)
    rows = np.where(lab > 0, label_to_row[np.clip(lab, 0, nlab - 1)], -1)
    ok = rows >= 0
    pairs_t.append(rows[ok])
    pairs_d.append(np.nonzero(ok)[0])

    # strong footprint overlap (intersection over union)
    if dseg is not None and det_labels is not None:
        if dseg.shape != tseg.shape:
            msg = ('detection_segmentation and truth_segmentation must have '
                   f'the same shape, got {dseg.shape} and {tseg.shape}')
            raise ValueError(msg)
        both = (tseg > 0) & (dseg > 0)
        if both.any():
            tl = tseg[both].astype(np.int64)
            dl = dseg[both].astype(np.int64)
            key = np.unique(tl * (int(dseg.max()) + 1) + dl,
                            return_counts=True)
            tl_u = key[0] // (int(dseg.max()) + 1)
            dl_u = key[0] % (int(dseg.max()) + 1)
            inter = key[1]
            tarea = np.bincount(tseg.ravel(), minlength=nlab)
            darea = np.bincount(dseg.ravel())
            iou = inter / (tarea[tl_u] + darea[dl_u] - inter)
            strong = iou >= min_iou
            dmax = int(max(dseg.max(), det_labels.max(initial=0))) + 1
            dlab_to_row = np.full(dmax, -1, dtype=np.int64)
            dvalid = (det_labels > 0) & (det_labels < dmax)
            dlab_to_row[det_labels[dvalid]] = np.nonzero(dvalid)[0]
            trow = label_to_row[np.clip(tl_u[strong], 0, nlab - 1)]
            drow = dlab_to_row[dl_u[strong]]
            ok = (trow >= 0) & (drow >= 0)
            pairs_t.append(trow[ok])
            pairs_d.append(drow[ok])
    return np.concatenate(pairs_t), np.concatenate(pairs_d)


def _assign(ti, di, cost, n_truth, n_det):
    """Optimal one-to-one assignment on a sparse candidate graph."""
    if ti.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(ti.size), (ti, n_truth + di)),
                       shape=(n_truth + n_det, n_truth + n_det))
    _, comp = connected_components(graph, directed=False)
    pair_comp = comp[ti]
    order = np.argsort(pair_comp, kind='stable')
    ti, di, cost, pair_comp = ti[order], di[order], cost[order], \
        pair_comp[order]
    bounds = np.flatnonzero(np.diff(pair_comp)) + 1
    out_t = []
    out_d = []
    for sl in np.split(np.arange(ti.size), bounds):
        t = ti[sl]
        d = di[sl]
        if sl.size == 1:
            out_t.append(t)
            out_d.append(d)
            continue
        tu, tinv = np.unique(t, return_inverse=True)
        du, dinv = np.unique(d, return_inverse=True)
        mat = np.full((tu.size, du.size), _FORBIDDEN)
        # several rules may give the same pair: keep the cheapest
        np.minimum.at(mat, (tinv, dinv), cost[sl])
        r, c = linear_sum_assignment(mat)
        keep = mat[r, c] < _FORBIDDEN
        out_t.append(tu[r[keep]])
        out_d.append(du[c[keep]])
    return np.concatenate(out_t), np.concatenate(out_d)


def match_sources(truth, detections, *, truth_segmentation=None,
                  detection_segmentation=None, radius=None, fwhm=None,
                  min_iou=0.5):
    """
    Match detections to truth sources one-to-one.

    Parameters
    ----------
    truth : `~astropy.table.Table` or (N, 2) array-like
        Truth catalogue with ``x`` and ``y`` columns (0-based pixels) and,
        for the footprint rule, ``label`` (the truth segmentation labels;
        default ``1..N`` in row order).
    detections : `~astropy.table.Table` or (M, 2) array-like or None
        Detection catalogue with ``x`` and ``y`` (or ``xcentroid`` and
        ``ycentroid``) columns and, for the overlap rule, ``label`` (the
        labels of ``detection_segmentation``; default ``1..M``).
    truth_segmentation : `~photutils.segmentation.SegmentationImage`, optional
        Truth footprints. Enables the footprint rule: a detection whose
        centroid pixel lies in a truth footprint may match that source at
        any distance.
    detection_segmentation : `~photutils.segmentation.SegmentationImage`, optional
        Detection footprints. With ``truth_segmentation``, a detection
        whose footprint has intersection over union >= ``min_iou`` with a
        truth footprint may match it at any distance.
    radius : float, optional
        Matching radius in pixels. Default: ``max(1.0 * fwhm, 2)`` or 3 px
        without ``fwhm``.
    fwhm : float, optional
        PSF FWHM in pixels, used for the default radius.
    min_iou : float, optional
        Footprint intersection-over-union for the overlap rule.

    Returns
    -------
    result : `MatchResult`
        Matched pairs, per-row flags and the TP / FP / FN counts.

    Notes
    -----
    The assignment maximises the number of matched pairs, then minimises
    their summed separation (`scipy.optimize.linear_sum_assignment` on each
    connected group of candidate pairs). Detections with non-finite
    positions never match.
    """
    radius = default_radius(fwhm) if radius is None else float(radius)
    if not np.isfinite(radius) or radius < 0:
        msg = f'radius must be a non-negative number, got {radius!r}'
        raise ValueError(msg)
    txy = _xy(truth, 'truth')
    dxy = _xy(detections, 'detections')
    n_truth = txy.shape[0]
    n_det = dxy.shape[0]

    ti_parts = []
    di_parts = []
    if n_truth and n_det:
        dfin = np.isfinite(dxy).all(axis=1)
        tfin = np.isfinite(txy).all(axis=1)
        tree = cKDTree(dxy[dfin])
        dfin_idx = np.flatnonzero(dfin)
        lists = tree.query_ball_point(txy[tfin], r=radius)
        tfin_idx = np.flatnonzero(tfin)
        lengths = np.fromiter((len(x) for x in lists), dtype=np.int64,
                              count=len(lists))
        if lengths.sum():
            ti_parts.append(np.repeat(tfin_idx, lengths))
            di_parts.append(dfin_idx[np.concatenate(
                [np.asarray(x, dtype=np.int64) for x in lists if x])])

        tseg = _seg_array(truth_segmentation, 'truth_segmentation')
        if tseg is not None:
            dseg = _seg_array(detection_segmentation, 'detection_segmentation')
            tlab = _labels(truth, n_truth)
            dlab = _labels(detections, n_det)
            ft, fd = _footprint_candidates(txy, dxy, tlab, tseg, dseg, dlab,
                                           float(min_iou))
            ti_parts.append(ft)
            di_parts.append(fd)

    if ti_parts:
        ti = np.concatenate(ti_parts).astype(np.int64)
        di = np.concatenate(di_parts).astype(np.int64)
    else:
        ti = di = np.zeros(0, np.int64)
    sep = np.hypot(*(txy[ti] - dxy[di]).T) if ti.size else np.zeros(0)
    mt, md = _assign(ti, di, sep, n_truth, n_det)
    order = np.argsort(mt, kind='stable')
    mt, md = mt[order], md[order]

    truth_match = np.full(n_truth, -1, dtype=np.int64)
    det_match = np.full(n_det, -1, dtype=np.int64)
    truth_match[mt] = md
    det_match[md] = mt
    separation = (np.hypot(*(txy[mt] - dxy[md]).T) if mt.size
                  else np.zeros(0))
    return MatchResult(truth_index=mt, detection_index=md,
                       separation=separation,
                       truth_matched=truth_match >= 0,
                       detection_matched=det_match >= 0,
                       truth_match=truth_match, detection_match=det_match,
                       radius=radius)


def _labels(table, n):
    """Segmentation labels of the rows of ``table`` (default 1..n)."""
    cols = getattr(table, 'colnames', None)
    if cols is None and isinstance(table, np.ndarray):
        cols = table.dtype.names
    if cols and 'label' in cols:
        return np.asarray(table['label'], dtype=np.int64)
    return np.arange(1, n + 1, dtype=np.int64)
