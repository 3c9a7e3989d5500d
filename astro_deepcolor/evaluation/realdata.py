# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Checks of the detectors on real images (``../shared/data/real``).

* ``sep/image.fits``: fraction of the reference SExtractor catalogue
  (``image.cat``) recovered within 2 px (one-to-one) at 1.5 sigma (5 for
  sep_matched, 0.5 probability for the CNN).
* ``astride/long.fits``: detections within 5 px of the satellite streak
  (end points from ``long.fits.out.txt``), which should be none.
* ``legacypipe/testcase6`` and ``testcase4``: detections whose centroid
  pixel is flagged in the DECam data-quality mask (HDU 1 of ``*_ood_*``).
* ``legacypipe/testcase4/gaia``: fraction of the Gaia stars (projected
  with the image WCS) recovered within 3 px.

The images are given to the detectors unmasked: the point is how many
detections land on defects the detector was not told about.
"""

import warnings
from pathlib import Path

import numpy as np
from astropy.io import ascii as ascii_io
from astropy.io import fits
from astropy.table import QTable, vstack
from astropy.utils.exceptions import AstropyWarning

from .matching import match_sources

__all__ = ['REAL_REGIME', 'REAL_THRESHOLDS', 'default_data_dir',
           'operating_thresholds', 'read_streaks', 'real_data_checks']

#: Operating threshold of each detector on real images.
REAL_THRESHOLDS = {'cnn': 0.5, 'cnn_flips': 0.5, 'cnn_sourcextractor': 0.9,
                   'sep': 1.5, 'sep_matched': 5.0,
                   'photutils': 1.5, 'sextractor': 1.5,
                   'noisechisel': (0.3, 0.99)}
#: FWHM (pixels) assumed for the matched filters when a header says nothing.
DEFAULT_FWHM = 4.0


#: Benchmark regime whose operating points set the real-image thresholds
#: (real exposures carry artefacts).
REAL_REGIME = 'contaminated'


def operating_thresholds(summary, regime=REAL_REGIME):
    """
    Each detector's operating threshold on the benchmark, for real images.

    The operating point is the best completeness at <= 5 % contamination
    on the benchmark's ``regime`` images (the other regime when that one
    was not run), so the real-image checks compare the detectors at the
    same contamination rather than at unrelated default thresholds.

    Parameters
    ----------
    summary : `~astropy.table.QTable`
        From `~astro_deepcolor.evaluation.harness.summarize`.
    regime : str, optional
        Benchmark regime.

    Returns
    -------
    thresholds : dict
        Detector -> threshold (float, or ``(qthresh, snquant)``).
    """
    regimes = list(dict.fromkeys(summary['regime'])) if len(summary) else []
    if regime not in regimes:
        if not regimes:
            return {}
        regime = regimes[0]
    out = {}
    for row in summary[summary['regime'] == regime]:
        label = str(row['operating_threshold'])
        try:
            out[str(row['detector'])] = float(label)
        except ValueError:
            q, sn = (float(v.split('=')[1]) for v in label.split(','))
            out[str(row['detector'])] = (q, sn)
    return out


def default_data_dir():
    """
    The shared real-image folder next to the repository, if present.

    Returns
    -------
    path : `~pathlib.Path` or None
    """
    path = Path(__file__).resolve().parents[2] / '..' / 'shared' / 'data' / 'real'
    return path.resolve() if path.is_dir() else None


def _read(path, hdu=0):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', AstropyWarning)
        with fits.open(path) as hdul:
            data = np.asarray(hdul[hdu].data)
            header = hdul[hdu].header.copy()
    return data.astype(data.dtype.newbyteorder('=')).astype(np.float32), header


def _detect(name, data, fwhm, model=None, thresholds=None):
    from .harness import make_detector

    det = make_detector(name, fwhm, model=model)
    t = (thresholds or REAL_THRESHOLDS).get(name, REAL_THRESHOLDS[name])
    try:
        _, _, table = next(iter(det.sweep(data, [t])))
    except (ValueError, RuntimeError) as exc:
        warnings.warn(f'{name} failed on a real image: {exc}', AstropyWarning,
                      stacklevel=2)
        return None, t
    return table, t


def _row(dataset, name, t, metric, value, n, note=''):
    return {'dataset': dataset, 'detector': name,
            'threshold': str(t if np.ndim(t) == 0 else f'q={t[0]},sn={t[1]}'),
            'metric': metric, 'value': float(value), 'n': int(n), 'note': note}


def _check_sep_field(root, names, model, thresholds=None):
    rows = []
    path = root / 'sep' / 'image.fits'
    if not path.exists():
        return rows
    data, _ = _read(path)
    ref = ascii_io.read(root / 'sep' / 'image.cat', format='sextractor')
    ref_xy = QTable({'x': np.asarray(ref['X_IMAGE'], float) - 1,
                     'y': np.asarray(ref['Y_IMAGE'], float) - 1})
    for name in names:
        table, t = _detect(name, data, 3.0, model, thresholds)
        if table is None:
            continue
        m = match_sources(ref_xy, table, radius=2.0)
        rows.append(_row('sep/image.fits', name, t,
                         'fraction of image.cat matched within 2 px',
                         m.tp / len(ref_xy), len(ref_xy),
                         f'{len(table)} detections'))
    return rows


def _streak_distance(x, y, segs):
    d = np.full(np.shape(x), np.inf)
    for x0, y0, x1, y1 in segs:
        px, py = x1 - x0, y1 - y0
        u = np.clip(((x - x0) * px + (y - y0) * py) / (px * px + py * py), 0, 1)
        d = np.minimum(d, np.hypot(x - (x0 + u * px), y - (y0 + u * py)))
    return d


def read_streaks(path):
    """
    Streak segments of an ASTRiDE output file.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        ASTRiDE ``*.out.txt`` (columns ``id xmin ymin xmax ymax slope``...).

    Returns
    -------
    segments : list of tuple
        ``(x0, y0, x1, y1)`` end points (0-based pixels). The file gives a
        bounding box; a falling streak (negative slope) runs from
        ``(xmin, ymax)`` to ``(xmax, ymin)``.
    """
    segs = []
    for line in Path(path).read_text().splitlines():
        if line.strip() and not line.startswith('#'):
            v = line.split()
            xmin, ymin, xmax, ymax, slope = (float(a) for a in v[1:6])
            segs.append((xmin, ymax, xmax, ymin) if slope < 0
                        else (xmin, ymin, xmax, ymax))
    return segs


def _check_streak(root, names, model, thresholds=None):
    rows = []
    path = root / 'astride' / 'long.fits'
    if not path.exists():
        return rows
    data, _ = _read(path)
    segs = read_streaks(root / 'astride' / 'long.fits.out.txt')
    for name in names:
        table, t = _detect(name, data, 3.0, model, thresholds)
        if table is None:
            continue
        d = _streak_distance(np.asarray(table['x'], float),
                             np.asarray(table['y'], float), segs)
        rows.append(_row('astride/long.fits', name, t,
                         'detections within 5 px of the streak',
                         int(np.sum(d < 5)), len(table),
                         f'{len(table)} detections'))
    return rows


def _check_dq(root, names, model, thresholds=None):
    rows = []
    images = sorted((root / 'legacypipe').glob('testcase*/*_ooi_*.fits'))
    if not images:
        return rows
    for name in names:
        n_flag = n_tot = 0
        for img in images:
            data, hdr = _read(img, 1)
            dq, _ = _read(Path(str(img).replace('_ooi_', '_ood_')), 1)
            fwhm = float(hdr.get('FWHM', DEFAULT_FWHM) or DEFAULT_FWHM)
            table, _t = _detect(name, data, fwhm, model, thresholds)
            if table is None:
                continue
            ix = np.clip(np.round(np.asarray(table['x'], float)).astype(int), 0,
                         dq.shape[1] - 1)
            iy = np.clip(np.round(np.asarray(table['y'], float)).astype(int), 0,
                         dq.shape[0] - 1)
            n_flag += int(np.sum(dq[iy, ix] > 0))
            n_tot += len(table)
        rows.append(_row('legacypipe DECam (7 cutouts)', name,
                         REAL_THRESHOLDS[name],
                         'detections on DQ-flagged pixels', n_flag, n_tot,
                         f'{n_tot} detections in all'))
    return rows


def _check_gaia(root, names, model, thresholds=None):
    from astropy.wcs import WCS, FITSFixedWarning

    rows = []
    case = root / 'legacypipe' / 'testcase4'
    imgs = sorted(case.glob('*_ooi_*.fits'))
    chunks = sorted((case / 'gaia').glob('*.fits'))
    if not imgs or not chunks:
        return rows
    data, hdr = _read(imgs[0], 1)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FITSFixedWarning)
        wcs = WCS(hdr)
    gaia = vstack([QTable.read(c) for c in chunks])
    x, y = wcs.all_world2pix(np.asarray(gaia['ra'], float),
                             np.asarray(gaia['dec'], float), 0)
    inside = (x > -0.5) & (y > -0.5) & (x < data.shape[1] - 0.5) & \
        (y < data.shape[0] - 0.5)
    truth = QTable({'x': x[inside], 'y': y[inside]})
    fwhm = float(hdr.get('FWHM', DEFAULT_FWHM) or DEFAULT_FWHM)
    for name in names:
        table, t = _detect(name, data, fwhm, model, thresholds)
        if table is None or not len(truth):
            continue
        m = match_sources(truth, table, radius=3.0)
        rows.append(_row('legacypipe/testcase4 + Gaia', name, t,
                         'fraction of Gaia stars matched within 3 px',
                         m.tp / len(truth), len(truth),
                         f'{len(table)} detections'))
    return rows


def real_data_checks(names, data_dir=None, *, model=None, thresholds=None):
    """
    Run the real-image checks for the given detectors.

    Parameters
    ----------
    names : iterable of str
        Detector names (available ones).
    data_dir : str or `~pathlib.Path`, optional
        The ``real`` folder (default: ``../shared/data/real`` next to the
        repository).
    model : str, optional
        CNN model file (default: the shipped model).
    thresholds : dict, optional
        Detector -> threshold; by default `REAL_THRESHOLDS`. Pass
        `operating_thresholds` of a benchmark summary to compare the
        detectors at the same contamination (their 5 % operating points).

    Returns
    -------
    table : `~astropy.table.QTable` or None
        One row per (dataset, detector, metric); None without the data.
    """
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    if root is None or not root.is_dir():
        return None
    names = list(names)
    rows = []
    for check in (_check_sep_field, _check_streak, _check_dq, _check_gaia):
        rows += check(root, names, model, thresholds)
    return QTable(rows=rows) if rows else None
