# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Throughput of the baseline detectors (pytest-benchmark), in MPix/s.

Run with::

    OMP_NUM_THREADS=1 pytest benchmarks/bench_baselines.py --benchmark-only \
        --benchmark-json results/bench_baselines.json

Each detector runs once per round at its usual threshold (1.5 sigma; the
default parameters for NoiseChisel) on a 1024 x 1024 simulated
contaminated image, background estimation included. The megapixels per
second and the device are stored in ``extra_info`` and printed.
"""

import platform

import numpy as np
import pytest

from astro_deepcolor.baselines import DETECTORS

SHAPE = (1024, 1024)
THRESHOLDS = {'noisechisel': (0.3, 0.99)}


@pytest.fixture(scope='module')
def image():
    from astro_deepcolor.simulation import simulate_image

    sim = simulate_image(SHAPE, regime='contaminated', seed=11)
    return np.asarray(sim.data), float(sim.fwhm)


def _params():
    out = []
    for name, cls in DETECTORS.items():
        reason = cls.unavailable_reason()
        out.append(pytest.param(name, marks=pytest.mark.skipif(
            reason is not None, reason=reason or ''), id=name))
    return out


@pytest.mark.parametrize('name', _params())
def test_throughput(benchmark, image, name):
    data, fwhm = image
    det = DETECTORS[name](fwhm=fwhm)
    threshold = THRESHOLDS.get(name, 1.5)
    _segm, table = benchmark.pedantic(det, args=(data, threshold), rounds=3,
                                     iterations=1, warmup_rounds=1)
    assert len(table) > 0
    mpix = data.size / 1e6
    rate = mpix / benchmark.stats.stats.median
    benchmark.extra_info.update({
        'mpix_per_s': rate, 'image_shape': list(SHAPE),
        'n_detections': len(table),
        'device': f'CPU {platform.processor() or platform.machine()}, '
                  '1 thread (OMP_NUM_THREADS=1)'})
    print(f'\n{name}: {rate:.2f} MPix/s ({len(table)} detections)')
