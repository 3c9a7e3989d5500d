# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Isolated pairs of stars: a deblending test independent of the simulator.

`star_pair_image` draws pairs of Moffat stars on a regular grid, each pair
alone in its cell, with a given separation (in FWHM) and flux ratio, on a
flat sky with Gaussian noise; nothing in it comes from
`astro_deepcolor.simulation`, so a network cannot pass it by having learnt
the simulator's quirks. `pair_split` tells, from a segmentation, which pairs
came out as two sources: each star's centre pixel lies in a segment and the
two segments differ (the criterion under which sep splits every pair of 2
to 4 FWHM).
"""

import numpy as np
from astropy.table import QTable

__all__ = ['pair_split', 'star_pair_image']


def _moffat(xx, yy, x0, y0, fwhm, beta, flux):
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    r2 = ((xx - x0) ** 2 + (yy - y0) ** 2) / alpha**2
    norm = (beta - 1) / (np.pi * alpha**2)
    return flux * norm * (1 + r2) ** (-beta)


def star_pair_image(separations=(2.0, 2.5, 3.0, 4.0), ratios=(1.0, 2.0, 3.5, 5.0), *,
                    n_per_cell=3, fwhm=4.0, beta=3.0, peak_snr=100.0, sky=100.0,
                    noise=1.0, cell=64, seed=0):
    """
    An image of isolated star pairs and the table of their positions.

    Parameters
    ----------
    separations : sequence of float, optional
        Centre-to-centre separations in units of ``fwhm``.
    ratios : sequence of float, optional
        Flux ratios (bright / faint), >= 1.
    n_per_cell : int, optional
        Pairs per (separation, ratio) combination, each at a random
        orientation and sub-pixel position.
    fwhm, beta : float, optional
        Moffat PSF FWHM (pixels) and beta.
    peak_snr : float, optional
        Peak signal-to-noise of the brighter star.
    sky, noise : float, optional
        Flat sky level and Gaussian noise sigma.
    cell : int, optional
        Side of the square cell of each pair, pixels.
    seed : int, optional
        Random seed.

    Returns
    -------
    image : 2D `~numpy.ndarray` of float32
        The image.
    pairs : `~astropy.table.QTable`
        One row per pair: ``x1``, ``y1`` (bright star), ``x2``, ``y2``
        (faint star), ``separation`` (FWHM), ``ratio``, ``flux1``, ``flux2``.
    """
    rng = np.random.default_rng(seed)
    combos = [(s, r) for s in separations for r in ratios for _ in range(int(n_per_cell))]
    ncol = int(np.ceil(np.sqrt(len(combos))))
    nrow = int(np.ceil(len(combos) / ncol))
    ny, nx = nrow * cell, ncol * cell
    yy, xx = np.mgrid[:ny, :nx].astype(float)
    image = np.zeros((ny, nx))
    peak = _moffat(0, 0, 0, 0, fwhm, beta, 1.0)
    flux1 = peak_snr * noise / peak
    rows = []
    for k, (s, r) in enumerate(combos):
        cy = (k // ncol + 0.5) * cell + rng.uniform(-0.5, 0.5)
        cx = (k % ncol + 0.5) * cell + rng.uniform(-0.5, 0.5)
        t = rng.uniform(0, 2 * np.pi)
        d = s * fwhm
        x1, y1 = cx - 0.5 * d * np.cos(t), cy - 0.5 * d * np.sin(t)
        x2, y2 = cx + 0.5 * d * np.cos(t), cy + 0.5 * d * np.sin(t)
        sl = (slice(int(cy - cell / 2), int(cy + cell / 2)),
              slice(int(cx - cell / 2), int(cx + cell / 2)))
        image[sl] += _moffat(xx[sl], yy[sl], x1, y1, fwhm, beta, flux1)
        image[sl] += _moffat(xx[sl], yy[sl], x2, y2, fwhm, beta, flux1 / r)
        rows.append((x1, y1, x2, y2, s, r, flux1, flux1 / r))
    image += sky + rng.normal(0, noise, image.shape)
    names = ('x1', 'y1', 'x2', 'y2', 'separation', 'ratio', 'flux1', 'flux2')
    return image.astype(np.float32), QTable(rows=rows, names=names)


def pair_split(segmentation, pairs):
    """
    Which pairs a segmentation splits into two sources.

    Parameters
    ----------
    segmentation : 2D array-like or `~photutils.segmentation.SegmentationImage` or None
        The detector's labels (None: nothing detected).
    pairs : `~astropy.table.QTable`
        From `star_pair_image`.

    Returns
    -------
    split : `~numpy.ndarray` of bool
        True where both stars' centre pixels are in segments, and in
        different ones.
    """
    if segmentation is None:
        return np.zeros(len(pairs), bool)
    seg = np.asarray(getattr(segmentation, 'data', segmentation))

    def lab(x, y):
        ix = np.clip(np.floor(np.asarray(x, float) + 0.5).astype(int), 0, seg.shape[1] - 1)
        iy = np.clip(np.floor(np.asarray(y, float) + 0.5).astype(int), 0, seg.shape[0] - 1)
        return seg[iy, ix]

    a, b = lab(pairs['x1'], pairs['y1']), lab(pairs['x2'], pairs['y2'])
    return (a > 0) & (b > 0) & (a != b)
