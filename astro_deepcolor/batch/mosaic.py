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

import numpy as np

from astro_deepcolor.utils._parameters import check_choice, check_positive_int

__all__ = ['detect_mosaic', 'stitch_labels']


def _structure(connectivity):
    from scipy.ndimage import generate_binary_structure

    return generate_binary_structure(2, 1 if connectivity == 4 else 2)


def _label_colours(colour, connectivity):
    """
    Connected components of each colour of a block.

    Numbered like `astro_deepcolor.postprocessing.label_sources` numbers
    them: colour by colour (ascending), raster order within a colour.
    """
    from scipy.ndimage import label

    colour = np.asarray(colour)
    comp = np.zeros(colour.shape, dtype=np.int32)
    structure = _structure(connectivity)
    offset = 0
    counts = np.bincount(colour.ravel(), minlength=256)
    for value in np.flatnonzero(counts[1:]) + 1:
        sel = colour == value
        lab, n = label(sel, structure=structure)
        comp[sel] = lab[sel] + offset
        offset += n
    return comp, offset


def _pairs(a, b):
    """Unordered pairs (lo, hi) of different non-zero labels facing."""
    sel = (a != b) & (a > 0) & (b > 0)
    lo = np.minimum(a[sel], b[sel]).astype(np.int64)
    hi = np.maximum(a[sel], b[sel]).astype(np.int64)
    return lo, hi


def _block_summary(colour, y0, x0, width, connectivity):
    """
    Everything the stitching needs from one block (a few numbers per piece).

    A *piece* is a component of one colour inside the block. Returned per
    piece: colour, area, raster-first pixel and bounding-box corner (global
    coordinates), internal 4-neighbour contacts (for the perimeter); per
    pair of touching pieces: shared 4-neighbour edges and diagonal
    contacts; and the block's edge lines.
    """
    from scipy.ndimage import find_objects

    colour = np.asarray(colour)
    comp, n = _label_colours(colour, connectivity)
    areas = np.bincount(comp.ravel(), minlength=n + 1).astype(np.int64)
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
        'n': n, 'areas': areas, 'first': first_flat, 'colour': piece_colour,
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
                  merge_fraction):
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
    shared = {}
    touch = {}
    for (a, b), count in shared_pairs.items():
        shared.setdefault(a, {})[b] = count
        shared.setdefault(b, {})[a] = count
    for a, b in touch_pairs:
        touch.setdefault(a, set()).add(b)
        touch.setdefault(b, set()).add(a)
    perim = {a: int(perim_of[a]) for a in touch}
    for a in sorted(touch, key=lambda i: (group_areas[i], i)):
        neighbours = touch.get(a)
        if not neighbours:
            continue
        sh = shared.get(a, {})
        best = max(neighbours, key=lambda b: (sh.get(b, 0), group_areas[b], -b))
        s = sh.get(best, 0)
        small = group_areas[a] < n_pixels
        enclosed = (group_areas[a] <= group_areas[best]
                    and s >= merge_fraction * perim[a])
        if not (small or enclosed):
            continue
        root[a] = best
        group_areas[best] += group_areas[a]
        perim[best] += perim[a] - 2 * s
        sb = shared.setdefault(best, {})
        sb.pop(a, None)
        for x, count in sh.items():
            if x == best:
                continue
            sb[x] = sb.get(x, 0) + count
            sx = shared[x]
            sx.pop(a, None)
            sx[best] = sx.get(best, 0) + count
        tb = touch[best]
        tb.discard(a)
        for x in neighbours:
            if x == best:
                continue
            tb.add(x)
            tx = touch[x]
            tx.discard(a)
            tx.add(best)
        del touch[a]
        shared.pop(a, None)
    while True:
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    return root, group_areas


def _relabel_block(colour, lookup, connectivity):
    comp, _ = _label_colours(colour, connectivity)
    return lookup[comp]


def stitch_labels(colour, *, n_pixels=5, connectivity=8, merge_fraction=0.5,
                  client=None):
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
    ystarts = np.concatenate([[0], np.cumsum(colour.chunks[0])[:-1]])
    xstarts = np.concatenate([[0], np.cumsum(colour.chunks[1])[:-1]])
    tasks = [dask.delayed(_block_summary)(blocks[i, j], int(ystarts[i]),
                                          int(xstarts[j]), width, connectivity)
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

    root, group_areas = _merge_groups(n, areas, shared, touch, perim,
                                      n_pixels, merge_fraction)
    ids = np.arange(n + 1)
    keep = (root == ids) & (group_areas >= n_pixels)
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

    out_blocks = np.empty((nby, nbx), dtype=object)
    for i in range(nby):
        for j in range(nbx):
            o, m = offsets[i, j], counts[i, j]
            local = np.concatenate([[0], lookup[o + 1:o + 1 + m]]).astype(
                np.int32)
            out_blocks[i, j] = da.from_delayed(
                dask.delayed(_relabel_block)(blocks[i, j], local,
                                             connectivity),
                shape=(colour.chunks[0][i], colour.chunks[1][j]),
                dtype=np.int32)
    labels = da.block(out_blocks.tolist())
    return labels, int(kept.size)


def _finder_classes(block, finder, threshold, mask_block=None):
    """Pixel classes of one (extended) block from the finder."""
    probs = finder.predict(np.asarray(block), mask=mask_block)
    return _classes_from_probs(finder, probs, threshold, mask_block)


def _classes_from_probs(finder, probs, threshold, mask=None):
    # Mirrors DeepColorSegmentation.segment: background where the
    # background probability is above 1 - threshold, else the most
    # probable colour.
    probs = np.asarray(probs)
    fg = (1.0 - probs[0]) >= threshold
    classes = np.argmax(probs[1:], axis=0).astype(np.uint8) + 1
    classes[~fg] = 0
    if mask is not None:
        classes[np.asarray(mask, dtype=bool)] = 0
    return classes


def detect_mosaic(image, finder=None, *, threshold=None, mask=None,
                  chunks=4096, margin=None, client=None):
    """
    Detect sources in a huge image, chunk by chunk, with exact stitching.

    Parameters
    ----------
    image : 2D `dask.array.Array` or array-like
        The image (for example ``da.from_zarr(...)`` or a FITS file opened
        with ``memmap=True`` and wrapped in `dask.array.from_array`).
    finder : `~astro_deepcolor.DeepColorSegmentation`, optional
        The finder (default: the shipped model with default settings). It
        is pickled to the workers, which each build their own session.
    threshold : float, optional
        Probability threshold (default: the finder's).
    mask : 2D `dask.array.Array` or array-like of bool, optional
        True for pixels to ignore; same shape as ``image``.
    chunks : int or tuple, optional
        Chunk size when ``image`` is not already a dask array (rechunked
        otherwise only if it is an int and differs).
    margin : int, optional
        Overlap added on each side of a chunk before inference; at least
        the network's receptive field (default: the model's
        ``receptive_field``, rounded up to its ``tile_multiple``).
    client : `~distributed.Client`, optional
        Cluster to use (default: the current dask scheduler).

    Returns
    -------
    labels : 2D `dask.array.Array` of int32
        The segmentation (0 = background), lazily computed from a
        persisted class map. ``SegmentationImage(labels.compute())`` when
        it fits in memory; ``labels.to_zarr(...)`` otherwise.
    n_labels : int
        The number of sources.
    """
    import dask.array as da

    if finder is None:
        from astro_deepcolor.inference import DeepColorSegmentation

        finder = DeepColorSegmentation()
    if threshold is None:
        threshold = finder.threshold
    if not isinstance(image, da.Array):
        image = da.from_array(image, chunks=chunks)
    elif isinstance(chunks, int) and max(image.chunksize) != chunks:
        image = image.rechunk(chunks)
    if image.ndim != 2:
        msg = f'image must be 2D, got shape {image.shape!r}'
        raise ValueError(msg)
    if margin is None:
        margin = _default_margin(finder)
    margin = check_positive_int(margin, 'margin', minimum=0)
    if min(min(c) for c in image.chunks) < margin and max(
            len(c) for c in image.chunks) > 1:
        msg = (f'chunks must be at least margin={margin} pixels; got chunk '
               f'sizes {image.chunks!r}')
        raise ValueError(msg)

    args = [image]
    if mask is not None:
        if not isinstance(mask, da.Array):
            mask = da.from_array(np.asarray(mask, dtype=bool),
                                 chunks=image.chunks)
        args.append(mask.rechunk(image.chunks))

    def classes_block(block, mask_block=None):
        return _finder_classes(block, finder, threshold, mask_block)

    classes = da.map_overlap(classes_block, *args, depth=margin,
                             boundary='none', trim=True, dtype=np.uint8,
                             align_arrays=False)
    classes = client.persist(classes) if client is not None else classes.persist()
    return stitch_labels(classes, connectivity=finder.connectivity,
                         n_pixels=finder.n_pixels, client=client)


def _default_margin(finder):
    config = getattr(getattr(finder, 'model', None), 'config', None)
    if config is None:
        config = getattr(finder, 'config', None)
    rf = int(getattr(config, 'receptive_field', 128))
    mult = int(getattr(config, 'tile_multiple', 8))
    return -(-rf // mult) * mult
