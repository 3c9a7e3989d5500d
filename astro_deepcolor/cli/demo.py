# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
``astro-deepcolor demo``: the package's main job on a built-in example.

Simulates a DECam CCD section with contaminants (fixed seed), detects
sources with the shipped deep-coloring model, runs a classical detector
(photutils ``detect_sources`` on the same background at 1.5 sigma, 5
pixels, as a typical script would) on the same image, and scores both
against the exact truth. Writes the image, the truth catalogue (with
which detector found each source), the CNN catalogue (ECSV, flux errors
from the background noise), its segmentation (FITS) and a comparison
picture: the image with each detector's footprints outlined and its true
positives, false positives (labelled with the contaminant under them) and
missed sources marked and counted.
"""

import time
import warnings
from pathlib import Path

import numpy as np

__all__ = ['add_parser', 'run']


def add_parser(parser):
    """Declare the arguments of ``demo``."""
    parser.add_argument('--out', default='demo-output',
                        help='output directory (default: demo-output)')
    parser.add_argument('--size', type=int, default=1024,
                        help='image size in pixels (default: 1024)')
    parser.add_argument('--seed', type=int, default=2026)
    parser.add_argument('--regime', default='contaminated',
                        choices=('clean', 'contaminated'))
    parser.add_argument('--threshold', type=float, default=None,
                        help='CNN probability threshold (default: the model\'s)')
    parser.add_argument('--overwrite', action='store_true')


def _classical(data, background, rms, mask):
    from astropy.convolution import Gaussian2DKernel, convolve
    from photutils.segmentation import detect_sources
    from photutils.utils.exceptions import NoDetectionsWarning

    kernel = Gaussian2DKernel(2.0, x_size=9, y_size=9)
    kernel.normalize()
    conv = convolve(data - background, kernel, mask=mask, normalize_kernel=True)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', NoDetectionsWarning)
        return detect_sources(conv, 1.5 * rms, n_pixels=5, mask=mask)


def _score(sim, segm):
    """Match one detector's sources to the truth; return a dict of results."""
    from astropy.table import QTable

    from astro_deepcolor.evaluation import completeness_contamination, match_sources

    if segm is None:
        det = QTable({'x': np.zeros(0), 'y': np.zeros(0)})
    else:
        from photutils.segmentation import SourceCatalog

        cat = SourceCatalog(sim.data - sim.background, segm)
        # photutils >= 3 names them x_centroid/y_centroid (the old names warn)
        x = getattr(cat, 'x_centroid', None)
        x = cat.xcentroid if x is None else x
        y = getattr(cat, 'y_centroid', None)
        y = cat.ycentroid if y is None else y
        x = np.array(np.atleast_1d(x), dtype=float)
        y = np.array(np.atleast_1d(y), dtype=float)
        # sources of non-positive flux have no centroid: use the footprint's
        # geometric centre
        for i in np.flatnonzero(~(np.isfinite(x) & np.isfinite(y))):
            slc = segm.slices[i]
            yy, xx = np.nonzero(segm.data[slc] == segm.labels[i])
            x[i] = xx.mean() + slc[1].start
            y[i] = yy.mean() + slc[0].start
        det = QTable({'x': x, 'y': y})
    m = match_sources(sim.truth, det, truth_segmentation=sim.segmentation,
                      detection_segmentation=segm, fwhm=sim.fwhm)
    comp, cont = completeness_contamination(m)
    snr5 = np.asarray(sim.truth['snr']) > 5
    comp5 = m.truth_matched[snr5].mean() if snr5.any() else np.nan
    fp_classes = _fp_classes(sim, segm, m)
    return {'n': len(det), 'tp': m.tp, 'fp': m.fp, 'completeness': comp,
            'completeness_snr5': comp5, 'contamination': cont, 'match': m,
            'det': det, 'segm': segm, 'fp_classes': fp_classes}


#: Contaminant classes in the order a false positive is blamed on them:
#: compact artefacts first, the diffuse ones that cover much of an image last.
_BLAME_ORDER = ('cosmic_ray', 'hot_pixel', 'hot_column', 'dead', 'trail',
                'persistence', 'spike', 'saturation', 'nebulosity', 'fringe')
_DIFFUSE = ('nebulosity', 'fringe')


def _fp_classes(sim, segm, match):
    """For each false positive: the contaminant class under it, or ''."""
    from astro_deepcolor.simulation.contaminants import CONTAMINANT_FLAGS

    order = [n for n in _BLAME_ORDER if n in CONTAMINANT_FLAGS]
    order += [n for n in CONTAMINANT_FLAGS if n not in order]
    out = []
    if segm is None:
        return out
    labels = segm.labels
    for i in np.flatnonzero(~match.detection_matched):
        slc = segm.slices[segm.get_index(labels[i])]
        bits = np.bitwise_or.reduce(
            sim.contaminants[slc][segm.data[slc] == labels[i]].ravel(),
            initial=0)
        names = [n for n in order if int(bits) & CONTAMINANT_FLAGS[n]]
        out.append(names[0] if names else '')
    return out


def _boundaries(segm):
    """Pixels of a segmentation on the edge of their source."""
    lab = segm.data
    edge = np.zeros(lab.shape, bool)
    edge[1:, :] |= lab[1:, :] != lab[:-1, :]
    edge[:-1, :] |= lab[:-1, :] != lab[1:, :]
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    return edge & (lab > 0)


def _picture(sim, results, path, overwrite):
    """The demo picture: image, outlines, true/false/missed, contaminants."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from astropy.visualization import AsinhStretch, ImageNormalize, PercentileInterval
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from astro_deepcolor.simulation.contaminants import CONTAMINANT_FLAGS
    from astro_deepcolor.utils._io import atomic_path

    norm = ImageNormalize(sim.data, interval=PercentileInterval(99.5),
                          stretch=AsinhStretch(0.05))
    snr = np.asarray(sim.truth['snr'])
    fig, axs = plt.subplots(1, len(results), figsize=(8 * len(results), 10),
                            squeeze=False)
    cmap = plt.get_cmap('tab10')
    colours = {name: cmap(i % 10) for i, name in enumerate(CONTAMINANT_FLAGS)}
    present = [n for n, b in CONTAMINANT_FLAGS.items() if (sim.contaminants & b).any()]
    for ax, (name, r) in zip(axs[0], results.items(), strict=True):
        ax.imshow(sim.data, origin='lower', cmap='Greys_r', norm=norm,
                  interpolation='nearest')
        for cname in present:
            m = (sim.contaminants & CONTAMINANT_FLAGS[cname]) > 0
            alpha = 0.15 if cname in _DIFFUSE else 0.5
            ax.imshow(np.where(m, 1.0, np.nan), origin='lower', alpha=alpha,
                      cmap=ListedColormap([colours[cname]]),
                      interpolation='nearest')
        if r['segm'] is not None:
            edge = _boundaries(r['segm'])
            ax.imshow(np.where(edge, 1.0, np.nan), origin='lower',
                      cmap=ListedColormap(['deepskyblue']), alpha=0.9,
                      interpolation='nearest')
        m = r['match']
        x = np.asarray(r['det']['x'], float)
        y = np.asarray(r['det']['y'], float)
        tp, fp = m.detection_matched, ~m.detection_matched
        ax.plot(x[tp], y[tp], 'o', mfc='none', mec='lime', ms=7, mew=1.0)
        ax.plot(x[fp], y[fp], 'x', color='red', ms=7, mew=1.5)
        labelled = sum(1 for c in r['fp_classes'] if c) <= 60  # else clutter
        for xi, yi, cname in zip(x[fp], y[fp], r['fp_classes'], strict=True):
            if labelled and cname and np.isfinite(xi):
                ax.annotate(cname.replace('_', ' '), (xi, yi), xytext=(4, 4),
                            textcoords='offset points', fontsize=7,
                            color='red')
        missed = ~m.truth_matched
        bright = missed & (snr > 5)
        tx = np.asarray(sim.truth['x'], float)
        ty = np.asarray(sim.truth['y'], float)
        ax.plot(tx[bright], ty[bright], 's', mfc='none', mec='orange', ms=8,
                mew=1.2)
        n_fp_cont = sum(1 for c in r['fp_classes'] if c)
        ax.set_title(f'{name}\n{r["n"]} detections: {r["tp"]} true, '
                     f'{r["fp"]} false ({n_fp_cont} on contaminants); '
                     f'{int(missed.sum())} missed ({int(bright.sum())} with '
                     'S/N > 5)', fontsize=11)
        counts = {}
        for c in r['fp_classes']:
            if c:
                counts[c] = counts.get(c, 0) + 1
        on = ', '.join(f'{c.replace("_", " ")} {n}' for c, n in
                       sorted(counts.items(), key=lambda kv: -kv[1]))
        import textwrap

        on = textwrap.fill(f'false positives on contaminants: {on}', 100) if on else ''
        ax.set_xlabel('x (pixels)' + (f'\n{on}' if on else ''), fontsize=10)
        ax.set_ylabel('y (pixels)')
        # markers of sources centred just outside the image must not widen it
        ax.set_xlim(-0.5, sim.data.shape[1] - 0.5)
        ax.set_ylim(-0.5, sim.data.shape[0] - 0.5)
    handles = [
        Line2D([], [], color='deepskyblue', lw=2, label='detected footprint'),
        Line2D([], [], marker='o', ls='', mfc='none', mec='lime', ms=8,
               label='true positive (matches a true source)'),
        Line2D([], [], marker='x', ls='', color='red', ms=8, mew=1.5,
               label='false positive (text: the contaminant under it)'),
        Line2D([], [], marker='s', ls='', mfc='none', mec='orange', ms=8,
               label='missed true source with S/N > 5'),
        *[Patch(color=colours[c], alpha=0.5, label=c.replace('_', ' '))
          for c in present],
    ]
    fig.legend(handles=handles, loc='lower center', ncol=4, fontsize=10,
               frameon=False)
    fig.suptitle(f'astro-deepcolor demo: simulated {sim.data.shape[1]} x '
                 f'{sim.data.shape[0]} DECam image, {len(sim.truth)} true '
                 f'sources ({int((snr > 5).sum())} with S/N > 5); '
                 'shaded: contaminant pixels (asinh stretch)', fontsize=12)
    fig.tight_layout(rect=(0, 0.1, 1, 0.97))
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def _truth_table(sim, results):
    """The truth catalogue, with which detector found each source."""
    from astro_deepcolor.simulation.contaminants import CONTAMINANT_FLAGS

    truth = sim.truth.copy()
    for key, r in results.items():
        col = 'found_by_' + ('cnn' if 'CNN' in key else 'classical')
        truth[col] = r['match'].truth_matched
    truth.meta['description'] = (
        'astro-deepcolor demo: the true sources of demo_image.fits (x, y: '
        '0-based pixel centroids; snr: signal-to-noise of the source; '
        'found_by_*: matched one-to-one by a detection)')
    truth.meta['contaminant_classes'] = list(sim.contaminant_classes)
    truth.meta['contaminant_bits'] = dict(CONTAMINANT_FLAGS)
    return truth


def run(args):
    """Run ``demo``."""
    from astropy.io import fits

    from astro_deepcolor import DeepColorSegmentation
    from astro_deepcolor.simulation import simulate_image
    from astro_deepcolor.utils._io import atomic_path, check_writable

    out = Path(args.out)
    paths = {k: out / f'demo_{k}' for k in ('catalog.ecsv', 'segmentation.fits',
                                            'image.fits', 'truth.ecsv',
                                            'comparison.png')}
    for p in paths.values():
        check_writable(p, overwrite=args.overwrite, name='demo output')

    print(f'Simulating a {args.size}x{args.size} DECam image ({args.regime}, '
          f'seed {args.seed}) ...')
    sim = simulate_image((args.size, args.size), regime=args.regime, seed=args.seed)
    print(f'  {len(sim.truth)} true sources; contaminants: '
          f'{", ".join(sim.contaminant_classes) or "none"}')

    kwargs = {} if args.threshold is None else {'threshold': args.threshold}
    finder = DeepColorSegmentation(**kwargs)
    t0 = time.perf_counter()
    segm = finder(sim.data)
    dt = time.perf_counter() - t0
    print(f'Deep-coloring CNN ({finder.backend_name} on {finder.device_name}): '
          f'{dt:.2f} s, {sim.data.size / 1e6 / dt:.2f} MPix/s')
    bkg, rms = finder.estimate_background(sim.data)
    # flux errors from the background noise (the catalogue says so)
    table = (finder.catalog(sim.data, segm, error=rms, background=bkg)
             if segm is not None else None)
    if table is not None:
        if 'sky_centroid' in table.colnames:  # no WCS: an empty column
            table.remove_column('sky_centroid')
        table.meta['error'] = 'background rms only (no source Poisson noise)'

    classical = _classical(sim.data, bkg, rms, None)

    results = {'deep-coloring CNN (shipped model)': _score(sim, segm),
               'photutils detect_sources 1.5 sigma': _score(sim, classical)}
    print()
    print(f'{"detector":36s} {"N det":>6s} {"TP":>5s} {"FP":>5s} '
          f'{"compl.":>7s} {"compl.S/N>5":>11s} {"contam.":>8s}')
    for name, r in results.items():
        print(f'{name:36s} {r["n"]:6d} {r["tp"]:5d} {r["fp"]:5d} '
              f'{r["completeness"]:7.3f} {r["completeness_snr5"]:11.3f} '
              f'{r["contamination"]:8.3f}')
    print('TP: detections matched to a true source; FP: the others; compl.: '
          'TP / true sources; contam.: FP / detections')
    print()

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(paths['image.fits'], overwrite=args.overwrite) as tmp:
        fits.PrimaryHDU(sim.data).writeto(tmp)
    with atomic_path(paths['truth.ecsv'], overwrite=args.overwrite) as tmp:
        _truth_table(sim, results).write(tmp, format='ascii.ecsv')
    if segm is not None:
        with atomic_path(paths['segmentation.fits'], overwrite=args.overwrite) as tmp:
            fits.PrimaryHDU(segm.data.astype(np.int32)).writeto(tmp)
        with atomic_path(paths['catalog.ecsv'], overwrite=args.overwrite) as tmp:
            table.write(tmp, format='ascii.ecsv')
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print('matplotlib not installed: no picture (pip install matplotlib)')
    else:
        _picture(sim, results, paths['comparison.png'], args.overwrite)
    print(f'Outputs in {out}/: image, truth catalogue, CNN catalogue and '
          'segmentation, comparison picture')
    return 0
