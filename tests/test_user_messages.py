# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
What a new user meets first: photutils habits and the messages of the
command-line tool (issue 13). Each test pins the message.
"""

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.convolution import Gaussian2DKernel, convolve
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from astro_deepcolor import DeepColorSegmentation, detect_sources
from astro_deepcolor.cli import main
from astro_deepcolor.exceptions import SmoothedImageWarning
from astro_deepcolor.preprocessing import estimate_background, noise_correlation
from astro_deepcolor.utils._parameters import check_threshold


def _sky(shape=(128, 128), seed=3, n=12):
    rng = np.random.default_rng(seed)
    img = rng.normal(100.0, 5.0, shape)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    for cy, cx in rng.uniform(0.1, 0.9, (n, 2)) * shape:
        img += 150 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 6)
    return img


def _convolved(img, fwhm=3.0):
    kernel = Gaussian2DKernel(fwhm / 2.355, x_size=9, y_size=9)
    return convolve(img - np.median(img), kernel)


# -- photutils habits --------------------------------------------------------

@pytest.mark.parametrize(('value', 'error', 'message'), [
    (0.0, ValueError, r'got 0\.0, which would make the whole image one source'),
    (0, ValueError, 'whole image one source'),
    (-0.5, ValueError, r'threshold is the probability, in \(0, 1\].*got -0\.5'),
    (1.5, ValueError, r'not a level in data units or in sigma.*got 1\.5'),
    (float('nan'), ValueError, 'got nan'),
])
def test_threshold_must_be_a_probability(value, error, message):
    with pytest.raises(error, match=message):
        check_threshold(value)
    with pytest.raises(error, match=message):
        detect_sources(np.zeros((32, 32)), value, 5)


def test_threshold_string_is_an_operating_point_name():
    with pytest.raises(TypeError, match=r"got '0\.5'"):
        check_threshold('0.5')
    with pytest.raises(ValueError, match=r"threshold '0\.5' is not an operating point"):
        detect_sources(np.zeros((32, 32)), '0.5', 5)


def test_threshold_array_is_described_not_printed():
    threshold = 1.5 * np.full((512, 512), 7.25)  # photutils: 1.5 * bkg_rms
    with pytest.raises(TypeError) as info:
        detect_sources(np.zeros((512, 512)), threshold, 5)
    text = str(info.value)
    assert 'an array of shape (512, 512) (values 10.9 to 10.9)' in text
    assert 'per-pixel threshold image is not needed' in text
    assert len(text) < 400  # the array itself is never printed
    with pytest.raises(TypeError, match=r'an array of shape \(512, 512\)'):
        DeepColorSegmentation(threshold=threshold)


def test_noise_correlation_tells_raw_from_convolved():
    raw = _sky()
    assert abs(noise_correlation(raw)) < 0.15
    # a strong sky gradient and bright sources do not look like smoothing
    yy, xx = np.mgrid[:128, :128]
    assert abs(noise_correlation(raw + 2.0 * xx + 0.5 * yy)) < 0.15
    assert noise_correlation(_convolved(raw, 2.0)) > 0.6
    assert noise_correlation(_convolved(raw, 3.0)) > 0.8
    # too little to measure: NaN, not a guess
    assert np.isnan(noise_correlation(np.full((64, 64), 3.0)))
    mask = np.ones((128, 128), bool)
    assert np.isnan(noise_correlation(raw, mask))


def test_convolved_input_warns_with_what_to_pass(tiny_model_path):
    finder = DeepColorSegmentation(model=tiny_model_path)
    with pytest.warns(SmoothedImageWarning,
                      match=r'looks smoothed or convolved: the noise of '
                            r'neighbouring pixels is correlated at 0\.[89]\d.*'
                            r'Pass the raw image'):
        finder.predict(_convolved(_sky(), 3.0))
    with warnings.catch_warnings():
        warnings.simplefilter('error', SmoothedImageWarning)
        finder.predict(_sky())  # the raw image: no warning


def test_detect_sources_docstring_explains_the_difference():
    doc = detect_sources.__doc__
    assert "How it differs from photutils'" in doc
    assert 'not convolved' in doc
    assert 'probability' in doc


# -- images that cannot be used -----------------------------------------------

@pytest.mark.parametrize(('data', 'message'), [
    (np.zeros((80, 80)), 'the image is constant: every finite pixel equals 0'),
    (np.full((80, 80), 12.5), 'every finite pixel equals 12.5'),
    (np.full((80, 80), np.nan), 'no finite pixel: all 6400 pixels are NaN or infinite'),
])
def test_constant_and_nan_images_differ(data, message, tiny_model_path):
    finder = DeepColorSegmentation(model=tiny_model_path)
    with pytest.raises(ValueError, match=message):
        finder.estimate_background(data)
    if not np.isfinite(data).any():
        with pytest.raises(ValueError, match=message):
            estimate_background(data, box_size=16)


# -- the command line -------------------------------------------------------

def _detect(args, model):
    return main(['detect', *args, '--model', str(model), '--quiet'])


@pytest.mark.parametrize(('data', 'message'), [
    (np.zeros((64, 64), np.float32), 'the image is constant'),
    (np.full((64, 64), np.nan, np.float32), 'the image has no finite pixel'),
])
def test_cli_constant_and_nan(data, message, tmp_path, tiny_model_path, capsys):
    path = tmp_path / 'img.fits'
    fits.writeto(path, data)
    assert _detect([str(path), '--catalog', str(tmp_path / 'c.ecsv')],
                   tiny_model_path) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1


def test_cli_truncated_fits(tmp_path, tiny_model_path, capsys):
    path = tmp_path / 'cut.fits'
    fits.writeto(path, np.ones((512, 512), np.float32))
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 2])
    assert _detect([str(path), '--catalog', str(tmp_path / 'c.ecsv')],
                   tiny_model_path) == 2
    err = capsys.readouterr().err.strip()
    assert f"{str(path)!r} is truncated or corrupt" in err
    assert 'reshape' not in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize('where', ['under_a_file', 'proc'])
def test_cli_unwritable_output_named_as_written(where, tmp_path, tiny_model_path,
                                                capsys):
    image = tmp_path / 'img.fits'
    fits.writeto(image, _sky().astype(np.float32))
    if where == 'proc':
        if not Path('/proc').is_dir():
            pytest.skip('no /proc on this system')
        target = '/proc/nope.ecsv'
    else:
        (tmp_path / 'afile').write_text('x')
        target = str(tmp_path / 'afile' / 'cat.ecsv')
    assert _detect([str(image), '--catalog', target], tiny_model_path) == 2
    err = capsys.readouterr().err.strip()
    assert f'cannot write catalogue file {target!r}' in err
    assert '/.nope' not in err  # no temporary name
    assert '.cat.' not in err
    assert len(err.splitlines()) == 1


def test_unknown_option_prints_the_subcommand_usage(capsys):
    with pytest.raises(SystemExit) as info:
        main(['detect', 'x.fits', '--catalogue', 'c.ecsv'])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith('usage: astro-deepcolor detect ')
    assert 'unrecognized arguments: --catalogue' in err


def test_cube_plane_and_hdu_suffix(tmp_path, tiny_model_path, capsys):
    cube = np.stack([_sky(seed=s) for s in range(3)]).astype(np.float32)
    path = tmp_path / 'cube.fits'
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(cube, name='SCI')]).writeto(path)
    out = tmp_path / 'segm.fits'
    # the error names the option that works
    assert _detect([str(path), '--segmentation', str(out)], tiny_model_path) == 2
    err = capsys.readouterr().err
    assert 'HDU 1 of ' in err
    assert ('is a cube of shape (3, 128, 128): 3 planes of 128 x 128 pixels; '
            'select one with --plane N (0 to 2)') in err
    assert _detect([f'{path}[1]', '--plane', '2', '--segmentation', str(out)],
                   tiny_model_path) == 0
    assert fits.getdata(out).shape == (128, 128)
    assert _detect([f'{path}[SCI]', '--plane', '3', '--segmentation',
                    str(tmp_path / 's2.fits')], tiny_model_path) == 2
    assert "--plane 3: HDU 'SCI'" in capsys.readouterr().err
    assert _detect([f'{path}[1]', '--hdu', '0', '--segmentation',
                    str(tmp_path / 's3.fits')], tiny_model_path) == 2
    assert "selects HDU '1' and --hdu selects '0'" in capsys.readouterr().err


def test_header_cards_copied_without_warnings(tmp_path, tiny_model_path):
    header = fits.Header()
    header['HIERARCH ESO TEL ID'] = 'NTT'
    header['HIERARCH ESO INS OPTI-7 NAME'] = 'R'
    header['OBSERVER'] = ('A. Very-Long-Name-Observer of the Observatory',
                          'who took this plate, with a long explanation')
    path = tmp_path / 'eso.fits'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # writing it truncates the comment
        fits.writeto(path, _sky().astype(np.float32), header)
    out = tmp_path / 'segm.fits'
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # the package causes no warning
        assert _detect([str(path), '--segmentation', str(out)],
                       tiny_model_path) == 0
    written = fits.getheader(out)
    assert written['ESO TEL ID'] == 'NTT'
    assert written['OBSERVER'].startswith('A. Very-Long-Name')


def test_user_file_header_warnings_summarised_once(tmp_path, tiny_model_path):
    path = tmp_path / 'bad.fits'
    fits.writeto(path, _sky().astype(np.float32))
    raw = bytearray(path.read_bytes())
    # two non-standard cards as in old ESO files ("ESO-LOG 03:04:08> ...")
    cards = (b'ESO-LOG 00:00:00> DATE = 1992-10-26'.ljust(80)
             + b'ESO-LOG 03:04:08>-START EXPO'.ljust(80))
    end = raw.find(b'END' + b' ' * 77)
    raw[end:end + 160] = cards
    raw[end + 160:end + 240] = b'END'.ljust(80)
    path.write_bytes(bytes(raw))
    with pytest.warns(AstropyUserWarning) as record:
        assert _detect([str(path), '--catalog', str(tmp_path / 'c.ecsv')],
                       tiny_model_path) == 0
    ours = [w for w in record if 'problem(s) in the file header' in str(w.message)]
    assert len(ours) == 1
    assert 'astropy found 2 problem(s)' in str(ours[0].message)
    assert len(record) == 1  # nothing else reached the user


# -- optional dependencies: checked before anything is written -------------

def _hide(monkeypatch, *names):
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name.split('.')[0] in names:
            return None
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, 'find_spec', find_spec)


def test_export_onnx_says_what_to_install(monkeypatch, tmp_path, capsys):
    _hide(monkeypatch, 'torch', 'onnx')
    out = tmp_path / 'model.onnx'
    assert main(['export-onnx', str(tmp_path / 'ckpt.pt'), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ('astro-deepcolor export-onnx: error: export-onnx needs torch, '
                   'onnx, not installed here: pip install "astro-deepcolor[train]"')
    assert not out.exists()


def test_regions_checked_before_writing(monkeypatch, tmp_path, tiny_model_path,
                                        capsys):
    image = tmp_path / 'img.fits'
    fits.writeto(image, _sky().astype(np.float32))
    _hide(monkeypatch, 'regions')
    cat = tmp_path / 'cat.ecsv'
    assert _detect([str(image), '--catalog', str(cat), '--regions',
                    str(tmp_path / 'r.reg')], tiny_model_path) == 2
    assert "--regions needs the 'regions' package" in capsys.readouterr().err
    assert not cat.exists()


def test_batch_mode_checked_before_writing(monkeypatch, tmp_path, capsys):
    _hide(monkeypatch, 'distributed')
    out = tmp_path / 'out'
    assert main(['detect', str(tmp_path), '--out', str(out)]) == 2
    assert "needs the 'distributed' package" in capsys.readouterr().err
    assert not out.exists()  # no manifest left behind


def test_photutils_baseline_names_scikit_image(monkeypatch):
    from astro_deepcolor.baselines.photutils_detector import PhotutilsDetector

    _hide(monkeypatch, 'skimage')
    assert PhotutilsDetector.unavailable_reason() == (
        "photutils' deblending needs scikit-image, not installed "
        '(pip install scikit-image)')


# -- the demo ---------------------------------------------------------------

def test_demo_writes_truth_picture_and_flux_errors(tmp_path, capsys):
    pytest.importorskip('matplotlib')
    from astropy.table import QTable

    out = tmp_path / 'demo'
    assert main(['demo', '--size', '192', '--seed', '3', '--out', str(out)]) == 0
    text = capsys.readouterr().out
    assert 'TP: detections matched to a true source' in text
    truth = QTable.read(out / 'demo_truth.ecsv')
    assert len(truth) > 3
    assert {'x', 'y', 'snr', 'found_by_cnn', 'found_by_classical'} <= set(truth.colnames)
    catalog = QTable.read(out / 'demo_catalog.ecsv')
    err = np.asarray(catalog['segment_flux_err'], float)
    assert np.isfinite(err).all()
    assert (err > 0).all()
    assert 'sky_centroid' not in catalog.colnames
    from PIL import Image

    with Image.open(out / 'demo_comparison.png') as im:
        assert im.size[0] >= 1200  # readable: at least 1200 px wide
    # a rerun refuses to overwrite, and says how
    assert main(['demo', '--size', '128', '--out', str(out)]) == 2
    assert '--overwrite' in capsys.readouterr().err


# -- the benchmark command ------------------------------------------------------

def test_benchmark_quick_says_smoke_test_and_explains(tmp_path, capsys):
    import json
    import re

    empty = tmp_path / 'no-real-data'
    empty.mkdir()
    out = tmp_path / 'bench'
    args = ['benchmark', '--quick', '--out', str(out), '--no-progress',
            '--regimes', 'clean', '--detectors', 'sep', '--shape', '64', '64',
            '--n-images', '1', '--bootstrap', '5', '--data-dir', str(empty)]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert 'SMOKE TEST (--quick): 1 image(s) of 64 x 64 per regime' in captured.out
    assert 'C@1%, C@5%, ...: completeness (found / true)' in captured.out
    assert not re.search(r'\d\.\d{5,}', captured.out)  # rounded, no 17 digits
    assert ("real-image check 'satellite streak': skipped: astride/long.fits, "
            f'astride/long.fits.out.txt not in {empty}') in captured.err
    report = (out / 'report.html').read_text()
    assert '<p class="smoke">SMOKE TEST (--quick)' in report
    assert report.count('<figcaption>') >= 3
    assert '<th style="text-align:left">regimes</th><td style="text-align:left">clean' in report
    assert '{"regimes"' not in report  # no raw JSON dump
    meta = json.loads((out / 'meta.json').read_text())
    assert meta['real_image_checks']['Gaia stars'].startswith('skipped: ')
    # a rerun refuses to replace the results
    assert main(args) == 2
    err = capsys.readouterr().err
    assert 'already holds benchmark results' in err
    assert 'use --overwrite' in err


def test_benchmark_rejects_missing_data_dir(tmp_path, capsys):
    out = tmp_path / 'bench'
    assert main(['benchmark', '--quick', '--out', str(out),
                 '--data-dir', '/nonexistent']) == 2
    assert ("--data-dir '/nonexistent' does not exist or is not a folder"
            in capsys.readouterr().err)
    assert not out.exists()  # checked before running anything


# -- real files ---------------------------------------------------------------

REAL = Path(__file__).parents[1] / '..' / 'shared' / 'data' / 'real'


@pytest.mark.skipif(not REAL.is_dir(), reason='needs ../shared/data/real')
@pytest.mark.shared_data
def test_eso_image_one_warning_line(tmp_path):
    # the ESO NTT image: 4 non-standard ESO-LOG cards and ~60 HIERARCH cards
    # used to give 84 warning lines, 64 of them from our own header writing
    with pytest.warns(AstropyUserWarning) as record:
        assert main(['detect', str(REAL / 'sep' / 'image.fits'), '--quiet',
                     '--catalog', str(tmp_path / 'c.ecsv'), '--segmentation',
                     str(tmp_path / 's.fits'), '--regions',
                     str(tmp_path / 'r.reg')]) == 0
    assert len(record) == 1
    assert 'astropy found 4 problem(s) in the file header' in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', AstropyUserWarning)  # the ESO-LOG cards
        original = fits.getheader(REAL / 'sep' / 'image.fits')
        header = fits.getheader(tmp_path / 's.fits')
    assert header['ESO TEL ID'] == original['ESO TEL ID']
