# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Tests of the mesh background estimator and the normalisation."""

import numpy as np
import pytest

from astro_deepcolor.preprocessing import estimate_background, normalize


def _field(shape=(512, 640), seed=0, n_stars=400):
    rng = np.random.default_rng(seed)
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    sky = 500 + 20 * np.sin(xx / 400) + 15 * np.cos(yy / 300)
    rms = 8 + 1.5 * np.sin((xx + yy) / 300)
    img = sky + rng.standard_normal(shape).astype(np.float32) * rms
    y = rng.integers(0, ny, n_stars)
    x = rng.integers(0, nx, n_stars)
    np.add.at(img, (y, x), rng.pareto(1.5, n_stars) * 300)
    return img.astype(np.float32), sky.astype(np.float32), rms.astype(np.float32)


def test_recovers_smooth_sky_and_noise():
    img, sky, rms = _field()
    bkg, noise = estimate_background(img, box_size=64)
    assert bkg.shape == img.shape
    assert bkg.dtype == np.float32
    assert noise.dtype == np.float32
    err = (bkg - sky) / rms
    assert np.median(np.abs(err)) < 0.05
    assert np.percentile(np.abs(err), 99) < 0.3
    # Clipped std of a Gaussian at 3 sigma is ~0.987 sigma (as in SExtractor).
    assert np.median(noise / rms) == pytest.approx(0.987, abs=0.02)


def test_agrees_with_sep():
    sep = pytest.importorskip('sep')
    from astro_deepcolor.simulation import simulate_image

    sim = simulate_image((512, 512), regime='clean', seed=11, density=1.5)
    data = np.array(sim.data, dtype=np.float32)  # sep needs a writeable array
    bkg, noise = estimate_background(data, box_size=64, filter_size=3)
    ref = sep.Background(data, bw=64, bh=64, fw=3, fh=3)
    sep_bkg, sep_rms = ref.back(), ref.rms()
    # Within a few per cent of the rms (median) and never far off.
    d = np.abs(bkg - sep_bkg) / sep_rms
    assert np.median(d) < 0.04
    assert np.percentile(d, 95) < 0.2
    assert np.median(np.abs(noise / sep_rms - 1)) < 0.03
    # And ours is as close to the simulation's truth as sep's.
    ours = np.median(np.abs(bkg - sim.background) / sim.rms)
    theirs = np.median(np.abs(sep_bkg - sim.background) / sim.rms)
    assert ours < 0.1
    assert ours < theirs + 0.04


def test_mask_and_nan_excluded():
    img, sky, rms = _field(seed=1)
    corrupted = img.copy()
    mask = np.zeros(img.shape, bool)
    mask[100:200, 100:300] = True
    corrupted[mask] = 1e6  # a huge masked artefact
    corrupted[300:310, :] = np.nan
    bkg_ref, _ = estimate_background(img)
    bkg, noise = estimate_background(corrupted, mask=mask)
    assert np.isfinite(bkg).all()
    assert np.isfinite(noise).all()
    assert np.median(np.abs(bkg - bkg_ref) / rms) < 0.05
    assert np.max(np.abs(bkg - sky) / rms) < 1.0
    # The input is never modified.
    assert np.isnan(corrupted[305, 0])
    assert corrupted[150, 150] == 1e6


def test_fully_masked_meshes_filled_from_neighbours():
    img, sky, rms = _field(seed=2)
    mask = np.zeros(img.shape, bool)
    mask[:128, :128] = True  # four whole meshes
    bkg, noise = estimate_background(img, mask=mask, box_size=64)
    assert np.isfinite(bkg).all()
    err = np.abs((bkg - sky) / rms)
    # Nearest-good-mesh filling: a fraction of a sigma off in the hole.
    assert err[:128, :128].max() < 1.0
    assert np.percentile(err[128:, 128:], 99) < 0.3
    assert np.all(noise > 0)


def test_constant_image_and_small_images():
    bkg, noise = estimate_background(np.full((50, 70), 3.0), box_size=64)
    np.testing.assert_allclose(bkg, 3.0, atol=1e-5)
    np.testing.assert_allclose(noise, 0.0, atol=1e-5)
    # Non-multiple shapes and two meshes along an axis.
    rng = np.random.default_rng(0)
    img = rng.normal(10, 2, (100, 257)).astype(np.float32)
    bkg, noise = estimate_background(img, box_size=64)
    assert bkg.shape == img.shape
    assert np.abs(bkg - 10).max() < 0.5
    assert np.abs(noise - 2).max() < 0.3


def test_crowded_mesh_uses_median():
    # A mesh full of faint sources is skewed: the mode estimate stays
    # below the mean (SExtractor's 2.5 median - 1.5 mean or median).
    rng = np.random.default_rng(4)
    img = rng.normal(100, 5, (256, 256)).astype(np.float32)
    img[:128] += rng.exponential(10, (128, 256)).astype(np.float32)
    bkg, _ = estimate_background(img, box_size=64)
    assert np.median(bkg[:64]) < np.mean(img[:64])


def test_invalid_parameters():
    img = np.zeros((64, 64))
    with pytest.raises(ValueError, match='data must be a 2D array'):
        estimate_background(np.zeros(10))
    with pytest.raises(ValueError, match='mask must have the same shape'):
        estimate_background(img, mask=np.zeros((3, 3), bool))
    with pytest.raises(ValueError, match='filter_size must be odd'):
        estimate_background(img, filter_size=2)
    with pytest.raises(ValueError, match='box_size must be an integer >= 4'):
        estimate_background(img, box_size=2)
    with pytest.raises(ValueError, match='subsample must divide box_size'):
        estimate_background(img, box_size=64, subsample=3)
    with pytest.raises(ValueError, match='the image has no finite pixel'):
        estimate_background(np.full((64, 64), np.nan))
    mostly_masked = np.ones((64, 64), bool)
    mostly_masked[:4, :4] = False
    with pytest.raises(ValueError, match=r'no 64 x 64 background mesh has 50% '
                                         r'usable pixels: 16 of 4096'):
        estimate_background(np.random.default_rng(1).normal(size=(64, 64)),
                            mask=mostly_masked)


def test_normalize():
    data = np.array([[10.0, 12.0], [np.nan, 14.0]])
    out = normalize(data, 10.0, np.array([[2.0, 2.0], [2.0, 0.0]]),
                    mask=np.array([[False, True], [False, False]]))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0.0, 0.0], [0.0, 0.0]])
    out = normalize(data, 10.0, 2.0)
    np.testing.assert_allclose(out, [[0.0, 1.0], [0.0, 2.0]])


def test_subsample_consistent():
    img, _, rms = _field(seed=5)
    full, _ = estimate_background(img, box_size=64, subsample=1)
    sub, _ = estimate_background(img, box_size=64, subsample='auto')
    assert np.median(np.abs(full - sub) / rms) < 0.05
