"""The HTTP API and status page against the REAL daemon: edge.daemon.Daemon with the real default
model (models/default, real OpenVINO on CPU), a temp data_dir and inbox, real folder source.

The C-NMC cells used here: Gupta & Gupta 2019, TCIA, doi 10.7937/tcia.2019.dc64i46r, CC BY 3.0.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from edge.config import load_config
from tests.util import wait_until
from tests.web.conftest import Running, basic, bearer, free_port, multipart
from tests.web.test_api import assert_json_error, parse_metrics
from tests.web.test_page import chromium_args, loaded_width, run_chromium

INFERENCE_KEYS = {"Response", "Message", "Diagnosis"}


def phone_screenshot(real, tmp_path: Path, tag: str, height: int) -> None:
    """The page at phone width renders to a non-trivial PNG; ALL_EDGE_KEEP_SCREENSHOT=PATH keeps
    a copy (`<tag>-<name>`) to look at."""
    shot = tmp_path / f"phone-{tag}.png"
    proc = run_chromium(chromium_args(tmp_path) + [f"--screenshot={shot}",
                                                   f"--window-size=390,{height}", real.base + "/"])
    assert proc.returncode == 0 and shot.stat().st_size > 10_000
    keep = os.environ.get("ALL_EDGE_KEEP_SCREENSHOT")
    if keep:
        Path(keep).with_name(f"{tag}-" + Path(keep).name).write_bytes(shot.read_bytes())


@pytest.fixture(scope="session")
def real_model(default_model_xml: Path) -> Path:
    """The trainer's real default model (models/default), never a stand-in."""
    return default_model_xml


def _start_daemon(tmp_path: Path, model: Path, **server) -> Running:
    from edge.daemon import Daemon  # the real one

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    sets = [f"model.xml={model}", 'model.devices=["CPU"]', f"storage.data_dir={tmp_path / 'data'}",
            f"sources.folder.path={inbox}", "sources.folder.settle_seconds=0.2",
            "sources.folder.poll_interval=0.2", "server.host=127.0.0.1",
            f"server.port={free_port()}", "server.threads=2", "storage.min_free_mb=0"]
    sets += [f"server.auth.{k}={v}" for k, v in server.get("auth", {}).items()]
    daemon = Daemon(load_config(None, sets))
    daemon.start()
    http = daemon.component("http")
    assert http is not None, "the daemon did not build the HTTP component"
    return Running(daemon, http)


@pytest.fixture()
def real(tmp_path: Path, real_model: Path) -> Iterator[Running]:
    run = _start_daemon(tmp_path, real_model)
    yield run
    run.daemon.shutdown(timeout=10)


def test_classify_inference_and_journal(real, cnmc_sample):
    cell = cnmc_sample / "fold_0" / "hem" / sorted(p.name for p in
                                                     (cnmc_sample / "fold_0" / "hem").iterdir())[0]
    data = cell.read_bytes()
    body, headers = multipart("file", cell.name, data, "image/bmp")
    r = real.post("/api/v1/classify", body, headers=headers)
    assert r.status == 200, r.body
    res = r.json()
    assert res["status"] == "ok" and res["source"] == "api" and res["device"] == "CPU"
    assert res["name"] == cell.name and 0.0 <= res["probability"] <= 1.0
    assert res["positive"] == (res["probability"] >= res["threshold"])
    assert real.get(f"/api/v1/results/{res['id']}").json()["sha256"] == res["sha256"]
    img = real.get(f"/api/v1/results/{res['id']}/image")
    assert img.status == 200 and img.body == data
    thumb = real.get(f"/api/v1/results/{res['id']}/thumb")
    assert thumb.status == 200 and thumb.body[:2] == b"\xff\xd8"

    inf = real.post("/Inference", body, headers=headers)
    assert inf.status == 200 and set(inf.json()) == INFERENCE_KEYS
    row = real.daemon.journal.recent(1)[0]
    assert row["source"] == "inference" and row["sha256"] == res["sha256"]
    assert inf.json()["Diagnosis"] == ("Positive" if row["positive"] else "Negative")
    assert inf.json()["Diagnosis"] == ("Positive" if res["positive"] else "Negative")


def test_bad_uploads_are_4xx_journaled_and_daemon_stays_up(real, jpeg_bytes, huge_png):
    cases = [(b"", 400, "empty"), (jpeg_bytes[: len(jpeg_bytes) // 2], 400, "truncated"),
             (b"plain text, not a PNG\n" * 10, 415, "not_an_image"),
             (huge_png, 413, "too_many_pixels")]
    for data, status, code in cases:
        body, headers = multipart("file", "bad ü.png", data, "image/png")
        e = assert_json_error(real.post("/api/v1/classify", body, headers=headers), status, code)
        row = real.daemon.journal.get(e["id"])
        assert row["status"] == "quarantined" and row["reason"] == code
    assert real.get("/healthz").status == 200
    assert real.daemon.journal.count() == len(cases)


def test_full_storage_is_a_clean_503_and_the_daemon_recovers(real, jpeg_bytes, monkeypatch, caplog):
    import sqlite3

    journal = real.daemon.journal
    real_record_many = journal.record_many

    def disk_full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(journal, "record_many", disk_full)
    body, headers = multipart("file", "a.jpg", jpeg_bytes, "image/jpeg")
    with caplog.at_level("ERROR", logger="edge.web"):
        e = assert_json_error(real.post("/api/v1/classify", body, headers=headers), 503,
                              "storage_unavailable")
    assert "disk is full" in e["message"]
    assert "Traceback" not in caplog.text and "storage error" in caplog.text
    monkeypatch.setattr(journal, "record_many", real_record_many)
    r = real.post("/api/v1/classify", body, headers=headers)
    assert r.status == 200 and r.json()["status"] == "ok"


def test_concurrent_uploads_each_get_one_outcome(real, cnmc_sample):
    cells = sorted(cnmc_sample.glob("fold_*/*/*.bmp"))[:24]
    replies = {}

    def send(i: int) -> None:
        body, headers = multipart("file", cells[i].name, cells[i].read_bytes(), "image/bmp")
        replies[i] = real.post("/api/v1/classify", body, headers=headers)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(cells))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(replies) == list(range(len(cells)))
    assert all(r.status == 200 for r in replies.values()), [r.body[:300] for r in replies.values() if r.status != 200]
    ids = {r.json()["id"] for r in replies.values()}
    assert len(ids) == len(cells) == real.daemon.journal.count()
    assert {r.json()["name"] for r in replies.values()} == {c.name for c in cells}


def test_status_health_metrics_reload(real, jpeg_bytes):
    real.post("/api/v1/classify", jpeg_bytes)
    st = real.get("/api/v1/status").json()
    assert st["ready"] is True and st["components"]["http"]["url"] == real.base
    h = real.get("/healthz")
    assert h.status == 200, h.body
    names = {c["name"] for c in h.json()["checks"]}
    assert {"model", "device", "pipeline", "disk", "cpu temperature", "http"} <= names
    m = parse_metrics(real.get("/metrics").body.decode())
    assert m["all_edge_processed_total"] == 1 and m["all_edge_latency_ms_count"] == 1
    assert m["all_edge_queue_depth"] == 0
    assert m['all_edge_health{check="pipeline",state="ok"}'] == 1
    r = real.post("/api/v1/reload")
    assert r.status == 200 and "model reloaded" in r.json()["message"]
    assert_json_error(real.post("/api/v1/capture"), 409, "no_camera")
    assert_json_error(real.post("/api/v1/classify?analysis=bogus", jpeg_bytes), 400,
                      "bad_request")
    if "cells" not in real.daemon.analyzers:  # no analyzer registered: refused, not a 500
        assert_json_error(real.post("/api/v1/classify?analysis=cells", jpeg_bytes), 400,
                          "bad_request")


def test_folder_input_appears_in_api_and_page(real, cnmc_sample):
    src = next((cnmc_sample / "fold_1" / "all").glob("*.bmp"))
    inbox = Path(real.daemon.config.sources.folder.path)
    shutil.copy(src, inbox / "Probe 1 ü.bmp")
    deadline = time.monotonic() + 20
    rows = []
    while time.monotonic() < deadline and not rows:
        rows = real.get("/api/v1/results?limit=5").json()["results"]
        time.sleep(0.1)
    assert rows and rows[0]["source"] == "folder" and rows[0]["name"] == "Probe 1 ü.bmp"
    img = real.get(f"/api/v1/results/{rows[0]['id']}/image")
    assert img.status == 200 and img.body == src.read_bytes()
    page = real.get("/").body.decode()
    assert "Probe 1 ü.bmp" in page and "Research use only" in page


def test_auth_with_the_real_daemon(tmp_path, real_model, secret_files, jpeg_bytes):
    run = _start_daemon(tmp_path, real_model, auth=secret_files)
    try:
        r = run.post("/Inference", jpeg_bytes)
        assert r.status == 401 and "www-authenticate" in r.headers
        assert run.post("/Inference", jpeg_bytes, headers=basic()).status == 200
        assert run.post("/api/v1/classify", jpeg_bytes, headers=bearer()).status == 200
        assert run.daemon.journal.count() == 2
    finally:
        run.daemon.shutdown(timeout=10)


def test_failed_reload_keeps_serving_the_old_model(tmp_path, real_model, jpeg_bytes):
    copy = tmp_path / "model"
    copy.mkdir()
    for suffix in (".xml", ".bin", ".json"):
        shutil.copy2(real_model.with_suffix(suffix), copy / f"model{suffix}")
    run = _start_daemon(tmp_path, copy / "model.xml")
    try:
        (copy / "model.json").write_text("{not json", encoding="utf-8")
        e = assert_json_error(run.post("/api/v1/reload"), 422, "reload_failed")
        assert "still serving" in e["message"]
        assert run.post("/api/v1/classify", jpeg_bytes).json()["status"] == "ok"
        model = {c["name"]: c for c in run.get("/healthz").json()["checks"]}["model"]
        assert model["state"] == "warn" and "reload failed" in model["summary"]
    finally:
        run.daemon.shutdown(timeout=10)


@pytest.mark.slow
def test_real_status_page_in_headless_chromium(real, cnmc_sample, tmp_path):
    cells = sorted((cnmc_sample / "fold_2" / "hem").glob("*.bmp"))[:2]
    ids = []
    for cell in cells:
        body, headers = multipart("file", cell.name, cell.read_bytes(), "image/bmp")
        ids.append(real.post("/api/v1/classify", body, headers=headers).json())
    proc = run_chromium(chromium_args(tmp_path) + ["--dump-dom", real.base + "/"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert "Research use only" in dom
    synthetic = real.daemon.classifier.meta.synthetic
    assert ("SYNTHETIC MODEL" in dom) == synthetic
    for check in ("model", "device", "pipeline", "disk", "cpu temperature", "http"):
        assert f'data-check="{check}"' in dom, check
    for res in ids:
        assert res["name"] in dom and f")={res['probability']:.3f}" in dom
        assert loaded_width(dom, f"/api/v1/results/{res['id']}/thumb") > 0
    phone_screenshot(real, tmp_path, "real", height=844)


@pytest.mark.slow
def test_real_cells_result_on_the_status_page(real, tmp_path):
    """A SYNTHETIC ALL-IDB1-layout field (trainer.synth) through the real daemon in `cells`
    mode: the page shows its annotated overlay (decoded by Chromium), links the full overlay and
    shows the per-cell counts; HIAS and camera are off here, so their rows say "disabled"."""
    import cv2
    import numpy as np

    import trainer.synth as synth

    assert "cells" in real.daemon.analyzers, "edge.analysis did not register the cells analyzer"
    field, _ = synth.field(np.random.default_rng([7, 3]), True)
    ok, buf = cv2.imencode(".jpg", field, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    res = real.daemon.submit_bytes(buf.tobytes(), source="api", name="synthetic field <1>.jpg",
                                   analysis="cells", timeout=60)
    assert res["status"] == "ok" and res["analysis"] == "cells", res
    cells = res["cells"]
    assert cells["found"] >= 1 and len(cells["items"]) == cells["found"]
    annotated = real.daemon.journal.files(res["id"])["annotated"]
    assert annotated is not None and annotated.is_file()

    proc = run_chromium(chromium_args(tmp_path) + ["--dump-dom", real.base + "/"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    rid = res["id"]
    assert loaded_width(dom, f"/api/v1/results/{rid}/thumb?annotated=1") > 0, \
        "the annotated thumbnail did not load in the browser"
    counts = f"cells {cells['found']}, blasts {cells['blasts']}"
    assert f'<span class="cells">{counts}' in dom
    assert "synthetic field &lt;1&gt;.jpg" in dom

    # one tap away: the thumbnail's link is the full annotated image
    m = re.search(rf'<a class="thumb" href="([^"]+)"[^>]*><img class="ann" '
                  rf'src="/api/v1/results/{rid}/thumb\?annotated=1"', dom)
    assert m and m.group(1) == f"/api/v1/results/{rid}/image?annotated=1"
    full = real.get(m.group(1))
    assert full.status == 200 and full.body == annotated.read_bytes()
    assert max(cv2.imdecode(np.frombuffer(full.body, np.uint8), cv2.IMREAD_COLOR).shape) == 1600

    phone_screenshot(real, tmp_path, "cells", height=2000)
    # HIAS (the broker) and camera are off here: their rows are present anyway, greyed.
    for name in ("hias", "camera"):
        assert re.search(rf'<tr data-check="{name}" class="dis"><td><span class="st st-disabled">'
                         rf'disabled</span></td><td><b>{name}</b>', dom), name


def test_file_name_cannot_forge_log_lines(real, cnmc_sample, caplog):
    """An inbox name with a line break (and other controls) is logged escaped: one record, one
    line, so `2026-... ERROR forged` cannot pass for a line of its own."""
    name = "cell\n2026-11-22 10:00:00 ERROR edge: forged\r\u2028\x1b[31m.bmp"
    inbox = Path(real.daemon.config.sources.folder.path)
    caplog.set_level("INFO", logger="edge")
    shutil.copy(next((cnmc_sample / "fold_0" / "hem").glob("*.bmp")), inbox / name)
    rows = wait_until(lambda: real.get("/api/v1/results?limit=5").json()["results"],
                      what="the folder input's result")
    assert rows[0]["name"] == name and rows[0]["status"] == "ok"  # the journal keeps it as is
    forged = [r.getMessage() for r in caplog.records if "forged" in r.getMessage()]
    assert len(forged) == 1, forged
    line = forged[0]
    assert not any(c in line for c in "\n\r\u2028\x1b"), repr(line)
    assert r"cell\n2026-11-22 10:00:00 ERROR edge: forged\r\u2028\x1b[31m.bmp" in line


def test_stored_name_and_served_type_follow_the_bytes_not_the_name(real, jpeg_bytes, cnmc_cell):
    """A raw body without a name is stored as `<id>__upload.jpg` and shown as image/jpeg (not
    downloaded as octet-stream); a BMP sent as `evil.png` is served as image/bmp."""
    res = real.post("/api/v1/classify", jpeg_bytes).json()
    assert res["status"] == "ok" and res["name"] == "upload.jpg"
    stored = real.daemon.journal.files(res["id"])["image"]
    assert Path(stored).name == f"{res['id']}__upload.jpg"
    img = real.get(f"/api/v1/results/{res['id']}/image")
    assert img.status == 200 and img.body == jpeg_bytes
    assert img.headers["content-type"] == "image/jpeg"

    _, bmp = cnmc_cell
    for sent, kept in (("evil.png", "evil.png"), ("report.txt", "report.txt.bmp")):
        res = real.post("/api/v1/classify", bmp, headers={"X-Filename": sent}).json()
        assert res["name"] == kept
        img = real.get(f"/api/v1/results/{res['id']}/image")
        assert img.body == bmp and img.headers["content-type"] == "image/bmp"

    # the originals' raw-body /Inference: same three keys, input stored with its type's suffix
    r = real.post("/Inference", jpeg_bytes)
    assert r.status == 200 and set(r.json()) == INFERENCE_KEYS
    newest = real.get("/api/v1/results?limit=1").json()["results"][0]
    assert newest["source"] == "inference" and newest["name"] == "upload.jpg"
    # a non-image keeps its name: quarantined with the reason, nothing renamed or stored
    e = assert_json_error(real.post("/api/v1/classify", b"not an image"), 415, "not_an_image")
    assert real.daemon.journal.get(e["id"])["name"] == "upload"
