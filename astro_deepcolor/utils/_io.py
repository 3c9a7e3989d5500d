# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Safe file output: never overwrite without being asked, write atomically.

Writers produce the file under a temporary name in the destination
directory and rename it into place only once it is complete, so a killed
process never leaves a half-written catalogue or image behind.
"""

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ['atomic_path', 'check_writable']


def check_writable(path, *, overwrite=False, name='output'):
    """
    Raise `FileExistsError` if ``path`` exists and ``overwrite`` is False.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        Destination file.
    overwrite : bool, optional
        Whether an existing file may be replaced.
    name : str, optional
        What the file is, for the error message.

    Returns
    -------
    path : `~pathlib.Path`
        The path.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        msg = (f'{name} file {str(path)!r} exists; use overwrite=True '
               '(--overwrite on the command line) to replace it')
        raise FileExistsError(msg)
    return path


@contextlib.contextmanager
def atomic_path(path, *, overwrite=False, name='output'):
    """
    Context manager yielding a temporary path that is renamed to ``path``.

    The temporary file lives in the destination directory (so the final
    `os.replace` is atomic on POSIX) and keeps the destination suffix (so
    writers that infer the format from the extension still work). It is
    removed if the block raises.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        Destination file.
    overwrite : bool, optional
        Whether an existing file may be replaced.
    name : str, optional
        What the file is, for the error message.

    Yields
    ------
    tmp : `~pathlib.Path`
        The temporary path to write to.
    """
    path = check_writable(path, overwrite=overwrite, name=name)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ''.join(path.suffixes) or '.tmp'
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.stem}.', suffix=suffix,
                               dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    tmp.unlink()  # writers such as astropy refuse to write over a file
    try:
        yield tmp
        if not overwrite and path.exists():
            msg = f'{name} file {str(path)!r} appeared while writing; not replaced'
            raise FileExistsError(msg)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
