# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Figure for the simulation user guide: a clean and a contaminated image.

Both are 384x384 DECam-preset images with their truth footprints (lime
outlines) and contaminant classes (coloured) drawn by
`astro_deepcolor.simulation.plotting.plot_simulation`. Run from the
repository root::

    OMP_NUM_THREADS=1 python benchmarks/plot_simulation_examples.py

Writes ``docs/_static/simulation_examples.png``.
"""

import argparse
import io
from pathlib import Path

__all__ = ['main']

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    """Make the figure; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument('--out', default=str(ROOT / 'docs' / '_static'
                                             / 'simulation_examples.png'))
    parser.add_argument('--seed', type=int, default=3)
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from PIL import Image

    from astro_deepcolor.simulation import simulate_image
    from astro_deepcolor.simulation.plotting import plot_simulation

    fig, axes = plt.subplots(1, 2, figsize=(12, 6.4))
    for ax, regime in zip(axes, ('clean', 'contaminated'), strict=True):
        sim = simulate_image((384, 384), regime=regime, seed=args.seed, preset='decam',
                             density=1.5)
        plot_simulation(sim, ax=ax)
        ax.set_title(f'{regime}: {len(sim.truth)} truth sources, seed={args.seed}',
                     fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=80)
    plt.close(fig)
    buf.seek(0)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A 256-colour palette with dithering off keeps the noisy images small;
    # FASTOCTREE keeps the few saturated overlay colours distinct.
    Image.open(buf).convert('RGB').quantize(256, method=Image.Quantize.FASTOCTREE,
                                            dither=Image.Dither.NONE).save(out, optimize=True)
    print(f'wrote {out}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
