"""Every request sent to a served model, logged in the run's results store (``results.sqlite``, table ``queries``).

One row per HTTP request, retries included: the run it belongs to (a new id each time the command starts, so a
``--resume`` adds its own rows), the time, the images it carried, bytes sent and received, latency, the status (an
HTTP code or the name of a transport error) and the attempt number. Headers are never logged, so a bearer token
cannot reach the file. Each row is committed as it arrives (the client's worker threads share one connection under
a lock; one small WAL transaction per HTTP request), so a killed run keeps every request it made and never holds
a write lock the results store would wait on.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import statistics
import threading
import uuid
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS queries (
    run TEXT NOT NULL, seq INTEGER NOT NULL, at TEXT NOT NULL, images INTEGER NOT NULL, bytes_sent INTEGER NOT NULL,
    bytes_received INTEGER NOT NULL, seconds REAL NOT NULL, status TEXT NOT NULL, attempt INTEGER NOT NULL,
    PRIMARY KEY (run, seq));
"""


class QueryLog:
    """Appends one row per request to ``path`` (a results.sqlite, or a folder holding one)."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.path = path / "results.sqlite" if path.suffix not in (".sqlite", ".db") else path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.run = uuid.uuid4().hex[:12]
        self._db = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        self._seq = 0

    def __call__(self, rec: Any) -> None:
        """The client's ``on_record`` hook: ``rec`` is a :class:`~medfool_ref.targets.endpoint.QueryRecord`."""
        at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
        with self._lock:
            self._db.execute("INSERT INTO queries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (self.run, self._seq, at, int(rec.images), int(rec.bytes_sent), int(rec.bytes_received),
                              float(rec.seconds), str(rec.status), int(rec.attempt)))
            self._seq += 1

    def close(self) -> None:
        with self._lock:
            self._db.close()


def summary(path: str | Path) -> dict[str, Any] | None:
    """The logged requests of every run in the store: counts, images, bytes, latency and statuses (None: no log)."""
    path = Path(path)
    path = path / "results.sqlite" if path.suffix not in (".sqlite", ".db") else path
    if not path.is_file():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        if db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='queries'").fetchone() is None:
            return None
        rows = db.execute("SELECT run, images, bytes_sent, bytes_received, seconds, status, attempt FROM queries").fetchall()
    finally:
        db.close()
    if not rows:
        return None
    ok = [r for r in rows if r[5].isdigit() and int(r[5]) < 300]
    latency = sorted(r[4] for r in rows)
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r[5]] = statuses.get(r[5], 0) + 1
    return {"runs": len({r[0] for r in rows}), "requests": len(rows), "answered": len(ok),
            "images_answered": sum(r[1] for r in ok), "retries": sum(1 for r in rows if r[6] > 0),
            "bytes_sent": sum(r[2] for r in rows), "bytes_received": sum(r[3] for r in rows),
            "latency_median_s": statistics.median(latency), "latency_p95_s": latency[min(len(latency) - 1, int(0.95 * len(latency)))],
            "statuses": dict(sorted(statuses.items()))}
