# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The common interface of the baseline detectors.

Every detector is a small configured object whose ``__call__(data,
threshold, mask=None)`` returns ``(segmentation, catalogue)``: a photutils
`~photutils.segmentation.SegmentationImage` (or None when nothing is
found, or when the detector gives no footprints) and an astropy
`~astropy.table.QTable` with at least ``label``, ``x``, ``y`` (0-based
pixels) and ``flux`` columns. ``sweep(data, thresholds)`` yields the same
for many thresholds, reusing whatever the library allows (background,
filtered image) across thresholds.
"""

import numpy as np
from astropy.table import QTable
from photutils.segmentation import SegmentationImage

__all__ = ['BaseDetector', 'prepare_image', 'segment_catalog']


def prepare_image(data, mask=None, *, dtype=np.float32):
    """
    Return a native-byte-order float copy of ``data`` and the full mask.

    Parameters
    ----------
    data : 2D array-like
        The image (big-endian FITS data is converted).
    mask : 2D bool array-like, optional
        True where pixels are bad.
    dtype : dtype, optional
        The float type of the output.

    Returns
    -------
    data : 2D `~numpy.ndarray`
        Contiguous native-endian copy; masked and non-finite pixels set
        to 0.
    mask : 2D bool `~numpy.ndarray`
        The input mask OR non-finite pixels.
    """
    data = np.asarray(data)
    if data.ndim != 2:
        msg = f'data must be a 2D image, got shape {data.shape}'
        raise ValueError(msg)
    data = np.ascontiguousarray(data, dtype=np.dtype(dtype).newbyteorder('='))
    bad = ~np.isfinite(data)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != data.shape:
            msg = (f'mask must have the shape of data {data.shape}, got '
                   f'{mask.shape}')
            raise ValueError(msg)
        bad |= mask
    if bad.any():
        data = data.copy()
        data[bad] = 0
    return data, bad


def segment_catalog(segm, image):
    """
    Catalogue of the segments of ``segm`` measured on ``image``.

    Parameters
    ----------
    segm : 2D int `~numpy.ndarray` or `~photutils.segmentation.SegmentationImage`
        Labels (0 = background).
    image : 2D `~numpy.ndarray`
        Background-subtracted image.

    Returns
    -------
    table : `~astropy.table.QTable`
        ``label``, ``x``, ``y`` (flux-weighted centroid of the positive
        pixels, the geometric centre if none is positive), ``flux`` (sum)
        and ``area`` (pixels), one row per label present.
    """
    seg = np.asarray(getattr(segm, 'data', segm))
    if seg is None or not seg.any():
        return _empty_catalog()
    flat = seg.ravel().astype(np.int64)
    n = int(flat.max()) + 1
    yy, xx = np.indices(seg.shape)
    img = np.asarray(image, dtype=float).ravel()
    w = np.clip(np.nan_to_num(img), 0, None)
    area = np.bincount(flat, minlength=n)
    sw = np.bincount(flat, w, minlength=n)
    sx = np.bincount(flat, w * xx.ravel(), minlength=n)
    sy = np.bincount(flat, w * yy.ravel(), minlength=n)
    gx = np.bincount(flat, xx.ravel(), minlength=n)
    gy = np.bincount(flat, yy.ravel(), minlength=n)
    flux = np.bincount(flat, np.nan_to_num(img), minlength=n)
    labels = np.flatnonzero(area)
    labels = labels[labels > 0]
    with np.errstate(invalid='ignore', divide='ignore'):
        pos = sw[labels] > 0
        x = np.where(pos, sx[labels] / sw[labels], gx[labels] / area[labels])
        y = np.where(pos, sy[labels] / sw[labels], gy[labels] / area[labels])
    return QTable({'label': labels, 'x': x, 'y': y, 'flux': flux[labels],
                   'area': area[labels]})


def _empty_catalog():
    return QTable({'label': np.zeros(0, np.int64), 'x': np.zeros(0),
                   'y': np.zeros(0), 'flux': np.zeros(0),
                   'area': np.zeros(0, np.int64)})


def _as_segm(seg):
    """SegmentationImage of an int array, or None when empty."""
    if seg is None or not np.any(seg):
        return None
    return SegmentationImage(np.ascontiguousarray(seg, dtype=np.int32))


class BaseDetector:
    """
    Base class of the baseline detectors (do not instantiate).

    Subclasses define ``name``, the class method ``_check_available()``
    (returning None or the reason the detector cannot run), ``_prepare(data,
    mask)`` (work shared by all thresholds, e.g. the background) and
    ``_detect(state, threshold)`` (one threshold).

    Parameters
    ----------
    fwhm : float, optional
        PSF FWHM in pixels (sizes the matched filter).
    n_pixels : int, optional
        Minimum number of connected pixels of a detection.
    deblend : bool, optional
        Whether to deblend.
    """

    #: Short name used in tables and plots.
    name = 'base'
    #: Name of the threshold parameter and its unit.
    threshold_name = 'sigma'
    #: Message of the last failed run (None if none failed).
    last_error = None

    def __init__(self, *, fwhm=3.0, n_pixels=5, deblend=True):
        if type(self) is BaseDetector:
            msg = 'BaseDetector is abstract; use one of its subclasses'
            raise TypeError(msg)
        fwhm = float(fwhm)
        if not np.isfinite(fwhm) or fwhm <= 0:
            msg = f'fwhm must be a positive number, got {fwhm!r}'
            raise ValueError(msg)
        from astro_deepcolor.utils._parameters import check_positive_int
        self.fwhm = fwhm
        self.n_pixels = check_positive_int(n_pixels, 'n_pixels')
        self.deblend = bool(deblend)

    def __repr__(self):
        return (f'{type(self).__name__}(fwhm={self.fwhm:g}, '
                f'n_pixels={self.n_pixels}, deblend={self.deblend})')

    @classmethod
    def _check_available(cls):
        return None

    @classmethod
    def available(cls):
        """
        Whether the detector can run here (library or binary present).

        Returns
        -------
        available : bool
        """
        return cls._check_available() is None

    @classmethod
    def unavailable_reason(cls):
        """
        Why the detector cannot run, or None when it can.

        Returns
        -------
        reason : str or None
        """
        return cls._check_available()

    def _require(self):
        reason = self._check_available()
        if reason is not None:
            msg = f'{type(self).__name__} is unavailable: {reason}'
            raise RuntimeError(msg)

    def gaussian_kernel(self, size=None):
        """
        Normalised 2D Gaussian kernel matched to the PSF FWHM.

        Parameters
        ----------
        size : int, optional
            Odd kernel size; default ``2 * ceil(fwhm) + 1`` (at least 3).

        Returns
        -------
        kernel : 2D float `~numpy.ndarray`
            Sums to 1.
        """
        sigma = self.fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))
        if size is None:
            size = max(3, 2 * int(np.ceil(self.fwhm)) + 1)
        r = np.arange(size) - size // 2
        k = np.exp(-0.5 * (r[:, None] ** 2 + r[None, :] ** 2) / sigma**2)
        return k / k.sum()

    def _prepare(self, data, mask):
        raise NotImplementedError

    def _detect(self, state, threshold):
        raise NotImplementedError

    def __call__(self, data, threshold, mask=None):
        """
        Detect sources at one threshold.

        Parameters
        ----------
        data : 2D array-like
            The image (sky included).
        threshold : float
            Detection threshold (``threshold_name`` units).
        mask : 2D bool array-like, optional
            True for bad pixels; they never yield detections.

        Returns
        -------
        segm : `~photutils.segmentation.SegmentationImage` or None
            Footprints (None if nothing was found).
        table : `~astropy.table.QTable`
            ``label``, ``x``, ``y``, ``flux``, ``area`` and extras.
        """
        segm, table = next(iter(self.sweep(data, [threshold], mask=mask)))[1:]
        if table is None:
            msg = (f'{self.name} failed at threshold {threshold!r}: '
                   f'{self.last_error or "library error"}')
            raise RuntimeError(msg)
        return segm, table

    def sweep(self, data, thresholds, mask=None):
        """
        Detect at many thresholds, sharing the per-image work.

        Parameters
        ----------
        data : 2D array-like
            The image.
        thresholds : iterable of float
            Thresholds.
        mask : 2D bool array-like, optional
            Bad pixels.

        Yields
        ------
        threshold, segm, table
            As for ``__call__``, for each threshold in order; ``table`` is
            None when the library failed at that threshold (e.g. a buffer
            overflow at very low thresholds), with the reason in
            ``last_error``.
        """
        self._require()
        state = self._prepare(data, mask)
        try:
            for t in thresholds:
                segm, table = self._detect(state, t)
                yield t, segm, table
        finally:
            self._cleanup(state)

    def _cleanup(self, state):
        pass
