# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Validators for user-facing parameters.

Every public function validates its inputs at the boundary with these
helpers, so that errors name the offending parameter and value instead of
surfacing from deep inside NumPy or PyTorch.
"""

import numbers

import numpy as np

__all__ = [
    'as_rng',
    'check_choice',
    'check_fraction',
    'check_positive_int',
    'check_seed',
    'check_shape',
    'check_threshold',
]


def _describe(value):
    """A short description of a value: arrays by shape and range."""
    array = np.asanyarray(value) if isinstance(value, (np.ndarray, list, tuple)) else None
    if array is not None and array.ndim > 0:
        text = f'an array of shape {array.shape!r}'
        if array.size and array.dtype.kind in 'iuf':
            with np.errstate(invalid='ignore'):
                text += f' (values {np.nanmin(array):.3g} to {np.nanmax(array):.3g})'
        return text
    return repr(value)


def check_seed(seed, name='seed'):
    """
    Validate a random seed: a non-negative integer (NumPy integers too).

    Parameters
    ----------
    seed : int
        The seed.
    name : str, optional
        The parameter name used in error messages.

    Returns
    -------
    seed : int
        The seed as a Python int.
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        msg = f'{name} must be a non-negative integer, got {seed!r}'
        raise TypeError(msg)
    if seed < 0:
        msg = f'{name} must be a non-negative integer, got {seed!r}'
        raise ValueError(msg)
    return int(seed)


def as_rng(seed, name='seed'):
    """
    Return a `numpy.random.Generator` from an integer seed or a Generator.

    Parameters
    ----------
    seed : int or `numpy.random.Generator`
        Seed (validated with `check_seed`) or an existing generator,
        which is returned unchanged.
    name : str, optional
        The parameter name used in error messages.

    Returns
    -------
    rng : `numpy.random.Generator`
        A PCG64 generator: the same seed gives the same stream on every
        platform.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.Generator(np.random.PCG64(check_seed(seed, name)))


def check_positive_int(value, name, *, minimum=1):
    """
    Validate an integer parameter that must be ``>= minimum``.

    Parameters
    ----------
    value : int
        The value.
    name : str
        The parameter name used in error messages.
    minimum : int, optional
        The smallest allowed value.

    Returns
    -------
    value : int
        The value as a Python int.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        msg = f'{name} must be an integer >= {minimum}, got {value!r}'
        raise TypeError(msg)
    if value < minimum:
        msg = f'{name} must be an integer >= {minimum}, got {value!r}'
        raise ValueError(msg)
    return int(value)


def check_shape(shape, name='shape', *, minimum=1):
    """
    Validate a 2D image shape ``(ny, nx)`` of positive integers.

    Parameters
    ----------
    shape : int or tuple of 2 int
        The shape; a single int means a square image.
    name : str, optional
        The parameter name used in error messages.
    minimum : int, optional
        The smallest allowed size along each axis.

    Returns
    -------
    shape : tuple of 2 int
        The validated shape.
    """
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (shape, shape)
    try:
        shape = tuple(shape)
    except TypeError:
        msg = f'{name} must be a pair of positive integers (ny, nx), got {shape!r}'
        raise TypeError(msg) from None
    if len(shape) != 2 or not all(
        isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in shape
    ):
        msg = f'{name} must be a pair of positive integers (ny, nx), got {shape!r}'
        raise TypeError(msg)
    if any(s < minimum for s in shape):
        msg = f'{name} must be a pair of integers >= {minimum}, got {shape!r}'
        raise ValueError(msg)
    return (int(shape[0]), int(shape[1]))


def check_choice(value, name, choices):
    """
    Validate that ``value`` is one of ``choices``.

    Parameters
    ----------
    value : object
        The value.
    name : str
        The parameter name used in error messages.
    choices : iterable
        The allowed values.

    Returns
    -------
    value : object
        The value, unchanged.
    """
    choices = tuple(choices)
    if value not in choices:
        allowed = ', '.join(repr(c) for c in choices)
        msg = f'{name} must be one of {allowed}; got {value!r}'
        raise ValueError(msg)
    return value


def check_fraction(value, name, *, low=0.0, high=1.0):
    """
    Validate a real number in the closed interval ``[low, high]``.

    Parameters
    ----------
    value : float
        The value.
    name : str
        The parameter name used in error messages.
    low, high : float, optional
        The bounds.

    Returns
    -------
    value : float
        The value as a Python float.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        msg = f'{name} must be a number in [{low}, {high}], got {_describe(value)}'
        raise TypeError(msg)
    if not (low <= value <= high):  # also rejects NaN
        msg = f'{name} must be a number in [{low}, {high}], got {value!r}'
        raise ValueError(msg)
    return float(value)


def check_threshold(value, name='threshold'):
    """
    Validate a detection threshold: one foreground probability in (0, 1].

    photutils habits get a message that says what the threshold is: a
    per-pixel threshold image, a threshold in data units or in sigma
    (above 1) and 0 (every pixel would be a source) are refused.

    Parameters
    ----------
    value : float
        The threshold.
    name : str, optional
        The parameter name used in error messages.

    Returns
    -------
    value : float
        The threshold as a Python float.
    """
    what = (f'{name} is the probability, in (0, 1], that a pixel belongs to '
            'a source (e.g. 0.5), not a level in data units or in sigma as '
            "in photutils' detect_sources")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        msg = f'{what}; got {_describe(value)}'
        if np.ndim(value) > 0:
            msg += ('. A per-pixel threshold image is not needed: the network '
                    'estimates the background and noise itself')
        raise TypeError(msg)
    if value == 0:
        msg = f'{what}; got {value!r}, which would make the whole image one source'
        raise ValueError(msg)
    if not (0 < value <= 1):  # also rejects NaN
        msg = f'{what}; got {value!r}'
        raise ValueError(msg)
    return float(value)
