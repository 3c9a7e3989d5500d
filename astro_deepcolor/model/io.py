# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Loading and validating deep-coloring ONNX model files (no torch).

A model file is an ONNX graph with input ``image`` (N, 1, H, W) and output
``probs`` (N, n_colors + 1, H, W), whose ``metadata_props`` hold the
`~astro_deepcolor.model.ModelConfig` as JSON under the key
``astro_deepcolor``. `load_model` checks all of this up front and raises
`~astro_deepcolor.exceptions.ModelError` naming the file and the problem,
so that a bad file never fails later, deep inside onnxruntime.
"""

from functools import cached_property
from pathlib import Path

from astro_deepcolor.exceptions import ModelError
from astro_deepcolor.model.config import METADATA_KEY, ModelConfig

__all__ = ['DEFAULT_MODEL_PATH', 'FORM_KEY', 'INPUT_NAME', 'OUTPUT_NAME',
           'LoadedModel', 'load_model']

#: The model shipped with the package.
DEFAULT_MODEL_PATH = (Path(__file__).resolve().parents[1] / 'data'
                      / 'deepcolor_default.onnx')

#: Name of the graph input (normalised image, NCHW).
INPUT_NAME = 'image'

#: Name of the graph output (probabilities, NCHW).
OUTPUT_NAME = 'probs'

#: Metadata key naming the form of an exported model
#: ('astro_deepcolor' or 'sourcextractor').
FORM_KEY = 'astro_deepcolor_form'


def _session_options(intra_op_num_threads=None, optimize=True):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if intra_op_num_threads is not None:
        options.intra_op_num_threads = int(intra_op_num_threads)
    if not optimize:
        options.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.log_severity_level = 3
    return options


class LoadedModel:
    """
    A validated deep-coloring model file.

    Create it with `load_model`; the constructor does no validation.

    Parameters
    ----------
    path : `~pathlib.Path`
        The ONNX file.
    onnx_bytes : bytes
        The file content.
    config : `~astro_deepcolor.model.ModelConfig`
        The configuration read from the file's metadata.
    """

    def __init__(self, path, onnx_bytes, config):
        self.path = Path(path)
        self.onnx_bytes = onnx_bytes
        self.config = config

    def __repr__(self):
        return (f'<LoadedModel {str(self.path)!r}: n_colors={self.config.n_colors}, '
                f'depth={self.config.depth}, width={self.config.width}>')

    @cached_property
    def available_providers(self):
        """The onnxruntime execution providers available here."""
        import onnxruntime as ort

        return list(ort.get_available_providers())

    def make_session(self, providers=None, *, intra_op_num_threads=None):
        """
        Create an `onnxruntime.InferenceSession` for this model.

        Parameters
        ----------
        providers : list of str, optional
            Execution providers in order of preference (default: CPU).
        intra_op_num_threads : int, optional
            Number of threads (default: onnxruntime's choice).

        Returns
        -------
        session : `onnxruntime.InferenceSession`
            The session; feed ``{'image': array}``.
        """
        import onnxruntime as ort

        if providers is None:
            providers = ['CPUExecutionProvider']
        options = _session_options(intra_op_num_threads)
        return ort.InferenceSession(self.onnx_bytes, options,
                                    providers=list(providers))


def _fail(path, problem):
    msg = f'model file {str(path)!r}: {problem}'
    raise ModelError(msg)


def _check_dims(path, what, dims, n_channels):
    if len(dims) != 4:
        _fail(path, f'{what} must be 4D (N, C, H, W), got shape {dims!r}')
    channels = dims[1]
    if isinstance(channels, int) and channels != n_channels:
        _fail(path, f'{what} has {channels} channels but the metadata says '
                    f'{n_channels}')


def load_model(path=None):
    """
    Load and validate a deep-coloring ONNX model.

    Parameters
    ----------
    path : str or `~pathlib.Path`, optional
        The ONNX file. Default: the model shipped with the package
        (``astro_deepcolor/data/deepcolor_default.onnx``).

    Returns
    -------
    model : `LoadedModel`
        The validated model (config, path, bytes, session factory).

    Raises
    ------
    ModelError
        If the file does not exist, is not a (complete) ONNX model, lacks
        the ``astro_deepcolor`` metadata or has invalid metadata, or its
        input/output do not match the configuration.
    """
    import onnxruntime as ort

    path = DEFAULT_MODEL_PATH if path is None else Path(path)
    if not path.exists():
        _fail(path, 'does not exist')
    if not path.is_file():
        _fail(path, 'is not a regular file')
    data = path.read_bytes()
    if not data:
        _fail(path, 'is empty')
    try:
        session = ort.InferenceSession(
            data, _session_options(1, optimize=False),
            providers=['CPUExecutionProvider'])
    except Exception as exc:  # onnxruntime raises several private types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ''
        _fail(path, 'is not a valid ONNX model (corrupt or truncated file)'
                    + (f': {first[:200]}' if first else ''))
    meta = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in meta:
        _fail(path, f'has no {METADATA_KEY!r} metadata (not an '
                    'astro_deepcolor model?)')
    if meta.get(FORM_KEY, 'astro_deepcolor') != 'astro_deepcolor':
        _fail(path, f'is a {meta[FORM_KEY]!r}-form export (e.g. NHWC for '
                    'SourceXtractor++), not the astro_deepcolor form')
    try:
        config = ModelConfig.from_json(meta[METADATA_KEY])
    except (TypeError, ValueError) as exc:
        _fail(path, f'has invalid {METADATA_KEY!r} metadata: {exc}')
    inputs = session.get_inputs()
    outputs = session.get_outputs()
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        _fail(path, f'must have one input named {INPUT_NAME!r}, got '
                    f'{[i.name for i in inputs]}')
    if len(outputs) != 1 or outputs[0].name != OUTPUT_NAME:
        _fail(path, f'must have one output named {OUTPUT_NAME!r}, got '
                    f'{[o.name for o in outputs]}')
    _check_dims(path, 'input', inputs[0].shape, 1)
    _check_dims(path, 'output', outputs[0].shape, config.n_outputs)
    if not isinstance(outputs[0].shape[1], int):
        _fail(path, 'output channel count must be fixed, got '
                    f'{outputs[0].shape[1]!r}')
    return LoadedModel(path, data, config)
