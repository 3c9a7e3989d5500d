# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""``astro-deepcolor simulate``: write simulated images with exact truth."""

from pathlib import Path

__all__ = ['add_parser', 'run']


def add_parser(parser):
    """Declare the arguments of ``simulate``."""
    parser.add_argument('--recipe', default=None,
                        help="dataset recipe: 'clean', 'contaminated' or a YAML file")
    parser.add_argument('--split', default='validation',
                        choices=('train', 'validation', 'test'),
                        help='recipe split (default: validation)')
    parser.add_argument('--n-images', type=int, default=None,
                        help='only the first N images of the split')
    parser.add_argument('--out', default=None,
                        help='output directory (default: the cache directory)')
    parser.add_argument('--jobs', type=int, default=None,
                        help='worker processes (default: all cores)')
    parser.add_argument('--overwrite', action='store_true',
                        help='regenerate existing files')
    single = parser.add_argument_group('single image (without --recipe)')
    single.add_argument('--shape', type=int, nargs=2, default=(1024, 1024),
                        metavar=('NY', 'NX'))
    single.add_argument('--regime', default='clean', choices=('clean', 'contaminated'))
    single.add_argument('--preset', default='decam')
    single.add_argument('--seed', type=int, default=0)
    single.add_argument('--density', type=float, default=1.0)


def run(args):
    """Run ``simulate``."""
    from astro_deepcolor.simulation import (
        generate_dataset,
        simulate_image,
        write_simulation,
    )

    if args.recipe is not None:
        paths = generate_dataset(args.recipe, args.split, args.out,
                                 n_images=args.n_images, n_jobs=args.jobs,
                                 overwrite=args.overwrite)
        out = paths[0].parent if paths else args.out
        print(f'{len(paths)} images in {out}')
        return 0
    sim = simulate_image(tuple(args.shape), regime=args.regime, seed=args.seed,
                         preset=args.preset, density=args.density)
    out = Path(args.out or '.')
    path = out / f'sim_{args.preset}_{args.regime}_{args.seed}.fits'
    write_simulation(sim, path, overwrite=args.overwrite)
    print(f'{path}: {len(sim.truth)} sources, contaminants: '
          f'{", ".join(sim.contaminant_classes) or "none"}')
    return 0
