# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
``astro-deepcolor benchmark``: completeness/contamination benchmark.

Runs the CNN (when its model is usable) and the classical baselines over
their threshold sweeps on the test split of the clean and contaminated
dataset recipes, then writes ECSV tables, plots and an HTML report (see
`astro_deepcolor.evaluation.report`). ``--quick`` is the smoke test: two
128 x 128 images per regime and coarse sweeps (about a minute).
"""

import pickle
import sys
import time
from pathlib import Path

__all__ = ['add_parser', 'run']

DEFAULT_OUT = Path('results') / 'benchmark'


def add_parser(parser):
    """
    Declare the arguments of the ``benchmark`` subcommand.

    Parameters
    ----------
    parser : `argparse.ArgumentParser`
        The subcommand parser.
    """
    from astro_deepcolor.evaluation.harness import DETECTOR_ORDER

    parser.add_argument('--quick', action='store_true',
                        help='smoke test: 2 small images per regime, coarse '
                             'sweeps')
    parser.add_argument('--out', type=Path, default=DEFAULT_OUT,
                        help=f'results directory (default: {DEFAULT_OUT})')
    parser.add_argument('--regimes', nargs='+', default=['clean', 'contaminated'],
                        choices=['clean', 'contaminated'], help='regimes to run')
    parser.add_argument('--detectors', nargs='+', choices=DETECTOR_ORDER,
                        default=None,
                        help='detectors (default: every available one)')
    parser.add_argument('--n-images', type=int, default=None,
                        help='test images per regime (default 40; 2 with '
                             '--quick)')
    parser.add_argument('--shape', type=int, nargs=2, default=None,
                        metavar=('NY', 'NX'),
                        help='override the recipe image shape')
    parser.add_argument('--model', default=None,
                        help='CNN model file (default: the shipped model)')
    parser.add_argument('--bootstrap', type=int, default=200,
                        help='bootstrap resamples of the images (default 200)')
    parser.add_argument('--no-real', action='store_true',
                        help='skip the real-image checks')
    parser.add_argument('--data-dir', type=Path, default=None,
                        help='real images folder (default ../shared/data/real)')
    parser.add_argument('--merge', type=Path, default=None,
                        help='raw result (raw.pickle) of an earlier run on the '
                             'same images to merge with this one')
    parser.add_argument('--from-raw', type=Path, default=None,
                        help='rebuild the report from a raw.pickle, run nothing')
    parser.add_argument('--jobs', type=int, default=1,
                        help='worker processes (default 1; results do not '
                             'depend on it)')
    parser.add_argument('--no-progress', action='store_true',
                        help='no progress bars')


def _print_summary(summary, out):
    cols = ['regime', 'detector', 'n_truth', 'completeness_at_1pct',
            'completeness_at_5pct', 'completeness_at_10pct',
            'completeness_at_20pct', 'completeness_at_50pct',
            'min_contamination', 'deblend_success']
    cols = [c for c in cols if c in summary.colnames]
    print(f'results in {out}')
    summary[cols].pprint_all()


def run(args):
    """
    Run the benchmark.

    Parameters
    ----------
    args : `argparse.Namespace`
        Parsed arguments.

    Returns
    -------
    status : int
        0 on success.
    """
    from astro_deepcolor.evaluation.harness import merge_results, run_sweeps, summarize
    from astro_deepcolor.evaluation.realdata import (
        operating_thresholds,
        real_data_checks,
    )
    from astro_deepcolor.evaluation.report import write_outputs

    if args.n_images is not None and args.n_images < 1:
        msg = f'--n-images must be a positive integer, got {args.n_images!r}'
        raise ValueError(msg)
    if args.bootstrap < 1:
        msg = f'--bootstrap must be a positive integer, got {args.bootstrap!r}'
        raise ValueError(msg)
    t0 = time.perf_counter()
    if args.from_raw is not None:
        with open(args.from_raw, 'rb') as fh:
            result = pickle.load(fh)  # our own file, written below
    else:
        result = run_sweeps(regimes=args.regimes, detectors=args.detectors,
                            n_images=args.n_images, shape=args.shape,
                            quick=args.quick, progress=not args.no_progress,
                            model=args.model, n_jobs=args.jobs)
        if args.merge is not None:
            with open(args.merge, 'rb') as fh:
                result = merge_results(pickle.load(fh), result)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.from_raw is None:
        with open(out / 'raw.pickle', 'wb') as fh:
            pickle.dump(result, fh)
    for name, reason in result.skipped.items():
        print(f'skipped {name}: {reason}', file=sys.stderr)
    curves, summary, binned, fps = summarize(result, n_bootstrap=args.bootstrap)
    real = None
    if not args.no_real:
        real = real_data_checks(result.meta['detectors'], args.data_dir,
                                model=result.meta.get('model'),
                                thresholds=operating_thresholds(summary))
    write_outputs(result, curves, summary, binned, fps, out, real=real)
    _print_summary(summary, out)
    if real is not None:
        real.pprint_all(max_width=200)
    print(f'benchmark finished in {time.perf_counter() - t0:.0f} s')
    return 0
