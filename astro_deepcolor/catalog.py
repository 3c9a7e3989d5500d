# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Source catalogues of deep-coloring segmentations.

The catalogue is photutils' `~photutils.segmentation.SourceCatalog`
computed on our segmentation image, so every photutils source property
is available (centroids, shapes, Kron and segment fluxes, sky
coordinates, ...), plus the deep-coloring ``detection_probability``.

Background
----------
Photometry needs background-subtracted data. By default
(``background=None``) the sky is estimated with the same SExtractor-like
mesh estimator the network input uses
(`astro_deepcolor.preprocessing.estimate_background`, with the model's
mesh size and filter) and subtracted. Pass ``background=0`` when the data
are already background-subtracted, or your own scalar or 2D background.
Masked and non-finite pixels are excluded from the background estimate
and from every source property.
"""

import numpy as np
from astropy.table import QTable
from photutils.segmentation import SegmentationImage, SourceCatalog
from photutils.segmentation.catalog import DEFAULT_COLUMNS as _PHOTUTILS_COLUMNS

__all__ = ['DEFAULT_COLUMNS', 'detection_probabilities', 'make_catalog']

#: Columns of the default catalogue: photutils' defaults plus
#: ``detection_probability``.
DEFAULT_COLUMNS = [*_PHOTUTILS_COLUMNS, 'detection_probability']


def detection_probabilities(segm):
    """
    Detection probability of each label of a segmentation image.

    Parameters
    ----------
    segm : `~photutils.segmentation.SegmentationImage`
        A segmentation from `~astro_deepcolor.DeepColorSegmentation` (its
        ``info['detection_probability']``). Labels may have been removed
        or kept since; a label whose number now names another region
        (after relabelling: its area or bounding-box corner differs from
        the recorded one) or an unknown label gives NaN.

    Returns
    -------
    prob : 1D `~numpy.ndarray` of float32
        One value per label in ``segm.labels`` (NaN when unknown).
    """
    info = getattr(segm, 'info', None) or {}
    prob = np.full(segm.n_labels, np.nan, dtype=np.float32)
    if 'detection_probability' not in info:
        return prob
    known = np.asarray(info['labels'])
    values = np.asarray(info['detection_probability'], dtype=np.float32)
    idx = np.searchsorted(known, segm.labels)
    idx = np.clip(idx, 0, max(known.size - 1, 0))
    ok = known.size > 0
    if ok:
        found = known[idx] == segm.labels
        if 'areas' in info and 'corners' in info and found.any():
            # Same number but another region (relabelled): unknown.
            found &= np.asarray(info['areas'])[idx] == np.asarray(segm.areas)
            corners = np.array([(sl[0].start, sl[1].start)
                                for sl in segm.slices], dtype=np.int64)
            found &= np.all(np.asarray(info['corners'])[idx] == corners,
                            axis=1)
        prob[found] = values[idx[found]]
    return prob


def _split_quantity(data):
    unit = getattr(data, 'unit', None)
    if unit is not None:
        return np.asanyarray(data.value), unit
    return data, None


def make_catalog(data, segm, *, error=None, wcs=None, background=None,
                 mask=None, columns=None, box_size=64, filter_size=3):
    """
    Photometric catalogue of the sources in a segmentation image.

    Parameters
    ----------
    data : 2D array-like
        The image (`~numpy.ndarray`, `~numpy.ma.MaskedArray` or
        `~astropy.units.Quantity`).
    segm : `~photutils.segmentation.SegmentationImage`
        The sources.
    error : 2D array-like or float, optional
        Total per-pixel 1-sigma error of ``data`` (same unit), for the
        ``*_err`` columns; photutils leaves them masked when None.
    wcs : WCS object, optional
        World coordinate system of the image, for ``sky_centroid``.
    background : float or 2D array-like, optional
        Sky level to subtract. None (default): estimate it with
        `~astro_deepcolor.preprocessing.estimate_background`; 0: the data
        are already background-subtracted.
    mask : 2D bool array-like, optional
        True for pixels to exclude (non-finite pixels always are).
    columns : list of str, optional
        Columns of the table: any `~photutils.segmentation.SourceCatalog`
        property name, and ``'detection_probability'``. Default:
        ``DEFAULT_COLUMNS``.
    box_size, filter_size : int, optional
        Background mesh size and median filter (when estimated).

    Returns
    -------
    table : `~astropy.table.QTable`
        One row per label of ``segm``; ``table.meta['background']`` says
        how the background was handled.
    """
    from astro_deepcolor.preprocessing import estimate_background

    if not isinstance(segm, SegmentationImage):
        msg = ('segm must be a photutils SegmentationImage, got '
               f'{type(segm).__name__}')
        raise TypeError(msg)
    data, unit = _split_quantity(data)
    bad = np.ma.getmaskarray(data) if np.ma.isMaskedArray(data) else None
    data = np.asarray(np.ma.getdata(data), dtype=np.float64)
    if data.shape != segm.shape:
        msg = (f'data shape {data.shape!r} does not match the segmentation '
               f'image shape {segm.shape!r}')
        raise ValueError(msg)
    nonfinite = ~np.isfinite(data)
    bad = nonfinite if bad is None else bad | nonfinite
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != data.shape:
            msg = (f'mask must have the same shape as data {data.shape!r}, '
                   f'got {mask.shape!r}')
            raise ValueError(msg)
        bad |= mask
    if background is None:
        bkg, _ = estimate_background(data, mask=bad, box_size=box_size,
                                     filter_size=filter_size)
        how = (f'estimated (SExtractor-like mesh, box_size={box_size}, '
               f'filter_size={filter_size}) and subtracted')
    else:
        bkg = background
        if unit is not None and hasattr(bkg, 'unit'):
            bkg = bkg.to_value(unit)
        how = 'given by the user and subtracted'
    sub = np.where(bad, 0.0, data - bkg)
    if unit is not None:
        sub = sub * unit
    if error is not None and unit is None and hasattr(error, 'unit'):
        error = error.value
    cat = SourceCatalog(sub, segm, error=error, wcs=wcs, mask=bad)
    columns = DEFAULT_COLUMNS if columns is None else list(columns)
    photutils_columns = [c for c in columns if c != 'detection_probability']
    table = cat.to_table(columns=photutils_columns)
    if 'detection_probability' in columns:
        table['detection_probability'] = detection_probabilities(segm)
        table = table[columns]
    table = QTable(table)
    table.meta['background'] = how
    return table
