# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Survey-image simulation with exact per-source truth.

Every source is rendered noise-free on its own stamp, so each pixel's
truth is known exactly; the image is then composed (sky, sources,
contaminant light, photon and read noise, charge-like contaminants, dead
pixels, saturation and bleeding).

Definitions (also in the documentation):

footprint
    The pixels where a source's own noise-free profile exceeds
    ``footprint_level`` (default 0.5) times the local background noise
    sigma. Where footprints overlap, the pixel goes to the source whose
    profile is brighter there. Sources whose footprint is empty (too
    faint) or entirely taken by brighter neighbours are injected in the
    image but are not in ``truth``: they are part of the undetectable
    faint population (see ``injected``).
halo
    For the deep-coloring loss: the binary dilation of a footprint by a
    disk of ``radius`` pixels, minus the footprint itself.
snr
    The optimal (matched-filter) signal-to-noise ratio of the noise-free
    source, ``sqrt(sum p**2 / (rms**2 + p / gain))`` over its stamp.
blended
    True when the source's own footprint (before composition) overlaps
    or touches (8-connectivity) pixels that belong to another source.
"""

import math
from functools import cached_property

import numpy as np
from astropy.table import QTable
from photutils.segmentation import SegmentationImage
from scipy import ndimage

from astro_deepcolor.utils._parameters import (
    as_rng,
    check_choice,
    check_fraction,
    check_seed,
    check_shape,
)

from . import contaminants as _cont
from .population import draw_blend_groups, draw_galaxies, draw_stars
from .presets import get_preset
from .profiles import PSFModel, galaxy_stamp, spikes_stamp

__all__ = ['REGIMES', 'SimulatedImage', 'halo_pairs', 'simulate_image']

REGIMES = ('clean', 'contaminated')


class SimulatedImage:
    """
    A simulated survey image and its exact truth.

    Instances are made by `simulate_image`; see there for the meaning of
    each attribute. Arrays are read-only.
    """

    def __init__(self, *, data, noiseless, background, rms, truth, segmentation,
                 contaminants, artefacts, injected, preset, psf, meta):
        self.data = data
        self.noiseless = noiseless
        self.background = background
        self.rms = rms
        self.truth = truth
        self.segmentation = segmentation
        self.contaminants = contaminants
        self.artefacts = artefacts
        self.injected = injected
        self.preset = preset
        self.psf = psf
        self.meta = meta
        for arr in (data, noiseless, background, rms, contaminants, artefacts):
            arr.flags.writeable = False

    def __repr__(self):
        return (f'<SimulatedImage shape={self.shape} regime={self.meta["regime"]!r} '
                f'preset={self.preset.name!r} seed={self.meta["seed"]} '
                f'n_sources={len(self.truth)}>')

    @property
    def shape(self):
        """Image shape ``(ny, nx)``."""
        return self.data.shape

    @property
    def fwhm(self):
        """PSF FWHM of this image in pixels."""
        return self.psf.fwhm

    @cached_property
    def contaminant_classes(self):
        """Names of the contaminant classes present in the image."""
        present = np.bitwise_or.reduce(self.contaminants, axis=None)
        return _cont.decode_contaminants(present)

    def halo_pairs(self, radius=8):
        """
        Halo pixels of every truth source, for the deep-coloring loss.

        Parameters
        ----------
        radius : int, optional
            Halo radius in pixels.

        Returns
        -------
        pixels : `~numpy.ndarray` of int64
            Flat (C-order) pixel indices.
        labels : `~numpy.ndarray` of int32
            The truth label each pixel is a halo pixel of (a pixel can be
            in several halos).
        """
        return halo_pairs(self.segmentation.data, radius)


def halo_pairs(segmentation, radius=8):
    """
    Halo pixels (dilated footprint minus footprint) of every label.

    Parameters
    ----------
    segmentation : 2D `~numpy.ndarray` of int
        Label map, 0 = background.
    radius : int, optional
        Dilation radius in pixels (disk structuring element).

    Returns
    -------
    pixels : `~numpy.ndarray` of int64
        Flat (C-order) pixel indices.
    labels : `~numpy.ndarray` of int32
        Label of the source each halo pixel belongs to.
    """
    segmentation = np.asarray(segmentation)
    if segmentation.ndim != 2:
        msg = f'segmentation must be 2D, got shape {segmentation.shape}'
        raise ValueError(msg)
    radius = int(radius)
    if radius < 1:
        msg = f'radius must be a positive integer, got {radius!r}'
        raise ValueError(msg)
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disk = xx**2 + yy**2 <= radius**2
    ny, nx = segmentation.shape
    pix, lab = [], []
    for label, sl in enumerate(ndimage.find_objects(segmentation), start=1):
        if sl is None:
            continue
        y0, y1 = max(0, sl[0].start - radius), min(ny, sl[0].stop + radius)
        x0, x1 = max(0, sl[1].start - radius), min(nx, sl[1].stop + radius)
        fp = segmentation[y0:y1, x0:x1] == label
        halo = ndimage.binary_dilation(fp, structure=disk) & ~fp
        iy, ix = np.nonzero(halo)
        pix.append((iy + y0).astype(np.int64) * nx + (ix + x0))
        lab.append(np.full(iy.size, label, np.int32))
    if not pix:
        return np.zeros(0, np.int64), np.zeros(0, np.int32)
    return np.concatenate(pix), np.concatenate(lab)


def _sky(rng, shape, level, gradient):
    ny, nx = shape
    y = (np.arange(ny, dtype=np.float32) / max(ny - 1, 1) - 0.5)[:, None]
    x = (np.arange(nx, dtype=np.float32) / max(nx - 1, 1) - 0.5)[None, :]
    gx, gy, gxy = rng.normal(0, gradient, 3)
    return (level * (1 + gx * x + gy * y + gxy * x * y)).astype(np.float32)


class _Composer:
    """Accumulates source stamps into the noiseless image and footprints."""

    def __init__(self, shape, rms, level):
        self.shape = shape
        self.rms = rms
        self.level = level
        self.noiseless = np.zeros(shape, np.float64)
        self.best = np.zeros(shape, np.float32)
        self.owner = np.zeros(shape, np.int32)   # source index + 1
        self.own = []                            # per source (slices, mask)

    def add(self, index, stamp, yc, xc):
        sy, sx = stamp.shape
        y0, x0 = yc - sy // 2, xc - sx // 2
        ny, nx = self.shape
        ys = slice(max(0, y0), min(ny, y0 + sy))
        xs = slice(max(0, x0), min(nx, x0 + sx))
        if ys.start >= ys.stop or xs.start >= xs.stop:
            self.own.append(None)
            return None
        st = stamp[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        self.noiseless[ys, xs] += st
        fp = st > self.level * self.rms[ys, xs]
        if fp.any():
            best = self.best[ys, xs]
            win = fp & (st > best)
            best[win] = st[win]
            self.owner[ys, xs][win] = index + 1
            self.own.append((ys, xs, fp))
        else:
            self.own.append(None)
        return ys, xs, st


def simulate_image(shape=(1024, 1024), *, regime='clean', seed=0, preset='decam',
                   density=1.0, footprint_level=0.5, faint_limit=1.0,
                   fwhm=None, blend_groups=0.0):
    """
    Simulate a survey image with exact per-source truth.

    Parameters
    ----------
    shape : int or tuple of 2 int, optional
        Image shape ``(ny, nx)``; an int means a square image.
    regime : {'clean', 'contaminated'}, optional
        ``'clean'``: sources, sky and noise only, on an ideal detector
        (no saturation). ``'contaminated'``: adds the random mix of
        contaminants documented in
        `~astro_deepcolor.simulation.contaminants.CONTAMINATED_MIX`.
    seed : int, optional
        Random seed; the same seed gives the same image.
    preset : str or `SurveyPreset`, optional
        Survey preset ('decam', 'megacam', 'hsc').
    density : float, optional
        Multiplier of the source number counts (crowding knob).
    footprint_level : float, optional
        Footprint threshold as a fraction of the background noise sigma.
    faint_limit : float, optional
        Sources are injected down to the preset's 5-sigma depth plus
        this many magnitudes (fainter ones add nothing detectable).
    fwhm : float, optional
        PSF FWHM in pixels; by default the preset's seeing times a random
        factor in [0.8, 1.25].
    blend_groups : float, optional
        Close pairs and small groups injected per megapixel, on top of the
        natural population (training data: natural fields hold too few
        close blends to learn deblending from). See
        `~astro_deepcolor.simulation.population.draw_blend_groups`;
        primaries have S/N of roughly 10 to 1000 (magnitudes 1 to 6 above
        the image's 5-sigma depth). They are drawn from their own random
        stream, so the rest of the image is the same as with 0 (the
        default). ``truth['group']`` gives each member's group (0 for
        the natural population).

    Returns
    -------
    sim : `SimulatedImage`
        With attributes ``data`` (float32 ADU, sky included),
        ``noiseless`` (float32, sum of the sources), ``background`` (sky,
        float32), ``rms`` (background noise sigma, float32), ``truth``
        (`~astropy.table.QTable`), ``segmentation``
        (`~photutils.segmentation.SegmentationImage` of footprints, labels
        equal to ``truth['label']``), ``contaminants`` (uint16 bitmask,
        see `CONTAMINANT_FLAGS`), ``artefacts`` (float32 noise-free light
        of contaminants), ``injected`` (every injected source, with its
        truth label or 0), ``preset``, ``psf`` and ``meta``.
    """
    shape = check_shape(shape, 'shape')
    check_choice(regime, 'regime', REGIMES)
    seed = check_seed(seed)
    preset = get_preset(preset)
    density = check_fraction(density, 'density', low=0.0, high=100.0)
    footprint_level = check_fraction(footprint_level, 'footprint_level',
                                     low=1e-3, high=100.0)
    rng = as_rng(seed)
    contaminated = regime == 'contaminated'
    ny, nx = shape
    area_mpix = ny * nx / 1e6
    area_deg2 = ny * nx * (preset.pixel_scale / 3600) ** 2

    # Observing conditions of this image.
    psf_fwhm = float(fwhm) if fwhm is not None else preset.fwhm * rng.uniform(0.8, 1.25)
    psf = PSFModel(psf_fwhm, preset.moffat_beta * rng.uniform(0.85, 1.15),
                   aureole_fraction=rng.uniform(0.01, 0.05),
                   ellipticity=rng.uniform(0, 0.06), angle=rng.uniform(0, math.pi))
    sky_level = preset.sky_adu * float(np.exp(rng.normal(0, 0.2)))
    background = _sky(rng, shape, sky_level, 0.08 if contaminated else 0.03)
    rms = (np.sqrt(background * preset.gain + preset.read_noise**2)
           / preset.gain).astype(np.float32)
    sigma = float(np.median(rms))
    spike_angle = rng.uniform(0, math.pi / 2)

    # Populations. Depth scales with this image's seeing and sky.
    depth = (preset.depth - 2.5 * math.log10(psf_fwhm / preset.fwhm)
             - 1.25 * math.log10(sky_level / preset.sky_adu))
    m_faint = depth + faint_limit
    star_mags = draw_stars(rng, 14.0, m_faint, area_deg2, density)
    if contaminated and rng.random() < _cont.CONTAMINATED_MIX['saturation'][0]:
        n_bright = max(1, rng.poisson(_cont.CONTAMINATED_MIX['saturation'][1] * area_mpix))
        star_mags = np.concatenate([star_mags, rng.uniform(11.5, 15.0, n_bright)])
    gal_mags, morphs, comps, radii = draw_galaxies(
        rng, 16.0, m_faint, area_deg2, preset.pixel_scale, density)

    n_star, n_gal = star_mags.size, gal_mags.size
    n_src = n_star + n_gal
    # Positions anywhere, including partly outside the image (edge sources).
    xs = rng.uniform(-3, nx + 2, n_src)
    ys = rng.uniform(-3, ny + 2, n_src)
    group = np.zeros(n_src, np.int32)
    blend_groups = check_fraction(blend_groups, 'blend_groups', low=0.0, high=1e4)
    if blend_groups > 0:
        # A separate stream: the natural image does not change.
        brng = np.random.default_rng(np.random.SeedSequence([seed, 0xB1E4D]))
        inj = draw_blend_groups(
            brng, brng.poisson(blend_groups * area_mpix), shape, fwhm=psf_fwhm,
            m_bright=depth - 6.0, m_faint=depth - 1.0,
            pixel_scale=preset.pixel_scale)
        st = inj['star']
        star_mags = np.concatenate([star_mags, inj['mag'][st]])
        gal_mags = np.concatenate([gal_mags, inj['mag'][~st]])
        morphs = list(morphs) + list(inj['morphs'])
        comps = list(comps) + list(inj['components'])
        radii = np.concatenate([radii, inj['radii']])
        xs = np.concatenate([xs[:n_star], inj['x'][st], xs[n_star:], inj['x'][~st]])
        ys = np.concatenate([ys[:n_star], inj['y'][st], ys[n_star:], inj['y'][~st]])
        group = np.concatenate([group[:n_star], inj['group'][st], group[n_star:],
                                inj['group'][~st]])
        n_star, n_gal = star_mags.size, gal_mags.size
        n_src = n_star + n_gal
    mags = np.concatenate([star_mags, gal_mags])
    flux = preset.mag_to_adu(mags)
    kinds = np.array(['star'] * n_star + ['galaxy'] * n_gal)
    morph = np.array(['psf'] * n_star + list(morphs))
    re_pix = np.concatenate([np.zeros(n_star), radii])
    # Draw in order of decreasing flux so the brightest sources own ties.
    order = np.argsort(-flux, kind='stable')

    composer = _Composer(shape, rms, footprint_level)
    spikes = np.zeros(shape) if contaminated else None
    snr = np.zeros(n_src)
    rendered_flux = np.zeros(n_src)
    kernel = psf.kernel
    for rank, i in enumerate(order):
        xc, yc = int(np.floor(xs[i] + 0.5)), int(np.floor(ys[i] + 0.5))
        dx, dy = xs[i] - xc, ys[i] - yc
        if kinds[i] == 'star':
            r = psf.radius_above(flux[i], 0.05 * sigma)
            half = int(np.clip(math.ceil(r), math.ceil(2 * psf_fwhm), 400))
            stamp = psf.stamp(half, dx, dy, flux[i])
        else:
            c0 = comps[i - n_star]
            n_max = max((c['n'] for c in c0 if c['kind'] == 'sersic'), default=1.0)
            half = int(np.clip(math.ceil(re_pix[i] * (2.5 + 0.6 * n_max) + 2 * psf_fwhm),
                               math.ceil(2 * psf_fwhm), 300))
            stamp = galaxy_stamp(half, dx, dy, flux=flux[i], components=c0,
                                 psf_kernel=kernel)
        placed = composer.add(rank, stamp, yc, xc)
        if placed is None:
            continue
        ysl, xsl, st = placed
        rendered_flux[i] = st.sum()
        var = rms[ysl, xsl] ** 2 + st / preset.gain
        snr[i] = math.sqrt(float((st**2 / var).sum()))
        if spikes is not None and kinds[i] == 'star':
            strength = 2e-4
            peak_spike = strength * flux[i]
            if peak_spike > _cont.FLAG_LEVEL * sigma:
                length = 1.5 * psf_fwhm * (math.sqrt(peak_spike / (0.05 * sigma)) - 1)
                sh = int(np.clip(length, 4, 600))
                sp = spikes_stamp(sh, dx, dy, flux=flux[i], n_spikes=preset.n_spikes,
                                  angle=spike_angle, fwhm=psf_fwhm, strength=strength)
                _cont._paste_add(spikes, sp, yc, xc)

    # Truth labels: sources that own at least one pixel, numbered 1..N in
    # order of decreasing flux.
    owner = composer.owner
    counts = np.bincount(owner.ravel(), minlength=n_src + 1)
    has_fp = counts[1:] > 0
    new_label = np.zeros(n_src + 1, np.int32)
    new_label[1:][has_fp] = np.arange(1, has_fp.sum() + 1, dtype=np.int32)
    segm = new_label[owner]
    blended = np.zeros(n_src, bool)
    near = np.ones((3, 3), bool)
    for rank, own in enumerate(composer.own):
        if own is not None:
            ysl, xsl, fp = own
            owners = owner[ysl, xsl]
            touch = ndimage.binary_dilation(fp, structure=near)
            blended[rank] = bool(np.any((owners[touch] > 0)
                                        & (owners[touch] != rank + 1)))

    # Contaminant light (before photon noise) and flags.
    flags = np.zeros(shape, np.uint16)
    light = np.zeros(shape)
    post = np.zeros(shape)
    dead = None
    if contaminated:
        level = _cont.FLAG_LEVEL * rms
        bits = _cont.CONTAMINANT_FLAGS

        def _flag(name, img):
            flags[np.abs(img) > level] |= bits[name]

        _flag('spike', spikes)
        light += spikes
        n = _cont._count(rng, 'persistence', area_mpix)
        if n:
            img = _cont.persistence(rng, shape, sigma, n)
            _flag('persistence', img)
            light += img
        if _cont._count(rng, 'fringe', area_mpix):
            img = _cont.fringes(rng, shape, sigma)
            _flag('fringe', img)
            light += img
        if _cont._count(rng, 'nebulosity', area_mpix):
            img = _cont.nebulosity(rng, shape, sigma)
            _flag('nebulosity', img)
            light += img
        n = _cont._count(rng, 'trail', area_mpix)
        if n:
            img = _cont.trails(rng, shape, sigma, psf_fwhm, n)
            _flag('trail', img)
            light += img
        n = _cont._count(rng, 'cosmic_ray', area_mpix)
        if n:
            img = _cont.cosmic_rays(rng, shape, sigma, n)
            _flag('cosmic_ray', img)
            post += img
        n = _cont._count(rng, 'hot_pixel', area_mpix)
        if n:
            img = _cont.hot_pixels(rng, shape, sigma, n)
            _flag('hot_pixel', img)
            post += img
        n = _cont._count(rng, 'hot_column', area_mpix)
        if n:
            img = _cont.hot_columns(rng, shape, sigma, n)
            _flag('hot_column', img)
            post += img
        n = _cont._count(rng, 'dead', area_mpix)
        if n:
            dead = _cont.dead_pixels(rng, shape, n)
            flags[dead] |= bits['dead']

    # Photon (Poisson) and read noise, in electrons.
    expected = (background + composer.noiseless + light) * preset.gain
    np.clip(expected, 0, None, out=expected)
    data = rng.poisson(expected).astype(np.float64)
    data += rng.normal(0, preset.read_noise, shape)
    data /= preset.gain
    data += post
    if dead is not None:
        data[dead] = rng.normal(0, preset.read_noise / preset.gain, int(dead.sum()))
    saturated_src = np.zeros(n_src, bool)
    if contaminated:
        satmask = _cont.saturate(data, preset.saturation, rng)
        flags[satmask] |= _cont.CONTAMINANT_FLAGS['saturation']
        if satmask.any():
            sat_owner = np.unique(owner[satmask])
            sat_owner = sat_owner[sat_owner > 0] - 1
            saturated_src[sat_owner] = True

    # Tables (rows indexed by drawing rank).
    idx = order
    label = new_label[1:]
    injected = QTable()
    injected['label'] = label
    injected['x'] = xs[idx]
    injected['y'] = ys[idx]
    injected['flux'] = rendered_flux[idx]
    injected['mag'] = mags[idx]
    injected['kind'] = kinds[idx]
    injected['morphology'] = morph[idx]
    injected['snr'] = snr[idx]
    injected['area'] = counts[1:]
    r_half = np.sqrt(re_pix[idx] ** 2 + (psf_fwhm / 2) ** 2)
    injected['radius'] = r_half
    injected['blended'] = blended & has_fp
    injected['group'] = group[idx]
    injected['saturated'] = saturated_src
    for name in ('x', 'y', 'flux', 'mag', 'snr', 'radius'):
        injected[name].info.format = '.4g'
    truth = injected[has_fp]
    segmentation = SegmentationImage(segm) if segm.any() else SegmentationImage(
        np.zeros(shape, np.int32))

    meta = {'seed': seed, 'regime': regime, 'preset': preset.name, 'density': density,
                'fwhm': psf_fwhm, 'sky': sky_level, 'noise': sigma, 'depth': depth,
                'footprint_level': footprint_level, 'spike_angle': spike_angle,
                'blend_groups': blend_groups}
    truth.meta.update(meta)
    return SimulatedImage(
        data=data.astype(np.float32),
        noiseless=composer.noiseless.astype(np.float32),
        background=background,
        rms=rms,
        truth=truth,
        segmentation=segmentation,
        contaminants=flags,
        artefacts=(light + post).astype(np.float32),
        injected=injected,
        preset=preset,
        psf=psf,
        meta=meta,
    )
