# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
How a deep-coloring network uses its colours, measured against truth.

A network that deblends gives touching sources different colours and uses
all of its C colours; one whose colours collapsed paints neighbours alike
(and then no post-processing can split them). `colour_statistics` measures
both on an image with known footprints: the *dominant colour* of a true
source is the colour channel with the largest summed probability over its
footprint; a colour is *live* when it is the dominant colour of at least
``min_fraction`` of the sources; two sources are *neighbours* when one's
footprint lies within ``radius`` pixels of the other's (the halo of the
deep-coloring loss).
"""

import numpy as np

__all__ = ['colour_statistics', 'pool_colour_statistics']


def _neighbour_pairs(segmentation, radius):
    from astro_deepcolor.simulation.image import halo_pairs

    pix, lab = halo_pairs(segmentation, radius)
    other = segmentation.ravel()[pix]
    ok = (other > 0) & (other != lab)
    a, b = lab[ok].astype(np.int64), other[ok].astype(np.int64)
    if not a.size:
        return np.zeros((0, 2), np.int64)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    n = int(hi.max()) + 1
    key = np.unique(lo * n + hi)
    return np.stack([key // n, key % n], axis=1)


def colour_statistics(probs, segmentation, *, radius=8, min_fraction=0.01,
                      truth=None, min_snr=None):
    """
    Colour usage and neighbour separation of a probability cube.

    Parameters
    ----------
    probs : 3D `~numpy.ndarray`
        (C + 1, ny, nx) probabilities, channel 0 the background.
    segmentation : 2D array-like or `~photutils.segmentation.SegmentationImage`
        True footprints (0 background).
    radius : int, optional
        Neighbour distance in pixels.
    min_fraction : float, optional
        Share of the sources a colour must dominate to count as live.
    truth : `~astropy.table.Table`, optional
        The true sources (``label`` and ``snr`` columns), for ``min_snr``.
    min_snr : float, optional
        Count only sources with a true S/N at or above this (and pairs of
        two such sources). The deep-coloring loss ignores sources below
        its ``min_snr`` (3 for the shipped model), so the dominant colour
        of a fainter source is noise, not something the network was taught.
        Neighbours are still found among all footprints.

    Returns
    -------
    stats : dict
        ``n_sources``; ``colour_counts`` (list, sources per dominant
        colour 1..C); ``live_colours`` (int); ``n_neighbour_pairs``;
        ``distinct_fraction`` (share of neighbour pairs whose dominant
        colours differ; NaN without pairs).
    """
    seg = np.asarray(getattr(segmentation, 'data', segmentation))
    probs = np.asarray(probs)
    if min_snr is not None and truth is None:
        msg = 'min_snr needs the truth table (label and snr columns)'
        raise ValueError(msg)
    if probs.ndim != 3 or probs.shape[1:] != seg.shape:
        msg = (f'probs must be (C + 1, ny, nx) with ny, nx = {seg.shape}, '
               f'got shape {probs.shape}')
        raise ValueError(msg)
    n_col = probs.shape[0] - 1
    n_lab = int(seg.max(initial=0))
    sel = seg > 0
    lab = seg[sel].astype(np.int64)
    sums = np.zeros((n_lab + 1, n_col))
    for c in range(n_col):
        sums[:, c] = np.bincount(lab, weights=probs[c + 1][sel], minlength=n_lab + 1)
    present = np.bincount(lab, minlength=n_lab + 1) > 0
    present[0] = False
    if min_snr is not None:
        snr = np.full(n_lab + 1, -np.inf)
        tl = np.asarray(truth['label'], np.int64)
        keep = (tl > 0) & (tl <= n_lab)
        snr[tl[keep]] = np.asarray(truth['snr'], float)[keep]
        present &= snr >= float(min_snr)
    dominant = np.full(n_lab + 1, -1)
    dominant[present] = sums[present].argmax(axis=1)
    counts = np.bincount(dominant[present], minlength=n_col)
    n_src = int(present.sum())
    live = int((counts >= max(1, min_fraction * n_src)).sum()) if n_src else 0
    pairs = _neighbour_pairs(seg, radius)
    pairs = pairs[present[pairs[:, 0]] & present[pairs[:, 1]]]
    if len(pairs):
        distinct = float(np.mean(dominant[pairs[:, 0]] != dominant[pairs[:, 1]]))
    else:
        distinct = float('nan')
    return {'n_sources': n_src, 'colour_counts': counts.tolist(),
            'live_colours': live, 'n_neighbour_pairs': len(pairs),
            'distinct_fraction': distinct}


def pool_colour_statistics(stats, *, min_fraction=0.01):
    """
    Pool the `colour_statistics` of several images.

    Parameters
    ----------
    stats : iterable of dict
        `colour_statistics` results (one per image).
    min_fraction : float, optional
        Share of the pooled sources a colour must dominate to count as live.

    Returns
    -------
    pooled : dict
        The same keys: counts and pairs summed, ``distinct_fraction``
        weighted by each image's number of pairs (NaN without pairs),
        ``live_colours`` recomputed on the pooled counts.
    """
    stats = list(stats)
    counts = np.sum([s['colour_counts'] for s in stats], axis=0).astype(np.int64)
    n_pairs = sum(s['n_neighbour_pairs'] for s in stats)
    distinct = sum(s['distinct_fraction'] * s['n_neighbour_pairs']
                   for s in stats if s['n_neighbour_pairs'])
    n_src = int(sum(s['n_sources'] for s in stats))
    return {'n_sources': n_src, 'colour_counts': counts.tolist(),
            'live_colours': int((counts >= max(1, min_fraction * n_src)).sum()),
            'n_neighbour_pairs': int(n_pairs),
            'distinct_fraction': float(distinct / n_pairs) if n_pairs else float('nan')}
