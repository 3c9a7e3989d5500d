# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Tiling of large images for fully convolutional inference.

The image is cut into a grid of *cores* that partition it exactly. Each
core is run through the network inside a *window*: the core plus
``margin`` pixels of context on every side (zero-padded beyond the image,
zero being the sky level of the normalised image). Only the core of each
output window is kept, so every output pixel comes from the one tile in
which it is most central; nothing is blended.

Exactness
---------
The output of a convolutional network at a pixel depends only on the
input within its receptive field. If ``margin`` covers the receptive
field on each side, the network never "sees" the edge of a window from a
core pixel, and the result at that pixel is the same as if the whole
(zero-padded) image were processed at once. U-Nets are translation
equivariant only for shifts that are multiples of ``2**depth`` (the
pooling grid), so core origins, core sizes and the margin are multiples
of ``multiple`` (the model's ``tile_multiple``). Under these conditions
the tiled result does not depend on the tile size, up to floating-point
summation order.

The default margin for a model with receptive field ``R`` (its full
width, `~astro_deepcolor.model.ModelConfig.receptive_field`) is
``ceil(R / 2) + multiple / 2`` rounded up to a multiple of ``multiple``:
the half-width plus the extra one-sided reach of max pooling, whose 2x2
windows are not centred on the pixel.
"""

import math
from dataclasses import dataclass

__all__ = ['Tile', 'TilePlan', 'default_margin']


def _round_up(value, multiple):
    return -(-value // multiple) * multiple


def default_margin(receptive_field, multiple):
    """
    Context margin (pixels per side) that makes tiling exact.

    Parameters
    ----------
    receptive_field : int
        Full width of the network's receptive field in pixels.
    multiple : int
        Tile size multiple of the network (``2**depth``).

    Returns
    -------
    margin : int
        ``ceil(receptive_field / 2) + multiple // 2`` rounded up to a
        multiple of ``multiple``.
    """
    return _round_up(math.ceil(receptive_field / 2) + multiple // 2, multiple)


@dataclass(frozen=True)
class Tile:
    """
    One tile: a core of the image and the window run through the network.

    Parameters
    ----------
    index : int
        Position of the tile in the plan (row-major).
    core : tuple of 2 slice
        The pixels of the image this tile is responsible for.
    window_origin : tuple of 2 int
        Image coordinates ``(y, x)`` of the window's first pixel (may be
        negative: the window extends beyond the image and is zero-padded).
    """

    index: int
    core: tuple
    window_origin: tuple

    def source_and_destination(self, image_shape, window_shape):
        """
        Slices copying the image pixels that fall inside the window.

        Parameters
        ----------
        image_shape : tuple of 2 int
            The image shape.
        window_shape : tuple of 2 int
            The window shape.

        Returns
        -------
        src, dst : tuple of 2 slice
            ``window[dst] = image[src]``.
        """
        src = []
        dst = []
        for origin, size, wsize in zip(self.window_origin, image_shape,
                                       window_shape, strict=True):
            start = max(origin, 0)
            stop = min(origin + wsize, size)
            src.append(slice(start, stop))
            dst.append(slice(start - origin, stop - origin))
        return tuple(src), tuple(dst)

    def core_in_window(self):
        """
        Slices of the core within the output window.

        Returns
        -------
        core : tuple of 2 slice
            ``image[self.core] = output_window[core_in_window()]``.
        """
        return tuple(slice(c.start - o, c.stop - o)
                     for c, o in zip(self.core, self.window_origin, strict=True))


class TilePlan:
    """
    Partition of an image into equal tiles with context margins.

    Parameters
    ----------
    shape : tuple of 2 int
        Image shape ``(ny, nx)``.
    tile_shape : tuple of 2 int
        Largest window (network input) shape. Rounded up to a multiple of
        ``multiple``; the actual window is shrunk to the smallest size
        that covers the image with the same number of tiles.
    margin : int
        Context pixels on each side of a core (a multiple of
        ``multiple``).
    multiple : int
        The network needs window sizes, core origins and margins that are
        multiples of this.

    Raises
    ------
    ValueError
        If ``tile_shape`` leaves no room for a core inside the margins.
    """

    def __init__(self, shape, tile_shape, margin, multiple):
        self.shape = tuple(int(s) for s in shape)
        self.multiple = int(multiple)
        self.margin = int(margin)
        if self.margin % self.multiple:
            msg = (f'margin must be a multiple of {self.multiple}, '
                   f'got {margin!r}')
            raise ValueError(msg)
        tile_shape = tuple(_round_up(int(t), self.multiple) for t in tile_shape)
        n_tiles = []
        core_shape = []
        for size, tsize in zip(self.shape, tile_shape, strict=True):
            max_core = tsize - 2 * self.margin
            if max_core < self.multiple:
                msg = (f'tile_shape {tile_shape!r} is too small for the '
                       f'context margin of {self.margin} pixels per side; '
                       f'it must exceed {2 * self.margin + self.multiple - 1}')
                raise ValueError(msg)
            n = -(-size // max_core)
            core = _round_up(-(-size // n), self.multiple)
            n_tiles.append(n)
            core_shape.append(core)
        self.n_tiles = tuple(n_tiles)
        self.core_shape = tuple(core_shape)
        self.window_shape = tuple(c + 2 * self.margin for c in core_shape)

    def __repr__(self):
        return (f'<TilePlan shape={self.shape} n_tiles={self.n_tiles} '
                f'window_shape={self.window_shape} margin={self.margin}>')

    def __len__(self):
        return self.n_tiles[0] * self.n_tiles[1]

    def __iter__(self):
        (ny, nx), (cy, cx) = self.shape, self.core_shape
        index = 0
        for iy in range(self.n_tiles[0]):
            for ix in range(self.n_tiles[1]):
                y0, x0 = iy * cy, ix * cx
                core = (slice(y0, min(y0 + cy, ny)), slice(x0, min(x0 + cx, nx)))
                yield Tile(index, core, (y0 - self.margin, x0 - self.margin))
                index += 1

    @property
    def efficiency(self):
        """Fraction of the network's pixels that end up in the output."""
        total = len(self) * self.window_shape[0] * self.window_shape[1]
        return self.shape[0] * self.shape[1] / total

    def batches(self, batch_size):
        """
        Yield the tiles in lists of at most ``batch_size``.

        Parameters
        ----------
        batch_size : int
            Number of tiles per batch.

        Yields
        ------
        batch : list of `Tile`
            The next tiles.
        """
        batch = []
        for tile in self:
            batch.append(tile)
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch
