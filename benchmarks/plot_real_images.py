# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Figures and counts for the "Real images" section of the detection guide.

Runs `~astro_deepcolor.DeepColorSegmentation` (5 pixels) and sep
(`astro_deepcolor.baselines.SepDetector`: Gaussian filter matched to the
FWHM, SExtractor thresholding, deblending and cleaning, 5 pixels), each at
the threshold that gives it 5 % contamination on the contaminated benchmark
images (read from ``results/benchmark/summary.ecsv``; without it, 0.5 and
1.5 sigma), on every real image of ``../shared/data/real`` (see
``../shared/data/README.md``):

* ``sep/image.fits`` (ESO NTT/EMMI; reference: SExtractor's ``image.cat``),
* ``astride/long.fits`` (SAAO, int16 big-endian, satellite streak),
* ``legacypipe/testcase4`` (DECam z, cosmic ray; reference: Gaia stars
  projected with the image WCS) and the six ``legacypipe/testcase6``
  cutouts (a saturated star with a bleed trail); the ``*_oow_*`` weight
  (0 = bad) is the mask given to both detectors, the ``*_ood_*`` DQ map
  is used for counting,
* ``astro_rcnn/img_r.fits`` (DECaLS DR7 coadd, r band),
* ``scarlet/hsc_cosmos.npz`` (HSC i band of a COSMOS blend; reference:
  the small catalogue in the file).

Writes one figure per image (one for the six testcase6 cutouts) to
``docs/_static/real_<name>.png``: the image with the same zscale/asinh
stretch in both panels, left the CNN segmentation outlines, right sep's.
Red outlines are detections whose centroid pixel is DQ-flagged (or lies
within 5 px of the satellite streak); shaded orange pixels are
DQ-flagged; yellow circles (2 px radius) are reference positions.

The per-image counts go to ``results/real/real_images.ecsv``. Run from the
repository root::

    OMP_NUM_THREADS=1 python benchmarks/plot_real_images.py [--model FILE]

Without ``../shared/data/real`` (or with no readable image in it) the script
says so on stderr and exits with status 1: no figure was made.
"""

import argparse
import io
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ['main']

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / 'shared' / 'data' / 'real'

#: Detection settings without a benchmark summary (the package default and
#: SExtractor's); with one (``--summary``), each detector runs at its 5 %
#: contamination operating point on the contaminated benchmark images.
CNN_THRESHOLD = 0.5
SEP_THRESHOLD = 1.5
DEFAULT_SUMMARY = ROOT / 'results' / 'benchmark' / 'summary.ecsv'
N_PIXELS = 5
#: Matching radius to reference catalogues (pixels).
MATCH_RADIUS = 2.0
#: Distance (pixels) from the satellite streak counted as "on the streak".
STREAK_DISTANCE = 5.0
#: FWHM (pixels) of the images whose header gives none.
FWHM_SEP = 3.0       # as in astro_deepcolor.evaluation.realdata
FWHM_ASTRIDE = 3.0
FWHM_DECALS = 4.5    # DR7 r-band median seeing ~1.2" at 0.262"/px

COLORS = {'det': 'lime', 'flag': 'red', 'ref': 'yellow', 'dq': (1.0, 0.55, 0.0, 0.45)}


@dataclass
class RealImage:
    """One image and what we know about it."""

    name: str                 # table key, e.g. 'sep/image.fits'
    figure: str               # figure stem, e.g. 'sep'
    title: str                # panel title prefix
    data: np.ndarray
    fwhm: float
    mask: np.ndarray | None = None      # given to the detectors
    dq: np.ndarray | None = None        # DQ codes, for counting only
    wcs: object = None
    ref_xy: np.ndarray | None = None    # (n, 2) 0-based reference positions
    ref_name: str = ''
    streak: list = field(default_factory=list)  # (x0, y0, x1, y1) segments


@dataclass
class Result:
    """Detections of one detector on one image."""

    segm: object              # SegmentationImage or None
    xy: np.ndarray            # (n, 2) centroids
    flagged: np.ndarray       # (n,) bool: on DQ or streak
    n_on_dq: int | None = None
    n_on_streak: int | None = None
    n_recovered: int | None = None


# -- reading -----------------------------------------------------------------

def _read_fits(path, hdu=0):
    from astropy.io import fits
    from astropy.utils.exceptions import AstropyWarning

    with warnings.catch_warnings():
        warnings.simplefilter('ignore', AstropyWarning)
        with fits.open(path, memmap=False) as hdul:
            return np.asarray(hdul[hdu].data), hdul[hdu].header.copy()


def _wcs(header):
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FITSFixedWarning)
        wcs = WCS(header, naxis=2)
    return wcs if wcs.has_celestial else None


def _load_images(root):
    """All readable real images under ``root`` (missing ones are skipped)."""
    from astropy.io import ascii as ascii_io
    from astropy.table import vstack

    images = []
    path = root / 'sep' / 'image.fits'
    if path.exists():
        data, _ = _read_fits(path)
        ref = None
        if (root / 'sep' / 'image.cat').exists():
            cat = ascii_io.read(root / 'sep' / 'image.cat', format='sextractor')
            ref = np.column_stack([np.asarray(cat['X_IMAGE'], float) - 1,
                                   np.asarray(cat['Y_IMAGE'], float) - 1])
        images.append(RealImage('sep/image.fits', 'sep', 'sep/image.fits', data,
                                FWHM_SEP, ref_xy=ref, ref_name='image.cat'))

    path = root / 'astride' / 'long.fits'
    if path.exists():
        data, header = _read_fits(path)
        segs = []
        out = root / 'astride' / 'long.fits.out.txt'
        if out.exists():
            # ASTRiDE columns: number xmin ymin xmax ymax slope ...; with a
            # negative slope the streak runs from (xmin, ymax) to (xmax, ymin).
            for line in out.read_text().splitlines():
                if line.strip() and not line.lstrip().startswith('#'):
                    x0, y0, x1, y1, slope = (float(v) for v in line.split()[1:6])
                    segs.append((x0, y1, x1, y0) if slope < 0 else (x0, y0, x1, y1))
        images.append(RealImage('astride/long.fits', 'astride', 'astride/long.fits',
                                data, FWHM_ASTRIDE, wcs=_wcs(header), streak=segs))

    for case in ('testcase4', 'testcase6'):
        for img in sorted((root / 'legacypipe' / case).glob('*_ooi_*.fits')):
            data, header = _read_fits(img, 1)
            weight, _ = _read_fits(Path(str(img).replace('_ooi_', '_oow_')), 1)
            dq, _ = _read_fits(Path(str(img).replace('_ooi_', '_ood_')), 1)
            fwhm = float(header.get('FWHM', 4.0) or 4.0)
            wcs = _wcs(header)
            stem = img.name.split('_ls9')[0]
            band = img.name.split('_ooi_')[1].split('_')[0]
            ref, ref_name = None, ''
            gaia = sorted((img.parent / 'gaia').glob('*.fits'))
            if gaia and wcs is not None:
                from astropy.table import QTable

                g = vstack([QTable.read(c) for c in gaia])
                x, y = wcs.all_world2pix(np.asarray(g['ra'], float),
                                         np.asarray(g['dec'], float), 0)
                ny, nx = data.shape
                inside = (x > -0.5) & (y > -0.5) & (x < nx - 0.5) & (y < ny - 0.5)
                ref, ref_name = np.column_stack([x[inside], y[inside]]), 'Gaia'
            images.append(RealImage(
                f'legacypipe/{case}/{stem}', f'legacypipe_{case}',
                f'{stem[4:17]} {band}', data, fwhm,
                mask=np.asarray(weight) <= 0, dq=np.asarray(dq), wcs=wcs,
                ref_xy=ref, ref_name=ref_name))

    path = root / 'astro_rcnn' / 'img_r.fits'
    if path.exists():
        data, header = _read_fits(path)
        images.append(RealImage('astro_rcnn/img_r.fits', 'astro_rcnn',
                                'astro_rcnn/img_r.fits', data, FWHM_DECALS,
                                wcs=_wcs(header)))

    path = root / 'scarlet' / 'hsc_cosmos.npz'
    if path.exists():
        with np.load(path) as npz:
            filters = [str(f) for f in npz['filters']]
            band = filters.index('i') if 'i' in filters else 0
            data = np.asarray(npz['images'][band])
            psf = np.asarray(npz['psfs'][band], float)
            cat = npz['catalog']
        fwhm = 2.0 * np.sqrt(np.sum(psf >= 0.5 * psf.max()) / np.pi)
        images.append(RealImage(
            'scarlet/hsc_cosmos.npz', 'scarlet', f'scarlet HSC {filters[band]}',
            data, float(fwhm),
            ref_xy=np.column_stack([cat['x'], cat['y']]).astype(float),
            ref_name='scarlet catalogue'))
    return images


# -- detection and counting ------------------------------------------------------

def _label_centres(segm):
    from scipy import ndimage

    labels = segm.labels
    c = ndimage.center_of_mass(np.ones(segm.shape), segm.data, labels)
    return np.asarray(c, float).reshape(-1, 2)[:, ::-1]


def _cnn_xy(finder, image, segm):
    table = finder.catalog(image.data, segm, wcs=image.wcs, mask=image.mask)
    xy = np.column_stack([np.asarray(table['x_centroid'], float),
                          np.asarray(table['y_centroid'], float)])
    bad = ~np.isfinite(xy).all(axis=1)
    if bad.any():  # no positive flux: use the footprint's centre
        xy[bad] = _label_centres(segm)[bad]
    return xy


def _streak_distance(xy, segs):
    d = np.full(len(xy), np.inf)
    for x0, y0, x1, y1 in segs:
        px, py = x1 - x0, y1 - y0
        u = np.clip(((xy[:, 0] - x0) * px + (xy[:, 1] - y0) * py) / (px * px + py * py),
                    0, 1)
        d = np.minimum(d, np.hypot(xy[:, 0] - (x0 + u * px), xy[:, 1] - (y0 + u * py)))
    return d


def _on_dq(xy, dq):
    if len(xy) == 0:
        return np.zeros(0, bool)
    ix = np.clip(np.floor(xy[:, 0] + 0.5).astype(int), 0, dq.shape[1] - 1)
    iy = np.clip(np.floor(xy[:, 1] + 0.5).astype(int), 0, dq.shape[0] - 1)
    return dq[iy, ix] != 0


def _count(image, segm, xy):
    from astropy.table import QTable

    from astro_deepcolor.evaluation import match_sources

    res = Result(segm, xy, np.zeros(len(xy), bool))
    if image.dq is not None:
        on = _on_dq(xy, image.dq)
        res.flagged |= on
        res.n_on_dq = int(on.sum())
    if image.streak:
        near = _streak_distance(xy, image.streak) < STREAK_DISTANCE
        res.flagged |= near
        res.n_on_streak = int(near.sum())
    if image.ref_xy is not None and len(image.ref_xy):
        m = match_sources(QTable({'x': image.ref_xy[:, 0], 'y': image.ref_xy[:, 1]}),
                          QTable({'x': xy[:, 0], 'y': xy[:, 1]}), radius=MATCH_RADIUS)
        res.n_recovered = m.tp
    return res


def _set_thresholds(summary):
    """Put both detectors at the same contamination on the benchmark."""
    global CNN_THRESHOLD, SEP_THRESHOLD
    if summary in (None, 'none') or not Path(summary).is_file():
        print('no benchmark summary: CNN at probability '
              f'{CNN_THRESHOLD}, sep at {SEP_THRESHOLD} sigma')
        return
    from astropy.table import QTable

    from astro_deepcolor.evaluation.realdata import operating_thresholds

    points = operating_thresholds(QTable.read(summary))
    CNN_THRESHOLD = points.get('cnn', CNN_THRESHOLD)
    SEP_THRESHOLD = points.get('sep', SEP_THRESHOLD)
    print(f'thresholds from {summary} (5 % contamination on the contaminated '
          f'benchmark): CNN {CNN_THRESHOLD}, sep {SEP_THRESHOLD} sigma')


def _run_cnn(finder, image, mask):
    from photutils.utils.exceptions import NoDetectionsWarning

    with warnings.catch_warnings():
        warnings.simplefilter('ignore', NoDetectionsWarning)
        segm = finder(image.data, mask=mask)
    if segm is None:
        return None, np.zeros((0, 2))
    return segm, _cnn_xy(finder, image, segm)


def _run_sep(image, mask):
    from astro_deepcolor.baselines import SepDetector

    det = SepDetector(fwhm=image.fwhm, n_pixels=N_PIXELS)
    segm, table = det(image.data, SEP_THRESHOLD, mask=mask)
    xy = np.column_stack([np.asarray(table['x'], float), np.asarray(table['y'], float)])
    return segm, xy


# -- plotting --------------------------------------------------------------------

def _outline_segments(labels):
    """Pixel-edge segments between different labels (for a LineCollection)."""
    lab = np.pad(np.asarray(labels), 1)
    segs = []
    # vertical edges: between columns j and j+1 of the padded array
    iy, ix = np.nonzero((lab[:, 1:] != lab[:, :-1]) & ((lab[:, 1:] > 0) | (lab[:, :-1] > 0)))
    x = ix - 0.5  # padded column j+1 is original column j; edge at j - 0.5
    y = iy - 1
    segs.append(np.stack([np.column_stack([x, y - 0.5]), np.column_stack([x, y + 0.5])], 1))
    iy, ix = np.nonzero((lab[1:, :] != lab[:-1, :]) & ((lab[1:, :] > 0) | (lab[:-1, :] > 0)))
    y = iy - 0.5
    x = ix - 1
    segs.append(np.stack([np.column_stack([x - 0.5, y]), np.column_stack([x + 0.5, y])], 1))
    return np.concatenate(segs) if segs else np.zeros((0, 2, 2))


def _draw_panel(ax, image, norm, res, label, lw):
    from matplotlib.collections import LineCollection
    from matplotlib.patches import Circle

    ax.imshow(image.data, origin='lower', cmap='gray', norm=norm, interpolation='nearest')
    if image.dq is not None and image.dq.any():
        flagged = image.dq != 0
        overlay = np.zeros((*flagged.shape, 4))
        overlay[flagged] = COLORS['dq']
        ax.imshow(overlay, origin='lower', interpolation='nearest')
        ax.add_collection(LineCollection(_outline_segments(flagged.astype(int)),
                                         colors=[COLORS['dq'][:3]], linewidths=lw))
    if res.segm is not None:
        data = res.segm.data
        is_flag = np.isin(data, res.segm.labels[res.flagged])
        for sel, color in ((np.where(is_flag, 0, data), COLORS['det']),
                           (np.where(is_flag, data, 0), COLORS['flag'])):
            segs = _outline_segments(sel)
            if len(segs):
                ax.add_collection(LineCollection(segs, colors=color, linewidths=lw))
    if image.ref_xy is not None:
        for x, y in image.ref_xy:
            ax.add_patch(Circle((x, y), MATCH_RADIUS, fill=False, edgecolor=COLORS['ref'],
                                linewidth=lw))
    ny, nx = image.data.shape
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(-0.5, ny - 0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(label, fontsize=9)


def _panel_title(which, image, res):
    n = len(res.xy)
    parts = [f'{which}: {n} detections']
    if res.n_recovered is not None:
        parts.append(f'{res.n_recovered}/{len(image.ref_xy)} {image.ref_name}')
    if res.n_on_dq is not None:
        parts.append(f'{res.n_on_dq} on DQ')
    if res.n_on_streak is not None:
        parts.append(f'{res.n_on_streak} on streak')
    return ', '.join(parts)


def _save(fig, path):
    import matplotlib.pyplot as plt
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, dpi=100)
    plt.close(fig)
    buf.seek(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A 256-colour palette (no dithering) keeps noisy images small.
    Image.open(buf).convert('RGB').quantize(256, method=Image.Quantize.FASTOCTREE,
                                            dither=Image.Dither.NONE).save(path, optimize=True)


def _norm(data, mask):
    from astropy.visualization import AsinhStretch, ImageNormalize, ZScaleInterval

    good = np.isfinite(data) if mask is None else np.isfinite(data) & ~mask
    vmin, vmax = ZScaleInterval().get_limits(np.asarray(data, float)[good])
    return ImageNormalize(vmin=vmin, vmax=vmax, stretch=AsinhStretch(0.1), clip=True)


#: Panels of one image: (results key, title prefix).
_RUNS = (('cnn', 'CNN'), ('sep', 'sep'))
_RUNS_UNMASKED = (('cnn_unmasked', 'CNN, no mask'), ('sep_unmasked', 'sep, no mask'))


def _figure(images, results, out, model_label):
    """
    One figure for a group of images.

    A single image without a mask: CNN left, sep right. A single image
    with a mask: the same pair on top and, below, the pair run without
    the mask. Several (small) images: one column per image, rows CNN,
    sep, CNN without mask, sep without mask.
    """
    import matplotlib.pyplot as plt

    n = len(images)
    masked = images[0].mask is not None
    runs = _RUNS + (_RUNS_UNMASKED if masked else ())
    ny, nx = images[0].data.shape
    if n == 1:
        width = 12.0 if max(ny, nx) > 128 else 9.0
        rows = len(runs) // 2
        height = rows * (width / 2 * ny / nx + 0.35) + 0.5
        fig, axes = plt.subplots(rows, 2, figsize=(width, height), squeeze=False,
                                 layout='constrained')
        cells = {key: axes[i // 2, i % 2] for i, (key, _) in enumerate(runs)}
        panels = [(images[0], cells)]
        lw = 0.6 if max(ny, nx) > 300 else 0.9
    else:
        fig, axes = plt.subplots(len(runs), n, figsize=(2.45 * n, 2.75 * len(runs) + 0.4),
                                 squeeze=False, layout='constrained')
        panels = [(image, {key: axes[r, i] for r, (key, _) in enumerate(runs)})
                  for i, image in enumerate(images)]
        lw = 1.0
    for image, cells in panels:
        norm = _norm(image.data, image.mask)
        for key, which in runs:
            res = results[image.name][key]
            title = _panel_title(which, image, res)
            if n > 1:
                title = f'{image.title}\n{title}'
            _draw_panel(cells[key], image, norm, res, title, lw)
    head = images[0].name if n == 1 else images[0].name.rsplit('/', 1)[0]
    fig.suptitle(f'{head}: CNN (p >= {CNN_THRESHOLD}, {model_label}) vs sep '
                 f'({SEP_THRESHOLD} sigma)', fontsize=10)
    _save(fig, out)


# -- table -------------------------------------------------------------------------

def _masked_int(values):
    return np.ma.MaskedArray([0 if v is None else v for v in values],
                             mask=[v is None for v in values], dtype=np.int64)


def _table(images, results, meta):
    from astropy.table import MaskedColumn, QTable

    rows = [(im, results[im.name]) for im in images]
    t = QTable()
    t['image'] = [im.name for im, _ in rows]
    t['figure'] = [f'real_{im.figure}.png' for im, _ in rows]
    t['shape'] = [f'{im.data.shape[0]}x{im.data.shape[1]}' for im, _ in rows]
    t['fwhm'] = np.round([im.fwhm for im, _ in rows], 2)
    t['n_masked'] = [0 if im.mask is None else int(im.mask.sum()) for im, _ in rows]
    for det in ('cnn', 'sep'):
        t[f'n_{det}'] = [len(r[det].xy) for _, r in rows]
    for key, attr in (('on_dq', 'n_on_dq'), ('on_streak', 'n_on_streak')):
        for det in ('cnn', 'sep'):
            t[f'n_{det}_{key}'] = MaskedColumn(
                _masked_int([getattr(r[det], attr) for _, r in rows]))
    for det in ('cnn', 'sep'):
        t[f'n_{det}_on_dq_unmasked'] = MaskedColumn(_masked_int(
            [r[f'{det}_unmasked'].n_on_dq if f'{det}_unmasked' in r else None
             for _, r in rows]))
    t['reference'] = [im.ref_name for im, _ in rows]
    t['n_ref'] = MaskedColumn(_masked_int(
        [None if im.ref_xy is None else len(im.ref_xy) for im, _ in rows]))
    for det in ('cnn', 'sep'):
        t[f'n_{det}_recovered'] = MaskedColumn(
            _masked_int([r[det].n_recovered for _, r in rows]))
    for det in ('cnn', 'sep'):
        t[f'{det}_recovery'] = MaskedColumn(
            np.round(np.ma.divide(t[f'n_{det}_recovered'], t['n_ref']), 3))
    t.meta.update(meta)
    t.meta['comments'] = [
        'n_*_on_dq: detections (run with the weight-0 mask) whose centroid pixel is '
        'DQ-flagged',
        'n_*_on_dq_unmasked: the same when the detector is NOT given the mask',
        f'n_*_on_streak: detections within {STREAK_DISTANCE:g} px of the satellite streak',
        f'n_*_recovered: reference sources matched one-to-one within {MATCH_RADIUS:g} px',
    ]
    return t


def _display_path(path):
    """``path`` relative to the repository root when possible."""
    path = Path(path).resolve()
    for base, prefix in ((ROOT, ''), (ROOT.parent, '../')):
        try:
            return prefix + str(path.relative_to(base.resolve()))
        except ValueError:
            continue
    return str(path)


# -- main ------------------------------------------------------------------------

def main(argv=None):
    """Make the figures and the table; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument('--summary', default=str(DEFAULT_SUMMARY),
                        help='benchmark summary.ecsv whose operating points '
                             '(5 %% contamination, contaminated regime) set '
                             'the thresholds; "none" for the defaults '
                             '(default: %(default)s)')
    parser.add_argument('--model', default=None,
                        help='ONNX model file (default: the shipped model)')
    parser.add_argument('--data-dir', default=str(DEFAULT_DATA),
                        help='folder of the real images (default: %(default)s)')
    parser.add_argument('--out-dir', default=str(ROOT / 'docs' / '_static'),
                        help='folder of the figures (default: %(default)s)')
    parser.add_argument('--table', default=str(ROOT / 'results' / 'real'
                                               / 'real_images.ecsv'),
                        help='output ECSV table (default: %(default)s)')
    args = parser.parse_args(argv)
    _set_thresholds(args.summary)

    root = Path(args.data_dir)
    if not root.is_dir():
        print(f'No real images: {root} does not exist (it is ../shared/data/real '
              'next to the repository, not part of it; give --data-dir). '
              'Nothing done.', file=sys.stderr)
        return 1
    images = _load_images(root)
    if not images:
        print(f'No readable real image found under {root}. Nothing done.',
              file=sys.stderr)
        return 1

    import matplotlib

    matplotlib.use('Agg')
    from tqdm.auto import tqdm

    from astro_deepcolor import DeepColorSegmentation

    finder = DeepColorSegmentation(threshold=CNN_THRESHOLD, n_pixels=N_PIXELS,
                                   model=args.model)
    steps = (finder.config.training or {}).get('steps_done')
    model_label = Path(finder.model.path).name + (f', {steps} steps' if steps else '')

    results = {}
    for image in tqdm(images, desc='real images', unit='image'):
        r = {}
        segm, xy = _run_cnn(finder, image, image.mask)
        r['cnn'] = _count(image, segm, xy)
        segm, xy = _run_sep(image, image.mask)
        r['sep'] = _count(image, segm, xy)
        if image.mask is not None:  # the same without telling the detectors
            r['cnn_unmasked'] = _count(image, *_run_cnn(finder, image, None))
            r['sep_unmasked'] = _count(image, *_run_sep(image, None))
        results[image.name] = r

    out_dir = Path(args.out_dir)
    groups = {}
    for image in images:
        groups.setdefault(image.figure, []).append(image)
    written = []
    for stem, group in groups.items():
        path = out_dir / f'real_{stem}.png'
        _figure(group, results, path, model_label)
        written.append(path)

    meta = {'model': _display_path(finder.model.path), 'model_steps': steps,
            'backend': finder.backend_description,
            'cnn_threshold': CNN_THRESHOLD, 'sep_threshold_sigma': SEP_THRESHOLD,
            'thresholds_from': str(args.summary),
            'n_pixels': N_PIXELS, 'match_radius_pix': MATCH_RADIUS,
            'data_dir': _display_path(root)}
    table = _table(images, results, meta)
    table_path = Path(args.table)
    table_path.parent.mkdir(parents=True, exist_ok=True)
    table.write(table_path, format='ascii.ecsv', overwrite=True)

    cols = ['image', 'shape', 'n_cnn', 'n_sep', 'n_cnn_on_dq', 'n_sep_on_dq',
            'n_cnn_on_dq_unmasked', 'n_sep_on_dq_unmasked', 'n_cnn_on_streak',
            'n_sep_on_streak', 'n_ref', 'n_cnn_recovered', 'n_sep_recovered']
    table[cols].pprint(max_lines=-1, max_width=-1)
    for path in written:
        size = path.stat().st_size / 1024
        print(f'wrote {path} ({size:.0f} KB)'
              + (' -- over 300 KB, too big for the docs' if size > 300 else ''))
    print(f'wrote {table_path}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
