# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Classical source detectors behind one interface, for benchmarking.

Each detector is configured once and called as ``detector(data,
threshold, mask=None) -> (SegmentationImage or None, QTable)``; the table
has at least ``label``, ``x``, ``y`` (0-based pixels) and ``flux``.
``Detector.available()`` says whether the library or executable is
present and ``Detector.unavailable_reason()`` why not.
"""

from .base import BaseDetector, prepare_image, segment_catalog
from .noisechisel import NoiseChiselDetector
from .photutils_detector import PhotutilsDetector
from .sep_detector import SepDetector
from .sextractor import SExtractorDetector

__all__ = ['DETECTORS', 'BaseDetector', 'NoiseChiselDetector',
           'PhotutilsDetector', 'SExtractorDetector', 'SepDetector',
           'prepare_image', 'segment_catalog']

#: Name -> detector class.
DETECTORS = {cls.name: cls for cls in (SepDetector, PhotutilsDetector,
                                       SExtractorDetector, NoiseChiselDetector)}
