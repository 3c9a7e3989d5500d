# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Exceptions and warnings raised by astro_deepcolor.

``photutils.utils.exceptions.NoDetectionsWarning`` is reused (not
re-invented) for detections that find nothing, exactly as photutils does.
"""

from astropy.utils.exceptions import AstropyUserWarning

__all__ = ['DeepColorError', 'DeepColorWarning', 'ModelError', 'SmoothedImageWarning']


class DeepColorError(RuntimeError):
    """Base class for astro_deepcolor run-time errors."""


class ModelError(DeepColorError, ValueError):
    """A model file is missing, corrupt, truncated or inconsistent."""


class DeepColorWarning(AstropyUserWarning):
    """Warning for recoverable problems (e.g. masked input pixels)."""


class SmoothedImageWarning(DeepColorWarning):
    """
    The image looks smoothed or convolved.

    The network was trained on raw images, whose neighbouring pixels have
    independent noise; photutils scripts convolve the image with a kernel
    before ``detect_sources``, which this detector must not be given.
    """
