# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Dataset recipes: reproducible train/validation/test sets of simulations.

A recipe (YAML, shipped in ``astro_deepcolor/data/recipes`` and linked
from the repository's ``datasets/``) fixes the regime, image shape, the
presets and density range, and for each split a ``seed_start`` and a
number of images. Image ``i`` of a split is ``simulate_image`` with seed
``seed_start + i``; its preset and density are drawn from an independent
stream of the same seed, so any image can be regenerated on its own, on
any machine, without the others.

Generated files go to a cache directory (``$ASTRO_DEEPCOLOR_CACHE`` or
``~/.cache/astro_deepcolor``), never into the repository.
"""

import dataclasses
import math
import os
from concurrent.futures import ProcessPoolExecutor
from importlib import resources
from pathlib import Path

import numpy as np
import yaml
from astropy.io import fits

from astro_deepcolor.utils._io import atomic_path
from astro_deepcolor.utils._parameters import check_choice, check_positive_int

from .image import REGIMES, simulate_image
from .presets import PRESETS

__all__ = [
    'Recipe',
    'cache_dir',
    'generate_dataset',
    'iter_recipe_images',
    'load_recipe',
    'read_simulation',
    'recipe_image',
    'write_simulation',
]

SPLITS = ('train', 'validation', 'test')


def cache_dir():
    """
    Directory for generated data (``$ASTRO_DEEPCOLOR_CACHE`` or
    ``~/.cache/astro_deepcolor``).

    Returns
    -------
    path : `~pathlib.Path`
        The directory (not created).
    """
    env = os.environ.get('ASTRO_DEEPCOLOR_CACHE')
    return Path(env) if env else Path.home() / '.cache' / 'astro_deepcolor'


@dataclasses.dataclass(frozen=True)
class Recipe:
    """
    A dataset recipe (see the module docstring).

    Parameters
    ----------
    name : str
        Recipe name.
    regime : {'clean', 'contaminated'}
        Simulation regime.
    shape : tuple of 2 int
        Image shape.
    presets : tuple of str
        Survey presets drawn uniformly per image.
    density : tuple of 2 float
        Log-uniform range of the density multiplier.
    splits : dict
        ``{split: (seed_start, n_images)}``.
    description : str
        One-paragraph description.
    """

    name: str
    regime: str
    shape: tuple
    presets: tuple
    density: tuple
    splits: dict
    description: str = ''

    def n_images(self, split):
        """Number of images in ``split``."""
        return self.splits[check_choice(split, 'split', SPLITS)][1]

    def seeds(self, split):
        """Seeds of the images of ``split``."""
        start, n = self.splits[check_choice(split, 'split', SPLITS)]
        return range(start, start + n)

    def image_params(self, seed):
        """
        Preset and density of the image with ``seed``.

        Parameters
        ----------
        seed : int
            Image seed.

        Returns
        -------
        params : dict
            Keyword arguments of `simulate_image` (without the seed).
        """
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 7])))
        preset = self.presets[int(rng.integers(len(self.presets)))]
        lo, hi = self.density
        density = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        return {'shape': self.shape, 'regime': self.regime, 'preset': preset, 'density': density}


def load_recipe(recipe):
    """
    Load a dataset recipe by name or from a YAML file.

    Parameters
    ----------
    recipe : str, `~pathlib.Path` or `Recipe`
        ``'clean'``, ``'contaminated'``, a path to a YAML file, or a
        recipe (returned unchanged).

    Returns
    -------
    recipe : `Recipe`
        The recipe.
    """
    if isinstance(recipe, Recipe):
        return recipe
    path = Path(recipe)
    if not path.is_file():
        ref = resources.files('astro_deepcolor') / 'data' / 'recipes' / f'{recipe}.yaml'
        if not ref.is_file():
            names = sorted(p.name.removesuffix('.yaml') for p in
                           (resources.files('astro_deepcolor') / 'data' / 'recipes').iterdir())
            msg = (f'recipe must be one of {names} or a YAML file path; '
                   f'got {str(recipe)!r}')
            raise ValueError(msg)
        text = ref.read_text()
    else:
        text = path.read_text()
    try:
        d = yaml.safe_load(text)
        splits = {k: (int(v['seed_start']), int(v['n_images']))
                  for k, v in d['splits'].items()}
        rec = Recipe(name=str(d['name']), regime=d['regime'], shape=tuple(d['shape']),
                     presets=tuple(d['presets']), density=tuple(d['density']),
                     splits=splits, description=str(d.get('description', '')))
    except (KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
        msg = f'recipe {str(recipe)!r} is not a valid recipe: {exc!r}'
        raise ValueError(msg) from None
    check_choice(rec.regime, 'regime', REGIMES)
    for p in rec.presets:
        check_choice(p, 'preset', tuple(PRESETS))
    for s in rec.splits:
        check_choice(s, 'split', SPLITS)
    return rec


def recipe_image(recipe, seed, **kwargs):
    """
    Simulate the image of a recipe with a given seed.

    Parameters
    ----------
    recipe : str or `Recipe`
        The recipe.
    seed : int
        Image seed.
    **kwargs
        Further `simulate_image` options (e.g. ``blend_groups`` for
        training images).

    Returns
    -------
    sim : `~astro_deepcolor.simulation.SimulatedImage`
        The simulation.
    """
    recipe = load_recipe(recipe)
    return simulate_image(seed=seed, **recipe.image_params(seed), **kwargs)


def iter_recipe_images(recipe, split, *, n_images=None, start=0):
    """
    Yield the simulated images of a recipe split, in seed order.

    Parameters
    ----------
    recipe : str or `Recipe`
        The recipe.
    split : {'train', 'validation', 'test'}
        The split.
    n_images : int, optional
        How many (default: the whole split, from ``start``).
    start : int, optional
        Index of the first image.

    Yields
    ------
    sim : `~astro_deepcolor.simulation.SimulatedImage`
        The simulations.
    """
    recipe = load_recipe(recipe)
    seeds = recipe.seeds(split)[start:]
    if n_images is not None:
        seeds = seeds[:check_positive_int(n_images, 'n_images', minimum=0)]
    for seed in seeds:
        yield recipe_image(recipe, seed)


def write_simulation(sim, path, *, overwrite=False):
    """
    Write a simulation to a multi-extension FITS file, atomically.

    HDUs: primary = ``data`` (header: seed, regime, preset, FWHM, noise),
    ``NOISELESS``, ``BACKGROUND``, ``RMS``, ``SEGMENTATION`` (int32 truth
    footprints), ``CONTAMINANTS`` (uint16 bitmask) and ``TRUTH`` (binary
    table).

    Parameters
    ----------
    sim : `~astro_deepcolor.simulation.SimulatedImage`
        The simulation.
    path : str or `~pathlib.Path`
        Output file.
    overwrite : bool, optional
        Replace an existing file.
    """
    hdr = fits.Header()
    for key, value in sim.meta.items():
        hdr[f'HIERARCH SIM {key.upper()}'] = value
    hdr['BUNIT'] = 'adu'
    truth = sim.truth.copy()
    truth.meta.clear()  # already in the primary header
    truth['kind'] = truth['kind'].astype('U6')
    truth['morphology'] = truth['morphology'].astype('U10')
    hdus = fits.HDUList([
        fits.PrimaryHDU(sim.data, header=hdr),
        fits.ImageHDU(sim.noiseless, name='NOISELESS'),
        fits.ImageHDU(sim.background, name='BACKGROUND'),
        fits.ImageHDU(sim.rms, name='RMS'),
        fits.ImageHDU(sim.segmentation.data.astype(np.int32), name='SEGMENTATION'),
        fits.ImageHDU(sim.contaminants, name='CONTAMINANTS'),
        fits.table_to_hdu(truth),
    ])
    hdus[-1].name = 'TRUTH'
    with atomic_path(path, overwrite=overwrite, name='simulation') as tmp:
        hdus.writeto(tmp)


def read_simulation(path):
    """
    Read a file written by `write_simulation`.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        The file.

    Returns
    -------
    arrays : dict
        ``data``, ``noiseless``, ``background``, ``rms``,
        ``segmentation`` (`~photutils.segmentation.SegmentationImage`),
        ``contaminants``, ``truth`` (`~astropy.table.QTable`) and
        ``meta``.
    """
    from astropy.table import QTable
    from photutils.segmentation import SegmentationImage

    with fits.open(path) as hdul:
        out = {name.lower(): hdul[name].data.astype(hdul[name].data.dtype.newbyteorder('='))
               for name in ('NOISELESS', 'BACKGROUND', 'RMS', 'CONTAMINANTS')}
        out['data'] = hdul[0].data.astype(np.float32)
        seg = hdul['SEGMENTATION'].data.astype(np.int32)
        out['segmentation'] = SegmentationImage(seg) if seg.any() else None
        out['truth'] = QTable.read(hdul['TRUTH'])
        out['meta'] = {k[4:].lower(): v for k, v in hdul[0].header.items()
                       if k.startswith('SIM ')}
    return out


def _generate_one(args):
    recipe, seed, path, overwrite = args
    if Path(path).exists() and not overwrite:
        return path, False
    write_simulation(recipe_image(recipe, seed), path, overwrite=overwrite)
    return path, True


def generate_dataset(recipe, split, out_dir=None, *, n_images=None, n_jobs=None,
                     overwrite=False, progress_bar=True):
    """
    Simulate a recipe split to FITS files, in parallel, with progress.

    Existing files are kept (generation resumes) unless ``overwrite``.

    Parameters
    ----------
    recipe : str or `Recipe`
        The recipe.
    split : {'train', 'validation', 'test'}
        The split.
    out_dir : str or `~pathlib.Path`, optional
        Output directory (default: ``cache_dir() / 'datasets' / recipe /
        split``).
    n_images : int, optional
        Only the first ``n_images`` of the split.
    n_jobs : int, optional
        Worker processes (default: all cores).
    overwrite : bool, optional
        Regenerate existing files.
    progress_bar : bool, optional
        Show a tqdm progress bar.

    Returns
    -------
    paths : list of `~pathlib.Path`
        The files of the split, in seed order.
    """
    from tqdm.auto import tqdm

    recipe = load_recipe(recipe)
    seeds = list(recipe.seeds(split))
    if n_images is not None:
        seeds = seeds[:check_positive_int(n_images, 'n_images', minimum=0)]
    out_dir = Path(out_dir) if out_dir else cache_dir() / 'datasets' / recipe.name / split
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = [(recipe, s, out_dir / f'{recipe.name}_{split}_{s}.fits', overwrite)
             for s in seeds]
    n_jobs = n_jobs or os.cpu_count() or 1
    bar = tqdm(total=len(tasks), desc=f'{recipe.name}/{split}', unit='img',
               disable=not progress_bar)
    with bar:
        if n_jobs == 1:
            for t in tasks:
                _generate_one(t)
                bar.update()
        else:
            with ProcessPoolExecutor(n_jobs) as pool:
                for _ in pool.map(_generate_one, tasks, chunksize=4):
                    bar.update()
    return [t[2] for t in tasks]
