# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Does an image suit the model? Its training domain and a check against it.

The shipped model was trained on simulated ground-based images drawn from
the survey presets of `astro_deepcolor.simulation.PRESETS` (DECam, CFHT
MegaCam, HSC), with each image's seeing drawn between 0.8 and 1.25 times
the preset's median. The network sees pixels, not arcseconds: what matters
is how many pixels the PSF spans (its FWHM in pixels, the sampling). An
image whose stars are much sharper (under-sampled) or much broader than
in training is outside the domain, and the detection quality measured by
the benchmark does not carry over to it.

`check_image_domain` measures an image's PSF FWHM from its bright compact
sources, reads the pixel scale from a WCS when one is given, and warns
(`DomainWarning`) when they lie outside the training domain.
"""

import dataclasses
import warnings

import numpy as np

from .exceptions import DeepColorWarning

__all__ = ['SEEING_SPREAD', 'DomainCheck', 'DomainWarning',
           'check_image_domain', 'measure_fwhm', 'training_domain']

#: Range of each training image's seeing, as factors of its preset's median
#: (the simulator draws the FWHM uniformly in it).
SEEING_SPREAD = (0.8, 1.25)


class DomainWarning(DeepColorWarning):
    """The image lies outside the model's training domain."""


def training_domain():
    """
    The training domain of the shipped model, from the survey presets.

    Returns
    -------
    domain : dict
        ``'fwhm_pix'``: (min, max) PSF FWHM in pixels over all presets and
        seeing draws; ``'pixel_scale'``: (min, max) arcsec per pixel;
        ``'fwhm_arcsec'``: (min, max) seeing in arcsec; ``'depth'``: (min,
        max) 5-sigma point-source AB depth at median seeing; ``'presets'``:
        per preset, a dict of the same quantities.

    Examples
    --------
    >>> from astro_deepcolor.domain import training_domain
    >>> lo, hi = training_domain()['fwhm_pix']
    >>> print(f'{lo:.1f} to {hi:.1f} pixels')
    2.9 to 6.0 pixels
    """
    from .simulation import PRESETS

    lo_f, hi_f = SEEING_SPREAD
    presets = {}
    for name, p in PRESETS.items():
        presets[name] = {
            'fwhm_pix': (lo_f * p.fwhm, hi_f * p.fwhm),
            'fwhm_arcsec': (lo_f * p.fwhm_arcsec, hi_f * p.fwhm_arcsec),
            'pixel_scale': p.pixel_scale, 'depth': p.depth, 'band': p.band}
    vals = list(presets.values())
    return {
        'fwhm_pix': (min(v['fwhm_pix'][0] for v in vals),
                     max(v['fwhm_pix'][1] for v in vals)),
        'fwhm_arcsec': (min(v['fwhm_arcsec'][0] for v in vals),
                        max(v['fwhm_arcsec'][1] for v in vals)),
        'pixel_scale': (min(v['pixel_scale'] for v in vals),
                        max(v['pixel_scale'] for v in vals)),
        'depth': (min(v['depth'] for v in vals),
                  max(v['depth'] for v in vals)),
        'presets': presets,
    }


def measure_fwhm(data, *, mask=None, snr_min=15.0, min_sources=3,
                 max_sources=200):
    """
    Measure the PSF FWHM (pixels) of an image from its compact bright sources.

    Local maxima of the 3 x 3 median-filtered image (which removes cosmic
    rays and hot pixels) at least ``snr_min`` times the background rms
    above the sky (and below 80 % of the image maximum, to skip saturated
    cores), with no brighter peak within 8 pixels, are measured on the
    image by their half-maximum area ``A`` (connected pixels above half
    the peak; elongated regions, axis ratio above 1.4, are skipped):
    ``FWHM = 2 sqrt(A / pi)``. Stars are the most compact sources, so the
    result is the median of the smaller half of these sizes.

    Parameters
    ----------
    data : 2D array-like
        The image (sky included or not).
    mask : 2D bool array-like, optional
        True for pixels to ignore.
    snr_min : float, optional
        Minimum peak height above the sky, in units of the rms.
    min_sources : int, optional
        Fewer measurable sources than this give NaN.
    max_sources : int, optional
        At most this many peaks (the brightest) are measured.

    Returns
    -------
    fwhm : float
        PSF FWHM in pixels (NaN without usable sources).
    n_sources : int
        Number of sources measured.
    """
    from astropy.stats import sigma_clipped_stats
    from photutils.detection import find_peaks
    from scipy import ndimage

    from astro_deepcolor.baselines.base import prepare_image

    if snr_min <= 0:
        msg = f'snr_min must be positive, got {snr_min!r}'
        raise ValueError(msg)
    data, bad = prepare_image(data, mask, dtype=np.float64)
    if bad.all():
        return float('nan'), 0
    _, sky, rms = sigma_clipped_stats(data, mask=bad, sigma=3.0)
    if not rms > 0:
        return float('nan'), 0
    img = np.where(bad, sky, data) - sky
    top = 0.8 * float(img.max())
    # Peaks are found on the 3 x 3 median-filtered image, which removes
    # cosmic rays and hot pixels (sharper than any PSF) but keeps stars.
    smooth = ndimage.median_filter(img, size=3)
    peaks = find_peaks(smooth, snr_min * rms, box_size=17, mask=bad,
                       border_width=8, n_peaks=4 * max_sources)
    if peaks is None:
        return float('nan'), 0
    peaks = peaks[np.asarray(img[peaks['y_peak'], peaks['x_peak']]) < top]
    peaks.sort('peak_value', reverse=True)
    sizes = []
    for row in peaks[:max_sources]:
        x, y = int(row['x_peak']), int(row['y_peak'])
        peak = float(img[y, x])
        # a pixel far above its 3 x 3 median is a cosmic ray or hot pixel
        # (or a star sampled by fewer pixels than any training image)
        if peak > 2.5 * float(smooth[y, x]):
            continue
        half = 12
        y0, x0 = max(y - half, 0), max(x - half, 0)
        cut = img[y0:y + half + 1, x0:x + half + 1]
        above = cut >= 0.5 * peak
        labels, _ = ndimage.label(above)
        lab = labels[y - y0, x - x0]
        if lab == 0:
            continue
        area = int(np.count_nonzero(labels == lab))
        region = labels == lab
        # a half-maximum region touching the cut-out edge is no PSF
        if (region[0].any() or region[-1].any() or region[:, 0].any()
                or region[:, -1].any()):
            continue
        # nor is an elongated one (trail, spike, bleed, cosmic-ray track)
        yy, xx = np.nonzero(region)
        if area >= 3:
            ev = np.linalg.eigvalsh(np.cov(np.vstack([xx, yy])))
            if ev[0] <= 0 or ev[1] > 2.0 * ev[0]:
                continue
        sizes.append(2.0 * np.sqrt(area / np.pi))
    if len(sizes) < min_sources:
        return float('nan'), len(sizes)
    sizes = np.sort(sizes)
    return float(np.median(sizes[:max(1, (len(sizes) + 1) // 2)])), len(sizes)


@dataclasses.dataclass(frozen=True)
class DomainCheck:
    """
    The result of `check_image_domain`.

    Attributes
    ----------
    fwhm : float
        Measured PSF FWHM in pixels (NaN when it could not be measured).
    n_sources : int
        Sources the FWHM was measured on.
    pixel_scale : float or None
        Arcsec per pixel (None without a celestial WCS or ``pixel_scale``).
    fwhm_range : tuple of float
        The training domain's FWHM range (pixels).
    pixel_scale_range : tuple of float
        The training domain's pixel-scale range (arcsec per pixel).
    problems : tuple of str
        What lies outside the domain (empty when the image suits).
    """

    fwhm: float
    n_sources: int
    pixel_scale: float | None
    fwhm_range: tuple
    pixel_scale_range: tuple
    problems: tuple = ()

    @property
    def in_domain(self):
        """True when no problem was found."""
        return not self.problems


def _pixel_scale(wcs):
    from astropy.wcs.utils import proj_plane_pixel_scales

    if not getattr(wcs, 'has_celestial', False):
        return None
    scales = proj_plane_pixel_scales(wcs.celestial) * 3600.0
    return float(np.sqrt(scales[0] * scales[1]))


def check_image_domain(data, *, mask=None, wcs=None, pixel_scale=None,
                       tolerance=0.1, warn=True):
    """
    Check whether an image lies in the model's training domain.

    The PSF FWHM in pixels is measured (`measure_fwhm`) and compared with
    the training range (`training_domain`), widened by ``tolerance`` on
    each side; the pixel scale, when known, is reported and compared too
    (a scale outside the training range only matters through the FWHM in
    pixels, so it is reported but never a problem on its own).

    Parameters
    ----------
    data : 2D array-like
        The image.
    mask : 2D bool array-like, optional
        True for pixels to ignore.
    wcs : `~astropy.wcs.WCS`, optional
        The image's WCS (for its pixel scale).
    pixel_scale : float, optional
        Arcsec per pixel (overrides ``wcs``).
    tolerance : float, optional
        Fractional margin around the training FWHM range.
    warn : bool, optional
        Emit a `DomainWarning` when the image is outside the domain.

    Returns
    -------
    check : `DomainCheck`

    Warns
    -----
    DomainWarning
        When the FWHM is outside the (widened) training range or cannot
        be measured.

    Examples
    --------
    >>> from astro_deepcolor.domain import check_image_domain
    >>> from astro_deepcolor.simulation import simulate_image
    >>> sim = simulate_image((512, 512), regime='clean', preset='decam',
    ...                      seed=5, fwhm=4.5)
    >>> check = check_image_domain(sim.data)
    >>> check.in_domain, round(check.fwhm, 1)
    (True, 4.5)
    """
    if not 0 <= tolerance < 1:
        msg = f'tolerance must be in [0, 1), got {tolerance!r}'
        raise ValueError(msg)
    domain = training_domain()
    lo, hi = domain['fwhm_pix']
    fwhm, n = measure_fwhm(data, mask=mask)
    if pixel_scale is None and wcs is not None:
        pixel_scale = _pixel_scale(wcs)
    problems = []
    if not np.isfinite(fwhm):
        problems.append('the PSF FWHM could not be measured: no bright, '
                        'isolated, resolved source (too few stars, or stars '
                        'sharper than the 3 x 3 pixel median: an '
                        'under-sampled image)')
    elif fwhm < lo * (1 - tolerance):
        problems.append(f'the PSF FWHM is {fwhm:.2f} px, sharper than the '
                        f'training images ({lo:.1f} to {hi:.1f} px): the '
                        'image is under-sampled for the model')
    elif fwhm > hi * (1 + tolerance):
        problems.append(f'the PSF FWHM is {fwhm:.2f} px, broader than the '
                        f'training images ({lo:.1f} to {hi:.1f} px): bin '
                        'the image or expect lower completeness')
    check = DomainCheck(fwhm=fwhm, n_sources=n,
                        pixel_scale=None if pixel_scale is None
                        else float(pixel_scale),
                        fwhm_range=(lo, hi),
                        pixel_scale_range=domain['pixel_scale'],
                        problems=tuple(problems))
    if warn and problems:
        warnings.warn('image outside the training domain of the model: '
                      + '; '.join(problems), DomainWarning, stacklevel=2)
    return check
