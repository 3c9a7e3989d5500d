# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
astro_deepcolor: astronomical source detection and deblending with
deep-coloring convolutional neural networks.

The top-level namespace exposes the photutils-style detection API::

    from astro_deepcolor import DeepColorSegmentation, detect_sources

Importing the package never imports PyTorch: simulation and inference run
on NumPy, SciPy, astropy, photutils and onnxruntime alone.
"""

from importlib import import_module

__version__ = '0.1.0.dev0'

__all__ = ['DeepColorSegmentation', '__version__', 'detect_sources']

_LAZY = {
    'DeepColorSegmentation': 'astro_deepcolor.inference',
    'detect_sources': 'astro_deepcolor.inference',
}


def __getattr__(name):
    # PEP 562: keep ``import astro_deepcolor`` light (no onnxruntime session,
    # no photutils import) until the detection API is actually used.
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    msg = f'module {__name__!r} has no attribute {name!r}'
    raise AttributeError(msg)


def __dir__():
    return sorted(__all__)
