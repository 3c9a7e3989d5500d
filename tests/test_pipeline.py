# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Tests of astro_deepcolor.pipeline: one per-image pipeline behind every
mode, weight maps as SExtractor takes them, header-driven photometry.
"""

import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import QTable
from astropy.wcs import WCS
from numpy.testing import assert_allclose, assert_array_equal
from photutils.segmentation import SegmentationImage
from photutils.utils.exceptions import NoDetectionsWarning

from astro_deepcolor.catalog import FLAGS, catalog_columns
from astro_deepcolor.pipeline import (
    derive_path,
    detect_image,
    error_from_weight,
    measure_image,
    parse_fits_spec,
    read_fits_map,
)
from astro_deepcolor.simulation import simulate_image

DATA = Path(__file__).parents[1] / '..' / 'shared' / 'data' / 'real'
DECAM = DATA / 'legacypipe' / 'testcase4'
SHAPE = (192, 256)
_BIT = {name: bit for bit, (name, _) in FLAGS.items()}


def _header(wcs):
    header = fits.Header()
    if wcs:
        w = WCS(naxis=2)
        w.wcs.ctype = ['RA---TAN', 'DEC--TAN']
        w.wcs.crval = [150.0, 2.0]
        w.wcs.crpix = [100.0, 90.0]
        w.wcs.cdelt = [-7e-5, 7e-5]
        header = w.to_header()
    header['OBJECT'] = 'pipeline test'
    return header


@pytest.fixture(scope='module')
def scene():
    """A simulated image, its inverse-variance map with a dead column."""
    sim = simulate_image(SHAPE, seed=5, density=2.0)
    data = np.array(sim.data, dtype=np.float32)
    weight = (1.0 / np.asarray(sim.rms, dtype=np.float64) ** 2).astype(np.float32)
    weight[:, 200] = 0.0  # zero weight = masked
    # a noisier half, which the weight map knows and the image's mesh rms
    # only roughly
    rng = np.random.default_rng(0)
    noisy = np.zeros(SHAPE, bool)
    noisy[:, :96] = True
    data[noisy] += rng.normal(0, 2 * np.asarray(sim.rms)[noisy])
    weight[noisy] /= 5.0
    return data, weight


@pytest.fixture(scope='module')
def finder(tiny_model_path):
    from astro_deepcolor import DeepColorSegmentation

    return DeepColorSegmentation(model=tiny_model_path, tile_shape=256,
                                 n_threads=1)


@pytest.fixture(scope='module')
def client():
    distributed = pytest.importorskip('distributed')
    client = distributed.Client(processes=False, n_workers=1,
                                threads_per_worker=1, dashboard_address=':0')
    yield client
    client.close()


def _values(column):
    return np.asarray(getattr(column, 'value', column), dtype=float)


def _assert_same_catalogue(a, b, *, skip=()):
    assert a.colnames == b.colnames
    assert len(a) == len(b)
    for name in a.colnames:
        if name in skip:
            continue
        if isinstance(a[name], SkyCoord):
            assert_allclose(a[name].ra.deg, b[name].ra.deg, rtol=0, atol=1e-9)
            assert_allclose(a[name].dec.deg, b[name].dec.deg, rtol=0, atol=1e-9)
            continue
        assert_allclose(_values(a[name]), _values(b[name]), rtol=1e-5,
                        atol=1e-6, equal_nan=True, err_msg=name)


@pytest.mark.parametrize('use_weight', [False, True])
@pytest.mark.parametrize('wcs', [False, True])
def test_every_mode_gives_the_same_catalogue(scene, finder, tiny_model_path,
                                             client, tmp_path, wcs,
                                             use_weight):
    """``detect img.fits --catalog``, batch mode and detect_mosaic agree."""
    import dask
    import dask.array as da

    from astro_deepcolor.batch import BatchDetector, detect_mosaic
    from astro_deepcolor.cli import main

    data, weight = scene
    header = _header(wcs)
    image = tmp_path / 'field.fits'
    fits.PrimaryHDU(data, header=header).writeto(image)
    weight_file = tmp_path / 'field.weight.fits'
    fits.PrimaryHDU(weight).writeto(weight_file)
    w = weight if use_weight else None

    # one file on the command line
    cat = tmp_path / 'cli.fits'
    args = ['detect', str(image), '--catalog', str(cat), '--model',
            str(tiny_model_path), '--tile-size', '256', '--quiet']
    if use_weight:
        args += ['--weight', str(weight_file)]
    assert main(args) == 0
    cli = QTable.read(cat)
    assert cli.colnames == catalog_columns(wcs=WCS(header) if wcs else None)
    assert len(cli) > 5
    assert np.isfinite(_values(cli['segment_flux_err'])).all()
    assert np.isfinite(_values(cli['detection_probability'])).all()

    # batch mode (the same finder, the weight file by its naming rule)
    out = tmp_path / 'batch'
    batch = BatchDetector(finder, weight_suffix='.weight' if use_weight else None)
    result = batch([str(image)], out, client=client)
    assert (result.n_done, result.n_failed) == (1, 0)
    per_image = QTable.read(out / 'catalogs' / 'field.hdu000.cat.fits')
    _assert_same_catalogue(per_image, cli)

    # mosaic: labels chunk by chunk, measured by the same pipeline
    with warnings.catch_warnings(), dask.config.set(scheduler='synchronous'):
        warnings.simplefilter('ignore', NoDetectionsWarning)
        labels, n = detect_mosaic(da.from_array(data, chunks=128), finder,
                                  weight=w, chunks=128)
        labels = labels.compute()
        labels_p, n_p, prob = detect_mosaic(
            da.from_array(data, chunks=128), finder, weight=w, chunks=128,
            return_probability=True)
        np.testing.assert_array_equal(labels_p.compute(), labels)
    assert n == n_p == len(cli)
    segm = SegmentationImage(labels)
    # the labels alone carry no detection probabilities ...
    mosaic = measure_image(finder, data, segm, header, weight=w)
    assert np.isnan(_values(mosaic['detection_probability'])).all()
    _assert_same_catalogue(mosaic, cli, skip=('detection_probability',))
    # ... return_probability gives them
    segm.info = {'detection_probability': prob, 'labels': segm.labels}
    mosaic = measure_image(finder, data, segm, header, weight=w)
    _assert_same_catalogue(mosaic, cli)

    # and the Python function itself
    segm, table = detect_image(finder, data, header, weight=w)
    assert_array_equal(segm.data, labels)
    _assert_same_catalogue(table, cli)


def test_weight_map_sets_the_noise(scene, finder):
    data, weight = scene
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', NoDetectionsWarning)
        segm, table = detect_image(finder, data, weight=weight)
    w64 = weight.astype(np.float64)
    sigma2 = np.where(w64 > 0, 1.0 / np.where(w64 > 0, w64, 1), 0.0)
    expected = [np.sqrt(np.sum(sigma2[segm.data == lab]))
                for lab in table['label']]
    assert_allclose(_values(table['segment_flux_err']), expected, rtol=1e-5)
    # zero weight is masked: no source pixel on the dead column, and the
    # sources next to it are flagged
    assert not segm.data[:, 200].any()
    touching = np.unique(segm.data[:, [199, 201]])
    touching = touching[touching > 0]
    flagged = table['label'][(table['flags'] & _BIT['masked']) > 0]
    assert set(touching) <= set(flagged)
    # the same weight as variance or rms maps gives the same result
    variance = np.where(weight > 0, 1.0 / np.where(weight > 0, weight, 1), 0)
    _, as_var = detect_image(finder, data, weight=variance,
                             weight_type='variance')
    _, as_err = detect_image(finder, data, error=np.sqrt(variance))
    assert_allclose(_values(as_var['segment_flux_err']),
                    _values(table['segment_flux_err']), rtol=1e-5)
    assert_allclose(_values(as_err['kron_flux']), _values(table['kron_flux']),
                    rtol=1e-5)
    assert 'variance map' in as_var.meta['error']


def test_weight_helpers(tmp_path):
    error, bad = error_from_weight(np.array([[4.0, 0.0], [np.inf, 1.0]]))
    assert_array_equal(bad, [[False, True], [True, False]])
    assert_allclose(error, [[0.5, 0.75], [0.75, 1.0]])  # median fills
    with pytest.raises(ValueError, match='weight_type must be one of'):
        error_from_weight(np.ones((2, 2)), 'ivar')
    with pytest.raises(ValueError, match='no valid pixel'):
        error_from_weight(np.zeros((2, 2)))
    assert parse_fits_spec('w.fits[1]') == ('w.fits', 1)
    assert parse_fits_spec('w.fits[N2]') == ('w.fits', 'N2')
    assert parse_fits_spec('w.fits') == ('w.fits', None)
    name = 'c4d_170316_062107_ooi_z_ls9.N2.fits.fz'
    assert Path(derive_path(f'/d/{name}', 'ooi=oow')).name == name.replace(
        'ooi', 'oow')
    assert derive_path('/d/img.fits.fz', '.weight') == '/d/img.weight.fits.fz'
    with pytest.raises(ValueError, match="'oow' does not occur"):
        derive_path('/d/img.fits', 'oow=ood')
    path = tmp_path / 'w.fits'
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((3, 4), '>f4')),
                  fits.ImageHDU(np.full((3, 4), 2.0), name='B')]).writeto(path)
    assert read_fits_map(path, (3, 4)).dtype.isnative
    assert read_fits_map(f'{path}[B]', (3, 4))[0, 0] == 2.0
    assert read_fits_map(path, (3, 4), hdu=2)[0, 0] == 2.0  # the image's HDU
    with pytest.raises(ValueError, match=r'has shape \(3, 4\), the image'):
        read_fits_map(path, (5, 5))
    with pytest.raises(FileNotFoundError, match='--weight file'):
        read_fits_map(tmp_path / 'nope.fits', (3, 4))


def test_nothing_found_gives_every_column(finder):
    flat = np.full((64, 64), 10.0, np.float32)
    with pytest.warns(NoDetectionsWarning):
        segm, table = detect_image(finder, flat, zeropoint=25.0)
    assert segm is None
    assert len(table) == 0
    assert table.colnames == catalog_columns(zeropoint=25.0)


@pytest.mark.shared_data
@pytest.mark.skipif(not DECAM.is_dir(),
                    reason='needs ../shared/data/real/legacypipe/testcase4')
def test_decam_weight_map_sets_errors_and_snr(tmp_path):
    """A real DECam CCD cutout with its oow (inverse variance) and ood
    (data quality) files: errors and S/N follow the weight map."""
    from astro_deepcolor import DeepColorSegmentation
    from astro_deepcolor.batch import read_image_hdu

    stem = 'c4d_170316_062107_{}_z_ls9.N2.fits'
    data, header = read_image_hdu(DECAM / stem.format('ooi'), 1)
    weight = fits.getdata(DECAM / stem.format('oow'), 1).astype(np.float32)
    dq = fits.getdata(DECAM / stem.format('ood'), 1)
    finder = DeepColorSegmentation(n_threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', NoDetectionsWarning)
        segm, table = detect_image(finder, data, header, weight=weight,
                                   mask=dq != 0)
        _, mesh = detect_image(finder, data, header, mask=dq != 0)
    assert segm is not None
    assert len(table) >= 3
    # the zero point comes from the primary header (INHERIT = T)
    assert table.meta['zeropoint'] == header['MAGZERO']
    assert np.isfinite(table['mag']).any()
    # errors are the weight map's: sqrt(sum 1/w) over each segment
    sigma2 = np.where(weight > 0, 1.0 / np.where(weight > 0, weight, 1), 0.0)
    expected = [np.sqrt(sigma2[segm.data == lab].sum())
                for lab in table['label']]
    assert_allclose(_values(table['segment_flux_err']), expected, rtol=1e-4)
    assert np.isfinite(_values(table['kron_flux_err'])).all()
    # the weight map and the image's own mesh rms agree on this CCD's sky
    # noise to within 25 % (the weight map is the survey's noise model)
    ratio = (np.median(_values(mesh['segment_flux_err'])
                       / np.sqrt(_values(mesh['area'])))
             / np.median(np.sqrt(sigma2[weight > 0])))
    assert 0.75 < ratio < 1.25
    # S/N follows the weight map: 4 x the weight, 2 x the S/N
    seg_image = SegmentationImage(segm.data)
    base = measure_image(finder, data, seg_image, header, weight=weight,
                         mask=dq != 0)
    quad = measure_image(finder, data, seg_image, header, weight=4 * weight,
                         mask=dq != 0)
    snr = _values(base['kron_flux']) / _values(base['kron_flux_err'])
    snr4 = _values(quad['kron_flux']) / _values(quad['kron_flux_err'])
    assert_allclose(snr4, 2 * snr, rtol=1e-5)
    assert_allclose(_values(quad['mag_err']), _values(base['mag_err']) / 2,
                    rtol=1e-5)
    # the zero-weight pixels (cosmic ray, bad pixels) are masked
    dead = weight == 0
    assert dead.any()
    assert not segm.data[dead].any()
