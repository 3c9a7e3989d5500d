# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Write the benchmark outputs: ECSV tables, PNG plots and an HTML report.

Files written under the results directory:

* ``curves.ecsv``: every curve point (regime, detector, threshold, counts,
  completeness, contamination, bootstrap errors);
* ``summary.ecsv``: per detector and regime, completeness at 1, 5 and 10 %
  contamination, lowest contamination reached, operating point (best
  completeness at <= 5 % contamination, else the cleanest point),
  deblending success and false positives per contaminant class there;
* ``completeness_binned.ecsv`` (magnitude, S/N and kind bins) and
  ``fp_by_class.ecsv``;
* ``astrometry_photometry.ecsv``: position error per S/N bin and flux
  ratio per magnitude bin at each operating point;
* ``summary_table.rst``, ``measurement_table.rst``, ``headline.rst`` and
  ``run_settings.rst``: the summary as reStructuredText tables and what
  the run measured (included by the docs);
* ``real_data.ecsv`` when the real-image checks ran;
* ``benchmark_completeness_contamination.png``, ``benchmark_completeness_mag.png``,
  ``benchmark_astrometry_photometry.png``, ``benchmark_fp_classes.png``,
  ``benchmark_examples.png``;
* ``report.html`` linking all of them.
"""

import html
import json
from pathlib import Path

import numpy as np

__all__ = [
    'SUMMARY_COLUMNS',
    'headline_rst',
    'measurement_rst',
    'plot_astrometry',
    'plot_completeness_mag',
    'plot_curves',
    'plot_fp_classes',
    'plot_results',
    'settings_rst',
    'summary_rst',
    'write_outputs',
]

#: Columns of the summary shown in the HTML report and the docs.
SUMMARY_COLUMNS = (
    'regime', 'detector', 'n_truth', 'completeness_at_1pct',
    'completeness_at_5pct', 'completeness_at_10pct', 'completeness_at_20pct',
    'completeness_at_50pct', 'completeness_bright_at_5pct',
    'completeness_bright_at_20pct', 'completeness_bright_at_50pct',
    'min_contamination', 'operating_threshold', 'operating_completeness',
    'operating_completeness_bright', 'deblend_success', 'fp_total',
    'position_error_median', 'position_error_68', 'flux_ratio_bias',
    'flux_ratio_scatter',
)

_COLORS = {'cnn': 'C3', 'cnn_flips': 'C5', 'cnn_sourcextractor': 'C6', 'sep': 'C0',
           'sep_matched': 'C9',
           'photutils': 'C2', 'sextractor': 'C1',
           'noisechisel': 'C4'}


def _order(names):
    from .harness import DETECTOR_ORDER

    return sorted(names, key=lambda n: (DETECTOR_ORDER.index(n)
                                        if n in DETECTOR_ORDER else 99, n))


def _plt():
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    return plt


def _write(table, path):
    table.write(path, format='ascii.ecsv', overwrite=True)


#: Left edge of the logarithmic contamination axis; points with no false
#: positive are drawn there.
CONTAMINATION_FLOOR = 1e-3

_FONT = {'font.size': 11, 'axes.titlesize': 11, 'axes.labelsize': 11,
         'legend.fontsize': 9, 'xtick.labelsize': 10, 'ytick.labelsize': 10}


def _caption(fig, text, *, bottom=0.16):
    """Write a caption under the axes (wrapped to the figure width)."""
    import textwrap

    width = int(fig.get_figwidth() * 13)
    fig.text(0.01, 0.01, textwrap.fill(text, width), ha='left', va='bottom',
             fontsize=9, color='0.25')
    fig.subplots_adjust(bottom=bottom)


def _finish(plt, fig, path):
    """Save and close (``path``), or return the figure (``path=None``)."""
    if path is None:
        return fig
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def plot_results(name, results_dir=None):
    """
    Draw one benchmark figure from the tables a benchmark run wrote.

    This is how the documentation draws its figures: from the ECSV files
    under ``results/benchmark`` at build time, never from copied images.

    Parameters
    ----------
    name : {'curves', 'completeness_mag', 'fp_classes', 'astrometry'}
        The figure.
    results_dir : str or `~pathlib.Path`, optional
        The results directory (default: ``results/benchmark`` of the
        source tree).

    Returns
    -------
    fig : `~matplotlib.figure.Figure`
        The figure (a note saying which file is missing when the run did
        not write it).
    """
    from astropy.table import QTable

    root = (Path(results_dir) if results_dir is not None
            else Path(__file__).resolve().parents[2] / 'results' / 'benchmark')
    needs = {'curves': ('curves', 'summary'),
             'completeness_mag': ('completeness_binned', 'summary'),
             'fp_classes': ('fp_by_class',),
             'astrometry': ('astrometry_photometry',)}
    if name not in needs:
        msg = f'name must be one of {sorted(needs)}, got {name!r}'
        raise ValueError(msg)
    missing = [f'{f}.ecsv' for f in needs[name]
               if not (root / f'{f}.ecsv').is_file()]
    if missing:
        plt = _plt()
        fig = plt.figure(figsize=(8, 1.2))
        fig.text(0.5, 0.5, f'{", ".join(missing)} not found in {root.name}/: '
                 'run the benchmark (tox -e benchmark) to draw this figure',
                 ha='center', va='center')
        return fig
    tables = [QTable.read(root / f'{f}.ecsv') for f in needs[name]]
    func = {'curves': plot_curves, 'completeness_mag': plot_completeness_mag,
            'fp_classes': plot_fp_classes, 'astrometry': plot_astrometry}[name]
    return func(*tables, None)


def plot_curves(curves, summary, path):
    """
    Completeness vs contamination, one panel per regime.

    The contamination axis is logarithmic from 0.1 % to 100 % (points with
    no false positive are drawn at 0.1 %); the refined points measured at
    each reported level are marked.

    Parameters
    ----------
    curves, summary : `~astropy.table.QTable`
        From `~astro_deepcolor.evaluation.harness.summarize`.
    path : str or `~pathlib.Path` or None
        Output PNG (None: return the figure).
    """
    plt = _plt()
    regimes = list(dict.fromkeys(curves['regime']))
    with plt.rc_context(_FONT):
        fig, axes = plt.subplots(1, len(regimes),
                                 figsize=(5.0 * len(regimes) + 0.6, 5.2),
                                 squeeze=False, sharey=True)
        for ax, regime in zip(axes[0], regimes, strict=True):
            sel = curves[curves['regime'] == regime]
            n_truth = int(sel['n_truth'][0])
            n_img = int(sel['n_images'][0])
            for name in _order(set(sel['detector'])):
                # Points without detections have no contamination.
                c = sel[(sel['detector'] == name) & ~sel['failed']
                        & (sel['tp'] + sel['fp'] > 0)]
                x = np.clip(np.asarray(c['contamination'], float),
                            CONTAMINATION_FLOOR, None)
                y = np.asarray(c['completeness'], float)
                style = {'fmt': 'D', 'ms': 4} if name == 'noisechisel' else \
                    {'fmt': '-o', 'ms': 2.5, 'lw': 1.3}
                ax.errorbar(x, y, yerr=c['completeness_err'],
                            elinewidth=0.6, color=_COLORS.get(name),
                            label=name, **style)
                op = summary[(summary['regime'] == regime)
                             & (summary['detector'] == name)]
                for level in (0.01, 0.05, 0.10, 0.20):
                    key = f'{round(level * 100):d}pct'
                    if not len(op) or f'contamination_at_{key}' not in op.colnames:
                        continue
                    cx = float(op[f'contamination_at_{key}'][0])
                    cy = float(op[f'completeness_at_{key}'][0])
                    if np.isfinite(cx) and np.isfinite(cy):
                        ax.plot(max(cx, CONTAMINATION_FLOOR), cy, '*', ms=9,
                                mec='k', mew=0.5, color=_COLORS.get(name),
                                zorder=5)
            for level in (0.01, 0.05, 0.10, 0.20):
                ax.axvline(level, color='0.75', lw=0.8, ls=':', zorder=0)
                ax.text(level, 1.005, f'{level:.0%}', ha='center',
                        va='bottom', fontsize=8, color='0.4',
                        transform=ax.get_xaxis_transform())
            ax.set_xscale('log')
            ax.set_xlim(CONTAMINATION_FLOOR * 0.8, 1.0)
            ax.xaxis.set_major_formatter(
                plt.FuncFormatter(lambda v, _: f'{v:.1%}'.replace('.0%', '%')
                                  if v < 0.01 else f'{v:.0%}'))
            ax.set_ylim(0, 1.0)
            ax.set_xlabel('contamination FP / (TP + FP)')
            ax.set_title(f'{regime}: {n_img} images, {n_truth} sources',
                         pad=14)
            ax.grid(alpha=0.3, which='both')
        axes[0][0].set_ylabel('completeness TP / (TP + FN)')
        axes[0][-1].legend(loc='lower right')
        fig.tight_layout()
        _caption(fig, 'Completeness against contamination over each '
                 "detector's threshold sweep, all sources pooled over the "
                 'test images (error bars: bootstrap over images). Stars: '
                 'the thresholds refined to reach 1, 5, 10 and 20 % '
                 'contamination (the summary table). Points with no false '
                 'positive are drawn at 0.1 %.', bottom=0.24)
        return _finish(plt, fig, path)


def plot_astrometry(astrometry, path):
    """
    Position error vs S/N and flux ratio vs magnitude at the operating points.

    Parameters
    ----------
    astrometry : `~astropy.table.QTable`
        From `~astro_deepcolor.evaluation.harness.astrometry_photometry`.
    path : str or `~pathlib.Path` or None
        Output PNG (None: return the figure).

    Returns
    -------
    written : bool or `~matplotlib.figure.Figure`
        False when there is nothing to plot; the figure when ``path`` is
        None.
    """
    if not len(astrometry):
        return False
    plt = _plt()
    regimes = list(dict.fromkeys(astrometry['regime']))
    with plt.rc_context(_FONT):
        fig, axes = plt.subplots(2, len(regimes),
                                 figsize=(5.0 * len(regimes) + 0.6, 8.4),
                                 squeeze=False, sharex='row', sharey='row')
        for col, regime in enumerate(regimes):
            sel = astrometry[astrometry['regime'] == regime]
            for row, quantity in enumerate(('position_error', 'flux_ratio')):
                ax = axes[row][col]
                q = sel[(sel['quantity'] == quantity) & (sel['n'] >= 3)]
                for name in _order(set(sel['detector'])):
                    d = q[q['detector'] == name]
                    if not len(d):
                        continue
                    low = np.asarray(d['low'], float)
                    high = np.asarray(d['high'], float)
                    center = np.asarray(d['center'], float)
                    spread = np.asarray(d['spread'], float)
                    color = _COLORS.get(name)
                    label = f"{name} ({d['operating_threshold'][0]})"
                    if quantity == 'position_error':
                        mid = np.sqrt(low * high)
                        ax.plot(mid, center, '-o', ms=3, color=color,
                                label=label)
                        ax.plot(mid, spread, '--', color=color, lw=1)
                    else:
                        mid = 0.5 * (low + high)
                        ax.plot(mid, center, '-o', ms=3, color=color,
                                label=label)
                        ax.fill_between(mid, center - spread, center + spread,
                                        color=color, alpha=0.12, lw=0)
                if quantity == 'position_error':
                    ax.set_xscale('log')
                    ax.set_yscale('log')
                    ax.set_xlabel('true S/N')
                    ax.axvline(5, color='0.6', lw=0.7, ls=':')
                    ax.set_title(f'{regime}: position error', pad=6)
                    if col == 0:
                        ax.set_ylabel('pixels (median; dashed: 68 % radius)')
                else:
                    ax.axhline(0, color='0.5', lw=0.8)
                    ax.set_xlabel('true magnitude')
                    ax.set_title(f'{regime}: flux / true flux - 1', pad=6)
                    if col == 0:
                        ax.set_ylabel('median bias (band: robust scatter)')
                ax.grid(alpha=0.3, which='both')
            if axes[0][col].get_legend_handles_labels()[0]:
                axes[0][col].legend(loc='upper right', fontsize=8)
        fig.tight_layout()
        n_img = astrometry.meta.get('n_images', '?')
        _caption(fig, "Matched sources at each detector's operating point "
                 '(best completeness at <= 5 % contamination; threshold in '
                 f'the legend), pooled over {n_img} test images per regime. '
                 'Top: distance from the detection centroid to the true '
                 'position per true-S/N bin. Bottom: measured segment or '
                 'isophotal flux over true flux per true-magnitude bin. Bins '
                 'with fewer than 3 matches are not drawn.', bottom=0.12)
        if path is None:
            return fig
        _finish(plt, fig, path)
    return True


def plot_completeness_mag(binned, summary, path):
    """
    Completeness vs magnitude and S/N at each detector's operating point.

    Parameters
    ----------
    binned, summary : `~astropy.table.QTable`
        From `~astro_deepcolor.evaluation.harness.summarize`.
    path : str or `~pathlib.Path` or None
        Output PNG (None: return the figure).
    """
    plt = _plt()
    regimes = list(dict.fromkeys(binned['regime']))
    with plt.rc_context(_FONT):
        fig, axes = plt.subplots(2, len(regimes),
                                 figsize=(5.0 * len(regimes) + 0.6, 8.4),
                                 squeeze=False, sharey=True)
        for col, regime in enumerate(regimes):
            for row, quantity in enumerate(('mag', 'snr')):
                ax = axes[row][col]
                sel = binned[(binned['regime'] == regime)
                             & (binned['quantity'] == quantity)]
                for name in _order(set(sel['detector'])):
                    b = sel[(sel['detector'] == name) & (sel['n_truth'] > 0)]
                    mid = (np.sqrt(b['low'] * b['high']) if quantity == 'snr'
                           else 0.5 * (b['low'] + b['high']))
                    n = np.asarray(b['n_truth'], float)
                    p = np.asarray(b['completeness'], float)
                    err = np.sqrt(np.clip(p * (1 - p), 0, None) / n)
                    op = summary[(summary['regime'] == regime)
                                 & (summary['detector'] == name)]
                    ax.errorbar(mid, p, yerr=err, fmt='-o', ms=3, lw=1.2,
                                color=_COLORS.get(name), elinewidth=0.6,
                                label=f'{name} ({op["operating_threshold"][0]})')
                if quantity == 'snr':
                    ax.set_xscale('log')
                    ax.axvline(5, color='0.6', lw=0.7, ls=':')
                    ax.set_xlabel('true S/N')
                else:
                    ax.set_xlabel('true magnitude')
                    n_truth = int(summary[summary['regime'] == regime]
                                  ['n_truth'][0])
                    ax.set_title(f'{regime}: {n_truth} sources')
                ax.set_ylim(0, 1.02)
                ax.grid(alpha=0.3)
                if col == 0:
                    ax.set_ylabel('completeness')
            axes[0][col].legend(fontsize=8, loc='lower left')
        fig.tight_layout()
        n_img = summary.meta.get('n_images', '?')
        _caption(fig, "Completeness per true-magnitude bin (top) and "
                 "true-S/N bin (bottom) at each detector's operating point "
                 '(best completeness at <= 5 % contamination, threshold in '
                 f'the legend), {n_img} test images per regime; error bars '
                 'binomial.', bottom=0.1)
        return _finish(plt, fig, path)


def plot_fp_classes(fp_table, path):
    """
    False positives per image and contaminant class, per detector.

    Parameters
    ----------
    fp_table : `~astropy.table.QTable`
        From `~astro_deepcolor.evaluation.harness.summarize`.
    path : str or `~pathlib.Path` or None
        Output PNG (None: return the figure).
    """
    plt = _plt()
    regimes = list(dict.fromkeys(fp_table['regime']))
    with plt.rc_context(_FONT):
        fig, axes = plt.subplots(1, len(regimes),
                                 figsize=(5.4 * len(regimes) + 0.6, 5.0),
                                 squeeze=False, sharey=True)
        for ax, regime in zip(axes[0], regimes, strict=True):
            sel = fp_table[fp_table['regime'] == regime]
            classes = list(dict.fromkeys(sel['contaminant']))
            names = _order(set(sel['detector']))
            width = 0.8 / max(len(names), 1)
            x = np.arange(len(classes))
            for k, name in enumerate(names):
                d = sel[sel['detector'] == name]
                vals = [float(d[d['contaminant'] == c]['fp_per_image'][0])
                        for c in classes]
                ax.bar(x + (k - (len(names) - 1) / 2) * width, vals, width,
                       color=_COLORS.get(name), label=name)
            ax.set_xticks(x, classes, rotation=45, ha='right', fontsize=9)
            ax.set_yscale('symlog', linthresh=0.1)
            ax.set_title(f'{regime}')
            ax.grid(alpha=0.3, axis='y')
        axes[0][0].set_ylabel('false positives per image')
        axes[0][-1].legend(fontsize=8)
        fig.tight_layout()
        n_img = fp_table.meta.get('n_images', '?')
        _caption(fig, "False positives per image at each detector's "
                 'operating point, charged to every contaminant class under '
                 "their footprint ('none': noise or fragments of real "
                 f'sources), {n_img} test images per regime.', bottom=0.3)
        return _finish(plt, fig, path)


def _stretch(data):
    data = np.asarray(data, float)
    med = np.nanmedian(data)
    mad = 1.4826 * np.nanmedian(np.abs(data - med)) or 1.0
    return np.arcsinh((data - med) / (3 * mad))


def plot_examples(result, summary, path):
    """Input, truth and detections (sep, CNN or another) per regime."""
    plt = _plt()
    regimes = [r for r in result.meta['regimes'] if r in result.examples]
    if not regimes:
        return False
    shown = []
    for name in ('sep', 'cnn'):
        if any(name in result.examples[r]['detections'] for r in regimes):
            shown.append(name)
    ncol = 2 + len(shown)
    fig, axes = plt.subplots(len(regimes), ncol, figsize=(3.4 * ncol,
                                                           3.8 * len(regimes) + 0.8),
                             squeeze=False)
    for row, regime in zip(axes, regimes, strict=True):
        ex = result.examples[regime]
        img = _stretch(ex['data'])
        vmin, vmax = np.percentile(img, [1, 99.7])
        row[0].imshow(img, origin='lower', cmap='gray', vmin=vmin, vmax=vmax)
        cont = ex['contaminants']
        if cont.any():
            row[0].contour(cont > 0, levels=[0.5], colors='y', linewidths=0.4)
        row[0].set_title(f'{regime} regime: input image\n(contaminants outlined '
                         'in yellow)', fontsize=9)
        tseg = ex['truth_seg']
        row[1].imshow(tseg.data, origin='lower', cmap=tseg.cmap,
                      interpolation='nearest')
        row[1].set_title(f'truth: {len(ex["truth"])} source\nfootprints',
                         fontsize=9)
        for ax, name in zip(row[2:], shown, strict=True):
            op = summary[(summary['regime'] == regime)
                         & (summary['detector'] == name)]
            label = op['operating_threshold'][0] if len(op) else None
            dets = ex['detections'].get(name, {})
            if label not in dets:  # a refined point: the nearest grid one
                label = _nearest_label(label, dets)
            if label is None:
                ax.set_axis_off()
                continue
            segm, table = dets[label]
            ax.imshow(img, origin='lower', cmap='gray', vmin=vmin, vmax=vmax)
            if segm is not None:
                ax.imshow(np.ma.masked_equal(segm.data, 0), origin='lower',
                          cmap=segm.cmap, alpha=0.45, interpolation='nearest')
            ax.plot(ex['truth']['x'], ex['truth']['y'], '+', color='c', ms=4,
                    mew=0.6)
            unit = 'probability' if name.startswith('cnn') else 'sigma'
            ax.set_title(f'{name}, threshold {label} {unit}:\n'
                         f'{len(table)} detections', fontsize=9)
        ny, nx = ex['data'].shape
        for ax in row:
            ax.set_xlim(-0.5, nx - 0.5)
            ax.set_ylim(-0.5, ny - 0.5)
            ax.set_xticks([])
            ax.set_yticks([])
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig.legend(handles=[
        Line2D([], [], color='y', lw=1, label='contaminant outline'),
        Line2D([], [], marker='+', ls='', color='c', ms=7,
               label='true source position'),
        Patch(color='tab:orange', alpha=0.45,
              label="detected footprints (one colour per source), at the "
                    "detector's operating point"),
    ], loc='lower center', ncol=3, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _nearest_label(label, dets):
    try:
        t = float(label)
    except (TypeError, ValueError):
        return None
    scalar = {}
    for k in dets:
        try:
            scalar[k] = float(k)
        except ValueError:
            continue
    if not scalar:
        return None
    return min(scalar, key=lambda k: abs(scalar[k] - t))


def _fmt(v):
    if isinstance(v, (float, np.floating)):
        return 'nan' if not np.isfinite(v) else f'{v:.3f}'
    return html.escape(str(v))


def _html_table(table, columns):
    cols = [c for c in columns if c in table.colnames]
    head = ''.join(f'<th>{html.escape(c)}</th>' for c in cols)
    rows = ''.join('<tr>' + ''.join(f'<td>{_fmt(r[c])}</td>' for c in cols)
                   + '</tr>' for r in table)
    return f'<table border="1" cellspacing="0" cellpadding="3"><tr>{head}</tr>{rows}</table>'


def _pct(r, key, *, err=True):
    v = float(r[key]) if key in r.colnames else np.nan
    if not np.isfinite(v):
        return '--'
    e = r[key + '_err'] if err and key + '_err' in r.colnames else None
    if e is not None and np.isfinite(e):
        return f'{v:.3f} ± {float(e):.3f}'
    return f'{v:.3f}'


def _list_table(head, rows, widths=None):
    lines = ['.. list-table::', '   :header-rows: 1']
    if widths:
        lines.append('   :widths: ' + ' '.join(str(w) for w in widths))
    lines.append('')
    for cells in [head, *rows]:
        lines.append('   * - ' + '\n     - '.join(str(c) for c in cells))
    return '\n'.join(lines) + '\n'


def _ordered(summary):
    regimes = list(dict.fromkeys(summary['regime']))
    order = {n: i for i, n in enumerate(_order(set(summary['detector'])))}
    return sorted(summary, key=lambda r: (regimes.index(r['regime']),
                                          order[r['detector']]))


def settings_rst(summary, meta):
    """
    One paragraph of reStructuredText saying what a benchmark run measured.

    Parameters
    ----------
    summary : `~astropy.table.QTable`
        From `~astro_deepcolor.evaluation.harness.summarize`.
    meta : dict
        The run settings (``BenchmarkResult.meta``).

    Returns
    -------
    text : str
    """
    shape = meta.get('shape')
    size = ('the recipe size' if not shape
            else f'{shape[0]} x {shape[1]} pixels')
    parts = []
    for regime in dict.fromkeys(summary['regime']):
        r = summary[summary['regime'] == regime][0]
        parts.append(f"{regime}: {int(r['n_images'])} images, "
                     f"{int(r['n_truth'])} true sources "
                     f"({int(r['n_truth_bright'])} with S/N ≥ "
                     f"{meta.get('snr_min', 5):g})")
    model = meta.get('model') or 'the shipped model'
    text = (f"Test split, {size}; {'; '.join(parts)}. Detectors: "
            f"{', '.join(_order(set(summary['detector'])))}; CNN: {model}. "
            f"Run on {str(meta.get('date', '?'))[:10]}")
    if 'refine_rounds' in meta:
        text += (f", thresholds refined at each contamination level in "
                 f"{meta['refine_rounds']} rounds")
    else:
        text += ', before threshold refinement (grid points only)'
    skipped = meta.get('skipped') or {}
    if skipped:
        text += '; skipped: ' + ', '.join(sorted(skipped))
    return text + '.\n'


def headline_rst(summary, *, reference='sep', level=5):
    """
    The headline comparison of the CNN with a classical detector (rst).

    For each regime: the CNN's and the reference detector's completeness
    at ``level`` % contamination at the refined thresholds, the lead, and
    the lead read off the protocol grid alone (what sampling contributed).

    Parameters
    ----------
    summary : `~astropy.table.QTable`
        From `~astro_deepcolor.evaluation.harness.summarize`.
    reference : str, optional
        The classical detector to compare with.
    level : int, optional
        Contamination level (percent).

    Returns
    -------
    text : str
    """
    key = f'completeness_at_{level}pct'
    grid_key = f'completeness_grid_at_{level}pct'
    items = []
    for regime in dict.fromkeys(summary['regime']):
        sel = summary[summary['regime'] == regime]
        rows = {str(r['detector']): r for r in sel}
        if 'cnn' not in rows or reference not in rows:
            continue
        c, b = rows['cnn'], rows[reference]
        cv, bv = float(c[key]), float(b[key])

        def fmt(v):
            return f'{v:.3f}' if np.isfinite(v) else '-- (never that clean)'

        text = (f'**{regime}**: completeness at {level} % contamination, '
                f'CNN {fmt(cv)}, {reference} {fmt(bv)}')
        if np.isfinite(cv) and np.isfinite(bv):
            text += f' (lead {100 * (cv - bv):+.1f} points)'
        if grid_key in sel.colnames:
            cg, bg = float(c[grid_key]), float(b[grid_key])
            if np.isfinite(cg) and np.isfinite(bg):
                text += (f'; read off the protocol grid alone the lead was '
                         f'{100 * (cg - bg):+.1f} points')
                if np.isfinite(cv) and np.isfinite(bv):
                    text += (f', so {100 * ((cg - bg) - (cv - bv)):+.1f} '
                             'points of it came from grid sampling')
        else:
            text += ' (grid points only: this run predates the refinement)'
        items.append(f'- {text}.')
    return '\n'.join(items) + '\n' if items else (
        f'(No CNN and {reference} rows in this run.)\n')


#: Title and caption of each figure of the HTML report.
_CAPTIONS = {
    'benchmark_completeness_contamination': (
        'Completeness against contamination',
        'Each curve is one detector swept over its threshold (probability for '
        'the CNN, multiples of the background sigma for the others); up and '
        'left is better. Completeness = true sources found / true sources; '
        'contamination = unmatched detections / detections.'),
    'benchmark_completeness_mag': (
        'Completeness against magnitude',
        'Fraction of true sources found per magnitude and per S/N bin, at '
        "each detector's operating point (best completeness at <= 5 % "
        'contamination).'),
    'benchmark_astrometry_photometry': (
        'Positions and fluxes of the matched sources',
        "Centroid error and flux ratio of the matched sources at each "
        "detector's operating point, per signal-to-noise bin."),
    'benchmark_fp_classes': (
        'False positives per contaminant class',
        "False positives per image at each detector's operating point, "
        "charged to the contaminant classes under their footprint ('none': "
        'noise or fragments of real sources).'),
    'benchmark_examples': (
        'Examples',
        'One test image per regime with each detector\'s detections at its '
        'operating point.'),
}

_COLUMN_NOTES_HTML = (
    '<p><b>Columns.</b> n_truth: true sources; completeness_at_Xpct: '
    'completeness at the threshold where contamination is X %, nan when the '
    'detector never gets that clean; completeness_bright_*: the same for '
    'sources with S/N &ge; 5; min_contamination: lowest contamination of the '
    'sweep; operating_*: the operating point (best completeness at &le; 5 % '
    'contamination, else the cleanest point); deblend_success: fraction of '
    'close true pairs found as two sources; fp_total: false positives at the '
    'operating point.</p>')


def _settings_table(meta):
    """The run settings as a two-column HTML table."""
    rows = []
    for key, value in meta.items():
        if isinstance(value, dict):
            text = '<br>'.join(f'{html.escape(str(k))}: {html.escape(str(v))}'
                               for k, v in value.items()) or 'none'
        elif isinstance(value, (list, tuple)):
            text = html.escape(', '.join(str(v) for v in value)) or 'none'
        else:
            text = html.escape('default' if value is None else str(value))
        rows.append(f'<tr><th style="text-align:left">{html.escape(str(key))}'
                    f'</th><td style="text-align:left">{text}</td></tr>')
    return '<table>' + ''.join(rows) + '</table>'


def summary_rst(summary):
    """
    The detection summary as a reStructuredText list-table (for the docs).

    Completeness at 1, 5, 10 and 20 % contamination (measured at refined
    thresholds, with the threshold and, in brackets, the figure read off
    the protocol grid alone), on the S/N >= 5 sources at 5 %, and the
    deblending success at the operating point.

    Parameters
    ----------
    summary : `~astropy.table.QTable`
        From `~astro_deepcolor.evaluation.harness.summarize`.

    Returns
    -------
    text : str
    """
    head = ['regime', 'detector', 'C @ 1 %', 'C @ 5 %', 'C @ 10 %',
            'C @ 20 %', 'C (S/N ≥ 5) @ 5 %', 'deblend']
    rows = []
    for r in _ordered(summary):
        cells = [r['regime'], r['detector']]
        for level in (1, 5, 10, 20):
            key = f'completeness_at_{level}pct'
            text = _pct(r, key)
            thr = (r[f'threshold_at_{level}pct']
                   if f'threshold_at_{level}pct' in r.colnames else None)
            if text != '--' and thr is not None:
                text += f' (t={thr}'
                grid = f'completeness_grid_at_{level}pct'
                if grid in r.colnames:
                    text += f'; grid {_pct(r, grid, err=False)}'
                text += ')'
            cells.append(text)
        cells.append(_pct(r, 'completeness_bright_at_5pct', err=False))
        cells.append(f"{_pct(r, 'deblend_success', err=False)} "
                     f"({int(r['n_pairs'])} pairs)")
        rows.append(cells)
    return _list_table(head, rows, (8, 9, 14, 14, 14, 14, 9, 10))


def measurement_rst(summary):
    """
    The operating points' astrometry, photometry and false positives (rst).

    Parameters
    ----------
    summary : `~astropy.table.QTable`
        From `~astro_deepcolor.evaluation.harness.summarize`.

    Returns
    -------
    text : str
    """
    fp_cols = [c for c in summary.colnames if c.startswith('fp_')
               and c != 'fp_total']
    head = ['regime', 'detector', 'operating point', 'C / C (S/N ≥ 5)',
            'position error (px): median / 68 %', 'flux ratio: bias / '
            'scatter', 'false positives by class']
    rows = []
    for r in _ordered(summary):
        fps = ', '.join(f'{c[3:]} {int(r[c])}' for c in fp_cols if int(r[c]))
        cells = [r['regime'], r['detector'],
                 f"{r['operating_threshold']} (contam. "
                 f"{float(r['operating_contamination']):.3f})",
                 f"{_fmt(r['operating_completeness'])} / "
                 f"{_fmt(r['operating_completeness_bright'])}"]
        if 'position_error_median' in r.colnames:
            cells.append(f"{_fmt(r['position_error_median'])} / "
                         f"{_fmt(r['position_error_68'])}")
            cells.append(f"{float(r['flux_ratio_bias']):+.3f} / "
                         f"{_fmt(r['flux_ratio_scatter'])}"
                         .replace('nan', '--'))
        else:
            cells += ['--', '--']
        cells.append(fps or 'none')
        rows.append(cells)
    return _list_table(head, rows, (8, 9, 14, 12, 14, 14, 20))


def write_outputs(result, curves, summary, binned, fp_table, out_dir, *,
                  real=None):
    """
    Write every table, plot and the HTML report.

    Parameters
    ----------
    result : `~astro_deepcolor.evaluation.harness.BenchmarkResult`
        The sweeps.
    curves, summary, binned, fp_table : `~astropy.table.QTable`
        From `~astro_deepcolor.evaluation.harness.summarize`.
    out_dir : str or `~pathlib.Path`
        Results directory (created).
    real : `~astropy.table.QTable`, optional
        Real-image check results.

    Returns
    -------
    files : dict
        Name -> path of each file written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, tab in (('curves', curves), ('summary', summary),
                      ('completeness_binned', binned), ('fp_by_class', fp_table)):
        files[name] = out / f'{name}.ecsv'
        _write(tab, files[name])
    if real is not None and len(real):
        files['real_data'] = out / 'real_data.ecsv'
        _write(real, files['real_data'])
    plots = {
        'benchmark_completeness_contamination': (plot_curves, (curves, summary)),
        'benchmark_completeness_mag': (plot_completeness_mag, (binned, summary)),
        'benchmark_fp_classes': (plot_fp_classes, (fp_table,)),
    }
    for name, (func, args) in plots.items():
        files[name] = out / f'{name}.png'
        func(*args, files[name])
    from .harness import astrometry_photometry

    astrometry = astrometry_photometry(result)
    files['astrometry_photometry'] = out / 'astrometry_photometry.ecsv'
    _write(astrometry, files['astrometry_photometry'])
    files['benchmark_astrometry_photometry'] = (
        out / 'benchmark_astrometry_photometry.png')
    if not plot_astrometry(astrometry, files['benchmark_astrometry_photometry']):
        del files['benchmark_astrometry_photometry']
    files['benchmark_examples'] = out / 'benchmark_examples.png'
    if not plot_examples(result, summary, files['benchmark_examples']):
        del files['benchmark_examples']
    meta = dict(result.meta)
    meta['skipped'] = dict(result.skipped)
    files['summary_rst'] = out / 'summary_table.rst'
    files['summary_rst'].write_text(summary_rst(summary))
    files['measurement_rst'] = out / 'measurement_table.rst'
    files['measurement_rst'].write_text(measurement_rst(summary))
    files['headline_rst'] = out / 'headline.rst'
    files['headline_rst'].write_text(headline_rst(summary))
    files['settings_rst'] = out / 'run_settings.rst'
    files['settings_rst'].write_text(settings_rst(summary, result.meta))
    files['meta'] = out / 'meta.json'
    files['meta'].write_text(json.dumps(meta, indent=2, default=str))

    parts = ['<!DOCTYPE html><html><head><meta charset="utf-8">'
             '<title>astro_deepcolor benchmark</title><style>'
             'body{font-family:sans-serif;max-width:1200px;margin:auto}'
             'table{border-collapse:collapse;font-size:90%}'
             'td,th{border:1px solid #999;padding:2px 6px;text-align:right}'
             'th{background:#eee} .smoke{background:#fee;border:2px solid #c00;'
             'padding:8px;font-weight:bold} figure{margin:1em 0}'
             'figcaption{font-size:90%;color:#333;max-width:1000px}'
             'img{max-width:100%}</style></head><body>',
             '<h1>astro_deepcolor detection benchmark</h1>']
    if meta.get('smoke_test') or meta.get('quick'):
        parts.append('<p class="smoke">'
                     + html.escape(meta.get('smoke_test') or
                                   'SMOKE TEST (--quick): the numbers only show '
                                   'that every step runs') + '</p>')
    parts.append('<h2>Run settings</h2>' + _settings_table(meta))
    if result.skipped:
        parts.append('<p>Skipped detectors: ' + '; '.join(
            f'<b>{html.escape(k)}</b>: {html.escape(v)}'
            for k, v in result.skipped.items()) + '</p>')
    parts.append('<h2>Summary</h2>')
    parts.append(_html_table(summary, SUMMARY_COLUMNS))
    parts.append(_COLUMN_NOTES_HTML)
    fp_cols = [c for c in summary.colnames if c.startswith('fp_')]
    parts.append('<h3>False positives per contaminant class (operating point)</h3>')
    parts.append(_html_table(summary, ['regime', 'detector', *fp_cols]))
    parts.append('<p>Unmatched detections at the operating point whose footprint '
                 'touches pixels of each simulated contaminant class '
                 '(fp_total: all unmatched detections).</p>')
    kinds = binned[[q.startswith('kind:') for q in binned['quantity']]]
    if len(kinds):
        parts.append('<h3>Completeness per source kind (operating point)</h3>')
        parts.append(_html_table(kinds, ['regime', 'detector', 'quantity',
                                         'n_truth', 'n_matched', 'completeness']))
    for key in ('benchmark_completeness_contamination', 'benchmark_completeness_mag',
                'benchmark_astrometry_photometry', 'benchmark_fp_classes',
                'benchmark_examples'):
        if key in files:
            title, caption = _CAPTIONS[key]
            parts.append(f'<h2>{html.escape(title)}</h2><figure>'
                         f'<img src="{files[key].name}" alt="{html.escape(title)}">'
                         f'<figcaption>{html.escape(caption)}</figcaption></figure>')
    if 'real_data' in files:
        parts.append('<h2>Real-image checks</h2>')
        parts.append(_html_table(real, real.colnames))
    parts.append('<h2>Tables</h2><ul>' + ''.join(
        f'<li><a href="{p.name}">{p.name}</a></li>' for k, p in files.items()
        if p.suffix in ('.ecsv', '.json')) + '</ul></body></html>')
    files['report'] = out / 'report.html'
    files['report'].write_text('\n'.join(parts))
    return files
