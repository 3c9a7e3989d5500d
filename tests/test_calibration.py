# Licensed under a 3-clause BSD style license - see LICENSE.rst
import numpy as np
import pytest

from astro_deepcolor.evaluation.calibration import (
    fit_reliability_map,
    reliability,
    threshold_at_contamination,
)
from astro_deepcolor.evaluation.colours import colour_statistics


def test_threshold_at_contamination():
    t = np.array([0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    c = np.array([0.30, 0.12, 0.04, 0.06, 0.03, np.nan])
    # 0.7 reaches 4 % but 0.8 goes back to 6 %: the first threshold from
    # which it stays <= 5 % is 0.9 (no detection at 0.95 counts as 0).
    assert threshold_at_contamination(t, c, 0.05) == 0.9
    assert threshold_at_contamination(t, c, 0.10) == 0.7
    assert threshold_at_contamination(t, c, 0.5) == 0.5
    assert np.isnan(threshold_at_contamination(t, np.full(6, 0.2), 0.1))
    with pytest.raises(ValueError, match='strictly increasing'):
        threshold_at_contamination(t[::-1], c, 0.05)
    with pytest.raises(ValueError, match='level'):
        threshold_at_contamination(t, c, 5)


def test_reliability_by_hand():
    p = np.array([0.55, 0.65, 0.85, 0.86, 0.97, 0.999, 1.0])
    y = np.array([0, 1, 1, 0, 1, 1, 1], bool)
    r = reliability(p, y, bins=(0.5, 0.8, 0.9, 1.0))
    assert r['n'].tolist() == [2, 2, 3]
    np.testing.assert_allclose(r['mean_probability'], [0.6, 0.855, (0.97 + 0.999 + 1) / 3])
    np.testing.assert_allclose(r['fraction_true'], [0.5, 0.5, 1.0])
    r = reliability(p[:1], y[:1], bins=(0.5, 0.8, 0.9, 1.0))
    assert np.isnan(r['fraction_true'][1])


def test_colour_statistics_by_hand():
    seg = np.zeros((20, 20), int)
    seg[2:5, 2:5] = 1
    seg[2:5, 5:8] = 2     # touches 1
    seg[15:18, 15:18] = 3  # alone
    seg[10:12, 2:4] = 4   # within 8 px of 1, other colour
    p = np.zeros((4, 20, 20))
    p[0] = 1
    for lab, col in ((1, 1), (2, 1), (3, 2), (4, 3)):
        p[:, seg == lab] = 0
        p[col, seg == lab] = 1
    st = colour_statistics(p, seg)
    assert st['n_sources'] == 4
    assert st['colour_counts'] == [2, 1, 1]
    assert st['live_colours'] == 3
    # Pairs within 8 px: (1, 2), (1, 4), (2, 4); 1 and 2 share a colour.
    assert st['n_neighbour_pairs'] == 3
    assert st['distinct_fraction'] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match='probs must be'):
        colour_statistics(p[:, :10], seg)
    # Source 2 is below the S/N cut: only the pair (1, 4) remains, and 2
    # is not counted in the colour use.
    truth = {'label': np.array([1, 2, 3, 4]), 'snr': np.array([9.0, 2.0, 9.0, 5.0])}
    st = colour_statistics(p, seg, truth=truth, min_snr=3)
    assert st['n_sources'] == 3
    assert st['colour_counts'] == [1, 1, 1]
    assert st['n_neighbour_pairs'] == 1
    assert st['distinct_fraction'] == 1.0
    with pytest.raises(ValueError, match='min_snr needs the truth'):
        colour_statistics(p, seg, min_snr=3)


def test_fit_reliability_map_recovers_a_known_curve():
    # Detections whose chance of being real is p**4: an overconfident
    # probability. The isotonic map recovers p**4 and is monotone.
    rng = np.random.default_rng(0)
    p = rng.uniform(0.5, 1.0, 20000)
    y = rng.random(p.size) < p**4
    knots = fit_reliability_map(p, y)
    x, r = np.array(knots['probability']), np.array(knots['reliability'])
    assert np.all(np.diff(x) > 0)
    assert np.all(np.diff(r) >= 0)
    np.testing.assert_allclose(np.interp([0.6, 0.8, 0.95], x, r),
                               np.array([0.6, 0.8, 0.95])**4, atol=0.05)
    with pytest.raises(ValueError, match='equal length'):
        fit_reliability_map(p[:3], y[:2])
