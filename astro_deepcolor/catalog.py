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

Columns
-------
Every catalogue, whatever made it (`~astro_deepcolor.DeepColorSegmentation.catalog`,
the ``detect`` command for one file or many, `~astro_deepcolor.pipeline.detect_image`),
has the columns `catalog_columns` lists: photutils'
`~photutils.segmentation.SourceCatalog` default columns (``sky_centroid``
only when a celestial WCS is given; ``kron_flux``/``kron_flux_err`` are
the total flux, SExtractor's ``FLUX_AUTO``), then ``x_win`` and ``y_win``
(windowed centroid, SExtractor's ``XWIN_IMAGE``/``YWIN_IMAGE``; see
`windowed_centroids`: the most precise position, use it for astrometry),
``fwhm`` (circularised, from the second moments), ``flags`` (the bits of ``FLAGS``),
``detection_probability`` and, when a photometric zero point is given,
``mag`` and ``mag_err`` (Kron magnitude and its error, SExtractor's
``MAG_AUTO``/``MAGERR_AUTO``). A catalogue without sources has the same
columns, units and types.

Flags
-----
``flags`` is a sum of bits, like SExtractor's ``FLAGS``:

====  ============  ===========================================================
bit   name          meaning
====  ============  ===========================================================
1     masked        the footprint touches masked, non-finite or zero-weight
                    pixels (its photometry may be incomplete)
2     blended       the footprint touches another source's footprint (the
                    source was deblended from a neighbour)
4     saturated     the footprint holds pixels at or above the saturation
                    level (``saturation``, or the header's ``SATURATE``)
8     truncated     the footprint touches the image border
16    near_edge     the Kron aperture extends beyond the image
====  ============  ===========================================================
"""

import warnings

import numpy as np
from astropy.table import QTable
from photutils.segmentation import SegmentationImage, SourceCatalog
from photutils.segmentation.catalog import DEFAULT_COLUMNS as _PHOTUTILS_COLUMNS

__all__ = ['DEFAULT_COLUMNS', 'FLAGS', 'catalog_columns',
           'detection_probabilities', 'make_catalog', 'source_flags',
           'windowed_centroids']

#: Columns of the default catalogue with a celestial WCS and no zero
#: point (see `catalog_columns`).
DEFAULT_COLUMNS = [*_PHOTUTILS_COLUMNS, 'x_win', 'y_win', 'fwhm', 'flags',
                   'detection_probability']

#: The bits of the ``flags`` column: value -> (name, meaning).
FLAGS = {
    1: ('masked', 'touches masked, non-finite or zero-weight pixels'),
    2: ('blended', "touches another source's footprint"),
    4: ('saturated', 'holds pixels at or above the saturation level'),
    8: ('truncated', 'touches the image border'),
    16: ('near_edge', 'the Kron aperture extends beyond the image'),
}
_FLAG = {name: bit for bit, (name, _) in FLAGS.items()}

#: Columns computed here rather than by photutils.
_OWN_COLUMNS = ('x_win', 'y_win', 'flags', 'detection_probability', 'mag',
                'mag_err')

#: Smallest Gaussian window of `windowed_centroids` (SExtractor's: a
#: half-light radius of 0.5 pixel).
_MIN_WINDOW_SIGMA = 2.0 / 2.35 * 0.5


def catalog_columns(*, wcs=None, zeropoint=None):
    """
    The columns of a catalogue.

    Parameters
    ----------
    wcs : WCS object or None, optional
        The celestial WCS; ``sky_centroid`` only when given.
    zeropoint : float or None, optional
        Photometric zero point; ``mag`` and ``mag_err`` only when given.

    Returns
    -------
    columns : list of str
        The column names, in order.
    """
    columns = [c for c in DEFAULT_COLUMNS
               if wcs is not None or c != 'sky_centroid']
    if zeropoint is not None:
        columns += ['mag', 'mag_err']
    return columns


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


def windowed_centroids(data, segm, *, mask=None):
    """
    Windowed centroids of the sources (SExtractor's ``XWIN_IMAGE``).

    The isophotal centroid (flux-weighted over the segment) is the start;
    the windowed centroid is then iterated by `sep.winpos`: pixels within
    ``4 sigma`` of the current position, weighted by their value and by a
    circular Gaussian of standard deviation ``sigma``. ``sigma`` is the
    source's own Gaussian sigma, measured from the number of its pixels at
    or above half its maximum (``A = 2 ln 2 pi sigma^2`` for a Gaussian;
    at least ``2 / 2.35 * 0.5`` pixel, SExtractor's minimum). A source
    whose windowed centroid is not finite or leaves its own segment (a
    bright neighbour pulled the window) keeps its isophotal centroid.

    The deep-coloring footprints reach far into the wings (they are drawn
    at probability 0.8, not at an isophote), so the isophotal centroid
    weighs many noisy pixels; the window removes most of that noise. On
    clean validation images the median distance to the true position of
    S/N >= 5 sources is 0.29 pixel against 0.37 for the isophotal
    centroid (sep's own centroid: 0.32). A window from the segment's
    second moments does as well there (0.29) but fails on wide footprints
    of bright stars, where the noise of the wing pixels dominates the
    moments.

    Parameters
    ----------
    data : 2D `~numpy.ndarray`
        Background-subtracted image (float; bad pixels set to 0 or
        given in ``mask``).
    segm : `~photutils.segmentation.SegmentationImage`
        The sources.
    mask : 2D bool `~numpy.ndarray`, optional
        Pixels the window ignores.

    Returns
    -------
    x_win, y_win : 1D `~numpy.ndarray` of float64
        One value per label of ``segm.labels`` (0-based pixel
        coordinates, pixel centres at integers).
    """
    import sep

    seg = np.asarray(segm.data)
    labels = np.asarray(segm.labels)
    if not labels.size:
        return np.zeros(0), np.zeros(0)
    img = np.ascontiguousarray(data, dtype=np.float64)
    ok = np.isfinite(img)
    if mask is not None:
        ok &= ~np.asarray(mask, dtype=bool)
    img = np.where(ok, img, 0.0)
    sel = seg > 0
    lab = np.searchsorted(labels, seg[sel])
    yy, xx = np.nonzero(sel)
    v = img[sel]
    w = np.clip(v, 0.0, None)
    n = labels.size

    def total(values):
        return np.bincount(lab, values, minlength=n)

    sw, area = total(w), np.bincount(lab, minlength=n).astype(float)
    with np.errstate(invalid='ignore', divide='ignore'):
        pos = sw > 0
        x0 = np.where(pos, total(w * xx) / sw, total(xx) / area)
        y0 = np.where(pos, total(w * yy) / sw, total(yy) / area)
    # Window size from the area above half the segment's maximum (pi
    # FWHM^2 / 4 for a Gaussian): robust to the noisy wings, where second
    # moments are not (on a footprint six pixels wider than the source
    # their variance is dominated by the noise of the wing pixels).
    peak = np.full(n, -np.inf)
    np.maximum.at(peak, lab, v)
    above = total((v >= 0.5 * peak[lab]).astype(float))
    sigma = np.sqrt(above / (2.0 * np.log(2.0) * np.pi))
    sigma = np.where((peak > 0) & np.isfinite(sigma), sigma, _MIN_WINDOW_SIGMA)
    sigma = np.maximum(sigma, _MIN_WINDOW_SIGMA)
    sep_mask = None if ok.all() else ~ok
    # subpix=5 instead of sep's 11: 4x faster, positions within 1e-4 pixel
    # (median) of it
    xw, yw, _ = sep.winpos(img, x0, y0, sigma, mask=sep_mask,
                           minsig=_MIN_WINDOW_SIGMA, subpix=5)
    # sep's flag only says that the window met the image border or masked
    # pixels (its centroid is still the right one there).
    xw, yw = np.asarray(xw, float), np.asarray(yw, float)
    good = np.isfinite(xw) & np.isfinite(yw)
    ix = np.clip(np.round(np.nan_to_num(xw)).astype(np.int64), 0, seg.shape[1] - 1)
    iy = np.clip(np.round(np.nan_to_num(yw)).astype(np.int64), 0, seg.shape[0] - 1)
    good &= seg[iy, ix] == labels
    return np.where(good, xw, x0), np.where(good, yw, y0)


def _split_quantity(data):
    unit = getattr(data, 'unit', None)
    if unit is not None:
        return np.asanyarray(data.value), unit
    return data, None


def _touching_labels(seg, other):
    """
    Labels of ``seg`` with a pixel 8-adjacent to a True pixel of ``other``.

    ``other`` is a bool image, or None for "another non-zero label of
    ``seg``" (contacts between sources).
    """
    found = []
    ny, nx = seg.shape
    shifts = ((0, 1), (1, 0), (1, 1), (1, -1))
    if other is not None:
        shifts = (*shifts, (0, -1), (-1, 0), (-1, -1), (-1, 1))
    for dy, dx in shifts:
        a = seg[max(dy, 0):ny + min(dy, 0), max(dx, 0):nx + min(dx, 0)]
        b_sl = (slice(max(-dy, 0), ny + min(-dy, 0)),
                slice(max(-dx, 0), nx + min(-dx, 0)))
        if other is None:
            b = seg[b_sl]
            sel = (a != b) & (a > 0) & (b > 0)
            found += [a[sel], b[sel]]
        else:
            sel = other[b_sl] & (a > 0)
            found.append(a[sel])
    return np.unique(np.concatenate(found)) if found else np.zeros(0, int)


def source_flags(segm, *, bad=None, data=None, saturation=None,
                 kron_apertures=None):
    """
    The ``flags`` bits (see ``FLAGS``) of every source.

    Parameters
    ----------
    segm : `~photutils.segmentation.SegmentationImage`
        The sources.
    bad : 2D bool `~numpy.ndarray`, optional
        Masked, non-finite and zero-weight pixels.
    data : 2D `~numpy.ndarray`, optional
        The image as read (before sky subtraction), for ``saturated``.
    saturation : float, optional
        Saturation level of ``data``.
    kron_apertures : list, optional
        The Kron apertures (photutils apertures or None), for
        ``near_edge``.

    Returns
    -------
    flags : 1D `~numpy.ndarray` of int32
        One value per label of ``segm.labels``.
    """
    seg = segm.data
    labels = segm.labels
    flags = np.zeros(labels.size, dtype=np.int32)

    def set_bit(found, name):
        idx = np.searchsorted(labels, found)
        ok = (idx < labels.size)
        idx = idx[ok]
        idx = idx[labels[idx] == found[ok]]
        flags[idx] |= _FLAG[name]

    if bad is not None and bad.any():
        set_bit(_touching_labels(seg, bad), 'masked')
    set_bit(_touching_labels(seg, None), 'blended')
    if saturation is not None and data is not None:
        hot = np.asarray(data) >= saturation
        set_bit(np.unique(seg[hot & (seg > 0)]), 'saturated')
    ny, nx = seg.shape
    bbox = np.array([(sl[0].start, sl[0].stop, sl[1].start, sl[1].stop)
                     for sl in segm.slices]).reshape(-1, 4)
    edge = ((bbox[:, 0] == 0) | (bbox[:, 2] == 0) | (bbox[:, 1] == ny)
            | (bbox[:, 3] == nx))
    flags[edge] |= _FLAG['truncated']
    if kron_apertures is not None:
        for i, ap in enumerate(kron_apertures):
            if ap is None:
                continue
            box = ap.bbox
            if (box.ixmin < 0 or box.iymin < 0 or box.ixmax > nx
                    or box.iymax > ny):
                flags[i] |= _FLAG['near_edge']
    return flags


def _split_quantity(data):
    unit = getattr(data, 'unit', None)
    if unit is not None:
        return np.asanyarray(data.value), unit
    return data, None


def _value(column):
    return np.asarray(getattr(column, 'value', column), dtype=float)


def make_catalog(data, segm, *, error=None, wcs=None, background=None,
                 mask=None, columns=None, box_size=64, filter_size=3,
                 zeropoint=None, saturation=None):
    """
    Photometric catalogue of the sources in a segmentation image.

    Parameters
    ----------
    data : 2D array-like
        The image (`~numpy.ndarray`, `~numpy.ma.MaskedArray` or
        `~astropy.units.Quantity`).
    segm : `~photutils.segmentation.SegmentationImage` or None
        The sources; None (nothing detected) gives a table without rows
        but with every column.
    error : 2D array-like or float, optional
        Total per-pixel 1-sigma error of ``data`` (same unit), for the
        ``*_err`` columns; photutils leaves them masked when None.
    wcs : WCS object, optional
        Celestial world coordinate system of the image, for
        ``sky_centroid`` (left out without one).
    background : float or 2D array-like, optional
        Sky level to subtract. None (default): estimate it with
        `~astro_deepcolor.preprocessing.estimate_background`; 0: the data
        are already background-subtracted.
    mask : 2D bool array-like, optional
        True for pixels to exclude (non-finite pixels always are).
    columns : list of str, optional
        Columns of the table: any `~photutils.segmentation.SourceCatalog`
        property name, ``'flags'``, ``'detection_probability'``,
        ``'mag'`` and ``'mag_err'``. Default: `catalog_columns`. Only the
        properties asked for are computed.
    box_size, filter_size : int, optional
        Background mesh size and median filter (when estimated).
    zeropoint : float, optional
        Photometric zero point: ``mag = zeropoint - 2.5 log10(kron_flux)``.
    saturation : float, optional
        Saturation level of ``data`` (for the ``saturated`` flag).

    Returns
    -------
    table : `~astropy.table.QTable`
        One row per label of ``segm``; ``table.meta['background']`` says
        how the background was handled.
    """
    from astro_deepcolor.preprocessing import estimate_background

    if segm is not None and not isinstance(segm, SegmentationImage):
        msg = ('segm must be a photutils SegmentationImage or None, got '
               f'{type(segm).__name__}')
        raise TypeError(msg)
    if zeropoint is not None:
        zeropoint = float(zeropoint)
        if not np.isfinite(zeropoint):
            msg = f'zeropoint must be a finite number, got {zeropoint!r}'
            raise ValueError(msg)
    columns = (catalog_columns(wcs=wcs, zeropoint=zeropoint) if columns is None
               else list(columns))
    if wcs is not None:
        if not getattr(wcs, 'has_celestial', True):  # (gwcs has no such attribute)
            ctype = list(getattr(getattr(wcs, 'wcs', None), 'ctype', []))
            msg = (f'wcs has no celestial axes (ctype {ctype!r}), so sky '
                   'coordinates cannot be computed; pass wcs=None for a '
                   'catalogue in pixel coordinates')
            raise ValueError(msg)
        if getattr(wcs, 'naxis', 2) > 2:
            wcs = wcs.celestial
    if wcs is None and 'sky_centroid' in columns:
        msg = 'the sky_centroid column needs a celestial wcs'
        raise ValueError(msg)
    if zeropoint is None and ('mag' in columns or 'mag_err' in columns):
        msg = 'the mag and mag_err columns need a zeropoint'
        raise ValueError(msg)
    if segm is None:
        return _empty_table(columns, wcs, zeropoint, data)
    data, unit = _split_quantity(data)
    bad = np.ma.getmaskarray(data) if np.ma.isMaskedArray(data) else None
    data = np.asarray(np.ma.getdata(data))
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
    ftype = np.float64 if data.dtype == np.float64 else np.float32
    sub = np.subtract(data, bkg, dtype=ftype)
    sub[bad] = 0.0
    if unit is not None:
        sub = sub * unit
    if error is not None and unit is None and hasattr(error, 'unit'):
        error = error.value
    if error is not None and np.ndim(error) == 2:
        error = np.asarray(error, dtype=ftype)
        if unit is not None:
            error = error * unit
    cat = SourceCatalog(sub, segm, error=error, wcs=wcs,
                        mask=bad if bad.any() else None)
    photutils_columns = [c for c in columns if c not in _OWN_COLUMNS]
    if 'mag' in columns and 'kron_flux' not in photutils_columns:
        photutils_columns.append('kron_flux')
    if 'mag_err' in columns and 'kron_flux_err' not in photutils_columns:
        photutils_columns.append('kron_flux_err')
    with warnings.catch_warnings():
        # sources whose moments or Kron radius are undefined give NaN
        warnings.simplefilter('ignore', RuntimeWarning)
        table = QTable(cat.to_table(columns=photutils_columns))
        kron = (cat.kron_aperture if any(c.startswith('kron') for c in
                                         photutils_columns) else None)
    if 'x_win' in columns or 'y_win' in columns:
        sub_value = getattr(sub, 'value', sub)
        table['x_win'], table['y_win'] = windowed_centroids(
            sub_value, segm, mask=bad if bad.any() else None)
    if 'flags' in columns:
        table['flags'] = source_flags(segm, bad=bad, data=data,
                                      saturation=saturation,
                                      kron_apertures=kron)
    if 'detection_probability' in columns:
        table['detection_probability'] = detection_probabilities(segm)
    _add_magnitudes(table, columns, zeropoint)
    table = table[columns]
    table.meta['background'] = how
    return table


def _add_magnitudes(table, columns, zeropoint):
    if zeropoint is None:
        return
    flux = _value(table['kron_flux'])
    with np.errstate(divide='ignore', invalid='ignore'):
        mag = np.where(flux > 0, zeropoint - 2.5 * np.log10(flux), np.nan)
        if 'mag' in columns:
            table['mag'] = mag
        if 'mag_err' in columns:
            err = _value(table['kron_flux_err'])
            table['mag_err'] = np.where(flux > 0, 2.5 / np.log(10) * err / flux,
                                        np.nan)


def _empty_table(columns, wcs, zeropoint, data):
    """A table with ``columns`` and no rows (the schema of a real one)."""
    unit = getattr(data, 'unit', None)
    image = np.zeros((5, 5), dtype=np.float32)
    image[2, 2] = 1.0
    seg = np.zeros((5, 5), dtype=np.int32)
    seg[2, 2] = 1
    if unit is not None:
        image = image * unit
    error = np.ones((5, 5), dtype=np.float32)
    if unit is not None:
        error = error * unit
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        table = make_catalog(image, SegmentationImage(seg), error=error,
                             wcs=wcs, background=0, columns=columns,
                             zeropoint=zeropoint)
    table = table[:0]
    table.meta['background'] = 'no source detected'
    return table
