# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Smoke tests of the benchmark harness (quick mode on tiny images)."""

from pathlib import Path

import numpy as np
import pytest
from astropy.table import QTable
from numpy.testing import assert_array_equal

from astro_deepcolor.cli import main
from astro_deepcolor.evaluation.harness import (
    PROB_SWEEP,
    SIGMA_SWEEP,
    _best_at,
    available_detectors,
    make_detector,
    merge_results,
    refine_bracket,
    refine_crossing,
    run_sweeps,
    summarize,
    thresholds_for,
)
from astro_deepcolor.utils._parameters import check_threshold

DATA = Path(__file__).parents[1] / '..' / 'shared' / 'data' / 'real'


def test_sweeps_follow_protocol():
    assert PROB_SWEEP[0] == 0.02
    assert PROB_SWEEP[-1] == 1.0
    np.testing.assert_allclose(np.diff(PROB_SWEEP), 0.02)
    # every threshold of both CNN sweeps is one the finder accepts (the full
    # sweep once started at 0, which made `tox -e benchmark` fail at once
    # while the quick sweep of CI passed)
    for t in (*PROB_SWEEP, *thresholds_for('cnn', quick=True)):
        check_threshold(t)
    assert SIGMA_SWEEP[0] == 0.25
    assert SIGMA_SWEEP[-1] == 10.0
    assert len(SIGMA_SWEEP) == 40
    assert thresholds_for('sextractor') == list(SIGMA_SWEEP)
    assert len(thresholds_for('noisechisel')) == 18


def test_best_at():
    comp = np.array([0.9, 0.8, 0.5, np.nan])
    cont = np.array([0.3, 0.04, 0.0, 0.0])
    assert _best_at(comp, cont, 0.05) == (0.8, 1)
    assert _best_at(comp, cont, 0.01) == (0.5, 2)
    c, j = _best_at(comp, cont + 0.5, 0.1)
    assert np.isnan(c)
    assert j == -1


def test_unknown_detector():
    with pytest.raises(ValueError, match='detectors must be among'):
        available_detectors(['nope'])


def test_sourcextractor_rows_follow_the_model(tmp_path):
    """``--model`` never silently benchmarks the shipped SourceXtractor++
    model under another model's name."""
    import shutil

    from astro_deepcolor.baselines.sourcextractor_onnx import (
        DEFAULT_SOURCEXTRACTOR_MODEL,
    )
    from astro_deepcolor.model import DEFAULT_MODEL_PATH

    run, skipped = available_detectors(['cnn', 'cnn_sourcextractor'])
    assert run == ['cnn', 'cnn_sourcextractor']
    assert make_detector('cnn_sourcextractor', 4.0).model == DEFAULT_SOURCEXTRACTOR_MODEL
    mine = tmp_path / 'mine.onnx'
    shutil.copy(DEFAULT_MODEL_PATH, mine)
    run, skipped = available_detectors(['cnn', 'cnn_sourcextractor'], model=mine)
    assert run == ['cnn']
    assert 'mine_sourcextractor.onnx' in skipped['cnn_sourcextractor']
    shutil.copy(DEFAULT_SOURCEXTRACTOR_MODEL, tmp_path / 'mine_sourcextractor.onnx')
    run, _ = available_detectors(['cnn', 'cnn_sourcextractor'], model=mine)
    assert run == ['cnn', 'cnn_sourcextractor']
    det = make_detector('cnn_sourcextractor', 4.0, model=mine)
    assert det.model == tmp_path / 'mine_sourcextractor.onnx'


def test_cnn_flips_row_runs_the_flip_average(tmp_path):
    """The ``cnn_flips`` row is the finder with ``flips=True``, swept."""
    from astro_deepcolor import DeepColorSegmentation
    from astro_deepcolor.simulation import simulate_image

    run, _ = available_detectors(['cnn_flips'])
    assert run == ['cnn_flips']
    det = make_detector('cnn_flips', 4.0)
    assert det.flips
    assert det.name == 'cnn_flips'
    data = np.asarray(simulate_image((160, 192), seed=5).data, np.float32)
    (_t, segm, table), = det.sweep(data, [0.9])
    expected = DeepColorSegmentation(0.9, flips=True)(data)
    assert expected.n_labels >= 3
    assert_array_equal(segm.data, expected.data)
    assert len(table) == expected.n_labels
    plain = DeepColorSegmentation(0.9)(data)
    assert not np.array_equal(plain.data, expected.data)


def test_quick_cli_outputs(tmp_path, capsys):
    out = tmp_path / 'bench'
    status = main(['benchmark', '--quick', '--out', str(out), '--no-progress',
                   '--no-real', '--shape', '96', '96', '--bootstrap', '20',
                   '--detectors', 'sep', 'photutils', 'cnn', '--jobs', '2'])
    assert status == 0
    for name in ('curves.ecsv', 'summary.ecsv', 'completeness_binned.ecsv',
                 'fp_by_class.ecsv', 'report.html', 'raw.pickle', 'meta.json',
                 'run_settings.rst',
                 'benchmark_completeness_contamination.png',
                 'benchmark_completeness_mag.png', 'benchmark_fp_classes.png',
                 'benchmark_examples.png', 'astrometry_photometry.ecsv',
                 'benchmark_astrometry_photometry.png', 'summary_table.rst',
                 'measurement_table.rst', 'headline.rst'):
        assert (out / name).stat().st_size > 0, name
    curves = QTable.read(out / 'curves.ecsv')
    assert set(curves['regime']) == {'clean', 'contaminated'}
    assert {'sep', 'photutils'} <= set(curves['detector'])
    ok = ~curves['failed']
    for col in ('completeness', 'contamination'):
        v = np.asarray(curves[col][ok], float)
        v = v[np.isfinite(v)]
        assert v.size
        assert np.all((v >= 0) & (v <= 1))
    # counts are consistent with the rates
    r = curves[ok & (curves['tp'] + curves['fp'] > 0)][0]
    assert r['contamination'] == pytest.approx(r['fp'] / (r['tp'] + r['fp']))
    assert r['tp'] + r['fn'] == r['n_truth']
    summary = QTable.read(out / 'summary.ecsv')
    assert len(summary) == 2 * len(set(curves['detector']))
    for col in ('completeness_at_1pct', 'completeness_at_5pct',
                'completeness_at_10pct', 'min_contamination',
                'deblend_success', 'operating_completeness'):
        v = np.asarray(summary[col], float)
        v = v[np.isfinite(v)]
        assert np.all((v >= 0) & (v <= 1)), col
    # completeness at a looser contamination limit is never lower
    a = np.nan_to_num(np.asarray(summary['completeness_at_1pct'], float))
    b = np.nan_to_num(np.asarray(summary['completeness_at_10pct'], float))
    assert np.all(b >= a)
    # the docs draw the figures from these tables
    import matplotlib.pyplot as plt

    from astro_deepcolor.evaluation.report import plot_results

    for fig_name in ('curves', 'completeness_mag', 'fp_classes', 'astrometry'):
        fig = plot_results(fig_name, out)
        assert len(fig.axes) >= 2, fig_name
        plt.close(fig)
    note = plot_results('astrometry', tmp_path)
    assert 'astrometry_photometry.ecsv not found' in note.texts[0].get_text()
    plt.close(note)
    with pytest.raises(ValueError, match="name must be one of"):
        plot_results('nope', out)
    html = (out / 'report.html').read_text()
    assert 'benchmark_completeness_contamination.png' in html
    assert 'results in' in capsys.readouterr().out
    # the report can be rebuilt from the raw result alone
    status = main(['benchmark', '--from-raw', str(out / 'raw.pickle'),
                   '--out', str(tmp_path / 'again'), '--no-real',
                   '--bootstrap', '5'])
    assert status == 0
    assert (tmp_path / 'again' / 'summary.ecsv').exists()


def test_cli_errors(tmp_path, capsys):
    assert main(['benchmark', '--n-images', '0', '--out', str(tmp_path)]) == 2
    assert '--n-images must be a positive integer' in capsys.readouterr().err


def test_summary_counts_and_merge():
    a = run_sweeps(regimes=['clean'], detectors=['sep'], quick=True,
                   n_images=2, shape=(64, 64), progress=False)
    b = run_sweeps(regimes=['clean'], detectors=['photutils'], quick=True,
                   n_images=2, shape=(64, 64), progress=False)
    merged = merge_results(a, b)
    assert set(merged.records) == {('clean', 'sep'), ('clean', 'photutils')}
    curves, _summary, binned, _fps = summarize(merged, n_bootstrap=10)
    n_truth = len(merged.truth['clean'])
    assert np.all(curves['n_truth'] == n_truth)
    assert np.all(curves['tp'] + curves['fn'] == n_truth)
    kinds = binned[[q.startswith('kind:') for q in binned['quantity']]]
    assert kinds['n_truth'].sum() == 2 * n_truth
    c = run_sweeps(regimes=['clean'], detectors=['sep'], quick=True,
                   n_images=1, shape=(64, 64), progress=False)
    with pytest.raises(ValueError, match='different n_images'):
        merge_results(a, c)


def test_merge_drops_cnn_rows_of_another_model():
    """A CNN-only rerun with a new model must not leave the old model's
    other CNN rows in the merged result under the new model's name."""
    import dataclasses

    base = run_sweeps(regimes=['clean'], detectors=['sep'], quick=True,
                      n_images=1, shape=(64, 64), progress=False)
    rec = base.records[('clean', 'sep')]

    def result(names, model):
        return dataclasses.replace(
            base, records={('clean', n): rec for n in names},
            meta={**base.meta, 'model': model, 'detectors': list(names)},
            skipped={})

    old = result(['cnn', 'cnn_flips', 'cnn_sourcextractor', 'sep'], None)
    new = result(['cnn'], 'other.onnx')
    merged = merge_results(old, new)
    assert set(merged.records) == {('clean', 'cnn'), ('clean', 'sep')}
    assert merged.meta['model'] == 'other.onnx'
    assert merged.meta['detectors'] == ['cnn', 'sep']
    for name in ('cnn_flips', 'cnn_sourcextractor'):
        assert 'another model (the shipped model)' in merged.skipped[name]
    # the same model: the other CNN rows stay
    same = merge_results(result(['cnn', 'cnn_flips', 'sep'], 'm.onnx'),
                         result(['cnn'], 'm.onnx'))
    assert set(same.records) == {('clean', 'cnn'), ('clean', 'cnn_flips'),
                                 ('clean', 'sep')}
    # a classical-only rerun keeps the CNN rows and their model
    classical = merge_results(result(['cnn', 'sep'], 'm.onnx'),
                              result(['sep'], None))
    assert set(classical.records) == {('clean', 'cnn'), ('clean', 'sep')}
    assert classical.meta['model'] == 'm.onnx'


@pytest.mark.skipif(not DATA.is_dir(), reason='needs ../shared/data/real')
@pytest.mark.shared_data
def test_real_data_checks():
    from astro_deepcolor.evaluation.realdata import real_data_checks

    table = real_data_checks(['sep'], DATA)
    sep_field = table[table['dataset'] == 'sep/image.fits']
    # sep with SExtractor settings recovers the SExtractor reference catalogue
    assert sep_field['value'][0] >= 0.8
    assert set(table['dataset']) >= {'astride/long.fits',
                                     'legacypipe/testcase4 + Gaia'}


@pytest.mark.skipif(not (DATA / 'astride').is_dir(), reason='needs ../shared/data/real/astride')
@pytest.mark.shared_data
def test_streak_end_points_lie_on_the_streak():
    from astropy.io import fits

    from astro_deepcolor.evaluation.realdata import read_streaks

    data = fits.getdata(DATA / 'astride' / 'long.fits').astype(float)
    sky = np.median(data)
    for x0, y0, x1, y1 in read_streaks(DATA / 'astride' / 'long.fits.out.txt'):
        t = np.linspace(0.1, 0.9, 50)
        xs = np.round(x0 + t * (x1 - x0)).astype(int)
        ys = np.round(y0 + t * (y1 - y0)).astype(int)
        # Along the segment the trail is brighter than the sky almost
        # everywhere (the swapped diagonal misses it by up to ~15 px).
        assert np.mean(data[ys, xs] > sky + 3 * np.std(data[data < np.percentile(data, 90)])) > 0.8


def test_points_without_detections_reach_no_contamination_level():
    """A threshold that detects nothing has no contamination: it must not
    count as 'completeness 0 at 1 % contamination' nor be the operating
    point (the CNN at probability 1 used to be both)."""
    result = run_sweeps(regimes=['clean'], detectors=['sep'], quick=True,
                        n_images=1, shape=(64, 64), progress=False)
    rec = result.records[('clean', 'sep')]
    n = len(rec.thresholds)
    total = 10
    # Hand-made curve: contamination 50 %, 30 %, ... and nothing detected
    # at the last threshold.
    tp = np.linspace(total, 0, n).round().astype(int)
    tp[-2] = max(tp[-2], 1)
    fp = np.where(tp > 0, np.maximum(1, tp // 2), 0)
    rec.tp[0] = tp
    rec.fp[0] = fp
    rec.fn[0] = total - tp
    rec.tp_bright[0] = np.minimum(tp, rec.n_bright[0])
    _curves, summary, _binned, _fps = summarize(result, n_bootstrap=5)
    row = summary[0]
    assert np.isnan(row['completeness_at_1pct'])
    assert row['operating_completeness'] > 0
    assert row['min_contamination'] > 0.2


def test_bootstrap_error_only_over_resamples_that_reach_the_level():
    """Resamples that never reach a contamination level are not counted as
    completeness 0 (which inflated the error); how often the level is
    reached is reported beside it."""
    result = run_sweeps(regimes=['clean'], detectors=['sep'], quick=True,
                        n_images=2, shape=(64, 64), progress=False)
    rec = result.records[('clean', 'sep')]
    n = len(rec.thresholds)
    # Image 0: 10 true detections, no false ones; image 1: 10 and 5.
    # Pooled: 20 % contamination, completeness 1 at every threshold.
    for i, fp in enumerate((0, 5)):
        rec.tp[i] = np.full(n, 10)
        rec.fp[i] = np.full(n, fp)
        rec.fn[i] = np.zeros(n, int)
        rec.tp_bright[i] = np.minimum(rec.tp[i], rec.n_bright[i])
    _curves, summary, _binned, _fps = summarize(result, n_bootstrap=200)
    row = summary[0]
    assert row['completeness_at_20pct'] == 1.0
    # Resamples (1, 1) reach only 33 %: about a quarter miss 20 %.
    assert 0.6 < row['completeness_at_20pct_reached'] < 0.9
    assert row['completeness_at_20pct_err'] == 0.0
    assert np.isnan(row['completeness_at_5pct'])
    assert np.isnan(row['completeness_at_5pct_err'])
    assert 0.1 < row['completeness_at_5pct_reached'] < 0.4
    assert row['completeness_bright_at_20pct'] == pytest.approx(
        np.sum(rec.tp_bright, axis=0)[0] / np.sum(rec.n_bright))
    # The docs table shows the S/N >= 5 column, '--' where unreached.
    from astro_deepcolor.evaluation.report import summary_rst

    text = summary_rst(summary)
    cells = text.split('* - ')[-1].split('\n     - ')
    assert cells[0] == 'clean'
    assert cells[2:5] == ['--', '--', '--']  # 1, 5 and 10 % unreached
    assert cells[5].startswith('1.000 ± 0.000 (t=')
    assert cells[6] == '--'  # S/N >= 5 at 5 %: unreached
    assert cells[7].strip() == '-- (0 pairs)'


@pytest.mark.parametrize('n_points', [1, 3])
def test_refine_crossing_finds_the_crossing_of_a_monotone_curve(n_points):
    """On a falling curve sampled on the 0.02 grid, refinement brackets the
    exact crossing of each level within grid step / (n_points + 1)**rounds,
    with the upper end at or below the level (so 'completeness at x %' is
    measured at x %, not at the next grid point)."""
    def contamination(t):
        return 0.6 * np.exp(-6.0 * np.asarray(t, float))

    calls = []

    def evaluate(thresholds):
        calls.append(list(thresholds))
        return contamination(thresholds)

    grid = np.round(np.arange(0, 1.0001, 0.02), 2)
    for level in (0.01, 0.05, 0.10, 0.20):
        crossing = np.log(0.6 / level) / 6.0
        j = int(np.flatnonzero(contamination(grid) <= level)[0])
        lo, hi = refine_crossing(evaluate, grid[j - 1], grid[j], level,
                                 n_rounds=3, n_points=n_points)
        assert lo < crossing <= hi
        assert hi - lo <= 0.02 / (n_points + 1) ** 3 + 2e-6  # 6-decimal thresholds
        assert contamination(hi) <= level < contamination(lo)
        # the grid point itself was up to a whole step away
        assert hi - crossing < grid[j] - crossing or grid[j] == hi
    assert all(len(c) == n_points for c in calls)


def test_refine_bracket_rules():
    # lowest point at or below the level becomes hi; highest above it, lo
    assert refine_bracket(0.0, 1.0, [0.25, 0.5, 0.75], [0.3, 0.04, 0.01],
                          0.05) == (0.25, 0.5)
    # nothing below the level inside: only lo moves
    assert refine_bracket(0.0, 1.0, [0.25, 0.5], [0.3, 0.2], 0.05) == (0.5, 1.0)
    # unmeasured points (NaN) and points outside the bracket are ignored
    assert refine_bracket(0.0, 1.0, [0.5, 2.0], [np.nan, 0.0], 0.05) == (0.0, 1.0)
    with pytest.raises(ValueError, match='same shape'):
        refine_bracket(0.0, 1.0, [0.5], [0.1, 0.2], 0.05)
    with pytest.raises(ValueError, match='lo must be below hi'):
        refine_crossing(lambda t: t, 1.0, 0.5, 0.05)


def test_summary_is_measured_at_refined_thresholds():
    """Refined thresholds lie between grid points, the reported completeness
    at x % is measured at <= x % and never below the grid figure, and the
    operating point carries position and flux measurements."""
    result = run_sweeps(regimes=['clean'], detectors=['sep'], quick=True,
                        n_images=2, shape=(128, 128), progress=False,
                        refine_rounds=2)
    rec = result.records[('clean', 'sep')]
    grid = [t for t, r in zip(rec.thresholds, rec.refined, strict=True)
            if not r]
    assert grid == list(thresholds_for('sep', quick=True))
    extra = [t for t, r in zip(rec.thresholds, rec.refined, strict=True) if r]
    assert extra, 'no crossing was refined'
    assert all(min(grid) < t < max(grid) and t not in grid for t in extra)
    n = len(rec.thresholds)
    assert all(len(x) == n for x in rec.tp)
    assert all(np.asarray(m).shape[0] == n for m in rec.matched)
    curves, summary, _binned, _fps = summarize(result, n_bootstrap=5)
    assert curves['refined'].sum() == len(extra)
    row = summary[0]
    for level in (1, 5, 10, 20):
        c = row[f'completeness_at_{level}pct']
        if np.isfinite(c):
            assert row[f'contamination_at_{level}pct'] <= level / 100
            g = row[f'completeness_grid_at_{level}pct']
            assert not np.isfinite(g) or c >= g
    assert row['n_matched_bright'] > 0
    assert 0 <= row['position_error_median'] <= row['position_error_68'] < 5
    assert -1 < row['flux_ratio_bias'] < 1
    from astro_deepcolor.evaluation.harness import astrometry_photometry

    astro = astrometry_photometry(result)
    pos = astro[astro['quantity'] == 'position_error']
    assert pos['n'].sum() == int(np.sum(
        [np.asarray(m)[rec.thresholds.index(_op_threshold(row, rec))].sum()
         for m in rec.matched]))


def _op_threshold(row, rec):
    from astro_deepcolor.evaluation.harness import _threshold_label

    return next(t for t in rec.thresholds
                if _threshold_label(t) == row['operating_threshold'])


def test_refine_rounds_validated():
    with pytest.raises(ValueError, match='refine_rounds must be a '
                       'non-negative integer, got -1'):
        run_sweeps(regimes=['clean'], detectors=['sep'], quick=True,
                   n_images=1, shape=(64, 64), progress=False,
                   refine_rounds=-1)


def test_real_images_use_the_benchmark_operating_points():
    from astro_deepcolor.evaluation.realdata import operating_thresholds

    summary = QTable({'regime': ['clean', 'contaminated', 'contaminated'],
                      'detector': ['sep', 'sep', 'noisechisel'],
                      'operating_threshold': ['1.25', '2.375', 'q=0.3,sn=0.99']})
    assert operating_thresholds(summary) == {'sep': 2.375,
                                             'noisechisel': (0.3, 0.99)}
    assert operating_thresholds(summary, 'clean') == {'sep': 1.25}
    only_clean = summary[summary['regime'] == 'clean']
    assert operating_thresholds(only_clean) == {'sep': 1.25}


def test_headline_says_how_much_of_the_lead_was_sampling():
    from astro_deepcolor.evaluation.report import headline_rst

    summary = QTable({'regime': ['clean', 'clean'], 'detector': ['cnn', 'sep'],
                      'completeness_at_5pct': [0.55, 0.50],
                      'completeness_grid_at_5pct': [0.55, 0.45]})
    text = headline_rst(summary)
    assert 'CNN 0.550, sep 0.500 (lead +5.0 points)' in text
    assert 'grid alone the lead was +10.0 points' in text
    assert '+5.0 points of it came from grid sampling' in text
