"""Daemon API in-process: submit_bytes, back-pressure, reload, analyzers, recovery, retention."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from edge.config import StorageConfig
from edge.daemon import Daemon
from edge.journal import Journal, new_id, utc_iso
from edge.pipeline import Busy, Job, Pipeline, Stopped, whole_image
from edge.retention import Retention, Store, stored_name
from edge.sources.folder import recover, ulid_time
from tests.edge.conftest import Env
from tests.util import cnmc_files, png_header_only, wait_until


def slow(delay: float):
    def analyzer(image, classifier) -> Dict[str, Any]:
        time.sleep(delay)
        return whole_image(image, classifier)
    return analyzer


@pytest.fixture
def daemon(env: Env):
    d = Daemon(env.config("sources.folder.enabled=false"))
    d.start()
    yield d
    d.shutdown()


def test_submit_bytes_ok_is_journaled_and_archived(daemon: Daemon) -> None:
    data = cnmc_files()[0].read_bytes()
    r = daemon.submit_bytes(data, source="api", name="../../etc/cell.bmp")
    assert r["status"] == "ok" and r["source"] == "api" and r["name"] == "cell.bmp"
    assert daemon.journal.get(r["id"]) == r
    files = daemon.journal.files(r["id"])
    assert files["image"].read_bytes() == data
    assert files["image"].parent.parent == daemon.store.archive
    assert files["thumb"].is_file()
    assert r["disclaimer"].startswith("Research use only")
    assert set(r) >= {"id", "time", "source", "name", "sha256", "status", "reason", "label",
                      "positive", "probability", "threshold", "model", "device", "latency_ms",
                      "analysis", "cells", "disclaimer"}


def test_submit_bytes_bad_input_is_one_quarantined_row(daemon: Daemon) -> None:
    r = daemon.submit_bytes(png_header_only(30000, 30000), source="api", name="bomb.png")
    assert (r["status"], r["reason"]) == ("quarantined", "too_many_pixels")
    assert "30000x30000" in r["detail"]
    assert daemon.journal.get(r["id"])["status"] == "quarantined"
    assert daemon.journal.files(r["id"])["image"] is None
    r = daemon.submit_bytes(b"%PDF-1.4 not an image", source="api", name="x.pdf")
    assert r["reason"] == "not_an_image"
    assert daemon.journal.counters()["quarantined"] == 2
    # journaled but not stored (docs/architecture.md): uploads cannot fill quarantine/
    assert list(daemon.store.quarantine.iterdir()) == []
    with pytest.raises(ValueError, match="unknown analysis mode"):
        daemon.submit_bytes(b"x", source="api", name="x.png", analysis="nope")


def test_registered_analyzer_and_its_outputs(daemon: Daemon) -> None:
    import numpy as np

    def cells(image, classifier):
        return {"probability": 0.75, "cells": {"found": 1, "blasts": 1, "blast_fraction": 1.0,
                                               "items": []},
                "annotated": np.zeros((20, 30, 3), np.uint8)}

    daemon.register_analyzer("cells", cells)
    r = daemon.submit_bytes(cnmc_files()[0].read_bytes(), source="camera", name="f.bmp",
                            analysis="cells")
    assert r["analysis"] == "cells" and r["probability"] == 0.75
    assert r["positive"] == (r["threshold"] <= 0.75) and r["cells"]["found"] == 1
    assert daemon.journal.files(r["id"])["annotated"].is_file()

    def broken(image, classifier):
        raise RuntimeError("bug in analyzer")

    daemon.register_analyzer("broken", broken)
    r = daemon.submit_bytes(cnmc_files()[0].read_bytes(), source="api", name="g.bmp",
                            analysis="broken")
    assert (r["status"], r["reason"]) == ("quarantined", "internal_error")
    assert daemon.pipeline.alive()

    def not_json(image, classifier):  # numpy scalars cannot be journaled as JSON
        return {"probability": 0.5, "cells": {"found": np.int64(1), "blasts": 0,
                                              "blast_fraction": 0.0, "items": []}}

    daemon.register_analyzer("not-json", not_json)
    r = daemon.submit_bytes(cnmc_files()[0].read_bytes(), source="api", name="h.bmp",
                            analysis="not-json")
    assert (r["status"], r["reason"]) == ("quarantined", "internal_error")
    assert daemon.journal.get(r["id"])["reason"] == "internal_error"
    assert daemon.pipeline.failed == 0


def slow_pipeline(tmp_path: Path, model_xml: Path, queue_size: int):
    """A real, started pipeline whose analyzer takes 50 ms, so its small queue fills up."""
    from edge.inference import Classifier

    clf = Classifier(model_xml, ["CPU"])
    store = Store(StorageConfig(data_dir=tmp_path / "data", min_free_mb=0))
    journal = Journal(tmp_path / "data")
    done: List[dict] = []
    p = Pipeline(classifier_fn=lambda: clf, journal=journal, store=store,
                 analyzers={"whole-image": slow(0.05)}, listeners=done.append,
                 decode_workers=1, queue_size=queue_size)
    p.start()
    return p, journal, done


def test_back_pressure_busy_and_nothing_lost(tmp_path: Path, model_xml: Path) -> None:
    p, journal, done = slow_pipeline(tmp_path, model_xml, queue_size=2)
    data = cnmc_files()[0].read_bytes()
    accepted, busy = 0, False
    for i in range(50):
        id = new_id()
        job = Job(id=id, source="api", name=f"{i}.bmp", analysis="whole-image",
                  received=time.time(), stored=stored_name(id, f"{i}.bmp"), data=data)
        try:
            p.submit(job, timeout=0.01)
        except Busy:
            busy = True
            break
        accepted += 1
    assert busy, "a bounded pipeline must push back"
    assert accepted < 20
    assert p.stop(timeout=30)
    assert len(done) == accepted == journal.count() == p.completed
    with pytest.raises(Stopped):
        p.submit(job)


def test_submit_blocked_on_a_full_queue_during_stop_is_processed_or_refused(
        tmp_path: Path, model_xml: Path) -> None:
    """A submitter waiting on a full queue while stop() runs must never be left unprocessed."""
    p, journal, done = slow_pipeline(tmp_path, model_xml, queue_size=1)
    data = cnmc_files()[0].read_bytes()
    outcomes: List[str] = []

    def submitter(i: int) -> None:
        id = new_id()
        job = Job(id=id, source="api", name=f"{i}.bmp", analysis="whole-image",
                  received=time.time(), stored=stored_name(id, f"{i}.bmp"), data=data)
        try:
            p.submit(job, timeout=20)
            outcomes.append("accepted")
        except Stopped:
            outcomes.append("refused")

    threads = [threading.Thread(target=submitter, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    time.sleep(0.1)  # most submitters are now blocked on the full intake queue
    assert p.stop(timeout=30)
    for t in threads:
        t.join(30)
    assert len(outcomes) == 12 and "refused" in outcomes
    assert outcomes.count("accepted") == len(done) == journal.count() == p.completed


def test_reload_keeps_queue_and_old_model_on_failure(tmp_path: Path, model_copy: Path) -> None:
    (tmp_path / "e").mkdir()
    env = Env(tmp_path / "e", model_copy)
    d = Daemon(env.config("sources.folder.enabled=false"))
    d.register_analyzer("slow", slow(0.1))
    d.start()
    try:
        old = d.classifier
        results: List[dict] = []
        data = cnmc_files()[0].read_bytes()
        threads = [threading.Thread(target=lambda i=i: results.append(d.submit_bytes(
            data, source="api", name=f"{i}.bmp", analysis="slow"))) for i in range(6)]
        for t in threads:
            t.start()
        wait_until(lambda: d.pipeline.depth >= 3, 10, what="queued work")
        ok, msg = d.reload_model()
        assert ok and "model reloaded" in msg and d.classifier is not old
        for t in threads:
            t.join(30)
        assert len(results) == 6 and all(r["status"] == "ok" for r in results)

        serving = d.classifier
        model_copy.write_text("<net>broken</net>")
        ok, msg = d.reload_model()
        assert not ok and "still serving" in msg
        assert d.classifier is serving
        assert d.submit_bytes(data, source="api", name="after.bmp")["status"] == "ok"
        model = next(h for h in d.health() if h.name == "model")
        assert model.state == "warn" and "last reload failed" in model.summary
        assert "cannot read the IR" in d.status()["model"]["reload_error"]
    finally:
        d.shutdown()


def test_recovery_finishes_processing_exactly_once(env: Env) -> None:
    """Leftovers after a crash: journaled -> only moved on; not journaled -> processed."""
    d = Daemon(env.config("sources.folder.enabled=false"))
    data = cnmc_files()[0].read_bytes()
    done_id, todo_id = new_id(), new_id()
    time.sleep(0.01)
    done = {"id": done_id, "time": utc_iso(), "source": "folder", "name": "done.bmp",
            "sha256": "x", "status": "ok", "reason": None, "label": "ALL", "positive": True,
            "probability": 0.9, "threshold": 0.5, "model": {}, "device": "CPU",
            "latency_ms": 1, "analysis": "whole-image", "cells": None}
    d.journal.record(done, {"image": f"archive/{done['time'][:10]}/{done_id}__done.bmp"})
    (d.store.processing / f"{done_id}__done.bmp").write_bytes(data)
    (d.store.processing / f"{todo_id}__todo.bmp").write_bytes(data)
    (d.store.processing / "stray.bmp").write_bytes(data)
    (d.store.processing / f".{todo_id}__half.bmp.claim").write_bytes(data[:10])
    d.start()
    try:
        wait_until(lambda: d.journal.count() == 3, 15, what="3 rows")
        wait_until(lambda: not list(d.store.processing.iterdir()), 10, what="empty processing/")
        rows = {r["name"]: r for r in d.journal.recent(10)}
        assert set(rows) == {"done.bmp", "todo.bmp", "stray.bmp"}
        assert rows["todo.bmp"]["id"] == todo_id
        assert rows["todo.bmp"]["time"] == utc_iso(ulid_time(todo_id))
        assert d.journal.counters()["processed"] == 3
        archived = sorted(p.name for p in d.store.archive.rglob("*.bmp"))
        assert f"{done_id}__done.bmp" in archived and f"{todo_id}__todo.bmp" in archived
        assert len(archived) == 3
        assert recover(d, threading.Event()) == 0
    finally:
        d.shutdown()


def test_low_disk_space_pauses_archiving_not_journaling(env: Env) -> None:
    d = Daemon(env.config("sources.folder.enabled=false", "storage.min_free_mb=100000000"))
    d.start()
    try:
        r = d.submit_bytes(cnmc_files()[0].read_bytes(), source="api", name="c.bmp")
        assert r["status"] == "ok" and d.journal.files(r["id"])["image"] is None
        assert not list(d.store.archive.rglob("*.bmp"))
        disk = next(h for h in d.health() if h.name == "disk")
        assert disk.state == "warn" and "archiving paused" in disk.summary
    finally:
        d.shutdown()


def test_retention_by_age_size_and_rows(tmp_path: Path) -> None:
    cfg = StorageConfig(data_dir=tmp_path, archive_max_days=30, archive_max_gb=3000 / 1024 ** 3,
                        journal_max_rows=1000, journal_max_days=1, min_free_mb=0)
    store = Store(cfg)
    journal = Journal(tmp_path, outbox=False)
    old_day = store.archive / "2020-01-01"
    old_day.mkdir()
    (old_day / "old.bmp").write_bytes(b"x" * 10)
    (store.thumbs / "2020-01-01").mkdir()
    today = time.strftime("%Y-%m-%d", time.gmtime())
    day = store.archive / today
    day.mkdir()
    for i in range(5):
        (day / f"{new_id()}__{i}.bmp").write_bytes(b"y" * 1000)
    q = store.quarantine / "old.png"
    q.write_bytes(b"z")
    os.utime(q, (time.time() - 40 * 86400,) * 2)
    # a claimed file keeps its inbox mtime: its age in quarantine is its id's age
    fresh = store.quarantine / stored_name(new_id(), "slide-from-2024.png")
    fresh.write_bytes(b"z")
    os.utime(fresh, (time.time() - 400 * 86400,) * 2)
    crock = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    ms = int((time.time() - 40 * 86400) * 1000)
    old_id = "".join(crock[(ms >> (5 * i)) & 31] for i in range(9, -1, -1)) + new_id()[10:]
    assert abs(ulid_time(old_id) - ms / 1000) < 0.01
    stale = store.quarantine / stored_name(old_id, "x.png")
    stale.write_bytes(b"z")
    journal.record({"id": new_id(), "time": utc_iso(time.time() - 3 * 86400), "source": "t",
                    "status": "ok", "positive": True})
    journal.record({"id": new_id(), "time": utc_iso(), "source": "t", "status": "ok",
                    "positive": False})
    empty_today = store.annotated / today  # the pipeline may be about to move a file in
    empty_today.mkdir(parents=True)
    empty_older = store.annotated / time.strftime("%Y-%m-%d", time.gmtime(time.time() - 5 * 86400))
    empty_older.mkdir()
    summary = Retention(store, journal).run()
    assert not old_day.exists() and not (store.thumbs / "2020-01-01").exists()
    assert empty_today.is_dir() and not empty_older.exists()
    left = sorted(p.name for p in day.iterdir())
    assert len(left) == 3 and summary["files_removed"] == 2
    assert left[0].endswith("__2.bmp"), "the oldest archived inputs go first"
    assert not q.exists() and not stale.exists() and fresh.exists()
    assert summary["quarantine_removed"] == 2
    assert summary["rows_removed"] == 1 and journal.count() == 1


def test_quarantine_is_trimmed_to_its_own_budget_oldest_first(tmp_path: Path) -> None:
    cfg = StorageConfig(data_dir=tmp_path, quarantine_max_gb=1500 / 1024 ** 3, min_free_mb=0)
    store = Store(cfg)
    names = []
    for i in range(4):                                 # 4 x (1000 B input + its reason file)
        name = stored_name(new_id(), f"bad{i}.png")
        (store.quarantine / name).write_bytes(b"q" * 1000)
        (store.quarantine / (name + ".reason.json")).write_text('{"reason": "truncated"}')
        names.append(name)
    folder = store.quarantine / stored_name(new_id(), "a-dir")   # a quarantined directory
    folder.mkdir()
    (folder / "inside.bmp").write_bytes(b"d" * 400)
    summary = Retention(store, Journal(tmp_path, outbox=False)).run()
    left = sorted(p.name for p in store.quarantine.iterdir())
    assert summary["quarantine_removed"] == 3
    assert left == sorted([names[3], names[3] + ".reason.json", folder.name])


def test_status_is_json_and_complete(daemon: Daemon) -> None:
    st = json.loads(json.dumps(daemon.status()))
    for key in ("agent", "version", "ready", "uptime_s", "model", "counters", "totals",
                "outbox", "health", "components", "disclaimer"):
        assert key in st
    assert st["model"]["device"] == "CPU" and st["model"]["synthetic"] in (True, False)
    assert set(st["counters"]) >= {"processed", "positive", "negative", "quarantined",
                                   "queue_depth", "uptime_s"}
    assert "queued; model" in daemon.summary()
    assert daemon.request_capture() is False


def test_daemon_that_cannot_load_its_model_closes_the_journal(tmp_path: Path, model_copy: Path) -> None:
    """An embedding program that retries must not accumulate open journal connections."""
    from edge.inference import ModelError

    (tmp_path / "e").mkdir()
    env = Env(tmp_path / "e", model_copy)
    cfg = env.config()
    model_copy.with_suffix(".bin").write_bytes(b"not weights")

    def journal_fds() -> int:
        return sum(1 for fd in Path("/proc/self/fd").iterdir()
                   if os.path.realpath(fd).startswith(str(env.data)))

    for _ in range(3):
        with pytest.raises(ModelError):
            Daemon(cfg)
    assert (env.data / "journal.sqlite3").exists(), "the journal was opened before the model"
    assert journal_fds() == 0
