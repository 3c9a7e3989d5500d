# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Export a trained network to ONNX (needs torch, onnx and onnxruntime).

Two forms are written:

``'astro_deepcolor'`` (default)
    input ``image`` float32 (N, 1, H, W), the normalised image
    ``(data - background) / rms``; output ``probs`` float32
    (N, n_colors + 1, H, W), softmax over channels, channel 0 the
    background. This is what `~astro_deepcolor.model.load_model` and the
    detection API read.
``'sourcextractor'``
    the form SourceXtractor++ runs: input float32 NHWC (N, H, W, 1) tile,
    background-subtracted and divided by the rms; output float32 NHWC
    (N, H, W, n_colors), one probability plane per colour and no
    background plane. SourceXtractor++ reads the tile size and the number
    of planes from the model's declared shapes, so this form is written
    with a fixed (1, T, T, 1) input, T = ``tile_size`` (256 by default).

The default form has dynamic N, H and W (H and W multiples of
``tile_multiple``); both carry the `~astro_deepcolor.model.ModelConfig` JSON in ``metadata_props``.
Every export is checked: onnxruntime must reproduce the torch output
within ``atol`` on a test tile, else the file is not written.

Torch is imported inside the functions, so importing this module is cheap.
"""

import io
import warnings
from pathlib import Path

import numpy as np

from astro_deepcolor.exceptions import ModelError
from astro_deepcolor.model.config import METADATA_KEY
from astro_deepcolor.model.io import FORM_KEY, INPUT_NAME, OUTPUT_NAME
from astro_deepcolor.utils._io import atomic_path, check_writable
from astro_deepcolor.utils._parameters import check_choice

__all__ = ['export_onnx', 'verify_onnx']

#: Default opset (the torch.export-based exporter implements >= 18).
OPSET = 18


def _test_input(config, shape=(2, 64, 96), seed=0):
    """A normalised test tile: noise plus a few bright blobs."""
    rng = np.random.default_rng(seed)
    n, ny, nx = shape
    m = config.tile_multiple
    ny, nx = -(-ny // m) * m, -(-nx // m) * m
    x = rng.standard_normal((n, 1, ny, nx)).astype(np.float32)
    yy, xx = np.mgrid[0:ny, 0:nx]
    for _ in range(6):
        cy, cx = rng.uniform(0, ny), rng.uniform(0, nx)
        amp = 10 ** rng.uniform(0.5, 3.5)
        x[:, 0] += (amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)
                    ).astype(np.float32)
    return x


def _torch_reference(net, x, form):
    import torch

    net = net.eval()
    with torch.no_grad():
        probs = torch.softmax(net(torch.from_numpy(x)), dim=1).numpy()
    if form == 'sourcextractor':
        return probs[:, 1:].transpose(0, 2, 3, 1)
    return probs


def verify_onnx(onnx_bytes, net, *, form='astro_deepcolor', atol=1e-4,
                shape=(2, 64, 96)):
    """
    Check that onnxruntime reproduces the torch network.

    Parameters
    ----------
    onnx_bytes : bytes
        The exported model.
    net : ``astro_deepcolor.model.unet.UNet``
        The torch network (evaluated in eval mode).
    form : {'astro_deepcolor', 'sourcextractor'}, optional
        Layout of the exported model.
    atol : float, optional
        Largest allowed absolute difference of the probabilities.
    shape : tuple of 3 int, optional
        Test batch ``(N, H, W)``; rounded up to ``tile_multiple``, and
        deliberately different from the export example shape so that the
        dynamic axes are exercised.

    Returns
    -------
    max_abs_diff : float
        The largest absolute difference found.

    Raises
    ------
    ModelError
        If the difference exceeds ``atol``.
    """
    import onnxruntime as ort

    x = _test_input(net.config, shape)
    ref = _torch_reference(net, x, form)
    session = ort.InferenceSession(onnx_bytes,
                                   providers=['CPUExecutionProvider'])
    feed = x.transpose(0, 2, 3, 1) if form == 'sourcextractor' else x
    name = session.get_inputs()[0].name
    out = session.run(None, {name: np.ascontiguousarray(feed)})[0]
    if out.shape != ref.shape:
        msg = (f'ONNX output shape {out.shape} differs from torch '
               f'{ref.shape}')
        raise ModelError(msg)
    diff = float(np.max(np.abs(out - ref)))
    if not diff <= atol:
        msg = (f'ONNX output differs from torch by {diff:.3g} '
               f'(tolerance {atol:.3g})')
        raise ModelError(msg)
    return diff


def _export_bytes(net, form, opset):
    import torch

    from astro_deepcolor.model.unet import (
        ProbabilityWrapper,
        SourceXtractorWrapper,
    )

    m = net.config.tile_multiple
    if form == 'sourcextractor':
        wrapper = SourceXtractorWrapper(net).eval()
        example = torch.zeros(1, 4 * m, 4 * m, 1)
        h_axis, w_axis = 1, 2
        output_name = 'colors'
    else:
        wrapper = ProbabilityWrapper(net).eval()
        example = torch.zeros(1, 1, 4 * m, 4 * m)
        h_axis, w_axis = 2, 3
        output_name = OUTPUT_NAME
    dim = torch.export.Dim
    dynamic_shapes = {'image': {0: dim('batch', min=1, max=4096),
                                h_axis: m * dim('h', min=1, max=8192),
                                w_axis: m * dim('w', min=1, max=8192)}}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The exporter's own deprecation and progress chatter.
        warnings.simplefilter('ignore')
        torch.onnx.export(wrapper, (example,), buffer, dynamo=True,
                          input_names=[INPUT_NAME],
                          output_names=[output_name],
                          dynamic_shapes=dynamic_shapes,
                          opset_version=opset, verbose=False,
                          optimize=True, external_data=False)
    return buffer.getvalue()


#: Tile side of the SourceXtractor++ form when none is given.
SOURCEXTRACTOR_TILE = 256


def _fix_tile(proto, tile, n_colors):
    """Declare a fixed (1, T, T, 1) -> (1, T, T, C) NHWC signature."""
    from onnx.tools import update_model_dims

    return update_model_dims.update_inputs_outputs_dims(
        proto, {INPUT_NAME: [1, tile, tile, 1]},
        {'colors': [1, tile, tile, n_colors]})


def export_onnx(net, path, *, form='astro_deepcolor', overwrite=False,
                opset=OPSET, atol=1e-4, tile_size=None):
    """
    Export a network (or a training checkpoint) to an ONNX model file.

    Parameters
    ----------
    net : ``astro_deepcolor.model.unet.UNet`` or str or `~pathlib.Path`
        The network, or the path of a training checkpoint.
    path : str or `~pathlib.Path`
        Output ``.onnx`` file.
    form : {'astro_deepcolor', 'sourcextractor'}, optional
        Layout (see the module documentation).
    overwrite : bool, optional
        Whether to replace an existing file.
    opset : int, optional
        ONNX opset (>= 18).
    atol : float, optional
        Tolerance of the onnxruntime-versus-torch parity check.
    tile_size : int, optional
        Only for ``form='sourcextractor'``: the fixed tile side T of the
        exported signature (default 256; a multiple of the model's
        ``tile_multiple``). SourceXtractor++ takes its tile size from it.

    Returns
    -------
    path : `~pathlib.Path`
        The file written.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    ModelError
        If the exported graph does not reproduce the torch network.
    """
    import logging

    import onnx

    from astro_deepcolor.model.unet import UNet, network_from_checkpoint

    check_choice(form, 'form', ('astro_deepcolor', 'sourcextractor'))
    path = check_writable(path, overwrite=overwrite, name='ONNX model')
    if isinstance(net, (str, Path)):
        net = network_from_checkpoint(net)
    if not isinstance(net, UNet):
        msg = f'net must be a UNet or a checkpoint path, got {type(net).__name__}'
        raise TypeError(msg)
    if form == 'sourcextractor':
        tile = SOURCEXTRACTOR_TILE if tile_size is None else tile_size
        m = net.config.tile_multiple
        if (isinstance(tile, bool) or not isinstance(tile, (int, np.integer))
                or tile < m or tile % m):
            msg = (f'tile_size must be a positive multiple of the model tile '
                   f'multiple {m}, got {tile!r}')
            raise ValueError(msg)
    elif tile_size is not None:
        msg = ("tile_size applies to form='sourcextractor' only (the default "
               'form has dynamic height and width)')
        raise ValueError(msg)
    was_training = net.training
    net = net.eval()
    # The exporter logs progress at INFO/WARNING level; keep the CLI quiet.
    logger = logging.getLogger('torch.onnx')
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        data = _export_bytes(net, form, opset)
    finally:
        logger.setLevel(level)
    proto = onnx.load_from_string(data)
    del proto.metadata_props[:]
    for key, value in ((METADATA_KEY, net.config.to_json()), (FORM_KEY, form)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = 'astro_deepcolor'
    shape = (2, 64, 96)
    if form == 'sourcextractor':
        proto = _fix_tile(proto, int(tile), net.config.n_colors)
        shape = (1, int(tile), int(tile))
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    verify_onnx(data, net, form=form, atol=atol, shape=shape)
    with atomic_path(path, overwrite=overwrite, name='ONNX model') as tmp:
        tmp.write_bytes(data)
    net.train(was_training)
    return Path(path)
