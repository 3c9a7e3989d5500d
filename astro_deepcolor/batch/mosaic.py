# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Detection on one image too large for memory (a 40k x 40k coadd).

The image is a `dask.array.Array`. Detection runs in two stages:

1. *Pixel classes, chunk by chunk.* Each chunk is extended by a margin of
   at least the network's receptive field (`dask.array.map_overlap`), run
   through the finder, and cut back to the chunk. Every pixel is then
   assigned its class (0 = background, ``c >= 1`` = deep-coloring colour
   ``c``) exactly as in the in-memory finder, because the network output
   at a pixel depends only on the image within the receptive field.
2. *Exact stitching of the labels* (`stitch_labels`). Each chunk is
   labelled on its own (connected components within each colour), the
   chunk labels are offset to be globally unique, and the labels that
   touch across a chunk boundary (same colour, 4- or 8-adjacent) are
   merged by a union-find (`scipy.sparse.csgraph.connected_components`
   on the equivalence pairs). Areas are summed over the merged
   components, so the ``n_pixels`` cut is applied to whole sources, never
   to the piece of a source that falls in one chunk.

The result equals the in-memory labelling, up to a permutation of the
label numbers. Memory per task is one chunk plus its margin; the driver
holds only the chunk edges and one integer per label.
"""

import math

import numpy as np

from astro_deepcolor.postprocessing import (
    _boundary_maxima,
    _colour_components,
    _pairs,
    _peakless_roots,
    _structure,
    detection_levels,
    fold_groups,
)
from astro_deepcolor.utils._parameters import check_choice, check_positive_int

__all__ = ['detect_mosaic', 'merge_peakless_chunks', 'mosaic_background',
           'stitch_labels']


def _chunk_edges(chunks):
    """Each axis's chunk edges (0, ..., n): chunk i is [e[i], e[i + 1])."""
    return tuple(np.concatenate([[0], np.cumsum(c)]).astype(np.int64)
                 for c in chunks)


def _chunk_starts(chunks):
    """Each axis's chunk start offsets."""
    return tuple(e[:-1] for e in _chunk_edges(chunks))


def _label_colours(colour, connectivity):
    """
    Connected components of each colour of a block.

    The in-memory core's own labelling
    (`astro_deepcolor.postprocessing`), so pieces are numbered the same:
    colour by colour (ascending), raster order within a colour.
    """
    return _colour_components(np.asarray(colour), _structure(connectivity))


#: Bit of the mosaic colour map that marks pixels at or above the detection
#: threshold when footprints are classified at a lower probability.
HIGH_BIT = np.uint8(128)


def _split_high(colour, high_flag):
    colour = np.asarray(colour)
    if not high_flag:
        return colour, None
    return colour & np.uint8(127), colour >= HIGH_BIT


def _block_summary(colour, y0, x0, width, connectivity, high_flag=False):
    """
    Everything the stitching needs from one block (a few numbers per piece).

    A *piece* is a component of one colour inside the block. Returned per
    piece: colour, area, raster-first pixel and bounding-box corner (global
    coordinates), internal 4-neighbour contacts (for the perimeter); per
    pair of touching pieces: shared 4-neighbour edges and diagonal
    contacts; and the block's edge lines.
    """
    from scipy.ndimage import find_objects

    colour, high = _split_high(colour, high_flag)
    comp, n = _label_colours(colour, connectivity)
    areas = np.bincount(comp.ravel(), minlength=n + 1).astype(np.int64)
    n_high = (areas if high is None
              else np.bincount(comp[high], minlength=n + 1).astype(np.int64))
    flat = comp.ravel()
    idx = np.flatnonzero(flat)
    labs, first = np.unique(flat[idx], return_index=True)
    first_idx = idx[first]
    nxb = colour.shape[1]
    first_flat = np.zeros(n + 1, dtype=np.int64)
    first_flat[labs] = (y0 + first_idx // nxb) * width + (x0 + first_idx % nxb)
    piece_colour = np.zeros(n + 1, dtype=np.uint8)
    piece_colour[labs] = colour.ravel()[first_idx]
    slices = find_objects(comp)
    bby = np.array([y0 + s[0].start for s in slices], dtype=np.int64)
    bbx = np.array([x0 + s[1].start for s in slices], dtype=np.int64)
    h = comp[:, :-1] == comp[:, 1:]
    v = comp[:-1, :] == comp[1:, :]
    inner = (np.bincount(comp[:, :-1][h], minlength=n + 1)
             + np.bincount(comp[:-1, :][v], minlength=n + 1)).astype(np.int64)
    inner[0] = 0
    lo4, hi4 = (np.concatenate(x) for x in zip(
        _pairs(comp[:, :-1], comp[:, 1:]), _pairs(comp[:-1, :], comp[1:, :]),
        strict=True))
    if connectivity == 8:
        lod, hid = (np.concatenate(x) for x in zip(
            _pairs(comp[:-1, :-1], comp[1:, 1:]),
            _pairs(comp[:-1, 1:], comp[1:, :-1]), strict=True))
    else:
        lod = hid = np.zeros(0, dtype=np.int64)
    return {
        'n': n, 'areas': areas, 'high': n_high, 'first': first_flat,
        'colour': piece_colour,
        'bby': bby, 'bbx': bbx, 'inner': inner,
        'shared': (lo4, hi4), 'diag': (lod, hid),
        'edges': {
            'top': (comp[0].copy(), colour[0].copy()),
            'bottom': (comp[-1].copy(), colour[-1].copy()),
            'left': (comp[:, 0].copy(), colour[:, 0].copy()),
            'right': (comp[:, -1].copy(), colour[:, -1].copy()),
        },
    }


def _line_contacts(lab_a, col_a, lab_b, col_b, connectivity):
    """
    Contacts across a chunk boundary between two facing pixel lines.

    Returns ``(join, face, diag)``: pairs of pieces of the same colour that
    are connected (one source), pairs facing across a pixel edge (every
    colour), and pairs of different colours in diagonal contact (8 only).
    """
    join, face, diag = [], [], []
    n = lab_a.size
    for s in ((0,) if connectivity == 4 else (0, -1, 1)):
        a = slice(max(0, -s), n - max(0, s))
        b = slice(max(0, s), n - max(0, -s))
        la, lb = lab_a[a], lab_b[b]
        ok = (la > 0) & (lb > 0)
        same = ok & (col_a[a] == col_b[b])
        join.append(np.stack([la[same], lb[same]], axis=1))
        if s == 0:
            face.append(np.stack([la[ok], lb[ok]], axis=1))
        else:
            other = ok & ~same
            diag.append(np.stack([la[other], lb[other]], axis=1))
    return join, face, diag


def _merge_groups(n, areas, shared_pairs, touch_pairs, perim_of, n_pixels,
                  merge_fraction, high=None):
    """
    Colour-flicker repair on the component graph.

    The same greedy rule, visiting order and tie-breaks as
    `astro_deepcolor.postprocessing.merge_flicker`, but on contact counts
    gathered from the chunks instead of a whole image in memory.
    """
    root = np.arange(n + 1)
    group_areas = np.asarray(areas, dtype=np.int64).copy()
    if n < 2 or not touch_pairs:
        return root, group_areas
    perim = {a: int(perim_of[a]) for pair in touch_pairs for a in pair}
    return fold_groups(root, group_areas, shared_pairs, touch_pairs, perim,
                       n_pixels, merge_fraction, high=high)


def _relabel_block(colour, lookup, connectivity, high_flag=False):
    comp, _ = _label_colours(_split_high(colour, high_flag)[0], connectivity)
    return lookup[comp]


def stitch_labels(colour, *, n_pixels=5, connectivity=8, merge_fraction=0.5,
                  client=None, high_flag=False):
    """
    Segment a chunked colour map exactly as if it were in memory.

    The result is label for label the segmentation that
    `astro_deepcolor.postprocessing.label_sources` gives on the whole
    array: connected components of each colour, colour-flicker repair,
    ``n_pixels`` cut and labels ordered by the top-left corner of their
    bounding boxes. Each chunk is labelled on its own; the pieces are
    joined across chunk boundaries by a union-find
    (`scipy.sparse.csgraph.connected_components` on the pairs of same-colour
    pieces that touch across a boundary), and the areas, perimeters and
    shared boundaries of the flicker repair are summed over the chunks.

    Parameters
    ----------
    colour : 2D `dask.array.Array` or `~numpy.ndarray` of uint8
        0 for background, else the colour index (from
        `~astro_deepcolor.postprocessing.classify_pixels`).
    n_pixels : int, optional
        Minimum number of pixels of a source (whole, after stitching).
    connectivity : {4, 8}, optional
        Pixel connectivity.
    merge_fraction : float, optional
        See `~astro_deepcolor.postprocessing.merge_flicker`.
    client : `~distributed.Client`, optional
        Compute the chunk summaries on this cluster (default: the current
        dask scheduler).
    high_flag : bool, optional
        ``colour`` carries ``HIGH_BIT`` on the pixels at or above the
        detection threshold (the rest of the byte is the colour): a source
        needs ``n_pixels`` such pixels, as
        `~astro_deepcolor.postprocessing.label_sources` with ``threshold``.

    Returns
    -------
    labels : 2D `dask.array.Array` of int32
        Source labels ``1..N`` (0: background), chunked like ``colour``.
    n_labels : int
        ``N``.
    """
    import dask
    import dask.array as da
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    check_choice(connectivity, 'connectivity', (4, 8))
    n_pixels = check_positive_int(n_pixels, 'n_pixels')
    if not isinstance(colour, da.Array):
        colour = da.from_array(np.asarray(colour), chunks=2048)
    if colour.ndim != 2:
        msg = f'colour must be a 2D array, got shape {colour.shape!r}'
        raise ValueError(msg)
    width = colour.shape[1]
    blocks = colour.to_delayed()
    nby, nbx = blocks.shape
    ystarts, xstarts = _chunk_starts(colour.chunks)
    tasks = [dask.delayed(_block_summary)(blocks[i, j], int(ystarts[i]),
                                          int(xstarts[j]), width, connectivity,
                                          high_flag)
             for i in range(nby) for j in range(nbx)]
    flat = (client.gather(client.compute(tasks)) if client is not None
            else list(dask.compute(*tasks)))
    summary = [flat[i * nbx:(i + 1) * nbx] for i in range(nby)]

    # Global piece ids: block (i, j) piece k -> offsets[i, j] + k.
    counts = np.array([[s['n'] for s in row] for row in summary],
                      dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts.ravel())])[:-1]
    offsets = offsets.reshape(nby, nbx)
    total = int(counts.sum())
    p_area = np.zeros(total + 1, dtype=np.int64)
    p_high = np.zeros(total + 1, dtype=np.int64)
    p_first = np.zeros(total + 1, dtype=np.int64)
    p_colour = np.zeros(total + 1, dtype=np.int64)
    p_bby = np.zeros(total + 1, dtype=np.int64)
    p_bbx = np.zeros(total + 1, dtype=np.int64)
    p_inner = np.zeros(total + 1, dtype=np.int64)
    face, diag, join = [], [], []
    for i in range(nby):
        for j in range(nbx):
            s, o, n = summary[i][j], offsets[i, j], counts[i, j]
            part = slice(o + 1, o + 1 + n)
            p_area[part] = s['areas'][1:]
            p_high[part] = s['high'][1:]
            p_first[part] = s['first'][1:]
            p_colour[part] = s['colour'][1:]
            p_bby[part] = s['bby']
            p_bbx[part] = s['bbx']
            p_inner[part] = s['inner'][1:]
            face.append(np.stack([s['shared'][0] + o, s['shared'][1] + o],
                                 axis=1))
            diag.append(np.stack([s['diag'][0] + o, s['diag'][1] + o], axis=1))

    def edge(i, j, side):
        lab, col = summary[i][j]['edges'][side]
        return np.where(lab > 0, lab + offsets[i, j], 0), col

    # Full-length boundary lines also catch contacts across chunk corners.
    lines = []
    for j in range(nbx - 1):
        lines.append(([edge(i, j, 'right') for i in range(nby)],
                      [edge(i, j + 1, 'left') for i in range(nby)]))
    for i in range(nby - 1):
        lines.append(([edge(i, j, 'bottom') for j in range(nbx)],
                      [edge(i + 1, j, 'top') for j in range(nbx)]))
    for side_a, side_b in lines:
        jn, fc, dg = _line_contacts(
            np.concatenate([e[0] for e in side_a]),
            np.concatenate([e[1] for e in side_a]),
            np.concatenate([e[0] for e in side_b]),
            np.concatenate([e[1] for e in side_b]), connectivity)
        join += jn
        face += fc
        diag += dg

    def stack(pairs):
        pairs = [p for p in pairs if len(p)]
        return (np.concatenate(pairs).astype(np.int64) if pairs
                else np.zeros((0, 2), dtype=np.int64))

    join, face, diag = stack(join), stack(face), stack(diag)

    # Union-find of the pieces into components.
    graph = coo_matrix((np.ones(len(join), dtype=np.int8),
                        (join[:, 0], join[:, 1])), shape=(total + 1,) * 2)
    _, cc = connected_components(graph, directed=False)
    n_cc = cc.max() + 1
    cc_first = np.full(n_cc, np.iinfo(np.int64).max)
    np.minimum.at(cc_first, cc[1:], p_first[1:])
    cc_colour = np.zeros(n_cc, dtype=np.int64)
    cc_colour[cc[1:]] = p_colour[1:]
    # Component ids as label_sources numbers them: by colour, then raster
    # order of the first pixel; 0 stays background.
    real = np.unique(cc[1:])
    order = real[np.lexsort((cc_first[real], cc_colour[real]))]
    cc_id = np.zeros(n_cc, dtype=np.int64)
    cc_id[order] = np.arange(1, order.size + 1)
    piece = cc_id[cc]  # global piece id -> component id
    piece[0] = 0
    n = int(order.size)

    areas = np.bincount(piece, weights=p_area, minlength=n + 1).astype(np.int64)
    inner = np.bincount(piece, weights=p_inner, minlength=n + 1).astype(np.int64)
    fa, fb = piece[face[:, 0]], piece[face[:, 1]]
    same = fa == fb
    inner += np.bincount(fa[same], minlength=n + 1).astype(np.int64)
    perim = 4 * areas - 2 * inner
    lo, hi = np.minimum(fa[~same], fb[~same]), np.maximum(fa[~same], fb[~same])
    keys, cnt = np.unique(lo * (n + 1) + hi, return_counts=True)
    shared = {(int(k // (n + 1)), int(k % (n + 1))): int(c)
              for k, c in zip(keys, cnt, strict=True)}
    touch = set(shared)
    if connectivity == 8:
        da_, db_ = piece[diag[:, 0]], piece[diag[:, 1]]
        other = da_ != db_
        dkeys = np.unique(np.minimum(da_[other], db_[other]) * (n + 1)
                          + np.maximum(da_[other], db_[other]))
        touch.update((int(k // (n + 1)), int(k % (n + 1))) for k in dkeys)

    high = (np.bincount(piece, weights=p_high, minlength=n + 1).astype(np.int64)
            if high_flag else None)
    root, group_areas = _merge_groups(n, areas, shared, touch, perim,
                                      n_pixels, merge_fraction, high=high)
    ids = np.arange(n + 1)
    keep = (root == ids) & (group_areas >= n_pixels)
    if high_flag:
        group_high = np.zeros(n + 1, dtype=np.int64)
        np.add.at(group_high, root, high.astype(np.int64))
        keep &= group_high >= n_pixels
    keep[0] = False
    kept = np.flatnonzero(keep)
    # Labels ordered by the top-left corner of each group's bounding box.
    c_bby = np.full(n + 1, np.iinfo(np.int64).max)
    c_bbx = np.full(n + 1, np.iinfo(np.int64).max)
    np.minimum.at(c_bby, piece[1:], p_bby[1:])
    np.minimum.at(c_bbx, piece[1:], p_bbx[1:])
    corner = c_bby * width + c_bbx
    group_corner = np.full(n + 1, np.iinfo(np.int64).max)
    np.minimum.at(group_corner, root[1:], corner[1:])
    kept = kept[np.argsort(group_corner[kept], kind='stable')]
    new = np.zeros(n + 1, dtype=np.int32)
    new[kept] = np.arange(1, kept.size + 1, dtype=np.int32)
    lookup = new[root][piece]  # global piece id -> final label

    # On a distributed cluster a persisted colour map lives in futures;
    # the relabel tasks must hold them, or the scheduler may forget the
    # chunks before the labels are computed ("lost dependencies").
    try:
        from distributed import futures_of

        held = {f.key: f for f in futures_of(colour)}
    except ImportError:
        held = {}
    out_blocks = np.empty((nby, nbx), dtype=object)
    for i in range(nby):
        for j in range(nbx):
            o, m = offsets[i, j], counts[i, j]
            local = np.concatenate([[0], lookup[o + 1:o + 1 + m]]).astype(
                np.int32)
            out_blocks[i, j] = da.from_delayed(
                dask.delayed(_relabel_block)(
                    held.get(blocks[i, j].key, blocks[i, j]), local,
                    connectivity, high_flag),
                shape=(colour.chunks[0][i], colour.chunks[1][j]),
                dtype=np.int32)
    labels = da.block(out_blocks.tolist())
    return labels, int(kept.size)


def _peak_summary(labels, peak, y0, x0):
    """Per-label maximum and top-left corner, and per-pair boundary maxima,
    of one chunk extended by one pixel (global labels and coordinates).
    """
    labels = np.asarray(labels)
    peak = np.nan_to_num(np.asarray(peak, dtype=float), nan=-np.inf)
    sel = labels > 0
    uniq, smax = _label_maxima(labels, peak, dtype=float)
    inv = np.searchsorted(uniq, labels[sel])
    yy, xx = np.nonzero(sel)
    ymin = np.full(uniq.size, np.iinfo(np.int64).max)
    xmin = np.full(uniq.size, np.iinfo(np.int64).max)
    np.minimum.at(ymin, inv, yy + y0)
    np.minimum.at(xmin, inv, xx + x0)
    n = int(uniq.max(initial=0))
    a, b, bmax = _boundary_maxima(labels, peak, n)
    return {'labels': uniq, 'smax': smax, 'ymin': ymin, 'xmin': xmin,
            'a': a, 'b': b, 'bmax': bmax}


def merge_peakless_chunks(labels, n_labels, peak_image, *, margin=0.5,
                          client=None):
    """
    `~astro_deepcolor.postprocessing.merge_peakless` on a chunked
    segmentation, exactly as on the whole array.

    The decision needs each segment's maximum of the peak image and, for
    each pair of touching segments, the maximum over the pixels where they
    meet. Both are maxima, so each chunk (extended by one pixel, to see
    its neighbours' pixels across the edge) contributes its own and the
    driver takes the maximum of the contributions. Labels are then
    renumbered by the top-left corner of their bounding boxes, as
    `~astro_deepcolor.postprocessing.label_sources` does after the merge.

    Parameters
    ----------
    labels : 2D `dask.array.Array` of int
        Segmentation ``1..n_labels`` (0 background), e.g. from
        `stitch_labels`.
    n_labels : int
        The number of labels.
    peak_image : 2D `dask.array.Array`
        The smoothed image in noise units (the normalised image convolved
        with a 1-pixel Gaussian, as
        `~astro_deepcolor.DeepColorSegmentation.peak_image` gives it), same
        shape as ``labels``.
    margin : float, optional
        See `~astro_deepcolor.postprocessing.merge_peakless`.
    client : `~distributed.Client`, optional
        Cluster to use (default: the current dask scheduler).

    Returns
    -------
    labels : 2D `dask.array.Array` of int32
        The merged segmentation, labels ``1..N``.
    n_labels : int
        ``N``.
    """
    import dask
    import dask.array as da

    n = int(n_labels)
    if n < 2:
        return labels, n
    if peak_image.shape != labels.shape:
        msg = (f'peak_image must have the shape of labels {labels.shape!r}, '
               f'got {peak_image.shape!r}')
        raise ValueError(msg)
    peak_image = peak_image.rechunk(labels.chunks)
    lab_ov = da.overlap.overlap(labels, depth=1, boundary='none')
    peak_ov = da.overlap.overlap(peak_image, depth=1, boundary='none')
    lb, pb = lab_ov.to_delayed(), peak_ov.to_delayed()
    ys, xs = _chunk_starts(labels.chunks)
    tasks = [dask.delayed(_peak_summary)(lb[i, j], pb[i, j],
                                         int(ys[i]) - (1 if i else 0),
                                         int(xs[j]) - (1 if j else 0))
             for i in range(lb.shape[0]) for j in range(lb.shape[1])]
    parts = (client.gather(client.compute(tasks)) if client is not None
             else list(dask.compute(*tasks)))
    big = np.iinfo(np.int64).max
    smax = np.full(n + 1, -np.inf)
    ymin = np.full(n + 1, big)
    xmin = np.full(n + 1, big)
    keys, vals = [], []
    for part in parts:
        np.maximum.at(smax, part['labels'], part['smax'])
        np.minimum.at(ymin, part['labels'], part['ymin'])
        np.minimum.at(xmin, part['labels'], part['xmin'])
        keys.append(part['a'] * (n + 1) + part['b'])
        vals.append(part['bmax'])
    keys = np.concatenate(keys)
    uk, inv = np.unique(keys, return_inverse=True)
    bmax = np.full(uk.size, -np.inf)
    np.maximum.at(bmax, inv, np.concatenate(vals))
    root = _peakless_roots(n, smax, uk // (n + 1), uk % (n + 1), bmax, margin)
    if root is None:
        return labels, n
    # Renumber 1..N by the top-left corner of the merged bounding boxes.
    gy = np.full(n + 1, big)
    gx = np.full(n + 1, big)
    np.minimum.at(gy, root[1:], ymin[1:])
    np.minimum.at(gx, root[1:], xmin[1:])
    present = np.flatnonzero(root[1:] == np.arange(1, n + 1)) + 1
    corner = gy[present] * labels.shape[1] + gx[present]
    present = present[np.argsort(corner, kind='stable')]
    new = np.zeros(n + 1, dtype=np.int32)
    new[present] = np.arange(1, present.size + 1, dtype=np.int32)
    # One copy of the lookup table in the graph, shared by every chunk.
    lut = dask.delayed(new[root], pure=True)
    blocks = labels.to_delayed()
    out = [[da.from_delayed(dask.delayed(_lookup)(blocks[i, j], lut),
                            shape=(labels.chunks[0][i], labels.chunks[1][j]),
                            dtype=np.int32)
            for j in range(blocks.shape[1])] for i in range(blocks.shape[0])]
    return da.block(out), int(present.size)


def _lookup(block, lut):
    return lut[block]


def _mesh_stats(block, bad, box_size, steps, min_fraction):
    """Clipped sky mode and sigma of the meshes of one block."""
    from astro_deepcolor.preprocessing import _clipped_stats, _mesh_samples

    samples = _mesh_samples(np.asarray(block, dtype=np.float32),
                            np.asarray(bad), box_size, steps)
    nby, nbx, n = samples.shape
    mode, sigma, good = _clipped_stats(samples.reshape(nby * nbx, n),
                                       min_fraction)
    return (mode.reshape(nby, nbx), sigma.reshape(nby, nbx),
            good.reshape(nby, nbx))


def _interpolate_block(meshes, wy, wx, which):
    tmp = np.matmul(wy, meshes)
    if which == 0:
        return tmp[0] @ wx.T
    rms = tmp[1] @ wx.T
    np.maximum(rms, np.float32(0), out=rms)
    return rms


def mosaic_background(image, bad, *, box_size=64, filter_size=3,
                      min_fraction=0.5, client=None):
    """
    Sky and rms maps of a chunked image, as
    `~astro_deepcolor.preprocessing.estimate_background` makes them.

    The mesh statistics are computed chunk by chunk (chunk edges fall on
    mesh edges), the small mesh grid is filtered on the driver, and the
    spline interpolation is evaluated chunk by chunk. The result equals
    `~astro_deepcolor.preprocessing.estimate_background` on the whole
    image, up to floating-point summation order.

    Parameters
    ----------
    image, bad : 2D `dask.array.Array`
        The image and its bad-pixel mask (same chunks, multiples of
        ``box_size`` except the last ones).
    box_size, filter_size : int, optional
        Mesh size and median-filter size in meshes.
    min_fraction : float, optional
        Minimum valid fraction of a mesh.
    client : `~distributed.Client`, optional
        The cluster.

    Returns
    -------
    background, rms : 2D `dask.array.Array` of float32
        Sky level and noise standard deviation.
    """
    import dask
    import dask.array as da

    from astro_deepcolor.preprocessing import (
        _choose_step,
        _finish_meshes,
        _spline_weights,
    )

    for sizes in image.chunks:
        if any(c % box_size for c in sizes[:-1]):
            msg = (f'chunks must be multiples of box_size={box_size}, got '
                   f'{image.chunks!r}')
            raise ValueError(msg)
    steps = _choose_step(box_size, 'auto')
    blocks, bads = image.to_delayed(), bad.to_delayed()
    nby, nbx = blocks.shape
    tasks = [dask.delayed(_mesh_stats)(blocks[i, j], bads[i, j], box_size,
                                       steps, min_fraction)
             for i in range(nby) for j in range(nbx)]
    stats = (client.gather(client.compute(tasks)) if client is not None
             else list(dask.compute(*tasks)))
    grid = [[stats[i * nbx + j] for j in range(nbx)] for i in range(nby)]
    mode, sigma, good = (np.block([[g[k] for g in row] for row in grid])
                         for k in range(3))
    mode, sigma = _finish_meshes(mode, sigma, good, filter_size)
    mby, mbx = mode.shape
    ny, nx = image.shape
    wy = _spline_weights(ny, box_size, mby)
    wx = _spline_weights(nx, box_size, mbx)
    meshes = np.stack([mode, sigma]).astype(np.float32)
    ys, xs = _chunk_edges(image.chunks)
    maps = []
    for which in (0, 1):
        out = [[da.from_delayed(
            dask.delayed(_interpolate_block)(meshes, wy[ys[i]:ys[i + 1]],
                                             wx[xs[j]:xs[j + 1]], which),
            shape=(ys[i + 1] - ys[i], xs[j + 1] - xs[j]), dtype=np.float32)
            for j in range(nbx)] for i in range(nby)]
        maps.append(da.block(out))
    return maps[0], maps[1]


def _colour_block(block, bad, background, rms, finder, threshold, starts,
                  margin, with_probability=False, block_info=None):
    """Deep-coloring classes of one chunk plus its margin (``HIGH_BIT`` set
    on pixels at or above ``threshold`` when footprints go lower); with
    ``with_probability``, packed in uint32 with the float16 bits of the
    foreground probability above the class byte.
    """
    from astro_deepcolor.postprocessing import classify_pixels

    i, j = block_info[0]['chunk-location']
    # Global position of the block's first pixel (no margin at the edges).
    origin = (int(starts[0][i]) - (margin if i > 0 else 0),
              int(starts[1][j]) - (margin if j > 0 else 0))
    bad = np.asarray(bad)
    probs = finder.predict(np.asarray(block), bad, background=background,
                           rms=rms, origin=origin)
    low, detect = detection_levels(threshold, finder.footprint_threshold)
    colour, p_fg = classify_pixels(probs, low, bad)
    if detect is not None:
        colour[(colour > 0) & (p_fg >= detect)] |= HIGH_BIT
    if not with_probability:
        return colour
    return colour | (p_fg.view(np.uint16).astype(np.uint32) << 8)


def _unpack_colour(packed):
    return (packed & np.uint32(0xFF)).astype(np.uint8)


def _unpack_probability(packed):
    return (packed >> np.uint32(8)).astype(np.uint16).view(np.float16)


def _label_maxima(labels, values, dtype=np.float32):
    """Labels present in a chunk and the maximum of ``values`` over each."""
    labels = np.asarray(labels)
    sel = labels > 0
    uniq, inv = np.unique(labels[sel], return_inverse=True)
    top = np.full(uniq.size, -np.inf, dtype=dtype)
    np.maximum.at(top, inv, np.asarray(values)[sel].astype(dtype))
    return uniq, top


def _detection_probability(labels, n_labels, p_fg, config, client, flips=False):
    """Each source's peak foreground probability, calibrated as
    `~astro_deepcolor.DeepColorSegmentation` does (float32, labels 1..N).
    """
    import dask

    lb, pb = labels.to_delayed().ravel(), p_fg.rechunk(labels.chunks).to_delayed().ravel()
    tasks = [dask.delayed(_label_maxima)(a, b) for a, b in zip(lb, pb, strict=True)]
    parts = (client.gather(client.compute(tasks)) if client is not None
             else list(dask.compute(*tasks)))
    prob = np.full(n_labels + 1, -np.inf, dtype=np.float32)
    for uniq, top in parts:
        np.maximum.at(prob, uniq, top)
    prob = prob[1:]
    from astro_deepcolor.inference.finder import reliability_map

    rel = reliability_map(config, flips)
    if rel:
        prob = np.interp(prob, rel['probability'], rel['reliability']).astype(np.float32)
    return prob


_PEAK_DEPTH = 8  # > the reach of smooth_peak_image's Gaussian (4 px)


def _chunk_multiple(finder):
    box = int(finder.config.background_box)
    mult = int(finder.config.tile_multiple)
    return box * mult // math.gcd(box, mult)


def detect_mosaic(image, finder=None, *, mask=None, weight=None,
                  weight_type='weight', chunks=2048, client=None,
                  return_probability=False):
    """
    Detect sources in a huge image, chunk by chunk, with exact stitching.

    Parameters
    ----------
    image : 2D `dask.array.Array` or array-like
        The image (for example ``da.from_zarr(...)``, or a FITS file opened
        with ``memmap=True`` and wrapped in `dask.array.from_array`).
    finder : `~astro_deepcolor.DeepColorSegmentation`, optional
        The finder (default: the shipped model with default settings). It
        is pickled to the workers, each of which builds its own session.
    mask : 2D array-like of bool, optional
        True for pixels to ignore; same shape as ``image``.
    weight : 2D `dask.array.Array` or array-like, optional
        Weight map, as for `~astro_deepcolor.pipeline.detect_image`: it
        sets the noise that normalises the network input; zero weight is
        masked.
    weight_type : {'weight', 'variance', 'rms'}, optional
        What ``weight`` holds.
    chunks : int, optional
        Chunk side, rounded up to a multiple of the model's background
        mesh and tile multiple (the image is rechunked to it). Memory per
        task is about ``4 * (n_colors + 6) * (chunks + 2 * overlap)**2``
        bytes.
    client : `~distributed.Client`, optional
        Cluster to use (default: the current dask scheduler).
    return_probability : bool, optional
        Also return each source's ``detection_probability``, as the
        finder gives it in ``segm.info`` (the catalogue column). The
        persisted map then holds 4 bytes per pixel instead of 1.

    Returns
    -------
    labels : 2D `dask.array.Array` of int32
        The segmentation (0 = background), computed lazily from a
        persisted colour map: ``labels.compute()`` when it fits in memory,
        ``labels.to_zarr(...)`` otherwise. Equal, label for label, to
        ``finder(image)`` on the whole image, the merge of segments without
        a peak of their own included (`merge_peakless_chunks`).
    n_labels : int
        The number of sources.
    detection_probability : 1D `~numpy.ndarray` of float32
        Only with ``return_probability``: the probability that each source
        (labels ``1..n_labels`` in order) is real, equal to the finder's
        ``segm.info['detection_probability']`` on the whole image. Give it
        to `~astro_deepcolor.pipeline.measure_image` through
        ``segm.info`` (see :doc:`/batch`) for the catalogue column.

    Notes
    -----
    Four passes over the image: (1) mesh statistics of the background,
    (2) network and pixel classification of each chunk extended by the
    finder's ``overlap`` (which covers the receptive field, so every pixel
    sees the same context as in memory), (3) chunk labelling and the exact
    stitching of `stitch_labels`, (4) when ``finder.peak_margin`` is set,
    the smoothed image and the per-chunk maxima of `merge_peakless_chunks`.
    """
    import dask
    import dask.array as da

    if finder is None:
        from astro_deepcolor.inference import DeepColorSegmentation

        finder = DeepColorSegmentation()
    if not isinstance(image, da.Array):
        image = da.from_array(np.asarray(image), chunks=chunks)
    if image.ndim != 2:
        msg = f'image must be 2D, got shape {image.shape!r}'
        raise ValueError(msg)
    chunks = check_positive_int(chunks, 'chunks')
    step = _chunk_multiple(finder)
    chunks = -(-chunks // step) * step
    margin = int(finder.overlap)
    image = image.astype(np.float32).rechunk(chunks)
    bad = ~da.isfinite(image)
    if mask is not None:
        if not isinstance(mask, da.Array):
            mask = da.from_array(np.asarray(mask, dtype=bool), chunks=chunks)
        if mask.shape != image.shape:
            msg = (f'mask must have the image shape {image.shape!r}, got '
                   f'{mask.shape!r}')
            raise ValueError(msg)
        bad = bad | mask.astype(bool).rechunk(image.chunks)
    error = None
    if weight is not None:
        from astro_deepcolor.pipeline import WEIGHT_TYPES, _sigma

        check_choice(weight_type, 'weight_type', WEIGHT_TYPES)
        if not isinstance(weight, da.Array):
            weight = da.from_array(np.asarray(weight), chunks=chunks)
        if weight.shape != image.shape:
            msg = (f'weight must have the image shape {image.shape!r}, got '
                   f'{weight.shape!r}')
            raise ValueError(msg)
        error = da.map_blocks(_sigma, weight.rechunk(image.chunks),
                              weight_type, dtype=np.float32)
        valid = da.isfinite(error) & (error > 0)
        bad = bad | ~valid
        error = da.where(valid, error, np.float32(1))
    bad = client.persist(bad) if client is not None else bad.persist()
    background, rms = mosaic_background(
        image, bad, box_size=finder.config.background_box,
        filter_size=finder.config.background_filter, client=client)
    if error is not None:
        rms = error
    colour = da.map_overlap(
        _colour_block, image, bad, background, rms, depth=margin,
        boundary='none', trim=True, dtype=np.uint8, finder=finder,
        threshold=finder.threshold,
        meta=np.zeros((0, 0), np.uint32 if return_probability else np.uint8),
        starts=_chunk_starts(image.chunks),
        margin=margin, with_probability=bool(return_probability))
    if return_probability:
        # One network pass feeds both persisted maps.
        packed = colour
        colour = packed.map_blocks(_unpack_colour, dtype=np.uint8)
        p_fg = packed.map_blocks(_unpack_probability, dtype=np.float16)
        colour, p_fg = (client.persist([colour, p_fg]) if client is not None
                        else dask.persist(colour, p_fg))
        del packed
    else:
        colour = client.persist(colour) if client is not None else colour.persist()
    high_flag = detection_levels(finder.threshold,
                                 finder.footprint_threshold)[1] is not None
    if high_flag and finder.config.n_colors >= HIGH_BIT:
        msg = (f'detect_mosaic supports at most {HIGH_BIT - 1} colours with '
               f'footprint_threshold < threshold, the model has '
               f'{finder.config.n_colors}')
        raise ValueError(msg)
    labels, n = stitch_labels(colour, n_pixels=finder.n_pixels,
                              connectivity=finder.connectivity,
                              merge_fraction=finder.merge_fraction,
                              client=client, high_flag=high_flag)
    if finder.peak_margin is not None:
        from astro_deepcolor.inference.finder import smooth_peak_image
        from astro_deepcolor.preprocessing import normalize

        normalized = da.map_blocks(normalize, image, background, rms, bad,
                                   dtype=np.float32)
        # The 1-pixel Gaussian reaches 4 pixels; at the image edges the
        # blocks are not padded, so scipy's own edge mode applies, as in
        # memory.
        peak = da.map_overlap(smooth_peak_image, normalized, depth=_PEAK_DEPTH,
                              boundary='none', trim=True, dtype=np.float32)
        labels, n = merge_peakless_chunks(labels, n, peak,
                                          margin=finder.peak_margin,
                                          client=client)
    if not return_probability:
        return labels, n
    return labels, n, _detection_probability(labels, n, p_fg, finder.config, client,
                                              finder.flips)
