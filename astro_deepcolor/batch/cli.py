# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The batch mode of ``astro-deepcolor detect``.

``astro-deepcolor detect INPUT... --out DIR`` (several inputs, globs, list
files, or any input with ``--out``) is handed to `run_cli` by the
``detect`` subcommand (`astro_deepcolor.cli.detect`), which owns the
argument parser; this module only maps the parsed arguments onto
`~astro_deepcolor.batch.BatchDetector`.
"""

import sys

__all__ = ['run_cli']


def _arg(args, *names, default=None):
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            return value
    return default


def run_cli(args):
    """
    Run the batch detection described by parsed ``detect`` arguments.

    Parameters
    ----------
    args : `argparse.Namespace`
        The parsed arguments of ``astro-deepcolor detect``. Used:
        ``inputs`` (list of files, directories, globs, list files),
        ``out`` (output directory), ``scheduler`` (address of an existing
        Dask cluster), ``workers`` (local workers), ``threshold``,
        ``n_pixels``, ``connectivity``, ``model``, ``backend``,
        ``device``, ``batch_size``, ``tile_size``, ``hdu``,
        ``write_segmentation`` (write segmentation images), ``catalog_format`` / ``merged_format``
        (``'parquet'`` for a Parquet merged catalogue), ``overwrite``,
        ``progress`` / ``quiet``. Missing attributes take the
        `~astro_deepcolor.batch.BatchDetector` defaults.

    Returns
    -------
    status : int
        0 if every image was processed, 1 if some failed (see the
        manifest).
    """
    from astro_deepcolor.batch.runner import BatchDetector

    inputs = _arg(args, 'inputs', 'input')
    if isinstance(inputs, str):
        inputs = [inputs]
    out = _arg(args, 'out', 'output')
    if out is None:
        msg = ('several inputs need an output directory: --out DIR (one '
               'catalogue per image plus a merged catalogue)')
        raise ValueError(msg)
    for name in ('catalog', 'regions', 'segmentation'):
        value = getattr(args, name, None)
        if isinstance(value, str):
            msg = (f'--{name} names one output file; in batch mode outputs '
                   f'go to --out DIR (use --write-segmentation for '
                   'segmentation images)')
            raise ValueError(msg)
    merged_format = _arg(args, 'merged_format', default='fits')
    catalog_format = _arg(args, 'catalog_format', default='fits')
    if catalog_format == 'parquet':
        # a single --format parquet means: Parquet for the merged catalogue
        merged_format, catalog_format = 'parquet', 'fits'
    hdu = _arg(args, 'hdu')
    if isinstance(hdu, str) and hdu.lstrip('-').isdigit():
        hdu = int(hdu)
    progress = not bool(_arg(args, 'quiet', default=False))
    progress = bool(_arg(args, 'progress', 'progress_bar', default=progress))

    from astro_deepcolor.cli.detect import footprint_arg

    batch = BatchDetector(
        threshold=_arg(args, 'threshold', default=0.5),
        n_pixels=_arg(args, 'n_pixels', default=5),
        footprint_threshold=footprint_arg(
            _arg(args, 'footprint_threshold', default=0.8)),
        model=_arg(args, 'model'),
        connectivity=_arg(args, 'connectivity', default=8),
        backend=_arg(args, 'backend', default='auto'),
        device=_arg(args, 'device', default='auto'),
        batch_size=_arg(args, 'batch_size'),
        tile_shape=_arg(args, 'tile_size', 'tile_shape'),
        hdu=hdu,
        segmentation=bool(_arg(args, 'write_segmentation', default=False)
                          or getattr(args, 'segmentation', None) is True),
        catalog_format=catalog_format,
        merged_format=merged_format,
        scheduler=_arg(args, 'scheduler'),
        n_workers=_arg(args, 'workers', 'n_workers'),
        threads_per_worker=_arg(args, 'threads_per_worker', default=1),
        dashboard_address=_arg(args, 'dashboard_address', default=':8787'),
        overwrite=bool(_arg(args, 'overwrite', default=False)),
        progress_bar=progress,
    )
    result = batch(inputs, out)
    mpix = result.megapixels_per_second
    if progress:  # --quiet: no progress bar and no summary line
        print(f'{result.n_done} images detected, {result.n_reused} already done, '
              f'{result.n_failed} failed, {result.n_skipped} HDUs without image; '
              f'{result.n_sources} sources in {result.catalog} '
              f'({result.seconds:.1f} s, {mpix:.2f} MPix/s); '
              f'manifest {result.manifest}', file=sys.stderr)
    return 1 if result.n_failed else 0
