# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The completeness/contamination benchmark harness.

For each regime (``'clean'``, ``'contaminated'``), the images of the
dataset recipe's test split (fixed seeds) are run through every detector
over its threshold sweep, each detection set is matched to the truth with
`~astro_deepcolor.evaluation.match_sources`, and per-image counts are kept
so that curves, summary numbers and bootstrap errors (resampling images)
can be computed afterwards. Sweeps (the benchmark protocol):

* CNN: probability every 0.02 in [0, 1], from one network pass per image
  (``DeepColorSegmentation.predict`` then ``.segment(probs, threshold)``);
* sep, photutils, SExtractor: every 0.25 sigma in [0.25, 10], the
  background computed once per image where the library allows;
* NoiseChisel: its own ``(qthresh, snquant)`` grid.

The grids draw the curves. The summary's "completeness at x %
contamination" is then measured at x %: wherever a detector's pooled
contamination crosses a reported level between two grid points, the
threshold is refined inside that bracket (`refine_crossing`: each round
evaluates three evenly spaced thresholds inside the bracket, two bisection
steps in one pass over the images, and keeps the narrowest bracket), for
the CNN and the classical detectors alike (not for NoiseChisel's 2D grid).
The refined points are added to the curves (``refined`` column). At each
detector's operating point the matched pairs' positions and fluxes are
kept and compared with the truth (`~astro_deepcolor.evaluation.metrics`).

The outputs (ECSV tables, PNG plots, an HTML report) are written by
`astro_deepcolor.evaluation.report`.
"""

import dataclasses
import time
import warnings

import numpy as np
from astropy.table import QTable, vstack

from .matching import match_sources
from .metrics import (
    NO_CONTAMINANT,
    close_pairs,
    completeness_from_counts,
    false_positives_by_class,
)

__all__ = [
    'PROB_SWEEP',
    'SIGMA_SWEEP',
    'BenchmarkResult',
    'astrometry_photometry',
    'available_detectors',
    'make_detector',
    'merge_results',
    'refine_bracket',
    'refine_crossing',
    'run_sweeps',
    'sourcextractor_model_for',
    'summarize',
]

#: CNN probability thresholds of the full benchmark (0 is not a threshold:
#: it would make the whole image one source, and the finder refuses it).
PROB_SWEEP = np.round(np.arange(0.02, 1.0 + 1e-9, 0.02), 2)
#: Sigma thresholds of sep, photutils and SExtractor in the full benchmark.
SIGMA_SWEEP = np.round(np.arange(0.25, 10.0 + 1e-9, 0.25), 2)
#: Coarse sweeps of the quick (smoke-test) mode.
QUICK_PROB_SWEEP = np.round(np.arange(0.1, 1.0, 0.2), 2)
QUICK_SIGMA_SWEEP = np.array([0.5, 1.5, 3.0, 5.0, 10.0])
#: Contamination levels of the summary table.
CONTAMINATION_LEVELS = (0.01, 0.05, 0.10, 0.20, 0.50)
#: Contamination that defines each detector's operating point.
OPERATING_CONTAMINATION = 0.05
#: Signal-to-noise cut of the "bright" truth subset.
SNR_MIN = 5.0
#: Refinement rounds of the full benchmark and of the quick mode.
REFINE_ROUNDS = 2
QUICK_REFINE_ROUNDS = 1
#: Thresholds evaluated inside a bracket per refinement round.
REFINE_POINTS = 3
#: S/N bins of the position errors, magnitude bins of the flux ratios.
SNR_BINS = (1.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1e3, 1e5)
MAG_BINS = tuple(np.arange(14.0, 28.01, 1.0))
#: Detector names in plotting order.
CNN_DETECTORS = ('cnn', 'cnn_flips', 'cnn_sourcextractor')
DETECTOR_ORDER = ('cnn', 'cnn_flips', 'cnn_sourcextractor', 'sep', 'sep_matched', 'photutils',
                  'sextractor', 'noisechisel')


def refine_bracket(lo, hi, thresholds, contamination, level):
    """
    Narrow the bracket of a contamination crossing from points inside it.

    Contamination falls as the threshold rises. The new upper end is the
    lowest evaluated threshold whose contamination is at most ``level``;
    the new lower end the highest one below it whose contamination is
    above ``level``.

    Parameters
    ----------
    lo, hi : float
        Current bracket: contamination above ``level`` at ``lo``, at most
        ``level`` at ``hi``.
    thresholds : 1D array-like
        Thresholds evaluated (those outside ``(lo, hi)`` are ignored).
    contamination : 1D array-like
        Contamination at each of them (NaN: not measured, ignored).
    level : float
        The contamination level.

    Returns
    -------
    lo, hi : float
        The narrowed bracket.
    """
    t = np.asarray(thresholds, dtype=float)
    c = np.asarray(contamination, dtype=float)
    if t.shape != c.shape:
        msg = (f'thresholds and contamination must have the same shape, '
               f'got {t.shape} and {c.shape}')
        raise ValueError(msg)
    order = np.argsort(t)
    t, c = t[order], c[order]
    inside = (t > lo) & (t < hi) & np.isfinite(c)
    t, c = t[inside], c[inside]
    below = c <= level
    if below.any():
        hi = float(t[below][0])
    above = (c > level) & (t < hi)
    if above.any():
        lo = float(t[above][-1])
    return float(lo), float(hi)


def _interior(lo, hi, n_points):
    return [round(float(v), 6) for v in
            np.linspace(lo, hi, n_points + 2)[1:-1]]


def refine_crossing(evaluate, lo, hi, level, *, n_rounds=REFINE_ROUNDS,
                    n_points=REFINE_POINTS):
    """
    Locate where a falling contamination curve crosses a level.

    Each round evaluates ``n_points`` evenly spaced thresholds inside the
    bracket and keeps the narrowest bracket (`refine_bracket`), so the
    bracket shrinks by ``n_points + 1`` per round (``n_points=1`` is
    bisection; the default 3 is two bisection steps per round).

    Parameters
    ----------
    evaluate : callable
        ``evaluate(thresholds) -> contaminations`` for a list of
        thresholds (one pass over the images in the benchmark).
    lo, hi : float
        Bracketing thresholds: contamination above ``level`` at ``lo``, at
        most ``level`` at ``hi`` (e.g. two neighbouring grid points).
    level : float
        Contamination level.
    n_rounds : int, optional
        Refinement rounds.
    n_points : int, optional
        Thresholds evaluated per round.

    Returns
    -------
    lo, hi : float
        The final bracket; ``hi`` is the measured operating point (the
        lowest threshold found with contamination at most ``level``).

    Examples
    --------
    >>> from astro_deepcolor.evaluation.harness import refine_crossing
    >>> def contamination(thresholds):  # crosses 5 % at 0.8737
    ...     return [0.9237 - t for t in thresholds]
    >>> lo, hi = refine_crossing(contamination, 0.86, 0.88, 0.05)
    >>> round(lo, 5), round(hi, 5)
    (0.8725, 0.87375)
    """
    lo, hi = float(lo), float(hi)
    if not lo < hi:
        msg = f'lo must be below hi, got lo={lo!r} and hi={hi!r}'
        raise ValueError(msg)
    for _ in range(int(n_rounds)):
        points = _interior(lo, hi, n_points)
        lo, hi = refine_bracket(lo, hi, points, evaluate(points), level)
    return lo, hi


def _detector_classes():
    from astro_deepcolor.baselines import DETECTORS, DeepColorDetector, SepDetector
    from astro_deepcolor.baselines.deepcolor import DeepColorFlipsDetector
    from astro_deepcolor.baselines.sourcextractor_onnx import SourceXtractorCNNDetector

    return {'cnn': DeepColorDetector, 'cnn_flips': DeepColorFlipsDetector,
            'cnn_sourcextractor': SourceXtractorCNNDetector,
            **DETECTORS, 'sep_matched': SepDetector}


def __getattr__(name):
    # The CNN adapter moved to astro_deepcolor.baselines, beside the other
    # detector adapters; the old name keeps working.
    if name == 'DeepColorDetector':
        from astro_deepcolor.baselines import DeepColorDetector

        return DeepColorDetector
    msg = f'module {__name__!r} has no attribute {name!r}'
    raise AttributeError(msg)


def sourcextractor_model_for(model=None):
    """
    The SourceXtractor++-form model that goes with a CNN model file.

    Parameters
    ----------
    model : str or `~pathlib.Path`, optional
        The CNN model (``astro_deepcolor`` form). None: the shipped one.

    Returns
    -------
    path : `~pathlib.Path`
        The shipped ``deepcolor_default_sourcextractor.onnx`` for None,
        else ``<stem>_sourcextractor.onnx`` beside ``model`` (the name the
        shipped pair uses), which may not exist: the ``cnn_sourcextractor``
        detector then does not run, rather than run another model than the
        one benchmarked.
    """
    from pathlib import Path

    from astro_deepcolor.baselines.sourcextractor_onnx import (
        DEFAULT_SOURCEXTRACTOR_MODEL,
    )

    if model is None:
        return DEFAULT_SOURCEXTRACTOR_MODEL
    model = Path(model)
    return model.with_name(f'{model.stem}_sourcextractor.onnx')


def available_detectors(names=None, *, model=None):
    """
    Split detector names into runnable ones and skipped ones.

    Parameters
    ----------
    names : iterable of str, optional
        Requested detectors (default: all known).
    model : str, optional
        CNN model file (default: the shipped model).

    Returns
    -------
    run : list of str
        Detectors that can run here.
    skipped : dict
        Name -> reason for the others.
    """
    classes = _detector_classes()
    names = list(DETECTOR_ORDER) if names is None else list(names)
    run, skipped = [], {}
    for name in names:
        if name not in classes:
            msg = (f'detectors must be among {sorted(classes)}, got '
                   f'{name!r}')
            raise ValueError(msg)
        if name in ('cnn', 'cnn_flips'):
            reason = classes[name].unavailable_reason(model)
        elif name == 'cnn_sourcextractor':
            reason = classes[name].unavailable_reason(sourcextractor_model_for(model))
        else:
            reason = classes[name].unavailable_reason()
        if reason is None:
            run.append(name)
        else:
            skipped[name] = reason
    return run, skipped


def make_detector(name, fwhm, *, model=None):
    """
    Build a detector configured as in the benchmark.

    Parameters
    ----------
    name : str
        ``'cnn'``, ``'sep'``, ``'sep_matched'``, ``'photutils'``,
        ``'sextractor'`` or ``'noisechisel'``.
    fwhm : float
        PSF FWHM of the image, pixels.
    model : str, optional
        CNN model file (default: the shipped model); ``cnn_sourcextractor``
        runs its SourceXtractor++-form sibling (`sourcextractor_model_for`).

    Returns
    -------
    detector : object
        With ``sweep(data, thresholds, mask=None)``.

    Notes
    -----
    Library defaults throughout, with a Gaussian filter matched to the
    image FWHM. ``'sep'`` filters and thresholds as SExtractor does (so
    their sigma thresholds mean the same); ``'sep_matched'`` is sep with
    ``filter_type='matched'``, which thresholds the matched-filter S/N (a
    stronger classical detector, included so the CNN is not only compared
    with SExtractor-style thresholding).
    """
    cls = _detector_classes()[name]
    if name == 'sep_matched':
        return cls(fwhm=fwhm, filter_type='matched')
    if name in ('cnn', 'cnn_flips'):
        return cls(fwhm=fwhm, model=model)
    if name == 'cnn_sourcextractor':
        return cls(fwhm=fwhm, model=sourcextractor_model_for(model))
    return cls(fwhm=fwhm)


def thresholds_for(name, quick=False):
    """
    The sweep of a detector.

    Parameters
    ----------
    name : str
        Detector name.
    quick : bool, optional
        Coarse sweep of the smoke test.

    Returns
    -------
    thresholds : list
        Floats, or ``(qthresh, snquant)`` pairs for NoiseChisel.
    """
    if name in CNN_DETECTORS:
        return list(QUICK_PROB_SWEEP if quick else PROB_SWEEP)
    if name == 'noisechisel':
        from astro_deepcolor.baselines import NoiseChiselDetector

        grid = NoiseChiselDetector.default_sweep()
        return grid[1::4] if quick else grid
    return list(QUICK_SIGMA_SWEEP if quick else SIGMA_SWEEP)


def _threshold_label(t):
    if np.ndim(t) == 0:
        return f'{float(t):g}'
    return 'q={:g},sn={:g}'.format(*t)


@dataclasses.dataclass
class _Record:
    """Per-image, per-threshold counts of one detector in one regime."""

    thresholds: list
    tp: list = dataclasses.field(default_factory=list)
    fp: list = dataclasses.field(default_factory=list)
    fn: list = dataclasses.field(default_factory=list)
    tp_bright: list = dataclasses.field(default_factory=list)
    n_bright: list = dataclasses.field(default_factory=list)
    failed: list = dataclasses.field(default_factory=list)
    deblend_ok: list = dataclasses.field(default_factory=list)
    n_pairs: list = dataclasses.field(default_factory=list)
    fp_class: list = dataclasses.field(default_factory=list)
    matched: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    pixels: int = 0
    refined: list = dataclasses.field(default_factory=list)
    details: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if len(self.refined) != len(self.thresholds):
            self.refined = [False] * len(self.thresholds)

    def __setstate__(self, state):  # raw results pickled before refinement
        state.setdefault('refined', [False] * len(state['thresholds']))
        state.setdefault('details', {})
        self.__dict__.update(state)


@dataclasses.dataclass
class BenchmarkResult:
    """
    Everything measured by `run_sweeps`.

    Attributes
    ----------
    records : dict
        ``(regime, detector)`` -> per-image counts.
    truth : dict
        regime -> concatenated truth table (with an ``image`` column).
    classes : list of str
        Contaminant classes, then ``'none'``.
    skipped : dict
        Detector -> reason it was not run.
    examples : dict
        regime -> data for the example panels.
    meta : dict
        Run settings.
    pairs : dict
        regime -> (K, 2) row indices into ``truth[regime]`` of the close
        pairs (the deblending test set).
    """

    records: dict
    truth: dict
    classes: list
    skipped: dict
    examples: dict
    meta: dict
    pairs: dict = dataclasses.field(default_factory=dict)


def _simulate(regime, seed, shape):
    from astro_deepcolor.simulation import load_recipe, simulate_image

    params = load_recipe(regime).image_params(seed)
    if shape is not None:
        params['shape'] = tuple(shape)
    return simulate_image(seed=seed, **params)


def _process_image(task):
    """Simulate one image and run every detector's sweep on it.

    ``task['thresholds']`` maps detector -> thresholds (None: the protocol
    grid); with ``task['details']`` the matched pairs' positions and
    fluxes are returned too (refinement passes).
    """
    regime, index, seed, shape = (task['regime'], task['index'], task['seed'],
                                  task['shape'])
    names, quick, snr_min, model = (task['names'], task['quick'],
                                    task['snr_min'], task['model'])
    keep_examples = task.get('keep_examples', ())
    wanted = task.get('thresholds') or {}
    details = task.get('details', False)
    from astro_deepcolor.simulation import CONTAMINANT_FLAGS

    from .metrics import match_offsets

    flags = dict(CONTAMINANT_FLAGS)
    classes = [*flags, NO_CONTAMINANT]
    sim = _simulate(regime, seed, shape)
    truth = QTable(sim.truth, copy=True)
    truth.meta = {}
    fwhm = float(sim.fwhm)
    bright = np.asarray(truth['snr'], float) >= snr_min
    pairs = close_pairs(truth, fwhm=fwhm, truth_segmentation=sim.segmentation)
    truth['image'] = np.full(len(truth), index)
    truth['seed'] = np.full(len(truth), seed)
    example = None
    if index == 0 and keep_examples:
        example = {'data': np.asarray(sim.data), 'truth_seg': sim.segmentation,
                   'truth': truth, 'fwhm': fwhm,
                   'contaminants': np.asarray(sim.contaminants),
                   'detections': {}}
    rows = {}
    for name in names:
        det = make_detector(name, fwhm, model=model)
        row = {k: [] for k in ('tp', 'fp', 'fn', 'tp_bright', 'failed',
                               'deblend_ok', 'fp_class', 'matched',
                               'details')}
        thresholds = wanted.get(name)
        if thresholds is None:
            thresholds = thresholds_for(name, quick)
        row['thresholds'] = list(thresholds)
        t0 = time.perf_counter()
        for t, segm, table in det.sweep(sim.data, thresholds):
            if table is None:
                row['failed'].append(True)
                for k in ('tp', 'fp', 'fn', 'tp_bright', 'deblend_ok'):
                    row[k].append(0)
                row['fp_class'].append(np.zeros(len(classes), int))
                row['matched'].append(np.zeros(len(truth), bool))
                row['details'].append(None)
                continue
            m = match_sources(truth, table, truth_segmentation=sim.segmentation,
                              detection_segmentation=segm, fwhm=fwhm)
            row['failed'].append(False)
            row['tp'].append(m.tp)
            row['fp'].append(m.fp)
            row['fn'].append(m.fn)
            row['tp_bright'].append(int(m.truth_matched[bright].sum()))
            row['deblend_ok'].append(
                int(m.truth_matched[pairs].all(axis=1).sum()) if len(pairs)
                else 0)
            counts = false_positives_by_class(m, table, sim.contaminants, flags,
                                              detection_segmentation=segm)
            row['fp_class'].append(np.array([counts[c] for c in classes]))
            row['matched'].append(m.truth_matched)
            if details:
                off = match_offsets(m, truth, table)
                row['details'].append({
                    'truth_index': np.asarray(off['truth_index'], np.int32),
                    'dx': np.asarray(off['dx'], np.float32),
                    'dy': np.asarray(off['dy'], np.float32),
                    'flux': np.asarray(off['flux'], np.float32)})
            else:
                row['details'].append(None)
            if example is not None and name in keep_examples:
                example['detections'].setdefault(name, {})[
                    _threshold_label(t)] = (segm, table)
        row['seconds'] = time.perf_counter() - t0
        row['n_bright'] = int(bright.sum())
        row['n_pairs'] = len(pairs)
        row['pixels'] = int(sim.data.size)
        rows[name] = row
    return truth, example, rows, pairs


def _add_pass(records, regime, results, first):
    """Merge one pass over the images into the records.

    ``first``: the grid pass (one entry per image is created); later
    passes append their thresholds to every image's entry. A threshold
    already in a record only adds its details.
    """
    truths, examples, pair_list = [], {}, []
    known = {name: {_threshold_label(t) for t in rec.thresholds}
             for (reg, name), rec in records.items() if reg == regime}
    n_before = {name: len(rec.thresholds)
                for (reg, name), rec in records.items() if reg == regime}
    for i, (truth, example, rows, pairs) in enumerate(results):
        truths.append(truth)
        pair_list.append(pairs)
        if example is not None:
            examples[regime] = example
        for name, row in rows.items():
            labels = [_threshold_label(t) for t in row['thresholds']]
            if first:
                rec = records.setdefault((regime, name),
                                         _Record(thresholds=row['thresholds']))
                for k in ('tp', 'fp', 'fn', 'tp_bright', 'failed',
                          'deblend_ok', 'n_bright', 'n_pairs'):
                    getattr(rec, k).append(row[k])
                rec.fp_class.append(np.array(row['fp_class']))
                rec.matched.append(np.array(row['matched']).reshape(
                    len(rec.thresholds), len(truth)))
                rec.seconds += row['seconds']
                rec.pixels += row['pixels']
            else:
                rec = records[(regime, name)]
                new = [j for j, lab in enumerate(labels)
                       if lab not in known[name]]
                if i == 0:
                    rec.thresholds = [*rec.thresholds,
                                      *(row['thresholds'][j] for j in new)]
                    rec.refined = [*rec.refined, *(True for _ in new)]
                for k in ('tp', 'fp', 'fn', 'tp_bright', 'failed',
                          'deblend_ok'):
                    getattr(rec, k)[i] = [*getattr(rec, k)[i],
                                          *(row[k][j] for j in new)]
                if new:
                    rec.fp_class[i] = np.concatenate(
                        [np.asarray(rec.fp_class[i]).reshape(
                            n_before[name], len(row['fp_class'][0])),
                         np.array([row['fp_class'][j] for j in new])])
                    rec.matched[i] = np.concatenate(
                        [np.asarray(rec.matched[i]).reshape(
                            n_before[name], len(truth)),
                         np.array([row['matched'][j] for j in new]).reshape(
                             len(new), len(truth))])
            for lab, det in zip(labels, row['details'], strict=True):
                if det is not None:
                    rec.details.setdefault(lab, [None] * len(rec.tp))[i] = det
    return truths, examples, pair_list


def _pooled_curve(rec):
    """Pooled completeness and contamination (NaN without detections)."""
    tp, fp, fn, failed = _curve_counts(rec)
    comp, cont = completeness_from_counts(tp, fp, fn)
    comp = np.where(failed, np.nan, comp)
    cont = np.where(failed | (tp + fp == 0), np.nan, cont)
    return comp, cont, tp


def _operating_index(comp, cont, tp, level=OPERATING_CONTAMINATION):
    """Best point at <= level, else the cleanest point with detections."""
    _, j = _best_at(comp, cont, level)
    if j < 0:
        reached = np.isfinite(cont) & (tp > 0)
        j = (int(np.flatnonzero(reached)[np.nanargmin(cont[reached])])
             if reached.any() else 0)
    return j


def _brackets(rec, levels=CONTAMINATION_LEVELS):
    """Level -> (lo, hi) grid thresholds around each crossing."""
    comp, cont, _ = _pooled_curve(rec)
    thr = np.asarray(rec.thresholds, float)
    order = np.argsort(thr)
    out = {}
    for level in levels:
        _, j = _best_at(comp, cont, level)
        if j < 0:
            continue
        k = int(np.flatnonzero(order == j)[0])
        if k == 0:
            continue
        below = order[k - 1]
        if np.isfinite(cont[below]) and cont[below] > level:
            out[level] = (float(thr[below]), float(thr[j]))
    return out


def _refine_records(records, regime, run_pass, names, n_rounds):
    """Refinement passes: bisect every crossing, keep operating details."""
    scalar = [n for n in names if n != 'noisechisel']
    brackets = {n: _brackets(records[(regime, n)]) for n in scalar}
    for r in range(max(int(n_rounds), 1)):
        wanted = {}
        if r == 0:  # the grid operating point, for its details
            for n in names:
                rec = records[(regime, n)]
                comp, cont, tp = _pooled_curve(rec)
                wanted[n] = [rec.thresholds[_operating_index(comp, cont, tp)]]
        if r < n_rounds:
            for n in scalar:
                pts = set()
                for lo, hi in brackets[n].values():
                    pts.update(_interior(lo, hi, REFINE_POINTS))
                if pts:
                    wanted[n] = sorted({*wanted.get(n, []), *pts})
        if not wanted:
            break
        run_pass(wanted)
        for n in scalar:
            rec = records[(regime, n)]
            _, cont, _ = _pooled_curve(rec)
            for level, (lo, hi) in list(brackets[n].items()):
                brackets[n][level] = refine_bracket(
                    lo, hi, rec.thresholds, cont, level)
    # the final operating point may be a refined one without details
    missing = {}
    for n in names:
        rec = records[(regime, n)]
        comp, cont, tp = _pooled_curve(rec)
        t = rec.thresholds[_operating_index(comp, cont, tp)]
        if _threshold_label(t) not in rec.details:
            missing[n] = [t]
    if missing:
        run_pass(missing)


def run_sweeps(*, regimes=('clean', 'contaminated'), detectors=None,
               n_images=None, shape=None, quick=False, snr_min=SNR_MIN,
               progress=True, example_detectors=('sep', 'cnn'), model=None,
               n_jobs=1, refine_rounds=None):
    """
    Run every detector's sweep on the test images of each regime.

    Parameters
    ----------
    regimes : iterable of str, optional
        Dataset recipes (regimes) to run.
    detectors : iterable of str, optional
        Detector names (default: all available).
    n_images : int, optional
        Images per regime (default: 40, or 2 in quick mode).
    shape : tuple of 2 int, optional
        Override the recipe image shape (quick mode default: 128 x 128).
    quick : bool, optional
        Coarse sweeps on few small images (smoke test).
    snr_min : float, optional
        S/N cut of the bright truth subset.
    progress : bool, optional
        Show tqdm progress bars.
    example_detectors : tuple of str, optional
        Detectors whose detections are kept for the example panels.
    model : str, optional
        CNN model file (default: the shipped model).
    n_jobs : int, optional
        Worker processes (images are processed in parallel; results do
        not depend on it).
    refine_rounds : int, optional
        Refinement rounds at each contamination crossing (each one pass
        over the images; default 2, 1 in quick mode; 0 measures only the
        grid plus the operating point's positions and fluxes).

    Returns
    -------
    result : `BenchmarkResult`
    """
    from tqdm.auto import tqdm

    from astro_deepcolor.simulation import CONTAMINANT_FLAGS, load_recipe
    from astro_deepcolor.utils._parameters import check_positive_int

    n_jobs = check_positive_int(n_jobs, 'n_jobs')
    if n_images is None:
        n_images = 2 if quick else 40
    n_images = check_positive_int(n_images, 'n_images')
    if refine_rounds is None:
        refine_rounds = QUICK_REFINE_ROUNDS if quick else REFINE_ROUNDS
    if int(refine_rounds) != refine_rounds or refine_rounds < 0:
        msg = ('refine_rounds must be a non-negative integer, got '
               f'{refine_rounds!r}')
        raise ValueError(msg)
    if shape is None and quick:
        shape = (128, 128)
    names, skipped = available_detectors(detectors, model=model)
    if not names:
        msg = f'no detector can run here: {skipped}'
        raise RuntimeError(msg)
    classes = [*CONTAMINANT_FLAGS, NO_CONTAMINANT]
    records = {}
    truths = {}
    examples = {}
    all_pairs = {}
    pool = None
    if n_jobs > 1:
        import concurrent.futures
        import multiprocessing

        pool = concurrent.futures.ProcessPoolExecutor(
            n_jobs, mp_context=multiprocessing.get_context('spawn'))
    try:
        for regime in regimes:
            seeds = list(load_recipe(regime).seeds('test'))[:n_images]
            base = {'regime': regime, 'shape': shape, 'names': names,
                    'quick': quick, 'snr_min': snr_min, 'model': model}

            def run_pass(thresholds, *, first=False, regime=regime,
                         seeds=seeds, base=base):
                tasks = [{**base, 'index': i, 'seed': seed,
                          'thresholds': thresholds, 'details': not first,
                          'keep_examples': (tuple(example_detectors)
                                            if first else ())}
                         for i, seed in enumerate(seeds)]
                if not first:
                    tasks = [{**t, 'names': list(thresholds)} for t in tasks]
                results = (pool.map(_process_image, tasks) if pool is not None
                           else map(_process_image, tasks))
                desc = (f'benchmark {regime}' if first
                        else f'refine {regime}')
                return _add_pass(records, regime,
                                 tqdm(results, total=len(tasks), desc=desc,
                                      disable=not progress, unit='image'),
                                 first)

            tables, ex, pair_list = run_pass(None, first=True)
            examples.update(ex)
            _refine_records(records, regime, run_pass, names, refine_rounds)
            offsets = np.cumsum([0, *(len(t) for t in tables)])
            pair_list = [np.asarray(p, np.int64).reshape(-1, 2) + o
                         for p, o in zip(pair_list, offsets, strict=False)]
            nonempty = [t for t in tables if len(t)]
            truths[regime] = (vstack(nonempty) if nonempty
                              else tables[0] if tables else QTable())
            all_pairs[regime] = (np.concatenate(pair_list) if pair_list
                                 else np.zeros((0, 2), np.int64))
    finally:
        if pool is not None:
            pool.shutdown()
    meta = {'regimes': list(regimes), 'detectors': names, 'quick': bool(quick),
            'n_images': int(n_images), 'shape': None if shape is None else
            list(shape), 'snr_min': float(snr_min),
            'model': None if model is None else str(model),
            'refine_rounds': int(refine_rounds),
            'date': time.strftime('%Y-%m-%dT%H:%M:%S')}
    return BenchmarkResult(records=records, truth=truths, classes=classes,
                           skipped=skipped, examples=examples, meta=meta,
                           pairs=all_pairs)


def _deblending(result, regime, rec):
    """Deblending success per threshold: (bright pairs, all pairs)."""
    pairs = getattr(result, 'pairs', {}).get(regime)
    n_thr = len(rec.thresholds)
    if pairs is None:  # old results: counts over all pairs only
        deb = np.asarray(rec.deblend_ok, float).sum(0)
        n = float(np.sum(rec.n_pairs))
        frac = deb / n if n else np.full(n_thr, np.nan)
        return frac, 0, frac, int(n)
    matched = (np.concatenate([np.asarray(m) for m in rec.matched], axis=1)
               if rec.matched else np.zeros((n_thr, 0), bool))
    ok = matched[:, pairs[:, 0]] & matched[:, pairs[:, 1]]
    snr = np.asarray(result.truth[regime]['snr'], float) if len(pairs) else \
        np.zeros(0)
    bright = (snr[pairs].min(axis=1) >= result.meta.get('snr_min', SNR_MIN)
              if len(pairs) else np.zeros(0, bool))
    nb = int(bright.sum())
    na = len(pairs)
    with np.errstate(invalid='ignore', divide='ignore'):
        frac_b = ok[:, bright].sum(1) / nb if nb else np.full(n_thr, np.nan)
        frac_a = ok.sum(1) / na if na else np.full(n_thr, np.nan)
    return frac_b, nb, frac_a, na


def _best_at(comp, cont, level):
    """Highest completeness among points with contamination <= level."""
    ok = np.isfinite(comp) & np.isfinite(cont) & (cont <= level)
    if not ok.any():
        return np.nan, -1
    idx = np.flatnonzero(ok)
    j = idx[np.nanargmax(comp[idx])]
    return float(comp[j]), int(j)


def _curve_counts(rec, images=None):
    tp = np.asarray(rec.tp, float)
    fp = np.asarray(rec.fp, float)
    fn = np.asarray(rec.fn, float)
    failed = np.asarray(rec.failed, bool)
    if images is not None:
        tp, fp, fn, failed = tp[images], fp[images], fn[images], failed[images]
    return tp.sum(0), fp.sum(0), fn.sum(0), failed.any(0)


def _threshold_sort_key(t):
    return tuple(np.atleast_1d(np.asarray(t, float)))


def _operating_offsets(result, regime, rec, t_op):
    """Matched pairs at the operating point, pooled over the images."""
    from .metrics import match_offsets  # noqa: F401 (columns documented there)

    truth = result.truth[regime]
    per_image = getattr(rec, 'details', {}).get(_threshold_label(t_op))
    cols = ('truth_index', 'dx', 'dy', 'separation', 'flux_true', 'flux',
            'flux_ratio', 'snr', 'mag')
    if per_image is None or not len(truth):
        return QTable({c: np.zeros(0) for c in cols})
    sizes = [np.asarray(m).shape[-1] for m in rec.matched]
    offsets = np.cumsum([0, *sizes])
    ti, dx, dy, flux = [], [], [], []
    for i, det in enumerate(per_image):
        if det is None:
            continue
        ti.append(np.asarray(det['truth_index'], np.int64) + offsets[i])
        dx.append(np.asarray(det['dx'], float))
        dy.append(np.asarray(det['dy'], float))
        flux.append(np.asarray(det['flux'], float))
    if not ti:
        return QTable({c: np.zeros(0) for c in cols})
    ti = np.concatenate(ti)
    dx, dy, flux = np.concatenate(dx), np.concatenate(dy), np.concatenate(flux)
    f_true = np.asarray(truth['flux'], float)[ti]
    with np.errstate(invalid='ignore', divide='ignore'):
        ratio = np.where(f_true > 0, flux / f_true, np.nan)
    return QTable({'truth_index': ti, 'dx': dx, 'dy': dy,
                   'separation': np.hypot(dx, dy), 'flux_true': f_true,
                   'flux': flux, 'flux_ratio': ratio,
                   'snr': np.asarray(truth['snr'], float)[ti],
                   'mag': np.asarray(truth['mag'], float)[ti]})


def _offset_summary(tab, snr_min):
    """Summary columns of the astrometry and photometry (S/N >= snr_min)."""
    from .metrics import MAD_TO_SIGMA

    sel = np.asarray(tab['snr'], float) >= snr_min
    sep = np.asarray(tab['separation'], float)[sel]
    ratio = np.asarray(tab['flux_ratio'], float)[sel]
    ratio = ratio[np.isfinite(ratio)]
    out = {'n_matched_bright': int(sel.sum()),
           'position_error_median': np.nan, 'position_error_68': np.nan,
           'flux_ratio_bias': np.nan, 'flux_ratio_scatter': np.nan}
    if sep.size:
        out['position_error_median'] = float(np.median(sep))
        out['position_error_68'] = float(np.percentile(sep, 68.27))
    if ratio.size:
        med = float(np.median(ratio))
        out['flux_ratio_bias'] = med - 1.0
        out['flux_ratio_scatter'] = MAD_TO_SIGMA * float(
            np.median(np.abs(ratio - med)))
    return out


def astrometry_photometry(result):
    """
    Position errors and flux ratios against the truth at the operating points.

    For each regime and detector, on the sources matched at its operating
    point (best completeness at <= 5 % contamination, as in `summarize`).

    Parameters
    ----------
    result : `BenchmarkResult`
        The sweeps (with the refinement passes' details).

    Returns
    -------
    table : `~astropy.table.QTable`
        One row per (regime, detector, quantity, bin): ``quantity``
        ``'position_error'`` is binned in true S/N (``center``: the median
        distance to the true position, ``spread``: the radius holding 68 %
        of the matches, pixels); ``'flux_ratio'`` (measured segment or
        isophotal flux over the true flux) is binned in true magnitude
        (``center``: the median bias, ``spread``: the robust scatter).
        ``n`` is the number of matches in the bin.
    """
    from .metrics import binned_flux_ratio, binned_position_error

    rows = []
    for (regime, name), rec in result.records.items():
        comp, cont, tp = _pooled_curve(rec)
        t_op = rec.thresholds[_operating_index(comp, cont, tp)]
        tab = _operating_offsets(result, regime, rec, t_op)
        for quantity, col, bins, func, stats in (
                ('position_error', 'snr', SNR_BINS, binned_position_error,
                 ('median', 'radius_68')),
                ('flux_ratio', 'mag', MAG_BINS, binned_flux_ratio,
                 ('bias', 'scatter'))):
            data = tab['separation' if quantity == 'position_error'
                       else 'flux_ratio']
            for r in func(tab[col], data, bins):
                rows.append({
                    'regime': regime, 'detector': name,
                    'operating_threshold': _threshold_label(t_op),
                    'quantity': quantity, 'bin': col,
                    'low': float(r['low']), 'high': float(r['high']),
                    'n': int(r['n']), 'center': float(r[stats[0]]),
                    'spread': float(r[stats[1]])})
    table = QTable(rows=rows) if rows else QTable()
    table.meta.update(result.meta)
    return table


def summarize(result, *, n_bootstrap=200, seed=0):
    """
    Curves, summary numbers and bootstrap errors of a benchmark run.

    Parameters
    ----------
    result : `BenchmarkResult`
        The sweeps.
    n_bootstrap : int, optional
        Bootstrap resamples of the images (errors are their standard
        deviation).
    seed : int, optional
        Seed of the bootstrap.

    Returns
    -------
    curves : `~astropy.table.QTable`
        One row per (regime, detector, threshold).
    summary : `~astropy.table.QTable`
        One row per (regime, detector). ``deblend_success`` is the fraction
        of close pairs whose members both have S/N >= ``snr_min`` that are
        both matched (``deblend_success_all``: over every close pair, which
        mixes in depth since faint companions are often undetectable).
        ``completeness_at_<x>pct`` is the best completeness at
        contamination <= x %, with its bootstrap error (over the resamples
        that reach x %) and ``_reached``, the fraction of resamples that
        do; ``completeness_bright_at_<x>pct`` is the completeness on the
        S/N >= ``snr_min`` sources at that same threshold;
        ``threshold_at_<x>pct`` and ``contamination_at_<x>pct`` say where
        it was measured (refined thresholds put it within a few tenths of
        a percent of x %, see `refine_crossing`) and
        ``completeness_grid_at_<x>pct`` is the same figure read off the
        protocol grid alone.
    mag_table : `~astropy.table.QTable`
        Completeness per magnitude, S/N and kind bin at the operating point.
    fp_table : `~astropy.table.QTable`
        False positives per contaminant class at the operating point.

    Notes
    -----
    The summary's ``position_error_median`` and ``position_error_68``
    (pixels), ``flux_ratio_bias`` and ``flux_ratio_scatter`` are measured
    on the matched sources with S/N >= ``snr_min`` at the operating point
    (``n_matched_bright`` of them); the flux is what each detector
    measures in its footprint (segment or isophotal flux).
    """
    from .metrics import binned_completeness

    rng = np.random.default_rng(seed)
    curve_rows, summary_rows, mag_rows, fp_rows = [], [], [], []
    for (regime, name), rec in result.records.items():
        n_img = len(rec.tp)
        tp, fp, fn, failed = _curve_counts(rec)
        comp, cont = completeness_from_counts(tp, fp, fn)
        comp = np.where(failed, np.nan, comp)
        cont = np.where(failed, np.nan, cont)
        tpb = np.asarray(rec.tp_bright, float).sum(0)
        nb = float(np.sum(rec.n_bright))
        comp_b = np.where(failed, np.nan, tpb / nb if nb else np.nan)
        deb_b, n_pairs_b, deb_a, n_pairs_a = _deblending(result, regime, rec)
        # bootstrap over images
        boot = rng.integers(0, n_img, size=(n_bootstrap, n_img))
        tp_i = np.asarray(rec.tp, float)
        fp_i = np.asarray(rec.fp, float)
        fn_i = np.asarray(rec.fn, float)
        bc, bf = completeness_from_counts(tp_i[boot].sum(1), fp_i[boot].sum(1),
                                          fn_i[boot].sum(1))
        bc = np.where(failed, np.nan, bc)
        bf = np.where(failed, np.nan, bf)
        # A point without detections has no contamination: it never
        # counts as reaching a contamination level (nor as the operating
        # point), whatever the curve tables say.
        bf_s = np.where(tp_i[boot].sum(1) + fp_i[boot].sum(1) > 0, bf, np.nan)
        cont_s = np.where(tp + fp > 0, cont, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)
            comp_err = np.nanstd(bc, axis=0)
            cont_err = np.nanstd(bf, axis=0)
        refined = list(getattr(rec, 'refined', [])) or [False] * len(
            rec.thresholds)
        order = sorted(range(len(rec.thresholds)),
                       key=lambda j: _threshold_sort_key(rec.thresholds[j]))
        for j in order:
            t = rec.thresholds[j]
            curve_rows.append({
                'regime': regime, 'detector': name,
                'threshold': float(t if np.ndim(t) == 0 else t[0]),
                'setting': _threshold_label(t), 'n_images': n_img,
                'n_truth': len(result.truth[regime]), 'n_truth_bright': int(nb),
                'tp': int(tp[j]), 'fp': int(fp[j]), 'fn': int(fn[j]),
                'failed': bool(failed[j]),
                'completeness': comp[j], 'completeness_err': comp_err[j],
                'contamination': cont[j], 'contamination_err': cont_err[j],
                'completeness_bright': comp_b[j],
                'deblend_success': deb_b[j], 'deblend_success_all': deb_a[j],
                'refined': bool(refined[j]),
            })
        n_truth = len(result.truth[regime])
        grid = ~np.asarray(refined, bool)
        row = {'regime': regime, 'detector': name, 'n_images': n_img,
               'n_truth': n_truth, 'n_truth_bright': int(nb),
               'n_pairs': n_pairs_b, 'n_pairs_all': n_pairs_a}
        for level in CONTAMINATION_LEVELS:
            c, jl = _best_at(comp, cont_s, level)
            samples = np.asarray([_best_at(bc[b], bf_s[b], level)[0]
                                  for b in range(n_bootstrap)])
            reach = np.isfinite(samples)
            key = f'completeness_at_{round(level * 100):d}pct'
            row[key] = c
            # The error is the spread over the resamples that reach the
            # level at all; how often they do is reported beside it (a
            # level reached by half the resamples is a fragile figure).
            row[key + '_err'] = (float(np.std(samples[reach]))
                                 if np.isfinite(c) and reach.sum() > 1 else np.nan)
            row[key + '_reached'] = float(reach.mean())
            # The same operating point, on the S/N >= snr_min sources.
            row[f'completeness_bright_at_{round(level * 100):d}pct'] = (
                float(comp_b[jl]) if jl >= 0 else np.nan)
            # Where it was measured: the (refined) threshold and the
            # contamination there, at most the level.
            row[f'threshold_at_{round(level * 100):d}pct'] = (
                _threshold_label(rec.thresholds[jl]) if jl >= 0 else '--')
            row[f'contamination_at_{round(level * 100):d}pct'] = (
                float(cont[jl]) if jl >= 0 else np.nan)
            # Read off the protocol grid alone (before refinement): the
            # difference is what grid sampling did to the figure.
            row[f'completeness_grid_at_{round(level * 100):d}pct'] = _best_at(
                np.where(grid, comp, np.nan), cont_s, level)[0]
        reached = np.isfinite(cont) & (tp > 0)
        row['min_contamination'] = (float(np.nanmin(cont[reached]))
                                    if reached.any() else np.nan)
        # never that clean: operate at the cleanest point
        j = _operating_index(comp, cont_s, tp)
        t_op = rec.thresholds[j]
        row['operating_threshold'] = _threshold_label(t_op)
        row['operating_completeness'] = float(comp[j])
        row['operating_contamination'] = float(cont[j])
        row['operating_completeness_bright'] = float(comp_b[j])
        row['deblend_success'] = float(deb_b[j])
        row['deblend_success_all'] = float(deb_a[j])
        fpc = np.sum([np.asarray(f)[j] for f in rec.fp_class], axis=0)
        row['fp_total'] = int(fp[j])
        for cls, v in zip(result.classes, fpc, strict=True):
            row[f'fp_{cls}'] = int(v)
            fp_rows.append({'regime': regime, 'detector': name,
                            'operating_threshold': _threshold_label(t_op),
                            'contaminant': cls, 'n_fp': int(v),
                            'fp_per_image': v / n_img})
        row['seconds_per_image'] = rec.seconds / n_img
        offsets_table = _operating_offsets(result, regime, rec, t_op)
        row.update(_offset_summary(offsets_table,
                                   result.meta.get('snr_min', SNR_MIN)))
        summary_rows.append(row)
        # completeness vs magnitude / S/N / kind at the operating point
        truth = result.truth[regime]
        matched = np.concatenate([np.asarray(m)[j] for m in rec.matched])
        for col, bins in (('mag', np.arange(14.0, 28.01, 0.5)),
                          ('snr', np.geomspace(1, 1e4, 17))):
            tab = binned_completeness(np.asarray(truth[col], float),
                                      matched, bins)
            for r in tab:
                mag_rows.append({'regime': regime, 'detector': name,
                                 'quantity': col, 'low': float(r['low']),
                                 'high': float(r['high']),
                                 'n_truth': int(r['n_truth']),
                                 'n_matched': int(r['n_matched']),
                                 'completeness': float(r['completeness'])})
        for kind in ('star', 'galaxy'):
            sel = np.asarray(truth['kind']) == kind
            n = int(sel.sum())
            k = int(matched[sel].sum())
            mag_rows.append({'regime': regime, 'detector': name,
                             'quantity': f'kind:{kind}', 'low': np.nan,
                             'high': np.nan, 'n_truth': n, 'n_matched': k,
                             'completeness': k / n if n else np.nan})
    curves = QTable(rows=curve_rows) if curve_rows else QTable()
    summary = QTable(rows=summary_rows) if summary_rows else QTable()
    mags = QTable(rows=mag_rows) if mag_rows else QTable()
    fps = QTable(rows=fp_rows) if fp_rows else QTable()
    for tab in (curves, summary, mags, fps):
        tab.meta.update(result.meta)
        tab.meta['skipped'] = dict(result.skipped)
    return curves, summary, mags, fps


def merge_results(first, second):
    """
    Merge two `BenchmarkResult` of the same images (e.g. a CNN-only run).

    Parameters
    ----------
    first, second : `BenchmarkResult`
        Results on the same regimes, seeds and image shape; detectors of
        ``second`` replace those of ``first``.

    Returns
    -------
    merged : `BenchmarkResult`

    Notes
    -----
    The CNN detectors (``'cnn'``, ``'cnn_flips'``, ``'cnn_sourcextractor'``)
    run one model. When ``second`` ran any of them with another model than
    ``first``, the CNN detectors of ``first`` that ``second`` did not run
    are dropped (and listed in ``skipped``): their figures belong to the
    other model, and the merged result names only ``second``'s.
    """
    for key in ('n_images', 'shape', 'quick'):
        if first.meta.get(key) != second.meta.get(key):
            msg = (f'cannot merge benchmark results with different {key}: '
                   f'{first.meta.get(key)!r} and {second.meta.get(key)!r}')
            raise ValueError(msg)
    second_cnn = {d for _, d in second.records if d in CNN_DETECTORS}
    stale = set()
    if second_cnn and first.meta.get('model') != second.meta.get('model'):
        stale = {d for _, d in first.records
                 if d in CNN_DETECTORS and d not in second_cnn}
    first_records = {k: v for k, v in first.records.items() if k[1] not in stale}
    records = {**first_records, **second.records}
    skipped = {k: v for k, v in {**first.skipped, **second.skipped}.items()
               if not any(k == d for _, d in records)}
    old_model = first.meta.get('model') or 'the shipped model'
    for name in sorted(stale):
        skipped[name] = (f'merged from a run with another model ({old_model}); '
                         f'run it again with this model (--detectors {name})')
    examples = {}
    for regime in set(first.examples) | set(second.examples):
        ex = dict(first.examples.get(regime) or second.examples[regime])
        ex['detections'] = {
            **{d: v for d, v in first.examples.get(regime, {})
               .get('detections', {}).items() if d not in stale},
            **second.examples.get(regime, {}).get('detections', {})}
        examples[regime] = ex
    meta = dict(first.meta)
    meta['detectors'] = _order_names({d for _, d in records})
    meta['regimes'] = list(dict.fromkeys([*first.meta['regimes'],
                                          *second.meta['regimes']]))
    meta['model'] = (second.meta.get('model') if second_cnn
                     else first.meta.get('model'))
    pairs = {**getattr(first, 'pairs', {}), **getattr(second, 'pairs', {})}
    return BenchmarkResult(records=records, truth={**first.truth, **second.truth},
                           classes=first.classes, skipped=skipped,
                           examples=examples, meta=meta, pairs=pairs)


def _order_names(names):
    return sorted(names, key=lambda n: (DETECTOR_ORDER.index(n)
                                        if n in DETECTOR_ORDER else 99, n))
