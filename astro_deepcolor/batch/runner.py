# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Survey-scale detection on a Dask cluster.

`BatchDetector` detects sources in every image HDU of many FITS files. It
runs on `Dask distributed <https://distributed.dask.org>`_: with no
scheduler it starts a local cluster sized to the machine (one
single-threaded worker process per core); with ``scheduler='tcp://...'``
it uses an existing cluster (for instance one started on a SLURM or PBS
system with ``dask-jobqueue``).

The work is split in two kinds of small tasks. A *scan* task opens one
file and lists its HDUs (headers only); a *detect* task reads one image
HDU, runs the detector, writes the per-image catalogue (and segmentation)
atomically and returns a few numbers. The model is loaded once per worker
process (a module-level cache keyed by the detection settings), so GPU
workers keep their session, and its weights, on the device between tasks.
The process that drives the run is the only one that writes the
`~astro_deepcolor.batch.Manifest`; the merged catalogue is built from the
per-image catalogues listed as done in the manifest, so a task that ran
twice (its worker was killed after writing) is counted once.
"""

import contextlib
import dataclasses
import fcntl
import logging
import os
import socket
import sys
import threading
import time
import uuid
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from astro_deepcolor.batch.inputs import (
    expand_inputs,
    output_stems,
    read_image_hdu,
    scan_image_hdus,
)
from astro_deepcolor.batch.manifest import FILE_ROW, Manifest
from astro_deepcolor.utils._io import atomic_path
from astro_deepcolor.utils._parameters import (
    check_choice,
    check_fraction,
    check_positive_int,
    check_threshold,
)

__all__ = ['BatchDetector', 'BatchResult', 'DetectSettings', 'detect_batch',
           'get_finder', 'make_client', 'write_merged_catalog']

_log = logging.getLogger(__name__)

#: Merged-catalogue formats (name -> file suffix).
MERGED_FORMATS = {'fits': '.fits', 'parquet': '.parquet'}
#: Per-image catalogue formats (name -> file suffix).
CATALOG_FORMATS = {'fits': '.fits', 'ecsv': '.ecsv'}


@dataclasses.dataclass(frozen=True)
class DetectSettings:
    """
    The per-image detection settings sent to every worker.

    Frozen and hashable: it is the key of the per-worker model cache, so
    that a worker builds one `~astro_deepcolor.DeepColorSegmentation` (and
    one onnxruntime session) per distinct setting, however many tasks it
    runs.

    Attributes
    ----------
    threshold : float
        Detection probability threshold in [0, 1].
    n_pixels : int
        Minimum number of connected pixels of a source.
    footprint_threshold : float or None
        Footprint level (see `~astro_deepcolor.DeepColorSegmentation`).
    connectivity : {4, 8}
        Pixel connectivity of a source.
    model : str or None
        ONNX model file; None for the shipped default.
    backend : str
        onnxruntime backend (``'auto'``, ``'cpu'``, ``'cuda'``, ...).
    device : str
        Device selection passed to the finder.
    batch_size : int or None
        Tiles per network call (None: the finder's default). On a GPU,
        raise it until the device is busy: a 2k x 4k CCD in 512 x 512
        tiles is 32 tiles.
    tile_shape : int or None
        Network tile side in pixels (None: the finder's default).
    n_threads : int or None
        CPU threads of each worker's network (None: all cores). A local
        cluster sets it to ``threads_per_worker`` so that its workers do
        not oversubscribe the machine.
    segmentation : bool
        Whether to write the segmentation image of every HDU.
    catalog_format : {'fits', 'ecsv'}
        Format of the per-image catalogues.
    """

    threshold: float = 0.5
    n_pixels: int = 5
    footprint_threshold: float | None = 0.8
    connectivity: int = 8
    model: str | None = None
    backend: str = 'auto'
    device: str = 'auto'
    batch_size: int | None = None
    tile_shape: int | None = None
    n_threads: int | None = None
    segmentation: bool = False
    catalog_format: str = 'fits'

    def __post_init__(self):
        check_threshold(self.threshold, 'threshold')
        check_positive_int(self.n_pixels, 'n_pixels')
        if self.footprint_threshold is not None:
            check_fraction(self.footprint_threshold, 'footprint_threshold')
        check_choice(self.connectivity, 'connectivity', (4, 8))
        check_choice(self.catalog_format, 'catalog_format', CATALOG_FORMATS)
        if self.batch_size is not None:
            check_positive_int(self.batch_size, 'batch_size')
        if self.tile_shape is not None:
            check_positive_int(self.tile_shape, 'tile_shape')
        if self.n_threads is not None:
            check_positive_int(self.n_threads, 'n_threads')
        if self.model is not None:
            object.__setattr__(self, 'model', os.path.abspath(self.model))

    def finder_kwargs(self):
        """
        Keyword arguments of `~astro_deepcolor.DeepColorSegmentation`.

        Returns
        -------
        kwargs : dict
            The finder settings.
        """
        kwargs = {'threshold': self.threshold, 'n_pixels': self.n_pixels,
                  'footprint_threshold': self.footprint_threshold,
                  'connectivity': self.connectivity, 'model': self.model,
                  'backend': self.backend, 'device': self.device}
        if self.batch_size is not None:
            kwargs['batch_size'] = self.batch_size
        if self.tile_shape is not None:
            kwargs['tile_shape'] = self.tile_shape
        if self.n_threads is not None:
            kwargs['n_threads'] = self.n_threads
        return kwargs


# -- worker side ----------------------------------------------------------

_FINDERS = {}
_FINDER_LOCK = threading.Lock()
#: How many finders this process has built, per settings (for tests and
#: for checking that the model is loaded once per worker).
FINDER_LOADS = Counter()


def get_finder(settings):
    """
    Return this process's `~astro_deepcolor.DeepColorSegmentation`.

    The finder (and its onnxruntime session) is built on first use and
    kept for the life of the worker process, so the model file is read
    once per worker, not once per task.

    Parameters
    ----------
    settings : `DetectSettings`
        The detection settings (the cache key).

    Returns
    -------
    finder : `~astro_deepcolor.DeepColorSegmentation`
        The cached finder.
    """
    with _FINDER_LOCK:
        finder = _FINDERS.get(settings)
        if finder is None:
            from astro_deepcolor.inference import DeepColorSegmentation

            kwargs = settings.finder_kwargs()
            if 'n_threads' not in kwargs:
                # On a Dask worker (e.g. --scheduler ADDRESS), run the
                # network on the worker's own thread count rather than on
                # every core of the node, which its neighbours share.
                nthreads = _dask_worker_threads()
                if nthreads is not None:
                    kwargs['n_threads'] = nthreads
            finder = DeepColorSegmentation(**kwargs)
            _FINDERS[settings] = finder
            FINDER_LOADS[settings] += 1
    return finder


def _dask_worker_threads():
    """Thread count of the Dask worker running this task, else None."""
    try:
        from distributed import get_worker

        return int(get_worker().state.nthreads)
    except Exception:  # not on a worker, or an older distributed
        return None


def _worker_id():
    return f'{socket.gethostname()}:{os.getpid()}'


def _celestial_wcs(header):
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FITSFixedWarning)
        try:
            wcs = WCS(header)
        except Exception:  # a broken WCS must not lose the detections
            return None
    return wcs.celestial if wcs.has_celestial else None


def _photutils_catalog(data, segm, mask, wcs):
    from photutils.segmentation import SourceCatalog

    from astro_deepcolor.preprocessing import estimate_background

    background, rms = estimate_background(data, mask)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        cat = SourceCatalog(data - background, segm, error=rms, mask=mask,
                            wcs=wcs)
        return cat.to_table()


def _empty_catalog():
    from astropy.table import QTable

    table = QTable()
    table['label'] = np.zeros(0, dtype=np.int32)
    table['x_centroid'] = np.zeros(0)
    table['y_centroid'] = np.zeros(0)
    return table


def _centroid_columns(table):
    # photutils >= 3 names them x_centroid/y_centroid (xcentroid before)
    for x, y in (('x_centroid', 'y_centroid'), ('xcentroid', 'ycentroid'),
                 ('x', 'y')):
        if x in table.colnames and y in table.colnames:
            return x, y
    msg = f'catalogue has no centroid columns: {table.colnames}'
    raise ValueError(msg)


def _detect_hdu(data, header, settings, detector=None):
    """
    Detect the sources of one image and make its catalogue.

    Parameters
    ----------
    data : 2D `~numpy.ndarray`
        The image.
    header : `~astropy.io.fits.Header`
        Its header (the celestial WCS, if any, gives sky coordinates).
    settings : `DetectSettings`
        Detection settings; used when ``detector`` is None.
    detector : callable, optional
        ``detector(data, mask=None)`` returning a
        `~photutils.segmentation.SegmentationImage` (or None), or a tuple
        ``(segm, table)``. None uses the deep-coloring finder.

    Returns
    -------
    table : `~astropy.table.QTable`
        One row per source with ``label``, ``xcentroid``, ``ycentroid``
        (0-based pixels), ``ra``, ``dec`` (deg, NaN without a celestial
        WCS) and the finder's catalogue columns.
    segm : `~photutils.segmentation.SegmentationImage` or None
        The segmentation (None if nothing was detected).
    """
    import astropy.units as u
    from astropy.table import QTable
    from photutils.utils.exceptions import NoDetectionsWarning

    mask = ~np.isfinite(data)
    if not mask.any():
        mask = None
    wcs = _celestial_wcs(header)
    table = None
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', NoDetectionsWarning)
        if detector is None:
            finder = get_finder(settings)
            segm = finder(data, mask=mask)
            if segm is not None:
                table = finder.catalog(data, segm, wcs=wcs)
        else:
            out = detector(data, mask=mask)
            segm, table = out if isinstance(out, tuple) else (out, None)
            if segm is not None and table is None:
                table = _photutils_catalog(data, segm, mask, wcs)
    if segm is None or table is None or len(table) == 0:
        table = _empty_catalog()
    # a plain QTable: no deprecated-name mapping, and our own meta
    table = QTable(table, copy=False)
    if wcs is None and 'sky_centroid' in table.colnames:
        # all None without a WCS: an object column no file format takes
        table.remove_column('sky_centroid')
    xcol, ycol = _centroid_columns(table)
    x = np.asarray(table[xcol], dtype=float)
    y = np.asarray(table[ycol], dtype=float)
    if wcs is not None and len(table):
        ra, dec = wcs.pixel_to_world_values(x, y)
    else:
        ra = dec = np.full(len(table), np.nan)
    table['ra'] = np.asarray(ra, dtype=float) * u.deg
    table['dec'] = np.asarray(dec, dtype=float) * u.deg
    return table, segm


def _write_segmentation(path, segm, shape, header, meta):
    from astropy.io import fits

    data = (np.zeros(shape, dtype=np.int32) if segm is None
            else np.asarray(segm.data, dtype=np.int32))
    wcs = _celestial_wcs(header)
    out = fits.Header() if wcs is None else wcs.to_header(relax=True)
    for key, value in meta.items():
        out[key] = value
    with atomic_path(path, overwrite=True, name='segmentation') as tmp:
        fits.PrimaryHDU(data=data, header=out).writeto(tmp)


def _write_catalog(path, table, meta):
    fmt = 'fits' if str(path).endswith('.fits') else 'ascii.ecsv'
    if fmt == 'fits':
        # FITS headers take short scalar keywords only; the rest would
        # only produce warnings (HIERARCH cards, skipped dicts).
        table.meta = {k: v for k, v in table.meta.items()
                      if len(k) <= 8 and isinstance(v, (str, int, float))}
    table.meta.update(meta)
    with atomic_path(path, overwrite=True, name='catalogue') as tmp:
        table.write(tmp, format=fmt)


def _scan_task(path):
    """Worker task: list the HDUs of one file (headers only)."""
    t0 = time.time()
    out = {'started': t0, 'worker': _worker_id(), 'error': ''}
    try:
        stat = os.stat(path)
        out.update(hdus=scan_image_hdus(path), file_size=stat.st_size,
                   file_mtime=stat.st_mtime)
    except Exception as exc:  # recorded in the manifest, run goes on
        out.update(hdus=None, error=f'{type(exc).__name__}: {exc}')
    out['finished'] = time.time()
    out['seconds'] = out['finished'] - t0
    return out


def _detect_task(path, index, catalog, segmentation, settings, detector):
    """
    Worker task: detect one HDU, write its outputs, return a summary.

    Exceptions are caught and returned as a ``failed`` summary so that one
    bad HDU never stops the run (and does not fill the worker logs).
    """
    t0 = time.time()
    summary = {'started': t0, 'worker': _worker_id(), 'npix': 0}
    try:
        data, header = read_image_hdu(path, index)
        summary['npix'] = int(data.size)
        table, segm = _detect_hdu(data, header, settings, detector)
        meta = {'ORIGFILE': os.path.basename(path), 'ORIGHDU': int(index),
                'EXTNAME': str(header.get('EXTNAME', ''))}
        if segmentation:
            _write_segmentation(segmentation, segm, data.shape, header, meta)
        _write_catalog(catalog, table, meta)
        summary.update(status='done', n_sources=len(table), error='')
    except Exception as exc:  # recorded in the manifest, run goes on
        summary.update(status='failed', n_sources=None,
                       error=f'{type(exc).__name__}: {exc}')
    summary['finished'] = time.time()
    summary['seconds'] = summary['finished'] - t0
    return summary


# -- driver side ----------------------------------------------------------

def make_client(scheduler=None, *, n_workers=None, threads_per_worker=1,
                dashboard_address=':8787'):
    """
    Connect to a Dask cluster, or start a local one sized to the machine.

    Parameters
    ----------
    scheduler : str, optional
        Address of an existing scheduler (``'tcp://host:8786'``) or a
        scheduler file (a path ending in ``.json``). None starts a
        `~distributed.LocalCluster` of worker processes.
    n_workers : int, optional
        Local workers (default: one per CPU core). Ignored with
        ``scheduler``.
    threads_per_worker : int, optional
        Threads of each local worker. Keep 1 for CPU inference (the
        network is the bottleneck); use 2 or more for a GPU worker so that
        reading and post-processing overlap with the network.
    dashboard_address : str, optional
        Where the local cluster serves its dashboard (``':0'``: any free
        port).

    Returns
    -------
    client : `~distributed.Client`
        The client.
    close : callable
        Call it to close the client (and the local cluster, if started).
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - optional dependency
        msg = ('batch detection needs dask.distributed: '
               "pip install 'astro-deepcolor[distributed]'")
        raise ImportError(msg) from exc

    if scheduler is not None:
        scheduler = os.fspath(scheduler)
        if scheduler.endswith('.json'):
            client = Client(scheduler_file=scheduler)
        else:
            client = Client(scheduler)
        return client, client.close
    n_workers = check_positive_int(n_workers or os.cpu_count() or 1,
                                   'n_workers')
    threads_per_worker = check_positive_int(threads_per_worker,
                                            'threads_per_worker')
    cluster = LocalCluster(n_workers=n_workers,
                           threads_per_worker=threads_per_worker,
                           processes=True, dashboard_address=dashboard_address,
                           silence_logs=logging.ERROR)
    client = Client(cluster)

    def close():
        client.close()
        cluster.close()

    return client, close


@dataclasses.dataclass
class BatchResult:
    """
    Summary of a `BatchDetector` run.

    Attributes
    ----------
    out_dir : `~pathlib.Path`
        The output directory.
    catalog : `~pathlib.Path`
        The merged catalogue of the run.
    manifest : `~pathlib.Path`
        The SQLite manifest.
    n_done : int
        Images processed in this run.
    n_reused : int
        Images already done by an earlier run (skipped).
    n_failed : int
        Images and files that failed (see the manifest's ``error``).
    n_skipped : int
        HDUs without an image.
    n_sources : int
        Rows of the merged catalogue.
    n_pixels : int
        Pixels processed in this run.
    seconds : float
        Wall-clock time of the run (cluster start excluded).
    dashboard_link : str
        The Dask dashboard address.
    """

    out_dir: Path
    catalog: Path
    manifest: Path
    n_done: int = 0
    n_reused: int = 0
    n_failed: int = 0
    n_skipped: int = 0
    n_sources: int = 0
    n_pixels: int = 0
    seconds: float = 0.0
    dashboard_link: str = ''

    @property
    def megapixels_per_second(self):
        """Input megapixels processed per second in this run."""
        return self.n_pixels / 1e6 / self.seconds if self.seconds else np.nan


@contextlib.contextmanager
def _run_lock(out_dir):
    # One run per output directory at a time: two drivers writing the same
    # manifest and outputs would each redo the other's work.
    path = Path(out_dir) / '.astro_deepcolor.lock'
    with open(path, 'w') as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            msg = f'another run is using the output directory {str(out_dir)!r}'
            raise FileExistsError(msg) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _remove_temporaries(out_dir):
    # Temporary files left by a killed writer (see utils._io.atomic_path):
    # hidden files in the output folders. Safe because of the run lock.
    for sub in ('catalogs', 'segmentation', '.'):
        folder = Path(out_dir) / sub
        if folder.is_dir():
            for tmp in folder.glob('.*.*'):
                if tmp.is_file() and tmp.suffix in ('.fits', '.ecsv',
                                                    '.parquet'):
                    tmp.unlink(missing_ok=True)


class BatchDetector:
    """
    Detect sources in every image HDU of many FITS files with Dask.

    Parameters
    ----------
    threshold : float, optional
        Detection probability threshold in [0, 1].
    n_pixels : int, optional
        Minimum number of connected pixels of a source.
    footprint_threshold : float or None, optional
        Footprint level (see `~astro_deepcolor.DeepColorSegmentation`).
    model : str or `~pathlib.Path`, optional
        ONNX model file; None for the shipped default.
    connectivity : {4, 8}, optional
        Pixel connectivity.
    backend, device : str, optional
        Passed to `~astro_deepcolor.DeepColorSegmentation`.
    batch_size : int, optional
        Tiles per network call on the workers.
    tile_shape : int, optional
        Network tile side on the workers.
    detector : callable, optional
        Any detector to run instead of the deep-coloring network:
        ``detector(data, mask=None)`` returning a
        `~photutils.segmentation.SegmentationImage` or None, or a tuple
        ``(segm, table)``. It is pickled to the workers, so it must be
        picklable (a module-level function, a `functools.partial`, or an
        object such as the detectors in `astro_deepcolor.baselines`
        wrapped to that signature). Without a table, the catalogue is made
        with `~photutils.segmentation.SourceCatalog` on the
        background-subtracted image.
    hdu : int or str, optional
        Process only this HDU (index or EXTNAME) of each file; by default
        every image HDU.
    segmentation : bool, optional
        Also write one segmentation FITS image per HDU.
    catalog_format : {'fits', 'ecsv'}, optional
        Format of the per-image catalogues.
    merged_format : {'fits', 'parquet'}, optional
        Format of the merged catalogue of the run.
    scheduler : str, optional
        Address (or scheduler JSON file) of an existing Dask cluster; None
        starts a local cluster.
    n_workers : int, optional
        Local workers (default: one per core).
    threads_per_worker : int, optional
        Threads per local worker.
    dashboard_address : str, optional
        Dashboard address of the local cluster.
    overwrite : bool, optional
        Redo everything, even images done by an earlier run, and allow
        other settings than the earlier run's.
    progress_bar : bool, optional
        Show a tqdm progress bar and print the dashboard address.
    callback : callable, optional
        Called in the driving process with the manifest row (a dict) of
        every image once it is done or failed; raising from it (for
        example `KeyboardInterrupt`) stops the run cleanly.

    Examples
    --------
    >>> from astro_deepcolor.batch import BatchDetector
    >>> batch = BatchDetector(threshold=0.5, n_pixels=5)  # doctest: +SKIP
    >>> result = batch(['night1/*.fits.fz'], 'out/night1')  # doctest: +SKIP
    >>> result.catalog  # doctest: +SKIP
    PosixPath('out/night1/catalog.fits')
    """

    def __init__(self, threshold=0.5, n_pixels=5, *, model=None,
                 footprint_threshold=0.8, connectivity=8, backend='auto', device='auto',
                 batch_size=None, tile_shape=None, detector=None, hdu=None,
                 segmentation=False,
                 catalog_format='fits', merged_format='fits', scheduler=None,
                 n_workers=None, threads_per_worker=1,
                 dashboard_address=':8787', overwrite=False,
                 progress_bar=False, callback=None):
        self.settings = DetectSettings(
            threshold=threshold, n_pixels=n_pixels, connectivity=connectivity,
            footprint_threshold=footprint_threshold,
            model=None if model is None else os.fspath(model),
            backend=backend, device=device, batch_size=batch_size,
            tile_shape=tile_shape,
            # A local cluster runs n_workers x threads_per_worker on this
            # machine: give each worker's network that many threads.
            n_threads=(check_positive_int(threads_per_worker, 'threads_per_worker')
                       if scheduler is None else None),
            segmentation=bool(segmentation), catalog_format=catalog_format)
        if detector is not None and not callable(detector):
            msg = f'detector must be callable, got {detector!r}'
            raise TypeError(msg)
        self.detector = detector
        if hdu is not None and (isinstance(hdu, bool)
                                or not isinstance(hdu, (int, str))):
            msg = f'hdu must be None, an HDU index or an EXTNAME, got {hdu!r}'
            raise TypeError(msg)
        self.hdu = hdu
        self.merged_format = check_choice(merged_format, 'merged_format',
                                          MERGED_FORMATS)
        self.scheduler = scheduler
        if n_workers is not None:
            check_positive_int(n_workers, 'n_workers')
        self.n_workers = n_workers
        self.threads_per_worker = check_positive_int(threads_per_worker,
                                                     'threads_per_worker')
        self.dashboard_address = dashboard_address
        self.overwrite = bool(overwrite)
        self.progress_bar = bool(progress_bar)
        if callback is not None and not callable(callback):
            msg = f'callback must be callable, got {callback!r}'
            raise TypeError(msg)
        self.callback = callback

    def _settings_record(self):
        record = dataclasses.asdict(self.settings)
        record.pop('n_threads')  # speed only: a resume may change it
        if self.detector is not None:
            record['detector'] = repr(self.detector)
            for key in ('model', 'backend', 'device', 'batch_size',
                        'tile_shape'):
                record.pop(key)
        record['merged_format'] = self.merged_format
        record['hdu'] = self.hdu
        return record

    def output_paths(self, out_dir, stem, index):
        """
        The output files of one HDU.

        Parameters
        ----------
        out_dir : `~pathlib.Path`
            The run's output directory.
        stem : str
            The file's output stem (see `~astro_deepcolor.batch.output_stems`).
        index : int
            The HDU index.

        Returns
        -------
        catalog, segmentation : str
            The catalogue path and the segmentation path (``''`` when
            segmentation images are not written).
        """
        name = f'{stem}.hdu{index:03d}'
        suffix = CATALOG_FORMATS[self.settings.catalog_format]
        catalog = Path(out_dir) / 'catalogs' / f'{name}.cat{suffix}'
        segm = ''
        if self.settings.segmentation:
            segm = str(Path(out_dir) / 'segmentation' / f'{name}.segm.fits')
        return str(catalog), segm

    def __call__(self, inputs, out_dir, *, client=None):
        """
        Run (or resume) the detection of ``inputs`` into ``out_dir``.

        Parameters
        ----------
        inputs : str or list of str
            Files, directories, glob patterns and list files (see
            `~astro_deepcolor.batch.expand_inputs`).
        out_dir : str or `~pathlib.Path`
            Output directory: ``catalogs/``, ``segmentation/``,
            ``catalog.fits`` (or ``.parquet``), ``manifest.sqlite`` and
            ``manifest.ecsv``.
        client : `~distributed.Client`, optional
            Use this client instead of connecting to ``scheduler`` or
            starting a local cluster.

        Returns
        -------
        result : `BatchResult`
            What was done.
        """
        paths = expand_inputs(inputs)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        catalog = out_dir / f'catalog{MERGED_FORMATS[self.merged_format]}'
        result = BatchResult(out_dir=out_dir, catalog=catalog,
                             manifest=out_dir / 'manifest.sqlite')
        with _run_lock(out_dir), Manifest(result.manifest) as manifest:
            manifest.check_settings(self._settings_record(),
                                    overwrite=self.overwrite)
            manifest.reset_running()
            _remove_temporaries(out_dir)
            close = None
            if client is None:
                client, close = make_client(
                    self.scheduler, n_workers=self.n_workers,
                    threads_per_worker=self.threads_per_worker,
                    dashboard_address=self.dashboard_address)
            try:
                result.dashboard_link = str(client.dashboard_link or '')
                if self.progress_bar:
                    print(f'Dask dashboard: {result.dashboard_link}',
                          file=sys.stderr, flush=True)
                t0 = time.perf_counter()
                self._run(client, paths, out_dir, manifest, result)
                result.seconds = time.perf_counter() - t0
            finally:
                if close is not None:
                    close()
            result.n_sources = write_merged_catalog(manifest, paths, catalog)
            manifest.write_ecsv(out_dir / 'manifest.ecsv')
        return result

    def _run(self, client, paths, out_dir, manifest, result):
        from distributed import as_completed
        from tqdm.auto import tqdm

        stems = output_stems(paths)
        ac = as_completed()
        futures = {}
        pbar = tqdm(total=0, unit='image', disable=not self.progress_bar,
                    desc='detect', file=sys.stderr)
        token = uuid.uuid4().hex[:8]

        def submit_images(path):
            for row in manifest.rows(path, images_only=True):
                index = row['hdu']
                if row['status'] == 'skipped':
                    result.n_skipped += 1
                    continue
                catalog, segm = self.output_paths(out_dir, stems[path], index)
                done = (row['status'] == 'done' and not self.overwrite
                        and os.path.exists(row['catalog'])
                        and (not segm or os.path.exists(row['segmentation'])))
                pbar.total += 1
                if done:
                    result.n_reused += 1
                    pbar.update(1)
                    continue
                manifest.update(path, index, 'pending', catalog=catalog,
                                segmentation=segm)
                manifest.mark_running(path, index)
                fut = client.submit(
                    _detect_task, path, index, catalog, segm, self.settings,
                    self.detector, pure=False, priority=0,
                    key=f'detect-{stems[path]}-{index}-{token}')
                futures[fut.key] = (fut, 'detect', path, index)
                ac.add(fut)
            pbar.refresh()

        for path in paths:
            row = manifest.get(path)
            try:
                stat = os.stat(path)
            except OSError:
                stat = None
            unchanged = (row is not None and row['status'] == 'done'
                         and stat is not None
                         and row['file_size'] == stat.st_size
                         and row['file_mtime'] == stat.st_mtime)
            if unchanged:
                submit_images(path)
                continue
            if row is not None:
                manifest.forget_file(path)
            manifest.update(path, FILE_ROW, 'pending')
            manifest.mark_running(path, FILE_ROW)
            fut = client.submit(_scan_task, path, pure=False, priority=10,
                                key=f'scan-{stems[path]}-{token}')
            futures[fut.key] = (fut, 'scan', path, FILE_ROW)
            ac.add(fut)

        try:
            for fut in ac:
                _, kind, path, index = futures.pop(fut.key)
                if fut.status == 'finished':
                    out = fut.result()
                    error = ''
                else:
                    exc = fut.exception() if fut.status == 'error' else None
                    out = None
                    error = (f'{type(exc).__name__}: {exc}' if exc is not None
                             else f'task {fut.status}')
                fut.release()
                if kind == 'scan':
                    self._record_scan(manifest, path, out, error, result,
                                      self.hdu)
                    if manifest.get(path)['status'] == 'done':
                        submit_images(path)
                    continue
                if out is None:
                    manifest.update(path, index, 'failed', error=error)
                else:
                    npix = out.pop('npix', 0)
                    manifest.update(path, index, out.pop('status'), **out)
                    result.n_pixels += npix
                row = manifest.get(path, index)
                if row['status'] == 'done':
                    result.n_done += 1
                else:
                    result.n_failed += 1
                pbar.update(1)
                if self.callback is not None:
                    self.callback(row)
        except BaseException:
            # Ctrl-C or a failing callback: stop the cluster work, leave
            # the manifest resumable (unfinished rows back to pending).
            with contextlib.suppress(Exception):
                client.cancel([f for f, *_ in futures.values()])
            manifest.reset_running()
            raise
        finally:
            pbar.close()

    @staticmethod
    def _record_scan(manifest, path, out, error, result, selected=None):
        if out is not None and out['hdus'] is None:
            error = out.pop('error')
            out.pop('hdus')
            manifest.update(path, FILE_ROW, 'failed', error=error, **out)
            result.n_failed += 1
            return
        if out is None:
            manifest.update(path, FILE_ROW, 'failed', error=error)
            result.n_failed += 1
            return
        out.pop('error')
        hdus = out.pop('hdus')
        if selected is not None:
            # --hdu N or --hdu EXTNAME: the other HDUs are not wanted
            hdus = [h if (h.index == selected if isinstance(selected, int)
                          else h.extname.upper() == selected.upper())
                    else dataclasses.replace(h, error='not selected by hdu')
                    for h in hdus]
        images = [h for h in hdus if h.is_image]
        status, error = 'done', ''
        if not images:
            status = 'failed'
            error = 'no image HDU in the file'
            result.n_failed += 1
        manifest.update(path, FILE_ROW, status, n_sources=len(images),
                        error=error, **out)
        for hdu in hdus:
            if hdu.is_image:
                manifest.update(path, hdu.index, 'pending',
                                extname=hdu.extname, shape=hdu.shape)
            else:
                manifest.update(path, hdu.index, 'skipped',
                                extname=hdu.extname, error=hdu.error)


def write_merged_catalog(manifest, paths, path):
    """
    Write the merged catalogue of a run from its per-image catalogues.

    Parameters
    ----------
    manifest : `~astro_deepcolor.batch.Manifest`
        The run manifest; only images marked ``done`` are merged, each
        once, in input order then HDU order.
    paths : list of str
        The run's input files (rows of other files are left out).
    path : str or `~pathlib.Path`
        The merged catalogue (``.fits`` or ``.parquet``), written
        atomically.

    Returns
    -------
    n_sources : int
        Rows written.
    """
    from astropy.coordinates import SkyCoord
    from astropy.table import QTable, vstack

    order = {p: i for i, p in enumerate(paths)}
    rows = [r for r in manifest.rows(status='done', images_only=True)
            if r['file'] in order]
    rows.sort(key=lambda r: (order[r['file']], r['hdu']))
    tables = []
    for row in rows:
        table = QTable.read(row['catalog'])
        if len(table) == 0:
            continue
        for name in list(table.colnames):
            if isinstance(table[name], SkyCoord):
                del table[name]  # ra and dec columns carry it
        table.meta.clear()
        table.add_column(np.full(len(table), row['file']), name='file',
                         index=0)
        table.add_column(np.full(len(table), row['hdu'], dtype=np.int16),
                         name='hdu', index=1)
        table.add_column(np.full(len(table), row['extname']), name='extname',
                         index=2)
        tables.append(table)
    if tables:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # metadata merge conflicts
            merged = vstack(tables, join_type='outer',
                            metadata_conflicts='silent')
    else:
        merged = _empty_catalog()
        merged.add_column(np.zeros(0, dtype=str), name='file', index=0)
        merged.add_column(np.zeros(0, dtype=np.int16), name='hdu', index=1)
        merged.add_column(np.zeros(0, dtype=str), name='extname', index=2)
    merged.meta['n_images'] = len(rows)
    merged.meta['settings'] = str(manifest.settings)
    fmt = 'parquet' if str(path).endswith('.parquet') else 'fits'
    with atomic_path(path, overwrite=True, name='merged catalogue') as tmp:
        merged.write(tmp, format=fmt)
    return len(merged)


def detect_batch(inputs, out_dir, threshold=0.5, n_pixels=5, *, client=None,
                 **kwargs):
    """
    Detect sources in every image HDU of many FITS files (see `BatchDetector`).

    Parameters
    ----------
    inputs : str or list of str
        Files, directories, glob patterns and list files.
    out_dir : str or `~pathlib.Path`
        Output directory.
    threshold : float, optional
        Detection probability threshold.
    n_pixels : int, optional
        Minimum source area in pixels.
    client : `~distributed.Client`, optional
        An existing client.
    **kwargs
        Other `BatchDetector` parameters (``scheduler``, ``n_workers``,
        ``detector``, ``segmentation``...).

    Returns
    -------
    result : `BatchResult`
        What was done.
    """
    batch = BatchDetector(threshold, n_pixels, **kwargs)
    return batch(inputs, out_dir, client=client)
