# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Detection-quality metrics built on `~astro_deepcolor.evaluation.match_sources`.

Definitions (the benchmark protocol)
------------------------------------
* completeness = TP / (TP + FN); with no truth source (0/0) it is NaN
  (undefined: nothing could be found).
* contamination = FP / (TP + FP); with no detection (0/0) it is 0 (nothing
  was reported, so nothing reported is false).
* A *close pair* is two truth sources closer than ``2 * fwhm`` (or
  ``pair_radius``) or whose footprints touch (8-connectivity). Deblending
  succeeds on a pair when both members are matched, necessarily to two
  different detections since matching is one-to-one.
* A false positive (unmatched detection) is charged to every contaminant
  class whose bit is set on any pixel of its footprint (its centroid pixel
  when no footprint is given); otherwise to ``'none'`` (noise or a
  spurious fragment of a real source).
* Astrometry and photometry against the truth, on the matched pairs: the
  position error is the distance between the detection's centroid and
  the true position (pixels); the flux ratio is the detection's flux
  (segment or isophotal flux, what the detector measures in its
  footprint) over the true flux. Per bin, the position error is summarised
  by its median and the radius holding 68 % of the matches, the flux ratio
  by its median bias (median ratio - 1) and robust scatter
  (1.4826 x median absolute deviation of the ratio).
"""

import numpy as np
from astropy.table import QTable
from scipy.spatial import cKDTree

from .matching import MatchResult

__all__ = [
    'NO_CONTAMINANT',
    'binned_completeness',
    'binned_flux_ratio',
    'binned_position_error',
    'close_pairs',
    'completeness_contamination',
    'completeness_from_counts',
    'deblending_success',
    'false_positives_by_class',
    'match_offsets',
    'misses_by_cause',
]

#: Class name for false positives on no contaminant pixel.
NO_CONTAMINANT = 'none'


def completeness_from_counts(tp, fp, fn):
    """
    Completeness and contamination from counts (scalars or arrays).

    Parameters
    ----------
    tp, fp, fn : int or array-like
        True positives, false positives and false negatives.

    Returns
    -------
    completeness, contamination : float or `~numpy.ndarray`
        ``TP / (TP + FN)`` (NaN when 0/0) and ``FP / (TP + FP)`` (0 when
        0/0).
    """
    tp = np.asarray(tp, dtype=float)
    fp = np.asarray(fp, dtype=float)
    fn = np.asarray(fn, dtype=float)
    with np.errstate(invalid='ignore', divide='ignore'):
        comp = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        cont = np.where(tp + fp > 0, fp / (tp + fp), 0.0)
    if comp.ndim == 0:
        return float(comp), float(cont)
    return comp, cont


def completeness_contamination(match):
    """
    Completeness and contamination of one or several match results.

    Parameters
    ----------
    match : `~astro_deepcolor.evaluation.MatchResult` or iterable of them
        Results to pool (counts are summed over images before dividing).

    Returns
    -------
    completeness : float
        ``TP / (TP + FN)``; NaN when there is no truth source.
    contamination : float
        ``FP / (TP + FP)``; 0 when there is no detection.
    """
    results = [match] if isinstance(match, MatchResult) else list(match)
    for r in results:
        if not isinstance(r, MatchResult):
            msg = f'match must be a MatchResult or an iterable of them, got {r!r}'
            raise TypeError(msg)
    tp = sum(r.tp for r in results)
    fp = sum(r.fp for r in results)
    fn = sum(r.fn for r in results)
    return completeness_from_counts(tp, fp, fn)


def binned_completeness(values, matched, bins):
    """
    Completeness in bins of a truth quantity (magnitude, S/N, ...).

    Parameters
    ----------
    values : 1D array-like
        The quantity for each truth source.
    matched : 1D bool array-like
        Whether each truth source was matched (``MatchResult.truth_matched``).
    bins : 1D array-like
        Bin edges (increasing).

    Returns
    -------
    table : `~astropy.table.QTable`
        Columns ``low``, ``high``, ``n_truth``, ``n_matched`` and
        ``completeness`` (NaN for empty bins).
    """
    values = np.asarray(values, dtype=float)
    matched = np.asarray(matched, dtype=bool)
    if values.shape != matched.shape:
        msg = (f'values and matched must have the same shape, got '
               f'{values.shape} and {matched.shape}')
        raise ValueError(msg)
    bins = np.asarray(bins, dtype=float)
    n, _ = np.histogram(values, bins)
    k, _ = np.histogram(values[matched], bins)
    comp, _ = completeness_from_counts(k, 0, n - k)
    return QTable({'low': bins[:-1], 'high': bins[1:], 'n_truth': n,
                   'n_matched': k, 'completeness': np.atleast_1d(comp)})


def _touching_pairs(seg):
    """Label pairs whose footprints touch (8-connectivity)."""
    pairs = []
    for a, b in ((seg[:, :-1], seg[:, 1:]), (seg[:-1, :], seg[1:, :]),
                 (seg[:-1, :-1], seg[1:, 1:]), (seg[:-1, 1:], seg[1:, :-1])):
        m = (a != b) & (a > 0) & (b > 0)
        if m.any():
            p = np.column_stack([a[m], b[m]]).astype(np.int64)
            pairs.append(np.sort(p, axis=1))
    if not pairs:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.concatenate(pairs), axis=0)


def close_pairs(truth, *, fwhm=None, pair_radius=None, truth_segmentation=None):
    """
    Find close pairs of truth sources (the deblending test set).

    Parameters
    ----------
    truth : `~astropy.table.Table`
        Truth catalogue with ``x``, ``y`` and (with a segmentation)
        ``label`` columns.
    fwhm : float, optional
        PSF FWHM in pixels; the default pair radius is ``2 * fwhm``.
    pair_radius : float, optional
        Separation (pixels) below which two sources form a pair.
    truth_segmentation : `~photutils.segmentation.SegmentationImage`, optional
        Truth footprints; sources whose footprints touch also form a pair.

    Returns
    -------
    pairs : (K, 2) int `~numpy.ndarray`
        Row indices into ``truth`` of each pair (smaller index first).
    """
    if pair_radius is None:
        if fwhm is None:
            msg = 'close_pairs needs fwhm or pair_radius'
            raise ValueError(msg)
        pair_radius = 2.0 * float(fwhm)
    n = len(truth)
    if n < 2:
        return np.zeros((0, 2), np.int64)
    xy = np.column_stack([np.asarray(truth['x'], float),
                          np.asarray(truth['y'], float)])
    pairs = [cKDTree(xy).query_pairs(pair_radius, output_type='ndarray')
             .astype(np.int64).reshape(-1, 2)]
    if truth_segmentation is not None and 'label' in truth.colnames:
        seg = np.asarray(getattr(truth_segmentation, 'data', truth_segmentation))
        lab_pairs = _touching_pairs(seg)
        if lab_pairs.size:
            labels = np.asarray(truth['label'], dtype=np.int64)
            lut = np.full(max(int(seg.max()), int(labels.max())) + 1, -1,
                          np.int64)
            lut[labels] = np.arange(n)
            rows = lut[lab_pairs]
            pairs.append(rows[(rows >= 0).all(axis=1)])
    pairs = np.sort(np.concatenate(pairs), axis=1)
    return np.unique(pairs, axis=0) if pairs.size else pairs


def deblending_success(match, pairs):
    """
    Fraction of close truth pairs whose two members are both matched.

    Parameters
    ----------
    match : `~astro_deepcolor.evaluation.MatchResult`
        The match of the detections to the truth.
    pairs : (K, 2) int array-like
        Row indices of close pairs (from `close_pairs`).

    Returns
    -------
    n_success : int
        Number of pairs with both members matched (to separate detections).
    n_pairs : int
        Number of pairs.
    fraction : float
        ``n_success / n_pairs`` (NaN without pairs).
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    ok = match.truth_matched[pairs].all(axis=1) if pairs.size else \
        np.zeros(0, bool)
    n_pairs = int(pairs.shape[0])
    n_success = int(ok.sum())
    frac = n_success / n_pairs if n_pairs else float('nan')
    return n_success, n_pairs, frac


def false_positives_by_class(match, detections, contaminants, flags, *,
                             detection_segmentation=None):
    """
    Charge each false positive to the contaminant classes it lies on.

    Parameters
    ----------
    match : `~astro_deepcolor.evaluation.MatchResult`
        The match of ``detections`` to the truth.
    detections : `~astropy.table.Table`
        Detection catalogue (``x``, ``y`` and, with a segmentation,
        ``label``).
    contaminants : 2D int `~numpy.ndarray`
        Contaminant bitmask (0 where none).
    flags : dict
        Class name -> bit value (``CONTAMINANT_FLAGS``).
    detection_segmentation : `~photutils.segmentation.SegmentationImage`, optional
        Detection footprints; without it the centroid pixel is used.

    Returns
    -------
    counts : dict
        Class name -> number of false positives charged to it, plus
        ``'none'``. A false positive on pixels of several classes counts
        once in each.
    """
    contaminants = np.asarray(contaminants)
    counts = dict.fromkeys(flags, 0)
    counts[NO_CONTAMINANT] = 0
    fp_rows = np.flatnonzero(~match.detection_matched)
    if fp_rows.size == 0:
        return counts
    bits = np.zeros(fp_rows.size, dtype=np.int64)
    cmask = contaminants.astype(np.int64)
    if detection_segmentation is not None:
        seg = np.asarray(getattr(detection_segmentation, 'data',
                                 detection_segmentation))
        labels = (np.asarray(detections['label'], np.int64)
                  if 'label' in detections.colnames
                  else np.arange(1, len(detections) + 1))
        nlab = max(int(seg.max()), int(labels.max(initial=0))) + 1
        per_label = np.zeros(nlab, dtype=np.int64)
        on = (seg > 0) & (cmask > 0)
        if on.any():
            np.bitwise_or.at(per_label, seg[on], cmask[on])
        bits = per_label[labels[fp_rows]]
    else:
        x = np.asarray(detections['x'], float)[fp_rows]
        y = np.asarray(detections['y'], float)[fp_rows]
        ok = np.isfinite(x) & np.isfinite(y)
        ix = np.clip(np.floor(np.where(ok, x, 0) + 0.5).astype(int), 0,
                     contaminants.shape[1] - 1)
        iy = np.clip(np.floor(np.where(ok, y, 0) + 0.5).astype(int), 0,
                     contaminants.shape[0] - 1)
        bits = np.where(ok, cmask[iy, ix], 0)
    for name, bit in flags.items():
        counts[name] = int(np.count_nonzero(bits & int(bit)))
    counts[NO_CONTAMINANT] = int(np.count_nonzero(bits == 0))
    return counts


def misses_by_cause(match, truth, truth_segmentation, detections,
                    detection_segmentation, contaminants, flags, *,
                    min_snr=5.0, min_cover=0.1):
    """
    Sort the true sources a detector missed by why it missed them.

    Each unmatched true source with ``snr >= min_snr`` is, in this order:

    - ``'merged'``: its true centre lies in a detection that matched
      another true source (found, but not deblended from a neighbour);
    - ``'on_artefact'``: contaminants cover at least ``min_cover`` of its
      true footprint (and the class covering most of it is counted);
    - ``'undetected'``: the rest.

    Parameters
    ----------
    match : `~astro_deepcolor.evaluation.MatchResult`
        The match of ``detections`` to ``truth``.
    truth : `~astropy.table.Table`
        True sources (``x``, ``y``, ``snr``, ``label`` and optionally
        ``blended``).
    truth_segmentation : `~photutils.segmentation.SegmentationImage` or 2D int array
        True footprints, labelled by ``truth['label']``.
    detections : `~astropy.table.Table`
        Detection catalogue with ``label``.
    detection_segmentation : `~photutils.segmentation.SegmentationImage`, 2D int array or None
        Detection footprints (None: nothing was detected).
    contaminants : 2D int `~numpy.ndarray`
        Contaminant bitmask (0 where none).
    flags : dict
        Class name -> bit value.
    min_snr : float, optional
        Only true sources at least this bright count.
    min_cover : float, optional
        Share of a true footprint that contaminants must cover.

    Returns
    -------
    counts : dict
        ``'n'`` (true sources with ``snr >= min_snr``), ``'missed'``,
        ``'merged'``, ``'on_artefact'``, ``'undetected'``, ``'blended'``
        (missed members of blends, when ``truth`` has ``blended``) and
        ``'artefact_classes'`` (class name -> misses on it).
    """
    tseg = np.asarray(getattr(truth_segmentation, 'data', truth_segmentation))
    contaminants = np.asarray(contaminants).astype(np.int64)
    if detection_segmentation is None:
        dseg = np.zeros(tseg.shape, dtype=np.int64)
    else:
        dseg = np.asarray(getattr(detection_segmentation, 'data',
                                  detection_segmentation))
    bright = np.asarray(truth['snr'], float) >= min_snr
    missed = bright & ~np.asarray(match.truth_matched, bool)
    det_labels = (np.asarray(detections['label'], np.int64) if len(detections)
                  else np.zeros(0, np.int64))
    found = set(det_labels[np.asarray(match.detection_matched, bool)].tolist())
    counts = {'n': int(bright.sum()), 'missed': int(missed.sum()), 'merged': 0,
              'on_artefact': 0, 'undetected': 0, 'blended': 0,
              'artefact_classes': {}}
    blended = (np.asarray(truth['blended'], bool) if 'blended' in truth.colnames
               else np.zeros(len(truth), bool))
    ny, nx = tseg.shape
    for k in np.flatnonzero(missed):
        counts['blended'] += bool(blended[k])
        y = min(max(int(np.floor(float(truth['y'][k]) + 0.5)), 0), ny - 1)
        x = min(max(int(np.floor(float(truth['x'][k]) + 0.5)), 0), nx - 1)
        if int(dseg[y, x]) in found:
            counts['merged'] += 1
            continue
        bits = contaminants[tseg == int(truth['label'][k])]
        if bits.size and np.count_nonzero(bits) >= min_cover * bits.size:
            counts['on_artefact'] += 1
            cover = {name: int(np.count_nonzero(bits & int(bit)))
                     for name, bit in flags.items()}
            name = max(cover, key=cover.get)
            counts['artefact_classes'][name] = counts['artefact_classes'].get(name, 0) + 1
            continue
        counts['undetected'] += 1
    return counts


#: Factor turning a median absolute deviation into a Gaussian sigma.
MAD_TO_SIGMA = 1.4826


def match_offsets(match, truth, detections):
    """
    Position and flux of every matched detection against its truth source.

    Parameters
    ----------
    match : `~astro_deepcolor.evaluation.MatchResult`
        The match of ``detections`` to ``truth``.
    truth : `~astropy.table.Table`
        Truth catalogue with ``x``, ``y`` and ``flux`` columns.
    detections : `~astropy.table.Table`
        Detection catalogue with ``x``, ``y`` and ``flux`` columns (the
        flux the detector measures: segment or isophotal flux).

    Returns
    -------
    table : `~astropy.table.QTable`
        One row per matched pair: ``truth_index``, ``detection_index``,
        ``dx`` and ``dy`` (detection minus truth, pixels), ``separation``
        (pixels), ``flux_true``, ``flux`` and ``flux_ratio``
        (``flux / flux_true``, NaN where the true flux is not positive).
    """
    if not isinstance(match, MatchResult):
        msg = f'match must be a MatchResult, got {match!r}'
        raise TypeError(msg)
    ti = np.asarray(match.truth_index, np.int64)
    di = np.asarray(match.detection_index, np.int64)

    def col(table, name, idx):
        if name not in table.colnames:
            msg = f'the catalogue has no {name!r} column: {table.colnames}'
            raise ValueError(msg)
        return np.asarray(getattr(table[name], 'value', table[name]),
                          float)[idx]

    dx = col(detections, 'x', di) - col(truth, 'x', ti)
    dy = col(detections, 'y', di) - col(truth, 'y', ti)
    f_true = col(truth, 'flux', ti)
    f_det = col(detections, 'flux', di)
    with np.errstate(invalid='ignore', divide='ignore'):
        ratio = np.where(f_true > 0, f_det / f_true, np.nan)
    return QTable({'truth_index': ti, 'detection_index': di, 'dx': dx,
                   'dy': dy, 'separation': np.hypot(dx, dy),
                   'flux_true': f_true, 'flux': f_det, 'flux_ratio': ratio})


def _binned(values, data, bins, func, names):
    values = np.asarray(values, dtype=float)
    data = np.asarray(data, dtype=float)
    if values.shape != data.shape:
        msg = (f'values and the measurements must have the same shape, got '
               f'{values.shape} and {data.shape}')
        raise ValueError(msg)
    bins = np.asarray(bins, dtype=float)
    if bins.ndim != 1 or bins.size < 2 or np.any(np.diff(bins) <= 0):
        msg = f'bins must be at least two increasing edges, got {bins!r}'
        raise ValueError(msg)
    ok = np.isfinite(values) & np.isfinite(data)
    idx = np.digitize(values[ok], bins) - 1
    data = data[ok]
    cols = {'low': bins[:-1], 'high': bins[1:],
            'n': np.zeros(bins.size - 1, np.int64)}
    for name in names:
        cols[name] = np.full(bins.size - 1, np.nan)
    for b in range(bins.size - 1):
        sel = data[idx == b]
        cols['n'][b] = sel.size
        if sel.size:
            for name, v in zip(names, func(sel), strict=True):
                cols[name][b] = v
    return QTable(cols)


def _position_stats(sep):
    return float(np.median(sep)), float(np.percentile(sep, 68.27))


def _flux_stats(ratio):
    med = float(np.median(ratio))
    return med - 1.0, MAD_TO_SIGMA * float(np.median(np.abs(ratio - med)))


def binned_position_error(values, separation, bins):
    """
    Position error in bins of a truth quantity (S/N, magnitude, ...).

    Parameters
    ----------
    values : 1D array-like
        The binning quantity of each matched truth source.
    separation : 1D array-like
        Distance between detection and true position (pixels), as
        ``match_offsets(...)['separation']``.
    bins : 1D array-like
        Bin edges (increasing); a value equal to an edge falls in the bin
        above it.

    Returns
    -------
    table : `~astropy.table.QTable`
        ``low``, ``high``, ``n`` (matches in the bin), ``median`` and
        ``radius_68`` (the radius holding 68.27 % of the matches), NaN in
        empty bins.
    """
    return _binned(values, separation, bins, _position_stats,
                   ('median', 'radius_68'))


def binned_flux_ratio(values, flux_ratio, bins):
    """
    Flux bias and scatter in bins of a truth quantity (magnitude, S/N, ...).

    Parameters
    ----------
    values : 1D array-like
        The binning quantity of each matched truth source.
    flux_ratio : 1D array-like
        Measured over true flux, as ``match_offsets(...)['flux_ratio']``.
    bins : 1D array-like
        Bin edges (increasing); a value equal to an edge falls in the bin
        above it.

    Returns
    -------
    table : `~astropy.table.QTable`
        ``low``, ``high``, ``n``, ``bias`` (median ratio - 1) and
        ``scatter`` (1.4826 x the median absolute deviation of the ratio),
        NaN in empty bins.
    """
    return _binned(values, flux_ratio, bins, _flux_stats, ('bias', 'scatter'))
