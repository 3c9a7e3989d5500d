# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Deep-coloring source detection: tiled network inference and the
photutils-style detection API.
"""

from astro_deepcolor.inference.finder import DeepColorSegmentation, detect_sources

__all__ = ['DeepColorSegmentation', 'detect_sources']
