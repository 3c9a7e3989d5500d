# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The SourceXtractor++ ONNX protocol, reproduced with onnxruntime."""

import numpy as np
import pytest
from scipy import ndimage

torch = pytest.importorskip('torch')
pytest.importorskip('onnxscript')

from astro_deepcolor.inference.sourcextractor import SourceXtractorRunner  # noqa: E402
from astro_deepcolor.model.config import ModelConfig  # noqa: E402
from astro_deepcolor.model.export import export_onnx  # noqa: E402
from astro_deepcolor.model.unet import UNet  # noqa: E402

TILE = 64


@pytest.fixture(scope='module')
def runner(tmp_path_factory):
    torch.manual_seed(3)
    net = UNet(ModelConfig(n_colors=3, depth=2, width=4)).eval()
    with torch.no_grad():  # make the planes vary strongly with the input
        for p in net.parameters():
            p.mul_(3.0)
    path = tmp_path_factory.mktemp('sx') / 'sx.onnx'
    export_onnx(net, path, form='sourcextractor', tile_size=TILE)
    return SourceXtractorRunner(path, threshold=0.6, n_pixels=2), net


def _reference_planes(net, image, scale):
    """Pixel by pixel: the tile whose central half holds it, run alone."""
    ny, nx = image.shape
    q = TILE // 4
    x = np.nan_to_num(image / scale).astype(np.float32)
    out = np.zeros((3, ny, nx), np.float32)
    cache = {}
    for y in range(ny):
        for xx in range(nx):
            y0 = -q + (y // (2 * q)) * 2 * q
            x0 = -q + (xx // (2 * q)) * 2 * q
            if (y0, x0) not in cache:
                tile = np.zeros((TILE, TILE), np.float32)  # zeros beyond the image
                ys, ye, xs, xe = max(y0, 0), min(y0 + TILE, ny), max(x0, 0), min(x0 + TILE, nx)
                tile[ys - y0:ye - y0, xs - x0:xe - x0] = x[ys:ye, xs:xe]
                with torch.no_grad():
                    p = torch.softmax(net(torch.from_numpy(tile)[None, None]), 1)
                cache[(y0, x0)] = p[0, 1:].numpy()
            out[:, y, xx] = cache[(y0, x0)][:, y - y0, xx - x0]
    return out


def test_tiles_stride_half_central_half_zero_padding(runner):
    sx, net = runner
    rng = np.random.default_rng(0)
    image = rng.normal(0, 2.0, (70, 90)).astype(np.float32)
    image[20:30, 40:55] += 15
    rms = np.full(image.shape, 2.0, np.float32)
    rms[:, :45] = 1.0   # a per-pixel rms; the protocol divides by its median
    planes = sx.planes(image, background=0.0, rms=rms)
    assert planes.shape == (3, 70, 90)
    ref = _reference_planes(net, image, float(np.median(rms)))
    np.testing.assert_allclose(planes, ref, atol=2e-5)
    # Not the per-pixel rms normalisation.
    other = _reference_planes(net, image / rms * float(np.median(rms)),
                              float(np.median(rms)))
    assert np.abs(other - planes).max() > 1e-3


def test_each_plane_thresholded_and_labelled_alone(runner):
    sx, _ = runner
    planes = np.zeros((3, 20, 20), np.float32)
    planes[0, 2:6, 2:6] = 0.95        # one source in plane 0
    planes[1, 2:6, 6:10] = 0.95       # a touching one in plane 1: kept apart
    planes[0, 12:14, 12:14] = 0.95    # a second one in plane 0
    planes[2, 15, 2] = 0.95           # 1 px: below n_pixels=2
    planes[1, 10:12, 2:4] = 0.55      # below the 0.6 threshold
    segm = sx.segment(planes)
    assert segm.n_labels == 3
    seg = segm.data
    assert len(np.unique(seg[2:6, 2:6])) == 1
    assert len(np.unique(seg[2:6, 6:10])) == 1
    assert seg[2, 2] != seg[2, 6]
    assert (seg[10:12, 2:4] == 0).all()
    assert seg[15, 2] == 0
    _lab, n = ndimage.label(planes[0] >= 0.6, structure=np.ones((3, 3)))
    assert n == 2
    assert sx.segment(planes * 0) is None
    with pytest.raises(ValueError, match='threshold'):
        sx.segment(planes, threshold=2)
