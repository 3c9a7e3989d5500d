# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Scaling of survey-scale batch detection (`astro_deepcolor.batch`) on Dask.

Default measurement (1 and 2 local CPU workers)::

    OMP_NUM_THREADS=1 python benchmarks/bench_batch.py

with one GPU as well: one worker with ``device='cuda'`` and 2, 4, 8
threads, i.e. images in flight (skipped, with a message, when no CUDA
device is usable)::

    OMP_NUM_THREADS=1 python benchmarks/bench_batch.py --gpu

smoke test (a minute or two)::

    OMP_NUM_THREADS=1 python benchmarks/bench_batch.py --n-files 2 --n-hdus 2 \\
        --shape 256 512 --out results/bench/batch_scaling_smoke.json

What it does:

1. Writes (once; reused when present) ``--n-files`` DECam-like
   multi-extension FITS exposures into ``--cache-dir``: an empty primary
   HDU (as a real DECam exposure has) and ``--n-hdus`` float32 image HDUs
   of ``--shape ny nx`` pixels (default 1024 x 2048, a quarter of a
   2048 x 4096 DECam CCD), each a ``simulate_image(..., preset='decam')``
   simulation with its own seed and a simple TAN WCS.
2. Times the stages of one HDU in this process (read, network, the rest
   of the detection, catalogue): the part that is not the network is
   what a GPU does not speed up, and it sets how many CPU threads a GPU
   needs (``--no-profile`` skips it).
3. For each count in ``--workers`` starts a fresh
   `~distributed.LocalCluster` of single-threaded worker processes,
   warms every worker up (imports, model load, onnxruntime session, one
   small detection), then times one `~astro_deepcolor.batch.BatchDetector`
   run over all files into a fresh output directory. Cluster start and
   warm-up are timed separately and excluded from the rates.
4. Checks the outputs (every image done; merged catalogue rows = sum of
   the per-image catalogues = sum of the manifest's ``n_sources``; the same
   catalogue for every worker count) and writes a JSON file with the
   machine, the model, the settings, the rates (files/s, HDUs/s, MPix/s,
   per worker), the speed-up over the smallest worker count and the
   resources a survey night would need at the measured rates.

Threads: each CPU worker is single-threaded, and `BatchDetector` gives
the network of each worker ``threads_per_worker`` onnxruntime threads
(the finder's ``n_threads``), so N workers on N cores do not
oversubscribe them. The benchmark records the backend every worker really
used (``workers`` in the JSON) and reports a problem if a CPU worker's
session has another number of threads. Dask sets ``OMP_NUM_THREADS=1``
(and MKL/OpenBLAS) in its workers; the benchmark passes them explicitly
as well.
"""

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: A DECam night for the survey arithmetic: exposures, CCDs, CCD shape.
SURVEY = {'exposures': 200, 'ccds': 60, 'ccd_shape': (4096, 2048),
          'night_hours': 10.0}
#: DECam CCD names, used as EXTNAME.
DECAM_CCDS = [f'S{i}' for i in range(1, 32)] + [f'N{i}' for i in range(1, 32)]
PIXEL_SCALE = 0.263  # arcsec / pixel
THREAD_VARS = ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS')


def log(msg):
    print(f'[bench_batch {time.strftime("%H:%M:%S")}] {msg}', file=sys.stderr,
          flush=True)


# -- machine and model --------------------------------------------------------

def _cpu_name():
    with contextlib.suppress(OSError):
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    return platform.processor()


def _memory_gb():
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path('/proc/meminfo').read_text().splitlines():
            if line.startswith('MemTotal'):
                return round(int(line.split()[1]) / 1024**2, 1)
    return None


def machine_info():
    import dask
    import distributed
    import onnxruntime

    return {
        'host': platform.node(),
        'cpu': _cpu_name(),
        'cores': os.cpu_count(),
        'cores_available': len(os.sched_getaffinity(0)),
        'memory_gb': _memory_gb(),
        'python': platform.python_version(),
        'platform': platform.platform(),
        'numpy': np.__version__,
        'onnxruntime': onnxruntime.__version__,
        'onnxruntime_providers': onnxruntime.get_available_providers(),
        'dask': dask.__version__,
        'distributed': distributed.__version__,
        'env': {k: os.environ.get(k) for k in THREAD_VARS},
    }


def model_info(path):
    from astro_deepcolor.model.io import DEFAULT_MODEL_PATH, load_model

    path = Path(path) if path is not None else DEFAULT_MODEL_PATH
    model = load_model(path)
    config = model.config
    stat = path.stat()
    return {
        'path': str(path.resolve()),
        'kind': 'given' if path != DEFAULT_MODEL_PATH else 'shipped',
        'sha256': hashlib.sha256(path.read_bytes()).hexdigest(),
        'mtime': time.strftime('%Y-%m-%dT%H:%M:%S',
                               time.localtime(stat.st_mtime)),
        'n_colors': config.n_colors,
        'depth': config.depth,
        'width': config.width,
        'receptive_field': config.receptive_field,
        'gflop_per_megapixel': config.gflop_per_megapixel,
    }


def cuda_status():
    """Return (usable, description) of CUDA for the finder's backends."""
    from astro_deepcolor.inference.backends import (
        _ort_providers,
        _torch_cuda_available,
    )

    if _torch_cuda_available():
        import torch

        return True, f'torch CUDA ({torch.cuda.get_device_name(0)})'
    providers = _ort_providers()
    if 'CUDAExecutionProvider' in providers:
        return True, 'onnxruntime CUDAExecutionProvider'
    return False, ('no CUDA device usable by torch or onnxruntime '
                   f'(onnxruntime providers: {", ".join(providers)})')


# -- the simulated exposures -------------------------------------------------

def _tan_header(ra0, dec0, k, shape):
    from astropy.wcs import WCS

    ny, nx = shape
    col, row = k % 8, k // 8
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ['RA---TAN', 'DEC--TAN']
    wcs.wcs.crpix = [(nx + 1) / 2, (ny + 1) / 2]
    wcs.wcs.cdelt = [-PIXEL_SCALE / 3600, PIXEL_SCALE / 3600]
    deg_x = 1.05 * nx * PIXEL_SCALE / 3600
    deg_y = 1.05 * ny * PIXEL_SCALE / 3600
    wcs.wcs.crval = [ra0 + (col - 3.5) * deg_x / math.cos(math.radians(dec0)),
                     dec0 + (row - 1) * deg_y]
    return wcs.to_header()


def write_exposure(path, index, n_hdus, shape, *, regime, density, seed):
    """One DECam-like exposure: empty primary HDU + n_hdus image HDUs."""
    from astropy.io import fits

    from astro_deepcolor.simulation import simulate_image

    primary = fits.PrimaryHDU()
    primary.header['OBSTYPE'] = 'object'
    primary.header['INSTRUME'] = 'DECam'
    primary.header['FILTER'] = 'r'
    primary.header['EXPTIME'] = 90.0
    primary.header['EXPNUM'] = 100000 + index
    primary.header['COMMENT'] = 'simulated by benchmarks/bench_batch.py'
    hdus = [primary]
    ra0, dec0 = 20.0 + 2.5 * index, -10.0
    for k in range(n_hdus):
        sim = simulate_image(shape, regime=regime, seed=seed + 1000 * index + k,
                             preset='decam', density=density)
        header = _tan_header(ra0, dec0, k, shape)
        header['EXTNAME'] = DECAM_CCDS[k % len(DECAM_CCDS)] + (
            '' if k < len(DECAM_CCDS) else f'_{k // len(DECAM_CCDS)}')
        header['CCDNUM'] = k + 1
        header['BUNIT'] = 'adu'
        hdus.append(fits.ImageHDU(np.asarray(sim.data, dtype=np.float32),
                                  header=header))
    tmp = path.with_name(f'.{path.name}.tmp')
    fits.HDUList(hdus).writeto(tmp, overwrite=True)
    os.replace(tmp, path)


def _exposure_ok(path, n_hdus, shape):
    from astropy.io import fits

    try:
        with fits.open(path) as hdul:
            return (len(hdul) == n_hdus + 1 and hdul[0].data is None
                    and all(h.data.shape == tuple(shape) for h in hdul[1:]))
    except Exception:
        return False


def _simulator_hash():
    """SHA-1 of the simulation code: a change invalidates the cached files."""
    import astro_deepcolor.simulation as simulation

    digest = hashlib.sha1()
    for path in sorted(Path(simulation.__file__).parent.glob('*.py')):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def make_dataset(args):
    """The simulated exposures (generated once, then reused)."""
    ny, nx = args.shape
    name = (f'{args.n_hdus}hdu_{ny}x{nx}_{args.regime}_d{args.density:g}'
            f'_seed{args.seed}')
    folder = Path(args.cache_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / 'simulator.sha1'
    code = _simulator_hash()
    if not stamp.exists() or stamp.read_text().strip() != code:
        stale = sorted(folder.glob('exp*.fits'))
        if stale:
            log(f'the simulation code changed: regenerating {folder}')
        for path in stale:
            path.unlink()
        stamp.write_text(code + '\n')
    paths = [folder / f'exp{i:04d}.fits' for i in range(args.n_files)]
    todo = [i for i, p in enumerate(paths)
            if not _exposure_ok(p, args.n_hdus, args.shape)]
    t0 = time.perf_counter()
    if todo:
        log(f'simulating {len(todo)} exposure(s) of {args.n_hdus} x {ny} x '
            f'{nx} px into {folder} ({len(paths) - len(todo)} reused)')
        for n, i in enumerate(todo, 1):
            t1 = time.perf_counter()
            write_exposure(paths[i], i, args.n_hdus, args.shape,
                           regime=args.regime, density=args.density,
                           seed=args.seed * 1_000_000)
            log(f'  exposure {n}/{len(todo)}: {paths[i].name} '
                f'({time.perf_counter() - t1:.1f} s)')
    else:
        log(f'reusing {len(paths)} exposure(s) in {folder}')
    info = {'folder': str(folder), 'n_files': len(paths),
            'n_hdus_per_file': args.n_hdus, 'shape': [ny, nx],
            'regime': args.regime, 'density': args.density, 'seed': args.seed,
            'preset': 'decam', 'dtype': 'float32', 'simulator_sha1': code,
            'bytes': int(sum(p.stat().st_size for p in paths)),
            'generated': len(todo),
            'generate_s': time.perf_counter() - t0}
    return [str(p) for p in paths], info


# -- workers -------------------------------------------------------------------

def _warm_worker(finder):
    """Imports, model, session and one small detection, on a worker.

    The run's own copy of the finder (sent by BatchDetector) builds its
    session on its first task; this warms imports and the model file.
    """
    import os
    import time
    import warnings

    import numpy as np

    from astro_deepcolor.pipeline import detect_image

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:256, :256]
    data = rng.normal(100.0, 5.0, (256, 256)).astype(np.float32)
    for y, x in ((64, 64), (128, 190), (200, 100)):
        data += (400 * np.exp(-((yy - y)**2 + (xx - x)**2) / 8.0)).astype(
            np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        detect_image(finder, data)
    return {'pid': os.getpid(), 'warmup_s': time.perf_counter() - t0,
            'backend': finder.backend_description,
            'cores_available': len(os.sched_getaffinity(0)),
            'env': {k: os.environ.get(k) for k in
                    ('OMP_NUM_THREADS', 'MKL_NUM_THREADS',
                     'OPENBLAS_NUM_THREADS')}}


def _worker_state():
    import os
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {'pid': os.getpid(), 'peak_rss_mb': rss}


def profile_one_hdu(path, finder, repeat=2):
    """Stage times of one HDU in this process (what a GPU would not speed up)."""
    from astro_deepcolor.batch.inputs import read_image_hdu
    from astro_deepcolor.pipeline import celestial_wcs, detect_image

    best = None
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        data, header = read_image_hdu(path, 1)
        detect_image(finder, data[:256, :256].copy(), header)  # warm
        for _ in range(repeat):
            t0 = time.perf_counter()
            data, header = read_image_hdu(path, 1)
            t1 = time.perf_counter()
            segm = finder(data)
            t2 = time.perf_counter()
            wcs = celestial_wcs(header)
            table = finder.catalog(data, segm, wcs=wcs)
            t3 = time.perf_counter()
            tm = segm.info['timings']
            run = {'read_s': t1 - t0, 'detect_s': t2 - t1,
                   'network_s': tm['network'],
                   'detect_other_s': (t2 - t1) - tm['network'],
                   'catalog_s': t3 - t2, 'n_tiles': tm['n_tiles'],
                   'tile_efficiency': tm['tile_efficiency'],
                   'n_sources': len(table)}
            run['total_s'] = t3 - t0
            run['not_network_s'] = run['total_s'] - run['network_s']
            if best is None or run['total_s'] < best['total_s']:
                best = run
    mpix = data.size / 1e6
    best.update(megapixels=mpix, backend=finder.backend_description,
                mpix_per_s=mpix / best['total_s'],
                network_mpix_per_s=mpix / best['network_s'],
                not_network_mpix_per_s=mpix / best['not_network_s'],
                network_fraction=best['network_s'] / best['total_s'])
    return best


def start_cluster(n_workers, threads_per_worker):
    from distributed import Client, LocalCluster

    env = dict.fromkeys(THREAD_VARS, '1')
    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=n_workers,
                           threads_per_worker=threads_per_worker,
                           processes=True, dashboard_address=':0',
                           silence_logs=40, env=env)
    client = Client(cluster)
    client.wait_for_workers(n_workers, timeout=300)
    return cluster, client, time.perf_counter() - t0


# -- one run -------------------------------------------------------------------

def _float_values(col):
    """A (masked) table column as floats, NaN where masked."""
    mask = np.asarray(getattr(col, 'mask', False), dtype=bool)
    values = np.array(getattr(col, 'value', col), dtype=float)
    values[mask] = np.nan
    return values


def _xy_columns(table):
    for x, y in (('x_centroid', 'y_centroid'), ('xcentroid', 'ycentroid')):
        if x in table.colnames:
            return x, y
    return 'x', 'y'


def check_outputs(result, paths, n_hdus, shape):
    """Sanity checks of one run's outputs; returns (checks, problems)."""
    from astropy.table import QTable

    from astro_deepcolor.batch import Manifest

    n_images = len(paths) * n_hdus
    merged = QTable.read(result.catalog)
    with Manifest(result.manifest) as manifest:
        rows = manifest.rows(status='done', images_only=True)
        counts = manifest.counts()
    per_image = {}
    for row in rows:
        per_image[(row['file'], row['hdu'])] = len(QTable.read(row['catalog']))
    keys = list(zip(np.asarray(merged['file']).astype(str),
                    np.asarray(merged['hdu']).astype(int), strict=True))
    xy = np.stack([_float_values(merged[c]) for c in _xy_columns(merged)])
    no_centroid = ~np.isfinite(xy).all(axis=0)
    ra, dec = _float_values(merged['ra']), _float_values(merged['dec'])
    merged_counts = {}
    for key in keys:
        merged_counts[key] = merged_counts.get(key, 0) + 1
    checks = {
        'n_images_expected': n_images,
        'n_done': result.n_done,
        'n_failed': result.n_failed,
        'n_skipped': result.n_skipped,
        'manifest_counts': counts,
        'n_pixels': result.n_pixels,
        'merged_rows': len(merged),
        'sum_per_image_catalogues': sum(per_image.values()),
        'sum_manifest_n_sources': int(sum(r['n_sources'] for r in rows)),
        'result_n_sources': result.n_sources,
        # photutils leaves the centroid of a source of negative total
        # flux (a detection on a dead column, say) undefined: its ra/dec
        # are NaN too. Any other non-finite ra/dec is a problem.
        'rows_without_centroid': int(no_centroid.sum()),
        'ra_dec_finite': bool(np.isfinite(ra[~no_centroid]).all()
                              and np.isfinite(dec[~no_centroid]).all()),
        'workers_used': sorted({r['worker'] for r in rows}),
    }
    problems = []
    if result.n_done != n_images or result.n_failed:
        problems.append(f'{result.n_done} of {n_images} images done, '
                        f'{result.n_failed} failed')
    if result.n_skipped != len(paths):
        problems.append(f'{result.n_skipped} HDUs skipped, expected '
                        f'{len(paths)} (the empty primaries)')
    if result.n_pixels != n_images * shape[0] * shape[1]:
        problems.append(f'{result.n_pixels} pixels processed, expected '
                        f'{n_images * shape[0] * shape[1]}')
    totals = {checks[k] for k in ('merged_rows', 'sum_per_image_catalogues',
                                  'sum_manifest_n_sources',
                                  'result_n_sources')}
    if len(totals) != 1:
        problems.append('merged catalogue rows, per-image catalogues and '
                        f'manifest n_sources disagree: {checks}')
    if any(merged_counts.get(k, 0) != n for k, n in per_image.items()):
        problems.append('the merged catalogue does not hold each per-image '
                        'catalogue exactly once')
    if not checks['ra_dec_finite']:
        problems.append('non-finite ra/dec for sources with a centroid')
    checks['ok'] = not problems
    return checks, problems, sorted(per_image.items())


def _finder(args, *, device, batch_size, n_threads=None):
    """The finder of the benchmark's settings."""
    from astro_deepcolor import DeepColorSegmentation

    kwargs = {'threshold': args.threshold, 'n_pixels': args.n_pixels,
              'model': args.model, 'device': device, 'n_threads': n_threads}
    if args.tile_size is not None:
        kwargs['tile_shape'] = args.tile_size
    if batch_size is not None:
        kwargs['batch_size'] = batch_size
    return DeepColorSegmentation(**kwargs)


def run_once(label, paths, args, *, n_workers, threads_per_worker, device,
             batch_size):
    from astro_deepcolor.batch import BatchDetector, Manifest

    out = Path(args.cache_dir) / 'runs' / label
    if out.exists():
        shutil.rmtree(out)
    log(f'{label}: starting a LocalCluster of {n_workers} worker(s) x '
        f'{threads_per_worker} thread(s), device={device}')
    cluster, client, t_cluster = start_cluster(n_workers, threads_per_worker)
    try:
        # threads_per_worker as the cluster's: the network of each worker
        # gets that many threads (the finder's n_threads)
        batch = BatchDetector(
            _finder(args, device=device, batch_size=batch_size),
            threads_per_worker=threads_per_worker, dashboard_address=':0',
            progress_bar=not args.quiet)
        t0 = time.perf_counter()
        warm = client.run(_warm_worker, batch.finder)
        t_warm = time.perf_counter() - t0
        backends = sorted({w['backend'] for w in warm.values()})
        log(f'{label}: cluster {t_cluster:.1f} s, warm-up {t_warm:.1f} s; '
            f'{"; ".join(backends)}')
        load = os.getloadavg()
        t0 = time.perf_counter()
        result = batch(paths, out, client=client)
        wall = time.perf_counter() - t0
        state = client.run(_worker_state)
    finally:
        client.close()
        cluster.close()

    checks, problems, per_image = check_outputs(result, paths, args.n_hdus,
                                                args.shape)
    if device == 'cpu':
        want = f'{threads_per_worker} threads)'
        wrong = sorted({w['backend'] for w in warm.values()
                        if not w['backend'].endswith(want)})
        if wrong:
            problems.append(f'CPU workers ran the network with other than '
                            f'{threads_per_worker} thread(s): {wrong}')
    with Manifest(result.manifest) as manifest:
        rows = manifest.rows(status='done', images_only=True)
    seconds = np.array([r['seconds'] for r in rows], dtype=float)
    busy = float(seconds.sum())
    n_files, n_images = len(paths), result.n_done
    mpix = result.n_pixels / 1e6
    rates = {
        'files_per_s': n_files / wall,
        'hdus_per_s': n_images / wall,
        'mpix_per_s': mpix / wall,
        'mpix_per_s_per_worker': mpix / wall / n_workers,
        'mpix_per_s_detect_phase': result.megapixels_per_second,
        'mpix_per_worker_busy_s': mpix / busy if busy else float('nan'),
    }
    record = {
        'label': label, 'n_workers': n_workers,
        'threads_per_worker': threads_per_worker, 'device': device,
        'network_threads': batch.finder.n_threads,
        'batch_size': batch_size,
        'cluster_start_s': t_cluster, 'warmup_s': t_warm,
        'run_s': wall, 'detect_phase_s': result.seconds,
        'merge_and_bookkeeping_s': wall - result.seconds,
        'load_average_at_start': list(load),
        'n_files': n_files, 'n_hdus': n_images, 'megapixels': mpix,
        'n_sources': result.n_sources,
        'task_seconds': {'mean': float(seconds.mean()),
                         'min': float(seconds.min()),
                         'max': float(seconds.max())} if len(seconds) else {},
        'worker_busy_fraction': busy / (wall * n_workers * threads_per_worker),
        'rates': rates,
        'workers': {addr: {**warm.get(addr, {}), **state.get(addr, {})}
                    for addr in sorted(set(warm) | set(state))},
        'checks': checks, 'problems': problems,
    }
    log(f'{label}: {wall:.1f} s, {rates["files_per_s"]:.3f} files/s, '
        f'{rates["hdus_per_s"]:.3f} HDUs/s, {rates["mpix_per_s"]:.3f} MPix/s '
        f'({rates["mpix_per_s_per_worker"]:.3f} per worker), '
        f'{result.n_sources} sources, busy {record["worker_busy_fraction"]:.0%}'
        + ('' if not problems else f'; PROBLEMS: {problems}'))
    if not args.keep_outputs:
        shutil.rmtree(out, ignore_errors=True)
    return record, per_image


# -- survey arithmetic ------------------------------------------------------------

def survey_needs(rate_per_worker, cores_per_node):
    """Resources for one night of SURVEY at ``rate_per_worker`` MPix/s."""
    ny, nx = SURVEY['ccd_shape']
    mpix = SURVEY['exposures'] * SURVEY['ccds'] * ny * nx / 1e6
    hours = mpix / rate_per_worker / 3600
    workers = hours / SURVEY['night_hours']
    return {'night_megapixels': mpix,
            'rate_mpix_per_s_per_worker': rate_per_worker,
            'worker_hours_per_night': hours,
            'workers_to_keep_up': workers,
            'workers_to_keep_up_rounded': math.ceil(workers),
            'cores_per_node': cores_per_node,
            'nodes_to_keep_up': math.ceil(workers / cores_per_node)
            if cores_per_node else None}


# -- main --------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Files/s and MPix/s of astro_deepcolor.batch with 1, 2, '
                    '... local Dask workers (and one GPU worker).',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--n-files', type=int, default=6,
                   help='simulated multi-extension exposures')
    p.add_argument('--n-hdus', type=int, default=4,
                   help='image HDUs (CCDs) per exposure')
    p.add_argument('--shape', type=int, nargs=2, default=[1024, 2048],
                   metavar=('NY', 'NX'), help='CCD image shape')
    p.add_argument('--regime', default='contaminated',
                   choices=['clean', 'contaminated'])
    p.add_argument('--density', type=float, default=1.0,
                   help='source density multiplier of the simulation')
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--workers', type=int, nargs='+', default=[1, 2],
                   help='local CPU worker counts to time')
    p.add_argument('--gpu', action='store_true',
                   help="also time one worker with device='cuda'")
    p.add_argument('--gpu-threads', type=int, nargs='+', default=[2, 4, 8],
                   help='threads of the GPU worker (images in flight; each '
                        'needs a CPU core for reading, labels and catalogue); '
                        'one run per value')
    p.add_argument('--gpu-workers', type=int, default=1,
                   help='worker processes sharing the one GPU')
    p.add_argument('--gpu-batch-size', type=int, default=8,
                   help='tiles per network call on the GPU')
    p.add_argument('--model', default=None,
                   help='ONNX model (None: the shipped model)')
    p.add_argument('--threshold', type=float, default=None,
                   help="probability threshold (None: the model's default)")
    p.add_argument('--n-pixels', type=int, default=5)
    p.add_argument('--tile-size', type=int, default=None,
                   help="network tile side (None: the finder's)")
    p.add_argument('--batch-size', type=int, default=None,
                   help="tiles per network call on CPU workers (None: the "
                        "finder's)")
    p.add_argument('--cores-per-node', type=int, default=32,
                   help='cores of a CPU node in the survey arithmetic')
    p.add_argument('--cache-dir', default=str(ROOT / 'cache' / 'bench_batch'),
                   help='simulated exposures (reused) and run outputs')
    p.add_argument('--keep-outputs', action='store_true',
                   help='keep the run output directories (catalogues, '
                        'manifest) under CACHE_DIR/runs')
    p.add_argument('--out', default=str(ROOT / 'results' / 'bench'
                                        / 'batch_scaling.json'),
                   help='JSON result file')
    p.add_argument('--no-profile', action='store_true',
                   help='skip the in-process stage profile of one HDU')
    p.add_argument('--quiet', action='store_true', help='no progress bars')
    args = p.parse_args(argv)
    for name in ('n_files', 'n_hdus', 'gpu_workers', 'gpu_batch_size',
                 'n_pixels', 'cores_per_node'):
        if getattr(args, name) < 1:
            p.error(f'--{name.replace("_", "-")} must be >= 1')
    if (min(args.workers) < 1 or min(args.gpu_threads) < 1
            or min(args.shape) < 64):
        p.error('--workers and --gpu-threads >= 1, --shape >= 64')
    if args.model is not None:
        args.model = str(Path(args.model).resolve())
    return args


def main(argv=None):
    args = parse_args(argv)
    warnings.simplefilter('ignore', ResourceWarning)
    machine = machine_info()
    if machine['env']['OMP_NUM_THREADS'] != '1':
        log('note: OMP_NUM_THREADS is not 1 in the driver (the workers get 1)')
    model = model_info(args.model)
    paths, dataset = make_dataset(args)
    report = {
        'benchmark': 'batch detection scaling (astro_deepcolor.batch)',
        'date': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
        'command': ' '.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        'machine': machine, 'model': model, 'dataset': dataset,
        'settings': {'threshold': args.threshold, 'n_pixels': args.n_pixels,
                     'tile_size': args.tile_size, 'batch_size': args.batch_size,
                     'timing': 'run_s is the BatchDetector call on a warm '
                               'cluster (scan, detection, per-image '
                               'catalogues, merged catalogue, manifest); '
                               'cluster start and warm-up excluded'},
        'runs': [],
    }
    if not args.no_profile:
        prof = profile_one_hdu(paths[0], _finder(
            args, device='cpu', batch_size=args.batch_size, n_threads=1))
        report['profile_one_hdu'] = prof
        log(f'one HDU in this process: {prof["total_s"]:.2f} s '
            f'({prof["mpix_per_s"]:.3f} MPix/s), network '
            f'{prof["network_fraction"]:.0%}; the rest (read, background, '
            f'labels, catalogue) runs at {prof["not_network_mpix_per_s"]:.2f} '
            'MPix/s on one core')
    reference = None
    ok = True
    for n in sorted(set(args.workers)):
        record, per_image = run_once(
            f'cpu-{n}w', paths, args, n_workers=n, threads_per_worker=1,
            device='cpu', batch_size=args.batch_size)
        if reference is None:
            reference = per_image
        record['same_catalogue_as_first_run'] = per_image == reference
        if per_image != reference:
            record['problems'].append('per-image source counts differ from '
                                      'the first run')
        ok &= not record['problems']
        report['runs'].append(record)

    cpu = report['runs']
    base = cpu[0]
    for record in cpu:
        speedup = record['rates']['mpix_per_s'] / base['rates']['mpix_per_s']
        record['speedup'] = speedup
        record['parallel_efficiency'] = speedup / (record['n_workers']
                                                   / base['n_workers'])
    best = max(cpu, key=lambda r: r['n_workers'])
    report['scaling'] = {
        f'{r["n_workers"]}w': {'mpix_per_s': r['rates']['mpix_per_s'],
                               'speedup': r['speedup'],
                               'efficiency': r['parallel_efficiency']}
        for r in cpu}
    rate = best['rates']['mpix_per_s_per_worker']
    report['survey'] = {
        'night': {**SURVEY, 'ccd_shape': list(SURVEY['ccd_shape'])},
        'cpu': survey_needs(rate, args.cores_per_node)}
    report['survey']['cpu']['rate_from'] = (
        f'{best["label"]}: MPix/s per worker with {best["n_workers"]} '
        'workers busy')

    if args.gpu:
        usable, why = cuda_status()
        if not usable:
            log(f'--gpu: skipping the GPU worker runs: {why}')
            report['gpu'] = {'skipped': why}
        else:
            log(f'--gpu: {why}')
            gpu_runs = []
            for threads in sorted(set(args.gpu_threads)):
                record, per_image = run_once(
                    f'gpu-{args.gpu_workers}w{threads}t', paths, args,
                    n_workers=args.gpu_workers, threads_per_worker=threads,
                    device='cuda', batch_size=args.gpu_batch_size)
                record['cuda'] = why
                # GPU float rounding may move a few marginal pixels, so a
                # different catalogue is reported, not counted as a failure
                record['same_catalogue_as_first_run'] = per_image == reference
                ok &= not record['problems']
                report['runs'].append(record)
                gpu_runs.append(record)
            best_gpu = max(gpu_runs, key=lambda r: r['rates']['mpix_per_s'])
            rate = best_gpu['rates']['mpix_per_s']
            report['gpu'] = {
                'cuda': why, 'best_run': best_gpu['label'], 'mpix_per_s': rate,
                'by_threads': {r['label']: r['rates']['mpix_per_s']
                               for r in gpu_runs}}
            report['survey']['gpu'] = survey_needs(rate, None)
            report['survey']['gpu']['rate_from'] = (
                f'{best_gpu["label"]}: MPix/s of one GPU '
                f'({args.gpu_workers} worker process(es) x '
                f'{best_gpu["threads_per_worker"]} threads)')
            prof = report.get('profile_one_hdu')
            if prof:
                # the CPU part of each image (read, background, labels,
                # catalogue, write) is not accelerated by the GPU
                report['survey']['gpu']['cpu_threads_to_feed_one_gpu'] = (
                    rate / prof['not_network_mpix_per_s'])

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + '\n')

    print(f'\n{"run":<8} {"workers":>7} {"run s":>8} {"files/s":>8} '
          f'{"HDUs/s":>8} {"MPix/s":>8} {"/worker":>8} {"speed-up":>8}')
    for r in report['runs']:
        rt = r['rates']
        print(f'{r["label"]:<8} {r["n_workers"]:>7} {r["run_s"]:>8.1f} '
              f'{rt["files_per_s"]:>8.3f} {rt["hdus_per_s"]:>8.3f} '
              f'{rt["mpix_per_s"]:>8.3f} {rt["mpix_per_s_per_worker"]:>8.3f} '
              f'{r.get("speedup", float("nan")):>8.2f}')
    s = report['survey']['cpu']
    print(f'\nsurvey night ({s["night_megapixels"] / 1e3:.1f} GPix) at '
          f'{s["rate_mpix_per_s_per_worker"]:.3f} MPix/s per CPU worker: '
          f'{s["worker_hours_per_night"]:.0f} core-hours, '
          f'{s["workers_to_keep_up_rounded"]} cores '
          f'({s["nodes_to_keep_up"]} nodes of {args.cores_per_node}) to keep '
          f'up with {SURVEY["night_hours"]:g}-hour nights')
    if 'gpu' in report['survey']:
        g = report['survey']['gpu']
        print(f'at {g["rate_mpix_per_s_per_worker"]:.2f} MPix/s per GPU: '
              f'{g["worker_hours_per_night"]:.1f} GPU-hours, '
              f'{g["workers_to_keep_up_rounded"]} GPU(s) to keep up')
    print(f'results: {out}')
    if not ok:
        log('some output checks FAILED (see "problems" in the JSON)')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
