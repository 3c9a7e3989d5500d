# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Run a model exactly as SourceXtractor++ runs it.

SourceXtractor++ can run an ONNX segmentation model in place of its own
thresholding. A model exported with ``astro-deepcolor export-onnx
--sourcextractor`` (`~astro_deepcolor.model.export.export_onnx` with
``form='sourcextractor'``) has one fixed NHWC input tile (1, T, T, 1) and
one output plane per colour (1, T, T, C), no background plane. This module
reproduces that protocol with onnxruntime, so the package can report what
SourceXtractor++ users get from the same network:

- the image is background-subtracted and divided by **one scalar**, the
  median of the noise rms map (not a per-pixel rms);
- tiles of T x T are taken at a stride of T/2, starting T/4 before the
  image, so that the **central half** of each tile (the pixels with at
  least T/4 of context on every side) tiles the image exactly; only that
  central half of each output is kept;
- pixels beyond the image are **zeros** in the input tile;
- each colour plane is **thresholded on its own** (default 0.9) and
  **labelled on its own** (8-connected components, at least ``n_pixels``
  pixels); there is no flicker repair, no footprint level and no merge
  across planes.

The background and rms maps come from
`~astro_deepcolor.preprocessing.estimate_background` with the model's mesh
settings unless given.
"""

import numpy as np
from photutils.segmentation import SegmentationImage
from scipy import ndimage

from astro_deepcolor.utils._parameters import check_fraction, check_positive_int

__all__ = ['SourceXtractorRunner']


class SourceXtractorRunner:
    """
    The SourceXtractor++ ONNX protocol on a ``'sourcextractor'``-form model.

    Parameters
    ----------
    model : str or `~pathlib.Path`
        A ``'sourcextractor'``-form ONNX file.
    threshold : float, optional
        Per-plane probability threshold (SourceXtractor++'s default 0.9).
    n_pixels : int, optional
        Minimum segment area in pixels.
    """

    def __init__(self, model, *, threshold=0.9, n_pixels=5):
        import json

        import onnxruntime as ort

        from astro_deepcolor.model.config import METADATA_KEY, ModelConfig

        self.threshold = check_fraction(threshold, 'threshold')
        self.n_pixels = check_positive_int(n_pixels, 'n_pixels')
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 0
        self.session = ort.InferenceSession(str(model), opts,
                                            providers=['CPUExecutionProvider'])
        inp = self.session.get_inputs()[0]
        shape = inp.shape
        if len(shape) != 4 or shape[3] != 1 or shape[1] != shape[2] or not isinstance(
                shape[1], int):
            msg = (f'model {str(model)!r} is not a SourceXtractor++-form model: '
                   f'input shape {shape}, expected (1, T, T, 1)')
            raise ValueError(msg)
        self.input_name = inp.name
        self.tile = int(shape[1])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.config = (ModelConfig.from_dict(json.loads(meta[METADATA_KEY]))
                       if METADATA_KEY in meta else None)

    def planes(self, data, background=None, rms=None):
        """
        The colour probability planes, stitched from tiles.

        Parameters
        ----------
        data : 2D `~numpy.ndarray`
            The image.
        background, rms : 2D `~numpy.ndarray` or float, optional
            Sky and noise rms (estimated when None).

        Returns
        -------
        planes : 3D `~numpy.ndarray`
            (C, ny, nx) float32 colour probabilities.
        """
        data = np.asarray(data, dtype=np.float32)
        if data.ndim != 2:
            msg = f'data must be a 2D image, got shape {data.shape}'
            raise ValueError(msg)
        if background is None or rms is None:
            from astro_deepcolor.preprocessing import estimate_background

            kw = {}
            if self.config is not None:
                kw = {'box_size': self.config.background_box,
                      'filter_size': self.config.background_filter}
            bkg, noise = estimate_background(data, **kw)
            background = bkg if background is None else background
            rms = noise if rms is None else rms
        scale = float(np.median(rms))
        if not scale > 0:
            msg = f'the median noise rms must be > 0, got {scale!r}'
            raise ValueError(msg)
        image = np.nan_to_num((data - background) / scale).astype(np.float32)
        ny, nx = image.shape
        t, q = self.tile, self.tile // 4
        out = None
        for y0 in range(-q, ny - q, 2 * q):
            for x0 in range(-q, nx - q, 2 * q):
                tile = np.zeros((1, t, t, 1), np.float32)
                ys, ye = max(y0, 0), min(y0 + t, ny)
                xs, xe = max(x0, 0), min(x0 + t, nx)
                tile[0, ys - y0:ye - y0, xs - x0:xe - x0, 0] = image[ys:ye, xs:xe]
                res = self.session.run(None, {self.input_name: tile})[0][0]
                if out is None:
                    out = np.zeros((res.shape[-1], ny, nx), np.float32)
                cy0, cy1 = y0 + q, min(y0 + 3 * q, ny)
                cx0, cx1 = x0 + q, min(x0 + 3 * q, nx)
                out[:, cy0:cy1, cx0:cx1] = np.moveaxis(
                    res[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0], -1, 0)
        return out

    def segment(self, planes, threshold=None):
        """
        Threshold and label each colour plane on its own.

        Parameters
        ----------
        planes : 3D `~numpy.ndarray`
            From `planes`.
        threshold : float, optional
            Default: ``self.threshold``.

        Returns
        -------
        segm : `~photutils.segmentation.SegmentationImage` or None
            Labels numbered plane by plane; None if nothing is found.
        """
        threshold = self.threshold if threshold is None else check_fraction(
            threshold, 'threshold')
        seg = np.zeros(planes.shape[1:], np.int32)
        n = 0
        structure = np.ones((3, 3), bool)
        for plane in planes:
            lab, k = ndimage.label(plane >= threshold, structure=structure)
            if not k:
                continue
            area = np.bincount(lab.ravel(), minlength=k + 1)
            keep = area >= self.n_pixels
            keep[0] = False
            lut = np.zeros(k + 1, np.int32)
            lut[keep] = np.arange(n + 1, n + 1 + keep.sum(), dtype=np.int32)
            n += int(keep.sum())
            sel = lut[lab] > 0
            seg[sel] = lut[lab][sel]
        return SegmentationImage(seg) if n else None

    def __call__(self, data, background=None, rms=None):
        """
        Detect sources as SourceXtractor++ would with this model.

        Parameters
        ----------
        data : 2D `~numpy.ndarray`
            The image.
        background, rms : 2D `~numpy.ndarray` or float, optional
            Sky and noise rms (estimated when None).

        Returns
        -------
        segm : `~photutils.segmentation.SegmentationImage` or None
        """
        return self.segment(self.planes(data, background, rms))
