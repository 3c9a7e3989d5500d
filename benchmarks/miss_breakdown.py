# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Why the CNN misses the sources it misses: S/N >= 5 misses by cause.

Runs `~astro_deepcolor.DeepColorSegmentation` at one of the model's
operating points (default ``'5%'``) on ``--n-images`` test images per
regime and sorts every unmatched true source with S/N >= 5
(`astro_deepcolor.evaluation.misses_by_cause`) into one of

- ``merged``: its true centre lies in a detection that was matched to
  another true source (detected, but not deblended from a neighbour);
- ``on_artefact``: not merged, and a contaminant covers at least 10 % of
  its true footprint (the dominant class is counted too);
- ``undetected``: the rest (no detection, or one that failed the match).

Also counts how many misses are members of an injected or natural blend
(``truth['blended']``). Writes ``results/benchmark/miss_breakdown.json``
unless ``--out`` says otherwise.

Run::

    python benchmarks/miss_breakdown.py --n-images 24
    python benchmarks/miss_breakdown.py --n-images 24 --flips
"""

import argparse
import contextlib
import json
import warnings
from pathlib import Path

import numpy as np
from astropy.table import QTable
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
#: Share of a true footprint a contaminant must cover to count as "on" it.
MIN_COVER = 0.1


def measure(finder, regime, n_images):
    from photutils.utils.exceptions import NoDetectionsWarning

    from astro_deepcolor.baselines.base import segment_catalog
    from astro_deepcolor.evaluation import match_sources, misses_by_cause
    from astro_deepcolor.simulation import CONTAMINANT_FLAGS, iter_recipe_images

    total = {'n': 0, 'missed': 0, 'merged': 0, 'on_artefact': 0,
             'undetected': 0, 'blended': 0, 'artefact_classes': {}}
    sims = iter_recipe_images(regime, 'test', n_images=n_images)
    for sim in tqdm(sims, total=n_images, desc=regime, unit='image'):
        truth = QTable(sim.truth, copy=True)
        data = np.asarray(sim.data, dtype=np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', NoDetectionsWarning)
            segm = finder(data)
        image = data - np.median(data)
        table = segment_catalog(np.zeros(data.shape, int) if segm is None else segm,
                                image)
        m = match_sources(truth, table, truth_segmentation=sim.segmentation,
                          detection_segmentation=segm, fwhm=float(sim.fwhm))
        c = misses_by_cause(m, truth, sim.segmentation, table, segm, sim.contaminants,
                            CONTAMINANT_FLAGS, min_snr=5.0, min_cover=MIN_COVER)
        for key in ('n', 'missed', 'merged', 'on_artefact', 'undetected', 'blended'):
            total[key] += c[key]
        for name, n in c['artefact_classes'].items():
            total['artefact_classes'][name] = total['artefact_classes'].get(name, 0) + n
    total['completeness_snr5'] = 1 - total['missed'] / max(total['n'], 1)
    return total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', default=None, help='ONNX model (default: shipped)')
    parser.add_argument('--threshold', default='5%',
                        help="operating-point name or probability (default '5%%')")
    parser.add_argument('--flips', action='store_true',
                        help='detect with flips=True (its own operating points)')
    parser.add_argument('--n-images', type=int, default=24,
                        help='test images per regime (default 24)')
    parser.add_argument('--out', default=None,
                        help='JSON to write (default results/benchmark/'
                             'miss_breakdown[_flips].json)')
    args = parser.parse_args(argv)

    from astro_deepcolor import DeepColorSegmentation

    threshold = args.threshold
    with contextlib.suppress(ValueError):
        threshold = float(threshold)
    kwargs = {'threshold': threshold, 'flips': args.flips}
    if args.model:
        kwargs['model'] = args.model
    finder = DeepColorSegmentation(**kwargs)
    result = {'threshold': finder.threshold, 'flips': args.flips,
              'n_images_per_regime': args.n_images, 'split': 'test',
              'min_cover': MIN_COVER}
    for regime in ('clean', 'contaminated'):
        result[regime] = measure(finder, regime, args.n_images)
        r = result[regime]
        print(f"{regime}: C(S/N>=5) {r['completeness_snr5']:.3f}; {r['missed']} of "
              f"{r['n']} missed: merged {r['merged']}, on an artefact "
              f"{r['on_artefact']} {r['artefact_classes']}, undetected "
              f"{r['undetected']}; blend members {r['blended']}")
    out = Path(args.out) if args.out else (
        ROOT / 'results' / 'benchmark'
        / f"miss_breakdown{'_flips' if args.flips else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix('.tmp')
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out)
    print('wrote', out)


if __name__ == '__main__':
    main()
