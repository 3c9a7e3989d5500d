# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Exceptions and warnings raised by astro_deepcolor.

``photutils.utils.exceptions.NoDetectionsWarning`` is reused (not
re-invented) for detections that find nothing, exactly as photutils does.
"""

from astropy.utils.exceptions import AstropyUserWarning

__all__ = ['DeepColorError', 'DeepColorWarning', 'ModelError']


class DeepColorError(RuntimeError):
    """Base class for astro_deepcolor run-time errors."""


class ModelError(DeepColorError, ValueError):
    """A model file is missing, corrupt, truncated or inconsistent."""


class DeepColorWarning(AstropyUserWarning):
    """Warning for recoverable problems (e.g. masked input pixels)."""
