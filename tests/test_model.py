# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Tests of ModelConfig and of load_model's validation (no torch needed)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from astro_deepcolor.exceptions import ModelError
from astro_deepcolor.model import (
    DEFAULT_MODEL_PATH,
    METADATA_KEY,
    ModelConfig,
    load_model,
)
from astro_deepcolor.model.config import gflop_per_megapixel, receptive_field

onnx = pytest.importorskip('onnx')
from onnx import TensorProto, helper  # noqa: E402


def test_config_defaults_and_derived():
    c = ModelConfig()
    assert c.n_colors == 5
    assert c.n_outputs == 6
    assert c.tile_multiple == 2**c.depth == 8
    assert c.receptive_field == receptive_field(3) == 96
    assert c.gflop_per_megapixel == pytest.approx(
        gflop_per_megapixel(5, 3, 16))


def test_config_json_round_trip():
    c = ModelConfig(n_colors=8, depth=2, width=12, mu=6.5,
                    training={'steps': 10, 'recipes': {'clean': 1.0}})
    again = ModelConfig.from_json(c.to_json())
    assert again == c
    assert again.training == c.training
    assert again.tile_multiple == 4
    assert json.loads(c.to_json())['format_version'] == 1


@pytest.mark.parametrize(('kwargs', 'match'), [
    ({'n_colors': 0}, 'n_colors must be an integer >= 1'),
    ({'depth': 2.5}, 'depth must be an integer'),
    ({'mu': -1.0}, 'mu must be in'),
    ({'default_threshold': 1.5}, 'default_threshold must be in'),
    ({'asinh_scale': 0.0}, 'asinh_scale must be in'),
    ({'background_filter': 4}, 'background_filter must be odd'),
    ({'depth': 3, 'tile_multiple': 4}, 'tile_multiple must be 2\\*\\*depth'),
    ({'receptive_field': 5}, 'receptive_field must be 96'),
    ({'format_version': 2}, 'format_version 2 is not supported'),
])
def test_config_validation(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        ModelConfig(**kwargs)


def test_config_from_json_errors():
    with pytest.raises(ValueError, match='not valid JSON'):
        ModelConfig.from_json('{nope')
    with pytest.raises(ValueError, match="unknown model configuration keys: \\['foo'\\]"):
        ModelConfig.from_json('{"foo": 1}')
    with pytest.raises(TypeError, match='must be a dict'):
        ModelConfig.from_json('[1, 2]')


def test_flops_match_torch_count():
    torch = pytest.importorskip('torch')
    from astro_deepcolor.model.unet import UNet

    cfg = ModelConfig(width=8, depth=2, n_colors=3)
    net = UNet(cfg).eval()
    macs = []

    def hook(mod, inp, out):
        k = mod.weight.shape
        per_out = k[1] * k[2] * k[3] if isinstance(mod, torch.nn.Conv2d) else k[0] * k[2] * k[3] / 4
        macs.append(per_out * out.shape[1] * out.shape[2] * out.shape[3])

    for m in net.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        net(torch.zeros(1, 1, 64, 64))
    measured = 2 * sum(macs) / (64 * 64) * 1e6 / 1e9
    assert measured == pytest.approx(cfg.gflop_per_megapixel, rel=1e-6)


def test_receptive_field_measured():
    # Gradient of one output pixel w.r.t. the input: its support is the
    # receptive field (bounded above by the formula).
    torch = pytest.importorskip('torch')
    from astro_deepcolor.model.unet import UNet

    cfg = ModelConfig(width=2, depth=2, n_colors=1)
    torch.manual_seed(0)
    net = UNet(cfg).eval()
    x = torch.randn(1, 1, 160, 160).requires_grad_()
    net(x)[0, 1, 80, 80].backward()
    rows = np.flatnonzero(x.grad[0, 0].abs().sum(1).numpy() > 0)
    assert rows.max() - rows.min() + 1 <= cfg.receptive_field
    assert rows.max() - rows.min() + 1 > cfg.receptive_field // 2


def test_import_does_not_import_torch():
    code = ('import sys, astro_deepcolor, astro_deepcolor.model, '
            'astro_deepcolor.preprocessing, astro_deepcolor.model.export, '
            'astro_deepcolor.training.data, astro_deepcolor.training.validation; '
            'print("torch" in sys.modules)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == 'False'


# ---- load_model ---------------------------------------------------------


def _tiny_onnx(n_out=6, config=None, meta=True, input_name='image',
               output_name='probs'):
    """A valid identity-like ONNX graph with the contract's I/O."""
    inp = helper.make_tensor_value_info(input_name, TensorProto.FLOAT,
                                        ['N', 1, 'H', 'W'])
    out = helper.make_tensor_value_info(output_name, TensorProto.FLOAT,
                                        ['N', n_out, 'H', 'W'])
    w = helper.make_tensor('w', TensorProto.FLOAT, [n_out, 1, 1, 1],
                           np.ones(n_out, np.float32))
    conv = helper.make_node('Conv', [input_name, 'w'], ['z'])
    soft = helper.make_node('Softmax', ['z'], [output_name], axis=1)
    graph = helper.make_graph([conv, soft], 'tiny', [inp], [out], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 18)])
    model.ir_version = 8
    if meta:
        entry = model.metadata_props.add()
        entry.key = METADATA_KEY
        entry.value = (config or ModelConfig()).to_json() if meta is True else meta
    return model.SerializeToString()


def test_load_valid(tmp_path):
    path = tmp_path / 'm.onnx'
    path.write_bytes(_tiny_onnx())
    model = load_model(path)
    assert model.config == ModelConfig()
    assert model.path == path
    session = model.make_session()
    x = np.zeros((1, 1, 8, 8), np.float32)
    probs = session.run(None, {'image': x})[0]
    assert probs.shape == (1, 6, 8, 8)
    assert 'n_colors=5' in repr(model)


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match=r'nope.onnx.*does not exist'):
        load_model(tmp_path / 'nope.onnx')
    with pytest.raises(ModelError, match='is not a regular file'):
        load_model(tmp_path)


def test_corrupt_and_truncated(tmp_path):
    bad = tmp_path / 'bad.onnx'
    bad.write_bytes(b'this is not an onnx model at all' * 10)
    with pytest.raises(ModelError, match=r'bad.onnx.*not a valid ONNX model'):
        load_model(bad)
    empty = tmp_path / 'empty.onnx'
    empty.write_bytes(b'')
    with pytest.raises(ModelError, match='is empty'):
        load_model(empty)
    good = _tiny_onnx()
    cut = tmp_path / 'cut.onnx'
    cut.write_bytes(good[:len(good) // 2])
    with pytest.raises(ModelError, match=r'cut.onnx.*not a valid ONNX model'):
        load_model(cut)


def test_metadata_problems(tmp_path):
    path = tmp_path / 'm.onnx'
    path.write_bytes(_tiny_onnx(meta=False))
    with pytest.raises(ModelError, match="has no 'astro_deepcolor' metadata"):
        load_model(path)
    path.write_bytes(_tiny_onnx(meta='{not json'))
    with pytest.raises(ModelError, match=r'invalid .* metadata.*not valid JSON'):
        load_model(path)
    path.write_bytes(_tiny_onnx(meta='{"n_colors": -3}'))
    with pytest.raises(ModelError, match=r'invalid .* metadata.*n_colors'):
        load_model(path)


def test_channel_mismatch(tmp_path):
    path = tmp_path / 'm.onnx'
    path.write_bytes(_tiny_onnx(n_out=4, config=ModelConfig(n_colors=5)))
    with pytest.raises(ModelError, match='output has 4 channels but the metadata says 6'):
        load_model(path)


def test_wrong_io_names(tmp_path):
    path = tmp_path / 'm.onnx'
    path.write_bytes(_tiny_onnx(input_name='x'))
    with pytest.raises(ModelError, match="one input named 'image'"):
        load_model(path)
    path.write_bytes(_tiny_onnx(output_name='y'))
    with pytest.raises(ModelError, match="one output named 'probs'"):
        load_model(path)


def test_shipped_model():
    if not DEFAULT_MODEL_PATH.exists():
        pytest.skip('the shipped model file is not present')
    model = load_model()
    assert model.path == DEFAULT_MODEL_PATH
    cfg = model.config
    session = model.make_session(intra_op_num_threads=1)
    m = cfg.tile_multiple
    # Pure noise (unit variance, the network's input units) is background.
    x = np.random.default_rng(0).standard_normal((1, 1, 16 * m, 16 * m)).astype(np.float32)
    probs = session.run(None, {'image': x})[0]
    assert probs.shape == (1, cfg.n_colors + 1, 16 * m, 16 * m)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert probs[0, 0].mean() > 0.9
    assert np.mean(probs[0, 0] < 0.1) < 0.01
    assert cfg.training.get('steps_done', 0) > 0


def test_grow_state_dict_keeps_the_outer_levels():
    torch = pytest.importorskip('torch')
    from astro_deepcolor.model.unet import UNet, grow_state_dict

    torch.manual_seed(0)
    small = UNet(ModelConfig(width=4, depth=2, n_colors=3)).eval()
    big = UNet(ModelConfig(width=4, depth=3, n_colors=3))
    big.load_state_dict(grow_state_dict(small.state_dict(), small.config, big))
    big.eval()
    # The encoders of the grown network compute what the small one's
    # encoders and bottleneck computed, on the same input.
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        a = torch.asinh(x * small.inv_scale)
        for enc in small.encoders:
            a = small.pool(enc(a))
        a = small.bottleneck(a)
        b = torch.asinh(x * big.inv_scale)
        for i, enc in enumerate(big.encoders):
            b = enc(b)
            if i < len(big.encoders) - 1:
                b = big.pool(b)
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match='can only grow into one of depth 3'):
        grow_state_dict(small.state_dict(), small.config,
                        UNet(ModelConfig(width=8, depth=3, n_colors=3)))
    with pytest.raises(ValueError, match='can only grow'):
        grow_state_dict(small.state_dict(), small.config, small)
