# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Simulation of survey images with exact per-source truth.

`simulate_image` renders stars (Moffat core, aureole, diffraction
spikes) and galaxies (Sersic, bulge + disk, disks, edge-on, clumpy
irregulars) from realistic number counts, adds sky, noise and, in the
``'contaminated'`` regime, the contaminants that make classical detectors
fail. Dataset recipes (`load_recipe`, `iter_recipe_images`,
`generate_dataset`) drive training and benchmarks.
"""

from .contaminants import CONTAMINANT_FLAGS, CONTAMINATED_MIX, decode_contaminants
from .image import REGIMES, SimulatedImage, halo_pairs, simulate_image
from .presets import PRESETS, SurveyPreset, get_preset

__all__ = [
    'CONTAMINANT_FLAGS',
    'CONTAMINATED_MIX',
    'PRESETS',
    'REGIMES',
    'SimulatedImage',
    'SurveyPreset',
    'decode_contaminants',
    'get_preset',
    'halo_pairs',
    'simulate_image',
]
from .recipes import (
    Recipe,
    cache_dir,
    generate_dataset,
    iter_recipe_images,
    load_recipe,
    read_simulation,
    recipe_image,
    write_simulation,
)

__all__ += [
    'Recipe',
    'cache_dir',
    'generate_dataset',
    'iter_recipe_images',
    'load_recipe',
    'read_simulation',
    'recipe_image',
    'write_simulation',
]
