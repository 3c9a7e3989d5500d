# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Throughput of the preprocessing stage (background + rms + normalisation)
on ONE core, with ``sep.Background`` timed in the same run.

    python benchmarks/bench_preprocessing.py [RESULTS_DIR] [--size 4096]

Writes ``RESULTS_DIR/bench_preprocessing.json`` (default ``results/``).
BLAS/OpenMP are pinned to one thread before NumPy is imported.
"""

import os

for _var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
    os.environ[_var] = '1'

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


def _best_of(fn, repeat):
    times = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument('results', nargs='?', default='results')
    parser.add_argument('--size', type=int, default=4096)
    parser.add_argument('--box', type=int, default=64)
    parser.add_argument('--repeat', type=int, default=3)
    args = parser.parse_args(argv)

    from astro_deepcolor.preprocessing import estimate_background, normalize
    from astro_deepcolor.simulation import simulate_image

    t0 = time.perf_counter()
    sim = simulate_image((args.size, args.size), regime='contaminated',
                         seed=1, density=1.0)
    t_sim = time.perf_counter() - t0
    data = np.array(sim.data, dtype=np.float32)
    mpix = data.size / 1e6

    def ours():
        bkg, rms = estimate_background(data, box_size=args.box)
        return bkg, rms, normalize(data, bkg, rms)

    def ours_bkg_only():
        return estimate_background(data, box_size=args.box)

    t_ours, (bkg, rms, _) = _best_of(ours, args.repeat)
    t_bkg, _ = _best_of(ours_bkg_only, args.repeat)
    result = {
        'benchmark': 'preprocessing',
        'image_shape': list(data.shape),
        'megapixels': mpix,
        'box_size': args.box,
        'threads': 1,
        'machine': platform.processor() or platform.machine(),
        'cpu_count': os.cpu_count(),
        'load_average_1min': os.getloadavg()[0],
        'simulation_s': t_sim,
        'astro_deepcolor_s': t_ours,
        'astro_deepcolor_mpix_per_s': mpix / t_ours,
        'astro_deepcolor_background_only_s': t_bkg,
        'astro_deepcolor_background_only_mpix_per_s': mpix / t_bkg,
    }
    try:
        import sep
    except ImportError:
        sep = None
    if sep is not None:
        def sep_run():
            b = sep.Background(data, bw=args.box, bh=args.box, fw=3, fh=3)
            return b.back(), b.rms()

        def sep_full():
            back, srms = sep_run()
            return back, srms, (data - back) / srms

        t_sep_bkg, (sb, sr) = _best_of(sep_run, args.repeat)
        t_sep, _ = _best_of(sep_full, args.repeat)
        diff = np.abs(bkg - sb) / sr
        result.update({
            'sep_version': sep.__version__,
            'sep_s': t_sep,
            'sep_mpix_per_s': mpix / t_sep,
            'sep_background_only_s': t_sep_bkg,
            'sep_background_only_mpix_per_s': mpix / t_sep_bkg,
            'background_vs_sep_over_rms_median': float(np.median(diff)),
            'background_vs_sep_over_rms_p95': float(np.percentile(diff, 95)),
            'rms_vs_sep_ratio_median': float(np.median(rms / sr)),
        })
    truth = np.abs(bkg - sim.background) / sim.rms
    result['background_vs_truth_over_rms_median'] = float(np.median(truth))

    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    path = out / 'bench_preprocessing.json'
    path.write_text(json.dumps(result, indent=1))
    for k, v in result.items():
        print(f'{k:45s} {v}')
    print(f'wrote {path}')


if __name__ == '__main__':
    main()
