# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Baseline detector: the `sep` library (SExtractor's algorithms in C)."""

import numpy as np
from astropy.table import QTable

from .base import BaseDetector, _as_segm, _empty_catalog, prepare_image

__all__ = ['SepDetector']


class SepDetector(BaseDetector):
    """
    Source detection with `sep` (``sep.Background`` + ``sep.extract``).

    One `sep.Background` is computed per image and reused for every
    threshold of a sweep. The threshold is in units of the per-pixel
    background RMS; the data are filtered with a Gaussian matched to the
    PSF FWHM (or sep's default 3x3 kernel) and deblended as SExtractor
    does.

    Parameters
    ----------
    fwhm : float, optional
        PSF FWHM in pixels, for the matched filter.
    n_pixels : int, optional
        Minimum area (``minarea``).
    deblend : bool, optional
        Deblend (``deblend_cont=0.005``) or not (``deblend_cont=1``).
    kernel : {'gaussian', 'default'} or 2D array, optional
        Filter kernel.
    box_size : int, optional
        Background mesh size (``bw = bh``).
    filter_size : int, optional
        Background mesh median filter size.
    deblend_nthresh : int, optional
        Number of deblending levels.
    deblend_cont : float, optional
        Minimum deblending contrast.
    clean : bool, optional
        SExtractor's cleaning (remove detections explained by a bright
        neighbour's wings).
    filter_type : {'conv', 'matched'}, optional
        ``'conv'`` (default) thresholds the filtered image at ``threshold``
        times the unfiltered background RMS, exactly as SExtractor does, so
        thresholds mean the same for sep and SExtractor; ``'matched'``
        thresholds the matched-filter signal-to-noise instead (a much
        deeper cut at the same number).
    """

    name = 'sep'
    threshold_name = 'sigma'

    def __init__(self, *, fwhm=3.0, n_pixels=5, deblend=True,
                 kernel='gaussian', box_size=64, filter_size=3,
                 deblend_nthresh=32, deblend_cont=0.005, clean=True,
                 filter_type='conv'):
        super().__init__(fwhm=fwhm, n_pixels=n_pixels, deblend=deblend)
        if isinstance(kernel, str) and kernel not in ('gaussian', 'default'):
            msg = f"kernel must be 'gaussian', 'default' or an array, got {kernel!r}"
            raise ValueError(msg)
        self.kernel = kernel
        self.box_size = int(box_size)
        self.filter_size = int(filter_size)
        self.deblend_nthresh = int(deblend_nthresh)
        self.deblend_cont = float(deblend_cont) if deblend else 1.0
        self.clean = bool(clean)
        if filter_type not in ('conv', 'matched'):
            msg = f"filter_type must be 'conv' or 'matched', got {filter_type!r}"
            raise ValueError(msg)
        self.filter_type = filter_type

    @classmethod
    def _check_available(cls):
        try:
            import sep  # noqa: F401
        except ImportError:
            return 'the sep package is not installed (pip install sep)'
        return None

    def _filter_kernel(self):
        if isinstance(self.kernel, str):
            if self.kernel == 'default':
                return np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], float)
            return self.gaussian_kernel()
        return np.asarray(self.kernel, dtype=float)

    def _prepare(self, data, mask):
        import sep

        data, bad = prepare_image(data, mask, dtype=np.float64)
        bkg = sep.Background(data, mask=bad if bad.any() else None,
                             bw=self.box_size, bh=self.box_size,
                             fw=self.filter_size, fh=self.filter_size)
        sub = data - bkg.back()
        rms = bkg.rms()
        return {'sub': sub, 'rms': rms, 'mask': bad if bad.any() else None}

    def _detect(self, state, threshold):
        import sep

        sep.set_extract_pixstack(max(300000, state['sub'].size))
        sep.set_sub_object_limit(8192)
        try:
            objects, segmap = sep.extract(
                state['sub'], float(threshold), err=state['rms'],
                mask=state['mask'], minarea=self.n_pixels,
                filter_kernel=self._filter_kernel(), filter_type=self.filter_type,
                deblend_nthresh=self.deblend_nthresh,
                deblend_cont=self.deblend_cont, clean=self.clean,
                segmentation_map=True)
        except Exception:  # sep raises a bare Exception on buffer overflows
            return None, None
        if len(objects) == 0:
            return None, _empty_catalog()
        table = QTable({'label': np.arange(1, len(objects) + 1),
                        'x': objects['x'], 'y': objects['y'],
                        'flux': objects['flux'],
                        'area': objects['npix'].astype(np.int64),
                        'peak': objects['peak'], 'flag': objects['flag']})
        return _as_segm(segmap), table
