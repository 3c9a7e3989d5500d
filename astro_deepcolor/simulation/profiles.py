# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Noise-free source profiles rendered on pixel stamps.

Each function returns a stamp (2D float64, summing to the requested flux
within the stamp) centred on a sub-pixel offset, so that a source at
``(x, y)`` is drawn by adding the stamp at the integer pixel nearest to
``(x, y)``. Profiles are evaluated on a supersampled grid and averaged
into pixels, which integrates cuspy cores (Sersic n > 2) correctly enough
for detection work at a fraction of the cost of GalSim's exact drawing.

PSF: a Moffat core plus a wide Moffat aureole (a few per cent of the
flux, visible around bright stars), as in SkyMaker. Diffraction spikes are
rendered separately (`spikes_stamp`) because they are a contaminant class
of their own: they are part of the light, not of the source footprint.
"""

import math

import numpy as np
from scipy.signal import fftconvolve

__all__ = [
    'PSFModel',
    'galaxy_stamp',
    'sersic_bn',
    'spikes_stamp',
]

# Supersampling factor used for profile evaluation.
_OVERSAMPLE = 3


def _grid(half, dx, dy, oversample=_OVERSAMPLE):
    """Supersampled (xx, yy) offsets from the source centre for a stamp."""
    n = 2 * half + 1
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    coords = (np.arange(n) - half)[:, None] + sub[None, :]
    coords = coords.ravel()
    return coords[None, :] - dx, coords[:, None] - dy


def _bin(image, oversample=_OVERSAMPLE):
    """Average supersampled pixels back to the pixel grid."""
    n = image.shape[0] // oversample
    return image.reshape(n, oversample, n, oversample).mean(axis=(1, 3))


def sersic_bn(n):
    """
    The Sersic b_n constant (Ciotti & Bertin 1999 asymptotic expansion).

    Parameters
    ----------
    n : float
        Sersic index.

    Returns
    -------
    bn : float
        The constant such that r_e encloses half the light.
    """
    return (2 * n - 1 / 3 + 4 / (405 * n) + 46 / (25515 * n**2)
            + 131 / (1148175 * n**3))


class PSFModel:
    """
    Seeing-limited PSF: Moffat core plus Moffat aureole.

    Parameters
    ----------
    fwhm : float
        FWHM of the core in pixels.
    beta : float
        Moffat index of the core.
    aureole_fraction : float, optional
        Fraction of the flux in the aureole.
    aureole_scale : float, optional
        FWHM of the aureole in units of the core FWHM.
    aureole_beta : float, optional
        Moffat index of the aureole (1.5-2 gives r^-3 to r^-4 wings).
    ellipticity : float, optional
        PSF ellipticity (1 - b/a), small for real telescopes.
    angle : float, optional
        Position angle of the major axis, radians.
    """

    def __init__(self, fwhm, beta, *, aureole_fraction=0.03, aureole_scale=4.0,
                 aureole_beta=1.8, ellipticity=0.0, angle=0.0):
        self.fwhm = float(fwhm)
        self.beta = float(beta)
        self.aureole_fraction = float(aureole_fraction)
        self.aureole_scale = float(aureole_scale)
        self.aureole_beta = float(aureole_beta)
        self.ellipticity = float(ellipticity)
        self.angle = float(angle)
        self._kernel = None

    def __repr__(self):
        return (f'PSFModel(fwhm={self.fwhm:.3f}, beta={self.beta:.3f}, '
                f'aureole_fraction={self.aureole_fraction:.3f})')

    @staticmethod
    def _moffat(r2, fwhm, beta):
        alpha = fwhm / (2 * math.sqrt(2 ** (1 / beta) - 1))
        norm = (beta - 1) / (math.pi * alpha**2)
        return norm * (1 + r2 / alpha**2) ** (-beta)

    def _r2(self, xx, yy):
        if self.ellipticity == 0:
            return xx**2 + yy**2
        c, s = math.cos(self.angle), math.sin(self.angle)
        u = xx * c + yy * s
        v = (-xx * s + yy * c) / (1 - self.ellipticity)
        return (u**2 + v**2) * (1 - self.ellipticity)

    def profile(self, r2):
        """
        Surface brightness (per unit flux, per pixel^2) at squared radius r2.

        Parameters
        ----------
        r2 : `~numpy.ndarray`
            Squared radius in pixels^2.

        Returns
        -------
        sb : `~numpy.ndarray`
            Surface brightness.
        """
        f = self.aureole_fraction
        return ((1 - f) * self._moffat(r2, self.fwhm, self.beta)
                + f * self._moffat(r2, self.fwhm * self.aureole_scale,
                                   self.aureole_beta))

    def stamp(self, half, dx=0.0, dy=0.0, flux=1.0):
        """
        Render the PSF on a ``(2*half+1)`` square stamp.

        Parameters
        ----------
        half : int
            Half-size of the stamp.
        dx, dy : float, optional
            Sub-pixel offset of the centre from the stamp centre.
        flux : float, optional
            Total flux of the (untruncated) profile.

        Returns
        -------
        stamp : `~numpy.ndarray`
            The pixelised PSF times ``flux``.
        """
        # The core needs supersampling; the outer parts do not. For big
        # stamps evaluate on the plain grid and only supersample the centre.
        if half <= 12:
            xx, yy = _grid(half, dx, dy)
            return flux * _bin(self.profile(self._r2(xx, yy)))
        xx, yy = _grid(half, dx, dy, oversample=1)
        out = self.profile(self._r2(xx, yy))
        c = 8
        sl = slice(half - c, half + c + 1)
        sx, sy = _grid(c, dx, dy)
        out[sl, sl] = _bin(self.profile(self._r2(sx, sy)))
        return flux * out

    @property
    def kernel(self):
        """Pixelised, normalised PSF kernel used to convolve galaxies."""
        if self._kernel is None:
            half = max(7, math.ceil(2.5 * self.fwhm))
            k = self.stamp(half)
            self._kernel = k / k.sum()
        return self._kernel

    def radius_above(self, flux, level):
        """
        Radius (pixels) beyond which ``flux * profile`` drops below ``level``.

        Parameters
        ----------
        flux : float
            Total flux.
        level : float
            Surface-brightness level per pixel.

        Returns
        -------
        radius : float
            The radius (0 if the peak is already below ``level``).
        """
        r = np.geomspace(0.5, 2000.0, 200)
        sb = flux * self.profile(r**2)
        above = np.nonzero(sb > level)[0]
        return 0.0 if above.size == 0 else float(r[above[-1]])


def galaxy_stamp(half, dx, dy, *, flux, components, psf_kernel):
    """
    Render a PSF-convolved galaxy made of Sersic and clump components.

    Parameters
    ----------
    half : int
        Half-size of the stamp.
    dx, dy : float
        Sub-pixel offset of the centre.
    flux : float
        Total flux (the returned stamp sums to it).
    components : list of dict
        Each has ``kind`` ('sersic' or 'gauss'), ``frac`` (flux fraction),
        and for 'sersic': ``n``, ``re`` (half-light radius, pixels), ``q``
        (axis ratio), ``pa`` (radians); for 'gauss': ``sigma``, ``x0``,
        ``y0`` (offsets in pixels).
    psf_kernel : `~numpy.ndarray`
        Normalised PSF kernel.

    Returns
    -------
    stamp : `~numpy.ndarray`
        The noise-free galaxy, ``(2*half+1)`` square.
    """
    # Supersample only small galaxies (cuspy cores matter); large ones are
    # smooth on the pixel scale once convolved with the PSF.
    min_re = min((c['re'] for c in components if c['kind'] == 'sersic'),
                 default=10.0)
    oversample = _OVERSAMPLE if (min_re < 4 and half <= 40) else 1
    xx, yy = _grid(half, dx, dy, oversample=oversample)
    img = np.zeros((xx.shape[1], xx.shape[1]))
    for comp in components:
        if comp['kind'] == 'sersic':
            c, s = math.cos(comp['pa']), math.sin(comp['pa'])
            u = xx * c + yy * s
            v = -xx * s + yy * c
            r = np.sqrt(u**2 + (v / comp['q']) ** 2) / comp['re']
            n = comp['n']
            prof = np.exp(-sersic_bn(n) * (r ** (1 / n) - 1))
        else:
            prof = np.exp(-((xx - comp['x0']) ** 2 + (yy - comp['y0']) ** 2)
                          / (2 * comp['sigma'] ** 2))
        total = prof.sum()
        if total > 0:
            img += comp['frac'] * prof / total
    if oversample > 1:
        img = _bin(img, oversample)
    img = fftconvolve(img, psf_kernel, mode='same')
    np.clip(img, 0, None, out=img)
    total = img.sum()
    return img * (flux / total) if total > 0 else img


def spikes_stamp(half, dx, dy, *, flux, n_spikes, angle, fwhm, strength):
    """
    Render diffraction spikes of a star (without the star itself).

    Each spike is a ray from the centre whose intensity falls off as
    ``(l0 / (l + l0))**2`` along its length (the far-field pattern of a
    straight vane) with a Gaussian transverse profile of the PSF width, so
    longer and brighter spikes come with brighter stars as in SkyMaker.

    Parameters
    ----------
    half : int
        Half-size of the stamp.
    dx, dy : float
        Sub-pixel offset of the centre.
    flux : float
        Flux of the star.
    n_spikes : int
        Number of spikes, evenly spaced in angle.
    angle : float
        Orientation of the first spike, radians.
    fwhm : float
        PSF FWHM in pixels (sets the spike width and scale length).
    strength : float
        Peak spike surface brightness as a fraction of ``flux`` per pixel.

    Returns
    -------
    stamp : `~numpy.ndarray`
        The spike light.
    """
    xx, yy = _grid(half, dx, dy, oversample=1)
    out = np.zeros((xx.shape[1], xx.shape[1]))
    sigma = 0.35 * fwhm
    l0 = 1.5 * fwhm
    for i in range(n_spikes):
        a = angle + 2 * math.pi * i / n_spikes
        along = xx * math.cos(a) + yy * math.sin(a)
        perp = -xx * math.sin(a) + yy * math.cos(a)
        ray = np.where(along > 0, (l0 / (along + l0)) ** 2, 0.0)
        out += ray * np.exp(-0.5 * (perp / sigma) ** 2)
    # The PSF core dominates the centre: taper spikes inside ~1 FWHM.
    r2 = xx**2 + yy**2
    out *= 1 - np.exp(-r2 / (2 * fwhm**2))
    return strength * flux * out
