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
