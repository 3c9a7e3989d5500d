# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Compare training checkpoints on more validation images than the trainer uses.

Usage::

    python benchmarks/compare_checkpoints.py 8 cache/train_default/last.pt \\
        cache/train_default/best.pt

For each checkpoint and regime: completeness (S/N > 5) at <= 5, 10 and
20 % contamination, the lowest contamination reached and the
completeness there, and both at the default threshold 0.5, from the
validation split (never used for training). Needs torch.
"""

import argparse

import numpy as np
import torch

from astro_deepcolor.model.config import ModelConfig
from astro_deepcolor.model.unet import UNet
from astro_deepcolor.training.train import _predictor
from astro_deepcolor.training.validation import ValidationSet


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument('n_images', type=int, help='validation images per regime')
    parser.add_argument('checkpoints', nargs='+')
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    val = None
    for path in args.checkpoints:
        state = torch.load(path, map_location='cpu', weights_only=True)
        config = ModelConfig.from_dict(state['config'])
        net = UNet(config)
        net.load_state_dict(state['model'])
        if val is None:
            val = ValidationSet(['clean', 'contaminated'], args.n_images,
                                box_size=config.background_box,
                                filter_size=config.background_filter)
        res = val.evaluate(_predictor(net, torch.device('cpu'), config.tile_multiple),
                           n_pixels=config.min_area)
        score = np.mean([r['score'] for r in res.values()])
        print(f'{path} (step {state["step"]}) score {score:.4f}')
        for regime, r in res.items():
            comp = np.array(r['completeness'])
            cont = np.array(r['contamination'])
            thr = np.array(r['thresholds'])
            at = r['completeness_at']
            j = int(cont.argmin())
            k = int(np.argmin(np.abs(thr - 0.5)))
            print(f'  {regime}: C@5%={r["best_completeness"]:.3f} '
                  f'(threshold {r["best_threshold"]}) C@10%={at["10pc"]:.3f} '
                  f'C@20%={at["20pc"]:.3f} '
                  f'lowest contamination {cont[j]:.3f} at {thr[j]:.2f} '
                  f'(C {comp[j]:.3f}); at 0.5: C {comp[k]:.3f}, '
                  f'contamination {cont[k]:.3f}')


if __name__ == '__main__':
    main()
