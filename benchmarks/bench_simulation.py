# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Simulation throughput: MPix/s of finished image with truth, per core.

Run as a script (writes JSON) or with pytest-benchmark::

    python benchmarks/bench_simulation.py --out results/bench
    pytest benchmarks/bench_simulation.py --benchmark-only

Target: >= 2 MPix/s per core, so training can stream from the simulator.
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pytest

from astro_deepcolor.simulation import simulate_image


def rate(shape=(1024, 1024), regime='clean', preset='decam', n=5):
    """Median MPix/s over ``n`` seeds (one process, one core)."""
    times = []
    for seed in range(n):
        t0 = time.perf_counter()
        simulate_image(shape, regime=regime, preset=preset, seed=seed)
        times.append(time.perf_counter() - t0)
    return shape[0] * shape[1] / 1e6 / float(np.median(times))


@pytest.mark.parametrize('regime', ['clean', 'contaminated'])
def test_simulation_rate(benchmark, regime):
    benchmark.pedantic(simulate_image, args=((1024, 1024),),
                       kwargs={'regime': regime, 'seed': 1}, rounds=3)
    benchmark.extra_info['mpix_per_s'] = 1.048576 / benchmark.stats['median']


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument('--out', default='results/bench')
    parser.add_argument('--n', type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    results = {'machine': platform.processor() or platform.machine(),
               'cores_used': 1, 'rates_mpix_per_s': {}}
    for preset in ('decam', 'megacam', 'hsc'):
        for regime in ('clean', 'contaminated'):
            r = rate(regime=regime, preset=preset, n=args.n)
            results['rates_mpix_per_s'][f'{preset}/{regime}'] = round(r, 3)
            print(f'{preset:8s} {regime:13s} {r:6.2f} MPix/s per core')
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'simulation_rate.json').write_text(json.dumps(results, indent=2))
    print(f'wrote {out / "simulation_rate.json"}')


if __name__ == '__main__':
    main()
