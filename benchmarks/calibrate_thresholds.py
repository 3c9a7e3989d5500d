# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Calibrate a trained model's operating points and export the model files.

Runs the network of a training checkpoint on the validation images of both
regimes (never the test images the benchmark reports), sweeps the
probability threshold finely, and finds the lowest threshold from which the
pooled contamination stays at or below 5 % and 1 %
(`astro_deepcolor.evaluation.calibration.threshold_at_contamination`), and
from which none of four 1024 x 1024 images of pure Gaussian noise gets more
than 3 detections (an operating point is never below that one). The
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


#: Pure Gaussian noise images of the noise check (none of them is the test
#: suite's seed 7).
NOISE_SEEDS = (1001, 1002, 1003, 1004)
NOISE_SIZE = 1024
MAX_NOISE_DETECTIONS = 3


def _noise_counts(finder):
    """Detections on pure-noise images at each GRID threshold."""
    from photutils.utils.exceptions import NoDetectionsWarning

    counts = np.zeros((len(NOISE_SEEDS), GRID.size), np.int64)
    for i, seed in enumerate(tqdm(NOISE_SEEDS, desc='pure noise', unit='image')):
        rng = np.random.default_rng(seed)
        data = rng.normal(100.0, 5.0, (NOISE_SIZE, NOISE_SIZE)).astype(np.float32)
        background, rms = finder.estimate_background(data)
        probs = finder.predict(data, background=background, rms=rms)
        peak = finder.peak_image(data, background=background, rms=rms)
        for j, t in enumerate(GRID):
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', NoDetectionsWarning)
                segm = finder.segment(probs, threshold=float(t), peak_image=peak)
            counts[i, j] = 0 if segm is None else segm.n_labels
    return counts


def _noise_threshold(counts):
    """Lowest GRID threshold from which no noise image has too many detections."""
    ok = (counts <= MAX_NOISE_DETECTIONS).all(axis=0)
    # from the top of the grid down, the last threshold where all are ok
    bad = np.flatnonzero(~ok)
    if not bad.size:
        return float(GRID[0])
    if bad[-1] == GRID.size - 1:
        sys.exit('calibration: even the highest threshold detects sources in pure noise')
    return float(GRID[bad[-1] + 1])


def _sweep(finder, regime, n_images, snr_min=5.0, with_colours=True):
    from photutils.utils.exceptions import NoDetectionsWarning

    from astro_deepcolor.baselines.base import segment_catalog
    from astro_deepcolor.evaluation import match_sources
    from astro_deepcolor.evaluation.colours import (
        colour_statistics,
        pool_colour_statistics,
    )
    from astro_deepcolor.simulation import iter_recipe_images

    counts = np.zeros((GRID.size, 4), np.int64)  # tp, fp, fn, tp_bright
    n_bright = 0
    probs_true = []
    # neighbour colouring over all footprints and over the sources the loss
    # trains on (true S/N >= 3)
    colour = {'all': [], 'snr>=3': []} if with_colours else {}
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
            col.append(colour_statistics(probs, sim.segmentation,
                                         radius=finder.config.halo_radius, truth=truth,
                                         min_snr=None if cut == 'all' else 3.0))
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
    return counts, n_bright, probs_true, {cut: pool_colour_statistics(col)
                                          for cut, col in colour.items()}


def _calibrate(finder, n_images, with_colours=True):
    """Operating points, curves, reliability and (``with_colours``) colour
    use of one finder."""
    from astro_deepcolor.evaluation.calibration import (
        fit_reliability_map,
        reliability,
        threshold_at_contamination,
    )

    noise = _noise_counts(finder)
    per = {}
    rel_p, rel_y = [], []
    colours = {}
    for regime in ('clean', 'contaminated'):
        counts, n_bright, pt, col = _sweep(finder, regime, n_images,
                                           with_colours=with_colours)
        per[regime] = (counts, n_bright)
        for p, y in pt:
            rel_p.append(p)
            rel_y.append(y)
        colours[regime] = {cut: {
            'colour_counts': c['colour_counts'],
            'n_neighbour_pairs': c['n_neighbour_pairs'],
            'distinct_fraction': (c['distinct_fraction'] if c['n_neighbour_pairs']
                                  else None)}
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
    t_noise = _noise_threshold(noise)
    by_contamination = {}
    for name, level in (('5%', 0.05), ('1%', 0.01)):
        t = threshold_at_contamination(GRID, cur['pooled']['contamination'], level)
        if not np.isfinite(t):
            sys.exit(f'calibration: the contamination never falls to {level:.0%}')
        by_contamination[name] = round(float(t), 5)
        # never below the pure-noise threshold
        points[name] = round(float(max(t, t_noise)), 5)
    print(f'{"flips: " if finder.flips else ""}pure noise: at most '
          f'{MAX_NOISE_DETECTIONS} detections per {NOISE_SIZE}^2 image from '
          f'p >= {t_noise}; by contamination alone: {by_contamination}')
    at = {}
    for name, t in points.items():
        i = int(np.flatnonzero(t == GRID)[0])
        at[name] = {r: {k: float(v[i]) for k, v in c.items()} for r, c in cur.items()}
    rel = reliability(np.concatenate(rel_p), np.concatenate(rel_y))
    rel_map = fit_reliability_map(np.concatenate(rel_p), np.concatenate(rel_y))
    return {'points': points, 'at': at, 'rel': rel, 'rel_map': rel_map,
            't_noise': t_noise, 'by_contamination': by_contamination,
            'noise': noise, 'cur': cur, 'colours': colours}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('checkpoint', help='training checkpoint (.pt)')
    parser.add_argument('--n-images', type=int, default=12,
                        help='validation images per regime (default 12)')
    parser.add_argument('--out', help='ONNX model to write (package form)')
    parser.add_argument('--sx-out', help='ONNX model to write (SourceXtractor++ form)')
    parser.add_argument('--results', default=str(ROOT / 'results' / 'calibration'))
    parser.add_argument('--plot', default=str(ROOT / 'docs' / '_static' / 'calibration.png'))
    parser.add_argument('--flips', action='store_true',
                        help='also calibrate detection with flips=True (operating '
                             "points '5%%+flips', '1%%+flips' and reliability_map_flips)")
    parser.add_argument('--overwrite', action='store_true')
    args = parser.parse_args(argv)

    from astro_deepcolor import DeepColorSegmentation
    from astro_deepcolor.model.export import export_onnx
    from astro_deepcolor.model.unet import network_from_checkpoint

    net = network_from_checkpoint(args.checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        plain = export_onnx(net, Path(tmp) / 'model.onnx')
        finder = DeepColorSegmentation(model=str(plain), threshold=0.5,
                                       n_pixels=5, progress_bar=False)
        cal = _calibrate(finder, args.n_images)
        cal_flips = None
        if args.flips:
            finder = DeepColorSegmentation(model=str(plain), threshold=0.5,
                                           n_pixels=5, progress_bar=False,
                                           flips=True)
            # The colours are the unflipped pass's: measured once, above.
            cal_flips = _calibrate(finder, args.n_images, with_colours=False)
    points, at, rel, rel_map = cal['points'], cal['at'], cal['rel'], cal['rel_map']
    t_noise, by_contamination, noise = cal['t_noise'], cal['by_contamination'], cal['noise']
    cur, colours = cal['cur'], cal['colours']
    model_points = dict(points)
    rel_map_flips = {}
    table_points, table_at, table_by = dict(points), dict(at), dict(by_contamination)
    if cal_flips is not None:
        for name, t in cal_flips['points'].items():
            model_points[f'{name}+flips'] = table_points[f'{name}+flips'] = t
            table_at[f'{name}+flips'] = cal_flips['at'][name]
            table_by[f'{name}+flips'] = cal_flips['by_contamination'][name]
        rel_map_flips = cal_flips['rel_map']
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    summary = {'checkpoint': str(args.checkpoint), 'n_images_per_regime': args.n_images,
               'split': 'validation', 'operating_points': points, 'at_operating_points': at,
               'reliability': {k: np.asarray(v).tolist() for k, v in rel.items()},
               'reliability_map': rel_map,
               'threshold_by_contamination': by_contamination,
               'pure_noise': {'seeds': list(NOISE_SEEDS), 'size': NOISE_SIZE,
                              'max_detections': MAX_NOISE_DETECTIONS,
                              'threshold': t_noise,
                              'detections_at_operating_points': {
                                  name: noise[:, int(np.flatnonzero(t == GRID)[0])].tolist()
                                  for name, t in points.items()}},
               'colours': colours}
    if cal_flips is not None:
        summary['flips'] = {
            'operating_points': cal_flips['points'], 'at_operating_points': cal_flips['at'],
            'reliability': {k: np.asarray(v).tolist() for k, v in cal_flips['rel'].items()},
            'reliability_map': rel_map_flips,
            'threshold_by_contamination': cal_flips['by_contamination'],
            'pure_noise_threshold': cal_flips['t_noise']}
    (out / 'calibration.json').write_text(json.dumps(summary, indent=1))
    tab = QTable({'threshold': GRID})
    for r, c in cur.items():
        for k, v in c.items():
            tab[f'{r}_{k}'] = v
    tab.write(out / 'sweep.ecsv', overwrite=True)
    print(json.dumps({'operating_points': points, 'at_operating_points': at,
                      'colours': colours}, indent=1))
    _write_rst(out / 'operating_points.rst', table_points, table_at, rel, colours,
               args.n_images, (t_noise, table_by),
               None if cal_flips is None else cal_flips['t_noise'])
    _plot(cur, points, rel, args.plot, args.n_images, rel_map)

    config = net.config.replace(operating_points=model_points, default_operating_point='5%',
                                default_threshold=points['5%'], reliability_map=rel_map,
                                reliability_map_flips=rel_map_flips)
    net.config = config
    if args.out:
        print('wrote', export_onnx(net, args.out, overwrite=args.overwrite))
    if args.sx_out:
        print('wrote', export_onnx(net, args.sx_out, form='sourcextractor',
                                   overwrite=args.overwrite))


def _write_rst(path, points, at, rel, colours, n_images, noise, t_noise_flips=None):
    """Tables for the docs (included, never retyped)."""
    t_noise, by_contamination = noise
    by = ', '.join(f'{k}: {v:.4f}' for k, v in by_contamination.items())
    lines = [f'Operating points fitted on {n_images} validation images per regime '
             '(``benchmarks/calibrate_thresholds.py``); completeness of all true '
             'sources and of those with S/N >= 5 at each. An operating point is '
             'the lowest threshold from which the pooled contamination stays at or '
             f'below its level ({by}) and no {NOISE_SIZE} x {NOISE_SIZE} image of pure '
             f'Gaussian noise ({len(NOISE_SEEDS)} seeds) gets more than '
             f'{MAX_NOISE_DETECTIONS} detections (p >= {t_noise:.4f}'
             + ('' if t_noise_flips is None else
                f'; p >= {t_noise_flips:.4f} with ``flips=True``, the points named '
                "``'+flips'``") + ').', '',
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


def _plot(cur, points, rel, path, n_images, rel_map=None):
    import matplotlib

    matplotlib.use('agg')
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.2), constrained_layout=True)
    for r, c in cur.items():
        a.plot(1 - GRID, np.maximum(c['contamination'], 1e-4), label=r,
               lw=2 if r == 'pooled' else 1)
    for name, t in points.items():
        a.axvline(1 - t, ls=':', color='k')
        a.text(1 - t, 2e-4, f' {name}: p >= {t:.4f}', rotation=90, va='bottom', fontsize=8)
    a.set_xscale('log')
    a.set_yscale('log')
    a.set_xlabel('1 - probability threshold')
    a.set_ylabel('contamination FP / (TP + FP)')
    a.set_title(f'Operating points ({n_images} validation images per regime)', fontsize=10)
    a.legend(fontsize=8)
    ok = rel['n'] > 0
    b.plot([0.5, 1], [0.5, 1], color='0.6', ls='--', label='calibrated')
    b.plot(rel['mean_probability'][ok], rel['fraction_true'][ok], 'o-',
           label='raw peak probability')
    if rel_map is not None:
        b.plot(rel_map['probability'], rel_map['reliability'], color='C1',
               drawstyle='steps-post',
               label='reliability map: raw -> detection_probability')
    for x, y, n in zip(rel['mean_probability'][ok], rel['fraction_true'][ok], rel['n'][ok],
                       strict=True):
        b.annotate(str(int(n)), (x, y), textcoords='offset points', xytext=(3, -10),
                   fontsize=7)
    b.set_xlabel('raw peak foreground probability (bin mean)')
    b.set_ylabel('fraction of detections that are real')
    b.set_title('Raw peak probability and its calibration (numbers: detections)',
                fontsize=10)
    b.legend(fontsize=8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print('wrote', path)


if __name__ == '__main__':
    main()
