# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Image contaminants: everything that is not a source but makes classical
detectors fire.

Each class has its own bit in the `SimulatedImage.contaminants` bitmask
(`CONTAMINANT_FLAGS`, after the MaxiMask classes of Paillassa et al. 2020).
A pixel is flagged when the contaminant changes it by more than
``FLAG_LEVEL`` times the local background noise, the same criterion that
defines source footprints, so flags and footprints are comparable.

The generators work in ADU on the noise scale ``sigma`` of the image.
Light-like contaminants (fringes, nebulosity, trails, persistence,
diffraction spikes) are added before photon noise; charge-like ones
(cosmic rays, hot pixels and columns) after it; dead pixels replace the
value; saturation and bleeding are applied last, to the final image.

`CONTAMINATED_MIX` documents the random mix of the ``'contaminated'``
regime: for each class the probability that an image has it at all and
the mean number of instances per megapixel when it does. Rates are those
of real CCDs (e.g. cosmic rays ~1-2 per cm^2 per minute at sea level,
a few hot columns and a few hundred hot pixels per 2k x 4k device) scaled
up by a factor of a few so that every class appears often enough in
training and benchmark sets; ``'clean'`` images have none.
"""

import math

import numpy as np
from scipy import ndimage

__all__ = [
    'CONTAMINANT_FLAGS',
    'CONTAMINATED_MIX',
    'FLAG_LEVEL',
    'decode_contaminants',
]

CONTAMINANT_FLAGS = {
    'cosmic_ray': 1,
    'hot_pixel': 2,
    'hot_column': 4,
    'dead': 8,
    'persistence': 16,
    'fringe': 32,
    'nebulosity': 64,
    'trail': 128,
    'saturation': 256,
    'spike': 512,
}

#: Pixels changed by more than this many background sigma are flagged.
FLAG_LEVEL = 0.5

#: Random mix of the 'contaminated' regime: (probability an image has the
#: class, mean instances per megapixel when it does).
CONTAMINATED_MIX = {
    'cosmic_ray': (1.0, 60.0),     # dots, tracks and worms
    'hot_pixel': (1.0, 150.0),     # isolated hot pixels
    'hot_column': (0.7, 3.0),      # hot column/line segments and clusters
    'dead': (0.7, 4.0),            # dead columns/lines/clusters/pixels
    'persistence': (0.5, 3.0),     # ghosts of earlier saturated stars
    'fringe': (0.35, 1.0),         # one fringe pattern over the image
    'nebulosity': (0.35, 1.0),     # one nebulous structure
    'trail': (0.5, 1.0),           # satellite or aircraft trails
    'saturation': (0.8, 1.5),      # extra bright (saturated) stars
    'spike': (1.0, 0.0),           # every bright star gets spikes
}


def decode_contaminants(bitmask):
    """
    List the contaminant classes set in a bitmask value.

    Parameters
    ----------
    bitmask : int
        A value of `SimulatedImage.contaminants`.

    Returns
    -------
    names : list of str
        The classes whose bit is set.
    """
    return [name for name, bit in CONTAMINANT_FLAGS.items() if int(bitmask) & bit]


def _count(rng, name, area_mpix):
    prob, rate = CONTAMINATED_MIX[name]
    if rng.random() >= prob:
        return 0
    return max(1, rng.poisson(rate * area_mpix))


def _draw_polyline(shape, xs, ys, width, amps):
    """Rasterise a dense polyline (points spaced < 0.5 px) with a Gaussian
    cross-section by splatting points; returns a float image.
    """
    ny, nx = shape
    img = np.zeros(shape)
    r = max(1, math.ceil(2.5 * width))
    for ox in range(-r, r + 1):
        for oy in range(-r, r + 1):
            px = np.round(xs).astype(int) + ox
            py = np.round(ys).astype(int) + oy
            ok = (px >= 0) & (px < nx) & (py >= 0) & (py < ny)
            d2 = (px - xs) ** 2 + (py - ys) ** 2
            w = np.exp(-0.5 * d2 / width**2)
            np.add.at(img, (py[ok], px[ok]), (amps * w)[ok])
    return img


def cosmic_rays(rng, shape, sigma, count):
    """
    Cosmic-ray hits: dots, straight tracks and curly worms.

    They are sharp (never PSF-convolved) and bright, the classic
    false-detection source of single exposures.

    Returns
    -------
    image : `~numpy.ndarray`
        Deposited charge in ADU.
    """
    ny, nx = shape
    img = np.zeros(shape)
    for _ in range(count):
        kind = rng.choice(['dot', 'track', 'worm'], p=[0.5, 0.35, 0.15])
        amp = sigma * 10 ** rng.uniform(1.0, 2.7)
        x0, y0 = rng.uniform(0, nx), rng.uniform(0, ny)
        if kind == 'dot':
            npx = rng.integers(1, 5)
            px = np.clip(np.round(x0 + rng.normal(0, 0.7, npx)), 0, nx - 1).astype(int)
            py = np.clip(np.round(y0 + rng.normal(0, 0.7, npx)), 0, ny - 1).astype(int)
            np.add.at(img, (py, px), amp * rng.uniform(0.3, 1.0, npx))
            continue
        length = rng.uniform(5, 40) if kind == 'track' else rng.uniform(10, 50)
        n = int(length * 3)
        if kind == 'track':
            a = rng.uniform(0, math.pi)
            t = np.linspace(0, length, n)
            xs, ys = x0 + t * math.cos(a), y0 + t * math.sin(a)
        else:
            steps = rng.normal(0, 0.35, n).cumsum() + rng.uniform(0, 2 * math.pi)
            xs = x0 + np.cumsum(np.cos(steps)) / 3
            ys = y0 + np.cumsum(np.sin(steps)) / 3
        amps = amp * rng.uniform(0.4, 1.0) / 3 * np.ones(n)
        img += _draw_polyline(shape, xs, ys, 0.45, amps)
    return img


def hot_pixels(rng, shape, sigma, count):
    """Isolated hot pixels (ADU to add)."""
    img = np.zeros(shape)
    py = rng.integers(0, shape[0], count)
    px = rng.integers(0, shape[1], count)
    img[py, px] += sigma * 10 ** rng.uniform(0.7, 3.0, count)
    return img


def hot_columns(rng, shape, sigma, count):
    """Hot column and line segments and small hot clusters (ADU to add)."""
    ny, nx = shape
    img = np.zeros(shape)
    for _ in range(count):
        kind = rng.choice(['column', 'line', 'cluster'], p=[0.6, 0.2, 0.2])
        amp = sigma * 10 ** rng.uniform(0.5, 2.0)
        if kind == 'column':
            x = rng.integers(0, nx)
            y0 = rng.integers(0, ny)
            y1 = min(ny, y0 + rng.integers(ny // 8 + 1, ny + 1))
            img[y0:y1, x] += amp
        elif kind == 'line':
            y = rng.integers(0, ny)
            x0 = rng.integers(0, nx)
            x1 = min(nx, x0 + rng.integers(nx // 8 + 1, nx + 1))
            img[y, x0:x1] += amp
        else:
            blob = _random_blob(rng, rng.integers(2, 6))
            _paste_add(img, blob * amp, rng.integers(0, ny), rng.integers(0, nx))
    return img


def dead_pixels(rng, shape, count):
    """
    Dead columns, lines, clusters and pixels.

    Returns
    -------
    mask : `~numpy.ndarray` of bool
        Pixels whose value is replaced by (nearly) zero signal.
    """
    ny, nx = shape
    mask = np.zeros(shape, bool)
    for _ in range(count):
        kind = rng.choice(['column', 'line', 'cluster', 'pixels'],
                          p=[0.45, 0.15, 0.2, 0.2])
        if kind == 'column':
            x = rng.integers(0, nx)
            y0 = rng.integers(0, ny)
            mask[y0:min(ny, y0 + rng.integers(ny // 8 + 1, ny + 1)), x] = True
        elif kind == 'line':
            y = rng.integers(0, ny)
            x0 = rng.integers(0, nx)
            mask[y, x0:min(nx, x0 + rng.integers(nx // 8 + 1, nx + 1))] = True
        elif kind == 'cluster':
            blob = _random_blob(rng, rng.integers(2, 8)) > 0
            tmp = np.zeros(shape)
            _paste_add(tmp, blob.astype(float), rng.integers(0, ny), rng.integers(0, nx))
            mask |= tmp > 0
        else:
            k = rng.integers(5, 30)
            mask[rng.integers(0, ny, k), rng.integers(0, nx, k)] = True
    return mask


def persistence(rng, shape, sigma, count):
    """
    Ghosts of saturated stars of an earlier exposure: flat-topped discs
    with soft edges, sometimes with a short column tail (ADU to add).
    """
    ny, nx = shape
    img = np.zeros(shape)
    for _ in range(count):
        rad = rng.uniform(2.5, 10)
        amp = sigma * rng.uniform(2, 25)
        h = math.ceil(rad + 4)
        yy, xx = np.mgrid[-h:h + 1, -h:h + 1]
        disc = amp / (1 + np.exp((np.hypot(xx, yy) - rad) / 0.7))
        if rng.random() < 0.4:
            tail = int(rng.uniform(5, 40))
            col = np.zeros((2 * h + 1 + 2 * tail, 2 * h + 1))
            col[tail:tail + 2 * h + 1] = disc
            w = max(1, int(rad // 2))
            col[:, h - w:h + w + 1] += 0.3 * amp * np.exp(
                -np.abs(np.arange(col.shape[0]) - col.shape[0] / 2)[:, None]
                / (tail / 2 + 1))
            disc = col
        _paste_add(img, disc, rng.integers(0, ny), rng.integers(0, nx))
    return img


def _smooth_field(rng, shape, scale, slope=3.0):
    """Gaussian random field with power spectrum ~k^-slope above ``scale``,
    made at low resolution and upsampled (fast for big images).
    """
    f = max(1, int(scale // 8))
    small = (shape[0] // f + 2, shape[1] // f + 2)
    ky = np.fft.fftfreq(small[0])[:, None]
    kx = np.fft.rfftfreq(small[1])[None, :]
    k = np.hypot(kx, ky) * f
    k[0, 0] = np.inf
    amp = k ** (-slope / 2) * np.exp(-(k * scale) ** -2 * 0)  # pure power law
    amp[k < 1 / (4 * scale)] *= (k[k < 1 / (4 * scale)] * 4 * scale) ** 2
    noise = rng.normal(size=small[0] * (small[1] // 2 + 1) * 2).view(complex)
    field = np.fft.irfft2(amp * noise.reshape(amp.shape), s=small)
    field = ndimage.zoom(field, f, order=1)[:shape[0], :shape[1]]
    field -= field.mean()
    return field / (field.std() + 1e-30)


def fringes(rng, shape, sigma):
    """
    Interference fringes: a band-limited wavy pattern of wavelength
    20-80 px whose amplitude varies slowly over the image (ADU to add).
    """
    ny, nx = shape
    wavelength = rng.uniform(20, 80)
    f = 4
    small = (ny // f + 2, nx // f + 2)
    ky = np.fft.fftfreq(small[0])[:, None]
    kx = np.fft.rfftfreq(small[1])[None, :]
    k = np.hypot(kx, ky) * f * wavelength
    ring = np.exp(-0.5 * ((k - 1) / 0.15) ** 2)
    noise = rng.normal(size=(small[0], small[1] // 2 + 1, 2)).view(complex)[..., 0]
    field = np.fft.irfft2(ring * noise, s=small)
    if not field.std() > 1e-8:
        # On small images the frequency grid is too coarse for the ring to
        # hold any power: normalising round-off would give absurd values.
        # Widen the ring to two grid steps (same random phases).
        dk = f * wavelength / min(small)
        ring = np.exp(-0.5 * ((k - 1) / max(0.15, 2 * dk)) ** 2)
        field = np.fft.irfft2(ring * noise, s=small)
    field = ndimage.zoom(field, f, order=1)[:ny, :nx]
    field /= field.std() + 1e-30
    envelope = 0.5 + 0.5 * (1 + _smooth_field(rng, shape, max(ny, nx) / 2)) / 2
    return sigma * rng.uniform(1.0, 4.0) * field * envelope


def nebulosity(rng, shape, sigma):
    """
    Diffuse nebulosity: a log-normal random field with structure from
    ~50 to several hundred pixels, much larger than galaxies, covering
    part of the image (ADU to add).
    """
    ny, nx = shape
    scale = rng.uniform(60, 300)
    field = np.exp(0.8 * _smooth_field(rng, shape, scale, slope=3.5))
    cover = _smooth_field(rng, shape, max(ny, nx) / 1.5)
    # Confine the cloud to part of the image (zero weight elsewhere).
    weight = np.clip((cover - rng.uniform(-0.3, 1.0)) * 1.5, 0, 1)
    neb = field * weight
    return sigma * rng.uniform(2.0, 12.0) * neb / (neb.max() + 1e-30) * 2


def trails(rng, shape, sigma, psf_fwhm, count):
    """
    Satellite trails (one continuous line across the image, PSF-wide)
    and aircraft trails (two or three parallel dashed lines) (ADU to add).
    """
    ny, nx = shape
    img = np.zeros(shape)
    for _ in range(count):
        aircraft = rng.random() < 0.25
        a = rng.uniform(0, math.pi)
        cx, cy = rng.uniform(0, nx), rng.uniform(0, ny)
        length = 2 * math.hypot(nx, ny)
        n = int(length * 2.5)
        t = np.linspace(-length / 2, length / 2, n)
        amp = sigma * 10 ** rng.uniform(0.4, 1.6)
        width = psf_fwhm / 2.3548 * rng.uniform(0.6, 1.2)
        offsets = [0.0]
        if aircraft:
            offsets = [-3 * width, 3 * width] + ([0.0] if rng.random() < 0.5 else [])
        for off in offsets:
            xs = cx + t * math.cos(a) - off * math.sin(a)
            ys = cy + t * math.sin(a) + off * math.cos(a)
            keep = (xs > -5) & (xs < nx + 5) & (ys > -5) & (ys < ny + 5)
            amps = np.full(n, amp / 2.5 / (2 * math.pi * width**2) ** 0.5)
            if aircraft:  # flashing lights: dashes
                amps *= (np.sin(t / rng.uniform(5, 15)) > 0)
            img += _draw_polyline(shape, xs[keep], ys[keep], width, amps[keep])
    return img


def saturate(image, saturation, rng):
    """
    Clip pixels at ``saturation`` and bleed the excess charge along columns.

    The charge above full well in each saturated run of a column spills
    into the pixels above and below it (a random up/down split), which
    are then at saturation too, as in real CCDs.

    Parameters
    ----------
    image : `~numpy.ndarray`
        Image in ADU, modified in place.
    saturation : float
        Saturation level in ADU.
    rng : `numpy.random.Generator`
        Random generator.

    Returns
    -------
    mask : `~numpy.ndarray` of bool
        Saturated and bleed pixels.
    """
    sat = image >= saturation
    if not sat.any():
        return sat
    ny = image.shape[0]
    mask = sat.copy()
    labels, _ = ndimage.label(sat, structure=[[0, 1, 0], [0, 1, 0], [0, 1, 0]])
    for sl in ndimage.find_objects(labels):
        y0, y1 = sl[0].start, sl[0].stop
        x = sl[1].start
        excess = float((image[y0:y1, x] - saturation).sum())
        n_bleed = int(excess / saturation)
        up = int(n_bleed * rng.uniform(0.3, 0.7))
        lo, hi = max(0, y0 - (n_bleed - up)), min(ny, y1 + up)
        mask[lo:hi, x] = True
    image[mask] = saturation
    return mask


def _random_blob(rng, size):
    """A small random connected blob (float array, 1 inside)."""
    n = 2 * size + 1
    blob = np.zeros((n, n))
    y = x = size
    for _ in range(size * 3):
        blob[y, x] = 1
        y = int(np.clip(y + rng.integers(-1, 2), 0, n - 1))
        x = int(np.clip(x + rng.integers(-1, 2), 0, n - 1))
    return blob


def _paste_add(img, stamp, yc, xc):
    """Add ``stamp`` centred at (yc, xc) into ``img``, clipping at edges."""
    sy, sx = stamp.shape
    y0, x0 = yc - sy // 2, xc - sx // 2
    ys = slice(max(0, y0), min(img.shape[0], y0 + sy))
    xs = slice(max(0, x0), min(img.shape[1], x0 + sx))
    if ys.start >= ys.stop or xs.start >= xs.stop:
        return
    img[ys, xs] += stamp[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
