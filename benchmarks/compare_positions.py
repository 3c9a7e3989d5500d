# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Position accuracy of the CNN and of sep, with and without windowed centroids.

The benchmark harness compares each detector's own positions (the CNN's
windowed centroid ``x_win``, sep's isophotal barycentre). This script adds
the context an astronomer asks for: the CNN's isophotal centroid
(``x_centroid``), and sep's windowed centroid (`sep.winpos` with the true
PSF sigma, which a real user has to estimate), each on all matched
S/N >= 5 sources and on the sources that every variant matched (so that a
detector that finds more, harder sources is not penalised for it).
Writes ``results/benchmark/positions.json``.

Run::

    python benchmarks/compare_positions.py --split test --n-images 24
"""

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
from astropy.table import QTable
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]


def _sep_threshold():
    """sep's 5 % threshold in the last benchmark run (clean), else 1.5."""
    path = ROOT / 'results' / 'benchmark' / 'summary.ecsv'
    if path.exists():
        t = QTable.read(path)
        row = t[(t['regime'] == 'clean') & (t['detector'] == 'sep')]
        if len(row):
            return float(row['threshold_at_5pct'][0])
    return 1.5


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--split', default='test', choices=('validation', 'test'))
    parser.add_argument('--regime', default='clean', choices=('clean', 'contaminated'))
    parser.add_argument('--n-images', type=int, default=24)
    parser.add_argument('--sep-threshold', type=float, default=None,
                        help="sep's threshold (default: its 5 %% point in "
                             'results/benchmark/summary.ecsv)')
    parser.add_argument('--out', default=str(ROOT / 'results' / 'benchmark' / 'positions.json'))
    args = parser.parse_args(argv)

    import sep

    from astro_deepcolor import DeepColorSegmentation
    from astro_deepcolor.baselines.base import segment_catalog
    from astro_deepcolor.baselines.sep_detector import SepDetector
    from astro_deepcolor.catalog import windowed_centroids
    from astro_deepcolor.evaluation import match_sources
    from astro_deepcolor.simulation import iter_recipe_images

    sep_t = args.sep_threshold or _sep_threshold()
    finder = DeepColorSegmentation(progress_bar=False)
    errors = {k: [] for k in ('cnn_win', 'cnn_isophotal', 'sep', 'sep_win_true_psf')}
    common = {k: [] for k in errors}
    sims = iter_recipe_images(args.regime, args.split, n_images=args.n_images)
    for sim in tqdm(sims, total=args.n_images, unit='image'):
        truth = QTable(sim.truth)
        data = np.asarray(sim.data, np.float32)
        bkg, _ = finder.estimate_background(data)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            segm = finder(data)
        sub = (data - bkg).astype(np.float64)
        cnn = segment_catalog(segm, data - np.median(data))
        tables = {'cnn_isophotal': (cnn, segm)}
        win = cnn.copy()
        win['x'], win['y'] = windowed_centroids(sub, segm)
        tables['cnn_win'] = (win, segm)
        (_, ssegm, stab), = list(SepDetector(fwhm=float(sim.fwhm)).sweep(data, [sep_t]))
        tables['sep'] = (stab, ssegm)
        swin = stab.copy()
        s = float(sim.fwhm) / 2.3548
        swin['x'], swin['y'], _ = sep.winpos(sub, np.asarray(stab['x'], float),
                                             np.asarray(stab['y'], float),
                                             np.full(len(stab), s))
        tables['sep_win_true_psf'] = (swin, ssegm)
        found = {}
        for k, (tab, sg) in tables.items():
            m = match_sources(truth, tab, truth_segmentation=sim.segmentation,
                              detection_segmentation=sg, fwhm=float(sim.fwhm))
            ok = np.asarray(truth['snr'])[m.truth_index] >= 5
            errors[k].append(m.separation[ok])
            found[k] = dict(zip(m.truth_index[ok].tolist(), m.separation[ok].tolist(),
                                strict=True))
        shared = set.intersection(*(set(f) for f in found.values()))
        for k, f in found.items():
            common[k].append(np.array([f[i] for i in sorted(shared)]))
    res = {'split': args.split, 'regime': args.regime, 'n_images': args.n_images,
           'cnn_threshold': float(finder.threshold), 'sep_threshold': sep_t}
    for k in errors:
        e, c = np.concatenate(errors[k]), np.concatenate(common[k])
        res[k] = {'n_matched': int(e.size), 'median_error': float(np.median(e)),
                  'n_common': int(c.size), 'median_error_common': float(np.median(c))}
        print(f'{k:18s} all matched S/N>=5: {e.size:5d}, median {np.median(e):.3f} px;'
              f'  matched by all: {c.size:5d}, median {np.median(c):.3f} px')
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix('.tmp')
    tmp.write_text(json.dumps(res, indent=1))
    tmp.replace(out)
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
