# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
``astro-deepcolor demo``: the package's main job on a built-in example.

Simulates a DECam CCD section with contaminants (fixed seed), detects
sources with the shipped deep-coloring model, runs a classical detector
(photutils ``detect_sources`` on the same background at 1.5 sigma, 5
pixels, as a typical script would) on the same image, and scores both
against the exact truth. Writes the catalogue (ECSV), the segmentation
(FITS) and, when matplotlib is installed, a comparison picture.
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
        det = QTable({'x': x, 'y': y})
    m = match_sources(sim.truth, det, truth_segmentation=sim.segmentation,
                      detection_segmentation=segm, fwhm=sim.fwhm)
    comp, cont = completeness_contamination(m)
    snr5 = np.asarray(sim.truth['snr']) > 5
    comp5 = m.truth_matched[snr5].mean() if snr5.any() else np.nan
    return len(det), m.tp, m.fp, comp, comp5, cont


def run(args):
    """Run ``demo``."""
    from astropy.io import fits

    from astro_deepcolor import DeepColorSegmentation
    from astro_deepcolor.simulation import simulate_image
    from astro_deepcolor.utils._io import atomic_path, check_writable

    out = Path(args.out)
    paths = {k: out / f'demo_{k}' for k in ('catalog.ecsv', 'segmentation.fits',
                                            'image.fits', 'comparison.png')}
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
    table = finder.catalog(sim.data, segm) if segm is not None else None

    from astro_deepcolor.preprocessing import estimate_background

    bkg, rms = estimate_background(sim.data)
    classical = _classical(sim.data, bkg, rms, None)

    rows = [('deep-coloring CNN (shipped model)', *_score(sim, segm)),
            ('photutils detect_sources 1.5 sigma', *_score(sim, classical))]
    print()
    print(f'{"detector":36s} {"N det":>6s} {"TP":>5s} {"FP":>5s} '
          f'{"compl.":>7s} {"compl.S/N>5":>11s} {"contam.":>8s}')
    for name, n, tp, fp, comp, comp5, cont in rows:
        print(f'{name:36s} {n:6d} {tp:5d} {fp:5d} {comp:7.3f} {comp5:11.3f} {cont:8.3f}')
    print()

    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(paths['image.fits'], overwrite=args.overwrite) as tmp:
        fits.PrimaryHDU(sim.data).writeto(tmp)
    if segm is not None:
        with atomic_path(paths['segmentation.fits'], overwrite=args.overwrite) as tmp:
            fits.PrimaryHDU(segm.data.astype(np.int32)).writeto(tmp)
        with atomic_path(paths['catalog.ecsv'], overwrite=args.overwrite) as tmp:
            table.write(tmp, format='ascii.ecsv')
    try:
        import matplotlib

        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print('matplotlib not installed: no picture (pip install "astro-deepcolor[plot]")')
    else:
        from astro_deepcolor.simulation.plotting import plot_simulation

        fig, axs = plt.subplots(1, 3, figsize=(18, 6.4))
        plot_simulation(sim, ax=axs[0], legend=True)
        axs[0].set_title('input, truth footprints, contaminants')
        for ax, seg, name in ((axs[1], segm, 'deep-coloring CNN'),
                              (axs[2], classical, 'photutils 1.5 sigma')):
            if seg is not None:
                ax.imshow(seg, origin='lower', cmap=seg.cmap, interpolation='nearest')
            ax.set_title(f'{name}: {0 if seg is None else seg.n_labels} sources')
        fig.tight_layout()
        with atomic_path(paths['comparison.png'], overwrite=args.overwrite) as tmp:
            fig.savefig(tmp, dpi=60)
        plt.close(fig)
    print(f'Outputs in {out}/')
    return 0
