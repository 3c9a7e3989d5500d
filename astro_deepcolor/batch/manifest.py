# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The run manifest: one SQLite row per input file and per HDU.

The manifest is what makes a survey run restartable. It records, for each
input file (``hdu = -1``, the header scan) and each of its HDUs, the
status (``pending``, ``running``, ``done``, ``failed`` or ``skipped``),
the worker, the timing, the number of sources, the output files and the
error message of a failure. It lives next to the outputs
(``OUT/manifest.sqlite``); an ECSV copy (``OUT/manifest.ecsv``) is written
at the end of each run for people and spreadsheets.

Only the process driving the run writes to the database; each update is
its own transaction, so a killed driver leaves the manifest consistent.
The database uses SQLite's write-ahead log, so it can be read (for
example with ``sqlite3 OUT/manifest.sqlite 'select status, count(*) from
tasks group by status'``) while a run is going on.
"""

import json
import os
import sqlite3
import time
from pathlib import Path

import numpy as np

__all__ = ['FILE_ROW', 'STATUSES', 'Manifest']

#: The statuses a row can have.
STATUSES = ('pending', 'running', 'done', 'failed', 'skipped')

#: The ``hdu`` value of the row that records the scan of a whole file.
FILE_ROW = -1

_COLUMNS = {
    'file': 'TEXT NOT NULL',
    'hdu': 'INTEGER NOT NULL',
    'extname': "TEXT NOT NULL DEFAULT ''",
    'status': 'TEXT NOT NULL',
    'shape': "TEXT NOT NULL DEFAULT ''",
    'n_sources': 'INTEGER',
    'catalog': "TEXT NOT NULL DEFAULT ''",
    'segmentation': "TEXT NOT NULL DEFAULT ''",
    'worker': "TEXT NOT NULL DEFAULT ''",
    'attempts': 'INTEGER NOT NULL DEFAULT 0',
    'started': 'REAL',
    'finished': 'REAL',
    'seconds': 'REAL',
    'file_size': 'INTEGER',
    'file_mtime': 'REAL',
    'error': "TEXT NOT NULL DEFAULT ''",
}

_DESCRIPTIONS = {
    'file': 'input file (absolute path)',
    'hdu': 'HDU index; -1 is the row of the whole-file header scan',
    'extname': 'EXTNAME of the HDU',
    'status': 'one of ' + ', '.join(STATUSES),
    'shape': 'image shape ny x nx',
    'n_sources': 'number of sources detected',
    'catalog': 'per-image catalogue file',
    'segmentation': 'per-image segmentation file',
    'worker': 'host:pid of the process that did the work',
    'attempts': 'times the row was submitted to the cluster',
    'started': 'start time on the worker (Unix seconds, UTC)',
    'finished': 'end time on the worker (Unix seconds, UTC)',
    'seconds': 'wall-clock time of the task on the worker',
    'file_size': 'input file size in bytes when scanned',
    'file_mtime': 'input file modification time when scanned',
    'error': 'why the row failed or was skipped',
}


class Manifest:
    """
    SQLite record of a batch run, with resumable per-HDU status.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        The database file; created (with its directory) if missing.

    Notes
    -----
    Use as a context manager, or call `close`. All methods that change
    rows commit immediately.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit; explicit transactions below.
        self._conn = sqlite3.connect(self.path, timeout=60,
                                     isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute('PRAGMA journal_mode=WAL')
        self._conn.execute('PRAGMA synchronous=NORMAL')
        cols = ', '.join(f'{k} {v}' for k, v in _COLUMNS.items())
        with self._transaction():
            self._conn.execute(
                f'CREATE TABLE IF NOT EXISTS tasks ({cols}, '
                'PRIMARY KEY (file, hdu))')
            self._conn.execute(
                'CREATE TABLE IF NOT EXISTS meta '
                '(key TEXT PRIMARY KEY, value TEXT NOT NULL)')

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        counts = ', '.join(f'{k}={v}' for k, v in self.counts().items())
        return f'<Manifest {str(self.path)!r}: {counts or "empty"}>'

    def close(self):
        """Close the database connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _transaction(self):
        conn = self._conn

        class _Tx:
            def __enter__(self):
                conn.execute('BEGIN IMMEDIATE')

            def __exit__(self, exc_type, *_):
                conn.execute('ROLLBACK' if exc_type else 'COMMIT')

        return _Tx()

    # -- run settings ---------------------------------------------------
    def check_settings(self, settings, *, overwrite=False):
        """
        Store the run settings, refusing to mix runs with other settings.

        Parameters
        ----------
        settings : dict
            JSON-serialisable settings that determine the outputs
            (thresholds, model, ...).
        overwrite : bool, optional
            If True, different stored settings are replaced and every row
            is reset to ``pending`` so that all outputs are redone.

        Raises
        ------
        ValueError
            If the manifest holds different settings and ``overwrite`` is
            False: resuming would mix catalogues made with two settings.
        """
        new = json.dumps(settings, sort_keys=True)
        row = self._conn.execute(
            "SELECT value FROM meta WHERE key = 'settings'").fetchone()
        if row is not None and row['value'] != new:
            if not overwrite:
                old = json.loads(row['value'])
                diff = sorted(k for k in set(old) | set(settings)
                              if old.get(k) != settings.get(k))
                msg = (f'the manifest {str(self.path)!r} was made with other '
                       f'settings ({", ".join(diff)} differ); use another '
                       'output directory or overwrite=True (--overwrite) to '
                       'redo everything')
                raise ValueError(msg)
            with self._transaction():
                self._conn.execute(
                    "UPDATE tasks SET status = 'pending' WHERE hdu != ?",
                    (FILE_ROW,))
        with self._transaction():
            self._conn.execute(
                "INSERT OR REPLACE INTO meta VALUES ('settings', ?)", (new,))

    @property
    def settings(self):
        """The stored run settings (dict; empty if none)."""
        row = self._conn.execute(
            "SELECT value FROM meta WHERE key = 'settings'").fetchone()
        return {} if row is None else json.loads(row['value'])

    # -- rows -------------------------------------------------------------
    def get(self, file, hdu=FILE_ROW):
        """
        Return one row as a dict, or None.

        Parameters
        ----------
        file : str
            The input file.
        hdu : int, optional
            The HDU index (default: the file's scan row).

        Returns
        -------
        row : dict or None
            The row.
        """
        row = self._conn.execute(
            'SELECT * FROM tasks WHERE file = ? AND hdu = ?',
            (str(file), int(hdu))).fetchone()
        return None if row is None else dict(row)

    def rows(self, file=None, *, status=None, images_only=False):
        """
        Return rows as dicts, ordered by file and HDU.

        Parameters
        ----------
        file : str, optional
            Only the rows of this file.
        status : str or tuple of str, optional
            Only rows with this status (or these statuses).
        images_only : bool, optional
            Leave out the whole-file scan rows.

        Returns
        -------
        rows : list of dict
            The rows.
        """
        where, params = [], []
        if file is not None:
            where.append('file = ?')
            params.append(str(file))
        if status is not None:
            status = (status,) if isinstance(status, str) else tuple(status)
            where.append(f'status IN ({", ".join("?" * len(status))})')
            params.extend(status)
        if images_only:
            where.append('hdu != ?')
            params.append(FILE_ROW)
        sql = 'SELECT * FROM tasks'
        if where:
            sql += ' WHERE ' + ' AND '.join(where)
        sql += ' ORDER BY file, hdu'
        return [dict(r) for r in self._conn.execute(sql, params)]

    def update(self, file, hdu, status, **fields):
        """
        Insert or update one row atomically.

        Parameters
        ----------
        file : str
            The input file.
        hdu : int
            The HDU index (``FILE_ROW`` for the file scan).
        status : str
            The new status, one of ``STATUSES``.
        **fields
            Other columns to set (``n_sources``, ``seconds``, ``error``...).
        """
        if status not in STATUSES:
            msg = f'status must be one of {STATUSES}, got {status!r}'
            raise ValueError(msg)
        unknown = set(fields) - set(_COLUMNS)
        if unknown:
            msg = f'unknown manifest columns {sorted(unknown)}'
            raise ValueError(msg)
        fields = {k: _to_sql(v) for k, v in fields.items()}
        fields['status'] = status
        names = ['file', 'hdu', *fields]
        values = [str(file), int(hdu), *fields.values()]
        sets = ', '.join(f'{k} = excluded.{k}' for k in fields)
        with self._transaction():
            self._conn.execute(
                f'INSERT INTO tasks ({", ".join(names)}) '
                f'VALUES ({", ".join("?" * len(names))}) '
                f'ON CONFLICT (file, hdu) DO UPDATE SET {sets}', values)

    def mark_running(self, file, hdu):
        """Mark a row as submitted to the cluster and count the attempt."""
        with self._transaction():
            self._conn.execute(
                "UPDATE tasks SET status = 'running', attempts = attempts + 1, "
                "error = '' WHERE file = ? AND hdu = ?", (str(file), int(hdu)))

    def forget_file(self, file):
        """Delete every row of a file (it changed on disk since the scan)."""
        with self._transaction():
            self._conn.execute('DELETE FROM tasks WHERE file = ?', (str(file),))

    def reset_running(self):
        """
        Return rows left ``running`` by a killed run to ``pending``.

        Returns
        -------
        n : int
            The number of rows reset.
        """
        with self._transaction():
            cur = self._conn.execute(
                "UPDATE tasks SET status = 'pending' WHERE status = 'running'")
        return cur.rowcount

    def counts(self, *, images_only=True):
        """
        Number of rows per status.

        Parameters
        ----------
        images_only : bool, optional
            Count only HDU rows (not the whole-file scan rows).

        Returns
        -------
        counts : dict
            Status -> number of rows (statuses with no row left out).
        """
        sql = 'SELECT status, COUNT(*) AS n FROM tasks'
        params = ()
        if images_only:
            sql += ' WHERE hdu != ?'
            params = (FILE_ROW,)
        sql += ' GROUP BY status'
        found = {r['status']: r['n'] for r in self._conn.execute(sql, params)}
        return {s: found[s] for s in STATUSES if s in found}

    # -- export -----------------------------------------------------------
    def to_table(self):
        """
        The manifest as an astropy table.

        Returns
        -------
        table : `~astropy.table.Table`
            One row per file scan and per HDU, with described columns.
        """
        from astropy.table import Table

        rows = self.rows()
        table = Table()
        for name in _COLUMNS:
            values = [r[name] for r in rows]
            if name in ('n_sources', 'file_size'):
                col = np.array([-1 if v is None else v for v in values],
                               dtype=np.int64)
            elif name in ('started', 'finished', 'seconds', 'file_mtime'):
                col = np.array([np.nan if v is None else v for v in values],
                               dtype=float)
            elif name in ('hdu', 'attempts'):
                col = np.array(values, dtype=np.int64)
            else:
                col = np.array(values, dtype=str)
            table[name] = col
            table[name].description = _DESCRIPTIONS[name]
        table.meta['settings'] = self.settings
        table.meta['written'] = time.strftime('%Y-%m-%dT%H:%M:%SZ',
                                              time.gmtime())
        return table

    def write_ecsv(self, path, *, overwrite=True):
        """
        Write the manifest as ECSV, atomically.

        Parameters
        ----------
        path : str or `~pathlib.Path`
            The ECSV file.
        overwrite : bool, optional
            Whether an existing file may be replaced.
        """
        from astro_deepcolor.utils._io import atomic_path

        table = self.to_table()
        with atomic_path(path, overwrite=overwrite, name='manifest') as tmp:
            table.write(tmp, format='ascii.ecsv')


def _to_sql(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, tuple):
        return ' x '.join(str(v) for v in value)
    return value
