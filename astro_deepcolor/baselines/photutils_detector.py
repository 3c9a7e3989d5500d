# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Baseline detector: photutils ``Background2D`` + ``SourceFinder``."""

import warnings

import numpy as np

from .base import BaseDetector, _empty_catalog, prepare_image, segment_catalog

__all__ = ['PhotutilsDetector']


class PhotutilsDetector(BaseDetector):
    """
    Source detection with photutils (image segmentation + deblending).

    The background and its RMS (``Background2D`` with the SExtractor mode
    estimator) and the kernel-convolved, background-subtracted image are
    computed once per image; each threshold then runs ``SourceFinder``
    with ``threshold = t * background_rms``. Centroids and fluxes are
    measured on the unconvolved background-subtracted image.

    Parameters
    ----------
    fwhm : float, optional
        PSF FWHM in pixels (Gaussian convolution kernel).
    n_pixels : int, optional
        Minimum number of connected pixels.
    deblend : bool, optional
        Whether ``SourceFinder`` deblends.
    box_size : int, optional
        ``Background2D`` box size.
    filter_size : int, optional
        ``Background2D`` filter size.
    n_levels : int, optional
        Deblending levels.
    contrast : float, optional
        Deblending contrast.
    """

    name = 'photutils'
    threshold_name = 'sigma'

    def __init__(self, *, fwhm=3.0, n_pixels=5, deblend=True, box_size=64,
                 filter_size=3, n_levels=32, contrast=0.001):
        super().__init__(fwhm=fwhm, n_pixels=n_pixels, deblend=deblend)
        self.box_size = int(box_size)
        self.filter_size = int(filter_size)
        self.n_levels = int(n_levels)
        self.contrast = float(contrast)

    @classmethod
    def _check_available(cls):
        from importlib.util import find_spec

        if find_spec('skimage') is None:
            return ("photutils' deblending needs scikit-image, not installed "
                    '(pip install scikit-image)')
        return None

    def _prepare(self, data, mask):
        from astropy.convolution import convolve
        from photutils.background import Background2D, SExtractorBackground

        data, bad = prepare_image(data, mask, dtype=np.float64)
        # at least 4 boxes per axis on small cutouts
        box = max(8, min(self.box_size, min(data.shape) // 4))
        bkg = Background2D(data, box, mask=bad if bad.any() else None,
                           filter_size=self.filter_size,
                           exclude_percentile=50.0,
                           bkg_estimator=SExtractorBackground())
        sub = data - bkg.background
        sub[bad] = 0
        conv = convolve(sub, self.gaussian_kernel(), normalize_kernel=True)
        return {'sub': sub, 'conv': conv, 'rms': bkg.background_rms,
                'mask': bad if bad.any() else None}

    def _detect(self, state, threshold):
        from photutils.segmentation import SourceFinder
        from photutils.utils.exceptions import NoDetectionsWarning

        finder = SourceFinder(self.n_pixels, deblend=self.deblend,
                              n_levels=self.n_levels, contrast=self.contrast,
                              progress_bar=False)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', NoDetectionsWarning)
            # deblending warns about sources it cannot split; not an error
            warnings.filterwarnings('ignore', module='photutils')
            segm = finder(state['conv'], float(threshold) * state['rms'],
                          mask=state['mask'])
        if segm is None:
            return None, _empty_catalog()
        return segm, segment_catalog(segm, state['sub'])
