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
* ``real_data.ecsv`` when the real-image checks ran;
* ``benchmark_completeness_contamination.png``, ``benchmark_completeness_mag.png``,
  ``benchmark_fp_classes.png``, ``benchmark_examples.png``;
* ``report.html`` linking all of them.
"""

import html
import json
from pathlib import Path

import numpy as np

__all__ = ['SUMMARY_COLUMNS', 'summary_rst', 'write_outputs']

#: Columns of the summary shown in the HTML report and the docs.
SUMMARY_COLUMNS = (
    'regime', 'detector', 'n_truth', 'completeness_at_1pct',
    'completeness_at_5pct', 'completeness_at_10pct', 'completeness_at_20pct',
    'completeness_at_50pct', 'completeness_bright_at_5pct',
    'completeness_bright_at_20pct', 'completeness_bright_at_50pct',
    'min_contamination', 'operating_threshold', 'operating_completeness',
    'operating_completeness_bright', 'deblend_success', 'fp_total',
)

_COLORS = {'cnn': 'C3', 'sep': 'C0', 'sep_matched': 'C9', 'photutils': 'C2', 'sextractor': 'C1',
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


def plot_curves(curves, summary, path):
    """Completeness vs contamination, one panel per regime (talk's Fig. 12)."""
    plt = _plt()
    regimes = list(dict.fromkeys(curves['regime']))
    fig, axes = plt.subplots(1, len(regimes), figsize=(5.2 * len(regimes), 4.4),
                             squeeze=False, sharey=True)
    for ax, regime in zip(axes[0], regimes, strict=True):
        sel = curves[curves['regime'] == regime]
        n_truth = int(sel['n_truth'][0])
        n_img = int(sel['n_images'][0])
        for name in _order(set(sel['detector'])):
            # Points without detections have no contamination: not drawn.
            c = sel[(sel['detector'] == name) & ~sel['failed']
                    & (sel['tp'] + sel['fp'] > 0)]
            if name == 'noisechisel':
                ax.errorbar(c['contamination'], c['completeness'],
                            xerr=c['contamination_err'],
                            yerr=c['completeness_err'], fmt='D', ms=3,
                            color=_COLORS.get(name), label=name, alpha=0.8,
                            elinewidth=0.6)
                continue
            ax.errorbar(c['contamination'], c['completeness'],
                        xerr=c['contamination_err'], yerr=c['completeness_err'],
                        fmt='-o', ms=2.5, lw=1.2, elinewidth=0.6,
                        color=_COLORS.get(name), label=name)
        for level in (0.01, 0.05, 0.10):
            ax.axvline(level, color='0.8', lw=0.7, ls=':', zorder=0)
        ax.set_xlim(-0.02, 1.0)
        ax.set_ylim(0, 1.0)
        ax.set_xlabel('contamination FP / (TP + FP)')
        ax.set_title(f'{regime}: {n_truth} truth sources, {n_img} images')
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel('completeness TP / (TP + FN)')
    axes[0][-1].legend(loc='lower right', fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_completeness_mag(binned, summary, path):
    """Completeness vs magnitude and S/N at each detector's operating point."""
    plt = _plt()
    regimes = list(dict.fromkeys(binned['regime']))
    fig, axes = plt.subplots(2, len(regimes), figsize=(5.2 * len(regimes), 7.4),
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
                ax.set_xlabel('truth optimal S/N')
            else:
                ax.set_xlabel('truth magnitude')
                ax.set_title(f'{regime} (operating points)')
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel('completeness')
        axes[0][col].legend(fontsize=7, loc='lower left')
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_fp_classes(fp_table, path):
    """False positives per image and contaminant class, per detector."""
    plt = _plt()
    regimes = list(dict.fromkeys(fp_table['regime']))
    fig, axes = plt.subplots(1, len(regimes), figsize=(5.6 * len(regimes), 4.0),
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
        ax.set_xticks(x, classes, rotation=45, ha='right', fontsize=8)
        ax.set_yscale('symlog', linthresh=0.1)
        ax.set_title(f'{regime}: false positives at operating point')
        ax.grid(alpha=0.3, axis='y')
    axes[0][0].set_ylabel('false positives per image')
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


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
    fig, axes = plt.subplots(len(regimes), ncol, figsize=(3.2 * ncol,
                                                           3.3 * len(regimes)),
                             squeeze=False)
    for row, regime in zip(axes, regimes, strict=True):
        ex = result.examples[regime]
        img = _stretch(ex['data'])
        vmin, vmax = np.percentile(img, [1, 99.7])
        row[0].imshow(img, origin='lower', cmap='gray', vmin=vmin, vmax=vmax)
        cont = ex['contaminants']
        if cont.any():
            row[0].contour(cont > 0, levels=[0.5], colors='y', linewidths=0.4)
        row[0].set_title(f'{regime}: input (contaminants yellow)', fontsize=8)
        tseg = ex['truth_seg']
        row[1].imshow(tseg.data, origin='lower', cmap=tseg.cmap,
                      interpolation='nearest')
        row[1].set_title(f'truth: {len(ex["truth"])} footprints', fontsize=8)
        for ax, name in zip(row[2:], shown, strict=True):
            op = summary[(summary['regime'] == regime)
                         & (summary['detector'] == name)]
            label = op['operating_threshold'][0] if len(op) else None
            dets = ex['detections'].get(name, {})
            if label not in dets:
                ax.set_axis_off()
                continue
            segm, table = dets[label]
            ax.imshow(img, origin='lower', cmap='gray', vmin=vmin, vmax=vmax)
            if segm is not None:
                ax.imshow(np.ma.masked_equal(segm.data, 0), origin='lower',
                          cmap=segm.cmap, alpha=0.45, interpolation='nearest')
            ax.plot(ex['truth']['x'], ex['truth']['y'], '+', color='c', ms=4,
                    mew=0.6)
            ax.set_title(f'{name} at {label}: {len(table)} detections',
                         fontsize=8)
        ny, nx = ex['data'].shape
        for ax in row:
            ax.set_xlim(-0.5, nx - 0.5)
            ax.set_ylim(-0.5, ny - 0.5)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


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


def summary_rst(summary):
    """
    The summary as a reStructuredText list-table (for the docs).

    Parameters
    ----------
    summary : `~astropy.table.QTable`
        From `~astro_deepcolor.evaluation.harness.summarize`.

    Returns
    -------
    text : str
    """
    def pct(r, key):
        v = float(r[key])
        if not np.isfinite(v):
            return '--'
        err = r[key + '_err'] if key + '_err' in r.colnames else None
        if err is not None and np.isfinite(err):
            return f'{v:.3f} ± {float(err):.3f}'
        return f'{v:.3f}'

    fp_cols = [c for c in summary.colnames if c.startswith('fp_')
               and c != 'fp_total']
    head = ['regime', 'detector', 'C @ 1 %', 'C @ 5 %', 'C @ 10 %',
            'C @ 20 %', 'C @ 50 %', 'C (S/N ≥ 5) @ 5 / 20 / 50 %',
            'min. contam.', 'operating point', 'C (S/N ≥ 5)', 'deblend',
            'FP by class (operating point)']
    lines = ['.. list-table::', '   :header-rows: 1', '']
    lines.append('   * - ' + '\n     - '.join(head))
    for r in summary:
        fps = ', '.join(f'{c[3:]} {int(r[c])}' for c in fp_cols if int(r[c]))
        cells = [r['regime'], r['detector'], pct(r, 'completeness_at_1pct'),
                 pct(r, 'completeness_at_5pct'), pct(r, 'completeness_at_10pct'),
                 pct(r, 'completeness_at_20pct'), pct(r, 'completeness_at_50pct'),
                 ' / '.join(_fmt(r[k]) if k in r.colnames else '--'
                            for k in ('completeness_bright_at_5pct',
                                      'completeness_bright_at_20pct',
                                      'completeness_bright_at_50pct')).replace('nan', '--'),
                 _fmt(r['min_contamination']),
                 f"{r['operating_threshold']} (C {float(r['operating_completeness']):.3f}, "
                 f"contam. {float(r['operating_contamination']):.3f})",
                 _fmt(r['operating_completeness_bright']),
                 f"{_fmt(r['deblend_success'])} ({int(r['n_pairs'])} pairs)",
                 fps or 'none']
        lines.append('   * - ' + '\n     - '.join(str(c) for c in cells))
    return '\n'.join(lines) + '\n'


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
    files['benchmark_examples'] = out / 'benchmark_examples.png'
    if not plot_examples(result, summary, files['benchmark_examples']):
        del files['benchmark_examples']
    meta = dict(result.meta)
    meta['skipped'] = dict(result.skipped)
    files['summary_rst'] = out / 'summary_table.rst'
    files['summary_rst'].write_text(summary_rst(summary))
    files['meta'] = out / 'meta.json'
    files['meta'].write_text(json.dumps(meta, indent=2, default=str))

    parts = ['<!DOCTYPE html><html><head><meta charset="utf-8">'
             '<title>astro_deepcolor benchmark</title></head><body>',
             '<h1>astro_deepcolor detection benchmark</h1>',
             f'<p>Run settings: <code>{html.escape(json.dumps(meta, default=str))}'
             '</code></p>']
    if result.skipped:
        parts.append('<p>Skipped detectors: ' + '; '.join(
            f'<b>{html.escape(k)}</b>: {html.escape(v)}'
            for k, v in result.skipped.items()) + '</p>')
    parts.append('<h2>Summary</h2>')
    parts.append(_html_table(summary, SUMMARY_COLUMNS))
    fp_cols = [c for c in summary.colnames if c.startswith('fp_')]
    parts.append('<h3>False positives per contaminant class (operating point)</h3>')
    parts.append(_html_table(summary, ['regime', 'detector', *fp_cols]))
    kinds = binned[[q.startswith('kind:') for q in binned['quantity']]]
    if len(kinds):
        parts.append('<h3>Completeness per source kind (operating point)</h3>')
        parts.append(_html_table(kinds, ['regime', 'detector', 'quantity',
                                         'n_truth', 'n_matched', 'completeness']))
    for key in ('benchmark_completeness_contamination', 'benchmark_completeness_mag',
                'benchmark_fp_classes', 'benchmark_examples'):
        if key in files:
            parts.append(f'<h2>{key}</h2><img src="{files[key].name}">')
    if 'real_data' in files:
        parts.append('<h2>Real-image checks</h2>')
        parts.append(_html_table(real, real.colnames))
    parts.append('<h2>Tables</h2><ul>' + ''.join(
        f'<li><a href="{p.name}">{p.name}</a></li>' for k, p in files.items()
        if p.suffix in ('.ecsv', '.json')) + '</ul></body></html>')
    files['report'] = out / 'report.html'
    files['report'].write_text('\n'.join(parts))
    return files
