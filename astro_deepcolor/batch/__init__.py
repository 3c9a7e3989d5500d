# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Survey-scale detection: many FITS files, many HDUs, huge mosaics, on Dask.

* `BatchDetector` / `detect_batch`: every image HDU of many files (paths,
  directories, globs, list files) on a local or remote Dask cluster, with
  per-image catalogues, a merged catalogue, a resumable
  `Manifest` and atomic outputs.
* `detect_mosaic`: one image too large for memory, as a dask array,
  detected chunk by chunk with the labels stitched exactly across chunks.

Every image goes through `astro_deepcolor.pipeline.detect_image`, the
per-image pipeline of the ``detect`` command (whose batch mode,
``astro-deepcolor detect INPUT... --out DIR``, maps its options onto
`BatchDetector`).
"""

from .inputs import (
    FITS_SUFFIXES,
    ImageHDU,
    expand_inputs,
    output_stems,
    read_image_hdu,
    scan_image_hdus,
)
from .manifest import FILE_ROW, STATUSES, Manifest
from .mosaic import (
    detect_mosaic,
    merge_peakless_chunks,
    mosaic_background,
    stitch_labels,
)
from .runner import (
    BatchDetector,
    BatchResult,
    ImageOptions,
    detect_batch,
    make_client,
    write_merged_catalog,
)

__all__ = [
    'FILE_ROW',
    'FITS_SUFFIXES',
    'STATUSES',
    'BatchDetector',
    'BatchResult',
    'ImageHDU',
    'ImageOptions',
    'Manifest',
    'detect_batch',
    'detect_mosaic',
    'expand_inputs',
    'make_client',
    'merge_peakless_chunks',
    'mosaic_background',
    'output_stems',
    'read_image_hdu',
    'scan_image_hdus',
    'stitch_labels',
    'write_merged_catalog',
]
