# Licensed under a 3-clause BSD style license - see LICENSE.rst
import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.table import QTable
from astropy.wcs import WCS
from numpy.testing import assert_allclose, assert_array_equal
from photutils.segmentation import SegmentationImage

from astro_deepcolor.catalog import (
    DEFAULT_COLUMNS,
    FLAGS,
    catalog_columns,
    detection_probabilities,
    make_catalog,
    windowed_centroids,
)
from astro_deepcolor.postprocessing import segment_probabilities

SHAPE = (64, 96)
SKY = 100.0


def _scene():
    """Two Gaussian sources on a sky of 100 and their segmentation."""
    yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]]
    rng = np.random.default_rng(0)
    image = SKY + rng.normal(0, 1, SHAPE)
    image += 500 * np.exp(-((yy - 20) ** 2 + (xx - 30) ** 2) / 8)
    image += 300 * np.exp(-((yy - 40) ** 2 + (xx - 70) ** 2) / 8)
    probs = np.zeros((3, *SHAPE), np.float32)
    probs[0] = 1
    for (cy, cx), colour, p in (((20, 30), 1, 0.8), ((40, 70), 2, 0.95)):
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 16
        probs[:, disc] = 0
        probs[0, disc] = 1 - p
        probs[colour, disc] = p
    return image, segment_probabilities(probs, 0.5, 5)


def _wcs():
    w = WCS(naxis=2)
    w.wcs.ctype = ['RA---TAN', 'DEC--TAN']
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [1.0, 1.0]
    w.wcs.cdelt = [-1e-4, 1e-4]
    return w


def test_default_columns_and_detection_probability():
    image, segm = _scene()
    table = make_catalog(image, segm)
    assert isinstance(table, QTable)
    assert table.colnames == [c for c in DEFAULT_COLUMNS if c != 'sky_centroid']
    assert table.colnames == catalog_columns()
    assert_array_equal(table['label'], [1, 2])
    assert_allclose(table['detection_probability'], [0.8, 0.95], atol=1e-3)
    assert_allclose(table['x_centroid'], [30, 70], atol=0.05)
    assert_allclose(table['y_centroid'], [20, 40], atol=0.05)
    assert 'estimated' in table.meta['background']


def test_background_is_subtracted_unless_told_otherwise():
    image, segm = _scene()
    estimated = make_catalog(image, segm)
    given = make_catalog(image - SKY, segm, background=0)
    raw_sum = [image[segm.data == lab].sum() for lab in (1, 2)]
    true_sum = [(image - SKY)[segm.data == lab].sum() for lab in (1, 2)]
    assert_allclose(given['segment_flux'], true_sum, rtol=1e-10)
    assert_allclose(estimated['segment_flux'], true_sum, rtol=0.02)
    assert not np.allclose(estimated['segment_flux'], raw_sum, rtol=0.1)
    assert 'given by the user' in given.meta['background']


def test_sky_coordinates_with_wcs():
    image, segm = _scene()
    table = make_catalog(image, segm, wcs=_wcs())
    assert isinstance(table['sky_centroid'], SkyCoord)
    assert_allclose(table['sky_centroid'].dec.deg[0], 2.0 + 20 * 1e-4, atol=1e-6)


def test_any_photutils_property_and_errors():
    image, segm = _scene()
    table = make_catalog(image, segm, error=np.ones(SHAPE),
                         columns=['label', 'fwhm', 'gini', 'segment_flux_err',
                                  'detection_probability'])
    assert table.colnames == ['label', 'fwhm', 'gini', 'segment_flux_err',
                              'detection_probability']
    assert_allclose(table['segment_flux_err'].value
                    if hasattr(table['segment_flux_err'], 'value')
                    else table['segment_flux_err'],
                    np.sqrt(segm.areas), rtol=1e-6)


def test_quantity_masked_and_nonfinite():
    image, segm = _scene()
    bad = image.copy()
    bad[20, 30] = np.nan  # the peak of source 1
    table = make_catalog(bad * u.electron, segm, background=SKY * u.electron)
    assert table['segment_flux'].unit == u.electron
    assert np.isfinite(table['segment_flux']).all()
    masked = make_catalog(np.ma.MaskedArray(image, mask=~np.isfinite(bad)),
                          segm, background=SKY)
    assert_allclose(masked['segment_flux'].value
                    if hasattr(masked['segment_flux'], 'value')
                    else masked['segment_flux'],
                    table['segment_flux'].value, rtol=1e-10)


def test_foreign_segmentation_has_unknown_probability():
    _image, segm = _scene()
    foreign = SegmentationImage(segm.data.copy())
    assert np.isnan(detection_probabilities(foreign)).all()
    # labels removed after detection keep the right probabilities
    segm.remove_label(1)
    assert_allclose(detection_probabilities(segm), [0.95], atol=1e-3)


def test_relabelled_segmentation_never_reports_another_sources_probability():
    _image, segm = _scene()
    segm.remove_label(1)
    segm.relabel_consecutive()  # the 0.95 source is now label 1
    prob = detection_probabilities(segm)
    assert prob.shape == (1,)
    assert np.isnan(prob[0]) or abs(prob[0] - 0.95) < 1e-3
    _image, segm = _scene()
    segm.reassign_labels([1, 2], 3)
    segm.reassign_labels(3, 1)  # both discs now one label 1
    assert np.isnan(detection_probabilities(segm)).all()


def test_bad_inputs():
    image, segm = _scene()
    with pytest.raises(TypeError, match='segm must be a photutils SegmentationImage'):
        make_catalog(image, segm.data)
    with pytest.raises(ValueError, match='does not match the segmentation'):
        make_catalog(image[:10], segm)
    with pytest.raises(ValueError, match='mask must have the same shape'):
        make_catalog(image, segm, mask=np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match='sky_centroid column needs a celestial'):
        make_catalog(image, segm, columns=['label', 'sky_centroid'])
    with pytest.raises(ValueError, match='mag and mag_err columns need a zero'):
        make_catalog(image, segm, columns=['mag'])
    with pytest.raises(ValueError, match='zeropoint must be a finite number'):
        make_catalog(image, segm, zeropoint=np.nan)


def test_magnitudes_follow_kron_flux():
    image, segm = _scene()
    table = make_catalog(image, segm, error=np.ones(SHAPE), zeropoint=25.0)
    assert table.colnames == catalog_columns(zeropoint=25.0)
    assert table.colnames[-2:] == ['mag', 'mag_err']
    flux = np.asarray(table['kron_flux'])
    err = np.asarray(table['kron_flux_err'])
    assert_allclose(table['mag'], 25.0 - 2.5 * np.log10(flux))
    assert_allclose(table['mag_err'], 1.0857362 * err / flux, rtol=1e-6)
    # a brighter source has the smaller magnitude
    assert table['mag'][0] < table['mag'][1]
    assert np.isfinite(table['kron_flux_err']).all()
    assert np.isfinite(table['segment_flux_err']).all()


def test_flags():
    image, segm = _scene()
    image = image.copy()
    # source 1 touches a masked pixel and is saturated; source 2 is
    # moved onto the border by cropping
    mask = np.zeros(SHAPE, bool)
    mask[20, 25] = True
    table = make_catalog(image, segm, mask=mask, saturation=450.0)
    bits = {name: bit for bit, (name, _) in FLAGS.items()}
    assert table['flags'][0] & bits['masked']
    assert table['flags'][0] & bits['saturated']
    assert not table['flags'][1] & (bits['masked'] | bits['saturated'])
    assert not (table['flags'] & (bits['blended'] | bits['truncated'])).any()
    crop = (slice(None), slice(0, 72))  # source 2 (x 66..74) is cut
    cut = SegmentationImage(segm.data[crop])
    near = make_catalog(image[crop], cut)
    assert near['flags'][1] & bits['truncated']
    assert near['flags'][1] & bits['near_edge']
    assert not near['flags'][0] & (bits['truncated'] | bits['near_edge'])
    # two touching footprints are both "blended"
    data = segm.data.copy()
    data[20, 34:66] = 1
    data[20, 66] = 2
    touching = make_catalog(image, SegmentationImage(data))
    assert (touching['flags'] & bits['blended']).all()


@pytest.mark.parametrize('wcs', [None, _wcs()])
def test_empty_catalogue_has_every_column(wcs):
    image, segm = _scene()
    full = make_catalog(image, segm, wcs=wcs, zeropoint=25.0,
                        error=np.ones(SHAPE))
    empty = make_catalog(image, None, wcs=wcs, zeropoint=25.0)
    assert len(empty) == 0
    assert empty.colnames == full.colnames
    for name in full.colnames:
        assert getattr(empty[name], 'unit', None) == getattr(full[name], 'unit', None)


def _star_field(n_side=8, sigma=1.5, amplitude=40.0, dilate=6, seed=1):
    """Gaussian stars at random sub-pixel positions on unit noise, with
    footprints as wide as the network's (threshold + ``dilate`` pixels)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    step = 32
    shape = (n_side * step, n_side * step)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    centres = np.array([(step * (i + 0.5) + rng.uniform(-0.5, 0.5),
                         step * (j + 0.5) + rng.uniform(-0.5, 0.5))
                        for i in range(n_side) for j in range(n_side)])
    clean = np.zeros(shape)
    for cy, cx in centres:
        clean += amplitude * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2)
                                    / (2 * sigma ** 2))
    image = clean + rng.normal(0, 1, shape)
    core = ndimage.label(clean > 3)[0]
    segm = SegmentationImage(ndimage.grey_dilation(core, size=2 * dilate + 1))
    # the label of each star is the one under its centre
    at_centre = segm.data[np.round(centres[:, 0]).astype(int),
                          np.round(centres[:, 1]).astype(int)]
    assert_array_equal(np.sort(at_centre), segm.labels)
    return image, segm, centres[np.argsort(at_centre)]


def test_windowed_centroid_beats_the_isophotal_one_on_wide_footprints():
    # The CNN's footprints reach into the noise; the window's weights make
    # the centroid several times more precise than the flux-weighted mean.
    image, segm, centres = _star_field()
    table = make_catalog(image, segm, background=0)
    assert_array_equal(table['label'], segm.labels)
    err_iso = np.hypot(table['x_centroid'] - centres[:, 1],
                       table['y_centroid'] - centres[:, 0])
    err_win = np.hypot(table['x_win'] - centres[:, 1],
                       table['y_win'] - centres[:, 0])
    assert np.median(err_win) < 0.6 * np.median(err_iso)
    # S/N ~ 250: a tenth of a pixel is a generous bound
    assert np.median(err_win) < 0.1
    x_win, y_win = windowed_centroids(image, segm)
    assert_allclose(x_win, table['x_win'])
    assert_allclose(y_win, table['y_win'])


def test_windowed_centroid_ignores_masked_pixels():
    image, segm, centres = _star_field(n_side=2)
    x0, _ = windowed_centroids(image, segm)
    hot = image.copy()
    cy, cx = np.round(centres[0]).astype(int)
    hot[cy + 2, cx + 2] = 1e5
    mask = np.zeros(image.shape, bool)
    mask[cy + 2, cx + 2] = True
    x1, y1 = windowed_centroids(hot, segm, mask=mask)
    assert_allclose(x1[1:], x0[1:])
    assert abs(x1[0] - centres[0, 1]) < 0.2
    assert abs(y1[0] - centres[0, 0]) < 0.2
    x2, _ = windowed_centroids(hot, segm)  # unmasked: the hot pixel pulls it
    assert x2[0] - centres[0, 1] > 1


def test_windowed_centroid_stays_in_its_own_segment():
    # A segment cut out of a bright star's wing has no peak of its own: the
    # window would run to the star's centre, so it keeps its isophotal
    # centroid, inside the segment.
    yy, xx = np.mgrid[:64, :64]
    image = 1000 * np.exp(-((yy - 32) ** 2 + (xx - 32) ** 2) / (2 * 3.0 ** 2))
    seg = np.zeros((64, 64), int)
    seg[(yy - 32) ** 2 + (xx - 32) ** 2 <= 9] = 1
    seg[28:37, 37:41] = 2
    segm = SegmentationImage(seg)
    x_win, y_win = windowed_centroids(image, segm)
    assert_allclose([x_win[0], y_win[0]], [32, 32], atol=1e-3)
    assert seg[round(y_win[1]), round(x_win[1])] == 2


def test_wcs_without_celestial_axes_is_refused_clearly():
    image, segm = _scene()
    linear = WCS(naxis=2)  # CTYPE '' '': pixel-like axes only
    with pytest.raises(ValueError, match='wcs has no celestial axes'):
        make_catalog(image, segm, wcs=linear)
    # a celestial WCS with a spectral axis works through its celestial part
    cube = WCS(naxis=3)
    cube.wcs.ctype = ['RA---TAN', 'DEC--TAN', 'FREQ']
    cube.wcs.crval = [150.0, 2.0, 1e9]
    cube.wcs.crpix = [1.0, 1.0, 1.0]
    cube.wcs.cdelt = [-1e-4, 1e-4, 1e6]
    table = make_catalog(image, segm, wcs=cube)
    expected = _wcs().pixel_to_world(table['x_centroid'], table['y_centroid'])
    assert table['sky_centroid'].separation(expected).max().to_value(u.arcsec) < 1e-6
