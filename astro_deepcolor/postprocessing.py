# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
From deep-coloring probability maps to a segmentation image.

The network gives, for every pixel, a softmax over the background
(channel 0) and ``n_colors`` colours. Post-processing has three steps:

1. **Pixel classification** (`classify_pixels`). A pixel is foreground
   when its foreground probability ``p_fg = 1 - p_background`` is at least
   ``threshold``; its colour is the most probable colour channel
   (``argmax`` over channels 1..C). Masked and non-finite pixels are
   background. The result is compact: a ``uint8`` colour index per pixel
   (0 = background) and ``p_fg`` as ``float16``, 3 bytes per pixel, which
   is what the tiled detector keeps for a whole image instead of the
   ``4 (C + 1)`` bytes per pixel of the probability cube.
2. **Connected components per colour**. Pixels of the same colour that
   touch (``connectivity`` 4 or 8) form one component, as in Kulikov et
   al. (2018): the network is trained to give touching objects different
   colours, so two sources can touch without merging.
3. **Colour-flicker repair** (`merge_flicker`). The colour of a pixel can
   flicker inside one object (the network hesitates between two colours in
   part of a large or irregular source). Left alone, one object would come
   out as two labels. A component ``A`` is merged into the neighbouring
   component ``B`` with which it shares the longest boundary when

   - ``A`` has fewer than ``n_pixels`` pixels (a fragment too small to be
     a source on its own, glued to a real one), or
   - ``A`` is not larger than ``B`` and its boundary with ``B`` is at least
     ``merge_fraction`` of ``A``'s whole perimeter (``A`` is mostly
     enclosed by ``B``: a patch inside an object, or a bite out of its
     edge), unless ``A`` and ``B`` each pass the detection cut
     (``n_pixels`` pixels at ``threshold``): two differently coloured
     components that are both detections are two sources, such as a
     faint neighbour on a bright star's wing, and are never merged.

   Boundaries and perimeters are counted in pixel edges (4-neighbour
   contacts; the image border counts as perimeter). The criterion is
   geometric and scale free: two genuinely blended sources touch along a
   chord, which for two overlapping discs of similar size is at most
   about a third of the perimeter of either piece, well below the default
   ``merge_fraction = 0.5``, while an enclosed patch has a fraction of 1.
   Components are visited from the smallest to the largest and the merged
   groups' areas, perimeters and shared boundaries are updated as they
   grow, so a chain of fragments ends in the object that encloses them.

**Detection and footprint thresholds.** Footprints may be delimited at a
lower probability than the detection threshold (``footprint_threshold``,
0.8 in `~astro_deepcolor.DeepColorSegmentation`), as SExtractor separates
``DETECT_THRESH`` from ``ANALYSIS_THRESH``: pixels are classified at
``min(threshold, footprint_threshold)``, components and flicker repair are
computed on that map, and a source is kept only if at least ``n_pixels``
of its pixels reach ``threshold``. At a high threshold, the cores of one
galaxy (its clumps, or the two ends of an edge-on disk) are then joined by
their common footprint instead of coming out as several sources, and the
footprint, which photometry uses, does not shrink with the threshold.
Since the network gives touching sources different colours, joining at a
lower probability does not merge neighbours.

Components still smaller than ``n_pixels`` after the repair are dropped
and the labels are made consecutive, ordered by the top-left corner of
their bounding box (row first), close to photutils' raster order.

Each source's **detection probability** is the maximum of ``p_fg`` over
its segment (the peak confidence that something is there; the segment
itself is where ``p_fg >= threshold``). It is stored, aligned with
``segm.labels``, in ``segm.info['detection_probability']``.
"""

import warnings

import numpy as np
from photutils.segmentation import SegmentationImage
from photutils.utils.exceptions import NoDetectionsWarning
from scipy import ndimage

from astro_deepcolor.utils._parameters import check_choice, check_fraction, check_positive_int

__all__ = ['classify_pixels', 'detection_levels', 'fold_groups', 'label_sources',
           'merge_flicker', 'merge_peakless', 'segment_probabilities',
           'warn_no_detections']

_NO_DETECTIONS = ('No sources were found. Try lowering the threshold or '
                  'n_pixels parameters.')


def _structure(connectivity):
    check_choice(connectivity, 'connectivity', (4, 8))
    if connectivity == 8:
        return np.ones((3, 3), dtype=bool)
    return ndimage.generate_binary_structure(2, 1)


def detection_levels(threshold, footprint_threshold=None):
    """
    Footprint level and detection cut of a detection threshold.

    Parameters
    ----------
    threshold : float
        Detection threshold.
    footprint_threshold : float or None, optional
        Requested footprint threshold; None means ``threshold``.

    Returns
    -------
    level : float
        ``min(threshold, footprint_threshold)``, the probability at which
        pixels are classified: footprints never shrink below the detected
        region.
    detect : float or None
        ``threshold`` when it is above ``level`` (the ``threshold`` of
        `label_sources`), else None: the colour map itself is the
        detection.
    """
    threshold = check_fraction(threshold, 'threshold')
    level = threshold
    if footprint_threshold is not None:
        level = min(threshold, check_fraction(footprint_threshold,
                                              'footprint_threshold'))
    return level, (threshold if level < threshold else None)


def classify_pixels(probs, threshold, mask=None, *, out=None):
    """
    Classify pixels of a probability cube into background and colours.

    Parameters
    ----------
    probs : 3D `~numpy.ndarray`
        Probabilities ``(n_colors + 1, ny, nx)``; channel 0 is the
        background.
    threshold : float
        Minimum foreground probability ``1 - probs[0]`` of a source pixel,
        in [0, 1].
    mask : 2D bool `~numpy.ndarray`, optional
        True for pixels that can never belong to a source.
    out : tuple of 2 `~numpy.ndarray`, optional
        Arrays ``(colour, p_fg)`` of shape ``(ny, nx)`` (``uint8`` and
        ``float16`` or wider) to fill in place, e.g. views into the
        image-sized arrays of the tiled detector.

    Returns
    -------
    colour : 2D `~numpy.ndarray` of uint8
        0 for background, else the colour index 1..n_colors.
    p_fg : 2D `~numpy.ndarray` of float16
        Foreground probability ``1 - p_background`` (0 where masked or
        non-finite).
    """
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[0] < 2:
        msg = ('probs must be a 3D array (n_colors + 1, ny, nx) with at least '
               f'2 channels, got shape {probs.shape!r}')
        raise ValueError(msg)
    if probs.shape[0] > 255:
        msg = f'at most 254 colours are supported, got {probs.shape[0] - 1}'
        raise ValueError(msg)
    shape = probs.shape[1:]
    p_fg = np.subtract(np.float32(1), probs[0], dtype=np.float32)
    bad = ~np.isfinite(p_fg)
    if mask is not None:
        bad |= mask
    p_fg[bad] = 0.0
    if out is None:
        colour = np.empty(shape, dtype=np.uint8)
        fg_out = np.empty(shape, dtype=np.float16)
    else:
        colour, fg_out = out
    colour[...] = np.argmax(probs[1:], axis=0)
    colour += 1
    colour[(p_fg < threshold) | bad] = 0
    fg_out[...] = p_fg
    return colour, fg_out


def _colour_components(colour, structure):
    """Label each colour separately; return (components, n_components)."""
    counts = np.bincount(colour.ravel(), minlength=256)
    comp = np.zeros(colour.shape, dtype=np.int32)
    buf = np.empty(colour.shape, dtype=np.int32)
    offset = 0
    for c in np.flatnonzero(counts[1:]) + 1:
        sel = colour == c
        n = ndimage.label(sel, structure=structure, output=buf)
        np.add(buf, offset, out=comp, where=sel)
        offset += n
    return comp, offset


def _pairs(a, b):
    """Unordered pairs (lo, hi) of different non-zero labels facing."""
    sel = a != b
    sel &= a > 0
    sel &= b > 0
    lo = np.minimum(a[sel], b[sel]).astype(np.int64)
    hi = np.maximum(a[sel], b[sel]).astype(np.int64)
    return lo, hi


def _pair_counts(a, b, n):
    """Keys ``lo * (n + 1) + hi`` of the facing pairs of a, b."""
    lo, hi = _pairs(a, b)
    return lo * (n + 1) + hi


def _contacts(comp, n, connectivity):
    """
    Shared 4-neighbour boundary lengths and contact sets of components.

    Returns ``(shared, touch)``: ``shared[(a, b)]`` is the number of pixel
    edges between components a < b; ``touch`` is the set of pairs that
    are connected under ``connectivity`` (diagonal contacts included for
    8).
    """
    keys4 = np.concatenate([_pair_counts(comp[:, :-1], comp[:, 1:], n),
                            _pair_counts(comp[:-1, :], comp[1:, :], n)])
    ukeys, counts = np.unique(keys4, return_counts=True)
    shared = {(int(k // (n + 1)), int(k % (n + 1))): int(c)
              for k, c in zip(ukeys, counts, strict=True)}
    touch = set(shared)
    if connectivity == 8:
        keysd = np.concatenate([
            _pair_counts(comp[:-1, :-1], comp[1:, 1:], n),
            _pair_counts(comp[:-1, 1:], comp[1:, :-1], n)])
        for k in np.unique(keysd):
            touch.add((int(k // (n + 1)), int(k % (n + 1))))
    return shared, touch


def _perimeter(mask):
    """Number of pixel edges between ``mask`` and the rest (border too)."""
    area = np.count_nonzero(mask)
    inner = (np.count_nonzero(mask[:, :-1] & mask[:, 1:])
             + np.count_nonzero(mask[:-1, :] & mask[1:, :]))
    return 4 * area - 2 * inner


def merge_flicker(comp, n_components, areas, n_pixels, *, connectivity=8,
                  merge_fraction=0.5, high=None):
    """
    Merge colour components that are fragments of one object.

    See the module docstring for the rule.

    Parameters
    ----------
    comp : 2D `~numpy.ndarray` of int
        Colour components (unique ids 1..n_components over all colours,
        0 for background).
    n_components : int
        The number of components.
    areas : 1D `~numpy.ndarray` of int
        Pixel count of each id (``areas[0]`` is ignored).
    n_pixels : int
        Minimum source area; smaller components touching another one are
        always merged into it.
    connectivity : {4, 8}, optional
        Pixel connectivity defining contact.
    merge_fraction : float, optional
        Minimum fraction of a component's perimeter shared with a larger
        neighbour for the two to be merged.
    high : 1D `~numpy.ndarray` of int, optional
        Pixel count of each id at the detection threshold (None: the
        areas). Two components that each have ``n_pixels`` such pixels
        both pass the detection cut and are never merged.

    Returns
    -------
    root : 1D `~numpy.ndarray` of int
        For every component id, the id of the group it belongs to
        (``root[i] == i`` for components that were not merged).
    group_areas : 1D `~numpy.ndarray` of int
        Area of each group, indexed by its root id.
    """
    root = np.arange(n_components + 1)
    group_areas = np.asarray(areas, dtype=np.int64).copy()
    if n_components < 2:
        return root, group_areas
    shared_pairs, touch_pairs = _contacts(comp, n_components, connectivity)
    if not touch_pairs:
        return root, group_areas
    touching = {a for pair in touch_pairs for a in pair}
    slices = ndimage.find_objects(comp)
    perim = {a: _perimeter(comp[slices[a - 1]] == a) for a in touching}
    return fold_groups(root, group_areas, shared_pairs, touch_pairs, perim,
                       n_pixels, merge_fraction, high=high)


def fold_groups(root, group_areas, shared_pairs, touch_pairs, perim,
                n_pixels, merge_fraction, *, high=None):
    """
    The greedy colour-flicker merge on a component contact graph.

    Shared by `merge_flicker` (one image in memory) and
    `astro_deepcolor.batch.stitch_labels` (contacts gathered from chunks),
    so both give the same labels.

    Parameters
    ----------
    root : 1D `~numpy.ndarray` of int
        ``arange(n + 1)``; updated in place and returned.
    group_areas : 1D `~numpy.ndarray` of int
        Area of every component; updated in place and returned.
    shared_pairs : dict
        ``(a, b) -> number of shared pixel faces`` for touching components.
    touch_pairs : iterable of tuple
        Every ``(a, b)`` of touching components (faces or corners).
    perim : dict
        Perimeter (pixel faces) of every touching component.
    n_pixels : int
        Smaller components are always merged into a neighbour.
    merge_fraction : float
        Minimum shared fraction of a component's perimeter for a merge.
    high : 1D `~numpy.ndarray` of int, optional
        Pixel count of every component at the detection threshold (None:
        its area). An enclosed component is merged only when it or its
        neighbour fails the detection cut (fewer than ``n_pixels`` such
        pixels): two differently coloured components that are both
        detections are two sources (a faint neighbour on a bright star's
        wing), never one.

    Returns
    -------
    root : 1D `~numpy.ndarray` of int
        Group id of every component.
    group_areas : 1D `~numpy.ndarray` of int
        Area of every group, indexed by its root.
    """
    perim = dict(perim)
    group_high = (group_areas.copy() if high is None
                  else np.asarray(high, dtype=np.int64).copy())
    shared = {}
    touch = {}
    for (a, b), count in shared_pairs.items():
        shared.setdefault(a, {})[b] = count
        shared.setdefault(b, {})[a] = count
    for a, b in touch_pairs:
        touch.setdefault(a, set()).add(b)
        touch.setdefault(b, set()).add(a)

    for a in sorted(touch, key=lambda i: (group_areas[i], i)):
        neighbours = touch.get(a)
        if not neighbours:
            continue
        sh = shared.get(a, {})
        best = max(neighbours, key=lambda b: (sh.get(b, 0), group_areas[b], -b))
        s = sh.get(best, 0)
        small = group_areas[a] < n_pixels
        enclosed = (group_areas[a] <= group_areas[best]
                    and s >= merge_fraction * perim[a]
                    and min(group_high[a], group_high[best]) < n_pixels)
        if not (small or enclosed):
            continue
        # Fold group a into group best.
        root[a] = best
        group_areas[best] += group_areas[a]
        group_high[best] += group_high[a]
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
    # Resolve chains a -> b -> c to the final root.
    while True:
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    return root, group_areas


def label_sources(colour, p_fg, n_pixels, *, connectivity=8,
                  merge_fraction=0.5, relabel=True, threshold=None,
                  peak_image=None, peak_margin=0.5):
    """
    Turn a per-pixel colour map into a segmentation image.

    Parameters
    ----------
    colour : 2D `~numpy.ndarray` of uint8
        0 for background, else the colour 1..n_colors (from
        `classify_pixels`).
    p_fg : 2D `~numpy.ndarray`
        Foreground probability of each pixel, used for the detection
        probability of each source.
    n_pixels : int
        Minimum number of connected pixels of a source.
    connectivity : {4, 8}, optional
        Pixel connectivity of the components.
    merge_fraction : float, optional
        See `merge_flicker`.
    relabel : bool, optional
        Order labels by the top-left corner of their bounding box
        (otherwise by colour, then raster order within a colour).
    threshold : float, optional
        Detection threshold when ``colour`` was classified at a lower
        *footprint* threshold: a source is kept only if at least
        ``n_pixels`` of its pixels have ``p_fg >= threshold`` (compared at
        the float16 precision of ``p_fg``). None: every pixel of
        ``colour`` counts (it was classified at the detection threshold).
    peak_image : 2D `~numpy.ndarray`, optional
        The smoothed image in noise units: sources without a peak of their
        own in it are merged into their brighter neighbour
        (`merge_peakless`). None: no such merge.
    peak_margin : float, optional
        See `merge_peakless`.

    Returns
    -------
    segm : `~photutils.segmentation.SegmentationImage` or None
        The sources, with ``segm.info['detection_probability']`` (max of
        ``p_fg`` in each segment, aligned with ``segm.labels``); None
        when nothing is found (a
        `~photutils.utils.exceptions.NoDetectionsWarning` is emitted).
    """
    segm = _label_sources(colour, p_fg, n_pixels, connectivity=connectivity,
                          merge_fraction=merge_fraction, relabel=relabel,
                          threshold=threshold, peak_image=peak_image,
                          peak_margin=peak_margin)
    if segm is None:
        warn_no_detections(stacklevel=2)
    return segm


def _label_sources(colour, p_fg, n_pixels, *, connectivity=8,
                   merge_fraction=0.5, relabel=True, threshold=None,
                   peak_image=None, peak_margin=0.5):
    """
    The segmentation core: `label_sources` without the warning.

    Like photutils' private ``_detect_sources``, it returns None silently
    when nothing is found; the public layers (`label_sources`,
    `segment_probabilities`, `~astro_deepcolor.DeepColorSegmentation`)
    warn once.
    """
    n_pixels = check_positive_int(n_pixels, 'n_pixels')
    merge_fraction = check_fraction(merge_fraction, 'merge_fraction')
    structure = _structure(connectivity)
    if colour.shape != p_fg.shape:
        msg = (f'colour and p_fg must have the same shape, got '
               f'{colour.shape!r} and {p_fg.shape!r}')
        raise ValueError(msg)

    comp, n = _colour_components(colour, structure)
    if n == 0:
        return None
    areas = np.bincount(comp.ravel(), minlength=n + 1)
    high = None
    if threshold is not None:
        threshold = check_fraction(threshold, 'threshold')
        high = np.bincount(comp[p_fg >= threshold], minlength=n + 1)
    root, group_areas = merge_flicker(comp, n, areas, n_pixels,
                                      connectivity=connectivity,
                                      merge_fraction=merge_fraction, high=high)
    ids = np.arange(n + 1)
    keep = (root == ids) & (group_areas >= n_pixels)
    if threshold is not None:
        group_high = np.zeros(n + 1, dtype=np.int64)
        np.add.at(group_high, root, high)
        keep &= group_high >= n_pixels
    keep[0] = False
    if not keep.any():
        return None
    kept = np.flatnonzero(keep)
    if relabel:
        # Top-left corner of each group's bounding box (row, then column).
        slices = ndimage.find_objects(comp)
        y0 = np.array([s[0].start for s in slices])
        x0 = np.array([s[1].start for s in slices])
        corner = y0.astype(np.int64) * colour.shape[1] + x0
        group_corner = np.full(n + 1, np.iinfo(np.int64).max)
        np.minimum.at(group_corner, root[1:], corner)
        kept = kept[np.argsort(group_corner[kept], kind='stable')]
    new = np.zeros(n + 1, dtype=np.int32)
    new[kept] = np.arange(1, kept.size + 1, dtype=np.int32)
    lut = new[root]
    del root
    data = lut[comp]
    del comp
    if peak_image is not None and kept.size > 1:
        merged = merge_peakless(data, peak_image, margin=peak_margin)
        if merged is not data:
            # Renumber 1..N, ordered by the top-left corner again.
            slices = ndimage.find_objects(merged)
            present = np.array([i + 1 for i, sl in enumerate(slices) if sl is not None])
            corner = np.array([slices[i - 1][0].start * merged.shape[1]
                               + slices[i - 1][1].start for i in present])
            present = present[np.argsort(corner, kind='stable')]
            lut = np.zeros(len(slices) + 1, dtype=np.int32)
            lut[present] = np.arange(1, present.size + 1, dtype=np.int32)
            data = lut[merged]
            kept = present
            del merged

    sel = data > 0
    lab = data[sel]
    prob = np.zeros(kept.size + 1, dtype=np.float32)
    np.maximum.at(prob, lab, p_fg[sel].astype(np.float32))
    del sel, lab
    # Areas travel with the probabilities so that a later relabelling
    # (relabel_consecutive, reassign_labels...) is detected, not misread.
    areas = np.bincount(data.ravel(), minlength=kept.size + 1)[1:]
    corners = np.array([(sl[0].start, sl[1].start)
                        for sl in ndimage.find_objects(data)],
                       dtype=np.int64).reshape(-1, 2)
    segm = SegmentationImage(data)
    segm.info = {'detection_probability': prob[1:],
                 'labels': np.arange(1, kept.size + 1),
                 'areas': areas.astype(np.int64), 'corners': corners}
    return segm


def segment_probabilities(probs, threshold, n_pixels, *, connectivity=8,
                          mask=None, merge_fraction=0.5,
                          footprint_threshold=None, peak_image=None,
                          peak_margin=0.5):
    """
    Segment a deep-coloring probability cube into sources.

    Equivalent to `classify_pixels` at the footprint threshold followed by
    `label_sources` with the detection threshold.

    Parameters
    ----------
    probs : 3D `~numpy.ndarray`
        Probabilities ``(n_colors + 1, ny, nx)``, channel 0 = background.
    threshold : float
        Minimum foreground probability of a source pixel, in [0, 1].
    n_pixels : int
        Minimum number of connected pixels of a source.
    connectivity : {4, 8}, optional
        Pixel connectivity.
    mask : 2D bool `~numpy.ndarray`, optional
        True for pixels that can never belong to a source.
    merge_fraction : float, optional
        See `merge_flicker`.
    footprint_threshold : float or None, optional
        Foreground probability that delimits the footprints (see
        `detection_levels`); None: the detection threshold itself.
    peak_image : 2D `~numpy.ndarray`, optional
        Smoothed image in noise units for `merge_peakless` (None: no
        peak merge).
    peak_margin : float, optional
        See `merge_peakless`.

    Returns
    -------
    segm : `~photutils.segmentation.SegmentationImage` or None
        The sources (None and a `~photutils.utils.exceptions.NoDetectionsWarning` if none).
    """
    segm = _segment_probabilities(probs, threshold, n_pixels,
                                  connectivity=connectivity, mask=mask,
                                  merge_fraction=merge_fraction,
                                  footprint_threshold=footprint_threshold,
                                  peak_image=peak_image, peak_margin=peak_margin)
    if segm is None:
        warn_no_detections(stacklevel=2)
    return segm


def _segment_probabilities(probs, threshold, n_pixels, *, connectivity=8,
                           mask=None, merge_fraction=0.5,
                           footprint_threshold=None, peak_image=None,
                           peak_margin=0.5):
    """`segment_probabilities` without the warning (None when empty)."""
    low, detect = detection_levels(threshold, footprint_threshold)
    colour, p_fg = classify_pixels(probs, low, mask)
    return _label_sources(colour, p_fg, n_pixels, connectivity=connectivity,
                          merge_fraction=merge_fraction, threshold=detect,
                          peak_image=peak_image, peak_margin=peak_margin)


def _boundary_maxima(seg, image, n):
    """Max of ``image`` over each segment's pixels that touch another segment."""
    ny, nx = seg.shape
    keys, vals = [], []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        ys_a = slice(0, ny - dy)
        ys_b = slice(dy, ny)
        xs_a = slice(max(0, -dx), nx - max(0, dx))
        xs_b = slice(max(0, dx), nx - max(0, -dx))
        a, b = seg[ys_a, xs_a], seg[ys_b, xs_b]
        m = (a > 0) & (b > 0) & (a != b)
        if not m.any():
            continue
        la, lb = a[m].astype(np.int64), b[m].astype(np.int64)
        keys += [la * (n + 1) + lb, lb * (n + 1) + la]
        vals += [image[ys_a, xs_a][m], image[ys_b, xs_b][m]]
    if not keys:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    keys = np.concatenate(keys)
    vals = np.concatenate(vals).astype(float)
    uk, inv = np.unique(keys, return_inverse=True)
    bmax = np.full(uk.size, -np.inf)
    np.maximum.at(bmax, inv, vals)
    return uk // (n + 1), uk % (n + 1), bmax


def merge_peakless(segm, image, *, margin=0.5):
    """
    Merge the segments that have no peak of their own into a neighbour.

    A segment whose brightest pixel (in ``image``, within ``margin``) lies
    on its boundary with a brighter touching segment has no peak of its
    own: it is a piece of that neighbour (a ring of another colour around
    a bright star's core, a rim along a galaxy's edge), not a source, and
    is merged into it. Two touching sources that each have a peak, however
    faint one is (a neighbour on a bright star's wing), are left apart:
    this is SExtractor's condition for a deblended component, applied to
    the pieces of the network's colouring. Chains are followed, so a ring
    around a ring ends in the segment with the peak.

    Parameters
    ----------
    segm : `~photutils.segmentation.SegmentationImage` or 2D int array
        The segments (labels > 0).
    image : 2D `~numpy.ndarray`
        The image in units of its noise, smoothed (e.g. the normalised
        network input convolved with a Gaussian of 1 pixel).
    margin : float, optional
        A segment's maximum must exceed the maximum of its boundary with a
        brighter neighbour by more than this (image units) to count as a
        peak of its own.

    Returns
    -------
    labels : 2D `~numpy.ndarray` of int
        The merged labels (merged segments take their neighbour's label;
        labels are not renumbered).
    """
    seg = np.asarray(getattr(segm, 'data', segm))
    image = np.asarray(image)
    if image.shape != seg.shape:
        msg = f'image must have the shape of segm {seg.shape}, got {image.shape}'
        raise ValueError(msg)
    n = int(seg.max(initial=0))
    if n < 2:
        return seg
    sel = seg > 0
    smax = np.full(n + 1, -np.inf)
    np.maximum.at(smax, seg[sel], np.nan_to_num(image[sel], nan=-np.inf))
    a, b, bmax = _boundary_maxima(seg, np.nan_to_num(image, nan=-np.inf), n)
    root = _peakless_roots(n, smax, a, b, bmax, margin)
    return seg if root is None else root[seg]


def _peakless_roots(n, smax, a, b, bmax, margin):
    """
    The decision of `merge_peakless` from per-segment summaries.

    ``smax[k]`` is segment k's maximum; ``bmax[i]`` the maximum over the
    pixels of segment ``a[i]`` that touch segment ``b[i]``. Returns the
    label each segment is merged into (itself if none), or None when no
    segment merges. Shared with the chunked `astro_deepcolor.batch.mosaic`
    version, which gathers the same maxima chunk by chunk.
    """
    ok = (bmax >= smax[a] - margin) & (smax[b] > smax[a])
    if not ok.any():
        return None
    a, b, v = a[ok], b[ok], bmax[ok]
    order = np.lexsort((-v, a))      # per segment, its brightest boundary first
    first = np.ones(order.size, bool)
    first[1:] = a[order][1:] != a[order][:-1]
    root = np.arange(n + 1)
    root[a[order][first]] = b[order][first]
    while True:  # targets are strictly brighter: no cycles
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    return root


def warn_no_detections(stacklevel=2):
    """
    Emit the `~photutils.utils.exceptions.NoDetectionsWarning`.

    The one message of every public detection entry point (photutils'
    wording).

    Parameters
    ----------
    stacklevel : int, optional
        As for `warnings.warn` called where this is called: 2 names the
        caller of that function.
    """
    warnings.warn(_NO_DETECTIONS, NoDetectionsWarning,
                  stacklevel=stacklevel + 1)
