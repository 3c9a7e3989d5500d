# Licensed under a 3-clause BSD style license - see LICENSE.rst
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from photutils.segmentation import SourceCatalog, deblend_sources
from photutils.utils.exceptions import NoDetectionsWarning

from astro_deepcolor.postprocessing import (
    classify_pixels,
    label_sources,
    segment_probabilities,
)

N_COLORS = 3
SHAPE = (60, 80)


def _empty_cube():
    probs = np.zeros((N_COLORS + 1, *SHAPE), dtype=np.float32)
    probs[0] = 1.0
    return probs


def _disc(cy, cx, r):
    yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _paint(probs, region, colour, p=0.9):
    """Foreground probability p, of which most goes to ``colour``."""
    probs[:, region] = 0.0
    probs[0, region] = 1 - p
    probs[colour, region] = p


class TestClassifyPixels:
    def test_threshold_and_argmax(self):
        probs = np.array([[[0.6, 0.4, 0.5, 0.1]],
                          [[0.1, 0.1, 0.2, 0.1]],
                          [[0.3, 0.5, 0.3, 0.8]]], dtype=np.float32)
        colour, p_fg = classify_pixels(probs, 0.5)
        # p_fg = 1 - p0 = [0.4, 0.6, 0.5, 0.9]; >= 0.5 is foreground.
        assert_array_equal(colour, [[0, 2, 2, 2]])
        assert_allclose(p_fg, [[0.4, 0.6, 0.5, 0.9]], atol=1e-3)
        assert colour.dtype == np.uint8
        assert p_fg.dtype == np.float16

    def test_mask_and_nonfinite(self):
        probs = np.zeros((2, 1, 3), dtype=np.float32)
        probs[1] = 1.0
        probs[0, 0, 2] = np.nan
        colour, p_fg = classify_pixels(probs, 0.5,
                                       np.array([[True, False, False]]))
        assert_array_equal(colour, [[0, 1, 0]])
        assert_array_equal(p_fg, [[0, 1, 0]])

    def test_bad_shape(self):
        with pytest.raises(ValueError, match='probs must be a 3D array'):
            classify_pixels(np.zeros((4, 4)), 0.5)


class TestFlicker:
    """One object must not come out as two labels because of colour flicker."""

    def test_enclosed_patch_and_edge_bite_are_merged(self):
        # Flickering patches below the detection threshold (footprints at
        # 0.5, detection at 0.8) are fragments of the object around them.
        probs = _empty_cube()
        obj = _disc(25, 25, 12)
        _paint(probs, obj, 1)
        _paint(probs, _disc(22, 28, 3), 2, p=0.7)  # flickering patch inside
        _paint(probs, obj & _disc(25, 38, 5), 3, p=0.7)  # bite at the edge
        segm = segment_probabilities(probs, 0.8, 5, footprint_threshold=0.5)
        assert segm.n_labels == 1
        assert segm.areas[0] == np.count_nonzero(obj)

    def test_detected_neighbour_on_a_wing_is_never_merged(self):
        # A faint source enclosed by a bright star's wide footprint, in
        # another colour, that passes the detection cut on its own: two
        # sources (issue: the flicker repair used to merge it).
        probs = _empty_cube()
        star = _disc(30, 40, 15)
        _paint(probs, star, 1)
        faint = _disc(30, 50, 3)
        _paint(probs, faint, 2)
        for kwargs in ({}, {'footprint_threshold': 0.5}):
            segm = segment_probabilities(probs, 0.8, 5, **kwargs)
            assert segm.n_labels == 2
            assert_array_equal(np.sort(segm.areas),
                               np.sort([faint.sum(), (star & ~faint).sum()]))

    def test_blended_pair_stays_two(self):
        probs = _empty_cube()
        left = _disc(30, 30, 10)
        right = _disc(30, 45, 10) & ~left  # overlapping discs, touching
        _paint(probs, left, 1)
        _paint(probs, right, 2)
        segm = segment_probabilities(probs, 0.5, 5)
        assert segm.n_labels == 2
        assert_array_equal(np.sort(segm.areas),
                           np.sort([left.sum(), right.sum()]))

    def test_small_fragment_glued_to_object_is_merged(self):
        probs = _empty_cube()
        obj = _disc(30, 30, 6)
        _paint(probs, obj, 1)
        frag = np.zeros(SHAPE, dtype=bool)
        frag[30, 37:39] = True  # 2 px of another colour sticking out
        _paint(probs, frag, 2)
        segm = segment_probabilities(probs, 0.5, 5)
        assert segm.n_labels == 1
        assert segm.areas[0] == obj.sum() + 2

    def test_merge_fraction_controls_the_rule(self):
        probs = _empty_cube()
        obj = _disc(25, 25, 12)
        _paint(probs, obj, 1)
        bite = obj & _disc(25, 38, 5)
        _paint(probs, bite, 3)
        # Demanding a fully enclosed patch keeps the bite separate.
        segm = segment_probabilities(probs, 0.5, 5, merge_fraction=1.0)
        assert segm.n_labels == 2
        # A pair whose fainter member fails the detection cut is merged
        # when any shared boundary is enough; one that passes never is.
        probs = _empty_cube()
        left = _disc(30, 30, 10)
        _paint(probs, left, 1)
        _paint(probs, _disc(30, 45, 10) & ~left, 2, p=0.7)
        segm = segment_probabilities(probs, 0.8, 5, merge_fraction=0.0,
                                     footprint_threshold=0.5)
        assert segm.n_labels == 1
        _paint(probs, _disc(30, 45, 10) & ~left, 2, p=0.9)
        segm = segment_probabilities(probs, 0.8, 5, merge_fraction=0.0,
                                     footprint_threshold=0.5)
        assert segm.n_labels == 2

    def test_chain_of_fragments_ends_in_the_object(self):
        probs = _empty_cube()
        obj = _disc(30, 40, 15)
        _paint(probs, obj, 1)
        _paint(probs, _disc(30, 40, 6), 2, p=0.7)
        _paint(probs, _disc(30, 40, 2), 3, p=0.7)  # patch inside a patch
        segm = segment_probabilities(probs, 0.8, 5, footprint_threshold=0.5)
        assert segm.n_labels == 1


class TestLabelSources:
    def test_small_sources_dropped_and_labels_consecutive(self):
        probs = _empty_cube()
        _paint(probs, _disc(10, 10, 3), 1)
        tiny = np.zeros(SHAPE, dtype=bool)
        tiny[40, 40:43] = True  # 3 px, alone
        _paint(probs, tiny, 2)
        _paint(probs, _disc(50, 70, 3), 3)
        segm = segment_probabilities(probs, 0.5, 5)
        assert_array_equal(segm.labels, [1, 2])
        assert segm.is_consecutive
        # Ordered top-left first.
        assert segm.data[10, 10] == 1
        assert segm.data[50, 70] == 2
        assert segm.data[40, 41] == 0

    def test_same_colour_diagonal_contact(self):
        colour = np.zeros((6, 6), dtype=np.uint8)
        colour[0:3, 0:3] = 1
        colour[3:6, 3:6] = 1  # touches the first block at one corner
        p_fg = np.ones((6, 6), dtype=np.float16)
        assert label_sources(colour, p_fg, 5, connectivity=8).n_labels == 1
        assert label_sources(colour, p_fg, 5, connectivity=4).n_labels == 2

    def test_detection_probability_is_segment_maximum(self):
        probs = _empty_cube()
        a = _disc(15, 15, 4)
        b = _disc(40, 60, 4)
        _paint(probs, a, 1, p=0.7)
        _paint(probs, b, 2, p=0.8)
        _paint(probs, _disc(40, 60, 1), 2, p=0.95)
        segm = segment_probabilities(probs, 0.5, 5)
        assert_allclose(segm.info['detection_probability'], [0.7, 0.95],
                        atol=1e-3)
        assert_array_equal(segm.info['labels'], segm.labels)

    def test_no_detections(self):
        with pytest.warns(NoDetectionsWarning, match='No sources were found'):
            assert segment_probabilities(_empty_cube(), 0.5, 5) is None
        probs = _empty_cube()
        _paint(probs, _disc(10, 10, 1), 1)  # 5 px < n_pixels=6
        with pytest.warns(NoDetectionsWarning):
            assert segment_probabilities(probs, 0.5, 6) is None

    @pytest.mark.parametrize(('kwargs', 'match'), [
        ({'threshold': 1.5}, 'threshold must be a number in'),
        ({'n_pixels': 0}, 'n_pixels must be an integer >= 1, got 0'),
        ({'connectivity': 6}, 'connectivity must be one of 4, 8; got 6'),
        ({'merge_fraction': -1}, 'merge_fraction must be a number in'),
    ])
    def test_bad_parameters(self, kwargs, match):
        params = {'threshold': 0.5, 'n_pixels': 5} | kwargs
        threshold = params.pop('threshold')
        n_pixels = params.pop('n_pixels')
        with pytest.raises(ValueError, match=match):
            segment_probabilities(_empty_cube(), threshold, n_pixels, **params)


def test_photutils_tools_work_on_output():
    probs = _empty_cube()
    left = _disc(30, 30, 10)
    _paint(probs, left, 1)
    _paint(probs, _disc(30, 45, 10) & ~left, 2)
    _paint(probs, _disc(10, 70, 4), 3)
    segm = segment_probabilities(probs, 0.5, 5)
    yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1]]
    image = (100 * np.exp(-((yy - 30) ** 2 + (xx - 30) ** 2) / 20)
             + 80 * np.exp(-((yy - 30) ** 2 + (xx - 45) ** 2) / 20)
             + 50 * np.exp(-((yy - 10) ** 2 + (xx - 70) ** 2) / 5))
    cat = SourceCatalog(image, segm)
    assert len(cat) == 3
    assert_allclose(cat.x_centroid[cat.label == segm.data[10, 70]], 70,
                    atol=0.1)
    assert segm.max_label + 1 == segm.cmap.N
    deblended = deblend_sources(image, segm, n_pixels=5, progress_bar=False)
    assert deblended.n_labels >= 3


def _two_cores(p_bridge=0.7):
    """One colour-1 object: two confident cores joined by a weaker bridge,
    plus a colour-2 blob with only 3 confident pixels."""
    probs = np.zeros((3, 30, 40), np.float32)
    probs[0] = 1.0
    fg = np.zeros((30, 40))
    fg[10:16, 5:30] = p_bridge
    fg[10:16, 5:11] = 0.99
    fg[10:16, 24:30] = 0.99
    fg[22:27, 30:36] = 0.6
    fg[24, 31:34] = 0.97
    probs[0] = 1 - fg
    probs[1] = np.where(fg > 0, fg, 0)
    probs[1, 20:, 28:] = 0
    probs[2, 20:, 28:] = fg[20:, 28:]
    return probs


def test_footprint_threshold_joins_cores_and_keeps_footprints():
    probs = _two_cores()
    # Detection and footprint at 0.95: the object splits into two cores,
    # the small blob has too few pixels.
    split = segment_probabilities(probs, 0.95, 5)
    assert split.n_labels == 2
    # Footprints at 0.5: one source, its footprint the whole object; the
    # blob has 30 pixels above 0.5 but only 3 above 0.95: not a source.
    joined = segment_probabilities(probs, 0.95, 5, footprint_threshold=0.5)
    assert joined.n_labels == 1
    assert joined.areas[0] == 6 * 25
    assert_allclose(joined.info['detection_probability'], [0.99], atol=1e-3)
    # The same footprint as at threshold 0.5, where the blob is a source.
    low = segment_probabilities(probs, 0.5, 5)
    assert low.n_labels == 2
    assert_array_equal(joined.data == 1, low.data == low.data[12, 15])
    # A footprint threshold above the detection threshold changes nothing.
    same = segment_probabilities(probs, 0.5, 5, footprint_threshold=0.9)
    assert_array_equal(same.data, low.data)
    with pytest.raises(ValueError, match='footprint_threshold'):
        segment_probabilities(probs, 0.5, 5, footprint_threshold=1.5)


def test_footprint_threshold_does_not_join_different_colours():
    probs = _two_cores()
    # Give the right core its own colour: two touching sources.
    probs[1, 10:16, 18:30] = 0
    probs[2, 10:16, 18:30] = 1 - probs[0, 10:16, 18:30]
    segm = segment_probabilities(probs, 0.95, 5, footprint_threshold=0.5)
    assert segm.n_labels == 2


class TestMergePeakless:
    """Pieces of one source without a peak of their own are merged."""

    @staticmethod
    def _star(cy, cx, amp, sigma=3.0, shape=SHAPE):
        yy, xx = np.mgrid[:shape[0], :shape[1]]
        return amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))

    def test_ring_and_core_become_one(self):
        from astro_deepcolor.postprocessing import merge_peakless

        image = self._star(30, 40, 100.0)
        seg = np.zeros(SHAPE, int)
        seg[_disc(30, 40, 12)] = 1          # the ring (wing)
        seg[_disc(30, 40, 4)] = 2           # the core: holds the peak
        out = merge_peakless(seg, image)
        assert set(np.unique(out)) == {0, 2}
        # A rim along one side: its maximum is on the core's boundary.
        seg = np.zeros(SHAPE, int)
        seg[_disc(30, 40, 12)] = 1
        seg[_disc(30, 40, 12) & (np.mgrid[:60, :80][0] > 36)] = 3
        out = merge_peakless(seg, image)
        assert set(np.unique(out)) == {0, 1}

    def test_neighbour_with_its_own_peak_stays(self):
        from astro_deepcolor.postprocessing import merge_peakless

        # A faint star on a bright star's wing, enclosed by its footprint.
        image = self._star(30, 40, 100.0) + self._star(30, 50, 8.0, sigma=1.5)
        seg = np.zeros(SHAPE, int)
        seg[_disc(30, 40, 15)] = 1
        seg[_disc(30, 50, 3)] = 2
        out = merge_peakless(seg, image)
        assert set(np.unique(out)) == {0, 1, 2}
        # ... unless its bump is within the margin of the wing under it.
        out = merge_peakless(seg, image, margin=10.0)
        assert set(np.unique(out)) == {0, 1}

    def test_chain_and_errors(self):
        from astro_deepcolor.postprocessing import merge_peakless

        image = self._star(30, 40, 100.0)
        seg = np.zeros(SHAPE, int)
        seg[_disc(30, 40, 14)] = 1
        seg[_disc(30, 40, 9)] = 2
        seg[_disc(30, 40, 3)] = 3
        assert set(np.unique(merge_peakless(seg, image))) == {0, 3}
        with pytest.raises(ValueError, match='shape of segm'):
            merge_peakless(seg, image[:10])
