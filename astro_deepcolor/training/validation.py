# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Validation of a deep-coloring network during training (NumPy only).

A probability cube is turned into detections with the segmentation core of
inference (`astro_deepcolor.postprocessing.segment_probabilities`: a pixel
is foreground when ``1 - p_background >= min(threshold,
footprint_threshold)``, the model configuration's default footprint
level; its colour
is the most probable colour; connected components (8-connectivity) per
colour; colour-flicker repair; sources need ``n_pixels`` pixels at or
above ``threshold``);
centroid = flux-weighted barycentre. Without the flicker repair, a source
whose colour flickers counts as one match plus false positives, and the
score no longer ranks models as the benchmark does. The detections are
matched one-to-one to the truth with
`astro_deepcolor.evaluation.match_sources` (radius = 1 FWHM plus the
footprint-overlap rule) and scored with
`astro_deepcolor.evaluation.completeness_from_counts`, as the benchmark
harness does: completeness for the sources with S/N at or above the
harness's cut (``snr >= 5``) and contamination of the whole catalogue, at
each threshold of a sweep. The summary figure is the completeness at contamination <= 5 %
(the best threshold of the sweep meeting that contamination).

The full detection API (`astro_deepcolor.DeepColorSegmentation`, with
tiling) is what users get; this module is the light-weight version that
the trainer can run every few hundred steps on untiled images.
"""

import numpy as np
from scipy import ndimage

from astro_deepcolor.model.config import ModelConfig
from astro_deepcolor.postprocessing import _segment_probabilities

__all__ = ['ValidationSet', 'detections_from_probs', 'score_sweep',
           'summarize_sweep']

DEFAULT_THRESHOLDS = (*np.round(np.arange(0.1, 0.96, 0.05), 2).tolist(),
                      0.97, 0.98, 0.99)
#: Contamination limits of `summarize_sweep`'s ``completeness_at``.
CONTAMINATION_LIMITS = (0.05, 0.10, 0.20)
#: The footprint level of a model configuration that does not say.
DEFAULT_FOOTPRINT_THRESHOLD = ModelConfig().footprint_threshold


def detections_from_probs(probs, image, threshold, n_pixels=5,
                          footprint_threshold=DEFAULT_FOOTPRINT_THRESHOLD,
                          peak_image=None):
    """
    Segment a probability cube into sources.

    Parameters
    ----------
    probs : 3D `~numpy.ndarray`
        (n_colors + 1, ny, nx) probabilities, channel 0 the background.
    image : 2D `~numpy.ndarray`
        The normalised image (for the centroids).
    threshold : float
        Foreground probability threshold.
    n_pixels : int, optional
        Minimum number of pixels of a source.
    footprint_threshold : float or None, optional
        Footprint probability (default: `ModelConfig`'s).
    peak_image : 2D `~numpy.ndarray`, optional
        The image in noise units smoothed by a 1-pixel Gaussian: segments
        without a peak of their own are merged as the finder merges them
        (`~astro_deepcolor.postprocessing.merge_peakless`, margin 0.5).
        None: no such merge.

    Returns
    -------
    segm : 2D `~numpy.ndarray` of int
        Label map (0 background).
    xy : (N, 2) `~numpy.ndarray`
        Centroids ``(x, y)`` of labels ``1..N``.
    """
    seg = _segment_probabilities(probs, threshold, n_pixels,
                                 footprint_threshold=footprint_threshold,
                                 peak_image=peak_image)
    if seg is None:
        return np.zeros(probs.shape[1:], dtype=np.int32), np.zeros((0, 2))
    segm = np.asarray(seg.data, dtype=np.int32)
    n = int(segm.max())
    if n == 0:
        return segm, np.zeros((0, 2))
    w = np.clip(image, 0, None) + 1e-3
    idx = np.arange(1, n + 1)
    yc, xc = (np.asarray(ndimage.sum(w * g, segm, idx)) / np.asarray(ndimage.sum(w, segm, idx))
              for g in np.indices(segm.shape))
    return segm, np.column_stack([xc, yc])


def score_sweep(probs, image, truth, truth_segm, fwhm, *,
                thresholds=DEFAULT_THRESHOLDS, n_pixels=5, snr_min=None,
                footprint_threshold=DEFAULT_FOOTPRINT_THRESHOLD, peak_image=None):
    """
    Match detections to truth at each threshold.

    Parameters
    ----------
    probs : 3D `~numpy.ndarray`
        Probability cube.
    image : 2D `~numpy.ndarray`
        Normalised image.
    truth : `~astropy.table.QTable`
        Truth catalogue (``label``, ``x``, ``y``, ``snr``).
    truth_segm : `~photutils.segmentation.SegmentationImage`
        Truth footprints.
    fwhm : float
        PSF FWHM (pixels) for the matching radius.
    thresholds : sequence of float, optional
        Probability thresholds.
    n_pixels : int, optional
        Minimum source area.
    snr_min : float, optional
        Completeness is computed for truth sources with at least this S/N
        (default: the benchmark harness's ``SNR_MIN``).
    footprint_threshold : float or None, optional
        Footprint probability (see `detections_from_probs`).
    peak_image : 2D `~numpy.ndarray`, optional
        For the merge of segments without a peak (see
        `detections_from_probs`).

    Returns
    -------
    counts : `~numpy.ndarray`
        (n_thresholds, 4) integer counts: matched bright truth, bright
        truth, true-positive detections, detections.
    """
    from astropy.table import QTable
    from photutils.segmentation import SegmentationImage

    from astro_deepcolor.evaluation import match_sources
    from astro_deepcolor.evaluation.harness import SNR_MIN

    snr_min = SNR_MIN if snr_min is None else snr_min
    bright = np.asarray(truth['snr'], dtype=float) >= snr_min
    counts = []
    for t in thresholds:
        segm, xy = detections_from_probs(probs, image, t, n_pixels,
                                         footprint_threshold, peak_image)
        det = QTable({'x': xy[:, 0], 'y': xy[:, 1],
                      'label': np.arange(1, len(xy) + 1)})
        dseg = SegmentationImage(segm) if len(xy) else None
        m = match_sources(truth, det, truth_segmentation=truth_segm,
                          detection_segmentation=dseg, fwhm=fwhm)
        counts.append([int(np.count_nonzero(m.truth_matched & bright)),
                       int(bright.sum()), m.tp, m.n_detections])
    return np.array(counts, dtype=np.int64)


def summarize_sweep(counts, thresholds=DEFAULT_THRESHOLDS,
                    max_contamination=0.05):
    """
    Completeness/contamination per threshold and the best operating point.

    Parameters
    ----------
    counts : `~numpy.ndarray`
        Summed output of `score_sweep` over images.
    thresholds : sequence of float, optional
        The thresholds of the sweep.
    max_contamination : float, optional
        The contamination limit of the operating point.

    Returns
    -------
    summary : dict
        ``completeness`` and ``contamination`` lists, and
        ``best_completeness`` / ``best_threshold`` /
        ``best_contamination`` at contamination <= ``max_contamination``
        (completeness 0 and threshold None if no threshold qualifies),
        ``completeness_at``: the best completeness at each contamination
        limit of `CONTAMINATION_LIMITS` (0 where none qualifies), and
        ``score``, their mean: the trainer's model-selection figure, which
        still ranks models that never reach 5 % contamination.
    """
    from astro_deepcolor.evaluation import completeness_from_counts

    counts = np.asarray(counts, dtype=float)
    matched, bright, tp, n_det = counts.T
    comp = np.nan_to_num(completeness_from_counts(
        matched, np.zeros_like(matched), bright - matched)[0], nan=0.0)
    cont = completeness_from_counts(tp, n_det - tp, np.zeros_like(tp))[1]
    ok = cont <= max_contamination + 1e-9
    out = {'thresholds': [float(t) for t in thresholds],
           'completeness': comp.round(4).tolist(),
           'contamination': cont.round(4).tolist(),
           'best_completeness': 0.0, 'best_threshold': None,
           'best_contamination': None}
    at = {}
    for lim in CONTAMINATION_LIMITS:
        good = (cont <= lim + 1e-9) & (counts[:, 3] > 0)
        at[f'{round(lim * 100)}pc'] = float(comp[good].max()) if good.any() else 0.0
    out['completeness_at'] = at
    out['score'] = float(np.mean(list(at.values())))
    if ok.any():
        i = int(np.flatnonzero(ok)[np.argmax(comp[ok])])
        out.update(best_completeness=float(comp[i]),
                   best_threshold=float(thresholds[i]),
                   best_contamination=float(cont[i]))
    return out


class ValidationSet:
    """
    Fixed validation images of dataset recipes, preprocessed once.

    Parameters
    ----------
    recipes : iterable of str
        Recipe names (their ``validation`` split is used).
    n_images : int
        Images per recipe (the first ones of the split: fixed seeds).
    box_size, filter_size : int, optional
        Background estimator settings (the model's).
    footprint_threshold : float or None, optional
        Footprint probability of the post-processing (the model's).
    """

    def __init__(self, recipes, n_images, *, box_size=64, filter_size=3,
                 footprint_threshold=DEFAULT_FOOTPRINT_THRESHOLD):
        from astro_deepcolor.inference.finder import smooth_peak_image
        from astro_deepcolor.preprocessing import estimate_background, normalize
        from astro_deepcolor.simulation import iter_recipe_images

        self.footprint_threshold = footprint_threshold
        self.items = []
        # the finder's peak image (noise units, 1-pixel Gaussian), so that
        # validation merges segments without a peak as detection does
        self.peaks = []
        for name in recipes:
            for sim in iter_recipe_images(name, 'validation', n_images=n_images):
                bkg, rms = estimate_background(sim.data, box_size=box_size,
                                               filter_size=filter_size)
                image = normalize(sim.data, bkg, rms)
                self.items.append((str(name), image, sim.truth,
                                   sim.segmentation, sim.fwhm))
                self.peaks.append(smooth_peak_image(image))

    def evaluate(self, predict, thresholds=DEFAULT_THRESHOLDS, n_pixels=5):
        """
        Score a predictor on every image, per recipe.

        Parameters
        ----------
        predict : callable
            ``predict(image) -> probs`` for one normalised 2D image.
        thresholds : sequence of float, optional
            Probability thresholds.
        n_pixels : int, optional
            Minimum source area.

        Returns
        -------
        results : dict
            Recipe name to `summarize_sweep` output.
        """
        sums = {}
        for (name, image, truth, tseg, fwhm), peak in zip(self.items, self.peaks,
                                                          strict=True):
            probs = predict(image)
            c = score_sweep(probs, image, truth, tseg, fwhm,
                            thresholds=thresholds, n_pixels=n_pixels,
                            footprint_threshold=self.footprint_threshold,
                            peak_image=peak)
            sums[name] = sums.get(name, 0) + c
        return {name: summarize_sweep(c, thresholds) for name, c in sums.items()}
