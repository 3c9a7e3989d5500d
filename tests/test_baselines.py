# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Tests of the baseline detector adapters on hand-made images."""

import numpy as np
import pytest
from photutils.segmentation import SegmentationImage

from astro_deepcolor.baselines import (
    DETECTORS,
    BaseDetector,
    NoiseChiselDetector,
    PhotutilsDetector,
    SepDetector,
    SExtractorDetector,
    prepare_image,
    segment_catalog,
)
from astro_deepcolor.evaluation import match_sources

FWHM = 3.0


def make_image(shape=(160, 160), n=25, seed=3, big_endian=False):
    """Gaussian stars (peak S/N 20-60) on a flat sky with white noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape)
    x = rng.uniform(12, shape[1] - 12, n)
    y = rng.uniform(12, shape[0] - 12, n)
    # keep stars apart so every detector can separate them
    keep = np.ones(n, bool)
    for i in range(n):
        d = np.hypot(x[:i] - x[i], y[:i] - y[i])
        keep[i] = not np.any(d[keep[:i]] < 10)
    x, y = x[keep], y[keep]
    sigma = FWHM / 2.3548
    img = np.full(shape, 100.0)
    for xi, yi, a in zip(x, y, rng.uniform(100, 300, x.size), strict=True):
        img += a * np.exp(-((xx - xi) ** 2 + (yy - yi) ** 2) / (2 * sigma**2))
    img = rng.normal(img, 5.0).astype('>f4' if big_endian else np.float32)
    truth = {'x': x, 'y': y}
    return img, truth


def truth_table(truth):
    from astropy.table import QTable

    return QTable({'x': truth['x'], 'y': truth['y']})


def params(cls):
    reason = cls.unavailable_reason()
    return pytest.param(cls, marks=pytest.mark.skipif(
        reason is not None, reason=reason or ''), id=cls.name)


ALL = [params(c) for c in DETECTORS.values()]


@pytest.mark.parametrize('cls', ALL)
def test_recovers_stars_big_endian(cls):
    img, truth = make_image(big_endian=True)
    det = cls(fwhm=FWHM)
    t = 0.3 if cls is NoiseChiselDetector else 3.0
    segm, table = det(img, t)
    assert isinstance(segm, SegmentationImage)
    for col in ('label', 'x', 'y', 'flux'):
        assert col in table.colnames
    # labels of the table are those of the segmentation
    assert set(np.asarray(table['label'])) <= set(segm.labels)
    m = match_sources(truth_table(truth), table, radius=1.5)
    assert m.tp / len(truth['x']) >= 0.95
    assert m.fp <= 2
    # centroids are 0-based and accurate
    assert np.median(m.separation) < 0.3
    assert np.all(np.asarray(table['flux'])[m.detection_index] > 0)


@pytest.mark.parametrize('cls', ALL)
def test_mask_and_nan(cls):
    img, truth = make_image()
    img = img.copy()
    mask = np.zeros(img.shape, bool)
    mask[:, :60] = True
    img[5:9, 100:104] = np.nan
    t = 0.3 if cls is NoiseChiselDetector else 3.0
    segm, table = cls(fwhm=FWHM)(img, t, mask=mask)
    assert np.all(np.isfinite(table['x']))
    # nothing detected well inside the mask
    assert not np.any(np.asarray(table['x']) < 55)
    if segm is not None:
        assert not segm.data[:, :60].any()
    visible = truth['x'] > 66
    m = match_sources(truth_table({'x': truth['x'][visible],
                                   'y': truth['y'][visible]}), table, radius=1.5)
    assert m.tp >= visible.sum() - 1


@pytest.mark.parametrize('cls', ALL)
def test_sweep_monotone_and_empty(cls):
    img, _ = make_image()
    det = cls(fwhm=FWHM)
    if cls is NoiseChiselDetector:
        return  # its parameters are not a monotone threshold
    counts = [len(tab) for _, _, tab in det.sweep(img, [2.0, 5.0, 1000.0])]
    assert counts[0] >= counts[1] > 0
    assert counts[2] == 0
    segm, table = det(img, 1000.0)
    assert segm is None
    assert len(table) == 0


def test_sep_threshold_semantics():
    img, _ = make_image()
    n_conv = len(SepDetector(fwhm=FWHM)(img, 1.0)[1])
    n_matched = len(SepDetector(fwhm=FWHM, filter_type='matched')(img, 1.0)[1])
    # the matched-filter S/N cut is far deeper at the same number: noise peaks
    assert n_matched > n_conv
    with pytest.raises(ValueError, match='filter_type must be'):
        SepDetector(filter_type='x')
    with pytest.raises(ValueError, match='kernel must be'):
        SepDetector(kernel='box')


def test_validation_and_availability():
    with pytest.raises(ValueError, match='fwhm must be a positive number'):
        SepDetector(fwhm=-1)
    with pytest.raises(ValueError, match='n_pixels must be an integer'):
        PhotutilsDetector(n_pixels=0)
    with pytest.raises(TypeError, match='abstract'):
        BaseDetector()
    for cls in DETECTORS.values():
        assert cls.available() is (cls.unavailable_reason() is None)
    assert 'sep' in repr(SepDetector()) or 'SepDetector' in repr(SepDetector())
    with pytest.raises(ValueError, match='data must be a 2D image'):
        prepare_image(np.zeros(5))
    with pytest.raises(ValueError, match='mask must have the shape'):
        prepare_image(np.zeros((4, 4)), np.zeros((3, 3), bool))


def test_missing_binary_is_reported(monkeypatch):
    monkeypatch.setenv('PATH', '/nonexistent')
    assert not SExtractorDetector.available()
    assert 'source-extractor' in SExtractorDetector.unavailable_reason()
    assert not NoiseChiselDetector.available()
    assert 'gnuastro' in NoiseChiselDetector.unavailable_reason()
    with pytest.raises(RuntimeError, match='unavailable'):
        SExtractorDetector()(np.zeros((20, 20)), 1.0)


def test_prepare_image_and_catalog():
    data = np.arange(16, dtype='>f8').reshape(4, 4)
    data[0, 0] = np.nan
    out, bad = prepare_image(data, np.eye(4, dtype=bool))
    assert out.dtype.isnative
    assert out.dtype == np.float32
    assert bad.sum() == 4
    assert out[0, 0] == 0
    seg = np.zeros((5, 5), int)
    seg[1:3, 1:3] = 2
    seg[4, 4] = 5
    img = np.zeros((5, 5))
    img[1, 1] = 3.0
    img[2, 2] = 1.0
    tab = segment_catalog(seg, img)
    assert tab['label'].tolist() == [2, 5]
    np.testing.assert_allclose(tab['x'], [1.25, 4.0])
    np.testing.assert_allclose(tab['y'], [1.25, 4.0])
    np.testing.assert_allclose(tab['flux'], [4.0, 0.0])
    assert tab['area'].tolist() == [4, 1]
    assert len(segment_catalog(np.zeros((3, 3), int), img[:3, :3])) == 0


@pytest.mark.skipif(not NoiseChiselDetector.available(),
                    reason=NoiseChiselDetector.unavailable_reason() or '')
def test_noisechisel_parameters():
    img, _ = make_image()
    det = NoiseChiselDetector(fwhm=FWHM)
    grid = det.default_sweep()
    assert len(grid) == 18
    assert grid[0] == (0.1, 0.9)
    _, strict = det(img, (0.3, 0.999))
    _, loose = det(img, (0.3, 0.9))
    assert len(loose) >= len(strict) > 0
    _, whole = NoiseChiselDetector(fwhm=FWHM, deblend=False)(img, 0.3)
    assert len(whole) > 0


def test_noisechisel_retries_with_fewer_false_detections(monkeypatch):
    """Gnuastro's 'too few pseudo-detections' stop gets one retry."""
    import subprocess
    import types

    from astro_deepcolor.baselines.noisechisel import MIN_NUM_FALSE, NoiseChiselDetector

    calls = []

    def fake_run(args, **kwargs):
        calls.append(list(args))
        if any(a.startswith('--minnumfalse') for a in args):
            return types.SimpleNamespace(returncode=0, stderr='')
        return types.SimpleNamespace(
            returncode=1, stderr="only 54 pseudo-detections ... less than 100 "
                                 "(value to '--minnumfalse' option)")

    monkeypatch.setattr(subprocess, 'run', fake_run)
    det = NoiseChiselDetector.__new__(NoiseChiselDetector)
    det.timeout, det.n_fallbacks, det.last_error = 10.0, 0, None
    assert det._run(['astnoisechisel', 'image.fits'])
    assert calls == [['astnoisechisel', 'image.fits'],
                     ['astnoisechisel', 'image.fits', f'--minnumfalse={MIN_NUM_FALSE}']]
    assert det.n_fallbacks == 1
    # any other failure is not retried
    calls.clear()
    monkeypatch.setattr(subprocess, 'run', lambda args, **kw: (
        calls.append(args), types.SimpleNamespace(returncode=2, stderr='bad input'))[1])
    assert not det._run(['astnoisechisel', 'x.fits'])
    assert len(calls) == 1
    assert det.last_error == 'bad input'
