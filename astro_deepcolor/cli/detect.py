# Licensed under a 3-clause BSD style license - see LICENSE.rst
r"""
``astro-deepcolor detect``: detect sources in FITS images.

One image::

    astro-deepcolor detect image.fits --catalog cat.ecsv \\
        --segmentation segm.fits --regions sources.reg

writes a catalogue (ECSV or FITS, chosen by the extension; sky
coordinates when the image has a celestial WCS), a segmentation image
(int32, with the input header and WCS) and DS9 regions (in sky
coordinates when the image has a celestial WCS, in pixels otherwise).
``image.fits[1]`` or ``--hdu`` selects an HDU, ``--plane N`` a plane of a
data cube. Existing files
are never replaced without ``--overwrite``; every file is written under a
temporary name and renamed into place when complete. ``--weight
FILE[HDU]`` with ``--weight-type weight|variance|rms`` gives the noise
map, as SExtractor's ``WEIGHT_IMAGE``/``WEIGHT_TYPE``.

Several inputs, directories, globs or ``--out DIR`` switch to the batch
mode (`run_batch`: `~astro_deepcolor.batch.BatchDetector` on Dask, with a
resumable manifest), where each image's weight and mask files are found by
a naming rule (``--weight-suffix ooi=oow --mask-suffix ooi=ood``). Both
modes build the finder from the same options (`make_finder`) and run the
same per-image pipeline, `astro_deepcolor.pipeline.detect_image`.
"""

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

__all__ = ['add_parser', 'make_finder', 'run', 'run_batch']

# Input-header keywords that describe the data layout, not the sky, and so
# must not be copied into the segmentation image.
_STRUCTURAL = ('SIMPLE', 'XTENSION', 'BITPIX', 'NAXIS', 'NAXIS1', 'NAXIS2',
               'NAXIS3', 'EXTEND', 'PCOUNT', 'GCOUNT', 'BSCALE', 'BZERO',
               'BLANK', 'BUNIT', 'CHECKSUM', 'DATASUM', 'ZIMAGE', 'ZBITPIX',
               'ZNAXIS', 'ZNAXIS1', 'ZNAXIS2', 'ZTILE1', 'ZTILE2', 'ZCMPTYPE',
               'ZQUANTIZ', 'ZDITHER0', 'DATAMIN', 'DATAMAX', 'SATURATE',
               'EXTNAME', 'EXTVER')

#: Images larger than this (pixels) get a progress bar unless --quiet.
_PROGRESS_PIXELS = 16_000_000


def _threshold(text):
    """Parse --threshold: a probability or an operating-point name."""
    try:
        return float(text)
    except ValueError:
        return text  # a name; the finder checks it against the model


def _footprint_level(text):
    """Parse --footprint-threshold: a probability, 'none' or 'model'."""
    if text.strip().lower() in ('none', 'model'):
        return text.strip().lower()
    try:
        return float(text)
    except ValueError:
        msg = f'expected a probability in [0, 1], "none" or "model", got {text!r}'
        raise argparse.ArgumentTypeError(msg) from None


def _peak_margin(text):
    """Parse --peak-margin: a non-negative number or 'none'."""
    if text.strip().lower() == 'none':
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        msg = f'expected a number >= 0 (noise units) or "none", got {text!r}'
        raise argparse.ArgumentTypeError(msg)
    return value


def make_finder(args, *, progress_bar=False):
    """
    The finder the ``detect`` options describe (both modes).

    Parameters
    ----------
    args : `argparse.Namespace`
        Parsed arguments (see `add_parser`).
    progress_bar : bool, optional
        Show the finder's tile progress bar.

    Returns
    -------
    finder : `~astro_deepcolor.DeepColorSegmentation`
        Options left at their default take the model's calibrated values.
    """
    from astro_deepcolor.inference import DeepColorSegmentation

    footprint = args.footprint_threshold
    kwargs = {'threshold': args.threshold, 'n_pixels': args.n_pixels,
              'model': args.model,
              'footprint_threshold': None if footprint == 'none' else footprint,
              'connectivity': args.connectivity, 'backend': args.backend,
              'device': args.device, 'tile_shape': args.tile_size,
              'progress_bar': progress_bar,
              'peak_margin': getattr(args, 'peak_margin', 0.5),
              'flips': bool(getattr(args, 'flips', False))}
    if args.batch_size is not None:
        kwargs['batch_size'] = args.batch_size
    return DeepColorSegmentation(**kwargs)


def add_parser(parser):
    """
    Declare the arguments of ``astro-deepcolor detect``.

    Parameters
    ----------
    parser : `argparse.ArgumentParser`
        The subcommand's parser.
    """
    parser.add_argument('inputs', nargs='+', metavar='IMAGE',
                        help='FITS image(s); several inputs, directories or '
                             'globs use the batch mode (with --out)')
    parser.add_argument('--hdu', default=None,
                        help='HDU number or EXTNAME (default: first image HDU); '
                             'IMAGE[HDU] works too, e.g. image.fits[1]')
    parser.add_argument('--plane', type=int, default=None,
                        help='plane of a data cube (0-based, along the '
                             'leading axes)')
    parser.add_argument('--mask', default=None, metavar='MASK.fits[HDU]',
                        help='FITS mask image, non-zero = bad pixel (in '
                             'batch mode: applied to every image)')
    parser.add_argument('--weight', default=None, metavar='WEIGHT.fits[HDU]',
                        help='weight map (SExtractor WEIGHT_IMAGE); zero '
                             'weight = masked; sets the noise of the '
                             'normalisation, flux errors and S/N')
    parser.add_argument('--weight-type', default='weight', dest='weight_type',
                        choices=('weight', 'variance', 'rms'),
                        help='what the weight map holds: inverse variance '
                             '(MAP_WEIGHT), variance (MAP_VAR) or standard '
                             'deviation (MAP_RMS) (default: %(default)s)')
    parser.add_argument('--zeropoint', type=float, default=None,
                        help='photometric zero point for mag and mag_err '
                             '(default: header MAGZERO or MAGZPT, else no '
                             'magnitudes)')
    parser.add_argument('--threshold', type=_threshold, default=None,
                        metavar='P|NAME',
                        help="foreground probability threshold in [0, 1], or "
                             "the name of one of the model's calibrated "
                             "operating points (e.g. 5%%) (default: the "
                             "model's default threshold)")
    parser.add_argument('--flips', action='store_true',
                        help='average the foreground probability over the image '
                             'and its three flips (4 network passes; fewer '
                             'artefacts taken for sources); names and the '
                             "default threshold then mean the model's '+flips' "
                             'operating points')
    parser.add_argument('--peak-margin', type=_peak_margin, default=0.5,
                        dest='peak_margin', metavar='SIGMA|none',
                        help='a source needs a peak of its own: a segment whose '
                             'brightest pixel (smoothed image, noise units) is '
                             'within this of its boundary with a brighter '
                             'neighbour is merged into it; "none" disables '
                             '(default: %(default)s)')
    parser.add_argument('--footprint-threshold', type=_footprint_level,
                        default='model', dest='footprint_threshold',
                        metavar='P|none|model',
                        help='probability that delimits the footprints of '
                             'sources detected above it; "none": the '
                             "threshold itself (default: the model's)")
    parser.add_argument('--n-pixels', type=int, default=5, dest='n_pixels',
                        help='minimum source area in pixels (default: %(default)s)')
    parser.add_argument('--connectivity', type=int, choices=(4, 8), default=8,
                        help='pixel connectivity (default: %(default)s)')
    parser.add_argument('--model', default=None, metavar='MODEL.onnx',
                        help='ONNX model file (default: the shipped model)')
    parser.add_argument('--backend', choices=('auto', 'onnxruntime', 'torch'),
                        default='auto', help='inference backend (default: auto)')
    parser.add_argument('--device', choices=('auto', 'cpu', 'cuda'),
                        default='auto', help='device (default: auto)')
    parser.add_argument('--tile-size', type=int, default=1024, dest='tile_size',
                        help='network tile size in pixels (default: %(default)s)')
    parser.add_argument('--batch-size', type=int, default=None, dest='batch_size',
                        help='tiles per network call (default: 1)')
    parser.add_argument('--catalog', default=None, metavar='CAT.ecsv|CAT.fits',
                        help='output catalogue (format from the extension)')
    parser.add_argument('--segmentation', default=None, metavar='SEGM.fits',
                        help='output segmentation image')
    parser.add_argument('--regions', default=None, metavar='SOURCES.reg',
                        help='output DS9 region file')
    parser.add_argument('--region-shape', choices=('ellipse', 'point'),
                        default='ellipse', dest='region_shape',
                        help='shape of the DS9 regions (default: ellipse, '
                             '3 x the moment semi-axes)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace existing output files')
    parser.add_argument('--quiet', action='store_true',
                        help='no progress bar or summary line')
    batch = parser.add_argument_group('batch mode (several inputs or --out)')
    batch.add_argument('--out', default=None, metavar='DIR',
                       help='output directory: one catalogue per image and a '
                            'merged catalogue')
    batch.add_argument('--scheduler', default=None, metavar='ADDRESS',
                       help='address of an existing Dask scheduler')
    batch.add_argument('--workers', type=int, default=None,
                       help='number of local Dask workers')
    batch.add_argument('--format', default=None, dest='catalog_format',
                       choices=('fits', 'ecsv', 'parquet'),
                       help='catalogue format in batch mode')
    batch.add_argument('--weight-suffix', default=None, dest='weight_suffix',
                       metavar='OLD=NEW|SUFFIX',
                       help="each image's weight file: OLD=NEW replaces the "
                            'last OLD in the file name (ooi=oow for DECam), '
                            'SUFFIX is added before the extension '
                            '(.weight: img.fits -> img.weight.fits)')
    batch.add_argument('--mask-suffix', default=None, dest='mask_suffix',
                       metavar='OLD=NEW|SUFFIX',
                       help="each image's mask file, same rule (ooi=ood)")
    batch.add_argument('--write-segmentation', action='store_true',
                       dest='write_segmentation',
                       help='also write segmentation images in batch mode')


def _check_output_path(path, option):
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        msg = f'{option} {str(path)!r} is a directory, not a file'
        raise IsADirectoryError(msg)
    return path


def _split_hdu_suffix(path, hdu):
    """``file.fits[1]`` / ``file.fits[SCI]``: return (path, hdu)."""
    text = str(path)
    if text.endswith(']') and '[' in text and not Path(text).exists():
        base, _, inside = text[:-1].rpartition('[')
        inside = inside.strip()
        if base and inside:
            if hdu is not None and str(hdu) != inside:
                msg = (f'{text!r} selects HDU {inside!r} and --hdu selects '
                       f'{hdu!r}: give one of them')
                raise ValueError(msg)
            return base, inside
    return text, hdu


def _summarise_header_warnings(path, caught):
    """One line for the warnings astropy gave about the user's file."""
    from astropy.utils.exceptions import AstropyUserWarning

    seen = {}
    for w in caught:
        seen.setdefault(str(w.message), w)
    caught = list(seen.values())
    if not caught:
        return
    first = str(caught[0].message).strip().replace('\n', ' ')
    if len(first) > 120:
        first = first[:117] + '...'
    more = f' (and {len(caught) - 1} more like it)' if len(caught) > 1 else ''
    warnings.warn(f'{path}: astropy found {len(caught)} problem(s) in the file '
                  f'header, used as is; first: {first}{more}',
                  AstropyUserWarning, stacklevel=3)


def _read_image(path, hdu, plane=None):
    """Return (data, header, hdu index) of the image HDU."""
    from astropy.io import fits

    path, hdu = _split_hdu_suffix(path, hdu)
    path = Path(path)
    if not path.exists():
        msg = f'input file {str(path)!r} does not exist'
        raise FileNotFoundError(msg)
    if path.is_dir():
        msg = f'input {str(path)!r} is a directory; use --out DIR for batch mode'
        raise IsADirectoryError(msg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        try:
            hdul = fits.open(path, memmap=False, lazy_load_hdus=False)
        except (OSError, ValueError, TypeError) as exc:
            msg = f'{str(path)!r} is not a readable FITS file ({exc})'
            raise ValueError(msg) from None
    truncated = [w for w in caught if 'truncated' in str(w.message)]
    if truncated:
        hdul.close()
        msg = (f'{str(path)!r} is truncated or corrupt: {truncated[0].message} '
               '(a download or copy cut short?)')
        raise ValueError(msg)
    with hdul:
        if hdu is None:
            index = next((i for i, h in enumerate(hdul)
                          if getattr(h, 'is_image', False) and h.header.get('NAXIS', 0) >= 2),
                         None)
            if index is None:
                msg = f'{str(path)!r} has no image HDU'
                raise ValueError(msg)
        else:
            index = int(hdu) if str(hdu).lstrip('-').isdigit() else hdu
            try:
                hdul[index]
            except (IndexError, KeyError):
                msg = f'--hdu {hdu!r}: {str(path)!r} has no such HDU ({len(hdul)} HDUs)'
                raise ValueError(msg) from None
        h = hdul[index]
        try:
            data = h.data if getattr(h, 'is_image', False) else None
        except (ValueError, OSError) as exc:  # e.g. cannot reshape: short data
            msg = (f'{str(path)!r} is truncated or corrupt: HDU {index!r} cannot '
                   f'be read ({exc})')
            raise ValueError(msg) from None
        if data is None:
            msg = f'HDU {index!r} of {str(path)!r} has no image data (--hdu)'
            raise ValueError(msg)
        if plane is not None:
            if data.ndim < 3:
                msg = (f'--plane {plane}: HDU {index!r} of {str(path)!r} is a 2D '
                       f'image (shape {data.shape!r}), not a cube')
                raise ValueError(msg)
            planes = data.reshape(-1, *data.shape[-2:])
            if not -len(planes) <= plane < len(planes):
                msg = (f'--plane {plane}: HDU {index!r} of {str(path)!r} has '
                       f'{len(planes)} planes (0 to {len(planes) - 1})')
                raise ValueError(msg)
            data = planes[plane]
        if data.ndim > 2 and all(s == 1 for s in data.shape[:-2]):
            data = data.reshape(data.shape[-2:])
        if data.ndim != 2:
            n = int(np.prod(data.shape[:-2]))
            msg = (f'HDU {index!r} of {str(path)!r} is a cube of shape '
                   f'{data.shape!r}: {n} planes of {data.shape[-2]} x '
                   f'{data.shape[-1]} pixels; select one with --plane N '
                   f'(0 to {n - 1})')
            raise ValueError(msg)
        from astro_deepcolor.pipeline import merged_header

        with warnings.catch_warnings(record=True) as more:
            warnings.simplefilter('always')
            header = merged_header(hdul, index)
            for card in header.cards:  # parse every card now, warn once
                card.verify('silentfix')
        caught += more
    _summarise_header_warnings(path, caught)
    return np.asarray(data), header, index


def _celestial_wcs(header):
    from astropy.wcs import WCS

    with warnings.catch_warnings():
        # FITSFixedWarning: astropy repairs the WCS; header-card warnings
        # were already summarised once by _read_image
        warnings.simplefilter('ignore')
        try:
            wcs = WCS(header, naxis=2)
        except Exception:
            return None
    if not wcs.has_celestial:
        return None
    return wcs


def _segmentation_hdu(segm_data, header, info):
    from astropy.io import fits

    out = fits.Header()
    for card in header.cards:
        key = card.keyword
        if key in _STRUCTURAL or key.startswith(('NAXIS', 'ZNAXIS', 'ZTILE')):
            continue
        # the card object itself: no re-parsing, so no warnings about
        # HIERARCH keywords or long values the input already had
        out.append(card)
    hdu = fits.PrimaryHDU(segm_data, header=out)
    hdu.header['EXTNAME'] = ('SEGMENTATION', 'deep-coloring source labels')
    for key, value, comment in info:
        hdu.header[key] = (value, comment)
    hdu.header.add_history('Segmentation by astro_deepcolor detect')
    return hdu


def _write_regions(table, path, shape, overwrite, wcs=None):
    from regions import EllipsePixelRegion, PixCoord, PointPixelRegion, Regions

    from astro_deepcolor.utils._io import atomic_path

    regs = []
    for row in table:
        if not (np.isfinite(row['x_centroid']) and np.isfinite(row['y_centroid'])):
            continue  # no centroid (non-positive flux): nothing to draw
        center = PixCoord(float(row['x_centroid']), float(row['y_centroid']))
        meta = {'text': str(int(row['label']))}
        if shape == 'point':
            regs.append(PointPixelRegion(center, meta=meta))
            continue
        a = float(np.nan_to_num(getattr(row['semimajor_axis'], 'value',
                                        row['semimajor_axis']), nan=1.0))
        b = float(np.nan_to_num(getattr(row['semiminor_axis'], 'value',
                                        row['semiminor_axis']), nan=1.0))
        angle = row['orientation']
        if not np.isfinite(angle):  # degenerate (e.g. one-pixel-wide) shape
            angle = 0 * angle.unit if hasattr(angle, 'unit') else 0.0
        regs.append(EllipsePixelRegion(center, width=max(6 * a, 1.0),
                                       height=max(6 * b, 1.0), angle=angle,
                                       meta=meta))
    if wcs is not None:
        # sky coordinates (fk5/icrs) when the image has a celestial WCS, so
        # the regions also overlay other images of the field in DS9
        regs = [r.to_sky(wcs) for r in regs]
    with atomic_path(path, overwrite=overwrite, name='region') as tmp:
        Regions(regs).write(str(tmp), format='ds9')


def _require(module, what):
    """Fail before any work when an optional dependency is missing."""
    from importlib.util import find_spec

    if find_spec(module) is None:
        msg = (f'{what} needs the {module!r} package, not installed here: '
               'pip install "astro-deepcolor[all]"')
        raise ModuleNotFoundError(msg)


def run_batch(args):
    """
    Run the batch mode of ``astro-deepcolor detect`` (several inputs or --out).

    Parameters
    ----------
    args : `argparse.Namespace`
        Parsed arguments (see `add_parser`).

    Returns
    -------
    status : int
        0 if every image was processed, 1 if some failed (see the
        manifest).
    """
    if args.plane is not None:
        msg = '--plane selects a plane of one cube: give one IMAGE, without --out'
        raise ValueError(msg)
    _require('distributed', 'batch mode (several inputs or --out)')
    from astro_deepcolor.batch import BatchDetector

    if args.out is None:
        msg = ('several inputs need an output directory: --out DIR (one '
               'catalogue per image plus a merged catalogue)')
        raise ValueError(msg)
    for name in ('catalog', 'regions', 'segmentation'):
        if getattr(args, name, None) is not None:
            msg = (f'--{name} names one output file; in batch mode outputs '
                   'go to --out DIR (use --write-segmentation for '
                   'segmentation images)')
            raise ValueError(msg)
    if args.weight is not None:
        msg = ('--weight names one weight file; in batch mode give the '
               "naming rule of each image's weight file: --weight-suffix "
               '(e.g. ooi=oow)')
        raise ValueError(msg)
    merged_format, catalog_format = 'fits', args.catalog_format or 'fits'
    if catalog_format == 'parquet':
        # a single --format parquet means: Parquet for the merged catalogue
        merged_format, catalog_format = 'parquet', 'fits'
    hdu = args.hdu
    if isinstance(hdu, str) and hdu.lstrip('-').isdigit():
        hdu = int(hdu)
    progress = not args.quiet
    batch = BatchDetector(
        make_finder(args), hdu=hdu, weight_suffix=args.weight_suffix,
        weight_type=args.weight_type, mask_suffix=args.mask_suffix,
        mask=args.mask, zeropoint=args.zeropoint,
        segmentation=args.write_segmentation, catalog_format=catalog_format,
        merged_format=merged_format, scheduler=args.scheduler,
        n_workers=args.workers, overwrite=args.overwrite,
        progress_bar=progress)
    result = batch(args.inputs, args.out)
    mpix = result.megapixels_per_second
    if progress:  # --quiet: no progress bar and no summary line
        print(f'{result.n_done} images detected, {result.n_reused} already done, '
              f'{result.n_failed} failed, {result.n_skipped} HDUs without image; '
              f'{result.n_sources} sources in {result.catalog} '
              f'({result.seconds:.1f} s, {mpix:.2f} MPix/s); '
              f'manifest {result.manifest}', file=sys.stderr)
    return 1 if result.n_failed else 0


def run(args):
    """
    Run ``astro-deepcolor detect``.

    Parameters
    ----------
    args : `argparse.Namespace`
        Parsed arguments (see `add_parser`).

    Returns
    -------
    status : int
        0 on success.
    """
    if len(args.inputs) > 1 or args.out is not None:
        return run_batch(args)
    from photutils.utils.exceptions import NoDetectionsWarning

    from astro_deepcolor.pipeline import (
        catalog_format,
        detect_image,
        read_fits_map,
        write_catalog,
    )
    from astro_deepcolor.utils._io import check_writable

    if args.weight_suffix is not None or args.mask_suffix is not None:
        msg = ('--weight-suffix and --mask-suffix are batch-mode rules; for '
               'one image give --weight FILE and --mask FILE')
        raise ValueError(msg)
    catalog = _check_output_path(args.catalog, '--catalog')
    segmentation = _check_output_path(args.segmentation, '--segmentation')
    regions = _check_output_path(args.regions, '--regions')
    if regions is not None:
        _require('regions', '--regions')
    if catalog is None and segmentation is None and regions is None:
        msg = 'nothing to write: give --catalog, --segmentation and/or --regions'
        raise ValueError(msg)
    if catalog is not None:
        catalog_format(catalog)
    # Refuse to clobber before spending time on detection.
    for path, name in ((catalog, 'catalogue'), (segmentation, 'segmentation'),
                       (regions, 'region')):
        if path is not None:
            check_writable(path, overwrite=args.overwrite, name=name)
    if len({p.resolve() for p in (catalog, segmentation, regions)
            if p is not None}) < sum(p is not None for p in
                                     (catalog, segmentation, regions)):
        msg = '--catalog, --segmentation and --regions must be different files'
        raise ValueError(msg)

    data, header, index = _read_image(args.inputs[0], args.hdu, args.plane)
    finite = np.isfinite(data)
    if not finite.any() or np.min(data[finite]) == np.max(data[finite]):
        from astro_deepcolor.preprocessing import _unusable_message

        raise ValueError(f'{args.inputs[0]}: '
                         + _unusable_message(data, None, 64, 0.5))
    hdu_index = index if isinstance(index, int) else None
    mask = weight = None
    if args.mask:
        mask = read_fits_map(args.mask, data.shape, option='--mask',
                             hdu=hdu_index) != 0
    if args.weight:
        weight = read_fits_map(args.weight, data.shape, option='--weight',
                               hdu=hdu_index)
    wcs = _celestial_wcs(header)
    progress = not args.quiet and data.size > _PROGRESS_PIXELS
    finder = make_finder(args, progress_bar=progress)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', NoDetectionsWarning)
        segm, table = detect_image(finder, data, header, mask=mask,
                                   weight=weight, weight_type=args.weight_type,
                                   zeropoint=args.zeropoint)
    n_sources = 0 if segm is None else segm.n_labels
    table.meta['image'] = str(args.inputs[0])
    table.meta['hdu'] = index if isinstance(index, int) else str(index)
    if args.plane is not None:
        table.meta['plane'] = args.plane

    if segmentation is not None:
        from astro_deepcolor.utils._io import atomic_path

        segm_data = (np.zeros(data.shape, dtype=np.int32) if segm is None
                     else segm.data.astype(np.int32, copy=False))
        info = [('DCTHRESH', finder.threshold, 'deep-coloring probability threshold'),
                ('DCNPIX', finder.n_pixels, 'minimum source area (pixels)'),
                ('DCNSRC', n_sources, 'number of sources'),
                ('DCMODEL', Path(finder.model.path).name, 'model file'),
                ('DCHDU', str(index), 'input HDU')]
        hdu = _segmentation_hdu(segm_data, header, info)
        with atomic_path(segmentation, overwrite=args.overwrite,
                         name='segmentation') as tmp:
            hdu.writeto(tmp)
    if catalog is not None:
        write_catalog(table, catalog, overwrite=args.overwrite)
    if regions is not None:
        _write_regions(table, regions, args.region_shape, args.overwrite, wcs)
    if not args.quiet:
        print(f'{args.inputs[0]}: {n_sources} sources '
              f'({finder.backend_description})', file=sys.stderr)
    return 0
