# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
``astro-deepcolor train``: train a deep-coloring network (needs torch).

Example::

    astro-deepcolor train --config configs/default.yaml
    astro-deepcolor train --config configs/default.yaml --resume
"""

__all__ = ['add_parser', 'run']


def add_parser(parser):
    """
    Declare the arguments of the ``train`` subcommand.

    Parameters
    ----------
    parser : `argparse.ArgumentParser`
        The subcommand parser.
    """
    parser.add_argument('--config', required=True,
                        help='training YAML (model + train sections)')
    parser.add_argument('--resume', action='store_true',
                        help='continue from OUT_DIR/last.pt')
    parser.add_argument('--out-dir', default=None,
                        help='override train.out_dir')
    parser.add_argument('--log-file', default=None,
                        help='override train.log_file')
    parser.add_argument('--steps', type=int, default=None,
                        help='override train.steps (schedule length)')
    parser.add_argument('--max-steps', type=int, default=None,
                        help='stop after this many steps in this run')
    parser.add_argument('--device', choices=('auto', 'cpu', 'cuda'),
                        default=None, help='override train.device')
    parser.add_argument('--num-workers', type=int, default=None,
                        help='override train.num_workers')
    parser.add_argument('--threads', type=int, default=None,
                        help='override train.threads')
    parser.add_argument('--no-progress', action='store_true',
                        help='no progress bar')


def run(args):
    """
    Run the ``train`` subcommand.

    Parameters
    ----------
    args : `argparse.Namespace`
        Parsed arguments.

    Returns
    -------
    status : int
        0 on success.
    """
    try:
        from astro_deepcolor.training.train import load_config, train
    except ImportError as exc:
        msg = f'training needs PyTorch (pip install astro-deepcolor[train]): {exc}'
        raise ValueError(msg) from None
    model_config, train_config = load_config(
        args.config, out_dir=args.out_dir, log_file=args.log_file,
        steps=args.steps, device=args.device, num_workers=args.num_workers,
        threads=args.threads)
    summary = train(model_config, train_config, resume=args.resume,
                    progress=not args.no_progress, max_steps=args.max_steps)
    print(f"stopped at step {summary['step']}, loss {summary['loss']:.4f}, "
          f"best validation score {summary['best_score']:.4f}")
    return 0
