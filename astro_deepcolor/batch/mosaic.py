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


def _label_classes(classes, connectivity):
    """Label connected components within each class of a block."""
    from scipy.ndimage import label

    classes = np.asarray(classes)
    labels = np.zeros(classes.shape, dtype=np.int32)
    structure = _structure(connectivity)
    offset = 0
    for value in np.unique(classes):
        if value == 0:
            continue
        lab, n = label(classes == value, structure=structure)
        nonzero = lab > 0
        labels[nonzero] = lab[nonzero] + offset
        offset += n
    return labels, offset


def _block_summary(classes, connectivity):
    """Per-block summary for stitching: counts, areas and edges."""
    labels, n = _label_classes(classes, connectivity)
    areas = np.bincount(labels.ravel(), minlength=n + 1).astype(np.int64)
    classes = np.asarray(classes)
    return {
        'n': n,
        'areas': areas,
        'edges': {
            'top': (labels[0].copy(), classes[0].copy()),
            'bottom': (labels[-1].copy(), classes[-1].copy()),
            'left': (labels[:, 0].copy(), classes[:, 0].copy()),
            'right': (labels[:, -1].copy(), classes[:, -1].copy()),
        },
    }


def _edge_pairs(lab_a, cls_a, lab_b, cls_b, connectivity):
    """Equivalent label pairs between two facing pixel lines."""
    pairs = []
    shifts = (0,) if connectivity == 4 else (-1, 0, 1)
    n = lab_a.size
    for s in shifts:
        a = slice(max(0, -s), n - max(0, s))
        b = slice(max(0, s), n - max(0, -s))
        la, lb = lab_a[a], lab_b[b]
        ok = (la > 0) & (lb > 0) & (cls_a[a] == cls_b[b])
        if ok.any():
            pairs.append(np.stack([la[ok], lb[ok]], axis=1))
    return pairs


def _relabel_block(classes, lookup, connectivity):
    labels, _ = _label_classes(classes, connectivity)
    return lookup[labels]


def stitch_labels(classes, *, connectivity=8, n_pixels=1, client=None):
    """
    Label a chunked map of pixel classes exactly, as if it were in memory.

    Parameters
    ----------
    classes : 2D `dask.array.Array` or `~numpy.ndarray` of int
        Pixel classes: 0 is background, each positive value a class
        (colour). Pixels of different classes never join one source.
    connectivity : {4, 8}, optional
        Pixel connectivity.
    n_pixels : int, optional
        Sources (whole, after stitching) with fewer pixels are removed.
    client : `~distributed.Client`, optional
        Compute the block summaries on this cluster (default: the current
        dask scheduler).

    Returns
    -------
    labels : 2D `dask.array.Array` of int32
        Source labels ``1..N`` (0: background), same chunks as
        ``classes``. Labels are numbered by chunk, then within a chunk.
    n_labels : int
        ``N``.
    """
    import dask
    import dask.array as da
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    check_choice(connectivity, 'connectivity', (4, 8))
    n_pixels = check_positive_int(n_pixels, 'n_pixels')
    if not isinstance(classes, da.Array):
        classes = da.from_array(np.asarray(classes), chunks=2048)
    if classes.ndim != 2:
        msg = f'classes must be a 2D array, got shape {classes.shape!r}'
        raise ValueError(msg)

    blocks = classes.to_delayed()
    nby, nbx = blocks.shape
    summaries = [[dask.delayed(_block_summary)(blocks[i, j], connectivity)
                  for j in range(nbx)] for i in range(nby)]
    flat = [s for row in summaries for s in row]
    flat = (client.gather(client.compute(flat)) if client is not None
            else list(dask.compute(*flat)))
    summary = [flat[i * nbx:(i + 1) * nbx] for i in range(nby)]

    # Global ids: block (i, j) label k -> offset[i, j] + k.
    counts = np.array([[s['n'] for s in row] for row in summary], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts.ravel())])[:-1]
    offsets = offsets.reshape(nby, nbx)
    total = int(counts.sum())
    if total >= np.iinfo(np.int32).max:
        msg = f'too many labels ({total}) for int32 labels'
        raise ValueError(msg)
    areas = np.zeros(total + 1, dtype=np.int64)
    for i in range(nby):
        for j in range(nbx):
            s = summary[i][j]
            o = offsets[i, j]
            areas[o + 1:o + 1 + s['n']] = s['areas'][1:]

    def edge(i, j, side):
        lab, cls = summary[i][j]['edges'][side]
        return np.where(lab > 0, lab + offsets[i, j], 0), cls

    # Full-length boundary lines: a line running the whole image height
    # (width) also catches the diagonal contacts across chunk corners.
    pairs = []
    for j in range(nbx - 1):
        left = [edge(i, j, 'right') for i in range(nby)]
        right = [edge(i, j + 1, 'left') for i in range(nby)]
        pairs += _edge_pairs(np.concatenate([e[0] for e in left]),
                             np.concatenate([e[1] for e in left]),
                             np.concatenate([e[0] for e in right]),
                             np.concatenate([e[1] for e in right]),
                             connectivity)
    for i in range(nby - 1):
        top = [edge(i, j, 'bottom') for j in range(nbx)]
        bottom = [edge(i + 1, j, 'top') for j in range(nbx)]
        pairs += _edge_pairs(np.concatenate([e[0] for e in top]),
                             np.concatenate([e[1] for e in top]),
                             np.concatenate([e[0] for e in bottom]),
                             np.concatenate([e[1] for e in bottom]),
                             connectivity)
    pairs = (np.concatenate(pairs) if pairs
             else np.zeros((0, 2), dtype=np.int64))
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8),
                        (pairs[:, 0], pairs[:, 1])),
                       shape=(total + 1, total + 1))
    _, component = connected_components(graph, directed=False)
    comp_area = np.bincount(component, weights=areas).astype(np.int64)
    keep = comp_area >= n_pixels
    keep[component[0]] = False  # the background
    # Number the kept components by their first (smallest) global id.
    first = np.full(component.max() + 1, np.iinfo(np.int64).max)
    np.minimum.at(first, component, np.arange(total + 1))
    kept = np.flatnonzero(keep)
    new_id = np.zeros(component.max() + 1, dtype=np.int32)
    new_id[kept[np.argsort(first[kept], kind='stable')]] = np.arange(
        1, kept.size + 1, dtype=np.int32)
    lookup = new_id[component]  # global id -> final label

    out_blocks = np.empty((nby, nbx), dtype=object)
    for i in range(nby):
        for j in range(nbx):
            o, n = offsets[i, j], counts[i, j]
            local = np.concatenate([[0], lookup[o + 1:o + 1 + n]])
            out_blocks[i, j] = da.from_delayed(
                dask.delayed(_relabel_block)(blocks[i, j], local,
                                             connectivity),
                shape=(classes.chunks[0][i], classes.chunks[1][j]),
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
