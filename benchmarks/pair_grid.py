# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Isolated star pairs: the fraction each detector splits, by separation and
flux ratio, and a picture of the CNN's colour maps on close pairs.

Pairs of Moffat stars (FWHM 4 px, beta 3, brighter star at peak S/N 100) are
drawn by `astro_deepcolor.evaluation.pairs.star_pair_image`, independently
of the training simulator. A pair is split when both centres fall in two
different segments. sep runs with its defaults (1.5 sigma, 32 deblending
thresholds, contrast 0.005). Writes ``results/pairs/pair_grid.ecsv`` and
``docs/_static/pair_colours.png``.

Run::

    python benchmarks/pair_grid.py [--model MODEL] [--n-per-cell 6]
"""

import argparse
import warnings
from pathlib import Path

import numpy as np
from astropy.table import QTable

ROOT = Path(__file__).resolve().parents[1]
SEPARATIONS = (1.5, 2.0, 2.5, 3.0, 4.0)
RATIOS = (1.0, 2.0, 3.5, 5.0, 10.0)


def _sep_segmentation(image):
    import sep

    data = np.ascontiguousarray(image, dtype=np.float64)
    bkg = sep.Background(data)
    sub = data - bkg.back()
    _, seg = sep.extract(sub, 1.5, err=bkg.globalrms, segmentation_map=True,
                         minarea=5)
    return seg


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', default=None)
    parser.add_argument('--n-per-cell', type=int, default=6)
    parser.add_argument('--out', default=str(ROOT / 'results' / 'pairs'))
    parser.add_argument('--plot', default=str(ROOT / 'docs' / '_static' / 'pair_colours.png'))
    args = parser.parse_args(argv)

    from photutils.utils.exceptions import NoDetectionsWarning

    from astro_deepcolor import DeepColorSegmentation
    from astro_deepcolor.evaluation.pairs import pair_split, star_pair_image

    image, pairs = star_pair_image(SEPARATIONS, RATIOS, n_per_cell=args.n_per_cell,
                                   seed=1)
    kwargs = {'progress_bar': False}
    if args.model:
        kwargs['model'] = args.model
    finder = DeepColorSegmentation(**kwargs)
    background, rms = finder.estimate_background(image)
    probs = finder.predict(image, background=background, rms=rms)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', NoDetectionsWarning)
        segm = finder.segment(probs, peak_image=finder.peak_image(
            image, background=background, rms=rms))
    split = {'cnn': pair_split(segm, pairs), 'sep': pair_split(_sep_segmentation(image), pairs)}
    rows = []
    for s in SEPARATIONS:
        for r in RATIOS:
            sel = (pairs['separation'] == s) & (pairs['ratio'] == r)
            rows.append((s, r, int(sel.sum()), *(float(split[d][sel].mean()) for d in split)))
    tab = QTable(rows=rows, names=('separation_fwhm', 'ratio', 'n_pairs',
                                   *(f'split_{d}' for d in split)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tab.meta['threshold'] = float(finder.threshold)
    tab.meta['comment'] = ['Fraction of isolated Moffat star pairs (FWHM 4 px) split in two '
                           'sources; benchmarks/pair_grid.py']
    tab.write(out / 'pair_grid.ecsv', overwrite=True)
    lines = [f'Isolated Moffat star pairs (FWHM 4 px, brighter star at peak S/N 100, '
             f'{args.n_per_cell} pairs per cell) split into two sources; the CNN at its '
             f'default threshold ({finder.threshold:g}), sep with its defaults '
             '(``benchmarks/pair_grid.py``).', '', '.. list-table::',
             '   :header-rows: 1', '', '   * - separation (FWHM)',
             *(f'     - {d}, ratio 1-5' for d in split),
             *(f'     - {d}, ratio 10' for d in split)]
    for s in SEPARATIONS:
        sel = pairs['separation'] == s
        lo, hi = sel & (pairs['ratio'] <= 5), sel & (pairs['ratio'] > 5)
        lines += [f'   * - {s:g}', *(f'     - {split[d][lo].mean():.2f}' for d in split),
                  *(f'     - {split[d][hi].mean():.2f}' for d in split)]
    (out / 'pair_grid.rst').write_text('\n'.join(lines) + '\n')
    print(f'CNN threshold {finder.threshold}')
    print('separation (FWHM)  ' + '  '.join(f'{d}' for d in split) + '   (ratios 1-5 / 10)')
    for s in SEPARATIONS:
        sel = pairs['separation'] == s
        main_r = sel & (pairs['ratio'] <= 5)
        hi = sel & (pairs['ratio'] > 5)
        print(f'{s:>6}  ' + '  '.join(
            f'{d} {split[d][main_r].mean():.2f}/{split[d][hi].mean():.2f}' for d in split))
    core = (pairs['separation'] >= 2) & (pairs['separation'] <= 4) & (pairs['ratio'] <= 5)
    print('2-4 FWHM, ratio 1-5: ' + ', '.join(f'{d} {split[d][core].mean():.3f}'
                                              for d in split))
    _plot(image, probs, segm, pairs, split['cnn'], args.plot)


def _plot(image, probs, segm, pairs, split, path):
    import matplotlib

    matplotlib.use('agg')
    import matplotlib.pyplot as plt
    from matplotlib.colors import hsv_to_rgb

    picks = []
    for s in (1.5, 2.0, 2.5, 3.0, 4.0):
        for r in (1.0, 3.5):
            i = np.flatnonzero((pairs['separation'] == s) & (pairs['ratio'] == r))
            if i.size:
                picks.append(int(i[0]))
    n_col = probs.shape[0] - 1
    hues = np.linspace(0, 1, n_col, endpoint=False)
    colour = probs[1:].argmax(0)
    fg = 1 - probs[0]
    rgb = hsv_to_rgb(np.stack([hues[colour], np.ones_like(fg), np.clip(fg, 0, 1)], -1))
    fig, axes = plt.subplots(2, len(picks), figsize=(1.6 * len(picks), 3.6),
                             constrained_layout=True)
    seg = np.asarray(getattr(segm, 'data', np.zeros(image.shape, int)))
    for j, k in enumerate(picks):
        row = pairs[k]
        cx, cy = 0.5 * (row['x1'] + row['x2']), 0.5 * (row['y1'] + row['y2'])
        sl = (slice(int(cy) - 14, int(cy) + 14), slice(int(cx) - 14, int(cx) + 14))
        sub = image[sl] - np.median(image)
        axes[0, j].imshow(np.arcsinh(sub / 3), origin='lower', cmap='gray')
        sub_seg = seg[sl]
        edge = np.zeros(sub_seg.shape, bool)
        edge[:-1] |= sub_seg[:-1] != sub_seg[1:]
        edge[:, :-1] |= sub_seg[:, :-1] != sub_seg[:, 1:]
        shown = rgb[sl].copy()
        shown[edge] = 1.0   # segment boundaries in white
        axes[1, j].imshow(shown, origin='lower')
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, j].set_title(f"{row['separation']:g} FWHM, 1:{row['ratio']:g}", fontsize=8)
        axes[1, j].set_xlabel('split' if split[k] else 'merged', fontsize=8,
                              color='k' if split[k] else 'r')
    axes[0, 0].set_ylabel('image', fontsize=8)
    axes[1, 0].set_ylabel('colour (hue), p_fg (value)', fontsize=7)
    fig.suptitle('CNN colour maps on isolated star pairs (white: segment boundaries)',
                 fontsize=9)
    fig.savefig(path, dpi=130)
    print('wrote', path)


if __name__ == '__main__':
    main()
