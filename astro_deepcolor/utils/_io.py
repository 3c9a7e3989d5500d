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
    # The nearest existing folder must be a writable folder (the missing
    # ones are created): fail now, before any work, naming the path as
    # the user wrote it.
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        msg = (f'cannot write {name} file {str(path)!r}: {str(parent)!r} is '
               'a file, not a folder')
        raise NotADirectoryError(msg)
    if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
        msg = (f'cannot write {name} file {str(path)!r}: no permission to '
               f'write in {str(parent)!r}')
        raise PermissionError(msg)
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
    suffix = ''.join(path.suffixes) or '.tmp'
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f'.{path.stem}.', suffix=suffix,
                                   dir=path.parent)
    except OSError as exc:
        # name the file the user asked for, not our temporary name
        msg = (f'cannot write {name} file {str(path)!r}: creating a file in '
               f'{str(path.parent)!r} failed ({exc.strerror or exc})')
        raise type(exc)(msg) from None
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
