# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Sphinx configuration for astro_deepcolor (sphinx-astropy v3 defaults)."""

import tomllib
from importlib import metadata
from pathlib import Path

from sphinx_astropy.conf.v2 import *  # noqa: F403

root = Path(__file__).parents[1]
with (root / 'pyproject.toml').open('rb') as f:
    project_meta = tomllib.load(f)['project']

project = 'astro_deepcolor'
author = 'astro_deepcolor developers'
copyright = f'2026, {author}'  # noqa: A001
release = metadata.version('astro-deepcolor')
version = release.split('+')[0]

extensions += ['sphinx.ext.mathjax']  # noqa: F405
exclude_patterns = ['_build', '**.ipynb_checkpoints']
html_static_path = ['_static']
html_title = f'{project} v{release}'
intersphinx_mapping = {}  # no network at build time here
nitpicky = False
suppress_warnings = ['config.cache']
