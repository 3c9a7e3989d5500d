# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Source populations: magnitudes from number counts, sizes and morphologies.

Galaxy counts follow ``dN/dm = N0 * 10**(alpha * (m - 24))`` per square
degree per magnitude with ``alpha = 0.33`` and ``N0 = 2.5e4`` (r band,
deep-field counts, e.g. Metcalfe et al. 2001); star counts ``alpha = 0.12``
and ``N0 = 4e3`` at m = 22 (intermediate Galactic latitude). So most
sources are faint, near or below the detection limit, and blends arise
naturally; ``density`` scales both for crowded or sparse fields.

Galaxy half-light radii shrink with magnitude
(``r_e = 0.5" * 10**(-0.15 (m - 23))`` with 0.25 dex log-normal scatter);
morphologies are drawn from single Sersic (n from 0.5 to 6), bulge + disk,
pure disks at random inclination (edge-on ones included) and clumpy
irregulars.
"""

import math

import numpy as np

__all__ = ['draw_blend_groups', 'draw_galaxies', 'draw_magnitudes', 'draw_stars',
           'galaxy_shapes']

GALAXY_COUNTS = {'alpha': 0.33, 'n0': 2.5e4, 'm0': 24.0}
STAR_COUNTS = {'alpha': 0.12, 'n0': 4.0e3, 'm0': 22.0}

MORPHOLOGIES = ('sersic', 'bulge_disk', 'disk', 'edge_on', 'irregular')
_MORPH_P = (0.35, 0.28, 0.17, 0.08, 0.12)


def _expected_number(counts, m_bright, m_faint, area_deg2):
    a = counts['alpha']
    integral = (10 ** (a * (m_faint - counts['m0'])) - 10 ** (a * (m_bright - counts['m0']))) / (
        a * math.log(10)
    )
    return counts['n0'] * integral * area_deg2


def draw_magnitudes(rng, counts, m_bright, m_faint, area_deg2, density=1.0):
    """
    Draw magnitudes from a power-law number count.

    Parameters
    ----------
    rng : `numpy.random.Generator`
        Random generator.
    counts : dict
        ``alpha``, ``n0`` (per deg^2 per mag at ``m0``) and ``m0``.
    m_bright, m_faint : float
        Magnitude range.
    area_deg2 : float
        Area in square degrees.
    density : float, optional
        Multiplier of the expected number.

    Returns
    -------
    mags : `~numpy.ndarray`
        The magnitudes (Poisson-distributed count).
    """
    n = rng.poisson(density * _expected_number(counts, m_bright, m_faint, area_deg2))
    a = counts['alpha']
    lo, hi = 10 ** (a * m_bright), 10 ** (a * m_faint)
    return np.log10(lo + rng.random(n) * (hi - lo)) / a


def draw_stars(rng, m_bright, m_faint, area_deg2, density=1.0):
    """Star magnitudes (see `draw_magnitudes`)."""
    return draw_magnitudes(rng, STAR_COUNTS, m_bright, m_faint, area_deg2, density)


def draw_galaxies(rng, m_bright, m_faint, area_deg2, pixel_scale, density=1.0):
    """
    Galaxy magnitudes and morphologies.

    Parameters
    ----------
    rng : `numpy.random.Generator`
        Random generator.
    m_bright, m_faint : float
        Magnitude range.
    area_deg2 : float
        Area in square degrees.
    pixel_scale : float
        Arcsec per pixel (sizes are returned in pixels).
    density : float, optional
        Multiplier of the expected number.

    Returns
    -------
    mags : `~numpy.ndarray`
        Magnitudes.
    morphs : list of str
        Morphology of each galaxy.
    components : list of list of dict
        Profile components for `~astro_deepcolor.simulation.profiles.galaxy_stamp`.
    radii : `~numpy.ndarray`
        Intrinsic half-light radius (major axis) in pixels.
    """
    mags = draw_magnitudes(rng, GALAXY_COUNTS, m_bright, m_faint, area_deg2, density)
    return (mags, *galaxy_shapes(rng, mags, pixel_scale))


def galaxy_shapes(rng, mags, pixel_scale):
    """
    Morphologies and sizes of galaxies of given magnitudes.

    The half-light radius follows ``0.5 arcsec * 10**(-0.15 (m - 23))``
    with a 0.25 dex log-normal scatter; the morphology is drawn from
    ``MORPHOLOGIES``.

    Parameters
    ----------
    rng : `numpy.random.Generator`
        Random generator.
    mags : `~numpy.ndarray`
        Magnitudes.
    pixel_scale : float
        Arcsec per pixel.

    Returns
    -------
    morphs, components, radii
        As in `draw_galaxies`.
    """
    mags = np.asarray(mags, dtype=float)
    re_arcsec = 0.5 * 10 ** (-0.15 * (mags - 23)) * 10 ** rng.normal(0, 0.25, mags.size)
    radii = np.clip(re_arcsec / pixel_scale, 0.3, 250)
    morphs = list(rng.choice(MORPHOLOGIES, size=mags.size, p=_MORPH_P))
    components = [_components(rng, m, re) for m, re in zip(morphs, radii, strict=True)]
    return morphs, components, radii


def _inclined_q(rng, q0=0.12):
    cosi = rng.random()
    return math.sqrt(cosi**2 + q0**2 * (1 - cosi**2))


def _components(rng, morph, re):
    pa = rng.uniform(0, math.pi)
    if morph == 'sersic':
        n = float(np.exp(rng.uniform(math.log(0.5), math.log(6.0))))
        return [
            {'kind': 'sersic', 'frac': 1.0, 'n': n, 're': re, 'q': rng.uniform(0.25, 1.0), 'pa': pa}
        ]
    if morph == 'bulge_disk':
        bt = rng.uniform(0.05, 0.8)
        q = _inclined_q(rng)
        return [
            {'kind': 'sersic', 'frac': 1 - bt, 'n': 1.0, 're': re, 'q': q, 'pa': pa},
            {
                'kind': 'sersic',
                'frac': bt,
                'n': 4.0,
                're': re * rng.uniform(0.2, 0.6),
                'q': min(1.0, q + rng.uniform(0.2, 0.6)),
                'pa': pa,
            },
        ]
    if morph == 'disk':
        return [
            {'kind': 'sersic', 'frac': 1.0, 'n': 1.0, 're': re, 'q': _inclined_q(rng), 'pa': pa}
        ]
    if morph == 'edge_on':
        return [
            {
                'kind': 'sersic',
                'frac': 0.9,
                'n': 1.0,
                're': re,
                'q': rng.uniform(0.06, 0.18),
                'pa': pa,
            },
            {'kind': 'sersic', 'frac': 0.1, 'n': 2.0, 're': re * 0.25, 'q': 0.6, 'pa': pa},
        ]
    # irregular/clumpy: a low-concentration disk plus star-forming clumps
    n_clumps = int(rng.integers(2, 8))
    frac_clumps = rng.uniform(0.2, 0.6)
    comps = [
        {
            'kind': 'sersic',
            'frac': 1 - frac_clumps,
            'n': rng.uniform(0.5, 1.0),
            're': re,
            'q': rng.uniform(0.3, 1.0),
            'pa': pa,
        }
    ]
    w = rng.dirichlet(np.ones(n_clumps)) * frac_clumps
    for wi in w:
        r = re * math.sqrt(rng.random()) * 1.5
        t = rng.uniform(0, 2 * math.pi)
        comps.append(
            {
                'kind': 'gauss',
                'frac': float(wi),
                'sigma': max(0.3, re * rng.uniform(0.08, 0.25)),
                'x0': r * math.cos(t),
                'y0': r * math.sin(t),
            }
        )
    return comps


def draw_blend_groups(rng, n_groups, shape, *, fwhm, m_bright, m_faint, pixel_scale,
                      star_fraction=0.5):
    """
    Close pairs and small groups of sources, to inject into an image.

    Natural fields hold few close blends, so a network trained on them
    alone never learns to tell touching neighbours apart. Each group has
    2 (60 %), 3 (25 %) or 4 (15 %) members, each a star with probability
    ``star_fraction``, else a galaxy (`galaxy_shapes`). The primary lies
    anywhere in the image with its magnitude uniform in
    ``[m_bright, m_faint]``; every other member is fainter by a flux ratio
    log-uniform in [1, 10] and lies at a random angle from a random
    earlier member, at a separation uniform in 1-4 times the pair's
    combined size ``sqrt(fwhm**2 + r_a**2 + r_b**2)`` (``r`` the
    half-light radius, 0 for a star), which is 1-4 FWHM for two stars.

    Parameters
    ----------
    rng : `numpy.random.Generator`
        Random generator.
    n_groups : int
        Number of groups.
    shape : tuple of 2 int
        Image shape ``(ny, nx)``.
    fwhm : float
        PSF FWHM in pixels.
    m_bright, m_faint : float
        Magnitude range of the primaries.
    pixel_scale : float
        Arcsec per pixel.
    star_fraction : float, optional
        Probability that a member is a star.

    Returns
    -------
    groups : dict
        ``x``, ``y``, ``mag``, ``group`` (1-based group id) and ``star``
        (bool) arrays, one entry per member; ``morphs``, ``components``
        and ``radii`` (pixels) of the galaxy members, in member order.
    """
    ny, nx = shape
    xs, ys, mags, gid, star, rad = [], [], [], [], [], []
    for g in range(int(n_groups)):
        size = int(rng.choice([2, 3, 4], p=[0.6, 0.25, 0.15]))
        m0 = rng.uniform(m_bright, m_faint)
        is_star = rng.random(size) < star_fraction
        m = np.concatenate([[m0], m0 + 2.5 * np.log10(
            np.exp(rng.uniform(0, math.log(10.0), size - 1)))])
        # Half-light radius of each member (0 for stars), as galaxy_shapes
        # would draw it, to place members by their combined size.
        r = np.where(is_star, 0.0, np.clip(
            0.5 * 10 ** (-0.15 * (m - 23)) / pixel_scale, 0.3, 250))
        x = [rng.uniform(0, nx - 1)]
        y = [rng.uniform(0, ny - 1)]
        for k in range(1, size):
            j = int(rng.integers(k))
            sep = rng.uniform(1, 4) * math.sqrt(fwhm**2 + r[j]**2 + r[k]**2)
            t = rng.uniform(0, 2 * math.pi)
            x.append(x[j] + sep * math.cos(t))
            y.append(y[j] + sep * math.sin(t))
        xs += x
        ys += y
        mags += list(m)
        gid += [g + 1] * size
        star += list(is_star)
        rad += list(r)
    mags = np.asarray(mags, dtype=float)
    star = np.asarray(star, dtype=bool)
    morphs, comps, radii = galaxy_shapes(rng, mags[~star], pixel_scale)
    return {'x': np.asarray(xs, dtype=float), 'y': np.asarray(ys, dtype=float),
            'mag': mags, 'group': np.asarray(gid, dtype=np.int32), 'star': star,
            'morphs': morphs, 'components': comps, 'radii': radii}
