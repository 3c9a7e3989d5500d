# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Shared pytest fixtures."""

import pytest


@pytest.fixture(scope='session')
def tiny_model_path(tmp_path_factory):
    """
    A tiny random-weight deep-coloring model file (needs torch).

    ``ModelConfig(n_colors=3, depth=2, width=4)``, exported with the
    package's own exporter (so it follows the model-file contract) with
    weights scaled up so that the random network gives varied colours.
    Receptive field 44 px, tile multiple 4. Used by the inference,
    catalogue and CLI tests, which check plumbing, not detection quality.
    """
    torch = pytest.importorskip('torch')
    pytest.importorskip('onnx')
    from astro_deepcolor.model import ModelConfig
    from astro_deepcolor.model.export import export_onnx
    from astro_deepcolor.model.unet import UNet

    torch.manual_seed(0)
    net = UNet(ModelConfig(n_colors=3, depth=2, width=4))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3)
    path = tmp_path_factory.mktemp('model') / 'tiny.onnx'
    export_onnx(net, path)
    return path
