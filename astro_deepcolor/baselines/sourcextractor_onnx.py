# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The shipped network run as SourceXtractor++ runs it, for the benchmark.

`SourceXtractorCNNDetector` wraps
`~astro_deepcolor.inference.sourcextractor.SourceXtractorRunner` on the
``'sourcextractor'``-form export of the shipped model
(``astro_deepcolor/data/deepcolor_default_sourcextractor.onnx``): the
threshold is SourceXtractor++'s per-colour-plane probability threshold.
"""

import warnings
from importlib import resources
from pathlib import Path

import numpy as np

from .base import prepare_image, segment_catalog

__all__ = ['DEFAULT_SOURCEXTRACTOR_MODEL', 'SourceXtractorCNNDetector']

#: The SourceXtractor++-form export of the shipped model.
DEFAULT_SOURCEXTRACTOR_MODEL = Path(str(
    resources.files('astro_deepcolor') / 'data' / 'deepcolor_default_sourcextractor.onnx'))


class SourceXtractorCNNDetector:
    """
    The CNN under the SourceXtractor++ ONNX protocol.

    Parameters
    ----------
    fwhm : float, optional
        Unused (the common interface).
    n_pixels : int, optional
        Minimum segment area.
    model : str, optional
        ``'sourcextractor'``-form ONNX file (default: the shipped one).
    """

    name = 'cnn_sourcextractor'
    threshold_name = 'probability (per colour plane)'

    def __init__(self, *, fwhm=None, n_pixels=5, model=None):
        self.n_pixels = n_pixels
        self.model = DEFAULT_SOURCEXTRACTOR_MODEL if model is None else Path(model)

    @classmethod
    def unavailable_reason(cls, model=None):
        """Why the detector cannot run (None when it can)."""
        path = DEFAULT_SOURCEXTRACTOR_MODEL if model is None else Path(model)
        if not path.is_file():
            return (f'no SourceXtractor++-form model at {str(path)!r} (write '
                    f'one with astro-deepcolor export-onnx CHECKPOINT {path.name} '
                    '--sourcextractor)')
        return None

    @classmethod
    def available(cls, model=None):
        """Whether the detector can run."""
        return cls.unavailable_reason(model) is None

    def sweep(self, data, thresholds, mask=None):
        """
        Segment at many per-plane thresholds from one network pass.

        Parameters
        ----------
        data : 2D array-like
            The image.
        thresholds : iterable of float
            Probability thresholds.
        mask : 2D bool array-like, optional
            Bad pixels (set to 0 in the input, never in a source).

        Yields
        ------
        threshold, segm, table
            As for the baselines.
        """
        from astro_deepcolor.inference.sourcextractor import SourceXtractorRunner

        runner = SourceXtractorRunner(self.model, n_pixels=self.n_pixels)
        data, bad = prepare_image(data, mask, dtype=np.float32)
        planes = runner.planes(data)
        if bad.any():
            planes[:, bad] = 0
        image = data - np.median(data[~bad]) if (~bad).any() else data
        for t in thresholds:
            t = float(t)
            if t <= 0:
                t = 1e-6   # a 0 threshold would make every pixel a source
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                segm = runner.segment(planes, threshold=t)
            if segm is None:
                yield t, None, segment_catalog(np.zeros(data.shape, int), image)
            else:
                yield t, segm, segment_catalog(segm, image)
