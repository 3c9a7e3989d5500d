# Licensed under a 3-clause BSD style license - see LICENSE.rst
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import QTable, Table
from astropy.wcs import WCS
from numpy.testing import assert_array_equal
from regions import Regions

from astro_deepcolor.cli import main


def _image(shape=(120, 160), n=25, seed=4):
    rng = np.random.default_rng(seed)
    img = rng.normal(100, 5, shape)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    for cy, cx in rng.uniform(0, 1, (n, 2)) * shape:
        img += 200 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8)
    return img


def _header():
    w = WCS(naxis=2)
    w.wcs.ctype = ['RA---TAN', 'DEC--TAN']
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [60.0, 50.0]
    w.wcs.cdelt = [-7e-5, 7e-5]
    header = w.to_header()
    header['OBJECT'] = 'test field'
    header['EXPTIME'] = 90.0
    return header


@pytest.fixture
def fits_image(tmp_path):
    path = tmp_path / 'image.fits'
    # big-endian float32 in an extension, as survey images often are
    hdul = fits.HDUList([fits.PrimaryHDU(),
                         fits.ImageHDU(_image().astype('>f4'), header=_header(),
                                       name='SCI')])
    hdul.writeto(path)
    return path


def _run(args, model):
    return main(['detect', *args, '--model', str(model), '--quiet'])


def test_round_trip_keeps_wcs_and_header(fits_image, tmp_path, tiny_model_path):
    cat = tmp_path / 'cat.ecsv'
    seg = tmp_path / 'segm.fits'
    reg = tmp_path / 'sources.reg'
    status = _run([str(fits_image), '--catalog', str(cat), '--segmentation',
                   str(seg), '--regions', str(reg)], tiny_model_path)
    assert status == 0
    table = QTable.read(cat)
    assert len(table) > 3
    assert isinstance(table['sky_centroid'], SkyCoord)
    assert 'detection_probability' in table.colnames
    with fits.open(seg) as hdul:
        header = hdul[0].header
        data = hdul[0].data
    assert data.dtype.kind == 'i'
    assert data.shape == (120, 160)
    assert_array_equal(np.unique(data)[1:], table['label'])
    assert header['OBJECT'] == 'test field'
    assert header['DCNSRC'] == len(table)
    wcs_in = WCS(_header())
    wcs_out = WCS(header)
    assert wcs_out.wcs.ctype[0] == 'RA---TAN'
    assert np.allclose(wcs_out.wcs.crval, wcs_in.wcs.crval)
    # sky positions of the catalogue come from that WCS
    sky = wcs_out.pixel_to_world(table['x_centroid'], table['y_centroid'])
    # (photutils gives no centroid, hence no sky position, to a source
    # whose background-subtracted flux is not positive)
    sep = sky.separation(table['sky_centroid']).arcsec
    finite = np.isfinite(np.asarray(table['x_centroid'], float))
    assert finite.sum() >= len(table) - 1
    assert np.all(sep[finite] < 1e-6)
    assert np.all(np.isnan(sep[~finite]))
    # the image has a WCS: DS9 regions in sky coordinates
    regions = Regions.read(reg, format='ds9')
    assert len(regions) == finite.sum()  # sources without centroid: none
    first = np.flatnonzero(finite)[0]
    assert regions[first].center.separation(
        table['sky_centroid'][first]).arcsec < 1e-3


def test_refuses_to_overwrite(fits_image, tmp_path, tiny_model_path, capsys):
    cat = tmp_path / 'cat.fits'
    cat.write_text('precious')
    status = _run([str(fits_image), '--catalog', str(cat)], tiny_model_path)
    assert status == 2
    assert cat.read_text() == 'precious'
    err = capsys.readouterr().err
    assert 'exists' in err
    assert len(err.strip().splitlines()) == 1
    status = _run([str(fits_image), '--catalog', str(cat), '--overwrite'],
                  tiny_model_path)
    assert status == 0
    assert len(Table.read(cat)) > 3
    assert not list(tmp_path.glob('.cat*'))  # no temporary left behind


def test_mask_and_hdu(fits_image, tmp_path, tiny_model_path):
    mask = np.zeros((120, 160), np.uint8)
    mask[:, 80:] = 1
    fits.writeto(tmp_path / 'mask.fits', mask)
    seg = tmp_path / 'segm.fits'
    status = _run([str(fits_image), '--hdu', 'SCI', '--mask',
                   str(tmp_path / 'mask.fits'), '--segmentation', str(seg),
                   '--region-shape', 'point'], tiny_model_path)
    assert status == 0
    data = fits.getdata(seg)
    assert data[:, :80].any()
    assert not data[:, 80:].any()


@pytest.mark.parametrize(('setup', 'args', 'message'), [
    ('missing', [], 'does not exist'),
    ('text', [], 'not a readable FITS file'),
    ('table', [], 'has no image HDU'),
    ('image', ['--hdu', '7'], 'has no such HDU'),
    ('image', ['--hdu', '0'], 'has no image data'),
    ('image', ['--threshold', '2'], 'threshold is the probability, in (0, 1]'),
    ('image', ['--n-pixels', '0'], 'n_pixels must be an integer >= 1'),
    ('image', ['--footprint-threshold', '1.5'], 'footprint_threshold must be a number in'),
    ('cube', [], 'select one with --plane N (0 to 2)'),
    ('image', ['--flips'], 'with flips=True give threshold as a probability'),
])
def test_bad_input_one_line_error(setup, args, message, fits_image, tmp_path,
                                  tiny_model_path, capsys):
    path = {'image': fits_image}.get(setup, tmp_path / f'{setup}.fits')
    if setup == 'text':
        path.write_text('not a FITS file at all')
    elif setup == 'table':
        fits.HDUList([fits.PrimaryHDU(),
                      fits.BinTableHDU(Table({'a': [1, 2]}))]).writeto(path)
    elif setup == 'cube':
        fits.writeto(path, np.zeros((3, 20, 20), np.float32))
    status = _run([str(path), '--catalog', str(tmp_path / 'c.ecsv'), *args],
                  tiny_model_path)
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / 'c.ecsv').exists()


def test_footprint_threshold(fits_image, tmp_path, tiny_model_path):
    """Footprints at 0.8 contain the footprints cut at the threshold."""
    segs = {}
    for level in ('0.8', 'none'):
        seg = tmp_path / f'segm_{level}.fits'
        status = _run([str(fits_image), '--hdu', 'SCI', '--threshold', '0.9',
                       '--footprint-threshold', level, '--segmentation',
                       str(seg)], tiny_model_path)
        assert status == 0
        segs[level] = fits.getdata(seg) > 0
    assert segs['none'].any()
    # Nearly every pixel of a footprint cut at the threshold lies in a
    # footprint at 0.8 (not all: the flicker repair of this untrained
    # model can decide differently on the larger components).
    assert (segs['0.8'] & segs['none']).sum() > 0.9 * segs['none'].sum()
    assert segs['0.8'].sum() > segs['none'].sum()


def test_flips_matches_the_finder(fits_image, tmp_path, tiny_model_path):
    """--flips detects as DeepColorSegmentation(flips=True) does."""
    from astro_deepcolor import DeepColorSegmentation

    seg = tmp_path / 'segm.fits'
    assert _run([str(fits_image), '--hdu', 'SCI', '--flips', '--threshold', '0.25',
                 '--segmentation', str(seg)], tiny_model_path) == 0
    finder = DeepColorSegmentation(0.25, model=tiny_model_path, flips=True)
    expected = finder(fits.getdata(fits_image, 'SCI'))
    assert expected.n_labels > 0
    assert_array_equal(fits.getdata(seg), expected.data)


def test_needs_an_output(fits_image, tiny_model_path, capsys):
    assert _run([str(fits_image)], tiny_model_path) == 2
    assert 'nothing to write' in capsys.readouterr().err


def test_batch_mode_is_delegated(fits_image, tmp_path, monkeypatch,
                                 tiny_model_path):
    """Batch mode gets the finder the same options build in single mode."""
    import astro_deepcolor.batch as batch

    seen = {}

    class FakeBatch:
        def __init__(self, finder, **kwargs):
            seen['finder'] = finder
            seen.update(kwargs)

        def __call__(self, inputs, out):
            from astro_deepcolor.batch import BatchResult

            seen['inputs'] = inputs
            return BatchResult(out_dir=out, catalog=out, manifest=out)

    monkeypatch.setattr(batch, 'BatchDetector', FakeBatch)
    status = _run([str(fits_image), str(fits_image), '--out',
                   str(tmp_path / 'out'), '--workers', '2', '--threshold',
                   '0.7', '--weight-suffix', 'image=weight', '--mask-suffix',
                   '.dq'], tiny_model_path)
    assert status == 0
    assert seen['inputs'] == [str(fits_image)] * 2
    assert seen['n_workers'] == 2
    assert seen['weight_suffix'] == 'image=weight'
    assert seen['mask_suffix'] == '.dq'
    assert seen['weight_type'] == 'weight'
    finder = seen['finder']
    assert finder.threshold == 0.7
    assert finder.footprint_threshold == finder.config.footprint_threshold
    assert str(finder.model.path) == str(tiny_model_path)


def test_batch_mode_refuses_single_file_options(fits_image, tmp_path,
                                               tiny_model_path, capsys):
    status = _run([str(fits_image), str(fits_image), '--out',
                   str(tmp_path / 'out'), '--weight', str(fits_image)],
                  tiny_model_path)
    assert status == 2
    assert '--weight-suffix' in capsys.readouterr().err
    status = _run([str(fits_image), '--catalog', str(tmp_path / 'c.ecsv'),
                   '--weight-suffix', 'ooi=oow'], tiny_model_path)
    assert status == 2
    assert 'batch-mode rules' in capsys.readouterr().err
