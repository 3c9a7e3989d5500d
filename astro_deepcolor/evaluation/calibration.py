# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Operating points and reliability of the CNN's probabilities.

The network's output is a probability per pixel, but the contamination it
gives at a threshold depends on the model. A model file therefore carries
*calibrated operating points* (`~astro_deepcolor.model.ModelConfig`
``operating_points``): the threshold at which the detections on the
validation images reach a given contamination. `threshold_at_contamination`
finds it on a swept curve; `reliability` measures whether a detection's
``detection_probability`` is the probability that it is real (a
reliability diagram).
"""

import numpy as np

__all__ = ['fit_reliability_map', 'reliability', 'threshold_at_contamination']


def threshold_at_contamination(thresholds, contamination, level):
    """
    The lowest threshold whose contamination is at most ``level``.

    The contamination of a detector falls (not always monotonically) as
    its threshold rises. The returned threshold is the lowest grid point
    from which the contamination stays at or below ``level`` for every
    higher threshold, so noise in the curve does not give a threshold
    that a slightly higher one would contradict.

    Parameters
    ----------
    thresholds : 1D array-like
        Increasing thresholds.
    contamination : 1D array-like
        Contamination at each threshold (NaN where nothing is detected,
        counted as 0).
    level : float
        Target contamination in [0, 1].

    Returns
    -------
    threshold : float
        The threshold, or NaN when even the highest one is above
        ``level``.
    """
    t = np.asarray(thresholds, dtype=float)
    c = np.nan_to_num(np.asarray(contamination, dtype=float), nan=0.0)
    if t.ndim != 1 or t.shape != c.shape or t.size == 0:
        msg = (f'thresholds and contamination must be 1D of equal length, got '
               f'shapes {t.shape} and {c.shape}')
        raise ValueError(msg)
    if np.any(np.diff(t) <= 0):
        msg = 'thresholds must be strictly increasing'
        raise ValueError(msg)
    if not 0 <= level <= 1:
        msg = f'level must be in [0, 1], got {level!r}'
        raise ValueError(msg)
    ok = c <= level
    # Suffix "all ok from here on".
    tail = np.logical_and.accumulate(ok[::-1])[::-1]
    if not tail.any():
        return float('nan')
    return float(t[np.argmax(tail)])


def reliability(probability, is_true, bins=(0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99,
                                             0.995, 0.999, 1.0)):
    """
    Reliability diagram of detection probabilities.

    Parameters
    ----------
    probability : 1D array-like
        ``detection_probability`` of each detection.
    is_true : 1D array-like of bool
        Whether each detection matches a true source.
    bins : 1D array-like, optional
        Bin edges (the last bin includes its upper edge).

    Returns
    -------
    table : dict of `~numpy.ndarray`
        Per bin: ``lo``, ``hi``, ``n`` (detections), ``mean_probability``
        and ``fraction_true`` (NaN for empty bins). A calibrated
        probability has ``fraction_true`` close to ``mean_probability``.
    """
    p = np.asarray(probability, dtype=float)
    y = np.asarray(is_true, dtype=bool)
    if p.shape != y.shape or p.ndim != 1:
        msg = (f'probability and is_true must be 1D of equal length, got '
               f'shapes {p.shape} and {y.shape}')
        raise ValueError(msg)
    edges = np.asarray(bins, dtype=float)
    idx = np.clip(np.searchsorted(edges, p, side='right') - 1, 0, edges.size - 2)
    inside = (p >= edges[0]) & (p <= edges[-1])
    nb = edges.size - 1
    n = np.bincount(idx[inside], minlength=nb)
    sp = np.bincount(idx[inside], weights=p[inside], minlength=nb)
    st = np.bincount(idx[inside], weights=y[inside].astype(float), minlength=nb)
    with np.errstate(invalid='ignore', divide='ignore'):
        return {'lo': edges[:-1], 'hi': edges[1:], 'n': n,
                'mean_probability': np.where(n > 0, sp / np.maximum(n, 1), np.nan),
                'fraction_true': np.where(n > 0, st / np.maximum(n, 1), np.nan)}


def fit_reliability_map(probability, is_true, *, n_knots=32):
    """
    A monotone map from raw detection probability to the fraction real.

    Isotonic regression (pool adjacent violators) of ``is_true`` on
    ``probability``, summarised by at most ``n_knots`` knots for
    `numpy.interp`. Stored in a model's metadata, it turns the network's
    peak probability into a calibrated probability that a detection is real
    (on data like the calibration images).

    Parameters
    ----------
    probability : 1D array-like
        Raw ``detection_probability`` of each detection.
    is_true : 1D array-like of bool
        Whether each detection matches a true source.
    n_knots : int, optional
        Maximum number of knots (quantiles of ``probability``).

    Returns
    -------
    knots : dict
        ``probability`` (increasing) and ``reliability`` (non-decreasing)
        lists of equal length.
    """
    p = np.asarray(probability, dtype=float)
    y = np.asarray(is_true, dtype=float)
    if p.ndim != 1 or p.shape != y.shape or p.size < 2:
        msg = (f'probability and is_true must be 1D of equal length >= 2, got '
               f'shapes {p.shape} and {y.shape}')
        raise ValueError(msg)
    order = np.argsort(p, kind='stable')
    p, y = p[order], y[order]
    # Pool adjacent violators.
    vals, wts, ends = [], [], []
    for i, v in enumerate(y):
        vals.append(v)
        wts.append(1.0)
        ends.append(i)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            v2, w2 = vals.pop(), wts.pop()
            e2 = ends.pop()
            vals[-1] = (vals[-1] * wts[-1] + v2 * w2) / (wts[-1] + w2)
            wts[-1] += w2
            ends[-1] = e2
    fitted = np.repeat(vals, np.asarray(wts, dtype=int))
    qs = np.unique(np.quantile(p, np.linspace(0, 1, int(n_knots))))
    rel = np.interp(qs, p, fitted)
    rel = np.maximum.accumulate(rel)
    return {'probability': [float(v) for v in qs], 'reliability': [float(v) for v in rel]}
