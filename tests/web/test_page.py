"""The operator's status page: server-rendered HTML over real HTTP, then in headless Chromium.

Stand-in daemon (TEST DOUBLE with a FAKE classifier, real journal). The real daemon's page is
checked in test_real_daemon.py.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
from pathlib import Path

import pytest

from edge import DISCLAIMER
from edge.component import HealthCheck
from tests.web.conftest import multipart

CHROMIUM = "/usr/bin/chromium"
EVIL = "<img src=x onerror=alert(1)> & <i>cell.png"  # a legal file name on Linux


def chromium_args(tmp_path: Path) -> list:
    return [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--virtual-time-budget=3000"]


def loaded_width(dom: str, src: str) -> int:
    """naturalWidth the browser reported for the <img> with `src` (its onload stores it), else 0."""
    m = re.search(rf'<img[^>]*src="{re.escape(src)}"[^>]*data-loaded="(\d+)"', dom)
    return int(m.group(1)) if m else 0


def run_chromium(args: list, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def post_image(run, name: str, data: bytes, mime: str = "image/jpeg") -> dict:
    body, headers = multipart("file", name, data, mime)
    r = run.post("/api/v1/classify", body, headers=headers)
    assert r.status == 200, r.body
    return r.json()


def test_page_shows_what_an_operator_needs(standin, jpeg_bytes):
    res = post_image(standin, "Zelle ü.jpg", jpeg_bytes)
    standin.post("/api/v1/classify", b"")  # one quarantined input
    r = standin.get("/")
    assert r.status == 200 and r.headers["content-type"].startswith("text/html")
    page = r.body.decode()
    assert html.escape(DISCLAIMER) in page
    assert 'id="synthetic-banner"' in page  # the stand-in's model is synthetic
    for check in ("model", "device", "folder source", "disk", "cpu temperature", "http"):
        assert f'data-check="{check}"' in page
    assert "Zelle ü.jpg" in page and re.search(rf"p\(\w+\)={res['probability']:.3f}", page)
    assert f"/api/v1/results/{res['id']}/thumb" in page
    assert "quarantined: empty" in page
    quarantined = page[page.index('id="quarantined"'):]      # its own list, with the explanation
    assert '<div class="q">empty</div><div class="small">the file is empty</div>' in quarantined
    assert re.search(r'<time datetime="[^"]+Z">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</time>', page)
    assert re.search(r" · up (\d+ (s|min)) · ", page)
    assert re.search(r'data-counter="positive"><td>\w+ \(positive\)</td>', page)
    assert re.search(r'data-counter="processed"><td>processed</td><td>1</td><td>1</td>', page)
    assert 'data-counter="queue_depth"><td>queue depth</td><td>0</td><td></td>' in page
    assert "http" not in re.findall(r'src="([^"]*)"', page)  # no external assets
    assert not re.search(r'(src|href)="https?://', page)


def test_page_escapes_file_names(standin, jpeg_bytes):
    post_image(standin, EVIL, jpeg_bytes)
    page = standin.get("/").body.decode()
    assert "<img src=x" not in page and "<i>" not in page
    assert "&lt;img src=x onerror=alert(1)&gt; &amp; &lt;i&gt;cell.png" in page


def test_page_without_synthetic_model_has_no_banner_and_shows_failures(standin):
    standin.daemon.classifier.meta.synthetic = False
    try:
        standin.daemon.status = lambda: {"counters": {"processed": 0}}
        standin.daemon.health_override = [HealthCheck("broker", "fail", "cannot connect: refused")]
        page = standin.get("/").body.decode()
        assert 'id="synthetic-banner"' not in page
        assert "st-fail" in page and "cannot connect: refused" in page
        assert re.search(r'id="overall"><span class="st st-fail">fail</span>\s*broker<', page)
        assert "No results yet" in page
    finally:
        standin.daemon.classifier.meta.synthetic = True


@pytest.mark.slow
def test_page_in_headless_chromium_phone(standin, cnmc_cell, tmp_path):
    name, data = cnmc_cell
    res = post_image(standin, name, data, "image/bmp")
    post_image(standin, EVIL, data, "image/bmp")
    proc = run_chromium(chromium_args(tmp_path) + ["--dump-dom", standin.base + "/"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert "Research use only" in dom and "SYNTHETIC MODEL" in dom
    for check in ("model", "device", "disk", "cpu temperature"):
        assert f'data-check="{check}"' in dom
    assert name in dom and re.search(rf"p\(\w+\)={res['probability']:.3f}", dom)
    assert loaded_width(dom, f"/api/v1/results/{res['id']}/thumb") > 0, \
        "the thumbnail did not load in the browser"
    assert "<img src=x" not in dom and "&lt;img src=x" in dom  # the evil name stayed text
    assert 'id="conn">live<' in dom  # the refresh script has not reported a lost daemon

    shot = tmp_path / "phone.png"
    proc = run_chromium(chromium_args(tmp_path) + [f"--screenshot={shot}",
                                                   "--window-size=390,844", standin.base + "/"])
    assert proc.returncode == 0 and shot.stat().st_size > 10_000, proc.stderr[-2000:]
    keep = os.environ.get("ALL_EDGE_KEEP_SCREENSHOT")  # to look at it: set to a .png path
    if keep:
        Path(keep).write_bytes(shot.read_bytes())


def test_page_shows_per_cell_counts(standin):
    """A `cells` result as the analysis component journals it (written directly here)."""
    from edge.journal import new_id, utc_iso

    rid = new_id()
    standin.daemon.journal.record({
        "id": rid, "time": utc_iso(), "source": "camera", "name": "field-0001.jpg",
        "sha256": "0" * 64, "status": "ok", "reason": None, "label": "ALL", "positive": True,
        "probability": 0.91, "threshold": 0.5, "model": {"name": "m", "version": "1",
                                                         "synthetic": True},
        "device": "CPU", "latency_ms": 12.5, "analysis": "cells",
        "cells": {"found": 12, "blasts": 3, "blast_fraction": 0.25, "items": []},
        "disclaimer": DISCLAIMER,
    })
    page = standin.get("/").body.decode()
    assert "cells 12, blasts 3 (25%)" in page


@pytest.mark.slow
def test_page_refreshes_itself_and_reports_a_lost_daemon(standin, jpeg_bytes, tmp_path):
    """The page's refresh script swaps in new results, and says OFFLINE when a refresh fails."""
    real_recent = standin.daemon.journal.recent
    calls = []

    def recent(limit, before_id=None, status=None):
        if status:                      # the page's quarantine list: not counted
            return real_recent(limit, before_id, status)
        calls.append(limit)
        if len(calls) == 2:  # between the first render and the first refresh: a new result
            standin.daemon.submit_bytes(jpeg_bytes, source="api", name="arrived-later.jpg")
        if len(calls) >= 3:
            raise OSError("disk gone")  # the page answers 500: the script must notice
        return real_recent(limit, before_id)

    standin.daemon.journal.recent = recent
    args = chromium_args(tmp_path)
    args[-1] = "--virtual-time-budget=7000"  # one refresh (5 s)
    proc = run_chromium(args + ["--dump-dom", standin.base + "/"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(calls) == 2 and "arrived-later.jpg" in proc.stdout

    calls.clear()
    calls.append(0)  # the next render is the 2nd call, the refresh after it fails
    args[-1] = "--virtual-time-budget=7000"
    proc = run_chromium(args + ["--dump-dom", standin.base + "/"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(calls) >= 3
    assert 'class="off">OFFLINE: cannot reach the daemon<' in proc.stdout


def _record_cells_result(daemon, name: str, annotated: bool) -> str:
    """A `cells` result journaled the way the pipeline does it (input, thumb-less, overlay).

    Written directly (the stand-in has no analyzer); the real analyzer's output is checked in
    test_real_daemon.py. The images are small SYNTHETIC drawings, not cells.
    """
    import cv2
    import numpy as np

    from edge.journal import new_id, utc_iso

    rid, now = new_id(), utc_iso()
    data_dir = Path(daemon.config.storage.data_dir)
    field = np.full((900, 1200, 3), 200, np.uint8)
    files = {"image": f"archive/{now[:10]}/{rid}__{name}"}
    (data_dir / files["image"]).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(data_dir / files["image"]), field)
    if annotated:
        overlay = field.copy()
        cv2.rectangle(overlay, (120, 120), (360, 360), (40, 40, 230), 4)
        files["annotated"] = f"annotated/{now[:10]}/{rid}.jpg"
        (data_dir / files["annotated"]).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(data_dir / files["annotated"]), overlay)
    daemon.journal.record({
        "id": rid, "time": now, "source": "camera", "name": name,
        "sha256": "0" * 64, "status": "ok", "reason": None, "label": "ALL", "positive": True,
        "probability": 0.91, "threshold": 0.5,
        "model": {"name": "m", "version": "1", "synthetic": True},
        "device": "CPU", "latency_ms": 12.5, "analysis": "cells",
        "cells": {"found": 12, "blasts": 3, "blast_fraction": 0.25, "items": []},
        "disclaimer": DISCLAIMER,
    }, files=files)
    return rid


def test_page_links_annotated_image_and_every_thumbnail(standin, jpeg_bytes):
    plain = post_image(standin, "plain.jpg", jpeg_bytes)
    ann = _record_cells_result(standin.daemon, EVIL, annotated=True)
    gone = _record_cells_result(standin.daemon, "field-gone.jpg", annotated=True)
    files = standin.daemon.journal.files(gone)
    files["annotated"].unlink()  # as retention would
    page = standin.get("/").body.decode()

    # the annotated field: its overlay thumbnail, linked to the full overlay, plus the original
    assert f'<a class="thumb" href="/api/v1/results/{ann}/image?annotated=1"' in page
    assert f'src="/api/v1/results/{ann}/thumb?annotated=1"' in page
    assert f'<a href="/api/v1/results/{ann}/image">original</a>' in page
    assert 'boxes: <span class="pos">red ALL</span>' in page  # the model's positive_label
    # plain results and a field whose overlay is gone: the input's thumbnail, linked to the input
    for rid in (plain["id"], gone):
        assert f'<a class="thumb" href="/api/v1/results/{rid}/image" title="full image">' \
               f'<img src="/api/v1/results/{rid}/thumb"' in page
        assert f"/api/v1/results/{rid}/image?annotated=1" not in page
    assert page.count("cells 12, blasts 3 (25%)") == 2
    assert "<img src=x" not in page and "annotated field &lt;img src=x" in page

    # what the links point at is served
    t = standin.get(f"/api/v1/results/{ann}/thumb?annotated=1")
    assert t.status == 200 and t.headers["content-type"] == "image/jpeg"
    import cv2
    import numpy as np
    small = cv2.imdecode(np.frombuffer(t.body, np.uint8), cv2.IMREAD_COLOR)
    assert small.shape[:2] == (480, 640)  # 1200x900 overlay scaled to 640 px
    redness = small[..., 2].astype(int) - small[..., 1]  # R - G: 0 on the grey field
    assert redness[80:180, 63:66].mean() > 15 and abs(redness[80:180, 80:90].mean()) < 5
    cached = Path(standin.daemon.config.storage.data_dir) / "thumbs"
    assert list(cached.glob(f"*/{ann}.annotated.jpg")), "annotated thumbnail not cached"
    assert standin.get(f"/api/v1/results/{ann}/image?annotated=1").body == \
        standin.daemon.journal.files(ann)["annotated"].read_bytes()
    for path in (f"/api/v1/results/{gone}/thumb?annotated=1",
                 f"/api/v1/results/{plain['id']}/thumb?annotated=1"):
        r = standin.get(path)
        assert r.status == 404 and r.json()["error"] == "no_image", path
    assert standin.get(f"/api/v1/results/{gone}/thumb").status == 200  # made from the input


def test_disabled_checks_render_grey(standin):
    standin.daemon.health_override = [
        HealthCheck("broker", "disabled", "HIAS publishing is off (hias.enabled=false)"),
        HealthCheck("camera", "disabled", "sources.camera.enabled=false"),
        HealthCheck("disk", "ok", "plenty free")]
    page = standin.get("/").body.decode()
    for name in ("broker", "camera"):
        assert re.search(rf'<tr data-check="{name}" class="dis"><td><span class="st st-disabled">'
                         rf'disabled</span></td><td><b>{name}</b>', page), name
    assert '<tr data-check="disk"><td>' in page  # only disabled rows are greyed
    assert re.search(r'id="overall"><span class="st st-ok">ok</span>\s*all checks pass', page)
