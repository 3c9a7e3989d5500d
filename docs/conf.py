# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Sphinx configuration for astro_deepcolor (sphinx-astropy v2 defaults)."""

import importlib.util
import os
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from sphinx_astropy.conf.v2 import *  # noqa: F403

root = Path(__file__).parents[1]
# Document the package of this source tree, not another installed copy.
sys.path.insert(0, str(root))
with (root / 'pyproject.toml').open('rb') as f:
    project_meta = tomllib.load(f)['project']

project = 'astro_deepcolor'
author = 'astro_deepcolor developers'
copyright = f'2026, {author}'
release = metadata.version('astro-deepcolor')
version = release.split('+')[0]

extensions += ['sphinx.ext.mathjax']  # noqa: F405
# sphinx-astropy's v2 configuration lists sphinx-copybutton, which only its
# 'confv2' extra installs; drop it when absent rather than fail the build.
if importlib.util.find_spec('sphinx_copybutton') is None:
    extensions.remove('sphinx_copybutton')
exclude_patterns = ['_build', '**.ipynb_checkpoints']
html_static_path = ['_static']
html_title = f'{project} v{release}'
# Cross-references are checked: every name in the docs must resolve.
nitpicky = True
suppress_warnings = ['config.cache']

# Inventories of the packages the docs link to. Sphinx fetches them over
# the network at build time; none of these packages ships its objects.inv
# with the installed code. A local copy can be placed in
# docs/_inventories/<name>.inv (e.g. for an offline machine): it is used
# first. When neither a local copy nor the network is available, the
# references to that package's objects cannot be checked, and only those
# (the package's own names, never astro_deepcolor's) are exempted from the
# nitpicky check, with a note in the build log.
_INVENTORIES = {
    'python': 'https://docs.python.org/3/',
    'numpy': 'https://numpy.org/doc/stable/',
    'scipy': 'https://docs.scipy.org/doc/scipy/',
    'astropy': 'https://docs.astropy.org/en/stable/',
    'photutils': 'https://photutils.readthedocs.io/en/stable/',
    'matplotlib': 'https://matplotlib.org/stable/',
    'dask': 'https://docs.dask.org/en/stable/',
    'distributed': 'https://distributed.dask.org/en/stable/',
    'onnxruntime': 'https://onnxruntime.ai/docs/api/python/',
    'sep': 'https://sep.readthedocs.io/en/stable/',
}
# Python modules documented by each inventory (for the offline exemption).
_MODULES = {'python': ('pathlib', 'argparse', 'functools', 'dataclasses',
                       'os', 'typing', 'collections', 'concurrent',
                       'multiprocessing', 'warnings', 'json', 'io')}
_LOCAL = Path(__file__).parent / '_inventories'


def _online(host='docs.python.org', timeout=3.0):
    import socket

    if os.environ.get('ASTRO_DEEPCOLOR_DOCS_OFFLINE'):
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


_ONLINE = _online()
intersphinx_mapping = {}
nitpick_ignore_regex = []
_unchecked = []
for _name, _url in _INVENTORIES.items():
    _inv = _LOCAL / f'{_name}.inv'
    if _inv.is_file():
        intersphinx_mapping[_name] = (_url, str(_inv))
    elif _ONLINE:
        intersphinx_mapping[_name] = (_url, None)
    else:
        _unchecked.append(_name)
        for _mod in _MODULES.get(_name, (_name,)):
            nitpick_ignore_regex.append((r'py:.*', rf'{_mod}(\..*)?'))
if _unchecked:
    print('astro_deepcolor docs: offline and no local inventory for '
          f'{", ".join(_unchecked)}; references to their objects are not '
          'checked (set up docs/_inventories/ or build online)')
intersphinx_timeout = 10

# Figures and examples run at build time (matplotlib's plot directive).
extensions += ['matplotlib.sphinxext.plot_directive']
plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [('png', 100)]
plot_rcparams = {'savefig.bbox': 'tight'}


def _write_training_domain():
    """Training-domain table for getting_started.rst, from the presets."""
    from astro_deepcolor.domain import training_domain

    dom = training_domain()
    rows = ['.. list-table::', '   :header-rows: 1', '',
            '   * - preset', '     - pixel scale (arcsec)',
            '     - seeing FWHM (arcsec)', '     - FWHM (pixels)',
            '     - 5-sigma point-source depth (AB, median seeing)']
    for name, p in dom['presets'].items():
        rows += [f'   * - {name} ({p["band"]})',
                 f'     - {p["pixel_scale"]:.3f}',
                 '     - {:.2f} to {:.2f}'.format(*p['fwhm_arcsec']),
                 '     - {:.1f} to {:.1f}'.format(*p['fwhm_pix']),
                 f'     - {p["depth"]:.1f}']
    rows += ['   * - all (the domain)',
             '     - {:.3f} to {:.3f}'.format(*dom['pixel_scale']),
             '     - {:.2f} to {:.2f}'.format(*dom['fwhm_arcsec']),
             '     - **{:.1f} to {:.1f}**'.format(*dom['fwhm_pix']),
             '     - {:.1f} to {:.1f}'.format(*dom['depth'])]
    out = Path(__file__).parent / '_generated'
    out.mkdir(exist_ok=True)
    (out / 'training_domain.inc').write_text('\n'.join(rows) + '\n')


def _bench_result(name, inc, how):
    """``results/bench/<name>`` as a dict, or None after writing a note that
    says how to make it into ``_generated/<inc>``."""
    import json

    path = root / 'results' / 'bench' / name
    if path.is_file():
        return json.loads(path.read_text())
    (Path(__file__).parent / '_generated' / inc).write_text(
        f'(``results/bench/{name}`` not found: run {how}.)\n')
    return None


def _write_throughput():
    """CPU throughput table for detection.rst, from results/bench."""
    out = Path(__file__).parent / '_generated' / 'detection_4k.inc'
    r = _bench_result('detection_4k.json', out.name,
                      '``benchmarks/bench_detection.py``')
    if r is None:
        return
    d, rate, sep = r['deepcolor'], r['deepcolor_mpix_per_s'], r['sep']
    img, dev, model = r['image'], r['device'], r['model']
    ny, nx = img['shape']
    rows = [
        ('preprocessing (background, rms, normalisation)',
         d['preprocessing_s'], rate['preprocessing']),
        (f"network ({dev['backend']}, {d['n_tiles']} tiles)",
         d['network_s'], rate['network']),
        ('post-processing (colours, labels, flicker repair)',
         d['postprocessing_s'], rate['postprocessing']),
        ('**end to end** (array to SegmentationImage)', d['end_to_end_s'],
         rate['end_to_end']),
        (f"catalogue (photutils SourceCatalog, {d['n_catalog_rows']} rows)",
         d['catalog_s'], rate['catalog']),
        ('end to end + catalogue', d['end_to_end_s'] + d['catalog_s'],
         rate['end_to_end_with_catalog']),
        (f"sep (Background + extract, {sep['n_sources']} sources)",
         sep['total_s'], r['sep_mpix_per_s']['end_to_end']),
    ]
    lines = [f"Measured on {dev['cores']} cores of an {dev['cpu']} CPU "
             f"(Python {dev['python']}) on a simulated {ny} x {nx} "
             f"{img['simulated']} image ({img['megapixels']:.1f} MPix, "
             f"{img['n_truth']} true sources), with a model of "
             f"{model['n_colors']} colours, depth {model['depth']} and width "
             f"{model['width']} ({model['gflop_per_megapixel']:.1f} GFLOP per "
             f"megapixel), tiles of {r['tiling']['tile_shape'][0]} pixels "
             f"(tile efficiency {d['tile_efficiency']:.2f}), sep timed in the "
             f"same run. The network is {100 * d['network_s'] / d['end_to_end_s']:.0f} "
             f"% of the detection time, which is "
             f"{d['end_to_end_s'] / sep['total_s']:.1f} times sep's; the "
             f"process peaked at {r['peak_rss_mb'] / 1024:.1f} GiB resident.",
             '', '.. list-table::', '   :header-rows: 1',
             '   :widths: 60 20 20', '', '   * - stage', '     - seconds',
             '     - MPix/s']
    for name, sec, mpix in rows:
        lines += [f'   * - {name}', f'     - {sec:.2f}', f'     - {mpix:.2f}']
    out.write_text('\n'.join(lines) + '\n')


def _write_gpu_throughput():
    """GPU throughput tables for detection.rst, from results/bench/gpu.json."""
    out = Path(__file__).parent / '_generated' / 'gpu.inc'
    r = _bench_result('gpu.json', out.name,
                      '``benchmarks/bench_gpu.py`` on a CUDA machine')
    if r is None:
        return
    dev, img = r['device'], r['image']
    ny, nx = img['shape']
    lines = [f"Measured on one {dev['gpu']} with {dev['cores']} CPU cores "
             f"(Python {dev['python']}, torch {dev['torch']}).", '',
             '**The network** (``TorchBackend``, a batch of about 8 MPix of '
             'tiles per call): *host to host* is what the finder sees (copy '
             'to the GPU, network, softmax, copy of the six probability '
             'planes back); *on device* is the network and softmax alone on '
             'data already there, with ``channels_last`` and cuDNN autotuning.',
             '', '.. list-table::', '   :header-rows: 1', '',
             '   * - precision', '     - tile', '     - tiles per call',
             '     - host to host (MPix/s)', '     - on device (MPix/s)']
    for n in r['network']:
        lines += [f"   * - {n['precision']}", f"     - {n['tile']}",
                  f"     - {n['batch']}",
                  f"     - {n['host_to_host_mpix_per_s']:.0f}",
                  f"     - {n['on_device_channels_last_mpix_per_s']:.0f}"]
    stages = ('background', 'normalize', 'network', 'classify', 'label')
    lines += ['', f"**End to end** (``DeepColorSegmentation``, array to "
              f"``SegmentationImage``) on a simulated {ny} x {nx} "
              f"{img['simulated']} image, best of two runs, tiles of 2048 "
              'pixels in batches of 4 (onnxruntime: 1024, one at a time), '
              'seconds per stage:', '',
              '.. list-table::', '   :header-rows: 1', '',
              '   * - backend', '     - flips', '     - MPix/s',
              '     - seconds'] + [f'     - {s}' for s in stages] + [
              '     - sources']
    for e in r['end_to_end']:
        lines += [f"   * - {e['backend']}", f"     - {e['flips']}",
                  f"     - **{e['end_to_end_mpix_per_s']:.2f}**",
                  f"     - {e['end_to_end_s']:.2f}"]
        lines += [f"     - {e['stages_s'][s]:.2f}" for s in stages]
        lines += [f"     - {e['n_sources']}"]
    lines += ['', 'Sources of float32 on the GPU matched (footprint IoU >= '
              '0.5) by the other runs: ' + ', '.join(
                  f"{name} {100 * a['fraction_matched_iou_0.5']:.2f} % "
                  f"({a['n_other']} vs {a['n_reference']} sources)"
                  for name, a in r['agreement_with_float32'].items()) + '.']
    out.write_text('\n'.join(lines) + '\n')


def _write_real_images():
    """Counts on the real images for detection.rst, from results/real."""
    path = root / 'results' / 'real' / 'real_images.ecsv'
    out = Path(__file__).parent / '_generated' / 'real_images.inc'
    if not path.is_file():
        out.write_text('(``results/real/real_images.ecsv`` not found: run '
                       '``benchmarks/plot_real_images.py``.)\n')
        return
    from astropy.table import QTable

    tab = QTable.read(path)

    def cell(row, name):
        if name not in tab.colnames:
            return '--'
        v = row[name]
        text = str(v).strip()
        return '--' if text in ('', '--', 'nan') or getattr(v, 'mask', False) \
            else text

    meta = tab.meta
    lines = [f"CNN at probability {meta.get('cnn_threshold', '?')}, sep at "
             f"{meta.get('sep_threshold_sigma', '?')} sigma "
             f"(model: {meta.get('model', '?')}). Recovered: reference "
             'positions within 2 px; on DQ: detections on flagged pixels '
             '(masked run, unmasked in brackets); on streak: within 5 px of '
             'the satellite trail.', '',
             '.. list-table::', '   :header-rows: 1', '',
             '   * - image', '     - detections CNN / sep',
             '     - recovered CNN / sep of reference',
             '     - on DQ CNN / sep', '     - on streak CNN / sep']
    for r in tab:
        rec = '--'
        if cell(r, 'n_ref') != '--':
            rec = (f"{cell(r, 'n_cnn_recovered')} / "
                   f"{cell(r, 'n_sep_recovered')} of {cell(r, 'n_ref')} "
                   f"({cell(r, 'reference')})")
        dq = '--'
        if cell(r, 'n_cnn_on_dq') != '--':
            dq = (f"{cell(r, 'n_cnn_on_dq')} / {cell(r, 'n_sep_on_dq')} "
                  f"({cell(r, 'n_cnn_on_dq_unmasked')} / "
                  f"{cell(r, 'n_sep_on_dq_unmasked')})")
        streak = '--'
        if cell(r, 'n_cnn_on_streak') != '--':
            streak = (f"{cell(r, 'n_cnn_on_streak')} / "
                      f"{cell(r, 'n_sep_on_streak')}")
        name = str(r['image']).replace('_', r'\_')
        lines += [f'   * - {name}',
                  f"     - {cell(r, 'n_cnn')} / {cell(r, 'n_sep')}",
                  f'     - {rec}', f'     - {dq}', f'     - {streak}']
    out.write_text('\n'.join(lines) + '\n')


_write_training_domain()
_write_throughput()
_write_gpu_throughput()
_write_real_images()
exclude_patterns += ['_generated']
