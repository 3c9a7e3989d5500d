# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Deep-coloring models: configuration, model files and (with torch) the
network itself.

``astro_deepcolor.model`` never imports torch: `ModelConfig` and
`load_model` work with onnxruntime alone. The PyTorch network lives in
``astro_deepcolor.model.unet`` and the exporter in
``astro_deepcolor.model.export``.
"""

from .config import *  # noqa: F403
from .io import *  # noqa: F403
