# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Tests of the one-to-one matching and the detection-quality metrics."""

import math

import numpy as np
import pytest
from astropy.table import QTable
from photutils.segmentation import SegmentationImage

from astro_deepcolor.evaluation import (
    MatchResult,
    binned_completeness,
    close_pairs,
    completeness_contamination,
    completeness_from_counts,
    deblending_success,
    default_radius,
    false_positives_by_class,
    match_sources,
    misses_by_cause,
)

FLAGS = {'cosmic_ray': 1, 'hot_pixel': 2, 'trail': 4}


def cat(xy, labels=None):
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    t = QTable({'x': xy[:, 0], 'y': xy[:, 1]})
    t['label'] = (np.arange(1, len(t) + 1) if labels is None
                  else np.asarray(labels))
    return t


class TestMatchSources:
    def test_perfect(self):
        truth = cat([[10, 10], [30, 40], [50, 5]])
        det = cat([[50.5, 5.2], [10.3, 9.9], [30, 41]])
        m = match_sources(truth, det, radius=2)
        assert (m.tp, m.fp, m.fn) == (3, 0, 0)
        np.testing.assert_array_equal(m.truth_match, [1, 2, 0])
        np.testing.assert_array_equal(m.detection_match, [2, 0, 1])
        np.testing.assert_allclose(m.separation,
                                   [math.hypot(.3, .1), 1.0, math.hypot(.5, .2)])

    def test_detection_between_two_truths_matches_one(self):
        truth = cat([[10, 10], [14, 10]])
        det = cat([[12, 10]])
        m = match_sources(truth, det, radius=3)
        assert (m.tp, m.fp, m.fn) == (1, 0, 1)
        assert m.truth_matched.sum() == 1
        assert m.detection_matched.tolist() == [True]

    def test_duplicate_is_false_positive(self):
        truth = cat([[10, 10]])
        det = cat([[10.8, 10], [10.2, 10]])
        m = match_sources(truth, det, radius=2)
        assert (m.tp, m.fp, m.fn) == (1, 1, 0)
        # the closer detection wins
        assert m.detection_matched.tolist() == [False, True]

    def test_assignment_maximises_matches(self):
        # greedy-by-distance would give truth 0 <-> det 0 (0.5 px) and leave
        # truth 1 unmatched; the optimal assignment matches both
        truth = cat([[10, 10], [12.4, 10]])
        det = cat([[10.5, 10], [8.5, 10]])
        m = match_sources(truth, det, radius=2)
        assert m.tp == 2
        np.testing.assert_array_equal(m.truth_match, [1, 0])

    def test_outside_radius(self):
        m = match_sources(cat([[10, 10]]), cat([[13.1, 10]]), radius=3)
        assert (m.tp, m.fp, m.fn) == (0, 1, 1)

    @pytest.mark.parametrize(('nt', 'nd'), [(0, 0), (0, 3), (3, 0)])
    def test_empty(self, nt, nd):
        truth = cat(np.arange(2 * nt).reshape(-1, 2) * 10)
        det = cat(np.arange(2 * nd).reshape(-1, 2) * 10 + 100)
        m = match_sources(truth, det, radius=2)
        assert (m.tp, m.fp, m.fn) == (0, nd, nt)
        assert m.truth_matched.shape == (nt,)
        assert m.detection_matched.shape == (nd,)
        c, f = completeness_contamination(m)
        if nt == 0:
            assert math.isnan(c)
        else:
            assert c == 0.0
        assert f == (1.0 if nd else 0.0)

    def test_none_detections_and_xcentroid(self):
        m = match_sources(cat([[1, 1]]), None)
        assert (m.tp, m.fp, m.fn) == (0, 0, 1)
        det = QTable({'xcentroid': [1.2], 'ycentroid': [1.0]})
        assert match_sources(cat([[1, 1]]), det).tp == 1

    def test_nan_detection_never_matches(self):
        m = match_sources(cat([[1, 1]]), cat([[np.nan, 1]]), radius=5)
        assert (m.tp, m.fp) == (0, 1)

    def test_default_radius(self):
        assert default_radius() == 3.0
        assert default_radius(4.0) == 4.0
        assert default_radius(1.0) == 2.0
        assert match_sources(cat([[0, 0]]), cat([[3.5, 0]]), fwhm=4).radius == 4
        with pytest.raises(ValueError, match='fwhm must be a positive'):
            default_radius(-1)
        with pytest.raises(ValueError, match='radius must be'):
            match_sources(cat([[0, 0]]), cat([[0, 0]]), radius=-1)
        with pytest.raises(ValueError, match='must have x and y'):
            match_sources(QTable({'a': [1]}), cat([[0, 0]]))

    def test_footprint_rule_extended_source(self):
        # a large galaxy footprint; its detection centroid is 8 px off
        seg = np.zeros((40, 40), int)
        seg[5:35, 5:35] = 1
        truth = cat([[20, 20]])
        det = cat([[20, 28]])
        assert match_sources(truth, det, radius=3).tp == 0
        m = match_sources(truth, det, radius=3, truth_segmentation=seg)
        assert m.tp == 1
        # an unrelated detection outside the footprint still cannot match
        m = match_sources(truth, cat([[38, 38]]), radius=3,
                          truth_segmentation=SegmentationImage(seg))
        assert m.tp == 0

    def test_footprint_overlap_rule(self):
        seg = np.zeros((40, 40), int)
        seg[10:20, 10:30] = 1
        dseg = np.zeros_like(seg)
        dseg[11:20, 9:29] = 4
        truth = cat([[20, 15]])
        # detection centroid (deliberately offset) falls outside the truth
        # footprint but the footprints overlap with IoU ~0.86
        det = cat([[20, 25]], labels=[4])
        m = match_sources(truth, det, radius=2, truth_segmentation=seg)
        assert m.tp == 0
        m = match_sources(truth, det, radius=2, truth_segmentation=seg,
                          detection_segmentation=dseg)
        assert m.tp == 1
        m = match_sources(truth, det, radius=2, truth_segmentation=seg,
                          detection_segmentation=dseg, min_iou=0.95)
        assert m.tp == 0

    def test_repr(self):
        m = match_sources(cat([[0, 0]]), cat([[0, 0]]))
        assert isinstance(m, MatchResult)
        assert 'tp=1' in repr(m)


class TestMetrics:
    def test_counts_exact(self):
        # 4 truths, 5 detections: 3 matched, 2 false, 1 missed
        truth = cat([[0, 0], [10, 0], [20, 0], [30, 0]])
        det = cat([[0, 0.5], [10, 0], [20.5, 0], [50, 50], [60, 60]])
        m = match_sources(truth, det, radius=1)
        assert (m.tp, m.fp, m.fn) == (3, 2, 1)
        c, f = completeness_contamination(m)
        assert c == pytest.approx(0.75)
        assert f == pytest.approx(0.4)
        # pooled over two images: (3+3) / (3+3+1+1), (2+2) / (3+3+2+2)
        assert completeness_contamination([m, m]) == pytest.approx((0.75, 0.4))

    def test_from_counts_zero_cases(self):
        c, f = completeness_from_counts([0, 2, 0], [0, 0, 3], [0, 2, 4])
        np.testing.assert_array_equal(f, [0.0, 0.0, 1.0])
        assert math.isnan(c[0])
        np.testing.assert_array_equal(c[1:], [0.5, 0.0])
        with pytest.raises(TypeError, match='MatchResult'):
            completeness_contamination([1, 2])

    def test_binned_completeness(self):
        t = binned_completeness([20, 21, 21.5, 23, 25], [1, 1, 0, 0, 1],
                                [20, 22, 24, 26, 28])
        assert t['n_truth'].tolist() == [3, 1, 1, 0]
        assert t['n_matched'].tolist() == [2, 0, 1, 0]
        np.testing.assert_allclose(t['completeness'][:3], [2 / 3, 0, 1])
        assert math.isnan(t['completeness'][3])

    def test_deblending(self):
        truth = cat([[10, 10], [13, 10], [40, 40], [60, 60], [80, 80]])
        seg = np.zeros((100, 100), int)
        seg[55:62, 55:61] = 4
        seg[55:62, 61:68] = 5  # touching footprints, 20 px apart
        truth['x'][4], truth['y'][4] = 64, 58
        truth['x'][3], truth['y'][3] = 57, 58
        truth['x'][3] = 44  # far from its partner: paired only by the touch
        pairs = close_pairs(truth, fwhm=2.0, truth_segmentation=seg)
        assert pairs.tolist() == [[0, 1], [3, 4]]
        assert close_pairs(truth, fwhm=2.0).tolist() == [[0, 1]]
        # one detection on the blend of 0 and 1: deblending fails there
        det = cat([[11.5, 10], [44, 58], [64, 58]])
        m = match_sources(truth, det, radius=2)
        assert deblending_success(m, pairs) == (1, 2, 0.5)
        assert math.isnan(deblending_success(m, np.zeros((0, 2)))[2])
        with pytest.raises(ValueError, match='fwhm or pair_radius'):
            close_pairs(truth)

    def test_false_positives_by_class(self):
        cmask = np.zeros((50, 50), np.uint16)
        cmask[10, 10] = FLAGS['cosmic_ray']
        cmask[:, 30] = FLAGS['trail']
        cmask[40, 30] |= FLAGS['hot_pixel']
        truth = cat([[5, 5]])
        det = cat([[5, 5], [10, 10], [30.2, 20], [30, 40], [45, 45]])
        m = match_sources(truth, det, radius=2)
        counts = false_positives_by_class(m, det, cmask, FLAGS)
        assert counts == {'cosmic_ray': 1, 'hot_pixel': 1, 'trail': 2,
                          'none': 1}
        # with footprints: the last detection's footprint reaches the trail
        dseg = np.zeros((50, 50), int)
        for lab, (x, y) in enumerate(det.iterrows('x', 'y'), 1):
            dseg[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2] = lab
        dseg[45, 29:45] = 5
        counts = false_positives_by_class(m, det, cmask, FLAGS,
                                          detection_segmentation=dseg)
        assert counts == {'cosmic_ray': 1, 'hot_pixel': 1, 'trail': 3,
                          'none': 0}
        # the matched (true) detection on a contaminant is never charged
        cmask[5, 5] = FLAGS['hot_pixel']
        counts = false_positives_by_class(m, det, cmask, FLAGS)
        assert counts['hot_pixel'] == 1


def test_misses_by_cause():
    """One miss of each cause, by hand."""
    truth = cat([[10, 10], [14, 10], [40, 40], [40, 10], [25, 25]])
    truth['snr'] = [20.0, 8.0, 9.0, 6.0, 2.0]
    truth['blended'] = [True, True, False, False, False]
    tseg = np.zeros((50, 50), int)
    for lab, (x, y) in enumerate(truth.iterrows('x', 'y'), 1):
        tseg[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2] = lab
    cmask = np.zeros((50, 50), np.uint16)
    cmask[41, 30:45] = FLAGS['trail']      # 3 of source 3's 9 pixels
    cmask[40, 40] |= FLAGS['cosmic_ray']   # 1 more: the trail dominates
    cmask[11, 39] = FLAGS['hot_pixel']     # 1 pixel of source 4's 9: < 20 %
    det = cat([[11, 10]])
    dseg = np.zeros((50, 50), int)
    dseg[8:13, 8:17] = 1                   # sources 1 and 2 in one detection
    m = match_sources(truth, det, radius=2)
    assert m.truth_matched.tolist() == [True, False, False, False, False]
    counts = misses_by_cause(m, truth, tseg, det, dseg, cmask, FLAGS, min_cover=0.2)
    assert counts == {'n': 4, 'missed': 3, 'merged': 1, 'on_artefact': 1,
                      'undetected': 1, 'blended': 1,
                      'artefact_classes': {'trail': 1}}
    # a lower cover makes the hot pixel count; nothing detected: no merge
    none = match_sources(truth, det[:0], radius=2)
    counts = misses_by_cause(none, truth, tseg, det[:0], None, cmask, FLAGS,
                             min_cover=0.1)
    assert counts['missed'] == 4
    assert counts['merged'] == 0
    assert counts['blended'] == 2
    assert counts['on_artefact'] == 2
    assert counts['artefact_classes'] == {'trail': 1, 'hot_pixel': 1}
    assert counts['undetected'] == 2


class TestAstrometryPhotometry:
    """Position errors and flux ratios against the truth, by hand."""

    def test_match_offsets_and_bins(self):
        from astro_deepcolor.evaluation import match_sources
        from astro_deepcolor.evaluation.metrics import (
            binned_flux_ratio,
            binned_position_error,
            match_offsets,
        )

        truth = QTable({'x': [10.0, 30.0, 50.0, 70.0],
                        'y': [10.0, 10.0, 10.0, 10.0],
                        'flux': [100.0, 200.0, 400.0, 0.0],
                        'snr': [4.0, 8.0, 30.0, 60.0]})
        # offsets (0.6, 0.8) -> 1.0 px, (0, 0.5) -> 0.5, (-1.2, 0.5) -> 1.3,
        # (0, 0) -> 0; the fifth detection is a false positive
        det = QTable({'x': [10.6, 30.0, 48.8, 70.0, 90.0],
                      'y': [10.8, 10.5, 10.5, 10.0, 90.0],
                      'flux': [80.0, 220.0, 300.0, 5.0, 1.0]})
        m = match_sources(truth, det, radius=2.0)
        off = match_offsets(m, truth, det)
        assert list(off['truth_index']) == [0, 1, 2, 3]
        np.testing.assert_allclose(off['dx'], [0.6, 0.0, -1.2, 0.0])
        np.testing.assert_allclose(off['separation'], [1.0, 0.5, 1.3, 0.0])
        np.testing.assert_allclose(off['flux_ratio'][:3], [0.8, 1.1, 0.75])
        assert np.isnan(off['flux_ratio'][3])  # true flux 0: undefined

        snr = np.asarray(truth['snr'])[off['truth_index']]
        pos = binned_position_error(snr, off['separation'], [0, 5, 100])
        assert list(pos['n']) == [1, 3]
        # bin [5, 100): separations 0.5, 1.3, 0.0 -> median 0.5; the
        # 68.27th percentile by linear interpolation: 0.5 + 0.3654 * 0.8
        assert pos['median'][1] == pytest.approx(0.5)
        assert pos['radius_68'][1] == pytest.approx(0.5 + 0.3654 * 0.8)
        assert pos['median'][0] == pytest.approx(1.0)

        flux = binned_flux_ratio(snr, off['flux_ratio'], [0, 5, 100, 200])
        # ratios 0.8 | 1.1, 0.75 (NaN dropped) | none
        assert list(flux['n']) == [1, 2, 0]
        assert flux['bias'][0] == pytest.approx(-0.2)
        assert flux['bias'][1] == pytest.approx(0.925 - 1)
        assert flux['scatter'][1] == pytest.approx(1.4826 * 0.175)
        assert np.isnan(flux['bias'][2])

    def test_validation(self):
        from astro_deepcolor.evaluation.metrics import (
            binned_position_error,
            match_offsets,
        )

        with pytest.raises(ValueError, match='bins must be at least two '
                           'increasing edges'):
            binned_position_error([1.0], [0.5], [5, 1])
        with pytest.raises(ValueError, match='same shape'):
            binned_position_error([1.0, 2.0], [0.5], [0, 5])
        with pytest.raises(TypeError, match='match must be a MatchResult'):
            match_offsets(None, QTable(), QTable())
