# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Training of deep-coloring networks (needs PyTorch).

Submodules: `~astro_deepcolor.training.loss` (the deep-coloring loss),
`~astro_deepcolor.training.data` (simulated crops, labels, halos),
`~astro_deepcolor.training.validation` (completeness/contamination during
training) and `~astro_deepcolor.training.train` (the loop, checkpoints,
resume). Nothing is imported here, so ``import astro_deepcolor.training``
stays cheap.
"""
