"""The results store: finished units in a SQLite file, keyed by the unit key.

Each unit is written in one transaction (its row, its items and its artifacts together), in
WAL mode, so a process killed at any moment (SIGKILL included) leaves every unit either wholly
written or absent: at most the units in flight are lost, and the file is never corrupt. Writing
a key again replaces it, so writes are idempotent. Nothing else is kept in memory: metrics are
computed from what is read back.
"""

from __future__ import annotations

import json
import math
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from .outcome import RECORD_FIELDS, UnitFailure, UnitOutcome

FORMAT = "medfool-results-1"
FILENAME = "results.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS units (
  key TEXT PRIMARY KEY, attack TEXT NOT NULL, label TEXT NOT NULL, params TEXT NOT NULL, target INTEGER,
  status TEXT NOT NULL CHECK (status IN ('done', 'failed')), error TEXT, kind TEXT, n_items INTEGER NOT NULL,
  seconds REAL, forward_calls INTEGER, forward_images INTEGER, backward_calls INTEGER, backward_images INTEGER,
  iterations INTEGER, extra TEXT NOT NULL, device TEXT, finished_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
  unit TEXT NOT NULL REFERENCES units(key) ON DELETE CASCADE, pos INTEGER NOT NULL,
  item TEXT NOT NULL, name TEXT, path TEXT, label INTEGER, target INTEGER,
  pred_before INTEGER, conf_before REAL, pred_after INTEGER, conf_after REAL, success INTEGER,
  pred_8bit INTEGER, conf_8bit REAL, success_8bit INTEGER,
  l0 INTEGER, l2 REAL, linf REAL, l0_8bit INTEGER, l2_8bit REAL, linf_8bit REAL,
  extra TEXT NOT NULL, PRIMARY KEY (unit, pos));
CREATE TABLE IF NOT EXISTS artifacts (
  unit TEXT NOT NULL REFERENCES units(key) ON DELETE CASCADE, name TEXT NOT NULL, media TEXT NOT NULL,
  data BLOB NOT NULL, PRIMARY KEY (unit, name));
CREATE INDEX IF NOT EXISTS units_by_attack ON units (attack, label);
"""


class StoreError(ValueError):
    """A results file medfool cannot use: the message says why."""


def _json(value: Any) -> str:
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None  # JSON has no NaN; a non-finite figure is stored as unknown
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(value), sort_keys=True, allow_nan=False)


class ResultsStore:
    """A results file, opened (and created, with its folder) only when first written or read."""

    def __init__(self, path: str | Path) -> None:
        self.memory = str(path) == ":memory:"  # a store that lives as long as the object (tests, one-off helpers)
        self.path = Path(path)
        if not self.memory and self.path.suffix not in (".sqlite", ".db"):  # a folder: the store is its results.sqlite
            self.path = self.path / FILENAME
        self._db: sqlite3.Connection | None = None

    @property
    def exists(self) -> bool:
        return self.memory or self._db is not None or self.path.is_file()

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = self._open()
        return self._db

    def _open(self) -> sqlite3.Connection:
        if not self.memory:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(":memory:" if self.memory else str(self.path), isolation_level=None, timeout=30.0)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable against a killed process
            db.execute("PRAGMA foreign_keys=ON")
            db.executescript(SCHEMA)
            fmt = db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a medfool results store ({exc})") from None
        self._cols = {t: [c[1] for c in db.execute(f"PRAGMA table_info({t})")] for t in ("units", "items")}
        if fmt is None:
            db.execute("INSERT INTO meta VALUES ('format', ?)", (FORMAT,))
        elif fmt[0] != FORMAT:
            raise StoreError(f"{self.path}: results format {fmt[0]!r}, this medfool reads {FORMAT!r}")
        return db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ meta

    def set_meta(self, **values: Any) -> None:
        with self._tx():
            for k, v in values.items():
                self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, _json(v)))

    def meta(self) -> dict[str, Any]:
        return {k: (v if k == "format" else json.loads(v)) for k, v in self.db.execute("SELECT key, value FROM meta")}

    # ------------------------------------------------------------------ writing

    def _tx(self) -> Any:
        db = self.db

        class Tx:
            def __enter__(self) -> None:
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type: Any, *rest: Any) -> None:
                db.execute("ROLLBACK" if exc_type else "COMMIT")

        return Tx()

    def put(self, outcome: UnitOutcome | UnitFailure) -> None:
        """Write one finished (or failed) unit, replacing what its key held, in one transaction."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._tx():
            self.db.execute("DELETE FROM units WHERE key = ?", (outcome.key,))
            if isinstance(outcome, UnitFailure):
                self.db.execute(
                    "INSERT INTO units (key, attack, label, params, status, error, kind, n_items, extra, finished_at) "
                    "VALUES (?, ?, ?, ?, 'failed', ?, ?, 0, '{}', ?)",
                    (outcome.key, outcome.attack, outcome.label, _json(outcome.params), outcome.error, outcome.kind, now))
                return
            o = outcome
            self.db.execute(
                "INSERT INTO units VALUES (?, ?, ?, ?, ?, 'done', NULL, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (o.key, o.attack, o.label, _json(o.params), o.target, len(o.records), o.seconds, o.forward_calls,
                 o.forward_images, o.backward_calls, o.backward_images, o.iterations, _json(o.extra), o.device, now))
            self.db.executemany(
                f"INSERT INTO items VALUES (?, ?, {', '.join('?' * len(RECORD_FIELDS))}, ?)",
                [(o.key, pos, *(_sql(getattr(r, f)) for f in RECORD_FIELDS), _json(r.extra)) for pos, r in enumerate(o.records)])
            self.db.executemany("INSERT INTO artifacts VALUES (?, ?, ?, ?)", [(o.key, a.name, a.media, a.data) for a in o.artifacts])

    # ------------------------------------------------------------------ reading

    def done_keys(self) -> set[str]:
        if not self.exists:
            return set()
        return {k for (k,) in self.db.execute("SELECT key FROM units WHERE status = 'done'")}

    def units(self, *, attack: str | None = None, label: str | None = None, keys: list[str] | None = None,
              status: str | None = "done") -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM units WHERE 1=1", []
        for col, val in (("attack", attack), ("label", label), ("status", status)):
            if val is not None:
                sql += f" AND {col} = ?"
                args.append(val)
        rows = [self._row(r, "units") for r in self.db.execute(sql + " ORDER BY rowid", args)]
        if keys is not None:
            order = {k: i for i, k in enumerate(keys)}
            rows = sorted((r for r in rows if r["key"] in order), key=lambda r: order[r["key"]])
        return rows

    def items(self, unit_keys: list[str]) -> list[dict[str, Any]]:
        return list(self.iter_items(unit_keys))

    def artifact(self, unit_key: str, name: str) -> bytes | None:
        row = self.db.execute("SELECT data FROM artifacts WHERE unit = ? AND name = ?", (unit_key, name)).fetchone()
        return None if row is None else bytes(row[0])

    def artifact_names(self, unit_key: str) -> list[str]:
        return [n for (n,) in self.db.execute("SELECT name FROM artifacts WHERE unit = ? ORDER BY name", (unit_key,))]

    def integrity(self) -> str:
        return str(self.db.execute("PRAGMA integrity_check").fetchone()[0])

    def _row(self, row: tuple[Any, ...], table: str) -> dict[str, Any]:
        d = dict(zip(self._cols[table], row))
        for k in ("params", "extra"):
            if k in d and d[k] is not None:
                d[k] = json.loads(d[k])
        for k in ("success", "success_8bit"):
            if k in d and d[k] is not None:
                d[k] = bool(d[k])
        return d

    def iter_items(self, unit_keys: list[str]) -> Iterator[dict[str, Any]]:
        for key in unit_keys:
            for r in self.db.execute("SELECT * FROM items WHERE unit = ? ORDER BY pos", (key,)):
                yield self._row(r, "items")


def _sql(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
