# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Tests of astro_deepcolor.batch: inputs, manifest, Dask runs, resume,
worker loss and exact mosaic stitching.

The Dask tests run a real `distributed.LocalCluster` of 2 single-threaded
worker processes (module-scoped, dashboard on a free port) over a
directory of simulated multi-extension FITS files.
"""

import functools
import hashlib
import os
import signal
import sqlite3
import sys
import time

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import QTable
from astropy.wcs import WCS

from astro_deepcolor.batch import (
    BatchDetector,
    Manifest,
    expand_inputs,
    output_stems,
    scan_image_hdus,
    stitch_labels,
)
from astro_deepcolor.pipeline import detect_image
from astro_deepcolor.simulation import simulate_image

distributed = pytest.importorskip('distributed')

N_FILES = 3
N_CCDS = 2
SHAPE = (256, 256)


# -- a classical detector for the orchestration tests --------------------
# The `detector=` hook of BatchDetector runs any picklable callable on the
# workers. This module is pickled by value so that worker processes need
# not import the tests package.
def sigma_detector(data, mask=None, nsigma=3.0, sleep=0.0, markers=None):
    """Detect 5-pixel groups above median + nsigma * MAD-sigma."""
    from photutils.segmentation import detect_sources

    if markers is not None:
        digest = hashlib.sha1(np.ascontiguousarray(data).tobytes()).hexdigest()[:12]
        open(os.path.join(markers, f'start-{os.getpid()}-{digest}'), 'w').close()
    if sleep:
        time.sleep(sleep)
    med = np.nanmedian(data)
    sigma = 1.4826 * np.nanmedian(np.abs(data - med))
    segm = detect_sources(data - med, nsigma * sigma, n_pixels=5, mask=mask)
    if markers is not None:
        open(os.path.join(markers, f'end-{os.getpid()}-{digest}'), 'w').close()
    return segm


import cloudpickle  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _wcs_header(seed, k):
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ['RA---TAN', 'DEC--TAN']
    wcs.wcs.crval = [150.0 + seed, 2.0 + 0.1 * k]
    wcs.wcs.crpix = [128.0, 128.0]
    wcs.wcs.cdelt = [-0.27 / 3600, 0.27 / 3600]
    return wcs.to_header()


def write_mef(path, seed, *, table=False):
    """A DECam-like exposure: empty primary HDU + N_CCDS image HDUs."""
    hdus = [fits.PrimaryHDU()]
    for k in range(N_CCDS):
        sim = simulate_image(SHAPE, seed=100 * seed + k)
        header = _wcs_header(seed, k)
        header['EXTNAME'] = f'CCD{k + 1}'
        hdus.append(fits.ImageHDU(sim.data, header=header))
    if table:
        hdus.append(fits.BinTableHDU.from_columns(
            [fits.Column(name='a', format='E', array=np.arange(3.0))],
            name='OBJECTS'))
    fits.HDUList(hdus).writeto(path)


@pytest.fixture(scope='module')
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=':0', silence_logs=40)
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope='module')
def survey(tmp_path_factory):
    """3 MEF exposures (one with a table HDU) + a corrupt file."""
    root = tmp_path_factory.mktemp('survey')
    for i in range(N_FILES):
        write_mef(root / f'exp{i}.fits', i, table=(i == 1))
    (root / 'corrupt.fits').write_bytes(b'this is not a FITS file' * 200)
    return root


def detector(**kwargs):
    return functools.partial(sigma_detector, **kwargs)


def per_image_reference(path, index):
    """Detect one HDU in this process, as the workers should have."""
    with fits.open(path) as hdul:
        data = hdul[index].data.astype(np.float32)
        header = hdul[index].header
    _, table = detect_image(detector(), data, header)
    return table


# -- inputs ---------------------------------------------------------------
class TestInputs:
    def test_expand(self, survey, tmp_path):
        listing = tmp_path / 'night.txt'
        listing.write_text(f'# night 1\n{survey / "exp1.fits"}\n\n'
                           f'{survey / "exp*.fits"}\n')
        paths = expand_inputs([str(survey / 'exp2.fits'), f'@{listing}',
                               str(survey / 'missing.fits')])
        names = [os.path.basename(p) for p in paths]
        # order kept, globs sorted, duplicates dropped, missing kept
        assert names == ['exp2.fits', 'exp1.fits', 'exp0.fits',
                         'missing.fits']
        assert all(os.path.isabs(p) for p in paths)
        assert len(expand_inputs(str(survey))) == N_FILES + 1
        assert expand_inputs(listing) == expand_inputs(f'@{listing}')

    def test_expand_errors(self, tmp_path):
        with pytest.raises(ValueError, match='matches no file'):
            expand_inputs(str(tmp_path / '*.fits'))
        with pytest.raises(ValueError, match='holds no FITS file'):
            expand_inputs(str(tmp_path))
        with pytest.raises(ValueError, match='at least one'):
            expand_inputs([])
        with pytest.raises(FileNotFoundError, match='list file'):
            expand_inputs('@' + str(tmp_path / 'nope.txt'))

    def test_output_stems(self):
        stems = output_stems(['/a/x.fits.fz', '/b/x.fits', '/b/y.fit'])
        assert stems['/b/y.fit'] == 'y'
        assert stems['/a/x.fits.fz'].startswith('x-')
        assert stems['/b/x.fits'].startswith('x-')
        assert stems['/a/x.fits.fz'] != stems['/b/x.fits']

    def test_scan(self, survey):
        hdus = scan_image_hdus(survey / 'exp1.fits')
        assert [h.index for h in hdus] == [0, 1, 2, 3]
        assert [h.is_image for h in hdus] == [False, True, True, False]
        assert hdus[1].shape == SHAPE
        assert hdus[2].extname == 'CCD2'
        assert 'no image data' in hdus[0].error
        assert 'BinTableHDU' in hdus[3].error
        with pytest.raises(OSError, match='SIMPLE'):
            scan_image_hdus(survey / 'corrupt.fits')

    def test_scan_simulation_file(self, tmp_path):
        # `astro-deepcolor simulate` output: only the primary HDU is an
        # image to detect on; the truth HDUs are not processed.
        from astro_deepcolor.simulation import simulate_image, write_simulation

        path = tmp_path / 'sim.fits'
        write_simulation(simulate_image(shape=(64, 64), seed=1), path)
        hdus = scan_image_hdus(path)
        assert [h.is_image for h in hdus] == [True] + [False] * 6
        assert 'truth of a simulated image' in hdus[4].error
        assert hdus[4].extname == 'SEGMENTATION'


# -- manifest -------------------------------------------------------------
def test_manifest(tmp_path):
    path = tmp_path / 'm.sqlite'
    with Manifest(path) as m:
        m.check_settings({'threshold': 0.5})
        m.update('/f.fits', -1, 'done', file_size=10)
        m.update('/f.fits', 1, 'pending', extname='CCD1', shape=(4, 5))
        m.mark_running('/f.fits', 1)
        m.update('/f.fits', 2, 'skipped', error='no image')
        assert m.get('/f.fits', 1)['attempts'] == 1
        assert m.get('/f.fits', 1)['shape'] == '4 x 5'
        assert m.counts() == {'running': 1, 'skipped': 1}
        with pytest.raises(ValueError, match='status must be'):
            m.update('/f.fits', 1, 'finished')
    # a killed run leaves 'running' rows: a new run puts them back
    with Manifest(path) as m:
        assert m.reset_running() == 1
        assert m.get('/f.fits', 1)['status'] == 'pending'
        with pytest.raises(ValueError, match='threshold differ'):
            m.check_settings({'threshold': 0.7})
        table = m.to_table()
        assert len(table) == 3
        assert list(table['hdu']) == [-1, 1, 2]
        m.write_ecsv(tmp_path / 'm.ecsv')
    assert QTable.read(tmp_path / 'm.ecsv')['status'][2] == 'skipped'
    # readable by other processes while in WAL mode
    with sqlite3.connect(path) as conn:
        assert conn.execute('PRAGMA journal_mode').fetchone()[0] == 'wal'


def test_settings_validation(tiny_model_path):
    from astro_deepcolor import DeepColorSegmentation

    with pytest.raises(ValueError, match='merged_format must be one of'):
        BatchDetector(detector=detector(), merged_format='csv')
    with pytest.raises(TypeError, match='detector must be callable'):
        BatchDetector(detector=3)
    with pytest.raises(TypeError, match='finder must be a DeepColorSegmentation'):
        BatchDetector(detector())
    with pytest.raises(ValueError, match='weight_type must be one of'):
        BatchDetector(detector=detector(), weight_type='ivar')
    with pytest.raises(ValueError, match='weight_suffix must be a non-empty'):
        BatchDetector(detector=detector(), weight_suffix='')
    # the finder is the one carrier of the settings: the workers get it,
    # with one network thread per local worker thread
    finder = DeepColorSegmentation(0.7, model=tiny_model_path,
                                   footprint_threshold=None)
    batch = BatchDetector(finder, threads_per_worker=2)
    assert batch.finder.threshold == 0.7
    assert batch.finder.footprint_threshold is None
    assert batch.finder.n_threads == 2
    assert finder.n_threads is None  # the caller's finder is not changed
    record = batch._settings_record()
    assert record['threshold'] == 0.7
    assert record['model'] == str(tiny_model_path)


# -- Dask runs --------------------------------------------------------------
def _merged(out):
    return QTable.read(out / 'catalog.fits')


def test_run_merged_catalogue_and_manifest(client, survey, tmp_path):
    out = tmp_path / 'out'
    batch = BatchDetector(detector=detector(), segmentation=True)
    # exp0 is already done by an earlier run
    first = batch([str(survey / 'exp0.fits')], out, client=client)
    assert (first.n_done, first.n_failed) == (N_CCDS, 0)
    done_cat = out / 'catalogs' / 'exp0.hdu001.cat.fits'
    mtime = done_cat.stat().st_mtime_ns

    result = batch([str(survey)], out, client=client)
    assert result.n_reused == N_CCDS
    assert result.n_done == (N_FILES - 1) * N_CCDS
    assert result.n_failed == 1  # the corrupt file
    assert result.n_pixels == (N_FILES - 1) * N_CCDS * SHAPE[0] * SHAPE[1]
    assert done_cat.stat().st_mtime_ns == mtime  # not redone

    # manifest: every file and HDU, with status, timing and error
    with Manifest(out / 'manifest.sqlite') as m:
        corrupt = m.get(str(survey / 'corrupt.fits'))
        assert corrupt['status'] == 'failed'
        assert 'OSError' in corrupt['error']
        table_hdu = m.get(str(survey / 'exp1.fits'), 3)
        assert table_hdu['status'] == 'skipped'
        assert 'BinTableHDU' in table_hdu['error']
        rows = m.rows(status='done', images_only=True)
        assert len(rows) == N_FILES * N_CCDS
        assert all(r['seconds'] > 0 and r['worker'] for r in rows)
    ecsv = QTable.read(out / 'manifest.ecsv')
    assert set(ecsv['status']) == {'done', 'failed', 'skipped'}

    # merged catalogue == per-image detections, each image once
    merged = _merged(out)
    assert len(merged) == result.n_sources > 0
    for i in range(N_FILES):
        path = str(survey / f'exp{i}.fits')
        for k in range(1, N_CCDS + 1):
            ref = per_image_reference(path, k)
            sel = merged[(merged['file'] == path) & (merged['hdu'] == k)]
            assert len(sel) == len(ref) > 0
            assert set(sel['extname']) == {f'CCD{k}'}
            np.testing.assert_array_equal(sel['label'], ref['label'])
            np.testing.assert_allclose(sel['x_centroid'], ref['x_centroid'])
            np.testing.assert_allclose(sel['ra'].value,
                                       ref['sky_centroid'].ra.deg)
            # sky coordinates follow the HDU's WCS
            wcs = WCS(_wcs_header(i, k - 1))
            ra, dec = wcs.pixel_to_world_values(sel['x_centroid'],
                                                sel['y_centroid'])
            np.testing.assert_allclose(sel['ra'].value, ra, rtol=0,
                                       atol=1e-9)
            np.testing.assert_allclose(sel['dec'].value, dec, rtol=0,
                                       atol=1e-9)
            # the per-image catalogue and segmentation agree
            cat = QTable.read(out / 'catalogs' / f'exp{i}.hdu{k:03d}.cat.fits')
            assert len(cat) == len(ref)
            assert cat.colnames == ref.colnames
            segm = fits.getdata(out / 'segmentation'
                                / f'exp{i}.hdu{k:03d}.segm.fits')
            assert segm.max() == len(ref)

    # no temporary file is left behind
    assert not [p for p in out.rglob('.*') if p.suffix != '.lock']


def test_resume_after_interruption(client, survey, tmp_path):
    out = tmp_path / 'out'
    seen = []

    def stop_after_two(row):
        seen.append(row)
        if len(seen) == 2:
            raise KeyboardInterrupt

    inputs = [str(survey / f'exp{i}.fits') for i in range(N_FILES)]
    batch = BatchDetector(detector=detector(sleep=0.1), callback=stop_after_two,
                          merged_format='parquet')
    with pytest.raises(KeyboardInterrupt):
        batch(inputs, out, client=client)
    with Manifest(out / 'manifest.sqlite') as m:
        counts = m.counts()
        assert counts['done'] == 2
        assert 'running' not in counts  # interrupted rows are pending
        assert counts['pending'] == N_FILES * N_CCDS - 2
        assert counts['skipped'] == N_FILES + 1  # primaries + a table
    assert not (out / 'catalog.parquet').exists()

    # a driver killed hard leaves a 'running' row and maybe no output
    with Manifest(out / 'manifest.sqlite') as m:
        victim = m.rows(status='done', images_only=True)[0]
        m.update(victim['file'], victim['hdu'], 'running')
    os.unlink(victim['catalog'])

    batch.callback = None
    result = batch(inputs, out, client=client)
    assert result.n_reused == 1
    assert result.n_done == N_FILES * N_CCDS - 1
    # (astropy reads Parquet only with pandas; pyarrow is enough here)
    import pyarrow.parquet as pq

    merged = pq.read_table(out / 'catalog.parquet').to_pydict()
    keys = set(zip(merged['file'], merged['hdu'], strict=True))
    assert len(keys) == N_FILES * N_CCDS
    expected = sum(len(per_image_reference(p, k)) for p in inputs
                   for k in range(1, N_CCDS + 1))
    assert len(merged['label']) == expected
    assert np.isfinite(merged['ra']).all()

    # other settings must not be mixed into the same output directory
    with pytest.raises(ValueError, match='other settings'):
        BatchDetector(detector=detector(nsigma=5.0))(inputs, out,
                                                      client=client)


def test_worker_killed_mid_run(client, survey, tmp_path):
    """A worker process killed during a run loses and duplicates nothing."""
    out = tmp_path / 'out'
    markers = tmp_path / 'markers'
    markers.mkdir()
    inputs = [str(survey / f'exp{i}.fits') for i in range(N_FILES)]
    pids_before = set(client.run(os.getpid).values())
    killed = []

    def kill_the_other_worker(row):
        if killed:
            return
        finisher = int(row['worker'].rsplit(':', 1)[1])
        victim = next(pid for pid in pids_before if pid != finisher)
        # wait until the other worker is in the middle of a 0.8 s task
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            names = os.listdir(markers)
            busy = {n.rsplit('-', 1)[1] for n in names
                    if n.startswith(f'start-{victim}-')}
            busy -= {n.rsplit('-', 1)[1] for n in names
                     if n.startswith(f'end-{victim}-')}
            if busy:
                break
            time.sleep(0.02)
        time.sleep(0.2)
        os.kill(victim, signal.SIGKILL)
        killed.append(victim)

    batch = BatchDetector(detector=detector(sleep=0.8, markers=str(markers)),
                          callback=kill_the_other_worker)
    result = batch(inputs, out, client=client)
    assert killed
    assert result.n_failed == 0
    assert result.n_done == N_FILES * N_CCDS
    # the killed worker had started an image it never finished; another
    # worker did it
    names = os.listdir(markers)
    started = {n.rsplit('-', 1)[1] for n in names
               if n.startswith(f'start-{killed[0]}-')}
    ended = {n.rsplit('-', 1)[1] for n in names
             if n.startswith(f'end-{killed[0]}-')}
    lost = started - ended
    assert lost
    for digest in lost:
        assert any(n.startswith('end-') and n.endswith(digest)
                   and f'-{killed[0]}-' not in n for n in names)
    # the nanny restarted the worker
    client.wait_for_workers(2, timeout=60)
    assert killed[0] not in set(client.run(os.getpid).values())
    # each image exactly once, and right
    merged = _merged(out)
    expected = {(p, k): len(per_image_reference(p, k)) for p in inputs
                for k in range(1, N_CCDS + 1)}
    got = {}
    for f, h in zip(merged['file'], merged['hdu'], strict=True):
        got[(f, int(h))] = got.get((f, int(h)), 0) + 1
    assert got == expected


def test_run_cli_with_scheduler(client, survey, tmp_path, capsys,
                                tiny_model_path):
    """The CLI batch mode, real finder, on an existing cluster (--scheduler)."""
    from astro_deepcolor.cli import main

    out = tmp_path / 'cli'
    status = main(['detect', str(survey / 'exp*.fits'),
                   str(survey / 'corrupt.fits'), '--out', str(out),
                   '--scheduler', client.scheduler.address, '--threshold',
                   '0.5', '--write-segmentation', '--model',
                   str(tiny_model_path)])
    assert status == 1  # the corrupt file failed
    err = capsys.readouterr().err
    assert f'{N_FILES * N_CCDS} images detected' in err
    merged = _merged(out)
    assert set(merged['file']) == {str(survey / f'exp{i}.fits')
                                   for i in range(N_FILES)}
    assert len(list((out / 'segmentation').glob('*.segm.fits'))) == 6
    # resume through the real command line: nothing left to do
    written = {p: p.stat().st_mtime_ns for p in out.rglob('*.fits')
               if p.name != 'catalog.fits'}
    args = ['detect', str(survey / 'exp*.fits'), str(survey / 'corrupt.fits'),
            '--out', str(out), '--scheduler', client.scheduler.address,
            '--model', str(tiny_model_path), '--write-segmentation']
    status = main(args)
    assert status == 1
    assert f'0 images detected, {N_FILES * N_CCDS} already done' in (
        capsys.readouterr().err)
    assert {p: p.stat().st_mtime_ns for p in written} == written
    # --quiet: no progress bar and no summary line
    assert main([*args, '--quiet']) == 1
    assert 'images detected' not in capsys.readouterr().err


# -- mosaic stitching -------------------------------------------------------
def _colour_map(seed, shape=(300, 260)):
    """Blobs of 5 colours with flicker: a hard case for the stitching."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    fg = gaussian_filter(rng.normal(size=shape), 2.5) > 0.03
    col = (np.floor(gaussian_filter(rng.normal(size=shape), 4) * 40) % 5
           + 1).astype(np.uint8)
    flicker = rng.random(shape) < 0.05
    col[flicker] = rng.integers(1, 6, flicker.sum())
    colour = np.where(fg, col, 0).astype(np.uint8)
    # a one-pixel diagonal snake through many chunks: tiny in each chunk,
    # one source under 8-connectivity only through chunk-corner contacts
    for t in range(250):
        colour[t, t] = 6
    return colour


@pytest.mark.parametrize(('seed', 'connectivity', 'n_pixels'),
                         [(0, 8, 5), (1, 4, 5), (2, 8, 20), (3, 8, 1)])
def test_stitch_labels_equals_in_memory(seed, connectivity, n_pixels):
    import dask
    import dask.array as da

    from astro_deepcolor.postprocessing import label_sources

    colour = _colour_map(seed)
    ref = label_sources(colour, colour.astype(np.float32), n_pixels,
                        connectivity=connectivity)
    with dask.config.set(scheduler='synchronous'):
        labels, n = stitch_labels(da.from_array(colour, chunks=(64, 50)),
                                  n_pixels=n_pixels, connectivity=connectivity)
        labels = labels.compute()
    assert n == ref.n_labels > 100
    # label for label, not only up to a permutation
    np.testing.assert_array_equal(labels, ref.data)
    snake = labels[np.arange(250), np.arange(250)]
    if connectivity == 8 and n_pixels <= 250:
        assert len(np.unique(snake)) == 1
        assert snake[0] > 0


@pytest.mark.parametrize('threshold', [0.3, 0.7])
def test_stitch_labels_with_detection_flag_equals_in_memory(threshold):
    """Footprints at a low level, sources kept on their pixels above the
    detection threshold (carried in HIGH_BIT): same as label_sources."""
    import dask
    import dask.array as da

    from astro_deepcolor.batch.mosaic import HIGH_BIT
    from astro_deepcolor.postprocessing import label_sources

    colour = _colour_map(4)
    p_fg = np.random.default_rng(4).random(colour.shape).astype(np.float16)
    p_fg[colour == 0] = 0
    ref = label_sources(colour, p_fg, 5, threshold=threshold)
    plain = label_sources(colour, p_fg, 5)
    assert ref.n_labels < plain.n_labels  # the detection criterion bites
    flagged = np.where(p_fg >= threshold, colour | HIGH_BIT, colour).astype(np.uint8)
    with dask.config.set(scheduler='synchronous'):
        labels, n = stitch_labels(da.from_array(flagged, chunks=(64, 50)),
                                  n_pixels=5, high_flag=True)
        labels = labels.compute()
    assert n == ref.n_labels
    np.testing.assert_array_equal(labels, ref.data)


@pytest.mark.parametrize('threshold', [0.5, 0.95])
def test_detect_mosaic_equals_in_memory(tiny_model_path, threshold):
    """Chunked inference + stitching == in-memory detection, exactly
    (at 0.95, footprints are delimited at 0.8: the detection flag path)."""
    import dask
    import dask.array as da

    from astro_deepcolor.batch import detect_mosaic
    from astro_deepcolor.inference import DeepColorSegmentation

    finder = DeepColorSegmentation(threshold=threshold, n_pixels=5,
                                   model=tiny_model_path, tile_shape=256)
    sim = simulate_image((448, 384), seed=3, density=2.0)
    data = np.array(sim.data)
    data[100:104, 200:260] = np.nan  # bad pixels, crossing a chunk edge
    segm = finder(data)
    assert segm is not None
    assert segm.n_labels > 10
    # The peak merge has work to do here.
    unmerged = DeepColorSegmentation(threshold=threshold, n_pixels=5,
                                     model=tiny_model_path, tile_shape=256,
                                     peak_margin=None)(data)
    assert unmerged.n_labels > segm.n_labels
    assert segm.info['footprint_threshold'] == min(threshold, 0.8)
    with dask.config.set(scheduler='synchronous'):
        labels, n = detect_mosaic(da.from_array(data, chunks=128), finder,
                                  chunks=128)
        assert labels.numblocks == (4, 3)
        labels = labels.compute()
    assert n == segm.n_labels
    np.testing.assert_array_equal(labels, segm.data)


def test_detect_mosaic_peak_merge_across_chunks():
    """The shipped model paints rims of another colour on bright sources;
    merging them across 64-pixel chunks gives the in-memory labels."""
    import dask
    import dask.array as da

    from astro_deepcolor.batch import detect_mosaic
    from astro_deepcolor.inference import DeepColorSegmentation

    finder = DeepColorSegmentation()
    data = np.array(simulate_image((256, 256), seed=4, density=3.0).data)
    segm = finder(data)
    unmerged = DeepColorSegmentation(peak_margin=None)(data)
    # Merged segments whose pieces lie in more than one chunk.
    crossing = 0
    for label in segm.labels:
        pieces = np.unique(unmerged.data[segm.data == label])
        if pieces[pieces > 0].size > 1:
            ys, xs = np.nonzero(segm.data == label)
            crossing += (np.unique(ys // 64).size > 1) or (np.unique(xs // 64).size > 1)
    assert crossing >= 2
    with dask.config.set(scheduler='synchronous'):
        labels, n = detect_mosaic(da.from_array(data, chunks=64), finder, chunks=64)
        labels = labels.compute()
    assert n == segm.n_labels
    np.testing.assert_array_equal(labels, segm.data)


def test_detect_mosaic_with_flips_equals_in_memory():
    """With flips=True the mosaic gives the finder's labels and its
    flip-calibrated detection probabilities."""
    import dask
    import dask.array as da

    from astro_deepcolor.batch import detect_mosaic
    from astro_deepcolor.inference import DeepColorSegmentation

    finder = DeepColorSegmentation(flips=True)
    assert finder.threshold == finder.config.operating_points['5%+flips']
    data = np.array(simulate_image((256, 192), seed=6, density=2.0).data)
    segm = finder(data)
    assert segm.n_labels > 5
    with dask.config.set(scheduler='synchronous'):
        labels, n, prob = detect_mosaic(da.from_array(data, chunks=64), finder,
                                        chunks=64, return_probability=True)
        labels = labels.compute()
    assert n == segm.n_labels
    np.testing.assert_array_equal(labels, segm.data)
    np.testing.assert_allclose(prob, segm.info['detection_probability'], atol=2e-3)


def test_merge_peakless_chunks_equals_in_memory():
    """On odd chunk shapes too: the unmerged labels and the peak image of
    the finder, merged chunk by chunk, give the finder's labels."""
    import dask
    import dask.array as da

    from astro_deepcolor.batch import merge_peakless_chunks
    from astro_deepcolor.inference import DeepColorSegmentation

    data = np.array(simulate_image((256, 256), seed=5, density=3.0).data)
    finder = DeepColorSegmentation()
    segm = finder(data)
    unmerged = DeepColorSegmentation(peak_margin=None)(data)
    assert unmerged.n_labels > segm.n_labels
    peak = finder.peak_image(data)
    with dask.config.set(scheduler='synchronous'):
        for chunks in ((50, 37), (256, 256), (1, 256)):
            labels, n = merge_peakless_chunks(
                da.from_array(unmerged.data, chunks=chunks), unmerged.n_labels,
                da.from_array(peak, chunks=chunks))
            assert n == segm.n_labels
            np.testing.assert_array_equal(labels.compute(), segm.data)
    with pytest.raises(ValueError, match='peak_image must have the shape'):
        merge_peakless_chunks(da.from_array(unmerged.data), unmerged.n_labels,
                              da.from_array(peak[:-1]))


def test_detect_mosaic_on_the_cluster_equals_in_memory(tiny_model_path, client):
    """The same on a real 2-worker cluster, with a finder that was used
    before (its session stays behind; the copy on the workers builds its
    own) and the persisted colour map held until the labels are computed."""
    import dask.array as da

    from astro_deepcolor.batch import detect_mosaic
    from astro_deepcolor.inference import DeepColorSegmentation

    finder = DeepColorSegmentation(threshold=0.5, n_pixels=5,
                                   model=tiny_model_path, tile_shape=256,
                                   n_threads=1)
    sim = simulate_image((384, 320), seed=4, density=2.0)
    segm = finder(sim.data)
    labels, n, prob = detect_mosaic(da.from_array(np.array(sim.data), chunks=128),
                                    finder, chunks=128, client=client,
                                    return_probability=True)
    labels = client.compute(labels).result()
    assert n == segm.n_labels
    np.testing.assert_array_equal(labels, segm.data)
    assert prob.dtype == np.float32
    np.testing.assert_array_equal(prob, segm.info['detection_probability'])
