# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
``astro-deepcolor export-onnx``: export a training checkpoint to ONNX.

Example::

    astro-deepcolor export-onnx cache/train_default/best.pt model.onnx
    astro-deepcolor export-onnx best.pt model_sx.onnx --sourcextractor
"""

__all__ = ['add_parser', 'run']


def add_parser(parser):
    """
    Declare the arguments of the ``export-onnx`` subcommand.

    Parameters
    ----------
    parser : `argparse.ArgumentParser`
        The subcommand parser.
    """
    parser.add_argument('checkpoint', help='training checkpoint (.pt)')
    parser.add_argument('output', help='ONNX file to write')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing output file')
    parser.add_argument('--sourcextractor', action='store_true',
                        help='write the SourceXtractor++ form (NHWC, '
                             'colour planes only)')
    parser.add_argument('--tile-size', type=int, default=None,
                        help='fixed tile side of the SourceXtractor++ form '
                             '(default 256)')
    parser.add_argument('--atol', type=float, default=1e-4,
                        help='tolerance of the onnxruntime/torch parity check')


def run(args):
    """
    Run the ``export-onnx`` subcommand.

    Parameters
    ----------
    args : `argparse.Namespace`
        Parsed arguments.

    Returns
    -------
    status : int
        0 on success.
    """
    from importlib.util import find_spec

    # Check before reading or writing anything: one line that says what
    # to install (PyTorch reads the checkpoint, onnx writes the model).
    missing = [name for name, module in (('torch', 'torch'), ('onnx', 'onnx'),
                                         ('onnxscript', 'onnxscript'))
               if find_spec(module) is None]
    if missing:
        msg = (f'export-onnx needs {", ".join(missing)}, not installed here: '
               'pip install "astro-deepcolor[train]"')
        raise ModuleNotFoundError(msg)
    from astro_deepcolor.model.export import export_onnx

    form = 'sourcextractor' if args.sourcextractor else 'astro_deepcolor'
    path = export_onnx(args.checkpoint, args.output, form=form,
                       overwrite=args.overwrite, atol=args.atol,
                       tile_size=args.tile_size)
    print(f'wrote {path} ({form} form)')
    return 0
