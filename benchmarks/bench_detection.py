# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Throughput and memory of deep-coloring detection, with sep in the same run.

Throughput (default)::

    OMP_NUM_THREADS=2 python benchmarks/bench_detection.py --size 4096 \\
        --out benchmarks/results/detection_4k.json

simulates a ``size x size`` contaminated DECam-like image, then times
end to end (array in memory -> SegmentationImage) and per stage:

- preprocessing: background/rms mesh estimate + per-tile normalisation,
- network: the backend's forward passes over all tiles,
- post-processing: per-tile classification + labelling/flicker repair,
- catalogue: photutils SourceCatalog table with our background,

and sep (Background + extract with a segmentation map at 1.5 sigma) on
the same image. Results (seconds, MPix/s, device, model, tiling) go to a
JSON file.

Command line, end to end::

    OMP_NUM_THREADS=2 python benchmarks/bench_detection.py --cli --size 4096 \
        --out benchmarks/results/detection_cli_4k.json

writes the simulated image to a FITS file and times ``astro-deepcolor
detect image.fits --catalog cat.fits`` in a fresh interpreter (imports,
FITS reading, detection, catalogue, FITS writing), with its time
per stage (`astro_deepcolor.pipeline.detect_image`'s ``timings``, saved
by the run), and sep in the same run, also from the FITS file to a FITS
catalogue in a fresh interpreter (read, ``Background``, ``extract`` with a
segmentation map at 1.5 sigma, write). Wall-clock and CPU seconds and
MPix/s per stage go to the JSON file.

Memory::

    python benchmarks/bench_detection.py --memory --size 20000

runs detection on a synthetic ``size x size`` float32 mosaic (noise plus
Gaussian stars, generated in place) and reports the process peak
resident memory (``resource.getrusage``) and the peak of NumPy/Python
allocations (``tracemalloc``), in total and per input pixel.

Without the shipped model (``astro_deepcolor/data/deepcolor_default.onnx``)
an untrained network of the default architecture is exported first (needs
torch): same cost, meaningless detections; the JSON says which was used.
"""

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
from photutils.utils.exceptions import NoDetectionsWarning

from astro_deepcolor import DeepColorSegmentation
from astro_deepcolor.model.io import DEFAULT_MODEL_PATH


def _model(path):
    if path is not None:
        return Path(path), 'given'
    if DEFAULT_MODEL_PATH.exists():
        return DEFAULT_MODEL_PATH, 'shipped'
    import torch

    from astro_deepcolor.model import ModelConfig
    from astro_deepcolor.model.export import export_onnx
    from astro_deepcolor.model.unet import UNet

    torch.manual_seed(0)
    out = Path(tempfile.mkdtemp()) / 'untrained_default.onnx'
    export_onnx(UNet(ModelConfig()), out)
    return out, 'untrained default architecture'


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_name():
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _time_sep(data):
    import sep

    data = np.array(data, dtype=np.float32)  # writable, native, untimed
    bad = ~np.isfinite(data)
    mask = bad if bad.any() else None
    t0 = time.perf_counter()
    bkg = sep.Background(data, mask=mask)
    sub = data - bkg
    t1 = time.perf_counter()
    sep.set_extract_pixstack(50_000_000)
    sep.set_sub_object_limit(4096)
    objects, _ = sep.extract(sub, 1.5, err=bkg.globalrms, mask=mask,
                             segmentation_map=True)
    t2 = time.perf_counter()
    return {'background_s': t1 - t0, 'extract_s': t2 - t1,
            'total_s': t2 - t0, 'n_sources': len(objects)}


def throughput(args):
    from astro_deepcolor.simulation import simulate_image

    model, model_kind = _model(args.model)
    t0 = time.perf_counter()
    sim = simulate_image((args.size, args.size), regime='contaminated',
                         seed=args.seed)
    t_sim = time.perf_counter() - t0
    data = sim.data
    npix = data.size / 1e6
    finder = DeepColorSegmentation(threshold=0.5, n_pixels=5, model=model,
                                   tile_shape=args.tile,
                                   batch_size=args.batch, flips=args.flips)
    # Warm up the session (first-run allocations) on a small cut.
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', NoDetectionsWarning)
        finder(data[:256, :256])

    runs = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        segm = finder(data)
        t_total = time.perf_counter() - t0
        tm = segm.info['timings']
        bkg0 = time.perf_counter()
        background, _ = finder.estimate_background(data)
        t_bkg_only = time.perf_counter() - bkg0
        c0 = time.perf_counter()
        table = finder.catalog(data, segm, background=background)
        t_cat = time.perf_counter() - c0
        runs.append({
            'end_to_end_s': t_total,
            'preprocessing_s': tm['background'] + tm['normalize'],
            'background_s': tm['background'],
            'normalize_s': tm['normalize'],
            'network_s': tm['network'],
            'postprocessing_s': tm['classify'] + tm['label'],
            'catalog_s': t_cat,
            'background_again_s': t_bkg_only,
            'n_sources': int(segm.n_labels),
            'n_catalog_rows': len(table),
            'n_tiles': tm['n_tiles'],
            'tile_efficiency': tm['tile_efficiency'],
        })
    best = min(runs, key=lambda r: r['end_to_end_s'])
    sep_runs = [_time_sep(data) for _ in range(args.repeat)]
    sep_best = min(sep_runs, key=lambda r: r['total_s'])

    def mpix(seconds):
        return npix / seconds if seconds > 0 else float('inf')

    result = {
        'benchmark': 'detection throughput',
        'image': {'shape': list(data.shape), 'megapixels': npix,
                  'simulated': 'contaminated', 'seed': args.seed,
                  'n_truth': len(sim.truth), 'simulate_s': t_sim},
        'device': {'cpu': _cpu_name(), 'cores': len(os.sched_getaffinity(0)),
                   'backend': finder.backend_description,
                   'python': platform.python_version()},
        'model': {'path': str(model), 'kind': model_kind,
                  'n_colors': finder.config.n_colors,
                  'depth': finder.config.depth, 'width': finder.config.width,
                  'gflop_per_megapixel': finder.config.gflop_per_megapixel},
        'tiling': {'tile_shape': list(finder.tile_shape),
                   'overlap': finder.overlap, 'batch_size': finder.batch_size},
        'flips': finder.flips,
        'deepcolor': best,
        'deepcolor_mpix_per_s': {
            'end_to_end': mpix(best['end_to_end_s']),
            'preprocessing': mpix(best['preprocessing_s']),
            'network': mpix(best['network_s']),
            'postprocessing': mpix(best['postprocessing_s']),
            'catalog': mpix(best['catalog_s']),
            'end_to_end_with_catalog': mpix(best['end_to_end_s']
                                            + best['catalog_s']),
        },
        'sep': sep_best,
        'sep_mpix_per_s': {'end_to_end': mpix(sep_best['total_s'])},
        'peak_rss_mb': _peak_rss_mb(),
        'all_runs': runs,
    }
    return result


_SEP_SCRIPT = """
import sys, time
t0 = time.perf_counter()
import numpy as np, sep
from astropy.io import fits
from astropy.table import Table
t1 = time.perf_counter()
data = np.asarray(fits.getdata(sys.argv[1]), dtype=np.float32)
t2 = time.perf_counter()
bkg = sep.Background(data)
sub = data - bkg
t3 = time.perf_counter()
sep.set_extract_pixstack(50_000_000)
sep.set_sub_object_limit(4096)
objects, segmap = sep.extract(sub, 1.5, err=bkg.globalrms,
                              segmentation_map=True)
flux, fluxerr, _ = sep.sum_circle(sub, objects['x'], objects['y'], 3.0,
                                  err=bkg.globalrms)
t4 = time.perf_counter()
table = Table(objects)
table['flux_aper'] = flux
table['flux_aper_err'] = fluxerr
table.write(sys.argv[2], overwrite=True)
t5 = time.perf_counter()
print({'import_s': t1 - t0, 'read_s': t2 - t1, 'background_s': t3 - t2,
       'extract_and_photometry_s': t4 - t3, 'write_s': t5 - t4,
       'n_sources': len(objects)})
"""


def _timed_subprocess(cmd):
    """Wall and CPU (children) seconds of a command, and its stdout."""
    import subprocess

    before = os.times()
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    wall = time.perf_counter() - t0
    after = os.times()
    cpu = ((after.children_user - before.children_user)
           + (after.children_system - before.children_system))
    return wall, cpu, out.stdout


def cli(args):
    """The command line end to end against sep, from the same FITS file."""
    import ast

    from astropy.io import fits

    from astro_deepcolor.simulation import simulate_image

    model, model_kind = _model(args.model)
    tmp = Path(tempfile.mkdtemp())
    image = tmp / 'ccd.fits'
    if args.image:
        image = Path(args.image)
    else:
        sim = simulate_image((args.size, args.size), regime='contaminated',
                             seed=args.seed)
        fits.PrimaryHDU(np.asarray(sim.data, dtype=np.float32)).writeto(image)
    npix = fits.getdata(image).size / 1e6
    # The real command in a fresh interpreter; the catalogue writer is
    # wrapped to save detect_image's stage timings next to the catalogue.
    runner = (
        'import json, sys, time; t0 = time.perf_counter()\n'
        'import astro_deepcolor.pipeline as p\n'
        'from astro_deepcolor.cli import main\n'
        'write = p.write_catalog\n'
        'def timed(table, path, **kw):\n'
        '    t = dict(table.meta["timings"]); t1 = time.perf_counter()\n'
        '    write(table, path, **kw)\n'
        '    t["write"] = time.perf_counter() - t1\n'
        '    t["n_sources"] = len(table)\n'
        '    json.dump(t, open(str(path) + ".json", "w"))\n'
        'p.write_catalog = timed\n'
        'sys.exit(main())\n')
    catalog = tmp / 'cat.fits'
    cmd = [sys.executable, '-c', runner, 'detect', str(image), '--catalog',
           str(catalog), '--model', str(model), '--overwrite', '--quiet']
    ours = []
    for _ in range(args.repeat):
        wall, cpu, _ = _timed_subprocess(cmd)
        tm = json.loads(Path(f'{catalog}.json').read_text())
        ours.append((wall, cpu, tm))
    sep_runs = [_timed_subprocess([sys.executable, '-c', _SEP_SCRIPT, str(image),
                                   str(tmp / 'sep.fits')])
                for _ in range(args.repeat)]
    wall, cpu, tm = min(ours, key=lambda r: r[0])
    sep_wall, sep_cpu, sep_out = min(sep_runs)
    sep_stages = ast.literal_eval(sep_out.strip().splitlines()[-1])
    stages = {'validate_and_background_s': tm['inputs_and_background'],
              'normalize_s': tm.get('detect_normalize', 0.0),
              'network_s': tm.get('detect_network', 0.0),
              'classify_and_label_s': (tm.get('detect_classify', 0.0)
                                       + tm.get('detect_label', 0.0)),
              'catalog_s': tm['catalog'], 'write_s': tm['write']}
    stages['imports_read_and_rest_s'] = wall - sum(stages.values())

    def mpix(seconds):
        return npix / seconds if seconds > 0 else float('inf')

    return {
        'benchmark': 'command line end to end against sep',
        'image': {'path': str(image), 'megapixels': npix},
        'device': {'cpu': _cpu_name(), 'cores': len(os.sched_getaffinity(0)),
                   'omp_num_threads': os.environ.get('OMP_NUM_THREADS'),
                   'load_average_at_end': list(os.getloadavg()),
                   'backend': 'onnxruntime on cpu (the CLI default here)'},
        'model': {'path': str(model), 'kind': model_kind},
        'command': 'astro-deepcolor ' + ' '.join(cmd[3:]),
        'deepcolor_cli': {'wall_s': wall, 'cpu_s': cpu,
                          'mpix_per_s': mpix(wall),
                          'n_sources': tm['n_sources']},
        'sep_cli': {'wall_s': sep_wall, 'cpu_s': sep_cpu,
                    'mpix_per_s': mpix(sep_wall), **sep_stages},
        'ratio_wall': wall / sep_wall, 'ratio_cpu': cpu / sep_cpu,
        'deepcolor_stages_s': stages,
        'deepcolor_stages_mpix_per_s': {k.removesuffix('_s'): mpix(v)
                                        for k, v in stages.items()},
    }


def _synthetic_mosaic(size, seed):
    """Noise + Gaussian stars, float32, built in place (no big temporaries)."""
    rng = np.random.default_rng(seed)
    data = np.empty((size, size), dtype=np.float32)
    rows = 2048
    for y0 in range(0, size, rows):
        block = data[y0:y0 + rows]
        block[...] = rng.standard_normal(block.shape, dtype=np.float32)
        block *= 10
        block += 1000
    n_stars = size * size // 2000
    ys = rng.integers(8, size - 8, n_stars)
    xs = rng.integers(8, size - 8, n_stars)
    amp = (10 ** rng.uniform(1.5, 4, n_stars)).astype(np.float32)
    yy, xx = np.mgrid[-7:8, -7:8]
    psf = np.exp(-(yy ** 2 + xx ** 2) / (2 * 1.5 ** 2)).astype(np.float32)
    for y, x, a in zip(ys, xs, amp, strict=True):
        data[y - 7:y + 8, x - 7:x + 8] += a * psf
    return data


def memory(args):
    model, model_kind = _model(args.model)
    t0 = time.perf_counter()
    data = _synthetic_mosaic(args.size, args.seed)
    t_gen = time.perf_counter() - t0
    rss_before = _peak_rss_mb()
    finder = DeepColorSegmentation(model=model, tile_shape=args.tile,
                                   batch_size=args.batch,
                                   progress_bar=args.progress)
    tracemalloc.start()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', NoDetectionsWarning)
        segm = finder(data)
    t_det = time.perf_counter() - t0
    _, peak_traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak_rss = _peak_rss_mb()
    npix = data.size
    return {
        'benchmark': 'detection memory',
        'image': {'shape': list(data.shape), 'megapixels': npix / 1e6,
                  'input_mb': data.nbytes / 2**20, 'synthetic': True,
                  'generate_s': t_gen},
        'device': {'cpu': _cpu_name(), 'cores': len(os.sched_getaffinity(0)),
                   'backend': finder.backend_description},
        'model': {'path': str(model), 'kind': model_kind},
        'tiling': {'tile_shape': list(finder.tile_shape),
                   'overlap': finder.overlap, 'batch_size': finder.batch_size},
        'detection_s': t_det,
        'mpix_per_s': npix / 1e6 / t_det,
        'n_sources': 0 if segm is None else int(segm.n_labels),
        'timings': None if segm is None else segm.info['timings'],
        'peak_rss_before_detection_mb': rss_before,
        'peak_rss_mb': peak_rss,
        'peak_traced_alloc_mb': peak_traced / 2**20,
        'peak_traced_bytes_per_pixel': peak_traced / npix,
        'full_probability_cube_mb': 4 * finder.config.n_outputs * npix / 2**20,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--size', type=int, default=4096)
    parser.add_argument('--model', default=None)
    parser.add_argument('--tile', type=int, default=1024)
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--repeat', type=int, default=1)
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--memory', action='store_true',
                        help='peak-memory run on a synthetic mosaic')
    parser.add_argument('--progress', action='store_true')
    parser.add_argument('--flips', action='store_true',
                        help='detect with flips=True (four network passes)')
    parser.add_argument('--cli', action='store_true',
                        help='the command line end to end against sep')
    parser.add_argument('--image', default=None,
                        help='with --cli: a FITS image instead of a '
                             'simulated one')
    parser.add_argument('--out', default=None, help='JSON output file')
    args = parser.parse_args(argv)
    mode = cli if args.cli else memory if args.memory else throughput
    result = mode(args)
    text = json.dumps(result, indent=2, default=float)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + '\n')
    return 0


def test_detection_throughput_1k(benchmark):
    """pytest-benchmark entry: end-to-end detection of a 1k x 1k image."""
    import pytest

    pytest.importorskip('sep')
    if not DEFAULT_MODEL_PATH.exists():
        pytest.skip('the shipped model is not available')
    from astro_deepcolor.simulation import simulate_image

    sim = simulate_image((1024, 1024), regime='contaminated', seed=2)
    finder = DeepColorSegmentation()
    segm = benchmark(finder, sim.data)
    assert segm is not None


if __name__ == '__main__':
    sys.exit(main())
