# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Source detectors behind one interface, for benchmarking: the classical
ones (``DETECTORS``) and the deep-coloring CNN (`DeepColorDetector`).

Each detector is configured once and called as ``detector(data,
threshold, mask=None) -> (SegmentationImage or None, QTable)``; the table
has at least ``label``, ``x``, ``y`` (0-based pixels) and ``flux``.
``Detector.available()`` says whether the library or executable is
present and ``Detector.unavailable_reason()`` why not.
"""

from .base import BaseDetector, prepare_image, segment_catalog
from .deepcolor import DeepColorDetector
from .noisechisel import NoiseChiselDetector
from .photutils_detector import PhotutilsDetector
from .sep_detector import SepDetector
from .sextractor import SExtractorDetector

__all__ = ['DETECTORS', 'BaseDetector', 'DeepColorDetector',
           'NoiseChiselDetector',
           'PhotutilsDetector', 'SExtractorDetector', 'SepDetector',
           'prepare_image', 'segment_catalog']

#: Name -> detector class.
DETECTORS = {cls.name: cls for cls in (SepDetector, PhotutilsDetector,
                                       SExtractorDetector, NoiseChiselDetector)}
