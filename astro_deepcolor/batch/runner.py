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
HDU (and its weight and mask files, found by a naming rule), runs the
one per-image pipeline, `astro_deepcolor.pipeline.detect_image`, with the
run's finder, writes the per-image catalogue (and segmentation) atomically
and returns a few numbers. The finder is sent to every worker once (Dask
``scatter``) and builds its network session on first use, so a worker
keeps one session, and a GPU worker its weights on the device, between
tasks. The catalogues have the same columns and rows as the ``detect``
command gives for one file.
The process that drives the run is the only one that writes the
`~astro_deepcolor.batch.Manifest`; the merged catalogue is built from the
per-image catalogues listed as done in the manifest, so a task that ran
twice (its worker was killed after writing) is counted once.
"""

import contextlib
import copy
import dataclasses
import fcntl
import logging
import os
import socket
import sys
import time
import uuid
import warnings
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
    check_positive_int,
)

__all__ = ['BatchDetector', 'BatchResult', 'ImageOptions', 'detect_batch',
           'make_client', 'write_merged_catalog']

_log = logging.getLogger(__name__)

#: Merged-catalogue formats (name -> file suffix).
MERGED_FORMATS = {'fits': '.fits', 'parquet': '.parquet'}
#: Per-image catalogue formats (name -> file suffix).
CATALOG_FORMATS = {'fits': '.fits', 'ecsv': '.ecsv'}


@dataclasses.dataclass(frozen=True)
class ImageOptions:
    """
    How each image's companion files and photometry are found.

    Attributes
    ----------
    weight_suffix : str or None
        Naming rule of the weight file of an image (see
        `~astro_deepcolor.pipeline.derive_path`: ``'ooi=oow'`` or a suffix
        such as ``'.weight'``); None: no weight map.
    weight_type : {'weight', 'variance', 'rms'}
        What the weight files hold.
    mask_suffix : str or None
        Naming rule of the mask file of an image (non-zero = bad pixel,
        e.g. ``'ooi=ood'`` for DECam data-quality files).
    mask : str or None
        One mask file (``FILE[HDU]``) for every image, e.g. a detector's
        bad-column map.
    zeropoint : float or None
        Photometric zero point of every image (default: each header's).
    segmentation : bool
        Whether to write the segmentation image of every HDU.
    catalog_format : {'fits', 'ecsv'}
        Format of the per-image catalogues.
    """

    weight_suffix: str | None = None
    weight_type: str = 'weight'
    mask_suffix: str | None = None
    mask: str | None = None
    zeropoint: float | None = None
    segmentation: bool = False
    catalog_format: str = 'fits'

    def __post_init__(self):
        from astro_deepcolor.pipeline import WEIGHT_TYPES

        check_choice(self.weight_type, 'weight_type', WEIGHT_TYPES)
        check_choice(self.catalog_format, 'catalog_format', CATALOG_FORMATS)
        for name in ('weight_suffix', 'mask_suffix'):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                msg = f'{name} must be a non-empty string, got {value!r}'
                raise ValueError(msg)
        if self.mask is not None:
            object.__setattr__(self, 'mask', os.path.abspath(self.mask))
        if self.zeropoint is not None:
            zp = float(self.zeropoint)
            if not np.isfinite(zp):
                msg = f'zeropoint must be a finite number, got {self.zeropoint!r}'
                raise ValueError(msg)
            object.__setattr__(self, 'zeropoint', zp)

    def companions(self, path, index, shape):
        """
        Read the weight map and mask of one image HDU.

        Parameters
        ----------
        path : str
            The image file.
        index : int
            The image's HDU index (the companions' HDU when they have it).
        shape : tuple of 2 int
            The image shape.

        Returns
        -------
        weight, mask : 2D `~numpy.ndarray` or None
            The weight map and the bad-pixel mask.
        """
        from astro_deepcolor.pipeline import derive_path, read_fits_map

        weight = mask = None
        if self.weight_suffix is not None:
            weight = read_fits_map(derive_path(path, self.weight_suffix),
                                   shape, option='weight', hdu=index)
        masks = []
        if self.mask_suffix is not None:
            masks.append(read_fits_map(derive_path(path, self.mask_suffix),
                                       shape, option='mask', hdu=index))
        if self.mask is not None:
            masks.append(read_fits_map(self.mask, shape, option='--mask'))
        for m in masks:
            m = np.asarray(m) != 0
            mask = m if mask is None else mask | m
        return weight, mask


# -- worker side ----------------------------------------------------------

def _dask_worker_threads():
    """Thread count of the Dask worker running this task, else None."""
    try:
        from distributed import get_worker

        return int(get_worker().state.nthreads)
    except Exception:  # not on a worker, or an older distributed
        return None


def _worker_id():
    return f'{socket.gethostname()}:{os.getpid()}'


def _write_segmentation(path, segm, shape, header, meta):
    from astropy.io import fits

    data = (np.zeros(shape, dtype=np.int32) if segm is None
            else np.asarray(segm.data, dtype=np.int32))
    from astro_deepcolor.pipeline import celestial_wcs

    wcs = celestial_wcs(header)
    out = fits.Header() if wcs is None else wcs.to_header(relax=True)
    for key, value in meta.items():
        out[key] = value
    with atomic_path(path, overwrite=True, name='segmentation') as tmp:
        fits.PrimaryHDU(data=data, header=out).writeto(tmp)


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


def _detect_task(path, index, catalog, segmentation, finder, options):
    """
    Worker task: detect one HDU, write its outputs, return a summary.

    Exceptions are caught and returned as a ``failed`` summary so that one
    bad HDU never stops the run (and does not fill the worker logs).
    """
    from photutils.utils.exceptions import NoDetectionsWarning

    from astro_deepcolor.inference import DeepColorSegmentation
    from astro_deepcolor.pipeline import detect_image, write_catalog

    t0 = time.time()
    summary = {'started': t0, 'worker': _worker_id(), 'npix': 0}
    try:
        if (isinstance(finder, DeepColorSegmentation)
                and finder.n_threads is None
                and '_runner' not in finder.__dict__):
            # On a Dask worker (e.g. --scheduler ADDRESS), run the
            # network on the worker's own thread count rather than on
            # every core of the node, which its neighbours share.
            finder.n_threads = _dask_worker_threads()
        data, header = read_image_hdu(path, index)
        summary['npix'] = int(data.size)
        weight, mask = options.companions(path, index, data.shape)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', NoDetectionsWarning)
            segm, table = detect_image(
                finder, data, header, mask=mask, weight=weight,
                weight_type=options.weight_type,
                zeropoint=options.zeropoint)
        meta = {'ORIGFILE': os.path.basename(path), 'ORIGHDU': int(index),
                'EXTNAME': str(header.get('EXTNAME', ''))}
        if segmentation:
            _write_segmentation(segmentation, segm, data.shape, header, meta)
        write_catalog(table, catalog, overwrite=True, meta=meta)
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
    finder : `~astro_deepcolor.DeepColorSegmentation`, optional
        The configured finder: the one carrier of the detection settings
        (model, thresholds, footprint level, ``n_pixels``, backend,
        tiles). Default: ``DeepColorSegmentation()``, the shipped model at
        its calibrated defaults. It is sent once to every worker, which
        builds its own network session on first use.
    detector : callable, optional
        Any detector to run instead of the deep-coloring network:
        ``detector(data, mask=None)`` returning a
        `~photutils.segmentation.SegmentationImage` or None, or a tuple
        ``(segm, table)``. It is pickled to the workers, so it must be
        picklable (a module-level function, a `functools.partial`, or an
        object such as the detectors in `astro_deepcolor.baselines`
        wrapped to that signature). Its segmentation is measured like the
        finder's (`~astro_deepcolor.pipeline.detect_image`) unless it
        returns its own table.
    hdu : int or str, optional
        Process only this HDU (index or EXTNAME) of each file; by default
        every image HDU.
    weight_suffix : str, optional
        Naming rule of each image's weight file (see `ImageOptions`):
        ``'ooi=oow'`` runs a directory of DECam ``ooi``/``oow`` pairs.
    weight_type : {'weight', 'variance', 'rms'}, optional
        What the weight files hold (inverse variance by default).
    mask_suffix : str, optional
        Naming rule of each image's mask file (non-zero = bad), e.g.
        ``'ooi=ood'``.
    mask : str, optional
        One mask file (``FILE[HDU]``) applied to every image.
    zeropoint : float, optional
        Photometric zero point (default: each image header's
        ``MAGZERO``/``MAGZPT``; no magnitudes without one).
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
        Threads per local worker (and of each worker's network, unless
        the finder sets ``n_threads``).
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
    >>> from astro_deepcolor import DeepColorSegmentation
    >>> from astro_deepcolor.batch import BatchDetector
    >>> finder = DeepColorSegmentation('5%')  # doctest: +SKIP
    >>> batch = BatchDetector(finder, weight_suffix='ooi=oow',
    ...                       mask_suffix='ooi=ood')  # doctest: +SKIP
    >>> result = batch(['night1/*_ooi_*.fits.fz'], 'out/night1')  # doctest: +SKIP
    >>> result.catalog  # doctest: +SKIP
    PosixPath('out/night1/catalog.fits')
    """

    def __init__(self, finder=None, *, detector=None, hdu=None,
                 weight_suffix=None, weight_type='weight', mask_suffix=None,
                 mask=None, zeropoint=None, segmentation=False,
                 catalog_format='fits', merged_format='fits', scheduler=None,
                 n_workers=None, threads_per_worker=1,
                 dashboard_address=':8787', overwrite=False,
                 progress_bar=False, callback=None):
        from astro_deepcolor.inference import DeepColorSegmentation

        if detector is not None and not callable(detector):
            msg = f'detector must be callable, got {detector!r}'
            raise TypeError(msg)
        if finder is not None and not isinstance(finder, DeepColorSegmentation):
            msg = ('finder must be a DeepColorSegmentation (use detector= for '
                   f'other detectors), got {type(finder).__name__}')
            raise TypeError(msg)
        if finder is not None and detector is not None:
            msg = 'give finder or detector, not both'
            raise ValueError(msg)
        self.threads_per_worker = check_positive_int(threads_per_worker,
                                                     'threads_per_worker')
        if detector is None:
            if finder is None:
                finder = DeepColorSegmentation()
            if scheduler is None and finder.n_threads is None:
                # A local cluster runs n_workers x threads_per_worker on
                # this machine: give each worker's network that many.
                finder = copy.copy(finder)
                finder.__dict__.pop('_runner', None)
                finder.n_threads = self.threads_per_worker
        self.finder = finder
        self.detector = detector
        self.options = ImageOptions(
            weight_suffix=weight_suffix, weight_type=weight_type,
            mask_suffix=mask_suffix,
            mask=None if mask is None else os.fspath(mask),
            zeropoint=zeropoint, segmentation=bool(segmentation),
            catalog_format=catalog_format)
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
        self.dashboard_address = dashboard_address
        self.overwrite = bool(overwrite)
        self.progress_bar = bool(progress_bar)
        if callback is not None and not callable(callback):
            msg = f'callback must be callable, got {callback!r}'
            raise TypeError(msg)
        self.callback = callback

    def _settings_record(self):
        """What determines the outputs (stored in the manifest)."""
        record = dataclasses.asdict(self.options)
        if self.detector is not None:
            record['detector'] = repr(self.detector)
        else:
            f = self.finder
            record.update(threshold=f.threshold, n_pixels=f.n_pixels,
                          footprint_threshold=f.footprint_threshold,
                          connectivity=f.connectivity,
                          merge_fraction=f.merge_fraction,
                          model=str(f.model.path))
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
        suffix = CATALOG_FORMATS[self.options.catalog_format]
        catalog = Path(out_dir) / 'catalogs' / f'{name}.cat{suffix}'
        segm = ''
        if self.options.segmentation:
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
        worker_finder = self.detector
        if worker_finder is None:
            # sent once: each worker keeps one finder (and one network
            # session) for all its tasks
            worker_finder = client.scatter(self.finder, broadcast=True,
                                           hash=False)
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
                    _detect_task, path, index, catalog, segm, worker_finder,
                    self.options, pure=False, priority=0,
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
    import astropy.units as u
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
                # plain ra/dec columns: images without a celestial WCS
                # (no sky_centroid) merge with the others
                sky = table[name].icrs
                index = table.colnames.index(name)
                del table[name]
                table.add_column(sky.ra.to(u.deg), name='ra', index=index)
                table.add_column(sky.dec.to(u.deg), name='dec', index=index + 1)
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
        merged = QTable({'label': np.zeros(0, dtype=np.int32)})
        merged.add_column(np.zeros(0, dtype=str), name='file', index=0)
        merged.add_column(np.zeros(0, dtype=np.int16), name='hdu', index=1)
        merged.add_column(np.zeros(0, dtype=str), name='extname', index=2)
    merged.meta['n_images'] = len(rows)
    merged.meta['settings'] = str(manifest.settings)
    fmt = 'parquet' if str(path).endswith('.parquet') else 'fits'
    with atomic_path(path, overwrite=True, name='merged catalogue') as tmp:
        merged.write(tmp, format=fmt)
    return len(merged)


def detect_batch(inputs, out_dir, finder=None, *, client=None, **kwargs):
    """
    Detect sources in every image HDU of many FITS files (see `BatchDetector`).

    Parameters
    ----------
    inputs : str or list of str
        Files, directories, glob patterns and list files.
    out_dir : str or `~pathlib.Path`
        Output directory.
    finder : `~astro_deepcolor.DeepColorSegmentation`, optional
        The configured finder (default: the shipped model at its
        calibrated defaults).
    client : `~distributed.Client`, optional
        An existing client.
    **kwargs
        Other `BatchDetector` parameters (``scheduler``, ``n_workers``,
        ``weight_suffix``, ``segmentation``...).

    Returns
    -------
    result : `BatchResult`
        What was done.
    """
    batch = BatchDetector(finder, **kwargs)
    return batch(inputs, out_dir, client=client)
