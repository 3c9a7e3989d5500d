# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Throughput of deep-coloring detection on a GPU (PyTorch on CUDA).

    python benchmarks/bench_gpu.py [--size 4096] [--out results/bench/gpu.json]

Three measurements, in one run:

1. **Network.** `~astro_deepcolor.inference.backends.TorchBackend` (what
   ``DeepColorSegmentation(backend='torch', device='cuda')`` runs) on
   batches of normalised tiles, in each precision and for several tile
   sizes, timed from a host array to host probabilities (the finder's
   view: host-to-device copy, network, softmax, copy back). The same
   network is also timed with the data already on the device and
   ``channels_last`` + ``cudnn.benchmark`` (the compute alone: what a
   fused pipeline could reach).
2. **End to end.** `~astro_deepcolor.DeepColorSegmentation` on a
   simulated contaminated ``size x size`` image, with its per-stage
   timings (background, normalisation, network, classification,
   labelling): the CPU stages around the network set the pace on a GPU.
3. **Agreement.** The segmentations in half precision (and with
   onnxruntime on the CPU) against float32 on the GPU, on the same
   image: number of sources, and the fraction of float32 sources whose
   footprint is matched (IoU >= 0.5) by a source of the other run.

``--device cpu`` runs the same code on the CPU with float32 only (a dry
run of the script on a machine without a GPU).
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np


def _sync(torch, device):
    if device == 'cuda':
        torch.cuda.synchronize()


def _time(fn, min_seconds=1.0, min_calls=3):
    fn()  # warm-up
    n = 0
    t0 = time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if n >= min_calls and dt >= min_seconds:
            return dt / n


def network(model, device, precisions, tiles, mpix_per_call):
    import torch

    from astro_deepcolor.inference.backends import TorchBackend

    rng = np.random.default_rng(0)
    rows = []
    for precision in precisions:
        backend = TorchBackend(model, device, precision=precision)
        for tile in tiles:
            n = max(1, round(mpix_per_call * 1e6 / tile**2))
            batch = rng.standard_normal((n, 1, tile, tile)).astype(np.float32)
            mpix = n * tile**2 / 1e6

            t_host = _time(lambda b=backend, a=batch: b.run(a))
            # compute alone: data on the device, channels_last, cudnn autotune
            net = backend._module
            torch.backends.cudnn.benchmark = True
            net_cl = net.to(memory_format=torch.channels_last)
            x = torch.from_numpy(batch).to(device, getattr(torch, precision))
            x = x.contiguous(memory_format=torch.channels_last)

            def on_device(net=net_cl, x=x):
                with torch.inference_mode():
                    torch.softmax(net(x).float(), dim=1)
                _sync(torch, device)

            t_dev = _time(on_device)
            torch.backends.cudnn.benchmark = False
            backend._module = net.to(memory_format=torch.contiguous_format)
            rows.append({'precision': precision, 'tile': tile, 'batch': n,
                         'megapixels_per_call': mpix,
                         'host_to_host_mpix_per_s': mpix / t_host,
                         'on_device_channels_last_mpix_per_s': mpix / t_dev})
            print(f'network {precision:9s} tile {tile:5d} x{n:3d}: '
                  f'{mpix / t_host:8.1f} MPix/s host to host, '
                  f'{mpix / t_dev:8.1f} on device', flush=True)
        if device == 'cuda':
            torch.cuda.empty_cache()
    return rows


def end_to_end(model, data, device, precision, tile, batch_size, flips,
               backend='torch', repeat=2):
    import warnings

    from photutils.utils.exceptions import NoDetectionsWarning

    from astro_deepcolor import DeepColorSegmentation

    finder = DeepColorSegmentation(model=model, backend=backend, device=device,
                                   precision=precision, tile_shape=tile,
                                   batch_size=batch_size, flips=flips)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', NoDetectionsWarning)
        finder(data[:512, :512])  # warm-up
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        segm = finder(data)
        dt = time.perf_counter() - t0
        if best is None or dt < best[0]:
            best = (dt, segm)
    dt, segm = best
    tm = segm.info['timings']
    mpix = data.size / 1e6
    stages = {k: tm[k] for k in ('background', 'normalize', 'network',
                                 'classify', 'label')}
    row = {'backend': finder.backend_description, 'tile': tile,
           'batch_size': batch_size, 'flips': flips,
           'end_to_end_s': dt, 'end_to_end_mpix_per_s': mpix / dt,
           'stages_s': stages,
           'stages_mpix_per_s': {k: (mpix / v if v > 0 else None)
                                 for k, v in stages.items()},
           'n_sources': int(segm.n_labels)}
    print(f'end to end {row["backend"]:34s} flips={flips!s:5s}: '
          f'{mpix / dt:6.2f} MPix/s, network {mpix / stages["network"]:7.1f}, '
          f'{segm.n_labels} sources', flush=True)
    return row, segm


def agreement(reference, other):
    """Fraction of reference sources matched (IoU >= 0.5) by ``other``."""
    ref = reference.data
    oth = other.data
    both = (ref > 0) & (oth > 0)
    pairs, inter = np.unique(
        np.stack([ref[both], oth[both]]).astype(np.int64), axis=1,
        return_counts=True)
    area_ref = np.bincount(ref.ravel())
    area_oth = np.bincount(oth.ravel())
    iou = inter / (area_ref[pairs[0]] + area_oth[pairs[1]] - inter)
    matched = np.unique(pairs[0][iou >= 0.5])
    return {'n_reference': int(reference.n_labels),
            'n_other': int(other.n_labels),
            'fraction_matched_iou_0.5': len(matched) / max(reference.n_labels, 1)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument('--size', type=int, default=4096)
    parser.add_argument('--model', default=None, help='ONNX model (default: shipped)')
    parser.add_argument('--device', default='cuda', choices=('cuda', 'cpu'))
    parser.add_argument('--tiles', type=int, nargs='+', default=[512, 1024, 2048])
    parser.add_argument('--mpix-per-call', type=float, default=8.0)
    parser.add_argument('--out', default='results/bench/gpu.json')
    args = parser.parse_args(argv)

    import torch

    from astro_deepcolor.model import load_model
    from astro_deepcolor.simulation import simulate_image

    model = load_model(args.model)
    device = args.device
    precisions = (['float32', 'bfloat16', 'float16'] if device == 'cuda'
                  else ['float32'])
    info = {'python': platform.python_version(), 'torch': torch.__version__,
            'cores': len(os.sched_getaffinity(0)),
            'gpu': (torch.cuda.get_device_name(0) if device == 'cuda' else None)}
    print(info, flush=True)
    result = {'benchmark': 'GPU throughput', 'device': info,
              'model': {'path': str(model.path),
                        'gflop_per_megapixel': model.config.gflop_per_megapixel}}
    result['network'] = network(model, device, precisions, args.tiles,
                                args.mpix_per_call)

    t0 = time.perf_counter()
    sim = simulate_image((args.size, args.size), regime='contaminated', seed=1)
    result['image'] = {'shape': [args.size, args.size], 'simulated': 'contaminated',
                       'seed': 1, 'simulate_s': time.perf_counter() - t0}
    data = sim.data
    rows, segms = [], {}
    for precision in precisions:
        row, segms[precision] = end_to_end(model, data, device, precision,
                                           2048, 4, flips=False)
        rows.append(row)
    row, _ = end_to_end(model, data, device, precisions[1 if device == 'cuda' else 0],
                        2048, 4, flips=True)
    rows.append(row)
    row, segms['onnxruntime-cpu'] = end_to_end(model, data, 'cpu', 'float32',
                                               1024, 1, flips=False,
                                               backend='onnxruntime', repeat=1)
    rows.append(row)
    result['end_to_end'] = rows
    result['agreement_with_float32'] = {
        name: agreement(segms['float32'], s) for name, s in segms.items()
        if name != 'float32'}
    print(json.dumps(result['agreement_with_float32'], indent=1), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float) + '\n')
    print(f'wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
