# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Inputs of a batch run: expand paths, globs and list files; find image HDUs.

A survey run names its inputs the way a shell user would: FITS files,
directories, glob patterns (``'night1/*.fits.fz'``) and list files (a text
file with one path per line, given as ``@list.txt`` or with a ``.txt``,
``.lst`` or ``.list`` suffix). `expand_inputs` turns them into one ordered,
de-duplicated list of absolute paths, and `scan_image_hdus` lists the HDUs
of one file that hold a 2D image (a DECam exposure has ~60 of them; its
primary HDU holds only a header).
"""

import glob
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ['FITS_SUFFIXES', 'ImageHDU', 'expand_inputs', 'output_stems',
           'read_image_hdu', 'scan_image_hdus']

#: File name endings recognised as FITS when a directory is expanded.
FITS_SUFFIXES = ('.fits', '.fit', '.fts', '.fits.gz', '.fit.gz', '.fits.fz',
                 '.fits.bz2')

_LIST_SUFFIXES = ('.txt', '.lst', '.list')
_GLOB_CHARS = frozenset('*?[')


def _is_fits_name(path):
    name = str(path).lower()
    return name.endswith(FITS_SUFFIXES)


def _read_list_file(path):
    path = Path(path)
    if not path.is_file():
        msg = f'list file {str(path)!r} does not exist'
        raise FileNotFoundError(msg)
    entries = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        entry = Path(os.path.expandvars(os.path.expanduser(line)))
        if not entry.is_absolute():
            # paths in a list file are relative to the list file
            entry = path.parent / entry
        entries.append(str(entry))
    return entries


def expand_inputs(inputs):
    """
    Expand files, directories, glob patterns and list files into paths.

    Parameters
    ----------
    inputs : str, `~pathlib.Path` or iterable of them
        Each item is one of:

        * a FITS file (any name; a missing file is kept so that the run
          records it as failed rather than silently dropping it);
        * a directory: its FITS files (see ``FITS_SUFFIXES``), not recursive;
        * a glob pattern (``*``, ``?``, ``[``; ``**`` recurses);
        * a list file: ``@name`` or a name ending in ``.txt``, ``.lst`` or
          ``.list``, holding one entry per line (blank lines and ``#``
          comments ignored, relative paths taken from the list file's
          directory). Entries may themselves be globs or directories.

    Returns
    -------
    paths : list of str
        Absolute, normalised paths in input order (glob and directory
        matches sorted), each once.

    Raises
    ------
    ValueError
        If ``inputs`` is empty, or a glob pattern or directory matches no
        FITS file (almost always a typo worth stopping for).
    FileNotFoundError
        If a list file does not exist.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = [os.fspath(item) for item in inputs]
    if not inputs:
        msg = 'inputs must name at least one file, directory, glob or list file'
        raise ValueError(msg)

    seen = set()
    paths = []

    def add(path):
        path = os.path.abspath(os.path.expanduser(path))
        if path not in seen:
            seen.add(path)
            paths.append(path)

    def expand(item, depth=0):
        if item.startswith('@') or (item.lower().endswith(_LIST_SUFFIXES)
                                    and not os.path.isdir(item)):
            if depth > 4:
                msg = f'list files nested too deeply at {item!r}'
                raise ValueError(msg)
            for entry in _read_list_file(item.removeprefix('@')):
                expand(entry, depth + 1)
        elif os.path.isdir(item):
            found = sorted(str(p) for p in Path(item).iterdir()
                           if p.is_file() and _is_fits_name(p))
            if not found:
                names = ', '.join(FITS_SUFFIXES)
                msg = f'directory {item!r} holds no FITS file ({names})'
                raise ValueError(msg)
            for path in found:
                add(path)
        elif _GLOB_CHARS & set(item) and not os.path.exists(item):
            found = sorted(p for p in glob.glob(item, recursive=True)
                           if os.path.isfile(p))
            if not found:
                msg = f'glob pattern {item!r} matches no file'
                raise ValueError(msg)
            for path in found:
                add(path)
        else:
            add(item)

    for item in inputs:
        expand(item)
    return paths


def output_stems(paths):
    """
    Short, unique and stable output names for a list of input files.

    The name is the file name without its FITS suffix (``c4d_190101.fits.fz``
    gives ``c4d_190101``). Where two inputs in different directories share a
    name, both get ``-`` plus the first 8 hex digits of the SHA-1 of their
    absolute directory, so that outputs never overwrite each other.

    Parameters
    ----------
    paths : list of str
        Absolute input paths, as returned by `expand_inputs`.

    Returns
    -------
    stems : dict
        Path -> stem.
    """
    def strip(name):
        lower = name.lower()
        for suffix in sorted(FITS_SUFFIXES, key=len, reverse=True):
            if lower.endswith(suffix):
                return name[:-len(suffix)]
        return os.path.splitext(name)[0] or name

    base = {p: strip(os.path.basename(p)) for p in paths}
    counts = {}
    for stem in base.values():
        counts[stem] = counts.get(stem, 0) + 1
    stems = {}
    for path, stem in base.items():
        if counts[stem] > 1:
            digest = hashlib.sha1(os.path.dirname(path).encode()).hexdigest()[:8]
            stem = f'{stem}-{digest}'
        stems[path] = stem
    return stems


@dataclass(frozen=True)
class ImageHDU:
    """
    One HDU of one file, as found by `scan_image_hdus`.

    Attributes
    ----------
    path : str
        The file.
    index : int
        The HDU index in the file (0 = primary).
    extname : str
        ``EXTNAME`` (``''`` when absent).
    shape : tuple of int
        The data shape ``(ny, nx)``; ``()`` when the HDU holds no image.
    error : str
        ``''`` for an image HDU, else why it is not processed.
    """

    path: str
    index: int
    extname: str
    shape: tuple
    error: str = ''

    @property
    def is_image(self):
        """Whether the HDU holds a 2D image that will be processed."""
        return not self.error


def _hdu_shape(header):
    naxis = int(header.get('NAXIS', 0))
    if header.get('ZIMAGE', False):
        naxis = int(header.get('ZNAXIS', 0))
        return tuple(int(header.get(f'ZNAXIS{i}', 0))
                     for i in range(naxis, 0, -1))
    return tuple(int(header.get(f'NAXIS{i}', 0)) for i in range(naxis, 0, -1))


#: Image HDUs of a simulation file (`~astro_deepcolor.simulation.write_simulation`)
#: that hold its truth, not an observed image.
_SIMULATION_TRUTH = ('NOISELESS', 'BACKGROUND', 'RMS', 'SEGMENTATION',
                     'CONTAMINANTS')


def scan_image_hdus(path):
    """
    List every HDU of a FITS file, telling image HDUs from the others.

    Only headers are read (no pixel data), so scanning is cheap. An HDU is
    an image if it is a primary, image or tile-compressed image HDU whose
    data squeeze to two dimensions (``(1, ny, nx)`` cubes are accepted).
    In a file written by ``astro-deepcolor simulate`` only the primary HDU
    is an image to process; its other image HDUs (``NOISELESS``,
    ``SEGMENTATION``, ...) are the simulation's truth.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        The FITS file.

    Returns
    -------
    hdus : list of `ImageHDU`
        One entry per HDU, images and non-images alike (the latter carry
        the reason in ``error``).

    Raises
    ------
    OSError
        If the file cannot be opened or is not a valid FITS file.
    """
    from astropy.io import fits

    path = os.fspath(path)
    hdus = []
    # lazy_load_hdus=False: a truncated file fails here, not half way
    # through a run; memmap keeps it header-only.
    with fits.open(path, memmap=True, lazy_load_hdus=False) as hdul:
        # a file written by `astro-deepcolor simulate`: its primary HDU is
        # the image, the other image HDUs are its truth
        simulated = any(str(k).startswith('SIM ') for k in hdul[0].header)
        for index, hdu in enumerate(hdul):
            header = hdu.header
            extname = str(header.get('EXTNAME', '')).strip()
            is_image_type = isinstance(
                hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU))
            shape = _hdu_shape(header)
            squeezed = tuple(s for s in shape if s != 1)
            if simulated and extname.upper() in _SIMULATION_TRUTH:
                error = (f'HDU {index} ({extname}) is the truth of a simulated '
                         'image, not an image to detect on')
                shape = ()
            elif not is_image_type:
                error = f'HDU {index} is a {type(hdu).__name__}, not an image'
                shape = ()
            elif not shape or 0 in shape:
                error = f'HDU {index} has no image data'
                shape = ()
            elif len(squeezed) != 2:
                error = f'HDU {index} data of shape {shape} is not a 2D image'
            else:
                error = ''
                shape = squeezed
            hdus.append(ImageHDU(path, index, extname, shape, error))
    return hdus


def read_image_hdu(path, index):
    """
    Read the 2D data and header of one image HDU.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        The FITS file.
    index : int
        The HDU index.

    Returns
    -------
    data : 2D `~numpy.ndarray`
        The image as native-endian float32 (BSCALE/BZERO applied; blank
        integer pixels become NaN).
    header : `~astropy.io.fits.Header`
        The HDU header (for a tile-compressed HDU, the image header), with
        the primary header's keywords when it inherits them
        (`~astro_deepcolor.pipeline.merged_header`).

    Raises
    ------
    OSError
        If the file cannot be read.
    ValueError
        If the HDU does not hold a 2D image.
    """
    from astropy.io import fits

    from astro_deepcolor.pipeline import merged_header

    with fits.open(os.fspath(path), memmap=False) as hdul:
        hdu = hdul[index]
        data = hdu.data
        header = merged_header(hdul, index)
    if data is None:
        msg = f'HDU {index} of {os.fspath(path)!r} has no image data'
        raise ValueError(msg)
    data = np.squeeze(np.asarray(data))
    if data.ndim != 2:
        msg = (f'HDU {index} of {os.fspath(path)!r} holds data of shape '
               f'{data.shape}, not a 2D image')
        raise ValueError(msg)
    return np.ascontiguousarray(data, dtype=np.float32), header
