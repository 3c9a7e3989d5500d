# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Training data: simulated crops with label maps and halo pairs, on the fly.

Each training sample comes from one image of a dataset recipe's *train*
split (``astro_deepcolor.simulation``): the full recipe image is simulated
(a 512 x 512 image takes ~0.1 s), preprocessed exactly as at inference
(`~astro_deepcolor.preprocessing.estimate_background` with the model's
mesh size, then `~astro_deepcolor.preprocessing.normalize`), and
``crops_per_image`` random crops are cut from it, each randomly flipped
and rotated by a multiple of 90 degrees.

Labels: the truth footprints (``sim.segmentation``). Contaminant pixels
are background; each crop also carries the mask of the background pixels
a contaminant changed (``sim.contaminants``), which the loss may weight
up (``contaminant_weight``), and a fraction ``hard_fraction`` of the crops
is centred on such a pixel (hard-negative sampling: a trail or a fringe
covers a small part of an image, so random crops rarely show the network
the artefacts it must learn to reject). A fraction ``blend_fraction`` of
the crops is centred on a *hard source*: a source that touches another one
(``truth['blended']``, which includes the close pairs and groups injected
with ``blend_groups``, see `~astro_deepcolor.simulation.simulate_image`) or
whose footprint lies on a contaminant; these sources also weigh
``hard_source_weight`` times a normal source in the footprint term of the
loss (the per-pixel map ``weights`` of a crop). Without that, the network
learns to paint a close pair one colour and to suppress real sources on
fringes and nebulosity (most misses of the previous model were of these
two kinds). Sources with a true S/N below ``min_snr`` are marked
*ignored* (label -1): they are too faint to be detectable, so the network
is neither rewarded nor penalised for them. Halo pairs are computed on
the final (augmented, cropped) label map by `halo_pairs_from_labels`.

Reproducibility: sample ``i`` of the stream depends only on the base
seed and ``i`` (through `numpy.random.SeedSequence`), so a resumed run
sees exactly the data it would have seen, whatever the number of
DataLoader workers.
"""

import math

import numpy as np

from astro_deepcolor.preprocessing import estimate_background, normalize

__all__ = ['CropStream', 'border_pixels', 'collate', 'halo_pairs_from_labels', 'make_crops']

IGNORE = -1


def halo_pairs_from_labels(labels, radius):
    """
    Halo pairs of a label map, vectorised over sources.

    The halo of source k is its footprint dilated by a disk of ``radius``
    pixels, minus the footprint itself (so it may cover other sources).

    Parameters
    ----------
    labels : 2D `~numpy.ndarray` of int
        0 background, > 0 source label, < 0 ignored (no halo computed).
    radius : int
        Halo radius in pixels.

    Returns
    -------
    pixels : `~numpy.ndarray` of int64
        Flat (C-order) pixel indices, sorted by label then pixel.
    halo_labels : `~numpy.ndarray` of int64
        The label each halo pixel belongs to.

    Notes
    -----
    The nearest footprint pixel of any outside point is an edge pixel of
    the footprint (a pixel with a 4-neighbour outside it), so the dilation
    is the union of disks around edge pixels only.
    """
    labels = np.asarray(labels)
    radius = int(radius)
    if labels.ndim != 2:
        msg = f'labels must be 2D, got shape {labels.shape}'
        raise ValueError(msg)
    ny, nx = labels.shape
    c = labels
    pad = np.pad(labels, 1, constant_values=0)
    edge = (c > 0) & ((pad[:-2, 1:-1] != c) | (pad[2:, 1:-1] != c)
                      | (pad[1:-1, :-2] != c) | (pad[1:-1, 2:] != c))
    ey, ex = np.nonzero(edge)
    if ey.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    lab = labels[ey, ex].astype(np.int64)
    dy, dx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disk = dy**2 + dx**2 <= radius**2
    dy, dx = dy[disk], dx[disk]
    yy = ey[:, None] + dy[None, :]
    xx = ex[:, None] + dx[None, :]
    ok = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
    npix = ny * nx
    key = (lab[:, None] * npix + yy * nx + xx)[ok]
    key = np.unique(key)
    hl, hp = np.divmod(key, npix)
    keep = labels.ravel()[hp] != hl
    return hp[keep], hl[keep]


def _augment(arrays, k, flip):
    out = []
    for a in arrays:
        a = np.rot90(a, k)
        if flip:
            a = a[:, ::-1]
        out.append(np.ascontiguousarray(a))
    return out


def _hard_sources(sim, seg):
    """Labels of the truth sources that are blended or lie on a contaminant."""
    truth = sim.truth
    if not len(truth):
        return np.zeros(0, np.int64)
    labels = np.asarray(truth['label'], dtype=np.int64)
    hard = np.asarray(truth['blended'], dtype=bool).copy()
    flagged = np.asarray(sim.contaminants) > 0
    if flagged.any():
        on = np.bincount(np.asarray(sim.segmentation.data)[flagged].ravel(),
                         minlength=labels.max() + 1)
        hard |= on[labels] > 0
    hard &= np.isin(labels, seg[seg > 0])   # not ignored (too faint)
    return labels[hard]


def make_crops(sim, *, crop, n_crops, rng, min_snr=2.0, box_size=64,
               filter_size=3, augment=True, hard_fraction=0.0,
               blend_fraction=0.0, hard_source_weight=1.0):
    """
    Cut preprocessed, labelled training crops from one simulation.

    Parameters
    ----------
    sim : `~astro_deepcolor.simulation.SimulatedImage`
        The simulated image.
    crop : int
        Crop side in pixels (<= the image side).
    n_crops : int
        Number of crops.
    rng : `numpy.random.Generator`
        Random stream (crop positions and augmentation).
    min_snr : float, optional
        Sources with a lower true S/N are ignored by the loss.
    box_size, filter_size : int, optional
        Background estimator mesh and filter sizes.
    augment : bool, optional
        Random 90-degree rotations and flips.
    hard_fraction : float, optional
        Probability that a crop is centred on a random contaminated
        background pixel (when the image has any) instead of placed
        uniformly.
    blend_fraction : float, optional
        Probability that a crop is centred on a random hard source
        (blended, or on a contaminant) when the image has any.
    hard_source_weight : float, optional
        Weight of the hard sources' pixels in ``weights`` (others 1).

    Returns
    -------
    crops : list of tuple
        ``(image, labels, contaminated, weights)``: float32 (crop, crop)
        normalised image, int64 label map (0 background, > 0 source, -1
        ignored), bool mask of the background pixels changed by a
        contaminant, and float32 per-pixel source weight (the weight of
        the source a pixel belongs to; 0 elsewhere).
    """
    hard_fraction = float(hard_fraction)
    if not 0.0 <= hard_fraction <= 1.0:
        msg = f'hard_fraction must be in [0, 1], got {hard_fraction!r}'
        raise ValueError(msg)
    blend_fraction = float(blend_fraction)
    if not 0.0 <= blend_fraction <= 1.0:
        msg = f'blend_fraction must be in [0, 1], got {blend_fraction!r}'
        raise ValueError(msg)
    if not hard_fraction + blend_fraction <= 1.0:
        msg = (f'hard_fraction + blend_fraction must be <= 1, got '
               f'{hard_fraction!r} + {blend_fraction!r}')
        raise ValueError(msg)
    hard_source_weight = float(hard_source_weight)
    if not hard_source_weight >= 1.0:
        msg = f'hard_source_weight must be >= 1, got {hard_source_weight!r}'
        raise ValueError(msg)
    bkg, rms = estimate_background(sim.data, box_size=box_size,
                                   filter_size=filter_size)
    image = normalize(sim.data, bkg, rms)
    seg = np.asarray(sim.segmentation.data, dtype=np.int64)
    truth = sim.truth
    if len(truth):
        faint = np.asarray(truth['label'])[np.asarray(truth['snr']) < min_snr]
        if faint.size:
            lut = np.arange(seg.max() + 1, dtype=np.int64)
            lut[faint] = IGNORE
            seg = lut[seg]
    ny, nx = image.shape
    if crop > min(ny, nx):
        msg = f'crop ({crop}) is larger than the simulated image {image.shape}'
        raise ValueError(msg)
    contaminated = (np.asarray(sim.contaminants) > 0) & (seg == 0)
    hard_pix = np.flatnonzero(contaminated) if hard_fraction > 0 else []
    hard_src = _hard_sources(sim, seg)
    weight_lut = np.ones(max(int(seg.max(initial=0)), 0) + 1, np.float32)
    weight_lut[0] = 0.0
    weight_lut[hard_src] = hard_source_weight
    weights = np.where(seg > 0, weight_lut[np.maximum(seg, 0)], 0.0).astype(np.float32)
    if blend_fraction > 0 and hard_src.size:
        tl = np.asarray(sim.truth['label'])
        pos = np.searchsorted(tl, hard_src) if np.all(np.diff(tl) > 0) else None
        if pos is None:
            pos = np.array([np.flatnonzero(tl == h)[0] for h in hard_src])
        hard_xy = np.stack([np.asarray(sim.truth['x'])[pos],
                            np.asarray(sim.truth['y'])[pos]], axis=1)
    else:
        hard_xy = np.zeros((0, 2))
    crops = []
    for _ in range(n_crops):
        u = rng.random()
        if len(hard_pix) and u < hard_fraction:
            yc, xc = divmod(int(hard_pix[rng.integers(len(hard_pix))]), nx)
        elif len(hard_xy) and u < hard_fraction + blend_fraction:
            xc, yc = hard_xy[rng.integers(len(hard_xy))]
            # Off-centre by up to a quarter crop, so the network does not
            # learn that blends sit in the middle.
            xc = round(xc) + int(rng.integers(-crop // 4, crop // 4 + 1))
            yc = round(yc) + int(rng.integers(-crop // 4, crop // 4 + 1))
        else:
            yc = xc = None
        if yc is None:
            y0 = int(rng.integers(0, ny - crop + 1))
            x0 = int(rng.integers(0, nx - crop + 1))
        else:
            y0 = min(max(yc - crop // 2, 0), ny - crop)
            x0 = min(max(xc - crop // 2, 0), nx - crop)
        sl = (slice(y0, y0 + crop), slice(x0, x0 + crop))
        arrays = (image[sl], seg[sl], contaminated[sl], weights[sl])
        if augment:
            arrays = _augment(arrays, int(rng.integers(4)),
                              bool(rng.integers(2)))
        img, lab, con, wts = arrays
        crops.append((np.ascontiguousarray(img, dtype=np.float32),
                      np.ascontiguousarray(lab), np.ascontiguousarray(con),
                      np.ascontiguousarray(wts, dtype=np.float32)))
    return crops


def border_pixels(labels, width=2):
    """
    Source pixels within ``width`` pixels of another source's footprint.

    Parameters
    ----------
    labels : 2D `~numpy.ndarray` of int
        Label map (> 0 sources; 0 background and < 0 ignored are not
        sources).
    width : int, optional
        Distance in pixels (Chebyshev).

    Returns
    -------
    border : 2D `~numpy.ndarray` of bool
        True on the pixels of a source that have a pixel of another
        source within ``width`` pixels: where two neighbours meet, which
        is where the colours must differ.
    """
    from scipy import ndimage

    lab = np.asarray(labels)
    size = 2 * int(width) + 1
    src = lab > 0
    big = int(lab.max(initial=0)) + 1
    hi = ndimage.maximum_filter(np.where(src, lab, 0).astype(np.int64), size,
                                mode='constant', cval=0)
    lo = ndimage.minimum_filter(np.where(src, lab, big).astype(np.int64), size,
                                mode='constant', cval=big)
    return src & (((hi > 0) & (hi != lab)) | ((lo < big) & (lo != lab)))


def collate(samples, halo_radius, border_weight=1.0):
    """
    Stack samples into a batch with batch-unique source ids and halo pairs.

    Parameters
    ----------
    samples : list of tuple
        ``(image, labels)``, ``(image, labels, contaminated)`` or
        ``(image, labels, contaminated, weights)`` tuples of equal shape
        (see `make_crops`).
    halo_radius : int
        Halo radius in pixels.
    border_weight : float, optional
        Weight in the footprint term of a source pixel that borders
        another source (`border_pixels`), relative to its other pixels.

    Returns
    -------
    batch : dict of `numpy.ndarray`
        ``image`` (B, 1, H, W) float32, ``labels`` (B, H, W) int64 with
        ids offset so they are unique across the batch, ``halo_pix``
        (flat index into B*H*W) and ``halo_src`` (batch-unique id),
        ``contaminated`` (B, H, W) bool (all False for 2-tuples),
        ``source_weight`` (B, H, W) float32 (the weight of the source a
        pixel belongs to, 1 without ``weights``) and ``pixel_weight``
        (B, H, W) float32 (``border_weight`` on border pixels, else 1).
    """
    images, labels, hpix, hsrc, conts, swts, pwts = [], [], [], [], [], [], []
    offset = 0
    for i, (img, lab, *rest) in enumerate(samples):
        conts.append(rest[0] if rest else np.zeros(lab.shape, bool))
        swts.append(rest[1] if len(rest) > 1
                    else (lab > 0).astype(np.float32))
        pw = np.ones(lab.shape, np.float32)
        if border_weight != 1.0:
            pw[border_pixels(lab)] = border_weight
        pwts.append(pw)
        npix = lab.size
        pix, src = halo_pairs_from_labels(lab, halo_radius)
        lab = np.where(lab > 0, lab + offset, lab)
        hpix.append(pix + i * npix)
        hsrc.append(src + offset)
        offset = max(offset, int(lab.max(initial=0)))
        images.append(img)
        labels.append(lab)
    return {'image': np.stack(images)[:, None].astype(np.float32),
            'labels': np.stack(labels).astype(np.int64),
            'halo_pix': np.concatenate(hpix).astype(np.int64),
            'halo_src': np.concatenate(hsrc).astype(np.int64),
            'contaminated': np.stack(conts).astype(bool),
            'source_weight': np.stack(swts).astype(np.float32),
            'pixel_weight': np.stack(pwts).astype(np.float32)}


class CropStream:
    """
    Endless, reproducible stream of training crops from dataset recipes.

    Parameters
    ----------
    recipes : dict
        Recipe name (or `~astro_deepcolor.simulation.Recipe`) to sampling
        weight, e.g. ``{'clean': 0.5, 'contaminated': 0.5}``.
    crop : int
        Crop side (a multiple of the model's ``tile_multiple``).
    crops_per_image : int
        Crops cut from each simulated image.
    seed : int
        Base seed of the stream.
    start : int, optional
        Index of the first image (for resuming).
    split : str, optional
        Recipe split whose seed range is used (``'train'``).
    min_snr, hard_fraction, blend_fraction, hard_source_weight : float, optional
        See `make_crops`.
    blend_groups : float, optional
        Close pairs and small groups injected per megapixel (see
        `~astro_deepcolor.simulation.simulate_image`).
    box_size, filter_size : int, optional
        Background estimator settings.
    """

    def __init__(self, recipes, *, crop, crops_per_image, seed, start=0,
                 split='train', min_snr=2.0, box_size=64, filter_size=3,
                 hard_fraction=0.0, blend_fraction=0.0, hard_source_weight=1.0,
                 blend_groups=0.0):
        from astro_deepcolor.simulation import load_recipe

        if not recipes:
            msg = 'recipes must name at least one recipe'
            raise ValueError(msg)
        self.recipes = [load_recipe(r) for r in recipes]
        weights = np.array([float(w) for w in recipes.values()])
        if not (np.all(weights >= 0) and weights.sum() > 0):
            msg = f'recipe weights must be >= 0 and not all 0, got {weights}'
            raise ValueError(msg)
        self.weights = weights / weights.sum()
        self.crop = int(crop)
        self.crops_per_image = int(crops_per_image)
        self.seed = int(seed)
        self.start = int(start)
        self.split = split
        self.min_snr = float(min_snr)
        self.box_size = int(box_size)
        self.filter_size = int(filter_size)
        self.hard_fraction = float(hard_fraction)
        self.blend_fraction = float(blend_fraction)
        self.hard_source_weight = float(hard_source_weight)
        self.blend_groups = float(blend_groups)

    def image_crops(self, index):
        """
        Crops of image ``index`` of the stream.

        Parameters
        ----------
        index : int
            Image index in the stream.

        Returns
        -------
        crops : list of tuple
            See `make_crops`.
        """
        from astro_deepcolor.simulation import recipe_image

        rng = np.random.default_rng(np.random.SeedSequence([self.seed, index]))
        recipe = self.recipes[int(rng.choice(len(self.recipes), p=self.weights))]
        seeds = recipe.seeds(self.split)
        img_seed = seeds[int(rng.integers(len(seeds)))]
        sim = recipe_image(recipe, img_seed, blend_groups=self.blend_groups)
        return make_crops(sim, crop=self.crop, n_crops=self.crops_per_image,
                          rng=rng, min_snr=self.min_snr,
                          box_size=self.box_size, filter_size=self.filter_size,
                          hard_fraction=self.hard_fraction,
                          blend_fraction=self.blend_fraction,
                          hard_source_weight=self.hard_source_weight)

    def iter_images(self, worker=0, n_workers=1):
        """
        Yield the crops of images ``start + worker``, ``+ n_workers``, ...

        Parameters
        ----------
        worker, n_workers : int, optional
            This worker's index and the number of workers.

        Yields
        ------
        crops : list of tuple
            The crops of one image.
        """
        for index in range(self.start + worker, 2**62, n_workers):
            yield self.image_crops(index)


def _torch_dataset_class():
    import torch

    class _TorchCropStream(torch.utils.data.IterableDataset):
        """DataLoader adapter: one item = the crops of one image."""

        def __init__(self, stream):
            super().__init__()
            self.stream = stream

        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            if info is None:
                return self.stream.iter_images()
            return self.stream.iter_images(info.id, info.num_workers)

    return _TorchCropStream


def batches(stream, batch_size, halo_radius, *, num_workers=1, border_weight=1.0):
    """
    Yield collated batches from a `CropStream` through a DataLoader.

    Parameters
    ----------
    stream : `CropStream`
        The crop stream.
    batch_size : int
        Crops per batch (a multiple of ``stream.crops_per_image``).
    halo_radius : int
        Halo radius for `collate`.
    num_workers : int, optional
        DataLoader worker processes (0: in the main process).
    border_weight : float, optional
        See `collate`.

    Yields
    ------
    batch : dict of `torch.Tensor`
        See `collate`.
    """
    import torch

    per = stream.crops_per_image
    if batch_size % per:
        msg = (f'batch_size ({batch_size}) must be a multiple of '
               f'crops_per_image ({per})')
        raise ValueError(msg)
    n_images = batch_size // per

    def _collate(items):
        crops = [c for item in items for c in item]
        return {k: torch.from_numpy(v)
                for k, v in collate(crops, halo_radius, border_weight).items()}

    dataset = _torch_dataset_class()(stream)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=n_images, collate_fn=_collate,
        num_workers=num_workers, persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None)
    yield from loader


def images_needed(steps, batch_size, crops_per_image):
    """Number of stream images consumed by ``steps`` batches."""
    return steps * math.ceil(batch_size / crops_per_image)
