# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Calibrate a trained model's operating points and export the model files.

Runs the network of a training checkpoint on the validation images of both
regimes (never the test images the benchmark reports), sweeps the
probability threshold finely, and finds the lowest threshold from which the
pooled contamination stays at or below 5 % and 1 %
(`astro_deepcolor.evaluation.calibration.threshold_at_contamination`). The
thresholds go into the model's metadata (``operating_points``, the 5 % one
being the default threshold), and the model is exported in both ONNX forms:
the package's own and SourceXtractor++'s. It also measures whether
``detection_probability`` is calibrated (reliability diagram) and the colour
usage, and writes

- ``results/calibration/calibration.json``: thresholds, per-regime and pooled
  completeness/contamination at each, reliability table, colour statistics;
- ``results/calibration/sweep.ecsv``: the swept curves;
- ``docs/_static/calibration.png``: contamination versus threshold and the
  reliability diagram.

Run::

    python benchmarks/calibrate_thresholds.py cache/train_default/best.pt \\
        --out astro_deepcolor/data/deepcolor_default.onnx \\
        --sx-out astro_deepcolor/data/deepcolor_default_sourcextractor.onnx --overwrite
"""

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from astropy.table import QTable
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
GRID = np.unique(np.round(np.concatenate([
    np.arange(0.30, 0.90, 0.02), 1 - np.logspace(-1, -3.3, 47)]), 5))


def _sweep(finder, regime, n_images, snr_min=5.0):
    from photutils.utils.exceptions import NoDetectionsWarning

    from astro_deepcolor.baselines.base import segment_catalog
    from astro_deepcolor.evaluation import match_sources
    from astro_deepcolor.evaluation.colours import colour_statistics
    from astro_deepcolor.simulation import iter_recipe_images

    counts = np.zeros((GRID.size, 4), np.int64)  # tp, fp, fn, tp_bright
    n_bright = 0
    probs_true = []
    # neighbour colouring over all footprints and over the sources the loss
    # trains on (true S/N >= 3)
    colour = {cut: {'colour_counts': 0, 'pairs': 0, 'distinct': 0.0}
              for cut in ('all', 'snr>=3')}
    sims = iter_recipe_images(regime, 'validation', n_images=n_images)
    for sim in tqdm(sims, total=n_images, desc=regime, unit='image'):
        truth = QTable(sim.truth, copy=True)
        bright = np.asarray(truth['snr'], float) >= snr_min
        n_bright += int(bright.sum())
        data = np.asarray(sim.data, dtype=np.float32)
        background, rms = finder.estimate_background(data)
        probs = finder.predict(data, background=background, rms=rms)
        peak = finder.peak_image(data, background=background, rms=rms)
        for cut, col in colour.items():
            st = colour_statistics(probs, sim.segmentation,
                                   radius=finder.config.halo_radius, truth=truth,
                                   min_snr=None if cut == 'all' else 3.0)
            col['colour_counts'] = col['colour_counts'] + np.asarray(st['colour_counts'])
            if st['n_neighbour_pairs']:
                col['pairs'] += st['n_neighbour_pairs']
                col['distinct'] += st['distinct_fraction'] * st['n_neighbour_pairs']
        image = data - np.median(data)
        for i, t in enumerate(GRID):
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', NoDetectionsWarning)
                segm = finder.segment(probs, threshold=float(t), peak_image=peak)
            if segm is None:
                counts[i] += (0, 0, len(truth), 0)
                continue
            table = segment_catalog(segm, image)
            m = match_sources(truth, table, truth_segmentation=sim.segmentation,
                              detection_segmentation=segm, fwhm=float(sim.fwhm))
            counts[i] += (m.tp, m.fp, m.fn, int(m.truth_matched[bright].sum()))
            if i == 0:
                prob = dict(zip(segm.info['labels'].tolist(),
                                segm.info['detection_probability'].tolist(),
                                strict=True))
                p = np.array([prob[int(lab)] for lab in table['label']])
                probs_true.append((p, np.asarray(m.detection_matched, bool)))
    return counts, n_bright, probs_true, colour


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('checkpoint', help='training checkpoint (.pt)')
    parser.add_argument('--n-images', type=int, default=12,
                        help='validation images per regime (default 12)')
    parser.add_argument('--out', help='ONNX model to write (package form)')
    parser.add_argument('--sx-out', help='ONNX model to write (SourceXtractor++ form)')
    parser.add_argument('--results', default=str(ROOT / 'results' / 'calibration'))
    parser.add_argument('--plot', default=str(ROOT / 'docs' / '_static' / 'calibration.png'))
    parser.add_argument('--overwrite', action='store_true')
    args = parser.parse_args(argv)

    from astro_deepcolor import DeepColorSegmentation
    from astro_deepcolor.evaluation.calibration import (
        fit_reliability_map,
        reliability,
        threshold_at_contamination,
    )
    from astro_deepcolor.model.export import export_onnx
    from astro_deepcolor.model.unet import network_from_checkpoint

    net = network_from_checkpoint(args.checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        plain = export_onnx(net, Path(tmp) / 'model.onnx')
        finder = DeepColorSegmentation(model=str(plain), threshold=0.5,
                                       n_pixels=5, progress_bar=False)
        per = {}
        rel_p, rel_y = [], []
        colours = {}
        for regime in ('clean', 'contaminated'):
            counts, n_bright, pt, col = _sweep(finder, regime, args.n_images)
            per[regime] = (counts, n_bright)
            for p, y in pt:
                rel_p.append(p)
                rel_y.append(y)
            colours[regime] = {cut: {
                'colour_counts': np.asarray(c['colour_counts']).tolist(),
                'n_neighbour_pairs': c['pairs'],
                'distinct_fraction': c['distinct'] / c['pairs'] if c['pairs'] else None}
                for cut, c in col.items()}

    def curves(counts, n_bright):
        tp, fp, fn, tpb = counts.T.astype(float)
        with np.errstate(invalid='ignore', divide='ignore'):
            return {'completeness': tp / (tp + fn), 'contamination': fp / (tp + fp),
                    'completeness_bright': tpb / max(n_bright, 1)}

    pooled = (per['clean'][0] + per['contaminated'][0],
              per['clean'][1] + per['contaminated'][1])
    cur = {r: curves(*per[r]) for r in per}
    cur['pooled'] = curves(*pooled)
    points = {}
    for name, level in (('5%', 0.05), ('1%', 0.01)):
        t = threshold_at_contamination(GRID, cur['pooled']['contamination'], level)
        if not np.isfinite(t):
            sys.exit(f'calibration: the contamination never falls to {level:.0%}')
        points[name] = round(float(t), 5)
    at = {}
    for name, t in points.items():
        i = int(np.flatnonzero(t == GRID)[0])
        at[name] = {r: {k: float(v[i]) for k, v in c.items()} for r, c in cur.items()}
    rel = reliability(np.concatenate(rel_p), np.concatenate(rel_y))
    rel_map = fit_reliability_map(np.concatenate(rel_p), np.concatenate(rel_y))
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    summary = {'checkpoint': str(args.checkpoint), 'n_images_per_regime': args.n_images,
               'split': 'validation', 'operating_points': points, 'at_operating_points': at,
               'reliability': {k: np.asarray(v).tolist() for k, v in rel.items()},
               'reliability_map': rel_map,
               'colours': colours}
    (out / 'calibration.json').write_text(json.dumps(summary, indent=1))
    tab = QTable({'threshold': GRID})
    for r, c in cur.items():
        for k, v in c.items():
            tab[f'{r}_{k}'] = v
    tab.write(out / 'sweep.ecsv', overwrite=True)
    print(json.dumps({'operating_points': points, 'at_operating_points': at,
                      'colours': colours}, indent=1))
    _write_rst(out / 'operating_points.rst', points, at, rel, colours, args.n_images)
    _plot(cur, points, rel, args.plot, args.n_images)

    config = net.config.replace(operating_points=points, default_operating_point='5%',
                                default_threshold=points['5%'], reliability_map=rel_map)
    net.config = config
    if args.out:
        print('wrote', export_onnx(net, args.out, overwrite=args.overwrite))
    if args.sx_out:
        print('wrote', export_onnx(net, args.sx_out, form='sourcextractor',
                                   overwrite=args.overwrite))


def _write_rst(path, points, at, rel, colours, n_images):
    """Tables for the docs (included, never retyped)."""
    lines = [f'Operating points fitted on {n_images} validation images per regime '
             '(``benchmarks/calibrate_thresholds.py``); completeness of all true '
             'sources and of those with S/N >= 5 at each.', '',
             '.. list-table::', '   :header-rows: 1', '',
             '   * - operating point', '     - threshold',
             '     - regime', '     - contamination', '     - completeness',
             '     - completeness (S/N >= 5)']
    for name, t in points.items():
        for r in ('clean', 'contaminated', 'pooled'):
            c = at[name][r]
            lines += [f'   * - {name}', f'     - {t:.4f}', f'     - {r}',
                      f"     - {100 * c['contamination']:.1f} %",
                      f"     - {c['completeness']:.3f}",
                      f"     - {c['completeness_bright']:.3f}"]
    lines += ['', 'Reliability of ``detection_probability`` (all detections at '
              'threshold 0.3 on the same images):', '',
              '.. list-table::', '   :header-rows: 1', '',
              '   * - probability bin', '     - detections',
              '     - mean probability', '     - fraction real']
    for lo, hi, n, mp, ft in zip(rel['lo'], rel['hi'], rel['n'], rel['mean_probability'],
                                 rel['fraction_true'], strict=True):
        if n:
            lines += [f'   * - {lo:g} - {hi:g}', f'     - {int(n)}', f'     - {mp:.3f}',
                      f'     - {ft:.3f}']
    lines += ['', 'Colour use on the same images (dominant colour of each true '
              'source; neighbour pairs: footprints within the 8 px halo; all '
              'footprints, and only the sources the loss trains on, true S/N >= 3):',
              '', '.. list-table::', '   :header-rows: 1', '',
              '   * - regime', '     - sources', '     - sources per colour',
              '     - neighbour pairs', '     - coloured differently']
    for r, cuts in colours.items():
        for cut, c in cuts.items():
            frac = c['distinct_fraction']
            lines += [f'   * - {r}', f'     - {cut}',
                      f"     - {', '.join(map(str, c['colour_counts']))}",
                      f"     - {c['n_neighbour_pairs']}",
                      f'     - {frac:.3f}' if frac is not None else '     - --']
    Path(path).write_text('\n'.join(lines) + '\n')


def _plot(cur, points, rel, path, n_images):
    import matplotlib

    matplotlib.use('agg')
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.2), constrained_layout=True)
    for r, c in cur.items():
        a.plot(1 - GRID, np.maximum(c['contamination'], 1e-4), label=r,
               lw=2 if r == 'pooled' else 1)
    for name, t in points.items():
        a.axvline(1 - t, ls=':', color='k')
        a.text(1 - t, 0.5, f' {name}: p >= {t:.4f}', rotation=90, va='center', fontsize=8)
    a.set_xscale('log')
    a.set_yscale('log')
    a.set_xlabel('1 - probability threshold')
    a.set_ylabel('contamination FP / (TP + FP)')
    a.set_title(f'Operating points ({n_images} validation images per regime)', fontsize=10)
    a.legend(fontsize=8)
    ok = rel['n'] > 0
    b.plot([0.5, 1], [0.5, 1], color='0.6', ls='--', label='calibrated')
    b.plot(rel['mean_probability'][ok], rel['fraction_true'][ok], 'o-', label='CNN')
    for x, y, n in zip(rel['mean_probability'][ok], rel['fraction_true'][ok], rel['n'][ok],
                       strict=True):
        b.annotate(str(int(n)), (x, y), textcoords='offset points', xytext=(3, -10),
                   fontsize=7)
    b.set_xlabel('detection_probability (bin mean)')
    b.set_ylabel('fraction of detections that are real')
    b.set_title('Reliability of detection_probability (numbers: detections)', fontsize=10)
    b.legend(fontsize=8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print('wrote', path)


if __name__ == '__main__':
    main()
