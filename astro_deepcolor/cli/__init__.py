# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The ``astro-deepcolor`` command-line tool.

Each subcommand lives in its own module of this package, which defines
``add_parser(subparsers)`` (declares the arguments) and ``run(args)``
(does the work, returning an exit status). The modules are imported only
when their subcommand runs, so ``astro-deepcolor simulate`` never imports
torch. User errors (bad input, missing files, refused overwrites) exit
with status 2 and a one-line message instead of a traceback.
"""

import argparse
import sys
from importlib import import_module

__all__ = ['main']

# name -> (module, one-line help). Order is the order shown by --help.
SUBCOMMANDS = {
    'detect': ('detect', 'detect sources in FITS images'),
    'simulate': ('simulate', 'simulate survey images with exact truth'),
    'train': ('train', 'train a deep-coloring network (needs torch)'),
    'export-onnx': ('export', 'export a trained checkpoint to ONNX'),
    'benchmark': ('benchmark', 'completeness/contamination benchmark'),
    'demo': ('demo', 'detect on a built-in example and compare with truth'),
}

# Exceptions that are the user's input problem: print one line, exit 2.
_USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError,
                IsADirectoryError, PermissionError, OSError, KeyError,
                ModuleNotFoundError)


def _build_parser(argv):
    from astro_deepcolor import __version__

    parser = argparse.ArgumentParser(
        prog='astro-deepcolor',
        description='Source detection with deep-coloring neural networks.')
    parser.add_argument('--version', action='version',
                        version=f'%(prog)s {__version__}')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True
    # Only import the module of the requested subcommand (fast, no torch);
    # the others get a placeholder parser so --help lists them all.
    wanted = next((a for a in argv if a in SUBCOMMANDS), None)
    parser._subcommand_parsers = {}
    for name, (module, help_text) in SUBCOMMANDS.items():
        if name == wanted:
            mod = import_module(f'astro_deepcolor.cli.{module}')
            sp = sub.add_parser(name, help=help_text,
                                description=help_text)
            mod.add_parser(sp)
            sp.set_defaults(_run=mod.run)
            parser._subcommand_parsers[name] = sp
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv=None):
    """
    Run the command-line tool.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    status : int
        The exit status.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _build_parser(argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # the subcommand's usage, not the top-level one
        sub = parser._subcommand_parsers.get(args.command, parser)
        sub.error(f'unrecognized arguments: {" ".join(unknown)}')
    try:
        status = args._run(args)
    except KeyboardInterrupt:
        print('astro-deepcolor: interrupted', file=sys.stderr)
        return 130
    except _USER_ERRORS as exc:
        text = str(exc)
        if isinstance(exc, ModuleNotFoundError) and 'pip install' not in text:
            text += ('; pip install "astro-deepcolor[all]" installs every '
                     'optional dependency')
        print(f'astro-deepcolor {args.command}: error: {text}', file=sys.stderr)
        return 2
    return 0 if status is None else int(status)


if __name__ == '__main__':
    sys.exit(main())
