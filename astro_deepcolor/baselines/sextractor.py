# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Baseline detector: the SExtractor binary (``source-extractor`` / ``sex``)."""

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from astropy.io import ascii as ascii_io
from astropy.io import fits
from astropy.table import QTable

from .base import BaseDetector, _as_segm, _empty_catalog, prepare_image

__all__ = ['SExtractorDetector']

_BINARIES = ('source-extractor', 'sex')
_PARAMS = ('NUMBER', 'X_IMAGE', 'Y_IMAGE', 'FLUX_ISO', 'FLUX_AUTO',
           'ISOAREA_IMAGE', 'FLAGS')


def _find_binary():
    for name in _BINARIES:
        path = shutil.which(name)
        if path:
            return path
    return None


class SExtractorDetector(BaseDetector):
    """
    Source detection by running the SExtractor executable.

    Each call writes the image (native-endian float32 FITS), a
    configuration file, a parameter file and a Gaussian filter file
    matched to the FWHM into a temporary directory, runs SExtractor with
    ``CHECKIMAGE_TYPE SEGMENTATION`` and reads back the ASCII catalogue and
    the segmentation image. Masked pixels get zero weight
    (``WEIGHT_TYPE MAP_WEIGHT``). In a sweep the image and auxiliary files
    are written once; SExtractor recomputes its (fast) background per run.

    Parameters
    ----------
    fwhm : float, optional
        PSF FWHM in pixels (filter kernel, ``SEEING_FWHM`` is irrelevant).
    n_pixels : int, optional
        ``DETECT_MINAREA``.
    deblend : bool, optional
        ``DEBLEND_MINCONT`` 0.005 (True) or 1 (False).
    box_size : int, optional
        ``BACK_SIZE``.
    filter_size : int, optional
        ``BACK_FILTERSIZE``.
    deblend_nthresh : int, optional
        ``DEBLEND_NTHRESH``.
    clean : bool, optional
        ``CLEAN`` (remove detections explained by a bright neighbour's
        wings).
    timeout : float, optional
        Seconds allowed per run.
    """

    name = 'sextractor'
    threshold_name = 'sigma'

    def __init__(self, *, fwhm=3.0, n_pixels=5, deblend=True, box_size=64,
                 filter_size=3, deblend_nthresh=32, clean=True, timeout=300):
        super().__init__(fwhm=fwhm, n_pixels=n_pixels, deblend=deblend)
        self.box_size = int(box_size)
        self.filter_size = int(filter_size)
        self.deblend_nthresh = int(deblend_nthresh)
        self.clean = bool(clean)
        self.timeout = float(timeout)

    @classmethod
    def _check_available(cls):
        if _find_binary() is None:
            return ('the SExtractor executable (source-extractor or sex) is '
                    'not on PATH; install it, e.g. apt-get install '
                    'source-extractor')
        return None

    def _write_filter(self, path):
        k = self.gaussian_kernel()
        lines = [f'CONV NORM\n# Gaussian, FWHM = {self.fwhm:g} px\n']
        lines += [' '.join(f'{v:.6f}' for v in row) + '\n' for row in k]
        path.write_text(''.join(lines))

    def _prepare(self, data, mask):
        data, bad = prepare_image(data, mask, dtype=np.float32)
        tmp = Path(tempfile.mkdtemp(prefix='adc_sex_'))
        fits.PrimaryHDU(data).writeto(tmp / 'image.fits')
        weight = None
        if bad.any():
            weight = tmp / 'weight.fits'
            fits.PrimaryHDU((~bad).astype(np.float32)).writeto(weight)
        (tmp / 'default.param').write_text('\n'.join(_PARAMS) + '\n')
        self._write_filter(tmp / 'gauss.conv')
        return {'dir': tmp, 'weight': weight, 'shape': data.shape}

    def _cleanup(self, state):
        shutil.rmtree(state['dir'], ignore_errors=True)

    def _config(self, state, threshold):
        tmp = state['dir']
        cfg = {
            'CATALOG_NAME': tmp / 'cat.txt',
            'CATALOG_TYPE': 'ASCII_HEAD',
            'PARAMETERS_NAME': tmp / 'default.param',
            'DETECT_TYPE': 'CCD',
            'DETECT_MINAREA': self.n_pixels,
            'DETECT_THRESH': f'{threshold:g}',
            'ANALYSIS_THRESH': f'{threshold:g}',
            'THRESH_TYPE': 'RELATIVE',
            'FILTER': 'Y',
            'FILTER_NAME': tmp / 'gauss.conv',
            'DEBLEND_NTHRESH': self.deblend_nthresh,
            'DEBLEND_MINCONT': 0.005 if self.deblend else 1.0,
            'CLEAN': 'Y' if self.clean else 'N',
            'CLEAN_PARAM': 1.0,
            'MASK_TYPE': 'CORRECT',
            'WEIGHT_TYPE': 'MAP_WEIGHT' if state['weight'] else 'NONE',
            'SATUR_LEVEL': 1e18,
            'MAG_ZEROPOINT': 0.0,
            'GAIN': 0.0,
            'PIXEL_SCALE': 1.0,
            'SEEING_FWHM': 1.0,
            'BACK_TYPE': 'AUTO',
            'BACK_SIZE': self.box_size,
            'BACK_FILTERSIZE': self.filter_size,
            'BACKPHOTO_TYPE': 'GLOBAL',
            'CHECKIMAGE_TYPE': 'SEGMENTATION',
            'CHECKIMAGE_NAME': tmp / 'segm.fits',
            'MEMORY_OBJSTACK': 30000,
            'MEMORY_PIXSTACK': max(300000, 2 * state['shape'][0]
                                   * state['shape'][1]),
            'MEMORY_BUFSIZE': 1024,
            'VERBOSE_TYPE': 'QUIET',
            'WRITE_XML': 'N',
            'NTHREADS': 1,
        }
        if state['weight']:
            cfg['WEIGHT_IMAGE'] = state['weight']
        path = tmp / 'run.sex'
        path.write_text(''.join(f'{k:<16} {v}\n' for k, v in cfg.items()))
        return path

    def _detect(self, state, threshold):
        tmp = state['dir']
        for name in ('cat.txt', 'segm.fits'):
            (tmp / name).unlink(missing_ok=True)
        cfg = self._config(state, float(threshold))
        try:
            proc = subprocess.run(
                [_find_binary(), str(tmp / 'image.fits'), '-c', str(cfg)],
                capture_output=True, text=True, timeout=self.timeout,
                cwd=tmp, check=False)
        except subprocess.TimeoutExpired:
            self.last_error = f'timed out after {self.timeout:g} s'
            return None, None
        if proc.returncode != 0 or not (tmp / 'segm.fits').exists():
            self.last_error = proc.stderr.strip()[-500:]
            return None, None
        seg = fits.getdata(tmp / 'segm.fits').astype(np.int32)
        table = self._read_catalog(tmp / 'cat.txt')
        if len(table) == 0:
            return None, table
        return _as_segm(seg), table

    @staticmethod
    def _read_catalog(path):
        text = path.read_text() if path.exists() else ''
        if not any(line and not line.startswith('#')
                   for line in text.splitlines()):
            return _empty_catalog()
        cat = ascii_io.read(text, format='sextractor')
        return QTable({'label': np.asarray(cat['NUMBER'], np.int64),
                       'x': np.asarray(cat['X_IMAGE'], float) - 1.0,
                       'y': np.asarray(cat['Y_IMAGE'], float) - 1.0,
                       'flux': np.asarray(cat['FLUX_ISO'], float),
                       'flux_auto': np.asarray(cat['FLUX_AUTO'], float),
                       'area': np.asarray(cat['ISOAREA_IMAGE'], np.int64),
                       'flag': np.asarray(cat['FLAGS'], np.int64)})
