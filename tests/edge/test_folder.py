"""Folder source end to end in-process: the real C-NMC sample and every kind of bad input."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Dict, Iterator

import cv2
import numpy as np
import pytest

from edge.daemon import Daemon
from edge.journal import new_id
from edge.sources.folder import open_for_writing
from tests.conftest import CNMC_SAMPLE
from tests.edge.conftest import Env
from tests.util import cnmc_files, png_header_only, wait_until


@pytest.fixture
def running(env: Env) -> Iterator[Daemon]:
    d = Daemon(env.config())
    d.start()
    yield d
    d.shutdown()


def by_name(env: Env) -> Dict[str, dict]:
    out: Dict[str, dict] = {}
    for r in env.rows():
        assert r["name"] not in out, f"{r['name']} has two outcomes"
        out[r["name"]] = r
    return out


def test_cnmc_sample_end_to_end(env: Env) -> None:
    """71 real C-NMC 2019 cells (Gupta & Gupta 2019, TCIA, CC BY 3.0): half waiting at start,
    half dropped while running; every one classified once, archived, thumbnailed."""
    files = cnmc_files()
    index = {line.split("\t")[0].split("/")[-1]: line.split("\t")[4]
             for line in (CNMC_SAMPLE / "INDEX.tsv").read_text().splitlines()[1:]}
    for f in files[:35]:
        (env.inbox / f.name).write_bytes(f.read_bytes())
    d = Daemon(env.config())
    d.start()
    try:
        for f in files[35:]:
            env.drop(f.name, f.read_bytes())
        wait_until(lambda: len(env.rows()) == 71, 60, what="71 journal rows")
        wait_until(lambda: not list(d.store.processing.iterdir()), 10, what="processing/ empty")
        rows = by_name(env)
        assert set(rows) == {f.name for f in files}
        meta = d.classifier.meta
        for f in files:
            r = rows[f.name]
            res = json.loads(r["json"])
            assert r["status"] == "ok" and r["source"] == "folder"
            assert r["sha256"] == index[f.name]
            assert res["label"] in meta.labels
            assert res["positive"] == (res["probability"] >= res["threshold"])
            assert res["positive"] == (res["label"] == meta.positive_label)
            assert res["model"] == {"name": meta.name, "version": meta.version,
                                    "synthetic": meta.synthetic}
            assert res["device"] == "CPU" and res["latency_ms"] > 0
            archived = env.data / r["image"]
            assert archived.parent.parent.name == "archive"
            assert archived.parent.name == res["time"][:10]
            assert hashlib.sha256(archived.read_bytes()).hexdigest() == index[f.name]
            assert (env.data / r["thumb"]).stat().st_size > 0
        assert list(env.inbox.iterdir()) == []
        c = d.journal.counters()
        assert c["processed"] == 71 and c["positive"] + c["negative"] == 71
        assert c["quarantined"] == 0
        assert d.counters()["processed"] == 71 and d.counters()["queue_depth"] == 0
    finally:
        d.shutdown()


def test_bad_inputs_are_quarantined_and_daemon_keeps_running(env: Env, running: Daemon,
                                                             tmp_path: Path) -> None:
    good = cnmc_files()[0].read_bytes()
    outside = tmp_path / "outside-secret.png"
    outside.write_bytes(good)
    ok, buf = cv2.imencode(".jpg", np.full((300, 400, 3), 128, np.uint8))
    assert ok
    cases = {
        "empty.jpg": (b"", "empty"),
        "truncated.jpg": (buf.tobytes()[: len(buf) // 2], "truncated"),
        "text.png": (b"this is not a picture\n" * 20, "not_an_image"),
        "bomb.png": (png_header_only(30000, 30000), "too_many_pixels"),
        "notes.txt": (good, "unsupported_extension"),
        "noext": (good, "unsupported_extension"),
        "image.gif": (b"GIF89a" + b"\x00" * 40, "unsupported_extension"),
    }
    for name, (data, _) in cases.items():
        env.drop(name, data)
    (env.inbox / "a directory").mkdir()
    (env.inbox / "a directory" / "inside.png").write_bytes(good)
    os.symlink(outside, env.inbox / "link-out.png")
    os.symlink("/etc/passwd", env.inbox / "passwd.jpg")
    env.drop("blast cell é ü 日本.bmp", good)
    env.drop("  spaced  name .bmp", good)
    expect_q = {**{k: v[1] for k, v in cases.items()}, "a directory": "not_a_file",
                "link-out.png": "symlink", "passwd.jpg": "symlink"}
    total = len(expect_q) + 2
    wait_until(lambda: len(env.rows()) == total, 30, what=f"{total} outcomes")
    rows = by_name(env)
    for name, reason in expect_q.items():
        r = rows[name]
        assert (r["status"], r["reason"]) == ("quarantined", reason), name
        q = env.data / "quarantine" / f"{r['id']}__{name}"
        assert q.exists() or q.is_symlink(), f"{name} not in quarantine"
        why = json.loads(q.with_name(q.name + ".reason.json").read_text())
        assert why["reason"] == reason and why["id"] == r["id"] and why["detail"]
    for name in ("blast cell é ü 日本.bmp", "  spaced  name .bmp"):
        assert rows[name]["status"] == "ok"
        assert (env.data / rows[name]["image"]).read_bytes() == good
    # the symlink target outside the inbox is untouched and was never read
    assert outside.read_bytes() == good
    assert (env.data / "quarantine" / f"{rows['link-out.png']['id']}__link-out.png").is_symlink()
    assert rows["link-out.png"]["sha256"] is None
    assert list(env.inbox.iterdir()) == []
    # still alive and classifying
    env.drop("after.bmp", good)
    wait_until(lambda: "after.bmp" in by_name(env), 15, what="a good file after the bad ones")
    assert running.journal.counters()["quarantined"] == len(expect_q)
    assert all(h.state != "fail" for h in running.health()), running.health()


def test_non_utf8_name(env: Env, running: Daemon) -> None:
    good = cnmc_files()[1].read_bytes()
    raw = os.fsencode(str(env.inbox)) + b"/caf\xe9-latin1.bmp"
    with open(raw, "wb") as f:
        f.write(good)
    wait_until(lambda: len(env.rows()) == 1, 15, what="the latin-1 named file")
    r = env.rows()[0]
    assert r["status"] == "ok" and r["name"] == "caf\ufffd-latin1.bmp"
    assert (env.data / r["image"]).read_bytes() == good


def test_waits_until_completely_written(env: Env, running: Daemon) -> None:
    data = cnmc_files()[2].read_bytes()
    path = env.inbox / "slow.bmp"
    with open(path, "wb") as f:
        f.write(data[:1000])
        f.flush()
        assert open_for_writing(str(path)) is True
        time.sleep(1.0)  # well past settle_seconds (0.2): the open writer keeps it unclaimed
        assert path.exists() and env.rows() == []
        f.write(data[1000:])
    assert open_for_writing(str(path)) is False
    wait_until(lambda: len(env.rows()) == 1, 15, what="the slow file")
    r = env.rows()[0]
    assert r["status"] == "ok"
    assert r["sha256"] == hashlib.sha256(data).hexdigest()


def test_growing_file_without_lease_check_waits_for_stable_size(env: Env, running: Daemon,
                                                                monkeypatch) -> None:
    """Where the open-for-writing test is unavailable, size/mtime stability alone decides."""
    monkeypatch.setattr("edge.sources.folder.open_for_writing", lambda p: None)
    data = cnmc_files()[3].read_bytes()
    path = env.inbox / "growing.bmp"
    with open(path, "wb") as f:
        for i in range(0, len(data), len(data) // 10 + 1):
            f.write(data[i:i + len(data) // 10 + 1])
            f.flush()
            time.sleep(0.08)  # faster than settle_seconds
            assert env.rows() == []
    wait_until(lambda: len(env.rows()) == 1, 15, what="the grown file")
    assert env.rows()[0]["sha256"] == hashlib.sha256(data).hexdigest()


def test_temporary_and_hidden_names_are_left_alone(env: Env, running: Daemon) -> None:
    good = cnmc_files()[4].read_bytes()
    for name in (".hidden.bmp", "download.bmp.part", "x.crdownload", "edit.bmp~"):
        (env.inbox / name).write_bytes(good)
    env.drop("real.bmp", good)
    wait_until(lambda: len(env.rows()) == 1, 15, what="real.bmp")
    time.sleep(0.6)
    assert [r["name"] for r in env.rows()] == ["real.bmp"]
    assert len(list(env.inbox.iterdir())) == 4


def test_polling_fallback(env: Env) -> None:
    d = Daemon(env.config("sources.folder.use_inotify=false"))
    d.start()
    try:
        assert d.component("folder").mode == "polling"
        env.drop("polled.bmp", cnmc_files()[5].read_bytes())
        wait_until(lambda: len(env.rows()) == 1, 15, what="polled file")
    finally:
        d.shutdown()


def test_folder_health_and_status(env: Env, running: Daemon) -> None:
    names = [h.name for h in running.health()]
    for n in ("model", "device", "pipeline", "folder source", "disk", "cpu temperature"):
        assert n in names
    st = running.status()
    assert st["components"]["folder"]["mode"] == "inotify"
    assert st["counters"]["queue_depth"] == 0 and st["ready"] is True
    json.dumps(st)  # JSON-able


def test_longest_possible_name(env: Env, running: Daemon) -> None:
    name = "x" * 251 + ".bmp"  # NAME_MAX: no room for the id prefix without shortening
    good = cnmc_files()[6].read_bytes()
    env.drop(name, good)
    wait_until(lambda: len(env.rows()) == 1, 15, what="the long-named file")
    r = env.rows()[0]
    assert r["status"] == "ok" and r["name"] == name
    archived = env.data / r["image"]
    assert archived.read_bytes() == good and archived.name.endswith(".bmp")


def test_unclaimable_file_is_reported_not_fatal(env: Env, running: Daemon,
                                                 monkeypatch) -> None:
    """A claim refused by the filesystem (e.g. inbox permissions after a redeploy): the
    health check says why, the file stays where it is, and claiming resumes once fixed."""
    import edge.sources.folder as folder

    real_rename = os.rename

    def refuse(src, dst):
        if Path(dst).parent == running.store.processing:
            raise PermissionError(13, "Permission denied")
        return real_rename(src, dst)

    monkeypatch.setattr(folder.os, "rename", refuse)
    env.drop("cell.bmp", cnmc_files()[0].read_bytes())
    wait_until(lambda: running.component("folder").error, 10, what="a claim error")
    check = next(h for h in running.health() if h.name == "folder source")
    assert check.state == "fail" and "cannot claim cell.bmp: Permission denied" in check.summary
    assert (env.inbox / "cell.bmp").exists() and env.rows() == []
    monkeypatch.setattr(folder.os, "rename", real_rename)
    running.component("folder")._wake.set()
    wait_until(lambda: len(env.rows()) == 1, 15, what="the claim after the fix")
    wait_until(lambda: running.component("folder").error is None, 5, what="error cleared")


@pytest.fixture
def shm_inbox(env: Env, tmp_path: Path) -> Iterator[Path]:
    """An inbox on another filesystem than data_dir: /dev/shm (tmpfs)."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs a second filesystem (tmpfs at /dev/shm)")
    inbox = shm / f"all-edge-test-{os.getpid()}-{time.monotonic_ns()}"
    inbox.mkdir()
    env.settings["sources"]["folder"]["path"] = str(inbox)
    yield inbox
    shutil.rmtree(inbox, ignore_errors=True)


def test_inbox_on_another_filesystem(env: Env, shm_inbox: Path) -> None:
    """Claims rename into <inbox>/.claiming, then copy; a directory and a symlink end
    quarantined with their reasons, as on one filesystem; volume litter is left alone."""
    inbox = shm_inbox
    d = Daemon(env.config())
    d.start()
    try:
        good = cnmc_files()[7].read_bytes()
        (inbox / "x.bmp").write_bytes(good)
        wait_until(lambda: len(env.rows()) == 1, 15, what="the cross-device file")
        r = env.rows()[0]
        assert r["status"] == "ok" and (env.data / r["image"]).read_bytes() == good
        assert sorted(p.name for p in inbox.iterdir()) == [".claiming"]
        assert list((inbox / ".claiming").iterdir()) == []
        check = next(h for h in d.health() if h.name == "folder source")
        assert check.state == "ok" and "another filesystem" in check.summary
        (inbox / "a-dir").mkdir()
        (inbox / "a-dir" / "inside.bmp").write_bytes(good)
        (inbox / "link.bmp").symlink_to(cnmc_files()[8])
        os.mkfifo(inbox / "pipe.bmp")                 # its content must not be read: it would block
        (inbox / "lost+found").mkdir()
        wait_until(lambda: len(env.rows()) == 4, 15, what="directory, link and FIFO quarantined")
        reasons = {r["name"]: (r["status"], r["reason"]) for r in env.rows()}
        assert reasons["a-dir"] == ("quarantined", "not_a_file")
        assert reasons["link.bmp"] == ("quarantined", "symlink")
        assert reasons["pipe.bmp"] == ("quarantined", "not_a_file")
        assert sorted(p.name for p in inbox.iterdir()) == [".claiming", "lost+found"]
        assert d.component("folder").error is None
        kept = [p for p in (env.data / "quarantine").rglob("*a-dir") if p.is_dir()]
        assert len(kept) == 1 and (kept[0] / "inside.bmp").read_bytes() == good
    finally:
        d.shutdown()


@pytest.mark.parametrize("copied", [False, True], ids=["crash-before-copy", "crash-before-release"])
def test_a_claim_interrupted_across_filesystems_ends_once(env: Env, shm_inbox: Path, copied: bool) -> None:
    """The states a kill -9 can leave in a cross-filesystem claim: held in <inbox>/.claiming,
    with or without its finished copy in processing/. Either way: one result, nothing left."""
    good = cnmc_files()[3].read_bytes()
    id = new_id()
    held = shm_inbox / ".claiming" / f"{id}__cell 1.bmp"
    held.parent.mkdir()
    held.write_bytes(good)
    processing = env.data / "processing"
    processing.mkdir(parents=True, exist_ok=True)
    (processing / f".{held.name}.claim").write_bytes(good[:100])     # a half-written copy
    if copied:
        (processing / held.name).write_bytes(good)
    d = Daemon(env.config())
    d.start()
    try:
        wait_until(lambda: len(env.rows()) == 1, 15, what="the held claim's result")
        time.sleep(0.5)                                                  # a few more polls
        rows = env.rows()
        assert len(rows) == 1 and rows[0]["id"] == id
        assert rows[0]["name"] == "cell 1.bmp" and rows[0]["status"] == "ok"
        assert list(held.parent.iterdir()) == [] and list(processing.iterdir()) == []
    finally:
        d.shutdown()


def test_a_held_claim_waits_while_data_dir_refuses_it(env: Env, shm_inbox: Path, monkeypatch) -> None:
    """A copy that fails (e.g. data_dir full) keeps the file held, reports it, and retries."""
    import edge.sources.folder as folder

    real_copy = folder.shutil.copy2
    monkeypatch.setattr(folder.shutil, "copy2", lambda *a, **k: (_ for _ in ()).throw(
        OSError(28, "No space left on device")))
    d = Daemon(env.config())
    d.start()
    try:
        (shm_inbox / "c.bmp").write_bytes(cnmc_files()[5].read_bytes())
        src = d.component("folder")
        wait_until(lambda: src.error and "No space left" in src.error, 10, what="the copy error")
        assert [p.name.endswith("__c.bmp") for p in (shm_inbox / ".claiming").iterdir()] == [True]
        assert env.rows() == []
        monkeypatch.setattr(folder.shutil, "copy2", real_copy)
        src._wake.set()
        wait_until(lambda: len(env.rows()) == 1, 15, what="the retried claim")
        assert list((shm_inbox / ".claiming").iterdir()) == []
    finally:
        d.shutdown()


def test_a_folder_holding_a_fifo_and_a_socket_is_quarantined_across_filesystems(
        env: Env, shm_inbox: Path) -> None:
    import socket

    bad = shm_inbox / "odd folder"
    bad.mkdir()
    os.mkfifo(bad / "pipe")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(bad / "sock"))
        (bad / "cell.bmp").write_bytes(cnmc_files()[2].read_bytes())
        d = Daemon(env.config())
        d.start()
        try:
            wait_until(lambda: len(env.rows()) == 1, 15, what="the folder quarantined")
            assert (env.rows()[0]["status"], env.rows()[0]["reason"]) == ("quarantined", "not_a_file")
            assert list((shm_inbox / ".claiming").iterdir()) == []
            kept = next(p for p in (env.data / "quarantine").iterdir() if p.is_dir())
            assert sorted(p.name for p in kept.iterdir()) == ["cell.bmp", "pipe", "sock"]
        finally:
            d.shutdown()


def test_a_held_folder_already_journaled_does_not_stop_the_scan(env: Env, shm_inbox: Path) -> None:
    """Left in .claiming after its copy was processed (its removal failed): let go of it,
    and keep claiming new files."""
    d = Daemon(env.config())
    d.start()
    try:
        (shm_inbox / "first.bmp").write_bytes(cnmc_files()[1].read_bytes())
        wait_until(lambda: len(env.rows()) == 1, 15, what="the first file")
        held = shm_inbox / ".claiming" / f"{env.rows()[0]['id']}__old folder"
        held.mkdir()
        (held / "x.bmp").write_bytes(b"x")
        (shm_inbox / "second.bmp").write_bytes(cnmc_files()[4].read_bytes())
        wait_until(lambda: len(env.rows()) == 2, 15, what="the second file")
        wait_until(lambda: not held.exists(), 10, what="the journaled leftover removed")
        assert d.component("folder").error is None
    finally:
        d.shutdown()


def test_a_claim_that_cannot_be_queued_while_stopping_goes_back_to_the_inbox(env: Env, monkeypatch) -> None:
    """Stopping with the pipeline's queue full: the file is given back, not left half-taken;
    a new file that took its name meanwhile is never overwritten."""
    from edge.pipeline import Busy

    d = Daemon(env.config())
    d.start()
    try:
        folder = d.component("folder")
        folder.stop()

        def full(job, timeout=None):
            raise Busy("queue full")

        monkeypatch.setattr(d.pipeline, "submit", full)
        good = cnmc_files()[6].read_bytes()
        (env.inbox / "late.bmp").write_bytes(good)
        assert folder._claim("late.bmp")
        assert (env.inbox / "late.bmp").read_bytes() == good
        assert list((env.data / "processing").iterdir()) == []
        (env.inbox / "taken.bmp").write_bytes(good)
        real_rename = os.rename

        def rename_then_new_arrival(src, dst):       # a new file arrives under the old name
            real_rename(src, dst)
            if Path(src).name == "taken.bmp":
                Path(src).write_bytes(b"new")
        monkeypatch.setattr(os, "rename", rename_then_new_arrival)
        assert folder._claim("taken.bmp")
        monkeypatch.setattr(os, "rename", real_rename)
        assert (env.inbox / "taken.bmp").read_bytes() == b"new"
        assert len(list((env.data / "processing").iterdir())) == 1   # left for recovery
    finally:
        d.shutdown()
