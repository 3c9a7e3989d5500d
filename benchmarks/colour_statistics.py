# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
How a model uses its colours on simulated images of a split.

For each regime, runs the network on ``--n-images`` images of ``--split``
and measures, with `astro_deepcolor.evaluation.colours.colour_statistics`,
how many true sources each colour dominates and the fraction of neighbour
pairs (footprints within the halo radius) whose dominant colours differ:
over all pairs, over pairs of sources the loss trains on (true S/N >= 3,
the training ``min_snr``) and over pairs of S/N >= 5 sources. Writes
``results/calibration/colours_<split>.json``.

Run::

    python benchmarks/colour_statistics.py --split validation --n-images 12
    python benchmarks/colour_statistics.py --split test --n-images 24
"""

import argparse
import json
from pathlib import Path

import numpy as np
from astropy.table import QTable
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
CUTS = (None, 3.0, 5.0)


def measure(finder, regime, split, n_images):
    from astro_deepcolor.evaluation.colours import (
        colour_statistics,
        pool_colour_statistics,
    )
    from astro_deepcolor.simulation import iter_recipe_images

    per_image = {cut: [] for cut in CUTS}
    sims = iter_recipe_images(regime, split, n_images=n_images)
    for sim in tqdm(sims, total=n_images, desc=f'{regime} ({split})', unit='image'):
        probs = finder.predict(np.asarray(sim.data, dtype=np.float32))
        truth = QTable(sim.truth)
        for cut in CUTS:
            per_image[cut].append(colour_statistics(
                probs, sim.segmentation, radius=finder.config.halo_radius,
                truth=truth, min_snr=cut))
    out = {}
    for cut, stats in per_image.items():
        pooled = pool_colour_statistics(stats)
        out['all' if cut is None else f'snr>={cut:g}'] = {
            k: pooled[k] for k in ('colour_counts', 'live_colours',
                                   'n_neighbour_pairs', 'distinct_fraction')}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', default=None,
                        help='ONNX model (default: the shipped one)')
    parser.add_argument('--split', default='validation',
                        choices=('train', 'validation', 'test'))
    parser.add_argument('--n-images', type=int, default=12,
                        help='images per regime (default 12)')
    parser.add_argument('--results', default=str(ROOT / 'results' / 'calibration'))
    args = parser.parse_args(argv)

    from astro_deepcolor import DeepColorSegmentation

    kwargs = {'progress_bar': False}
    if args.model:
        kwargs['model'] = args.model
    finder = DeepColorSegmentation(**kwargs)
    res = {'model': args.model or 'shipped', 'split': args.split,
           'n_images': args.n_images}
    for regime in ('clean', 'contaminated'):
        res[regime] = measure(finder, regime, args.split, args.n_images)
        for cut, r in res[regime].items():
            print(f"{regime:13s} {cut:8s} live {r['live_colours']}  sources per colour "
                  f"{r['colour_counts']}  neighbour pairs {r['n_neighbour_pairs']}: "
                  f"{r['distinct_fraction']:.3f} coloured differently")
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f'colours_{args.split}.json'
    tmp = path.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(res, indent=1))
    tmp.replace(path)
    print(f'wrote {path}')


if __name__ == '__main__':
    main()
