"""The journal: one SQLite (WAL) row per input and the HIAS outbox, written in one transaction.

This is the record of truth behind "exactly one outcome per input": a result id is inserted
once (a second insert of the same id is ignored and reported), and crash recovery asks
`has()` before processing a leftover again. Thread-safe: one connection behind a lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_id_lock = threading.Lock()
_last_id = [0, 0]  # ms, random part of the previous id (monotonic within the process)


def new_id() -> str:
    """A ULID: 26 chars, sorts by creation time, strictly increasing within this process."""
    with _id_lock:
        ms = int(time.time() * 1000)
        if ms <= _last_id[0]:
            ms, rnd = _last_id[0], _last_id[1] + 1
        else:
            rnd = int.from_bytes(os.urandom(10), "big") >> 1  # headroom for increments
        _last_id[0], _last_id[1] = ms, rnd
    value = (ms << 80) | rnd
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in range(25, -1, -1))


def utc_iso(ts: Optional[float] = None) -> str:
    """`2026-11-22T19:30:00.123Z`"""
    dt = datetime.fromtimestamp(time.time() if ts is None else ts, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id TEXT PRIMARY KEY,
    time TEXT NOT NULL,
    source TEXT NOT NULL,
    name TEXT,
    sha256 TEXT,
    status TEXT NOT NULL CHECK (status IN ('ok', 'quarantined')),
    reason TEXT,
    label TEXT,
    probability REAL,
    threshold REAL,
    model_name TEXT,
    model_version TEXT,
    device TEXT,
    latency_ms REAL,
    analysis TEXT,
    image TEXT,
    thumb TEXT,
    annotated TEXT,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_time ON results (time);
CREATE INDEX IF NOT EXISTS results_quarantined ON results (id) WHERE status = 'quarantined';
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY REFERENCES results (id),
    queued REAL NOT NULL,
    delivered REAL
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (id) WHERE delivered IS NULL;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

COUNTER_NAMES = ("processed", "positive", "negative", "quarantined")
FILE_COLUMNS = ("image", "thumb", "annotated")


class Journal:
    """Results and outbox in `data_dir/journal.sqlite3`.

    `outbox=False` (HIAS disabled) writes no outbox rows, so undeliverable rows never pin the
    journal against retention. File paths are stored relative to `data_dir`.
    """

    def __init__(self, data_dir: Path, *, outbox: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / "journal.sqlite3"
        self.outbox_enabled = outbox
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=30
        )
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on the medium before the input file is archived (power loss).
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            for name in COUNTER_NAMES:
                self._db.execute(
                    "INSERT OR IGNORE INTO counters (name, value) VALUES (?, 0)", (name,)
                )

    # ------------------------------------------------------------------ writing

    def record(self, result: Dict[str, Any], files: Optional[Dict[str, Optional[str]]] = None
               ) -> bool:
        """Insert the result (+ outbox row if ok) atomically. False if the id was already there.

        `files` maps image/thumb/annotated to paths relative to data_dir (for the web API).
        """
        return self.record_many([(result, files)])[0]

    def record_many(self, items: Sequence[Tuple[Dict[str, Any], Optional[Dict[str, Optional[str]]]]]
                    ) -> List[bool]:
        """Several results in one transaction (one fsync): the pipeline's group commit."""
        inserted: List[bool] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for result, files in items:
                    inserted.append(self._insert(result, files or {}))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return inserted

    def _insert(self, result: Dict[str, Any], files: Dict[str, Optional[str]]) -> bool:
        status = result["status"]
        model = result.get("model") or {}
        row = (
            result["id"], result["time"], result["source"], result.get("name"),
            result.get("sha256"), status, result.get("reason"), result.get("label"),
            result.get("probability"), result.get("threshold"), model.get("name"),
            model.get("version"), result.get("device"), result.get("latency_ms"),
            result.get("analysis"), files.get("image"), files.get("thumb"),
            files.get("annotated"), json.dumps(result, ensure_ascii=False),
        )
        cur = self._db.execute(
            "INSERT OR IGNORE INTO results (id, time, source, name, sha256, status, reason,"
            " label, probability, threshold, model_name, model_version, device,"
            " latency_ms, analysis, image, thumb, annotated, json)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            row,
        )
        if cur.rowcount == 0:
            log.warning("result %s is already journaled; duplicate ignored", result["id"])
            return False
        if status == "ok":
            bump: Tuple[str, ...] = ("processed", "positive" if result.get("positive")
                                     else "negative")
            if self.outbox_enabled:
                self._db.execute("INSERT INTO outbox (id, queued) VALUES (?, ?)",
                                 (result["id"], time.time()))
        else:
            bump = ("quarantined",)
        self._db.executemany("UPDATE counters SET value = value + 1 WHERE name = ?",
                             [(b,) for b in bump])
        return True

    def set_files(self, id: str, **files: Optional[str]) -> None:
        """Update file columns after a move (e.g. the archive path once known)."""
        cols = {k: v for k, v in files.items() if k in FILE_COLUMNS}
        if not cols:
            return
        sets = ", ".join(f"{k} = ?" for k in cols)
        with self._lock:
            self._db.execute(f"UPDATE results SET {sets} WHERE id = ?", (*cols.values(), id))

    # ------------------------------------------------------------------ reading

    def has(self, id: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM results WHERE id = ?", (id,)).fetchone() \
                is not None

    def get(self, id: str) -> Optional[Dict[str, Any]]:
        with self._lock:
            r = self._db.execute("SELECT json FROM results WHERE id = ?", (id,)).fetchone()
        return json.loads(r["json"]) if r else None

    def files(self, id: str) -> Dict[str, Optional[Path]]:
        """Absolute paths of the archived image, thumbnail and annotated image (None if none).

        A path may no longer exist once retention removed it: callers answer 404 then.
        """
        with self._lock:
            r = self._db.execute(
                "SELECT image, thumb, annotated FROM results WHERE id = ?", (id,)
            ).fetchone()
        if r is None:
            return {k: None for k in FILE_COLUMNS}
        return {k: (self.data_dir / r[k] if r[k] else None) for k in FILE_COLUMNS}

    def recent(self, limit: int = 50, before_id: Optional[str] = None,
               status: Optional[str] = None) -> List[Dict[str, Any]]:
        """Newest first; pass the last id of a page as `before_id` for the next page.
        `status` ("ok" or "quarantined") filters; quarantined rows have their own index, as
        they are rare and the status page asks for them on every refresh."""
        limit = max(0, min(int(limit), 1000))
        where, args = [], []
        if before_id:
            where.append("id < ?")
            args.append(before_id)
        if status:
            where.append("status = ?" if status != "quarantined" else "status = 'quarantined'")
            if status != "quarantined":
                args.append(status)
        sql = "SELECT json FROM results" + (" WHERE " + " AND ".join(where) if where else "") + \
            " ORDER BY id DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [json.loads(r["json"]) for r in rows]

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def counters(self) -> Dict[str, int]:
        """Totals since the journal was created (retention does not decrease them)."""
        with self._lock:
            rows = self._db.execute("SELECT name, value FROM counters").fetchall()
        return {r["name"]: r["value"] for r in rows}

    # ------------------------------------------------------------------ outbox

    def outbox_pending(self, limit: int = 100) -> List[Dict[str, Any]]:
        """Undelivered results, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT r.json FROM outbox o JOIN results r ON r.id = o.id"
                " WHERE o.delivered IS NULL ORDER BY o.id LIMIT ?",
                (max(0, int(limit)),),
            ).fetchall()
        return [json.loads(r["json"]) for r in rows]

    def outbox_mark_delivered(self, id: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET delivered = ? WHERE id = ? AND delivered IS NULL",
                (time.time(), id),
            )

    def outbox_stats(self) -> Dict[str, Any]:
        with self._lock:
            r = self._db.execute(
                "SELECT COUNT(*) AS n, MIN(queued) AS oldest FROM outbox WHERE delivered IS NULL"
            ).fetchone()
        oldest = None if r["oldest"] is None else round(max(0.0, time.time() - r["oldest"]), 3)
        return {"depth": r["n"], "oldest_age_s": oldest}

    # ------------------------------------------------------------------ retention

    def live_bytes(self) -> int:
        """Bytes the database's data occupies (freed pages are reused before the file grows)."""
        with self._lock:
            page = self._db.execute("PRAGMA page_size").fetchone()[0]
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * page

    def _rows_for_size(self, max_bytes: int) -> Optional[int]:
        """How many rows fit in `max_bytes` (aiming 10% under, so pruning is not continual);
        None when the journal is within it. Rows differ in size (cells mode keeps every cell),
        hence a budget in bytes beside the one in rows."""
        used = self.live_bytes()
        if not max_bytes or used <= max_bytes:
            return None
        return int(self.count() * 0.9 * max_bytes / used)

    def prune(self, max_rows: int, max_days: float, now: Optional[float] = None,
              batch: int = 5000, max_bytes: int = 0) -> int:
        """Delete the oldest rows beyond `max_rows`, beyond `max_bytes` of data, or older than
        `max_days`. Rows with an undelivered outbox entry are never deleted. Returns rows deleted.
        """
        cutoff = utc_iso((time.time() if now is None else now) - max_days * 86400)
        fit = self._rows_for_size(max_bytes)
        if fit is not None:
            max_rows = min(max_rows, fit)
        deleted = 0
        keep_pending = (
            "NOT EXISTS (SELECT 1 FROM outbox o WHERE o.id = results.id AND o.delivered IS NULL)"
        )
        while True:
            with self._lock:  # per batch: results keep being journaled during a long prune
                excess = max(0, self.count() - max_rows)
                rows = self._db.execute(
                    f"SELECT id FROM results WHERE {keep_pending} AND"
                    f" (time < ? OR id IN (SELECT id FROM results WHERE {keep_pending}"
                    " ORDER BY id LIMIT ?))"
                    " ORDER BY id LIMIT ?",
                    (cutoff, excess, batch),
                ).fetchall()
                if not rows:
                    break
                ids = [(r["id"],) for r in rows]
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany("DELETE FROM outbox WHERE id = ?", ids)
                    self._db.executemany("DELETE FROM results WHERE id = ?", ids)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            deleted += len(ids)
            if len(ids) < batch:
                break
            time.sleep(0.001)  # Python locks are not fair: let a waiting writer in
        return deleted

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
