# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Survey presets: the instrument and observing conditions of a simulation.

A preset fixes everything that turns magnitudes into ADU and sets the
noise: pixel scale, seeing, zero point, exposure time, sky brightness,
gain, read noise and saturation. The 5-sigma point-source depth follows
from these (`SurveyPreset.depth`), so presets are checked against the
published depth of each survey rather than tuned by hand.
"""

import dataclasses
import math

__all__ = ['PRESETS', 'SurveyPreset', 'get_preset']


@dataclasses.dataclass(frozen=True)
class SurveyPreset:
    """
    Instrument and observing conditions of a simulated survey image.

    Parameters
    ----------
    name : str
        Short identifier.
    pixel_scale : float
        Arcseconds per pixel.
    fwhm_arcsec : float
        Median seeing FWHM in arcseconds (each image draws around it).
    moffat_beta : float
        Moffat index of the PSF core (real seeing-limited PSFs: 2.5-4.5).
    zero_point : float
        AB magnitude giving 1 photo-electron per second.
    exposure_time : float
        Seconds.
    sky_brightness : float
        Sky surface brightness in mag/arcsec^2.
    gain : float
        Electrons per ADU.
    read_noise : float
        Read noise in electrons.
    saturation : float
        Saturation level in ADU (full well / gain, bias-subtracted).
    n_spikes : int
        Number of diffraction spikes (twice the number of spider vanes
        seen edge-on through the pupil; 4 for a cross-shaped spider).
    band : str
        Filter the zero point and sky refer to.
    """

    name: str
    pixel_scale: float
    fwhm_arcsec: float
    moffat_beta: float
    zero_point: float
    exposure_time: float
    sky_brightness: float
    gain: float
    read_noise: float
    saturation: float
    n_spikes: int = 4
    band: str = 'r'

    @property
    def fwhm(self):
        """Seeing FWHM in pixels."""
        return self.fwhm_arcsec / self.pixel_scale

    @property
    def sky_electrons(self):
        """Sky level in electrons per pixel."""
        rate = 10 ** (-0.4 * (self.sky_brightness - self.zero_point))
        return rate * self.exposure_time * self.pixel_scale**2

    @property
    def sky_adu(self):
        """Sky level in ADU per pixel."""
        return self.sky_electrons / self.gain

    @property
    def noise_adu(self):
        """Background noise sigma in ADU per pixel (sky + read noise)."""
        return math.sqrt(self.sky_electrons + self.read_noise**2) / self.gain

    def mag_to_adu(self, mag):
        """
        Convert AB magnitudes to total ADU in the exposure.

        Parameters
        ----------
        mag : float or array_like
            AB magnitude(s).

        Returns
        -------
        flux : float or `~numpy.ndarray`
            Total flux in ADU.
        """
        return 10 ** (-0.4 * (mag - self.zero_point)) * self.exposure_time / self.gain

    def adu_to_mag(self, flux):
        """
        Convert total ADU to AB magnitudes (inverse of `mag_to_adu`).

        Parameters
        ----------
        flux : float or array_like
            Total flux in ADU.

        Returns
        -------
        mag : float or `~numpy.ndarray`
            AB magnitude(s).
        """
        import numpy as np

        return self.zero_point - 2.5 * np.log10(
            np.asarray(flux) * self.gain / self.exposure_time)

    @property
    def depth(self):
        """
        5-sigma AB depth for a point source (Gaussian PSF, optimal weighting).

        The noise-equivalent area of a Gaussian PSF is 4 pi sigma^2; the
        background-limited S/N of a source of F electrons is then
        ``F / sqrt(NEA * (sky + read_noise**2))``.
        """
        sigma = self.fwhm / 2.3548
        nea = 4 * math.pi * sigma**2
        noise = math.sqrt(nea * (self.sky_electrons + self.read_noise**2))
        flux_e = 5 * noise
        return self.zero_point - 2.5 * math.log10(flux_e / self.exposure_time)


# Values from public instrument pages and survey papers (rounded): DECam
# (Flaugher et al. 2015; DECaLS single epochs, Dey et al. 2019), CFHT
# MegaCam/MegaPrime (CFHTLS Wide r, Cuillandre & Bertin 2006) and Hyper
# Suprime-Cam (HSC-SSP Wide i, Aihara et al. 2018).
PRESETS = {
    'decam': SurveyPreset(
        name='decam', pixel_scale=0.262, fwhm_arcsec=1.25, moffat_beta=3.0,
        zero_point=26.65, exposure_time=90.0, sky_brightness=20.9,
        gain=4.0, read_noise=7.0, saturation=30000.0, n_spikes=4, band='r'),
    'megacam': SurveyPreset(
        name='megacam', pixel_scale=0.187, fwhm_arcsec=0.75, moffat_beta=3.5,
        zero_point=26.2, exposure_time=500.0, sky_brightness=20.9,
        gain=1.6, read_noise=5.0, saturation=60000.0, n_spikes=4, band='r'),
    'hsc': SurveyPreset(
        name='hsc', pixel_scale=0.168, fwhm_arcsec=0.6, moffat_beta=3.5,
        zero_point=27.3, exposure_time=200.0, sky_brightness=20.2,
        gain=3.0, read_noise=4.5, saturation=50000.0, n_spikes=4, band='i'),
}


def get_preset(preset):
    """
    Return a `SurveyPreset` from a name or an instance.

    Parameters
    ----------
    preset : str or `SurveyPreset`
        Name in `PRESETS` ('decam', 'megacam', 'hsc') or an instance.

    Returns
    -------
    preset : `SurveyPreset`
        The preset.
    """
    if isinstance(preset, SurveyPreset):
        return preset
    if isinstance(preset, str) and preset.lower() in PRESETS:
        return PRESETS[preset.lower()]
    allowed = ', '.join(repr(k) for k in PRESETS)
    msg = f'preset must be a SurveyPreset or one of {allowed}; got {preset!r}'
    raise ValueError(msg)
