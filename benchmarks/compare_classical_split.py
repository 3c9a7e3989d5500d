# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Does a classical split inside the CNN's segments still help?

Segments the validation images with the CNN at its default threshold, then
once more with every segment split by photutils' multi-threshold deblending
(`photutils.segmentation.deblend_sources`, 32 levels, contrast 0.001, on the
image smoothed by a Gaussian of the PSF FWHM, as photutils users do), and
compares completeness (all and S/N >= 5), contamination and the deblending
success on close pairs. The option is worth keeping only if it wins.

Run::

    python benchmarks/compare_classical_split.py [--model MODEL] [--n-images 8]
"""

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
from astropy.table import QTable

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', default=None)
    parser.add_argument('--n-images', type=int, default=8)
    parser.add_argument('--out', default=str(ROOT / 'results' / 'calibration'
                                             / 'classical_split.json'))
    args = parser.parse_args(argv)

    from astropy.convolution import Gaussian2DKernel, convolve
    from photutils.segmentation import SegmentationImage, deblend_sources
    from photutils.utils.exceptions import NoDetectionsWarning

    from astro_deepcolor import DeepColorSegmentation
    from astro_deepcolor.baselines.base import segment_catalog
    from astro_deepcolor.evaluation import match_sources
    from astro_deepcolor.evaluation.metrics import close_pairs
    from astro_deepcolor.simulation import iter_recipe_images

    kwargs = {'progress_bar': False}
    if args.model:
        kwargs['model'] = args.model
    finder = DeepColorSegmentation(**kwargs)
    res = {}
    for regime in ('clean', 'contaminated'):
        tot = {k: np.zeros(6, int) for k in ('cnn', 'cnn+split')}
        for sim in iter_recipe_images(regime, 'validation', n_images=args.n_images):
            truth = QTable(sim.truth, copy=True)
            bright = np.asarray(truth['snr']) >= 5
            pairs = close_pairs(truth, fwhm=sim.fwhm, truth_segmentation=sim.segmentation)
            data = np.asarray(sim.data, np.float32)
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', NoDetectionsWarning)
                segm = finder(data)
            image = data - np.median(data)
            smooth = convolve(image, Gaussian2DKernel(sim.fwhm / 2.355))
            versions = {'cnn': segm}
            if segm is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter('ignore')
                    split = deblend_sources(smooth, SegmentationImage(segm.data), 5,
                                            progress_bar=False)
                versions['cnn+split'] = split
            else:
                versions['cnn+split'] = None
            for name, s in versions.items():
                if s is None:
                    tot[name] += (0, 0, len(truth), 0, 0, len(pairs))
                    continue
                table = segment_catalog(s, image)
                m = match_sources(truth, table, truth_segmentation=sim.segmentation,
                                  detection_segmentation=s, fwhm=sim.fwhm)
                ok = m.truth_matched[pairs].all(axis=1).sum() if len(pairs) else 0
                tot[name] += (m.tp, m.fp, m.fn, m.truth_matched[bright].sum(), ok,
                              len(pairs))
            nb = int(bright.sum())
            res.setdefault(regime, {'n_bright': 0})['n_bright'] += nb
        for name, (tp, fp, fn, tpb, ok, npairs) in tot.items():
            res[regime][name] = {
                'completeness': tp / (tp + fn), 'contamination': fp / max(tp + fp, 1),
                'completeness_snr5': tpb / max(res[regime]['n_bright'], 1),
                'deblending': ok / max(npairs, 1), 'n_pairs': int(npairs)}
    print(json.dumps(res, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({'threshold': finder.threshold,
                                          'n_images_per_regime': args.n_images,
                                          'results': res}, indent=1))


if __name__ == '__main__':
    main()
