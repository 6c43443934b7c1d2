"""The results file of `python -m ast_dora.tag`: one SQLite database, one row per (file, model).

Why SQLite (and not Parquet) for the local run: the job is incremental and must survive `kill -9` at any moment.
SQLite in WAL mode commits a batch of songs in one transaction: a killed process leaves the last committed
state, readable by the next run (which replays or drops the write-ahead log) and by any reader meanwhile, and an
incremental rerun updates a few rows in place. Parquet files are immutable: each batch would be a new file to
merge later, and a half-written one is unreadable. Parquet is what analytics and Ray want, so the table can be
exported to it (`--export_parquet`, `export_parquet`) and the Ray run writes Parquet directly.

Table `songs`, primary key (path, model_key): `status` is `ok`, `error` (a file named like audio that could not
be analysed; `error` says why), or `not_audio` (a file PyAV does not read as audio, skipped); `vanished_at` is set
when a rerun no longer finds the file (the row is kept). `model_key` identifies the answer's model(s): their ids,
weights hashes and ensemble weights; a rerun with another model adds rows beside the first model's.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

COLUMNS = (
    ("path", "TEXT NOT NULL"),
    ("model_key", "TEXT NOT NULL"),
    ("size", "INTEGER"),
    ("mtime", "REAL"),
    ("status", "TEXT NOT NULL"),
    ("duration", "REAL"),
    ("genre", "TEXT"),
    ("confidence", "REAL"),
    ("vote", "TEXT"),
    ("probabilities", "TEXT"),  # JSON object genre -> probability
    ("is_music", "INTEGER"),  # 1 / 0, NULL for a model without the music check
    ("music_probability", "REAL"),
    ("model_id", "TEXT"),  # the --model(s), " + " between ensemble members
    ("weights_hash", "TEXT"),
    ("backend", "TEXT"),
    ("seconds", "REAL"),  # time taken: decode + features + this song's share of its model batches
    ("error", "TEXT"),
    ("analysed_at", "REAL"),  # Unix time
    ("vanished_at", "REAL"),
)
COLUMN_NAMES = tuple(name for name, _ in COLUMNS)
SCHEMA_VERSION = 1


class ResultsError(RuntimeError):
    """A RESULTS file that is not one of this command's databases."""


class ResultsStore:
    """The SQLite results file (see the module docstring); `add(rows)` commits a batch in one transaction."""

    def __init__(self, path: str | os.PathLike, readonly: bool = False):
        self.path = Path(path)
        if readonly:
            if not self.path.is_file():
                raise ResultsError(
                    f"{self.path}: no such results file; `python -m ast_dora.tag LIBRARY --model M "
                    f"--output {self.path}` writes one."
                )
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            try:
                # WAL: a commit is one append to the log; a reader always sees the last commit, a kill -9 mid-write
                # leaves a log tail the next opener ignores. NORMAL sync loses nothing when the process dies (only
                # an OS crash can drop the last commits), at a fraction of FULL's fsyncs.
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self._create()
            except sqlite3.DatabaseError as error:
                raise ResultsError(
                    f"{self.path} is not a results database ({error}); give a new --output file."
                ) from None
        self.db.row_factory = sqlite3.Row

    def _create(self) -> None:
        columns = ", ".join(f"{name} {kind}" for name, kind in COLUMNS)
        with self.db:
            self.db.execute(f"CREATE TABLE IF NOT EXISTS songs ({columns}, PRIMARY KEY (path, model_key))")
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def known(self, model_key: str) -> dict[str, tuple[int, float, str, float | None]]:
        """path -> (size, mtime, status, vanished_at) of every row of `model_key`."""
        cursor = self.db.execute(
            "SELECT path, size, mtime, status, vanished_at FROM songs WHERE model_key = ?", (model_key,)
        )
        return {row[0]: (row[1], row[2], row[3], row[4]) for row in cursor}

    def add(self, rows: Iterable[dict]) -> int:
        """Insert or replace rows (dicts with any of `COLUMN_NAMES`), all in one transaction."""
        rows = list(rows)
        if not rows:
            return 0
        with self.db:
            for row in rows:
                names = [name for name in COLUMN_NAMES if name in row]
                values = [_sql_value(row[name]) for name in names]
                self.db.execute(
                    f"INSERT OR REPLACE INTO songs ({', '.join(names)}) VALUES "
                    f"({', '.join('?' * len(names))})",
                    values,
                )
        return len(rows)

    def update_stat(self, path: str, model_key: str, size: int, mtime: float) -> None:
        """A file whose tags (not audio) were rewritten: its new size and mtime, so a rerun does not redo it."""
        with self.db:
            self.db.execute(
                "UPDATE songs SET size = ?, mtime = ? WHERE path = ? AND model_key = ?",
                (size, mtime, path, model_key),
            )

    def set_vanished(self, paths: Iterable[str], model_key: str, when: float | None = None) -> int:
        paths = list(paths)
        with self.db:
            self.db.executemany(
                "UPDATE songs SET vanished_at = ? WHERE path = ? AND model_key = ?",
                [(when or time.time(), path, model_key) for path in paths],
            )
        return len(paths)

    def clear_vanished(self, paths: Iterable[str], model_key: str) -> None:
        with self.db:
            self.db.executemany(
                "UPDATE songs SET vanished_at = NULL WHERE path = ? AND model_key = ?",
                [(path, model_key) for path in paths],
            )

    def rows(self, model_key: str | None = None, include_vanished: bool = False) -> Iterator[dict]:
        """Rows as dicts, `probabilities` parsed and `is_music` a bool (or None)."""
        where, args = [], []
        if model_key is not None:
            where.append("model_key = ?")
            args.append(model_key)
        if not include_vanished:
            where.append("vanished_at IS NULL")
        sql = "SELECT * FROM songs" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY path"
        for row in self.db.execute(sql, args):
            yield parse_row(dict(row))

    def model_keys(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT DISTINCT model_key FROM songs ORDER BY model_key")]


def parse_row(row: dict) -> dict:
    if isinstance(row.get("probabilities"), str):
        row["probabilities"] = json.loads(row["probabilities"])
    if row.get("is_music") is not None:
        row["is_music"] = bool(row["is_music"])
    return row


def _sql_value(value):
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, bool):
        return int(value)
    return value


def export_parquet(rows: Iterable[dict], path: str | os.PathLike) -> Path:
    """Rows (as `ResultsStore.rows` gives them) -> one Parquet file, `probabilities` as a JSON string column (the
    genres differ between models) and `genre_probability` the top one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [dict(row) for row in rows]
    for row in rows:
        if isinstance(row.get("probabilities"), dict):
            row["probabilities"] = json.dumps(row["probabilities"])
    table = pa.Table.from_pylist(rows, schema=parquet_schema())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def parquet_schema():
    import pyarrow as pa

    kinds = {"TEXT": pa.string(), "INTEGER": pa.int64(), "REAL": pa.float64()}
    fields = []
    for name, kind in COLUMNS:
        arrow = kinds[kind.split()[0]]
        if name == "is_music":
            arrow = pa.bool_()
        fields.append(pa.field(name, arrow))
    return pa.schema(fields)


__all__ = ["COLUMN_NAMES", "ResultsError", "ResultsStore", "export_parquet", "parquet_schema", "parse_row"]
