# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Throughput of the network stage alone (onnxruntime, CPU by default).

    python benchmarks/bench_network.py [RESULTS_DIR] [--model PATH]
        [--threads 2] [--tile 512] [--batch 1] [--size 2048]

Runs the model on a ``size`` x ``size`` normalised noise-plus-sources
image cut into ``tile`` x ``tile`` tiles (``batch`` tiles per call, no
overlap: this is the network cost per input pixel), after one warm-up
call, and also on the whole image in one call. Reports megapixels per
second and the model's GFLOP per megapixel. Writes
``RESULTS_DIR/bench_network.json`` (default ``results/``).
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument('results', nargs='?', default='results')
    parser.add_argument('--model', default=None, help='ONNX model (default: shipped)')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--tile', type=int, default=512)
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--size', type=int, default=2048)
    parser.add_argument('--repeat', type=int, default=2)
    parser.add_argument('--provider', default='CPUExecutionProvider')
    args = parser.parse_args(argv)

    import onnxruntime as ort

    from astro_deepcolor.model import load_model

    model = load_model(args.model)
    cfg = model.config
    session = model.make_session([args.provider],
                                 intra_op_num_threads=args.threads)
    rng = np.random.default_rng(0)
    n = args.size
    image = rng.standard_normal((n, n)).astype(np.float32)
    yy, xx = np.mgrid[0:n, 0:n]
    for _ in range(n * n // 5000):  # ~200 sources per megapixel
        cy, cx = rng.integers(0, n, 2)
        s = slice(max(cy - 8, 0), cy + 9), slice(max(cx - 8, 0), cx + 9)
        amp = 10 ** rng.uniform(0, 3)
        image[s] += (amp * np.exp(-((yy[s] - cy) ** 2 + (xx[s] - cx) ** 2) / 4.5)
                     ).astype(np.float32)
    t = args.tile
    tiles = image.reshape(n // t, t, n // t, t).transpose(0, 2, 1, 3).reshape(-1, 1, t, t)
    session.run(None, {'image': tiles[:args.batch]})  # warm-up

    def run_tiles():
        for i in range(0, len(tiles), args.batch):
            session.run(None, {'image': np.ascontiguousarray(tiles[i:i + args.batch])})

    def run_whole():
        session.run(None, {'image': image[None, None]})

    timings = {}
    for name, fn in (('tiled', run_tiles), ('whole_image', run_whole)):
        best = np.inf
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        timings[name] = best
    mpix = n * n / 1e6
    result = {
        'benchmark': 'network',
        'model': str(model.path),
        'config': {k: getattr(cfg, k) for k in ('n_colors', 'depth', 'width',
                                                 'receptive_field')},
        'gflop_per_megapixel': cfg.gflop_per_megapixel,
        'provider': args.provider,
        'onnxruntime_version': ort.__version__,
        'threads': args.threads,
        'machine': platform.processor() or platform.machine(),
        'cpu_count': os.cpu_count(),
        'load_average_1min': os.getloadavg()[0],
        'image_shape': [n, n],
        'tile': t,
        'batch': args.batch,
        'tiled_s': timings['tiled'],
        'tiled_mpix_per_s': mpix / timings['tiled'],
        'whole_image_s': timings['whole_image'],
        'whole_image_mpix_per_s': mpix / timings['whole_image'],
        'achieved_gflop_per_s': cfg.gflop_per_megapixel * mpix / timings['tiled'],
    }
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    path = out / 'bench_network.json'
    path.write_text(json.dumps(result, indent=1))
    for k, v in result.items():
        print(f'{k:28s} {v}')
    print(f'wrote {path}')


if __name__ == '__main__':
    main()
