# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Compare footprint levels of the CNN post-processing on the validation split.

Usage::

    python benchmarks/compare_footprint_levels.py --n-images 12 none 0.3 0.5 0.8

Runs the benchmark protocol (`astro_deepcolor.evaluation.harness`: CNN
probability every 0.02, matching, bootstrap) on the *validation* images of
both regimes, never on the test images, once per ``footprint_threshold``
("none": footprints at the detection threshold), and prints per regime the
completeness (all, and S/N >= 5) at <= 5 % contamination, the S/N >= 5
completeness at <= 20 % and 50 %, the lowest contamination and the
deblending success of bright close pairs. This is how the default
``footprint_threshold`` of `~astro_deepcolor.DeepColorSegmentation` was
chosen (docs/model.rst).
"""

import argparse
from unittest import mock

from astro_deepcolor.evaluation import harness


class _ValidationRecipe:
    """A recipe whose 'test' seeds are its validation seeds."""

    def __init__(self, recipe):
        self._recipe = recipe

    def seeds(self, split):
        return self._recipe.seeds('validation')

    def __getattr__(self, name):
        return getattr(self._recipe, name)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument('levels', nargs='+', help="footprint thresholds or 'none'")
    parser.add_argument('--n-images', type=int, default=12)
    parser.add_argument('--model', default=None, help='model file (default: shipped)')
    args = parser.parse_args(argv)

    from astro_deepcolor import DeepColorSegmentation, baselines, simulation

    load = simulation.load_recipe
    for level in args.levels:
        fp = None if level.lower() == 'none' else float(level)

        def finder(self, fp=fp):
            kwargs = {'n_pixels': self.n_pixels, 'footprint_threshold': fp}
            if self.model is not None:
                kwargs['model'] = self.model
            return DeepColorSegmentation(**kwargs)

        with mock.patch.object(baselines.DeepColorDetector, '_finder', finder), \
                mock.patch.object(simulation, 'load_recipe',
                                  lambda name: _ValidationRecipe(load(name))):
            result = harness.run_sweeps(detectors=['cnn'], n_images=args.n_images,
                                        progress=False, model=args.model)
        _, summary, _, _ = harness.summarize(result, n_bootstrap=20)
        for r in summary:
            print(f"footprint {level}: {r['regime']}: "
                  f"C@5%={r['completeness_at_5pct']:.3f} "
                  f"C(S/N>=5)@5/20/50%={r['completeness_bright_at_5pct']:.3f}/"
                  f"{r['completeness_bright_at_20pct']:.3f}/"
                  f"{r['completeness_bright_at_50pct']:.3f} "
                  f"min contamination {r['min_contamination']:.3f} "
                  f"deblending {r['deblend_success']:.2f} "
                  f"(threshold {r['operating_threshold']})", flush=True)


if __name__ == '__main__':
    main()
