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
    'DeepColorDetector',
    'available_detectors',
    'make_detector',
    'merge_results',
    'run_sweeps',
    'summarize',
]

#: CNN probability thresholds of the full benchmark.
PROB_SWEEP = np.round(np.arange(0.0, 1.0 + 1e-9, 0.02), 2)
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
#: Detector names in plotting order.
DETECTOR_ORDER = ('cnn', 'sep', 'sep_matched', 'photutils', 'sextractor',
                  'noisechisel')


class DeepColorDetector:
    """
    The deep-coloring CNN behind the baseline interface.

    One network pass per image (``predict``), then ``segment`` at each
    probability threshold. Centroids and fluxes are measured like the
    baselines' on the image minus its median.

    Parameters
    ----------
    fwhm : float, optional
        Unused (kept for the common interface).
    n_pixels : int, optional
        Minimum segment area.
    model : str or None, optional
        Model file (None: the shipped default).
    """

    name = 'cnn'
    threshold_name = 'probability'
    last_error = None

    def __init__(self, *, fwhm=None, n_pixels=5, model=None):
        self.n_pixels = n_pixels
        self.model = model

    @classmethod
    def unavailable_reason(cls, model=None):
        """
        Why the CNN cannot run (None when it can).

        Parameters
        ----------
        model : str or None, optional
            Model file (None: the shipped default).

        Returns
        -------
        reason : str or None
        """
        try:
            from astro_deepcolor import DeepColorSegmentation  # noqa: F401
            from astro_deepcolor.model import load_model
            load_model(model)
        except Exception as exc:  # any failure at all means "skip the CNN"
            return ('the CNN (astro_deepcolor.inference and its model) is not '
                    f'usable: {type(exc).__name__}: {exc}')
        return None

    @classmethod
    def available(cls, model=None):
        """
        Whether the CNN can run.

        Parameters
        ----------
        model : str or None, optional
            Model file (None: the shipped default).

        Returns
        -------
        available : bool
        """
        return cls.unavailable_reason(model) is None

    def _finder(self):
        from astro_deepcolor import DeepColorSegmentation

        kwargs = {'n_pixels': self.n_pixels, 'progress_bar': False}
        if self.model is not None:
            kwargs['model'] = self.model
        return DeepColorSegmentation(**kwargs)

    def sweep(self, data, thresholds, mask=None):
        """
        Segment at many probability thresholds from one network pass.

        Parameters
        ----------
        data : 2D array-like
            The image.
        thresholds : iterable of float
            Probability thresholds.
        mask : 2D bool array-like, optional
            Bad pixels.

        Yields
        ------
        threshold, segm, table
            As for the baselines.
        """
        from photutils.utils.exceptions import NoDetectionsWarning

        from astro_deepcolor.baselines.base import prepare_image, segment_catalog

        finder = self._finder()
        data, bad = prepare_image(data, mask, dtype=np.float32)
        probs = finder.predict(data, mask=bad if bad.any() else None)
        image = data - np.median(data[~bad]) if (~bad).any() else data
        for t in thresholds:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', NoDetectionsWarning)
                segm = finder.segment(probs, threshold=float(t),
                                      mask=bad if bad.any() else None)
            if segm is None:
                yield t, None, segment_catalog(np.zeros(data.shape, int), image)
            else:
                yield t, segm, segment_catalog(segm, image)


def _detector_classes():
    from astro_deepcolor.baselines import DETECTORS, SepDetector

    return {'cnn': DeepColorDetector, **DETECTORS, 'sep_matched': SepDetector}


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
        reason = (classes[name].unavailable_reason(model) if name == 'cnn'
                  else classes[name].unavailable_reason())
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
        CNN model file (default: the shipped model).

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
    if name == 'cnn':
        return cls(fwhm=fwhm, model=model)
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
    if name == 'cnn':
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
    """Simulate one image and run every detector's sweep on it."""
    (regime, index, seed, shape, names, quick, snr_min, model,
     keep_examples) = task
    from astro_deepcolor.simulation import CONTAMINANT_FLAGS

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
    if index == 0:
        example = {'data': np.asarray(sim.data), 'truth_seg': sim.segmentation,
                   'truth': truth, 'fwhm': fwhm,
                   'contaminants': np.asarray(sim.contaminants),
                   'detections': {}}
    rows = {}
    for name in names:
        det = make_detector(name, fwhm, model=model)
        row = {k: [] for k in ('tp', 'fp', 'fn', 'tp_bright', 'failed',
                               'deblend_ok', 'fp_class', 'matched')}
        thresholds = thresholds_for(name, quick)
        t0 = time.perf_counter()
        for t, segm, table in det.sweep(sim.data, thresholds):
            if table is None:
                row['failed'].append(True)
                for k in ('tp', 'fp', 'fn', 'tp_bright', 'deblend_ok'):
                    row[k].append(0)
                row['fp_class'].append(np.zeros(len(classes), int))
                row['matched'].append(np.zeros(len(truth), bool))
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
            if example is not None and name in keep_examples:
                example['detections'].setdefault(name, {})[
                    _threshold_label(t)] = (segm, table)
        row['seconds'] = time.perf_counter() - t0
        row['n_bright'] = int(bright.sum())
        row['n_pairs'] = len(pairs)
        row['pixels'] = int(sim.data.size)
        rows[name] = row
    return truth, example, rows, pairs


def run_sweeps(*, regimes=('clean', 'contaminated'), detectors=None,
               n_images=None, shape=None, quick=False, snr_min=SNR_MIN,
               progress=True, example_detectors=('sep', 'cnn'), model=None,
               n_jobs=1):
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
            tasks = [(regime, i, seed, shape, names, quick, snr_min, model,
                      tuple(example_detectors)) for i, seed in enumerate(seeds)]
            results = (pool.map(_process_image, tasks) if pool is not None
                       else map(_process_image, tasks))
            tables = []
            pair_list = []
            offset = 0
            for truth, example, rows, pairs in tqdm(results, total=len(tasks),
                                             desc=f'benchmark {regime}',
                                             disable=not progress, unit='image'):
                tables.append(truth)
                pair_list.append(np.asarray(pairs, np.int64).reshape(-1, 2)
                                 + offset)
                offset += len(truth)
                if example is not None:
                    examples[regime] = example
                for name, row in rows.items():
                    rec = records.setdefault(
                        (regime, name),
                        _Record(thresholds=thresholds_for(name, quick)))
                    for k in ('tp', 'fp', 'fn', 'tp_bright', 'failed',
                              'deblend_ok', 'n_bright', 'n_pairs'):
                        getattr(rec, k).append(row[k])
                    rec.fp_class.append(np.array(row['fp_class']))
                    rec.matched.append(np.array(row['matched']).reshape(
                        len(rec.thresholds), len(truth)))
                    rec.seconds += row['seconds']
                    rec.pixels += row['pixels']
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


def summarize(result, *, n_bootstrap=200, seed=0):
    """
    Curves, summary numbers and bootstrap errors from a `BenchmarkResult`.

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
        S/N >= ``snr_min`` sources at that same threshold.
    mag_table : `~astropy.table.QTable`
        Completeness per magnitude, S/N and kind bin at the operating point.
    fp_table : `~astropy.table.QTable`
        False positives per contaminant class at the operating point.
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
        for j, t in enumerate(rec.thresholds):
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
            })
        n_truth = len(result.truth[regime])
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
        reached = np.isfinite(cont) & (tp > 0)
        row['min_contamination'] = (float(np.nanmin(cont[reached]))
                                    if reached.any() else np.nan)
        _, j = _best_at(comp, cont_s, OPERATING_CONTAMINATION)
        if j < 0:  # never that clean: operate at the cleanest point
            j = int(np.flatnonzero(reached)[np.nanargmin(cont[reached])]) \
                if reached.any() else 0
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
    """
    for key in ('n_images', 'shape', 'quick'):
        if first.meta.get(key) != second.meta.get(key):
            msg = (f'cannot merge benchmark results with different {key}: '
                   f'{first.meta.get(key)!r} and {second.meta.get(key)!r}')
            raise ValueError(msg)
    records = {**first.records, **second.records}
    skipped = {k: v for k, v in {**first.skipped, **second.skipped}.items()
               if not any(k == d for _, d in records)}
    examples = {}
    for regime in set(first.examples) | set(second.examples):
        ex = dict(first.examples.get(regime) or second.examples[regime])
        ex['detections'] = {**first.examples.get(regime, {}).get('detections', {}),
                            **second.examples.get(regime, {}).get('detections', {})}
        examples[regime] = ex
    meta = dict(first.meta)
    meta['detectors'] = _order_names({d for _, d in records})
    meta['regimes'] = list(dict.fromkeys([*first.meta['regimes'],
                                          *second.meta['regimes']]))
    meta['model'] = second.meta.get('model') or first.meta.get('model')
    pairs = {**getattr(first, 'pairs', {}), **getattr(second, 'pairs', {})}
    return BenchmarkResult(records=records, truth={**first.truth, **second.truth},
                           classes=first.classes, skipped=skipped,
                           examples=examples, meta=meta, pairs=pairs)


def _order_names(names):
    return sorted(names, key=lambda n: (DETECTOR_ORDER.index(n)
                                        if n in DETECTOR_ORDER else 99, n))
