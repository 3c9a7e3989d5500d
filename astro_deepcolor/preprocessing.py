# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Image preprocessing shared by training and inference (NumPy/SciPy only).

The network never sees raw ADU. Every image goes through the same two
steps, exactly as in Paillassa, Bertin & Bouy (MaxiMask):

1. `estimate_background`: a SExtractor-like mesh estimate of the sky
   level and of the noise rms (clipped-mode estimator on a grid of
   meshes, 3x3 median filter of the mesh values, natural bicubic spline
   interpolation back to full resolution);
2. `normalize`: ``(data - background) / rms`` as float32, with masked and
   non-finite pixels set to 0.

The dynamic-range compression (``asinh``) is not done here: it is the first
operation inside the network graph, so that a model file is self-contained.

Speed
-----
The mesh statistics are computed for all meshes at once. The pixels of
each mesh (optionally a regular sub-grid of them, ``subsample``) are sorted
once along the mesh axis; kappa-sigma clipping then only moves two indices
per mesh (the clipped set is always a contiguous run of the sorted values),
and the clipped mean and standard deviation come from cumulative sums in
O(1) per mesh and iteration. The spline interpolation is separable and
linear in the mesh values, so it is two small matrix products. A 4k x 4k
image takes a fraction of a second on one core (see
``benchmarks/bench_preprocessing.py``).
"""

import numpy as np

from astro_deepcolor.utils._parameters import check_positive_int

__all__ = ['estimate_background', 'noise_correlation', 'normalize']

# Clipping parameters of SExtractor's background estimator.
_KAPPA = 3.0
_MAX_ITERS = 10
# Mode = 2.5 median - 1.5 mean unless the clipped histogram is very skewed
# (crowded mesh), where SExtractor falls back to the median.
_SKEW_LIMIT = 0.3


def _as_image(data):
    data = np.asanyarray(data)
    if data.ndim != 2:
        msg = f'data must be a 2D array, got an array of shape {data.shape!r}'
        raise ValueError(msg)
    if data.size == 0:
        msg = f'data must not be empty, got shape {data.shape!r}'
        raise ValueError(msg)
    return data


def _check_mask(mask, shape):
    if mask is None:
        return None
    mask = np.asanyarray(mask)
    if mask.shape != shape:
        msg = (f'mask must have the same shape as data {shape!r}, '
               f'got {mask.shape!r}')
        raise ValueError(msg)
    return mask.astype(bool, copy=False)


def _choose_step(box_size, subsample):
    """
    Sub-grid steps ``(step_y, step_x)`` for the mesh statistics.

    'auto' keeps at least ~1000 samples per mesh: rows are decimated
    first (cheap strided copy), then columns.
    """
    if subsample == 'auto':
        sy = sx = 1
        while box_size % (2 * sy) == 0 and (box_size // (2 * sy)) * (box_size // sx) >= 1000:
            sy *= 2
            if box_size % (2 * sx) == 0 and (box_size // sy) * (box_size // (2 * sx)) >= 1000:
                sx *= 2
        return sy, sx
    step = check_positive_int(subsample, 'subsample')
    if box_size % step:
        msg = (f'subsample must divide box_size ({box_size}), got {subsample!r}')
        raise ValueError(msg)
    return step, step


def _mesh_samples(data, mask, box_size, steps):
    """
    Return an array (n_meshes_y, n_meshes_x, n_samples) of float32 samples.

    Masked and non-finite pixels are NaN; the partial meshes at the top and
    right edges are padded with NaN.
    """
    sy, sx = steps
    sub = np.asarray(data[::sy, ::sx], dtype=np.float32)
    if mask is not None:
        if np.may_share_memory(sub, data):
            sub = sub.copy()
        sub[mask[::sy, ::sx]] = np.nan
    by, bx = box_size // sy, box_size // sx
    ny, nx = sub.shape
    nby, nbx = -(-ny // by), -(-nx // bx)
    if (nby * by, nbx * bx) != (ny, nx):
        padded = np.full((nby * by, nbx * bx), np.nan, dtype=np.float32)
        padded[:ny, :nx] = sub
        sub = padded
    # (nby, by, nbx, bx) -> (nby, nbx, by*bx): one row of samples per mesh.
    return sub.reshape(nby, by, nbx, bx).transpose(0, 2, 1, 3).reshape(
        nby, nbx, by * bx)


def _row_searchsorted(srt, n_valid, values, side):
    """Vectorised per-row `numpy.searchsorted` on the valid part of rows."""
    rows = np.arange(srt.shape[0])
    lo = np.zeros(srt.shape[0], dtype=np.int64)
    hi = n_valid.astype(np.int64)
    # Binary search, all rows at once: ~log2(n) gathers of one value per row.
    for _ in range(int(np.ceil(np.log2(srt.shape[1] + 1))) + 1):
        active = lo < hi
        if not active.any():
            break
        mid = (lo + hi) // 2
        v = srt[rows, np.minimum(mid, srt.shape[1] - 1)]
        go_right = (v < values) if side == 'left' else (v <= values)
        go_right &= active
        lo = np.where(go_right, mid + 1, lo)
        hi = np.where(active & ~go_right, mid, hi)
    return lo


def _clipped_stats(samples, min_fraction):
    """
    Clipped mode and standard deviation of each row of ``samples``.

    Returns ``(mode, sigma, good)`` where ``good`` is False for rows with
    too few valid samples.
    """
    nrow, n = samples.shape
    srt = np.sort(samples, axis=1)  # NaNs sort to the end
    n_valid = np.count_nonzero(np.isfinite(srt), axis=1)
    good = n_valid >= max(3, min_fraction * n)
    rows = np.arange(nrow)
    # Offset each row by a robust centre before the float64 cumulative sums
    # (avoids cancellation in sum(x**2) - n mean**2 for large sky levels).
    centre = srt[rows, np.maximum(n_valid - 1, 0) // 2].astype(np.float64)
    centre[~good] = 0.0
    x = srt.astype(np.float64) - centre[:, None]
    x[~np.isfinite(x)] = 0.0
    c1 = np.zeros((nrow, n + 1))
    c2 = np.zeros((nrow, n + 1))
    np.cumsum(x, axis=1, out=c1[:, 1:])
    np.cumsum(x * x, axis=1, out=c2[:, 1:])

    lo = np.zeros(nrow, dtype=np.int64)
    hi = n_valid.astype(np.int64)
    for _ in range(_MAX_ITERS):
        cnt = np.maximum(hi - lo, 1)
        mean = (c1[rows, hi] - c1[rows, lo]) / cnt
        var = (c2[rows, hi] - c2[rows, lo]) / cnt - mean * mean
        sigma = np.sqrt(np.maximum(var, 0.0))
        med = x[rows, np.clip((lo + hi - 1) // 2, 0, n - 1)]
        new_lo = _row_searchsorted(x, n_valid, med - _KAPPA * sigma, 'left')
        new_hi = _row_searchsorted(x, n_valid, med + _KAPPA * sigma, 'right')
        # Never clip away everything (e.g. constant meshes with sigma = 0).
        keep = (new_hi - new_lo) >= 3
        new_lo = np.where(keep, new_lo, lo)
        new_hi = np.where(keep, new_hi, hi)
        converged = np.array_equal(new_lo, lo) and np.array_equal(new_hi, hi)
        lo, hi = new_lo, new_hi
        if converged:
            break
    cnt = np.maximum(hi - lo, 1)
    mean = (c1[rows, hi] - c1[rows, lo]) / cnt
    var = (c2[rows, hi] - c2[rows, lo]) / cnt - mean * mean
    sigma = np.sqrt(np.maximum(var, 0.0))
    mid = lo + (hi - lo) // 2
    med = np.where((hi - lo) % 2 == 1,
                   x[rows, np.clip(mid, 0, n - 1)],
                   0.5 * (x[rows, np.clip(mid - 1, 0, n - 1)]
                          + x[rows, np.clip(mid, 0, n - 1)]))
    skewed = np.abs(mean - med) >= _SKEW_LIMIT * np.maximum(sigma, 1e-30)
    mode = np.where(skewed, med, 2.5 * med - 1.5 * mean)
    return mode + centre, sigma, good


def _unusable_message(data, mask, box_size, min_fraction):
    """Say why no background mesh has enough valid pixels."""
    finite = np.isfinite(data)
    n_finite = int(np.count_nonzero(finite))
    if n_finite == 0:
        return (f'the image has no finite pixel: all {data.size} pixels are '
                'NaN or infinite')
    values = data[finite]
    low, high = values.min(), values.max()
    if low == high:
        return (f'the image is constant: every finite pixel equals {low:g} '
                '(an empty or blank image has no sources to detect)')
    usable = finite if mask is None else finite & ~mask
    n_usable = int(np.count_nonzero(usable))
    return (f'no {box_size} x {box_size} background mesh has {min_fraction:.0%} '
            f'usable pixels: {n_usable} of {data.size} pixels are usable '
            '(the others are masked, NaN or infinite, or in blank regions '
            'where a pixel equals all its neighbours)')


def _finish_meshes(mode, sigma, good, filter_size):
    """Fill the meshes without enough valid pixels, then median-filter."""
    if not good.any():
        msg = 'no mesh has enough valid (unmasked, finite) pixels'
        raise ValueError(msg)
    mode = _fill_bad_meshes(mode, good)
    sigma = _fill_bad_meshes(sigma, good)
    if filter_size > 1 and (mode.shape[0] > 1 or mode.shape[1] > 1):
        from scipy.ndimage import median_filter

        mode = median_filter(mode, size=filter_size, mode='nearest')
        sigma = median_filter(sigma, size=filter_size, mode='nearest')
    return mode, sigma


def _fill_bad_meshes(values, good):
    """Replace bad meshes by the value of the nearest good mesh."""
    if good.all():
        return values
    from scipy.ndimage import distance_transform_edt

    _, (iy, ix) = distance_transform_edt(~good, return_indices=True)
    return values[iy, ix]


def _spline_weights(n_pixels, box_size, n_meshes):
    """
    Matrix (n_pixels, n_meshes) of natural cubic spline weights.

    Row ``i`` gives the weights of the mesh values that interpolate pixel
    ``i``; nodes sit at the centres of the (possibly partial) meshes.
    Outside the first and last centres the end polynomials are used, as in
    SExtractor.
    """
    starts = np.arange(n_meshes) * box_size
    ends = np.minimum(starts + box_size, n_pixels)
    centres = 0.5 * (starts + ends - 1)
    pix = np.arange(n_pixels, dtype=np.float64)
    if n_meshes == 1:
        return np.ones((n_pixels, 1), dtype=np.float32)
    if n_meshes == 2:
        w1 = (pix - centres[0]) / (centres[1] - centres[0])
        return np.stack([1 - w1, w1], axis=1).astype(np.float32)
    from scipy.interpolate import CubicSpline

    spline = CubicSpline(centres, np.eye(n_meshes), bc_type='natural',
                         extrapolate=True)
    return spline(pix).astype(np.float32)


def estimate_background(data, mask=None, *, box_size=64, filter_size=3,
                        subsample='auto', min_fraction=0.5):
    """
    Estimate the sky background and noise rms maps, SExtractor style.

    The image is divided into meshes of ``box_size`` pixels. In each mesh
    the valid pixels are kappa-sigma clipped (3 sigma around the median,
    iterated to convergence) and the sky is the clipped mode
    ``2.5 * median - 1.5 * mean`` (the median where the clipped
    distribution is strongly skewed, i.e. crowded); the noise is the
    clipped standard deviation. Meshes with too few valid pixels take the
    value of the nearest good mesh. Both mesh maps are median filtered
    (``filter_size`` x ``filter_size`` meshes) and interpolated to full
    resolution with a natural bicubic spline through the mesh centres.

    Parameters
    ----------
    data : 2D `~numpy.ndarray`
        The image (any real dtype; NaN and inf are treated as masked).
    mask : 2D bool `~numpy.ndarray`, optional
        True where pixels must be ignored in the statistics.
    box_size : int, optional
        Mesh size in pixels.
    filter_size : int, optional
        Size of the median filter applied to the mesh maps (1: none).
    subsample : int or 'auto', optional
        Use every ``subsample``-th pixel along each axis for the mesh
        statistics (must divide ``box_size``). 'auto' keeps at least about
        1000 samples per mesh (every other row and column for 64-pixel
        meshes): the clipped-mode noise is then ~0.05 sigma per mesh before
        the median filter, at a quarter of the cost of using every pixel.
    min_fraction : float, optional
        A mesh is bad (filled from its neighbours) when less than this
        fraction of its samples is valid.

    Returns
    -------
    background, rms : 2D `~numpy.ndarray` of float32
        The sky level and the noise standard deviation, same shape as
        ``data``.

    Raises
    ------
    ValueError
        If the inputs are not 2D, shapes disagree, parameters are invalid
        or no pixel at all is valid.
    """
    data = _as_image(data)
    mask = _check_mask(mask, data.shape)
    box_size = check_positive_int(box_size, 'box_size', minimum=4)
    filter_size = check_positive_int(filter_size, 'filter_size')
    if filter_size % 2 == 0:
        msg = f'filter_size must be odd, got {filter_size!r}'
        raise ValueError(msg)
    if not 0 < min_fraction <= 1:
        msg = f'min_fraction must be in (0, 1], got {min_fraction!r}'
        raise ValueError(msg)
    step = _choose_step(box_size, subsample)

    samples = _mesh_samples(data, mask, box_size, step)
    nby, nbx, n = samples.shape
    mode, sigma, good = _clipped_stats(samples.reshape(nby * nbx, n),
                                       min_fraction)
    if not good.any():
        raise ValueError(_unusable_message(data, mask, box_size, min_fraction))
    mode, sigma = _finish_meshes(mode.reshape(nby, nbx),
                                 sigma.reshape(nby, nbx),
                                 good.reshape(nby, nbx), filter_size)

    ny, nx = data.shape
    wy = _spline_weights(ny, box_size, nby)
    wx = _spline_weights(nx, box_size, nbx)
    meshes = np.stack([mode, sigma]).astype(np.float32)
    # Separable interpolation: (ny, nby) @ (nby, nbx) @ (nbx, nx).
    tmp = np.matmul(wy, meshes)  # (2, ny, nbx)
    background = tmp[0] @ wx.T
    rms = tmp[1] @ wx.T
    np.maximum(rms, np.float32(0), out=rms)
    return background, rms


def normalize(data, background, rms, mask=None):
    """
    Return ``(data - background) / rms`` as float32, the network input.

    Masked pixels, non-finite pixels and pixels with a non-positive or
    non-finite rms are set to 0 (the sky level in these units).

    Parameters
    ----------
    data : 2D `~numpy.ndarray`
        The image.
    background, rms : 2D `~numpy.ndarray` or float
        Sky level and noise standard deviation (e.g. from
        `estimate_background`), broadcastable to ``data``.
    mask : 2D bool `~numpy.ndarray`, optional
        True where pixels are to be ignored.

    Returns
    -------
    image : 2D `~numpy.ndarray` of float32
        The normalised image.
    """
    data = _as_image(data)
    mask = _check_mask(mask, data.shape)
    background = np.asarray(background, dtype=np.float32)
    rms = np.asarray(rms, dtype=np.float32)
    with np.errstate(divide='ignore', invalid='ignore'):
        out = np.subtract(data, background, dtype=np.float32)
        out /= rms
    bad = ~np.isfinite(out)
    bad |= ~(rms > 0)
    if mask is not None:
        bad |= mask
    out[bad] = 0.0
    return out


def sky_noise(y0, x0, shape):
    """
    Deterministic unit-variance Gaussian noise at global pixel positions.

    Masked pixels, flat (blank) regions and the parts of a network tile
    outside the image are given this noise instead of zeros: the network
    never saw noiseless flat sky in training and reads it as signal. The
    values depend only on the pixel's global ``(y, x)``, so tiling does
    not change them.

    Parameters
    ----------
    y0, x0 : int
        Global position of the first pixel (may be negative).
    shape : tuple of 2 int
        Shape of the block.

    Returns
    -------
    noise : 2D `~numpy.ndarray` of float32
    """
    y = np.arange(y0, y0 + shape[0], dtype=np.int64).astype(np.uint64)[:, None]
    x = np.arange(x0, x0 + shape[1], dtype=np.int64).astype(np.uint64)[None, :]
    # A 64-bit integer hash (splitmix64 finaliser) of the position.
    with np.errstate(over='ignore'):
        h = y * np.uint64(0x9E3779B97F4A7C15) ^ (x + np.uint64(0x632BE59BD9B4E019))
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    u1 = ((h >> np.uint64(40)).astype(np.float64) + 0.5) / 2.0**24
    u2 = ((h & np.uint64(0xFFFFFF)).astype(np.float64) + 0.5) / 2.0**24
    return (np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)).astype(np.float32)


def flat_pixels(data, bad=None):
    """
    Pixels of blank regions: equal to all 8 neighbours, and not bright.

    Real sky is never exactly flat over 3 x 3 pixels; zero padding of
    mosaics, filled gaps and constant images are. Flat plateaus at or
    above the 99.9th percentile of the image (saturated cores) are kept.

    Parameters
    ----------
    data : 2D `~numpy.ndarray`
        The image.
    bad : 2D bool `~numpy.ndarray`, optional
        Pixels already excluded (they do not set the percentile).

    Returns
    -------
    flat : 2D bool `~numpy.ndarray`
    """
    ny, nx = data.shape
    flat = np.zeros(data.shape, dtype=bool)
    if ny < 3 or nx < 3:
        return flat
    core = data[1:-1, 1:-1]
    eq = np.ones(core.shape, dtype=bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy == 1 and dx == 1:
                continue
            eq &= data[dy:dy + ny - 2, dx:dx + nx - 2] == core
    flat[1:-1, 1:-1] = eq
    if not flat.any():
        return flat
    # Grow by one pixel so that region borders count too.
    from scipy import ndimage

    flat = ndimage.binary_dilation(flat, structure=np.ones((3, 3), bool))
    valid = data[::7, ::7] if bad is None else data[::7, ::7][~bad[::7, ::7]]
    valid = valid[np.isfinite(valid)]
    if valid.size and np.ptp(valid) > 0:
        bright = data >= np.percentile(valid, 99.9)
        flat &= ~bright
    return flat



def _mad_var(values):
    """Robust variance: (1.4826 MAD)**2."""
    return (1.4826 * np.median(np.abs(values - np.median(values)))) ** 2


def noise_correlation(data, mask=None, *, max_pixels=1_000_000, lag=6):
    """
    Correlation of the noise of neighbouring pixels.

    A raw CCD image has independent pixel noise (correlation near 0;
    resampled coadds reach about 0.3), while an image convolved with a
    kernel, as photutils scripts do before ``detect_sources``, has
    strongly correlated neighbours (about 0.9 for a Gaussian kernel of
    3 pixels FWHM). The estimate compares the robust variance (from the
    median absolute deviation) of differences of neighbouring pixels with
    that of pixels ``lag`` apart, whose noise is independent even after
    smoothing: ``rho = 1 - var(x[i+1] - x[i]) / var(x[i+lag] - x[i])``,
    averaged over rows and columns. Differences cancel a smooth sky, and
    the median absolute deviation ignores the few pixels on sources.

    Parameters
    ----------
    data : 2D `~numpy.ndarray`
        The image (need not be background subtracted).
    mask : 2D bool `~numpy.ndarray`, optional
        True for pixels to ignore (NaN and inf are ignored too).
    max_pixels : int, optional
        Use a central cut-out of at most about this many pixels.
    lag : int, optional
        Distance (pixels) of the reference differences.

    Returns
    -------
    rho : float
        Estimated lag-1 noise correlation, at most 1; NaN when there are
        too few valid pixels or the image is constant.
    """
    data = _as_image(data)
    mask = _check_mask(mask, data.shape)
    lag = check_positive_int(lag, 'lag', minimum=2)
    ny, nx = data.shape
    side = max(int(np.sqrt(max_pixels)), 2 * lag)
    y0 = max(0, ny // 2 - side // 2)
    x0 = max(0, nx // 2 - side // 2)
    cut = np.asarray(data[y0:y0 + side, x0:x0 + side], dtype=np.float64)
    bad = ~np.isfinite(cut)
    if mask is not None:
        bad |= np.asarray(mask[y0:y0 + side, x0:x0 + side], dtype=bool)
    values = cut[~bad]
    if values.size < 100:
        return float('nan')
    # Only sky pixels: sources (and the smooth wings of bright stars) make
    # distant differences larger than near ones, as smoothing does. The
    # noise scale comes from the lower half of the distribution, which
    # sources do not reach.
    median = np.median(values)
    sigma = median - np.percentile(values, 15.87)
    if not sigma > 0:
        return float('nan')
    bad = bad | (cut > median + 2 * sigma) | (cut < median - 5 * sigma)
    rhos = []
    for axis in (0, 1):
        a = np.moveaxis(cut, axis, 0)
        b = np.moveaxis(bad, axis, 0)
        if a.shape[0] <= 2 * lag:
            continue
        d1 = (a[1:] - a[:-1])[~(b[1:] | b[:-1])]
        # second differences over `lag` cancel sky gradients and star wings
        s = (a[2 * lag:] - 2 * a[lag:-lag] + a[:-2 * lag])
        s = s[~(b[2 * lag:] | b[lag:-lag] | b[:-2 * lag])]
        if d1.size < 100 or s.size < 100:
            continue
        var_s = _mad_var(s)
        if var_s > 0:
            # independent noise: var(d1) = 2 (1 - rho) var, var(s) = 6 var
            rhos.append(1.0 - 3.0 * _mad_var(d1) / var_s)
    if not rhos:
        return float('nan')
    return float(min(np.mean(rhos), 1.0))
