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
                        help='CNN model file (default: the shipped model); '
                        'cnn_sourcextractor runs MODEL_STEM_sourcextractor.onnx '
                        'beside it, and is skipped when there is none')
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
    parser.add_argument('--overwrite', action='store_true',
                        help='replace the results of an earlier run in --out')


#: Real-image checks: what each needs under --data-dir.
REAL_CHECKS = {
    'sep field (SExtractor catalogue)': ('sep/image.fits', 'sep/image.cat'),
    'satellite streak': ('astride/long.fits', 'astride/long.fits.out.txt'),
    'DECam data-quality masks': ('legacypipe/testcase6',),
    'Gaia stars': ('legacypipe/testcase4/gaia',),
}

#: Meaning of the columns printed at the end of a run.
COLUMN_NOTES = (
    ('n_truth', 'true sources in the test images'),
    ('C@1%, C@5%, ...', 'completeness (found / true) at the threshold where '
                        'contamination (false / detected) is 1 %, 5 %, ...; '
                        '-- when the detector never gets that clean'),
    ('min_contam', 'lowest contamination over the threshold sweep'),
    ('deblend', 'fraction of close true pairs detected as two sources'),
)

_SHORT = {'completeness_at_1pct': 'C@1%', 'completeness_at_5pct': 'C@5%',
          'completeness_at_10pct': 'C@10%', 'completeness_at_20pct': 'C@20%',
          'completeness_at_50pct': 'C@50%', 'min_contamination': 'min_contam',
          'deblend_success': 'deblend'}

_SMOKE = ('SMOKE TEST (--quick): {n} image(s) of {shape} per regime and coarse '
          'threshold sweeps; the numbers only show that every step runs, not how '
          'good the detectors are (run without --quick for that)')


def _check_output_dir(out, overwrite):
    """Refuse to replace an earlier run's results without --overwrite."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        msg = f'--out {str(out)!r} is a file, not a folder'
        raise NotADirectoryError(msg)
    earlier = [n for n in ('summary.ecsv', 'report.html', 'raw.pickle')
               if (out / n).exists()]
    if earlier and not overwrite:
        msg = (f'--out {str(out)!r} already holds benchmark results '
               f'({", ".join(earlier)}); use --overwrite to replace them or '
               'choose another --out')
        raise FileExistsError(msg)


def _real_data_status(args):
    """(data folder or None, {check: reason it is skipped})."""
    from astro_deepcolor.evaluation.realdata import default_data_dir

    if args.no_real:
        return None, dict.fromkeys(REAL_CHECKS, 'skipped (--no-real)')
    if args.data_dir is not None:
        root = Path(args.data_dir)
        if not root.is_dir():
            msg = (f'--data-dir {str(root)!r} does not exist or is not a folder '
                   '(it should hold the real images: sep/, astride/, legacypipe/)')
            raise FileNotFoundError(msg)
    else:
        root = default_data_dir()
        if root is None:
            reason = ('skipped: no ../shared/data/real next to the repository '
                      '(give --data-dir)')
            return None, dict.fromkeys(REAL_CHECKS, reason)
    skipped = {}
    for name, needed in REAL_CHECKS.items():
        missing = [p for p in needed if not (root / p).exists()]
        if missing:
            skipped[name] = f'skipped: {", ".join(missing)} not in {root}'
    return root, skipped


def _format_summary(summary):
    """The summary rounded to 3 decimals, with short column names."""
    import numpy as np
    from astropy.table import Table

    cols = ['regime', 'detector', 'n_truth', *_SHORT]
    cols = [c for c in cols if c in summary.colnames]
    table = Table()
    for c in cols:
        values = summary[c]
        if getattr(values.dtype, 'kind', '') == 'f':
            values = [('--' if not np.isfinite(v) else f'{v:.3f}')
                      for v in np.asarray(values, float)]
        table[_SHORT.get(c, c)] = values
    return table


def _print_summary(summary, out, smoke=None):
    print(f'results in {out} (report.html: plots and tables)')
    if smoke:
        print(smoke)
    _format_summary(summary).pprint_all()
    for name, text in COLUMN_NOTES:
        print(f'  {name}: {text}')


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
    from astro_deepcolor.evaluation.harness import (
        available_detectors,
        merge_results,
        run_sweeps,
        summarize,
    )
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
    # everything the user can get wrong is checked before the long run
    _check_output_dir(args.out, args.overwrite)
    data_root, real_skipped = _real_data_status(args)
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
    meta = result.meta
    smoke = (_SMOKE.format(n=meta.get('n_images', '?'),
                           shape=' x '.join(str(v) for v in meta['shape'])
                           if meta.get('shape') else 'the recipe size')
             if meta.get('quick') else None)
    if smoke:
        meta['smoke_test'] = smoke
        print(smoke, file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.from_raw is None:
        with open(out / 'raw.pickle', 'wb') as fh:
            pickle.dump(result, fh)
    for name, reason in result.skipped.items():
        print(f'skipped {name}: {reason}', file=sys.stderr)
    curves, summary, binned, fps = summarize(result, n_bootstrap=args.bootstrap)
    real = None
    if data_root is not None and len(real_skipped) < len(REAL_CHECKS):
        # a merged result can name detectors this run could not make (a
        # CNN form whose model file is absent): check the ones that can run
        real_names, not_here = available_detectors(
            result.meta['detectors'], model=result.meta.get('model'))
        for name, reason in not_here.items():
            print(f'real-image checks skip {name}: {reason}', file=sys.stderr)
        real = real_data_checks(real_names, data_root,
                                model=result.meta.get('model'),
                                thresholds=operating_thresholds(summary))
    meta['real_image_checks'] = {name: real_skipped.get(name, f'ran on {data_root}')
                                 for name in REAL_CHECKS}
    for name, reason in real_skipped.items():
        print(f'real-image check {name!r}: {reason}', file=sys.stderr)
    write_outputs(result, curves, summary, binned, fps, out, real=real)
    _print_summary(summary, out, smoke)
    if real is not None:
        import numpy as np

        real = real.copy()
        for c in real.colnames:
            if getattr(real[c].dtype, 'kind', '') == 'f':
                real[c] = np.round(np.asarray(real[c], float), 3)
        real.pprint_all(max_width=200)
    print(f'benchmark finished in {time.perf_counter() - t0:.0f} s')
    return 0
