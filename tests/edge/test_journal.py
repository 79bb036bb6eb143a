"""Journal: one row per input, outbox in the same transaction, paging, retention of rows."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Dict

import pytest

from edge.journal import Journal, new_id, utc_iso


def result(status: str = "ok", positive: bool = True, t: float = None, **kw: Any
           ) -> Dict[str, Any]:
    r = {"id": new_id(), "time": utc_iso(t), "source": "test", "name": "a b é.png",
         "sha256": "0" * 64, "status": status, "reason": None if status == "ok" else "empty",
         "label": ("ALL" if positive else "normal") if status == "ok" else None,
         "positive": positive if status == "ok" else None, "probability": 0.9,
         "threshold": 0.5, "model": {"name": "m", "version": "1", "synthetic": True},
         "device": "CPU", "latency_ms": 1.0, "analysis": "whole-image", "cells": None}
    r.update(kw)
    return r


def test_ids_sort_by_time_and_are_unique() -> None:
    ids = [new_id() for _ in range(2000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(len(i) == 26 and i.isalnum() for i in ids)


def test_record_get_counters_and_duplicates(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    ok, neg, bad = result(), result(positive=False), result("quarantined")
    assert j.record(ok, {"image": "archive/x.png", "thumb": "thumbs/x.jpg"})
    assert j.record(neg) and j.record(bad)
    assert not j.record(ok), "a second record of the same id must be ignored"
    assert j.get(ok["id"]) == ok
    assert j.get("nope") is None
    assert j.counters() == {"processed": 2, "positive": 1, "negative": 1, "quarantined": 1}
    assert j.files(ok["id"])["image"] == tmp_path / "archive/x.png"
    assert j.files(neg["id"]) == {"image": None, "thumb": None, "annotated": None}
    assert j.count() == 3
    mode = sqlite3.connect(tmp_path / "journal.sqlite3").execute("PRAGMA journal_mode").fetchone()
    assert mode[0] == "wal"


def test_recent_pages_newest_first(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    rs = [result() for _ in range(7)]
    for r in rs:
        j.record(r)
    page1 = j.recent(3)
    assert [r["id"] for r in page1] == [r["id"] for r in rs[::-1][:3]]
    page2 = j.recent(3, before_id=page1[-1]["id"])
    assert [r["id"] for r in page2] == [r["id"] for r in rs[::-1][3:6]]
    assert len(j.recent(3, before_id=page2[-1]["id"])) == 1


def test_outbox_only_for_ok_results_and_delivery(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    a, q, b = result(), result("quarantined"), result()
    for r in (a, q, b):
        j.record(r)
    assert [r["id"] for r in j.outbox_pending(10)] == [a["id"], b["id"]]
    stats = j.outbox_stats()
    assert stats["depth"] == 2 and stats["oldest_age_s"] >= 0
    j.outbox_mark_delivered(a["id"])
    assert [r["id"] for r in j.outbox_pending(10)] == [b["id"]]
    j.outbox_mark_delivered(b["id"])
    assert j.outbox_stats() == {"depth": 0, "oldest_age_s": None}


def test_no_outbox_rows_when_hias_is_off(tmp_path: Path) -> None:
    j = Journal(tmp_path, outbox=False)
    j.record(result())
    assert j.outbox_pending(10) == [] and j.outbox_stats()["depth"] == 0


def test_result_and_outbox_are_one_transaction(tmp_path: Path) -> None:
    """If the outbox insert fails, the result row must not stay behind."""
    j = Journal(tmp_path)
    r = result()
    j._db.execute("INSERT INTO results (id, time, source, status, json) VALUES "
                  "('x', 't', 's', 'ok', '{}')")
    j._db.execute("INSERT INTO outbox (id, queued) VALUES ('x', 0)")
    j._db.execute("DELETE FROM outbox WHERE id = 'x'")
    j._db.execute("CREATE TRIGGER boom BEFORE INSERT ON outbox BEGIN "
                  "SELECT RAISE(ABORT, 'disk full'); END")
    with pytest.raises(sqlite3.IntegrityError):
        j.record(r)
    assert j.get(r["id"]) is None
    assert j.counters()["processed"] == 0


def test_prune_by_rows_and_age_keeps_undelivered(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    old_t = time.time() - 40 * 86400
    old = [result(t=old_t) for _ in range(5)]
    new = [result() for _ in range(10)]
    for r in old + new:
        j.record(r)
    for r in old[1:] + new:
        j.outbox_mark_delivered(r["id"])
    # old[0] is still undelivered: never deleted, however old
    assert j.prune(max_rows=1000, max_days=30) == 4
    assert j.get(old[0]["id"]) is not None
    assert j.prune(max_rows=6, max_days=30) == 5
    remaining = [r["id"] for r in j.recent(100)]
    assert old[0]["id"] in remaining and len(remaining) == 6
    assert remaining[:5] == [r["id"] for r in new[::-1][:5]]
    assert j.counters()["processed"] == 15, "retention does not rewrite history totals"


def test_concurrent_writers_and_readers(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    errors = []

    def writer() -> None:
        try:
            for _ in range(100):
                j.record(result())
                j.recent(5)
                j.outbox_stats()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert j.count() == 400 and j.counters()["processed"] == 400
    j.close()
    assert Journal(tmp_path).count() == 400


def test_a_long_prune_does_not_block_new_results(tmp_path: Path) -> None:
    """Retention deletes in batches and lets the pipeline journal between them, so a big
    prune (e.g. after lowering journal_max_rows) cannot stall the pipeline."""
    j = Journal(tmp_path, outbox=False)
    j.record_many([(result(), None) for _ in range(3000)])
    finished = threading.Event()

    def prune() -> None:
        j.prune(max_rows=1000, max_days=3650, batch=10)  # 200 batches
        finished.set()

    t = threading.Thread(target=prune)
    t.start()
    try:
        wait_started = time.monotonic() + 10
        while j.count() == 3000 and time.monotonic() < wait_started:
            time.sleep(0.001)
        j.record(result())
        assert not finished.is_set(), "record() had to wait for the whole prune"
    finally:
        t.join(60)
    assert j.count() == 1000


def test_prune_keeps_the_data_within_its_byte_budget_oldest_first(tmp_path: Path) -> None:
    """cells-mode rows carry every cell: a row budget alone would not bound the file."""
    j = Journal(tmp_path, outbox=False)
    cells = [{"x": i, "y": i, "r": 12, "probability": 0.5, "label": "ALL"} for i in range(150)]
    for _ in range(600):
        j.record(result(cells={"found": 150, "list": cells}))
    first = [r["id"] for r in j._db.execute("SELECT id FROM results ORDER BY id")]
    before = j.live_bytes()
    budget = before // 3
    assert j.prune(max_rows=10**6, max_days=3650, max_bytes=budget) > 0
    assert j.live_bytes() <= budget
    left = [r["id"] for r in j._db.execute("SELECT id FROM results ORDER BY id")]
    assert left == first[-len(left):], "the oldest rows go first"
    assert j.prune(max_rows=10**6, max_days=3650, max_bytes=budget) == 0   # within it: nothing more
    for _ in range(600):                                                    # freed pages are reused
        j.record(result(cells={"found": 150, "list": cells}))
        j.prune(max_rows=10**6, max_days=3650, max_bytes=budget, batch=100)
    assert (tmp_path / "journal.sqlite3").stat().st_size <= before * 1.1
    j.close()
