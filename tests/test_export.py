# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Tests of the ONNX export (both forms) and its parity with torch."""

import numpy as np
import pytest

torch = pytest.importorskip('torch')
pytest.importorskip('onnx')
pytest.importorskip('onnxscript')

import onnx  # noqa: E402

from astro_deepcolor.exceptions import ModelError  # noqa: E402
from astro_deepcolor.model import (  # noqa: E402
    FORM_KEY,
    METADATA_KEY,
    ModelConfig,
    load_model,
)
from astro_deepcolor.model.export import (  # noqa: E402
    _test_input,
    export_onnx,
    verify_onnx,
)
from astro_deepcolor.model.unet import UNet  # noqa: E402


@pytest.fixture(scope='module')
def net():
    torch.manual_seed(1)
    net = UNet(ModelConfig(width=4, depth=2, n_colors=3, training={'steps_done': 7}))
    # Non-trivial BatchNorm statistics, so that folding is exercised.
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(2, 1, 32, 32) * 5)
    return net.eval()


@pytest.fixture(scope='module')
def exported(net, tmp_path_factory):
    path = tmp_path_factory.mktemp('onnx') / 'model.onnx'
    export_onnx(net, path)
    return path


def test_astro_form_loads_and_matches_torch(net, exported):
    model = load_model(exported)
    assert model.config == net.config
    assert model.config.training == {'steps_done': 7}
    proto = onnx.load(exported)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta[FORM_KEY] == 'astro_deepcolor'
    assert ModelConfig.from_json(meta[METADATA_KEY]) == net.config
    assert proto.opset_import[0].version >= 17
    # Dynamic N, H, W: a shape different from the export example.
    session = model.make_session(intra_op_num_threads=1)
    x = _test_input(net.config, (3, 40, 72), seed=5)
    got = session.run(None, {'image': x})[0]
    with torch.no_grad():
        ref = torch.softmax(net(torch.from_numpy(x)), 1).numpy()
    assert got.shape == (3, 4, 40, 72)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    # asinh is inside the graph, BatchNorm is folded away.
    ops = {n.op_type for n in proto.graph.node}
    assert 'Asinh' in ops
    assert 'BatchNormalization' not in ops


@pytest.mark.slow  # two exports and onnxruntime sessions: about a minute on 2 cores
def test_sourcextractor_form(net, tmp_path):
    path = export_onnx(net, tmp_path / 'sx.onnx', form='sourcextractor',
                       tile_size=64)
    proto = onnx.load(path)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta[FORM_KEY] == 'sourcextractor'

    # SourceXtractor++ reads the tile size and plane count from the
    # declared shapes: they must be fixed numbers.
    def dims(value_info):
        return [d.dim_value for d in value_info.type.tensor_type.shape.dim]

    assert dims(proto.graph.input[0]) == [1, 64, 64, 1]
    assert dims(proto.graph.output[0]) == [1, 64, 64, 3]
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    x = _test_input(net.config, (1, 64, 64), seed=2)
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    out = session.run(None, {session.get_inputs()[0].name: nhwc})[0]
    assert out.shape == (1, 64, 64, 3)  # NHWC, colours only
    with torch.no_grad():
        ref = torch.softmax(net(torch.from_numpy(x)), 1).numpy()
    np.testing.assert_allclose(out, ref[:, 1:].transpose(0, 2, 3, 1), atol=1e-4)
    # It is not the astro_deepcolor form: load_model refuses it clearly.
    with pytest.raises(ModelError, match=r"sx.onnx.*'sourcextractor'-form export"):
        load_model(path)


def test_sourcextractor_tile_size_checked(net, tmp_path):
    with pytest.raises(ValueError, match='tile_size must be a positive multiple'):
        export_onnx(net, tmp_path / 'a.onnx', form='sourcextractor', tile_size=30)
    with pytest.raises(ValueError, match="tile_size applies to form='sourcextractor'"):
        export_onnx(net, tmp_path / 'b.onnx', tile_size=64)
    assert not (tmp_path / 'a.onnx').exists()


def test_overwrite_and_bad_form(net, exported):
    with pytest.raises(FileExistsError, match='exists'):
        export_onnx(net, exported)
    with pytest.raises(ValueError, match='form must be one of'):
        export_onnx(net, exported.with_name('x.onnx'), form='keras')
    with pytest.raises(TypeError, match='net must be a UNet'):
        export_onnx(object(), exported.with_name('y.onnx'))


def test_verify_detects_mismatch(net, exported):
    other = UNet(net.config).eval()
    with pytest.raises(ModelError, match='differs from torch'):
        verify_onnx(exported.read_bytes(), other)
    assert verify_onnx(exported.read_bytes(), net) < 1e-4


@pytest.mark.slow  # a full checkpoint export with the parity check: about a minute
def test_cli_export_from_checkpoint(net, tmp_path):
    from astro_deepcolor.cli import main

    ckpt = tmp_path / 'ck.pt'
    torch.save({'model': net.state_dict(), 'config': net.config.to_dict()}, ckpt)
    out = tmp_path / 'cli.onnx'
    assert main(['export-onnx', str(ckpt), str(out)]) == 0
    assert load_model(out).config == net.config
    # Refuses to overwrite without --overwrite (exit status 2).
    assert main(['export-onnx', str(ckpt), str(out)]) == 2
    bad = tmp_path / 'bad.pt'
    bad.write_bytes(b'garbage')
    assert main(['export-onnx', str(bad), str(tmp_path / 'z.onnx')]) == 2
