# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Sphinx configuration for astro_deepcolor (sphinx-astropy v2 defaults)."""

import importlib.util
import tomllib
from importlib import metadata
from pathlib import Path

from sphinx_astropy.conf.v2 import *  # noqa: F403

root = Path(__file__).parents[1]
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
# No network at build time here: an empty mapping means intersphinx never
# fetches an inventory (external names are written as plain text).
intersphinx_mapping = {}
nitpicky = False
suppress_warnings = ['config.cache']
