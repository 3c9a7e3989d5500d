# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
`DeepColorSegmentation` and `detect_sources`: the detection API.

The pipeline of one call is

1. input checks (2D, numeric; masked arrays, Quantity, big-endian and
   integer data accepted; NaN/inf and masked pixels become "bad"),
2. background and rms estimate on the good pixels
   (`astro_deepcolor.preprocessing.estimate_background`, with the mesh
   size and filter stored in the model),
3. tiled network inference (`astro_deepcolor.inference.tiling`): each
   tile is normalised on the fly, run through the backend in batches, and
   only its core is kept,
4. post-processing (`astro_deepcolor.postprocessing`): threshold, colour
   components, flicker repair, size cut, consecutive labels.

Memory
------
`DeepColorSegmentation.__call__` never holds the probability cube of the
whole image. Each tile's probabilities are reduced at once to a ``uint8``
colour index and a ``float16`` foreground probability (3 bytes per pixel),
and the connected-component labelling runs on that stitched compact map,
so a source straddling tile boundaries gets one label. The peak memory is
about ``21 * ny * nx`` bytes (input float32, bad-pixel mask, background
and rms maps, compact map, int32 labels and their scratch buffers) plus
one batch of tiles, independent of the number of colours.
`DeepColorSegmentation.predict` returns the full float32 cube and so needs
``4 * (n_colors + 1) * ny * nx`` bytes more.
"""

import functools
import numbers
import time
import warnings
from pathlib import Path

import numpy as np
from photutils.segmentation import SegmentationImage

from astro_deepcolor.exceptions import DeepColorWarning, SmoothedImageWarning
from astro_deepcolor.inference.backends import BACKENDS, DEVICES, resolve_backend
from astro_deepcolor.inference.tiling import TilePlan, default_margin
from astro_deepcolor.postprocessing import (
    _label_sources,
    _segment_probabilities,
    classify_pixels,
    detection_levels,
    warn_no_detections,
)
from astro_deepcolor.utils._parameters import (
    check_choice,
    check_fraction,
    check_positive_int,
    check_shape,
    check_threshold,
)

__all__ = ['DeepColorSegmentation', 'detect_sources', 'resolve_threshold']


@functools.lru_cache(maxsize=8)
def _load_cached(path, mtime_ns):
    from astro_deepcolor.model import load_model

    return load_model(path)


def _as_model(model):
    """Return a LoadedModel for None, a path or a LoadedModel."""
    from astro_deepcolor.model import LoadedModel, load_model

    if isinstance(model, LoadedModel):
        return model
    if model is None or isinstance(model, (str, Path)):
        if model is None:
            from astro_deepcolor.model.io import DEFAULT_MODEL_PATH

            path = DEFAULT_MODEL_PATH
        else:
            path = Path(model)
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return load_model(path)  # raises ModelError naming the file
        return _load_cached(str(path.resolve()), mtime)
    msg = ('model must be None (the shipped model), a path to an ONNX file '
           f'or a LoadedModel, got {type(model).__name__}')
    raise TypeError(msg)


def _calibrate_probability(segm, config, flips=False):
    """
    Turn each source's peak probability into the probability it is real.

    ``segm.info['peak_probability']`` keeps the network's peak foreground
    probability over the segment (what ``threshold`` is compared with);
    ``segm.info['detection_probability']`` becomes the fraction of
    detections with that peak probability that were real on the model's
    validation images (its ``reliability_map``), or stays the peak
    probability for a model without one.
    """
    raw = np.asarray(segm.info['detection_probability'], dtype=np.float32)
    segm.info['peak_probability'] = raw
    rel = reliability_map(config, flips)
    if rel:
        segm.info['detection_probability'] = np.interp(
            raw, rel['probability'], rel['reliability']).astype(np.float32)
    return segm


def reliability_map(config, flips=False):
    """The model's map from peak probability to reliability (see
    `_calibrate_probability`) for detection with or without ``flips``.
    """
    return config.reliability_map_flips if flips else config.reliability_map


#: The flips averaged with ``flips=True``: axes of a (N, 1, H, W) batch.
_FLIP_AXES = ((-1,), (-2,), (-2, -1))


def run_flipped(runner, batch):
    """
    Network output with the foreground probability averaged over flips.

    The background probability of each pixel is the mean over the batch
    and its left-right, up-down and two-axis flips (each output flipped
    back); the colour channels of the unflipped pass are rescaled to sum
    to the averaged foreground probability, so each pixel keeps the
    colour of the unflipped pass.

    Parameters
    ----------
    runner : backend
        Has ``run(batch) -> probs``.
    batch : 4D `~numpy.ndarray` of float32
        ``(N, 1, H, W)`` normalised tiles.

    Returns
    -------
    probs : 4D `~numpy.ndarray` of float32
        ``(N, n_colors + 1, H, W)``.
    """
    probs = np.array(runner.run(batch), dtype=np.float32)
    bg = probs[:, 0].astype(np.float64)
    for axes in _FLIP_AXES:
        out = runner.run(np.ascontiguousarray(np.flip(batch, axis=axes)))
        bg += np.flip(out[:, 0], axis=axes)
    bg /= len(_FLIP_AXES) + 1
    colours = probs[:, 1:].astype(np.float64)
    total = colours.sum(axis=1, keepdims=True)
    n_colors = colours.shape[1]
    # Each pixel's colour shares of the unflipped pass (uniform where that
    # pass gave the colours no probability at all).
    shares = np.divide(colours, total, out=np.full_like(colours, 1.0 / n_colors),
                       where=total > 0)
    probs[:, 1:] = shares * (1.0 - bg)[:, None]
    probs[:, 0] = bg
    return probs


def smooth_peak_image(normalized):
    """
    The peak image of a normalised image (noise units): smoothed by a
    1-pixel Gaussian, as `~astro_deepcolor.postprocessing.merge_peakless`
    expects.
    """
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(normalized, 1.0)


def _peak_image(data, background, rms, bad):
    """(data - background) / rms smoothed by a 1-pixel Gaussian, float32."""
    from astro_deepcolor.preprocessing import normalize

    return smooth_peak_image(normalize(data, background, rms, bad))


def _prepare(data, mask):
    """
    Validate the image; return (float32 native-endian data, bad mask).

    ``bad`` is True for masked, masked-array-masked and non-finite pixels,
    and for blank regions (`~astro_deepcolor.preprocessing.flat_pixels`).
    """
    if data is None:
        msg = 'data must be a 2D array, got None'
        raise TypeError(msg)
    if hasattr(data, 'unit') and hasattr(data, 'value'):  # Quantity
        data = data.value
    bad = None
    if np.ma.isMaskedArray(data):
        bad = np.ma.getmaskarray(data).copy()
        data = np.ma.getdata(data)
    data = np.asanyarray(data)
    if data.dtype.kind not in 'iuf':
        msg = ('data must be a real numeric (integer or float) array, got '
               f'dtype {data.dtype!r}')
        raise TypeError(msg)
    if data.ndim != 2:
        msg = f'data must be a 2D array, got an array of shape {data.shape!r}'
        raise ValueError(msg)
    if data.size == 0:
        msg = f'data must not be empty, got shape {data.shape!r}'
        raise ValueError(msg)
    # float32, native byte order (FITS data are big-endian); no copy when
    # the input already is.
    data = np.asarray(data, dtype=np.float32)
    finite = np.isfinite(data)
    bad = ~finite if bad is None else bad | ~finite
    del finite
    if mask is not None:
        mask = np.asanyarray(mask)
        if mask.shape != data.shape:
            msg = (f'mask must have the same shape as data {data.shape!r}, '
                   f'got {mask.shape!r}')
            raise ValueError(msg)
        bad |= mask.astype(bool, copy=False)
    # Blank (exactly flat) regions, e.g. mosaic padding or a constant
    # image, hold no sources: the network would read them as signal.
    from astro_deepcolor.preprocessing import flat_pixels

    bad |= flat_pixels(data, bad)
    return data, bad


def resolve_threshold(threshold, config, flips=False):
    """
    The probability threshold meant by a ``threshold`` argument.

    Parameters
    ----------
    threshold : float, str or None
        A probability in [0, 1], the name of one of the model's calibrated
        operating points, or None for the model's ``default_threshold``.
    config : `~astro_deepcolor.model.ModelConfig`
        The model configuration.
    flips : bool, optional
        Detection averages over flips: a name (or None, the default
        operating point) means the point ``'<name>+flips'`` calibrated
        for it.

    Returns
    -------
    threshold : float
        The probability.

    Raises
    ------
    ValueError
        For an unknown operating-point name (the message lists the
        names the model has) or a probability outside [0, 1].
    """
    if flips and (threshold is None or isinstance(threshold, str)):
        name = config.default_operating_point if threshold is None else threshold
        if name is None:
            msg = ('the model has no calibrated operating point; with '
                   'flips=True give threshold as a probability')
            raise ValueError(msg)
        if not name.endswith('+flips'):
            name += '+flips'
        if name not in config.operating_points:
            msg = (f'the model has no operating point {name!r} calibrated for '
                   'flips=True (benchmarks/calibrate_thresholds.py --flips); '
                   'give threshold as a probability')
            raise ValueError(msg)
        threshold = name
    if threshold is None:
        return float(config.default_threshold)
    if isinstance(threshold, str):
        points = config.operating_points
        if threshold not in points:
            names = ', '.join(repr(k) for k in sorted(points)) or 'none'
            msg = (f'threshold {threshold!r} is not an operating point of '
                   f'the model; its operating points are: {names}')
            raise ValueError(msg)
        return float(points[threshold])
    return check_threshold(threshold, 'threshold')


#: Neighbouring-pixel noise correlation above which the input is taken to
#: be smoothed: raw CCD images and resampled coadds measure 0 to 0.3, an
#: image convolved with a Gaussian of 2 pixels FWHM 0.7 (see
#: `astro_deepcolor.preprocessing.noise_correlation`).
SMOOTHED_CORRELATION = 0.5


def _warn_if_smoothed(data, bad, stacklevel=4):
    """Warn when the image's noise looks convolved (a photutils habit)."""
    from astro_deepcolor.preprocessing import noise_correlation

    if min(data.shape) < 32:
        return
    rho = noise_correlation(data, bad)
    if rho > SMOOTHED_CORRELATION:
        warnings.warn(
            f'the image looks smoothed or convolved: the noise of neighbouring '
            f'pixels is correlated at {rho:.2f} (a raw CCD image: about 0). '
            'Pass the raw image, neither convolved with a kernel nor '
            'smoothed (the network does its own filtering); unlike '
            "photutils' detect_sources, no convolution is needed",
            SmoothedImageWarning, stacklevel=stacklevel)


class DeepColorSegmentation:
    """
    Detect and deblend sources with a deep-coloring neural network.

    The network assigns every pixel a probability of being background and
    of belonging to each of ``n_colors`` "colours"; touching sources get
    different colours. Connected pixels of the same colour whose
    foreground probability ``1 - p_background`` is at least
    ``min(threshold, footprint_threshold)`` form a footprint, and a
    footprint is a source when at least ``n_pixels`` of its pixels reach
    ``threshold`` (see `astro_deepcolor.postprocessing`).

    Parameters
    ----------
    threshold : float, str or None, optional
        Detection threshold: foreground probability, in [0, 1], that
        ``n_pixels`` pixels of a source must reach; or the name of one of
        the model's calibrated operating points
        (``model.config.operating_points``, e.g. ``'5%'``: the threshold
        giving 5 % contamination on the validation images). None (the
        default): the model's ``default_threshold``.
    n_pixels : int, optional
        Minimum number of pixels of a source at or above ``threshold``.
    model : str, `~pathlib.Path` or `~astro_deepcolor.model.LoadedModel`, optional
        The ONNX model file; default: the model shipped with the package.
    connectivity : {8, 4}, optional
        Pixel connectivity of a source: 8 includes diagonal neighbours.
    backend : {'auto', 'onnxruntime', 'torch'}, optional
        How the network runs; 'auto' picks the fastest available (torch
        on CUDA, onnxruntime on CUDA, onnxruntime on the CPU).
    device : {'auto', 'cpu', 'cuda'}, optional
        Device; 'auto' uses CUDA when the backend can.
    tile_shape : int or tuple of 2 int, optional
        Largest network input (tile) shape, context margins included.
        Larger tiles waste less work on margins but use more memory.
    overlap : int or 'auto', optional
        Context pixels added on each side of a tile's core (multiple of
        the model's ``tile_multiple``). 'auto' covers the receptive field,
        which makes the result independent of ``tile_shape``.
    batch_size : int, optional
        Tiles per network call.
    merge_fraction : float, optional
        Colour-flicker repair: a colour component sharing at least this
        fraction of its perimeter with a larger neighbour is merged into
        it (see `~astro_deepcolor.postprocessing.merge_flicker`).
    footprint_threshold : float, None or 'model', optional
        Foreground probability that delimits the footprints of detected
        sources when it is below ``threshold`` (like SExtractor's
        ``ANALYSIS_THRESH`` below ``DETECT_THRESH``): the cores of one
        galaxy that pass a high threshold are joined into one source, and
        footprints do not shrink as the threshold rises. None: footprints
        are delimited by ``threshold`` itself. 'model' (the default): the
        model's ``footprint_threshold``, chosen on the validation images
        (lower levels also join close pairs that the network painted in
        one colour; see the "Post-processing" section of the model
        documentation).
    precision : {'float32', 'float16', 'bfloat16'}, optional
        Arithmetic of the torch backend on CUDA.
    peak_margin : float or None, optional
        A source must have a peak of its own: a segment whose brightest
        pixel, in the image smoothed by a 1-pixel Gaussian and in units of
        the noise, is within ``peak_margin`` of its boundary with a
        brighter touching segment is merged into it (SExtractor's
        condition for a deblended component; the network can paint a
        bright star's core and wing in different colours). None: no such
        merge. See `~astro_deepcolor.postprocessing.merge_peakless`.
    progress_bar : bool, optional
        Show a tqdm progress bar over tiles.
    n_threads : int, optional
        CPU threads of the network (onnxruntime intra-op threads; for the
        torch backend on the CPU, ``torch.set_num_threads``, which is
        process-wide). Default: every core the process may use. Set it to
        1 when several detections run side by side (e.g. one per Dask
        worker) so they do not oversubscribe the cores.
    flips : bool, optional
        Test-time averaging: the foreground probability of each pixel is
        the mean of the network's outputs on the image and on its
        left-right, up-down and two-axis flips (four network passes, so
        4.5 times the network time on 2 CPU cores); colours come from the
        unflipped pass. Artefacts that the network mistakes for a source
        in only some orientations are averaged down: on the test images
        this raises the completeness at 5 % contamination in the
        contaminated regime (figures in the detection guide). A name or
        default ``threshold`` then means the model's operating point
        calibrated with flips (``'5%+flips'``).

    Attributes
    ----------
    config : `~astro_deepcolor.model.ModelConfig`
        The model configuration.
    threshold, footprint_threshold : float
        The resolved settings (a name or a model default replaced by its
        value); ``operating_point`` is the name given, if any.
    backend_name, device_name : str
        The backend and device actually used (resolved on first access).

    Notes
    -----
    ``segm.info['detection_probability']`` (the catalogue's
    ``detection_probability`` column) is the probability that a detection
    is real: the fraction of detections with the same peak foreground
    probability that matched a true source on the model's validation
    images (its ``reliability_map``; see the model card for the
    reliability diagram). The network's raw peak probability, which
    ``threshold`` is compared with, is ``segm.info['peak_probability']``;
    it is far from calibrated (detections with a peak probability of 0.85
    are real about 20 % of the time).

    Calling the object on an image returns a photutils
    `~photutils.segmentation.SegmentationImage` (or None with a
    `~photutils.utils.exceptions.NoDetectionsWarning`), usable with
    `~photutils.segmentation.SourceCatalog`,
    `~photutils.segmentation.deblend_sources` and the rest of photutils.

    Examples
    --------
    >>> from astro_deepcolor import DeepColorSegmentation
    >>> from astro_deepcolor.simulation import simulate_image
    >>> sim = simulate_image((256, 256), seed=1)
    >>> finder = DeepColorSegmentation(threshold=0.5, n_pixels=5)
    >>> segm = finder(sim.data)  # doctest: +SKIP
    >>> table = finder.catalog(sim.data, segm)  # doctest: +SKIP
    """

    def __init__(self, threshold=None, n_pixels=5, *, model=None,
                 connectivity=8, backend='auto', device='auto',
                 tile_shape=(1024, 1024), overlap='auto', batch_size=1,
                 merge_fraction=0.5, footprint_threshold='model',
                 precision='float32', progress_bar=False, n_threads=None,
                 peak_margin=0.5, flips=False):
        self.model = _as_model(model)
        self.config = self.model.config
        if not isinstance(flips, (bool, np.bool_)):
            msg = f'flips must be True or False, got {flips!r}'
            raise TypeError(msg)
        self.flips = bool(flips)
        self.operating_point = threshold if isinstance(threshold, str) else None
        self.threshold = resolve_threshold(threshold, self.config, self.flips)
        self.n_pixels = check_positive_int(n_pixels, 'n_pixels')
        self.connectivity = check_choice(connectivity, 'connectivity', (4, 8))
        self.backend = check_choice(backend, 'backend', BACKENDS)
        self.device = check_choice(device, 'device', DEVICES)
        self.precision = check_choice(precision, 'precision',
                                      ('float32', 'float16', 'bfloat16'))
        self.batch_size = check_positive_int(batch_size, 'batch_size')
        self.merge_fraction = check_fraction(merge_fraction, 'merge_fraction')
        if isinstance(footprint_threshold, str) and footprint_threshold == 'model':
            footprint_threshold = self.config.footprint_threshold
        self.footprint_threshold = (
            None if footprint_threshold is None
            else check_fraction(footprint_threshold, 'footprint_threshold'))
        self.peak_margin = (None if peak_margin is None
                            else check_fraction(peak_margin, 'peak_margin',
                                                low=0.0, high=1e6))
        self.progress_bar = bool(progress_bar)
        self.n_threads = (None if n_threads is None
                          else check_positive_int(n_threads, 'n_threads'))
        multiple = self.config.tile_multiple
        needed = default_margin(self.config.receptive_field, multiple)
        if isinstance(overlap, str) and overlap == 'auto':
            overlap = needed
        elif isinstance(overlap, numbers.Integral) and not isinstance(overlap, bool):
            if overlap < 0 or overlap % multiple:
                msg = ('overlap must be a non-negative multiple of the model '
                       f'tile_multiple ({multiple}) or "auto", got {overlap!r}')
                raise ValueError(msg)
            if overlap < needed:
                warnings.warn(
                    f'overlap={overlap} is smaller than the receptive-field '
                    f'margin ({needed} px); results will depend on tile_shape',
                    DeepColorWarning, stacklevel=2)
        else:
            msg = f'overlap must be an integer or "auto", got {overlap!r}'
            raise TypeError(msg)
        self.overlap = int(overlap)
        self.tile_shape = check_shape(tile_shape, 'tile_shape', minimum=1)
        min_tile = 2 * self.overlap + multiple
        if min(self.tile_shape) < min_tile:
            msg = (f'tile_shape must be at least {min_tile} pixels per side '
                   f'(2 * overlap + {multiple}), got {self.tile_shape!r}')
            raise ValueError(msg)

    def __repr__(self):
        params = (f'threshold={self.threshold!r}, n_pixels={self.n_pixels!r}, '
                  f'model={str(self.model.path)!r}, '
                  f'connectivity={self.connectivity!r}, '
                  f'backend={self.backend!r}, device={self.device!r}, '
                  f'tile_shape={self.tile_shape!r}, overlap={self.overlap!r}, '
                  f'batch_size={self.batch_size!r}, '
                  f'merge_fraction={self.merge_fraction!r}, '
                  f'footprint_threshold={self.footprint_threshold!r}, '
                  f'precision={self.precision!r}, '
                  f'progress_bar={self.progress_bar!r}, '
                  f'n_threads={self.n_threads!r}, flips={self.flips!r}')
        return f'{type(self).__name__}({params})'

    def __getstate__(self):
        # The backend (an onnxruntime session or a torch module on a
        # device) is not picklable: a copy sent to another process (a Dask
        # worker) builds its own on first use.
        state = self.__dict__.copy()
        state.pop('_runner', None)
        return state

    # -- backend ---------------------------------------------------------

    @functools.cached_property
    def _runner(self):
        return resolve_backend(self.model, self.backend, self.device,
                               precision=self.precision,
                               n_threads=self.n_threads)

    @property
    def backend_name(self):
        """Name of the backend used (``'onnxruntime'`` or ``'torch'``)."""
        return self._runner.name

    @property
    def device_name(self):
        """Device used (``'cpu'`` or ``'cuda'``)."""
        return self._runner.device

    @property
    def backend_description(self):
        """One line naming backend, device, provider and threads."""
        return self._runner.description

    # -- core pipeline -----------------------------------------------------

    def estimate_background(self, data, mask=None):
        """
        Background and rms maps, as used for the network input.

        Parameters
        ----------
        data : 2D array-like
            The image.
        mask : 2D bool array-like, optional
            True for pixels to ignore.

        Returns
        -------
        background, rms : 2D `~numpy.ndarray` of float32
            Sky level and noise standard deviation.
        """
        data, bad = _prepare(data, mask)
        return self._background(data, bad)

    def _background(self, data, bad):
        from astro_deepcolor.preprocessing import estimate_background

        # Images smaller than one mesh get a single mesh of their size.
        box = max(4, min(self.config.background_box, *data.shape))
        return estimate_background(data, mask=bad, box_size=box,
                                   filter_size=self.config.background_filter)

    def _infer(self, data, bad, background, rms, sink, timings, origin=(0, 0)):
        """Run the tiles through the network; ``sink(core, probs)`` each."""
        from astro_deepcolor.preprocessing import normalize, sky_noise

        plan = TilePlan(data.shape, self.tile_shape, self.overlap,
                        self.config.tile_multiple)
        runner = self._runner
        wy, wx = plan.window_shape
        n = min(self.batch_size, len(plan))
        x = np.zeros((n, 1, wy, wx), dtype=np.float32)
        bar = None
        if self.progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(plan), unit='tile', desc='deepcolor')
        t_norm = t_net = t_post = 0.0
        try:
            for batch in plan.batches(n):
                t0 = time.perf_counter()
                for i, tile in enumerate(batch):
                    src, dst = tile.source_and_destination(data.shape,
                                                           plan.window_shape)
                    # Outside the image and on bad pixels the network
                    # sees sky noise (a function of the global position,
                    # so the same in every tiling), never flat zeros.
                    oy = origin[0] + src[0].start - dst[0].start
                    ox = origin[1] + src[1].start - dst[1].start
                    partial = (dst[0].stop - dst[0].start,
                               dst[1].stop - dst[1].start) != (wy, wx)
                    tile_bad = bad[src]
                    norm = normalize(data[src], background[src], rms[src],
                                     tile_bad)
                    if partial or tile_bad.any():
                        x[i, 0] = sky_noise(oy, ox, (wy, wx))
                        norm[tile_bad] = x[i, 0][dst][tile_bad]
                    x[i, 0][dst] = norm
                t1 = time.perf_counter()
                probs = (run_flipped(runner, x[:len(batch)]) if self.flips
                         else runner.run(x[:len(batch)]))
                t2 = time.perf_counter()
                for i, tile in enumerate(batch):
                    inner = (slice(None), *tile.core_in_window())
                    sink(tile.core, probs[i][inner])
                t3 = time.perf_counter()
                t_norm += t1 - t0
                t_net += t2 - t1
                t_post += t3 - t2
                if bar is not None:
                    bar.update(len(batch))
        finally:
            if bar is not None:
                bar.close()
        timings['normalize'] = t_norm
        timings['network'] = t_net
        timings['classify'] = t_post
        timings['n_tiles'] = len(plan)
        timings['tile_efficiency'] = plan.efficiency

    def _check_background(self, data, background, rms):
        if (background is None) != (rms is None):
            msg = 'background and rms must be given together'
            raise ValueError(msg)
        if background is None:
            return None
        out = []
        for name, value in (('background', background), ('rms', rms)):
            value = np.asarray(value, dtype=np.float32)
            if value.ndim == 0:
                value = np.broadcast_to(value, data.shape)
            if value.shape != data.shape:
                msg = (f'{name} must be a scalar or have the data shape '
                       f'{data.shape!r}, got {value.shape!r}')
                raise ValueError(msg)
            out.append(value)
        return tuple(out)

    def _detect(self, data, mask, threshold, n_pixels, background=None,
                rms=None):
        t0 = time.perf_counter()
        data, bad = _prepare(data, mask)
        given = self._check_background(data, background, rms)
        if not bad.all():
            _warn_if_smoothed(data, bad)
        if given is None and not bad.all():
            given = self._background(data, bad)
        segm = self._segment_prepared(data, bad, *(given or (None, None)),
                                      threshold=threshold, n_pixels=n_pixels,
                                      t0=t0)
        if segm is None:
            warn_no_detections(stacklevel=3)
        return segm

    def _segment_prepared(self, data, bad, background, rms, *,
                          threshold=None, n_pixels=None, t0=None):
        """
        Detect on already validated arrays; None (silently) if nothing.

        ``data`` and ``bad`` come from ``_prepare``, ``background`` and
        ``rms`` are image-sized float32 maps. The one per-image core of
        `__call__` and `astro_deepcolor.pipeline.detect_image`.
        """
        threshold = self.threshold if threshold is None else threshold
        n_pixels = self.n_pixels if n_pixels is None else n_pixels
        timings = {}
        t1 = time.perf_counter()
        timings['background'] = 0.0 if t0 is None else t1 - t0
        if bad.all():
            return None
        colour = np.zeros(data.shape, dtype=np.uint8)
        p_fg = np.zeros(data.shape, dtype=np.float16)
        low, detect = detection_levels(threshold, self.footprint_threshold)

        def sink(core, probs):
            classify_pixels(probs, low, bad[core],
                            out=(colour[core], p_fg[core]))

        self._infer(data, bad, background, rms, sink, timings)
        peak = (None if self.peak_margin is None
                else _peak_image(data, background, rms, bad))
        background = rms = None  # free before labelling
        t2 = time.perf_counter()
        segm = _label_sources(colour, p_fg, n_pixels,
                              connectivity=self.connectivity,
                              merge_fraction=self.merge_fraction,
                              threshold=detect, peak_image=peak,
                              peak_margin=self.peak_margin or 0.0)
        timings['label'] = time.perf_counter() - t2
        timings['total'] = time.perf_counter() - (t1 if t0 is None else t0)
        if segm is None:
            return None
        segm.info.update(threshold=threshold, n_pixels=n_pixels,
                         footprint_threshold=low,
                         model=str(self.model.path),
                         backend=self._runner.description, timings=timings,
                         flips=self.flips)
        return _calibrate_probability(segm, self.config, self.flips)

    def __call__(self, data, mask=None, *, background=None, rms=None):
        """
        Detect sources in an image.

        Parameters
        ----------
        data : 2D array-like
            The image: `~numpy.ndarray` (any integer or float dtype, any
            byte order), `~numpy.ma.MaskedArray` or
            `~astropy.units.Quantity`. It need not be background
            subtracted.
        mask : 2D bool array-like, optional
            True for pixels to ignore. Masked and non-finite pixels never
            belong to a source and are excluded from the background
            estimate.
        background, rms : 2D array-like or float, optional
            Precomputed sky and noise maps (e.g. from
            `~astro_deepcolor.preprocessing.estimate_background`); estimated when omitted.

        Returns
        -------
        segm : `~photutils.segmentation.SegmentationImage` or None
            The sources; ``segm.info`` holds ``detection_probability``
            (max foreground probability per label, aligned with
            ``segm.labels``), the settings and per-stage ``timings`` (s).
            None (with a `~photutils.utils.exceptions.NoDetectionsWarning`)
            when nothing is found.
        """
        return self._detect(data, mask, self.threshold, self.n_pixels,
                            background, rms)

    def predict(self, data, mask=None, *, background=None, rms=None,
                origin=(0, 0)):
        """
        Probability maps of the network for the whole image.

        Parameters
        ----------
        data : 2D array-like
            The image (see `__call__`).
        mask : 2D bool array-like, optional
            True for pixels to ignore; masked and non-finite pixels get
            probability 1 of background.
        background, rms : 2D array-like or float, optional
            Precomputed sky and noise maps; estimated when omitted.
        origin : tuple of 2 int, optional
            Global ``(y, x)`` of ``data[0, 0]`` when ``data`` is a piece of
            a larger image: the sky noise that replaces bad pixels for the
            network depends on the global position, so pieces agree with
            the whole image.

        Returns
        -------
        probs : 3D `~numpy.ndarray` of float32
            ``(n_colors + 1, ny, nx)``; channel 0 is the background.

        Notes
        -----
        The result takes ``4 * (n_colors + 1)`` bytes per pixel (24 bytes
        for 5 colours: 2.4 GB for a 10k x 10k image, 9.6 GB for 20k x
        20k). Calling the object itself streams the tiles and never holds
        this cube; use `predict` for inspection, or on images that fit in
        memory when you want to re-threshold with `segment`.
        """
        data, bad = _prepare(data, mask)
        given = self._check_background(data, background, rms)
        probs = np.zeros((self.config.n_outputs, *data.shape), dtype=np.float32)
        probs[0] = 1.0
        if bad.all():
            return probs
        _warn_if_smoothed(data, bad, stacklevel=3)
        background, rms = self._background(data, bad) if given is None else given

        def sink(core, out):
            probs[(slice(None), *core)] = out

        self._infer(data, bad, background, rms, sink, {}, origin=origin)
        if bad.any():
            probs[:, bad] = 0.0
            probs[0, bad] = 1.0
        return probs

    def peak_image(self, data, mask=None, *, background=None, rms=None):
        """
        The smoothed image in noise units used to merge peakless segments.

        ``(data - background) / rms`` smoothed by a Gaussian of 1 pixel
        (see `~astro_deepcolor.postprocessing.merge_peakless`).

        Parameters
        ----------
        data : 2D array-like
            The image.
        mask : 2D bool array-like, optional
            Bad pixels.
        background, rms : 2D array-like or float, optional
            Sky and noise (estimated when omitted).

        Returns
        -------
        image : 2D `~numpy.ndarray` of float32
        """
        data, bad = _prepare(data, mask)
        given = self._check_background(data, background, rms)
        background, rms = self._background(data, bad) if given is None else given
        return _peak_image(data, background, rms, bad)

    def segment(self, probs, threshold=None, mask=None, *, peak_image=None):
        """
        Segment probability maps from `predict` (re-thresholding).

        ``finder.segment(finder.predict(data),
        peak_image=finder.peak_image(data))`` gives the same result as
        ``finder(data)``; without ``peak_image`` the segments that have no
        peak of their own are not merged.

        Parameters
        ----------
        probs : 3D `~numpy.ndarray`
            ``(n_colors + 1, ny, nx)`` probabilities.
        threshold : float, optional
            Foreground probability threshold (default: ``self.threshold``).
        mask : 2D bool array-like, optional
            True for pixels that can never belong to a source.
        peak_image : 2D `~numpy.ndarray`, optional
            From `peak_image`.

        Returns
        -------
        segm : `~photutils.segmentation.SegmentationImage` or None
            The sources (None and a `~photutils.utils.exceptions.NoDetectionsWarning` if none).
        """
        threshold = (self.threshold if threshold is None
                     else resolve_threshold(threshold, self.config, self.flips))
        probs = np.asarray(probs)
        if probs.ndim != 3 or probs.shape[0] != self.config.n_outputs:
            msg = (f'probs must have shape (n_colors + 1 = '
                   f'{self.config.n_outputs}, ny, nx), got {probs.shape!r}')
            raise ValueError(msg)
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != probs.shape[1:]:
                msg = (f'mask must have shape {probs.shape[1:]!r}, got '
                       f'{mask.shape!r}')
                raise ValueError(msg)
        if peak_image is not None and np.shape(peak_image) != probs.shape[1:]:
            msg = (f'peak_image must have shape {probs.shape[1:]!r}, got '
                   f'{np.shape(peak_image)!r}')
            raise ValueError(msg)
        segm = _segment_probabilities(
            probs, threshold, self.n_pixels, connectivity=self.connectivity,
            mask=mask, merge_fraction=self.merge_fraction,
            footprint_threshold=self.footprint_threshold,
            peak_image=None if self.peak_margin is None else peak_image,
            peak_margin=self.peak_margin or 0.0)
        if segm is None:
            warn_no_detections(stacklevel=2)
            return None
        low = detection_levels(threshold, self.footprint_threshold)[0]
        segm.info.update(threshold=threshold, n_pixels=self.n_pixels,
                         footprint_threshold=low,
                         model=str(self.model.path), flips=self.flips)
        return _calibrate_probability(segm, self.config, self.flips)

    def catalog(self, data, segm, error=None, wcs=None, *, background=None,
                mask=None, columns=None, zeropoint=None, saturation=None):
        """
        Photometric catalogue of detected sources.

        Parameters
        ----------
        data : 2D array-like
            The image (not background-subtracted, unless ``background=0``).
        segm : `~photutils.segmentation.SegmentationImage`
            The sources, e.g. from `__call__`.
        error : 2D array-like or float, optional
            Total per-pixel error for the ``*_err`` columns.
        wcs : WCS object, optional
            For the ``sky_centroid`` column.
        background : float or 2D array-like, optional
            Sky to subtract; default: estimated as for detection. Pass 0
            for background-subtracted data.
        mask : 2D bool array-like, optional
            Pixels to exclude.
        columns : list of str, optional
            Any `~photutils.segmentation.SourceCatalog` properties plus
            ``'flags'``, ``'detection_probability'``, ``'mag'`` and
            ``'mag_err'``; default:
            `~astro_deepcolor.catalog.catalog_columns`.
        zeropoint : float, optional
            Photometric zero point, for ``mag`` and ``mag_err``.
        saturation : float, optional
            Saturation level of ``data`` (for the ``saturated`` flag).

        Returns
        -------
        table : `~astropy.table.QTable`
            One row per source.
        """
        from astro_deepcolor.catalog import make_catalog

        if not isinstance(segm, SegmentationImage):
            msg = ('segm must be a photutils SegmentationImage, got '
                   f'{type(segm).__name__}')
            raise TypeError(msg)
        return make_catalog(data, segm, error=error, wcs=wcs,
                            background=background, mask=mask, columns=columns,
                            zeropoint=zeropoint, saturation=saturation,
                            box_size=self.config.background_box,
                            filter_size=self.config.background_filter)


@functools.lru_cache(maxsize=4)
def _cached_finder(model, connectivity):
    return DeepColorSegmentation(model=model, connectivity=connectivity)


def detect_sources(data, threshold, n_pixels, *, connectivity=8, mask=None,
                   model=None):
    """
    Detect sources with a deep-coloring network (photutils drop-in).

    Same signature and return value as
    `photutils.segmentation.detect_sources`, but ``threshold`` is a
    probability in (0, 1] and the sources come deblended.

    How it differs from photutils': photutils expects the
    background-subtracted image convolved with a smoothing kernel and a
    threshold in data units (often ``1.5 * background_rms``, a scalar or a
    per-pixel image); here ``data`` is the raw image as it comes from the
    telescope (not convolved, background included: the network estimates
    the background and noise itself), and ``threshold`` is one number, the
    probability that a pixel belongs to a source (0.5 is a good start;
    higher is purer, lower finds fainter sources). A convolved image gives
    many false sources and a `~astro_deepcolor.exceptions.SmoothedImageWarning`;
    a threshold of 0, above 1 or given as an array raises an error.
    No separate deblending step (``deblend_sources``) is needed.

    Parameters
    ----------
    data : 2D array-like
        The raw image; need not be background subtracted, must not be
        convolved.
    threshold : float or str
        Detection threshold: foreground probability, in [0, 1], that
        ``n_pixels`` pixels of a source must reach, or the name of one of
        the model's operating points (e.g. ``'5%'``). Footprints extend
        to the model's ``footprint_threshold`` when the threshold is
        higher (see `DeepColorSegmentation`).
    n_pixels : int
        Minimum number of pixels of a source at or above ``threshold``.
    connectivity : {8, 4}, optional
        Pixel connectivity.
    mask : 2D bool array-like, optional
        True for pixels to ignore.
    model : str, `~pathlib.Path` or `~astro_deepcolor.model.LoadedModel`, optional
        The model (default: shipped).

    Returns
    -------
    segm : `~photutils.segmentation.SegmentationImage` or None
        The sources, or None with a
        `~photutils.utils.exceptions.NoDetectionsWarning`.
    """
    n_pixels = check_positive_int(n_pixels, 'n_pixels')
    check_choice(connectivity, 'connectivity', (4, 8))
    loaded = _as_model(model)
    finder = _cached_finder(loaded, connectivity)
    threshold = resolve_threshold(threshold, finder.config)
    return finder._detect(data, mask, threshold, n_pixels)
