# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
`ModelConfig`: the hyper-parameters that travel with a model's weights.

The configuration is stored as JSON in the ``astro_deepcolor`` key of an
ONNX file's ``metadata_props`` and in every training checkpoint, so that a
model file alone is enough to preprocess, run and post-process correctly.
"""

import dataclasses
import itertools
import json
import numbers

__all__ = ['FORMAT_VERSION', 'METADATA_KEY', 'ModelConfig', 'gflop_per_megapixel',
           'receptive_field']

#: Version of the model-file contract written by this code.
FORMAT_VERSION = 1

#: Key of the configuration JSON in the ONNX ``metadata_props``.
METADATA_KEY = 'astro_deepcolor'


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        msg = f'{name} must be an integer >= {minimum}, got {value!r}'
        raise TypeError(msg)
    if value < minimum:
        msg = f'{name} must be an integer >= {minimum}, got {value!r}'
        raise ValueError(msg)
    return int(value)


def _check_real(value, name, *, low=None, high=None, low_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        msg = f'{name} must be a real number, got {value!r}'
        raise TypeError(msg)
    value = float(value)
    bad = value != value  # NaN
    if low is not None:
        bad |= value <= low if low_open else value < low
    if high is not None:
        bad |= value > high
    if bad:
        lo = '(' if low_open else '['
        msg = f'{name} must be in {lo}{low}, {high}], got {value!r}'
        raise ValueError(msg)
    return value


def receptive_field(depth):
    """
    Receptive field (pixels) of the ``UNet`` (``astro_deepcolor.model.unet``).

    Two 3x3 convolutions per encoder level, 2x2 max pooling, two 3x3
    convolutions at the bottleneck, 2x2 transposed-convolution upsampling and two 3x3
    convolutions per decoder level.

    Parameters
    ----------
    depth : int
        Number of down-sampling steps.

    Returns
    -------
    rf : int
        The receptive field side in pixels.
    """
    rf = 1
    for level in range(depth):
        rf += 4 * 2**level  # two 3x3 convs
        rf += 2**level  # 2x2 max pool
    rf += 4 * 2**depth  # bottleneck convs
    for level in range(depth):
        rf += 4 * 2**level  # decoder convs
    return rf


def gflop_per_megapixel(n_colors, depth, width):
    """
    Floating-point operations of one U-Net forward pass, per megapixel.

    Counts the multiply-adds of every convolution (2 FLOP each); BatchNorm
    is folded, and ReLU, pooling and softmax are negligible.

    Parameters
    ----------
    n_colors, depth, width : int
        Architecture, as in `ModelConfig`.

    Returns
    -------
    gflop : float
        GFLOP per megapixel of input image.
    """
    widths = [width * 2**i for i in range(depth + 1)]
    macs = 0.0
    cin = 1
    for level in range(depth):  # encoder
        w = widths[level]
        macs += 9 * (cin * w + w * w) / 4**level
        cin = w
    w = widths[depth]  # bottleneck
    macs += 9 * (cin * w + w * w) / 4**depth
    for level in reversed(range(depth)):  # decoder
        w = widths[level]
        macs += widths[level + 1] * w / 4**level  # transposed conv 2x2, stride 2
        macs += 9 * (2 * w * w + w * w) / 4**level
    macs += widths[0] * (n_colors + 1)  # 1x1 head
    return 2 * macs * 1e6 / 1e9


def _check_reliability_map(value, name):
    if not isinstance(value, dict):
        msg = f'{name} must be a dict, got {value!r}'
        raise TypeError(msg)
    if value:
        x = value.get('probability')
        y = value.get('reliability')
        if (not isinstance(x, list) or not isinstance(y, list) or len(x) != len(y)
                or len(x) < 2 or any(b <= a for a, b in itertools.pairwise(x))):
            msg = (f"{name} must hold equal-length lists 'probability' "
                   "(increasing, >= 2 values) and 'reliability'")
            raise ValueError(msg)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """
    Configuration of a deep-coloring model (frozen, JSON-serialisable).

    Parameters
    ----------
    n_colors : int, optional
        Number of colour channels C (the network outputs C + 1 channels,
        channel 0 being the background).
    depth : int, optional
        Number of 2x down-sampling steps of the U-Net.
    width : int, optional
        Number of feature maps at full resolution; doubled at each level.
    halo_radius : int, optional
        Radius (pixels) of the halo around each footprint used to assign
        colours during training (neighbours within this distance are
        pushed to different colours).
    mu : float, optional
        Weight of the halo term in the colour assignment.
    min_area : int, optional
        Footprints with fewer pixels are ignored by the loss (neither
        source nor background).
    default_threshold : float, optional
        Default probability threshold for detection (the finder's and
        the command line's default): the calibrated operating point named
        by ``default_operating_point`` when the model has one.
    footprint_threshold : float or None, optional
        Default probability at which footprints are delimited (see
        `astro_deepcolor.postprocessing`); None: at the detection
        threshold.
    operating_points : dict, optional
        Calibrated thresholds by name, e.g. ``{'5%': 0.93, '1%': 0.97}``:
        the probability threshold that gives that contamination on the
        validation images (``benchmarks/calibrate_thresholds.py``). A
        finder accepts these names as ``threshold``.
    default_operating_point : str or None, optional
        The name in ``operating_points`` whose threshold is
        ``default_threshold``.
    reliability_map : dict, optional
        ``{'probability': [...], 'reliability': [...]}``: a monotone map
        from the network's peak probability of a detection to the fraction
        of such detections that are real on the validation images
        (`astro_deepcolor.evaluation.calibration.fit_reliability_map`);
        empty when the model was not calibrated.
    reliability_map_flips : dict, optional
        The same map for detection with ``flips=True`` (foreground
        probability averaged over the image and its three flips), whose
        operating points are named ``'<name>+flips'`` in
        ``operating_points``; empty when not calibrated.
    background_box : int, optional
        Mesh size of the background estimator used for the input.
    background_filter : int, optional
        Median filter size (meshes) of the background estimator.
    asinh_scale : float, optional
        The first operation of the network is ``asinh(x / asinh_scale)``
        on the normalised image (units of the noise rms).
    tile_multiple : int, optional
        Input height and width must be multiples of this; must equal
        ``2**depth`` (the default when omitted).
    receptive_field : int, optional
        Receptive field in pixels; computed from ``depth`` when omitted.
    format_version : int, optional
        Version of the model-file format.
    training : dict, optional
        Free-form training metadata (data recipe, steps, seed, ...).
    """

    n_colors: int = 5
    depth: int = 3
    width: int = 16
    halo_radius: int = 8
    mu: float = 5.0
    min_area: int = 5
    default_threshold: float = 0.5
    footprint_threshold: float | None = 0.8
    operating_points: dict = dataclasses.field(default_factory=dict)
    default_operating_point: str | None = None
    reliability_map: dict = dataclasses.field(default_factory=dict)
    reliability_map_flips: dict = dataclasses.field(default_factory=dict)
    background_box: int = 64
    background_filter: int = 3
    asinh_scale: float = 2.0
    tile_multiple: int | None = None
    receptive_field: int | None = None
    format_version: int = FORMAT_VERSION
    training: dict = dataclasses.field(default_factory=dict, compare=False)

    def __post_init__(self):
        setter = object.__setattr__
        setter(self, 'n_colors', _check_int(self.n_colors, 'n_colors', 1))
        setter(self, 'depth', _check_int(self.depth, 'depth', 1))
        setter(self, 'width', _check_int(self.width, 'width', 1))
        setter(self, 'halo_radius',
               _check_int(self.halo_radius, 'halo_radius', 1))
        setter(self, 'mu', _check_real(self.mu, 'mu', low=0.0))
        setter(self, 'min_area', _check_int(self.min_area, 'min_area', 1))
        setter(self, 'default_threshold',
               _check_real(self.default_threshold, 'default_threshold',
                           low=0.0, high=1.0))
        if self.footprint_threshold is not None:
            setter(self, 'footprint_threshold',
                   _check_real(self.footprint_threshold, 'footprint_threshold',
                               low=0.0, high=1.0))
        if not isinstance(self.operating_points, dict):
            msg = f'operating_points must be a dict, got {self.operating_points!r}'
            raise TypeError(msg)
        setter(self, 'operating_points', {
            str(k): _check_real(v, f'operating_points[{k!r}]', low=0.0, high=1.0)
            for k, v in self.operating_points.items()})
        if self.default_operating_point is not None:
            if self.default_operating_point not in self.operating_points:
                msg = (f'default_operating_point {self.default_operating_point!r} '
                       f'is not one of operating_points '
                       f'{sorted(self.operating_points)}')
                raise ValueError(msg)
            if (self.operating_points[self.default_operating_point]
                    != self.default_threshold):
                msg = ('default_threshold must equal the threshold of the '
                       'default operating point')
                raise ValueError(msg)
        for name in ('reliability_map', 'reliability_map_flips'):
            _check_reliability_map(getattr(self, name), name)
        setter(self, 'background_box',
               _check_int(self.background_box, 'background_box', 4))
        setter(self, 'background_filter',
               _check_int(self.background_filter, 'background_filter', 1))
        if self.background_filter % 2 == 0:
            msg = ('background_filter must be odd, got '
                   f'{self.background_filter!r}')
            raise ValueError(msg)
        setter(self, 'asinh_scale',
               _check_real(self.asinh_scale, 'asinh_scale', low=0.0,
                           low_open=True))
        multiple = 2**self.depth
        if self.tile_multiple is None:
            setter(self, 'tile_multiple', multiple)
        elif self.tile_multiple != multiple:
            msg = (f'tile_multiple must be 2**depth = {multiple}, '
                   f'got {self.tile_multiple!r}')
            raise ValueError(msg)
        rf = receptive_field(self.depth)
        if self.receptive_field is None:
            setter(self, 'receptive_field', rf)
        elif self.receptive_field != rf:
            msg = (f'receptive_field must be {rf} for depth {self.depth}, '
                   f'got {self.receptive_field!r}')
            raise ValueError(msg)
        if self.format_version != FORMAT_VERSION:
            msg = (f'format_version {self.format_version!r} is not supported '
                   f'(this version reads {FORMAT_VERSION})')
            raise ValueError(msg)
        if not isinstance(self.training, dict):
            msg = f'training must be a dict, got {self.training!r}'
            raise TypeError(msg)

    @property
    def n_outputs(self):
        """Number of output channels, ``n_colors + 1``."""
        return self.n_colors + 1

    @property
    def gflop_per_megapixel(self):
        """Forward-pass cost in GFLOP per megapixel (see `gflop_per_megapixel`)."""
        return gflop_per_megapixel(self.n_colors, self.depth, self.width)

    def to_dict(self):
        """
        Return the configuration as a plain dict.

        Returns
        -------
        config : dict
            Field name to value.
        """
        return dataclasses.asdict(self)

    def to_json(self):
        """
        Return the configuration as a JSON string.

        Returns
        -------
        text : str
            Compact, key-sorted JSON.
        """
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, mapping):
        """
        Build a configuration from a dict, rejecting unknown keys.

        Parameters
        ----------
        mapping : dict
            Field name to value.

        Returns
        -------
        config : `ModelConfig`
            The configuration.
        """
        if not isinstance(mapping, dict):
            msg = f'model configuration must be a dict, got {type(mapping).__name__}'
            raise TypeError(msg)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(mapping) - names)
        if unknown:
            msg = f'unknown model configuration keys: {unknown}'
            raise ValueError(msg)
        return cls(**mapping)

    @classmethod
    def from_json(cls, text):
        """
        Build a configuration from `to_json` output.

        Parameters
        ----------
        text : str or bytes
            The JSON text.

        Returns
        -------
        config : `ModelConfig`
            The configuration.
        """
        try:
            mapping = json.loads(text)
        except (TypeError, ValueError) as exc:
            msg = f'model configuration is not valid JSON: {exc}'
            raise ValueError(msg) from None
        return cls.from_dict(mapping)

    def replace(self, **changes):
        """
        Return a copy with some fields changed (derived fields recomputed).

        Parameters
        ----------
        **changes
            Field values to change.

        Returns
        -------
        config : `ModelConfig`
            The new configuration.
        """
        if 'depth' in changes:
            changes.setdefault('tile_multiple', None)
            changes.setdefault('receptive_field', None)
        return dataclasses.replace(self, **changes)
