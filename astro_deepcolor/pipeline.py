# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
One image through the whole detection: the per-image function.

`detect_image` takes an image with its optional weight (or error) map,
mask and FITS header, and returns the segmentation and the catalogue. It
is the one per-image pipeline behind the ``detect`` command for one file,
its batch mode (`astro_deepcolor.batch.BatchDetector`, which only
schedules it) and the benchmark's CNN adapter, so every mode gives the
same catalogue for the same image.

Weight maps
-----------
As SExtractor's ``WEIGHT_TYPE``, a weight map is one of

* ``'weight'`` (``MAP_WEIGHT``): inverse variance, ``1 / sigma**2``, such as
  DECam community-pipeline ``oow`` files;
* ``'variance'`` (``MAP_VAR``): ``sigma**2``;
* ``'rms'`` (``MAP_RMS``): ``sigma``, the same as ``error=`` in Python.

The map is taken as absolute (in the image's units; unlike SExtractor's
``MAP_WEIGHT`` it is not rescaled to the measured sky noise). Pixels of
zero weight (or zero, negative or non-finite variance or rms) are masked.
The map is the noise of every later step: the network input is
normalised by it, and it is the ``error`` of the catalogue (``*_err``
columns, magnitudes' errors; source Poisson noise is not added). Without
a map, the noise is the sky rms measured on the image (the SExtractor-like
mesh estimate), so flux errors are never NaN.
"""

import time
import warnings
from pathlib import Path

import numpy as np

from astro_deepcolor.postprocessing import warn_no_detections
from astro_deepcolor.utils._parameters import check_choice

__all__ = ['CATALOG_FORMATS', 'WEIGHT_TYPES', 'ZEROPOINT_KEYWORDS',
           'catalog_format', 'celestial_wcs', 'derive_path', 'detect_image',
           'error_from_weight', 'measure_image', 'merged_header',
           'parse_fits_spec',
           'read_fits_map',
           'write_catalog', 'zeropoint_from_header']

#: Kinds of weight map (SExtractor's MAP_WEIGHT, MAP_VAR, MAP_RMS).
WEIGHT_TYPES = ('weight', 'variance', 'rms')

#: Header keywords read, in this order, for the photometric zero point.
ZEROPOINT_KEYWORDS = ('MAGZERO', 'MAGZPT', 'MAGZP', 'PHOTZP')

_FITS_SUFFIXES = ('.fits.fz', '.fits.gz', '.fit.gz', '.fts.gz', '.fits',
                  '.fit', '.fts', '.fz')


def error_from_weight(weight, weight_type='weight'):
    """
    Per-pixel noise (1-sigma error) of a weight, variance or rms map.

    Parameters
    ----------
    weight : 2D array-like
        The map.
    weight_type : {'weight', 'variance', 'rms'}, optional
        Inverse variance, variance or standard deviation.

    Returns
    -------
    error : 2D `~numpy.ndarray` of float32
        ``sigma`` per pixel; on the invalid pixels, the median of the
        valid ones (so that it stays finite).
    bad : 2D bool `~numpy.ndarray`
        True where the map gives no valid noise (zero weight; zero,
        negative or non-finite variance or rms): masked pixels.
    """
    check_choice(weight_type, 'weight_type', WEIGHT_TYPES)
    weight = np.asarray(weight, dtype=np.float32)
    if weight.ndim != 2:
        msg = f'weight must be a 2D array, got shape {weight.shape!r}'
        raise ValueError(msg)
    error = _sigma(weight, weight_type)
    bad = ~(np.isfinite(error) & (error > 0))
    if bad.all():
        msg = f'the {weight_type} map has no valid pixel (all masked)'
        raise ValueError(msg)
    if bad.any():
        error[bad] = np.median(error[~bad])
    return error, bad


def _sigma(weight, weight_type):
    """Elementwise sigma of a weight map (not finite or <= 0 where invalid)."""
    with np.errstate(divide='ignore', invalid='ignore'):
        if weight_type == 'weight':
            return np.float32(1) / np.sqrt(weight, dtype=np.float32)
        if weight_type == 'variance':
            return np.sqrt(weight, dtype=np.float32)
        return np.array(weight, dtype=np.float32)


def celestial_wcs(header):
    """
    The celestial WCS of a FITS header, or None.

    Parameters
    ----------
    header : `~astropy.io.fits.Header` or None
        The header.

    Returns
    -------
    wcs : `~astropy.wcs.WCS` or None
        None without a header, without a celestial WCS, or when the WCS
        cannot be parsed (a broken WCS never loses the detections).
    """
    if header is None:
        return None
    from astropy.wcs import WCS

    with warnings.catch_warnings():
        # FITSFixedWarning (astropy repairs the WCS) and card warnings: the
        # problems of the user's header are summarised once where it is read
        warnings.simplefilter('ignore')
        try:
            wcs = WCS(header, naxis=2)
        except Exception:  # a broken WCS must not lose the detections
            return None
    return wcs if wcs.has_celestial else None


def _header_number(header, keys):
    if header is None:
        return None
    for key in keys:
        value = header.get(key)
        if value is None or isinstance(value, (bool, str)):
            continue
        value = float(value)
        if np.isfinite(value):
            return value
    return None


def zeropoint_from_header(header):
    """
    The photometric zero point a header gives, or None.

    Parameters
    ----------
    header : `~astropy.io.fits.Header` or None
        The image header (merged with the primary header when the
        extension inherits it).

    Returns
    -------
    zeropoint : float or None
        The first finite number among `ZEROPOINT_KEYWORDS`.
    """
    return _header_number(header, ZEROPOINT_KEYWORDS)


def parse_fits_spec(text):
    """
    Split ``'FILE[HDU]'`` into the file name and the HDU.

    Parameters
    ----------
    text : str or `~pathlib.Path`
        A file name, optionally followed by an HDU index or EXTNAME in
        brackets (``'w.fits[1]'``, ``'w.fits[N2]'``).

    Returns
    -------
    path : str
        The file name.
    hdu : int, str or None
        The HDU (None when not given).
    """
    text = str(text)
    if text.endswith(']') and '[' in text:
        path, hdu = text[:-1].rsplit('[', 1)
        hdu = hdu.strip()
        if hdu.lstrip('-').isdigit():
            return path, int(hdu)
        if hdu:
            return path, hdu
    return text, None


def read_fits_map(spec, shape, *, option='--weight', hdu=None):
    """
    Read a 2D map (weight, mask) that goes with an image.

    Parameters
    ----------
    spec : str or `~pathlib.Path`
        ``FILE`` or ``FILE[HDU]`` (see `parse_fits_spec`).
    shape : tuple of 2 int
        The image shape the map must have.
    option : str, optional
        The option or parameter name, for the messages.
    hdu : int or str, optional
        HDU to use when ``spec`` names none and the file has several:
        the image's own HDU index (MEF triplets such as DECam ooi/oow/ood
        files share their layout). Otherwise the first image HDU.

    Returns
    -------
    data : 2D `~numpy.ndarray`
        The map, native byte order.
    """
    from astropy.io import fits

    path, given = parse_fits_spec(spec)
    if not Path(path).is_file():
        msg = f'{option} file {path!r} does not exist'
        raise FileNotFoundError(msg)
    try:
        with fits.open(path, memmap=False) as hdul:
            images = [i for i, h in enumerate(hdul)
                      if getattr(h, 'is_image', False) and h.data is not None]
            if given is not None:
                index = given
            elif (isinstance(hdu, int) and hdu in images
                  and hdul[hdu].data.shape == tuple(shape)):
                index = hdu
            else:
                index = images[0] if images else None
            if index is None:
                msg = f'{option} {path!r} has no image HDU'
                raise ValueError(msg)
            try:
                data = hdul[index].data
            except (IndexError, KeyError):
                msg = f'{option} {path!r} has no HDU {index!r}'
                raise ValueError(msg) from None
            data = None if data is None else np.squeeze(np.asarray(data))
    except OSError as exc:
        msg = f'{option} {path!r} is not a readable FITS file ({exc})'
        raise ValueError(msg) from None
    if data is None or data.shape != tuple(shape):
        got = None if data is None else data.shape
        msg = (f'{option} {spec!s}: HDU {index!r} has shape {got!r}, the '
               f'image {tuple(shape)!r}')
        raise ValueError(msg)
    return data.astype(data.dtype.newbyteorder('='), copy=False)


def derive_path(image, rule):
    """
    The companion file (weight, mask) of an image by a naming rule.

    Parameters
    ----------
    image : str or `~pathlib.Path`
        The image file.
    rule : str
        ``'OLD=NEW'``: the last ``OLD`` in the file name becomes ``NEW``
        (``'ooi=oow'`` turns ``c4d_..._ooi_z_ls9.fits.fz`` into
        ``c4d_..._oow_z_ls9.fits.fz``); otherwise a suffix added before
        the FITS extension (``'.weight'``: ``img.fits`` ->
        ``img.weight.fits``).

    Returns
    -------
    path : str
        The companion file's path (same directory).

    Raises
    ------
    ValueError
        When the rule does not apply to the name (``OLD`` absent) or
        gives the image's own name.
    """
    image = Path(image)
    name = image.name
    if '=' in rule:
        old, new = rule.split('=', 1)
        if not old or old not in name:
            msg = (f'naming rule {rule!r}: {old!r} does not occur in the '
                   f'file name {name!r}')
            raise ValueError(msg)
        head, _, tail = name.rpartition(old)
        derived = head + new + tail
    else:
        lower = name.lower()
        suffix = next((s for s in _FITS_SUFFIXES if lower.endswith(s)), '')
        stem = name[:len(name) - len(suffix)]
        derived = stem + rule + name[len(stem):]
    if derived == name:
        msg = f'naming rule {rule!r} gives the image itself ({name!r})'
        raise ValueError(msg)
    return str(image.with_name(derived))


def _noise_maps(shape, weight, weight_type, error):
    """(error map or None, bad pixels of the map or None)."""
    if weight is not None and error is not None:
        msg = 'give weight or error, not both'
        raise ValueError(msg)
    if error is not None:
        weight, weight_type = error, 'rms'
        if np.ndim(error) == 0:
            weight = np.full(shape, float(error), dtype=np.float32)
    if weight is None:
        return None, None
    weight = np.asarray(weight)
    if weight.shape != tuple(shape):
        name = 'error' if error is not None else 'weight'
        msg = (f'{name} must have the image shape {tuple(shape)!r}, got '
               f'{weight.shape!r}')
        raise ValueError(msg)
    return error_from_weight(weight, weight_type)


class _Inputs:
    """The validated inputs of one image (shared by detect and measure)."""

    def __init__(self, finder, data, header, mask, weight, weight_type,
                 error, zeropoint, saturation):
        from astro_deepcolor.inference.finder import DeepColorSegmentation, _prepare

        self.is_cnn = isinstance(finder, DeepColorSegmentation)
        self.data, self.bad = _prepare(data, mask)
        noise, noise_bad = _noise_maps(self.data.shape, weight, weight_type,
                                       error)
        if noise_bad is not None:
            self.bad |= noise_bad
        self.wcs = celestial_wcs(header)
        self.zeropoint = (zeropoint_from_header(header) if zeropoint is None
                          else zeropoint)
        self.saturation = (_header_number(header, ('SATURATE',))
                           if saturation is None else saturation)
        shape = self.data.shape
        if self.bad.all():
            self.background = np.zeros(shape, np.float32)
            rms = np.ones(shape, np.float32)
        elif self.is_cnn:  # the model's own mesh settings
            self.background, rms = finder._background(self.data, self.bad)
        else:
            from astro_deepcolor.preprocessing import estimate_background

            self.background, rms = estimate_background(
                self.data, mask=self.bad, box_size=max(4, min(64, *shape)))
        if noise is None:
            self.noise = rms
            self.how = 'sky rms measured on the image (no source Poisson noise)'
        else:
            self.noise = noise
            kind = 'error' if error is not None else weight_type
            self.how = f'{kind} map (no source Poisson noise)'

    def measure(self, finder, segm, columns):
        from astro_deepcolor.catalog import make_catalog

        table = make_catalog(self.data, segm, error=self.noise, wcs=self.wcs,
                             background=self.background, mask=self.bad,
                             columns=columns, zeropoint=self.zeropoint,
                             saturation=self.saturation)
        return self.annotate(finder, table)

    def annotate(self, finder, table):
        table.meta['error'] = self.how
        if self.zeropoint is not None:
            table.meta['zeropoint'] = self.zeropoint
        if self.is_cnn:
            table.meta['threshold'] = finder.threshold
            table.meta['n_pixels'] = finder.n_pixels
            table.meta['model'] = str(finder.model.path)
        return table


_COMMON_PARAMETERS = """
    header : `~astropy.io.fits.Header`, optional
        Its header: celestial WCS (``sky_centroid``), zero point
        (`ZEROPOINT_KEYWORDS`) and saturation level (``SATURATE``).
    mask : 2D bool array-like, optional
        True for bad pixels.
    weight : 2D array-like, optional
        Weight map (see the module docstring); zero weight = masked.
    weight_type : {'weight', 'variance', 'rms'}, optional
        What ``weight`` holds.
    error : 2D array-like or float, optional
        Per-pixel 1-sigma noise (the same as ``weight`` with
        ``weight_type='rms'``).
    zeropoint : float, optional
        Photometric zero point for ``mag``/``mag_err``; default: from the
        header, else no magnitudes.
    saturation : float, optional
        Saturation level (``saturated`` flag); default: the header's
        ``SATURATE``.
    columns : list of str, optional
        Catalogue columns (default:
        `~astro_deepcolor.catalog.catalog_columns`)."""


def detect_image(finder, data, header=None, *, mask=None, weight=None,
                 weight_type='weight', error=None, zeropoint=None,
                 saturation=None, columns=None):
    """
    Detect the sources of one image and measure them.

    Parameters
    ----------
    finder : `~astro_deepcolor.DeepColorSegmentation` or callable
        The configured finder: it carries every detection setting. Any
        other callable ``finder(data, mask=None)`` returning a
        `~photutils.segmentation.SegmentationImage` (or None), or a tuple
        ``(segm, table)``, is run instead of the network (classical
        detectors in batch runs); its segmentation is measured here
        unless it returns its own table.
    data : 2D array-like
        The image (sky included).{params}

    Returns
    -------
    segm : `~photutils.segmentation.SegmentationImage` or None
        The sources (None, with a
        `~photutils.utils.exceptions.NoDetectionsWarning`, if none).
    table : `~astropy.table.QTable`
        The catalogue (no rows, all columns, when nothing is found).
        ``table.meta['error']`` says where the errors come from,
        ``table.meta['timings']`` the seconds of each stage.
    """
    if not callable(finder):
        msg = ('finder must be a DeepColorSegmentation or a callable '
               f'detector, got {type(finder).__name__}')
        raise TypeError(msg)
    t0 = time.perf_counter()
    inputs = _Inputs(finder, data, header, mask, weight, weight_type, error,
                     zeropoint, saturation)
    t1 = time.perf_counter()
    if inputs.is_cnn:
        segm = finder._segment_prepared(inputs.data, inputs.bad,
                                        inputs.background, inputs.noise)
        table = None
    else:
        bad = inputs.bad
        out = finder(inputs.data, mask=bad if bad.any() else None)
        segm, table = out if isinstance(out, tuple) else (out, None)
    t2 = time.perf_counter()
    if table is None:
        table = inputs.measure(finder, segm, columns)
    else:
        inputs.annotate(finder, table)
    t3 = time.perf_counter()
    timings = {'inputs_and_background': t1 - t0, 'detect': t2 - t1,
               'catalog': t3 - t2}
    info = getattr(segm, 'info', None) or {}  # other detectors: no info
    timings.update({f'detect_{k}': v for k, v in
                    info.get('timings', {}).items()
                    if k not in ('background', 'total')})
    table.meta['timings'] = timings
    if segm is None:
        warn_no_detections(stacklevel=2)
    return segm, table


def measure_image(finder, data, segm, header=None, *, mask=None, weight=None,
                  weight_type='weight', error=None, zeropoint=None,
                  saturation=None, columns=None):
    """
    The catalogue half of `detect_image`, for a given segmentation.

    For example the labels of `~astro_deepcolor.batch.detect_mosaic`:
    with the same finder and inputs, ``measure_image`` of the mosaic's
    labels gives `detect_image`'s catalogue (``detection_probability``
    too, when ``detect_mosaic(..., return_probability=True)``'s values are
    put in ``segm.info``, see :doc:`/batch`).

    Parameters
    ----------
    finder : `~astro_deepcolor.DeepColorSegmentation` or None
        The finder (its background mesh settings); None: the defaults.
    data : 2D array-like
        The image (sky included).
    segm : `~photutils.segmentation.SegmentationImage` or None
        The sources.{params}

    Returns
    -------
    table : `~astropy.table.QTable`
        The catalogue.
    """
    inputs = _Inputs(finder, data, header, mask, weight, weight_type, error,
                     zeropoint, saturation)
    return inputs.measure(finder, segm, columns)


detect_image.__doc__ = detect_image.__doc__.format(params=_COMMON_PARAMETERS)
measure_image.__doc__ = measure_image.__doc__.format(params=_COMMON_PARAMETERS)


#: Catalogue file formats by file-name ending.
CATALOG_FORMATS = {'.ecsv': 'ascii.ecsv', '.fits': 'fits', '.fit': 'fits',
                   '.fts': 'fits', '.fits.gz': 'fits'}


def catalog_format(path):
    """
    The astropy table format of a catalogue file name.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        The file name (``.ecsv`` or ``.fits``).

    Returns
    -------
    format : str
        ``'ascii.ecsv'`` or ``'fits'``.
    """
    name = Path(path).name.lower()
    for suffix, fmt in CATALOG_FORMATS.items():
        if name.endswith(suffix):
            return fmt
    msg = (f'catalogue {str(path)!r}: unknown format; use a .ecsv or .fits '
           'file name')
    raise ValueError(msg)


def write_catalog(table, path, *, overwrite=False, meta=None):
    """
    Write a catalogue atomically, in the format its name says.

    Parameters
    ----------
    table : `~astropy.table.QTable`
        The catalogue (not modified).
    path : str or `~pathlib.Path`
        ``.ecsv`` or ``.fits`` file.
    overwrite : bool, optional
        Whether an existing file may be replaced.
    meta : dict, optional
        Extra metadata (FITS keywords).
    """
    from astropy.io.fits.verify import VerifyWarning

    from astro_deepcolor.utils._io import atomic_path

    fmt = catalog_format(path)
    table = table.copy(copy_data=False)
    table.meta.pop('timings', None)  # of this run, not of the catalogue
    table.meta.update(meta or {})
    if fmt == 'fits':
        # FITS headers only take scalars; keep the provenance as strings.
        table.meta = {k: (v if isinstance(v, (str, int, float, bool))
                          else str(v)) for k, v in table.meta.items()}
    with (atomic_path(path, overwrite=overwrite, name='catalogue') as tmp,
          warnings.catch_warnings()):
        # Long meta keys become HIERARCH cards in FITS, which is fine.
        warnings.simplefilter('ignore', VerifyWarning)
        table.write(tmp, format=fmt)


def merged_header(hdul, index):
    """
    The header of HDU ``index``, with the primary header's keywords added.

    Survey extensions often keep exposure-wide keywords (``MAGZERO``,
    ``EXPTIME``...) in the primary header (``INHERIT = T``, as DECam
    files do): they are added unless the extension sets them itself.

    Parameters
    ----------
    hdul : `~astropy.io.fits.HDUList`
        The open file.
    index : int or str
        The image HDU.

    Returns
    -------
    header : `~astropy.io.fits.Header`
        A copy.
    """
    header = hdul[index].header.copy()
    primary = hdul[0]
    if primary is hdul[index] or not header.get('INHERIT', False):
        return header
    skip = {'SIMPLE', 'BITPIX', 'NAXIS', 'EXTEND', 'COMMENT', 'HISTORY', ''}
    for card in primary.header.cards:
        key = card.keyword
        if key in skip or key.startswith('NAXIS') or key in header:
            continue
        header.append(card)
    return header
