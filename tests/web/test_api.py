"""REST API over real HTTP to the real waitress server, against the stand-in daemon (TEST DOUBLE
with a real journal and real decoding; its classifier is FAKE). The same API against the real
daemon and real OpenVINO is in test_real_daemon.py."""

from __future__ import annotations

import re
from urllib.parse import quote

import cv2
import numpy as np
import pytest

from tests.web.conftest import multipart, request

ERROR_KEYS = {"error", "message"}


def solid_png(value: int, size: int = 64) -> bytes:
    ok, buf = cv2.imencode(".png", np.full((size, size, 3), value, np.uint8))
    assert ok
    return buf.tobytes()


def assert_json_error(reply, status: int, code: str) -> dict:
    assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert set(body) >= ERROR_KEYS, body
    assert body["error"] == code, body
    assert body["message"]
    return body


# ---------------------------------------------------------------------------- classify


def test_classify_multipart_real_cell_is_journaled_and_served_back(standin, cnmc_cell):
    name, data = cnmc_cell
    body, headers = multipart("file", name, data, "image/bmp")
    r = standin.post("/api/v1/classify", body, headers=headers)
    assert r.status == 200, r.body
    res = r.json()
    assert res["status"] == "ok" and res["source"] == "api" and res["name"] == name
    assert res["positive"] == (res["probability"] >= res["threshold"])
    assert res["label"] in ("ALL", "normal") and "Research use only" in res["disclaimer"]

    same = standin.get(f"/api/v1/results/{res['id']}")
    assert same.status == 200 and same.json()["sha256"] == res["sha256"]

    img = standin.get(f"/api/v1/results/{res['id']}/image")
    assert img.status == 200 and img.body == data and img.headers["content-type"] == "image/bmp"

    thumb = standin.get(f"/api/v1/results/{res['id']}/thumb")
    assert thumb.status == 200 and thumb.headers["content-type"] == "image/jpeg"
    t = cv2.imdecode(np.frombuffer(thumb.body, np.uint8), cv2.IMREAD_COLOR)
    assert t is not None and max(t.shape[:2]) == 160  # 450x450 -> 160x160
    cached = standin.daemon.config.storage.data_dir / "thumbs" / res["time"][:10] / \
        f"{res['id']}.jpg"
    assert cached.read_bytes() == thumb.body  # generated lazily, cached under data_dir/thumbs


def test_large_multipart_upload_is_streamed_not_refused(standin):
    """A 7 MB BMP in multipart (a full microscope field): werkzeug must spool it, not 413."""
    ok, buf = cv2.imencode(".bmp", np.random.default_rng(0).integers(0, 255, (1944, 1200, 3),
                                                                      dtype=np.uint8))
    body, headers = multipart("file", "field.bmp", buf.tobytes(), "image/bmp")
    assert len(body) > 6_000_000
    r = standin.post("/api/v1/classify", body, headers=headers)
    assert r.status == 200, r.body[:300]


def test_classify_raw_body_with_unicode_header_name(standin, jpeg_bytes):
    name = "Zelle ü 漢字 #1.jpg"
    r = standin.post("/api/v1/classify", jpeg_bytes,
                     headers={"Content-Type": "image/jpeg", "X-Filename": quote(name)})
    assert r.status == 200, r.body
    assert r.json()["name"] == name


def test_classify_multipart_unicode_and_space_name(standin, jpeg_bytes):
    name = "Blut probe Ä 血液.jpg"
    body, headers = multipart("file", name, jpeg_bytes, "image/jpeg")
    r = standin.post("/api/v1/classify", body, headers=headers)
    assert r.status == 200, r.body
    assert r.json()["name"] == name


def test_classify_path_in_name_is_reduced_to_base_name(standin, jpeg_bytes):
    r = standin.post("/api/v1/classify?name=../../etc/passwd.jpg", jpeg_bytes)
    assert r.status == 200 and r.json()["name"] == "passwd.jpg"


def test_fake_classifier_outcomes_reach_the_api(standin):
    """Stand-in only (FAKE classifier: mean pixel / 255): white is positive, black negative."""
    white = standin.post("/api/v1/classify", solid_png(255)).json()
    black = standin.post("/api/v1/classify", solid_png(0)).json()
    assert (white["positive"], white["label"]) == (True, "ALL")
    assert (black["positive"], black["label"]) == (False, "normal")


# ---------------------------------------------------------------------------- /Inference


@pytest.mark.parametrize("value,positive", [(255, True), (0, False)])
def test_inference_keys_exactly_as_the_originals(standin, value, positive):
    body, headers = multipart("file", "cell.png", solid_png(value), "image/png")
    r = standin.post("/Inference", body, headers=headers)
    assert r.status == 200 and r.headers["content-type"] == "application/json"
    assert r.body.decode().startswith('{"Response":')  # original key order
    expected = {
        "Response": "OK",
        "Message": "Acute Lymphoblastic Leukemia detected!" if positive
        else "Acute Lymphoblastic Leukemia not detected!",
        "Diagnosis": "Positive" if positive else "Negative",
    }
    assert r.json() == expected
    last = standin.daemon.journal.recent(1)[0]
    assert last["source"] == "inference" and last["positive"] is positive


def test_inference_raw_body(standin):
    r = standin.post("/Inference", solid_png(0), headers={"Content-Type": "image/png"})
    assert r.status == 200 and set(r.json()) == {"Response", "Message", "Diagnosis"}


# ---------------------------------------------------------------------------- bad inputs


def test_empty_upload_is_400_and_journaled(standin):
    body, headers = multipart("file", "empty.png", b"")
    e = assert_json_error(standin.post("/api/v1/classify", body, headers=headers), 400, "empty")
    row = standin.daemon.journal.get(e["id"])
    assert row["status"] == "quarantined" and row["reason"] == "empty"


def test_truncated_jpeg_is_400(standin, jpeg_bytes):
    r = standin.post("/api/v1/classify", jpeg_bytes[: len(jpeg_bytes) // 2])
    assert_json_error(r, 400, "truncated")


def test_text_renamed_png_is_415(standin):
    body, headers = multipart("file", "notes.png", b"just some text, not a PNG\n" * 20,
                              "image/png")
    assert_json_error(standin.post("/api/v1/classify", body, headers=headers), 415,
                      "not_an_image")


def test_non_image_upload_is_415(standin):
    gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00" \
          b"\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
    e = assert_json_error(standin.post("/api/v1/classify", gif), 415, "unsupported_format")
    assert "GIF" in e["message"]


def test_30000x30000_png_is_413_with_reason(standin, huge_png):
    body, headers = multipart("file", "bomb.png", huge_png, "image/png")
    e = assert_json_error(standin.post("/api/v1/classify", body, headers=headers), 413,
                          "too_many_pixels")
    assert "30000x30000" in e["message"]
    assert standin.get("/healthz").status == 200  # still up


def test_oversize_body_is_413_json_before_decoding(tmp_path):
    from tests.web.conftest import start_standin

    run = start_standin(tmp_path, max_upload_mb=0.01)  # 10 KiB
    try:
        e = assert_json_error(run.post("/api/v1/classify", b"\xff" * 20_000), 413, "too_large")
        assert "0.01 MB" in e["message"]
        # beyond waitress's own cap (2x the limit): refused by waitress, with the same JSON
        e = assert_json_error(run.post("/api/v1/classify", b"\xff" * 200_000), 413, "too_large")
        assert "0.01 MB" in e["message"]
        assert run.get("/api/v1/status").status == 200
        assert run.daemon.journal.count() == 0  # never reached the daemon
    finally:
        run.server.stop(timeout=5)
        run.daemon.close()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_26_mb_body_over_the_25_mb_limit_is_json_413(standin, chunked):
    """Well over the limit (not just by a few KiB), with Content-Length or chunked: still our
    JSON 413, never waitress's plain text."""
    body, mib = b"\xff" * (26 * 1024 * 1024), 1 << 20
    for path in ("/api/v1/classify", "/Inference"):
        sent = (body[i:i + mib] for i in range(0, len(body), mib)) if chunked else body
        e = assert_json_error(standin.post(path, sent), 413, "too_large")
        assert "25 MB" in e["message"]
    assert standin.daemon.journal.count() == 0
    assert standin.get("/healthz").status == 200


def test_multipart_without_file_field_is_400(standin, jpeg_bytes):
    body, headers = multipart("image", "x.jpg", jpeg_bytes)
    assert_json_error(standin.post("/api/v1/classify", body, headers=headers), 400,
                      "missing_file")


def test_bad_analysis_mode_is_400(standin, jpeg_bytes):
    assert_json_error(standin.post("/api/v1/classify?analysis=magic", jpeg_bytes), 400,
                      "bad_request")


def test_daemon_not_ready_is_503(standin, jpeg_bytes):
    standin.daemon.ready = False
    r = standin.post("/api/v1/classify", jpeg_bytes)
    assert_json_error(r, 503, "not_ready")
    assert r.headers["retry-after"] == "5"
    assert standin.get("/healthz").status == 503


def test_busy_pipeline_is_503(standin, jpeg_bytes, monkeypatch):
    from edge.pipeline import Busy

    def busy(*a, **k):
        raise Busy("8 inputs queued; try again later")

    def slow(*a, **k):
        raise TimeoutError("01ABC accepted but not finished within 30 s")

    monkeypatch.setattr(standin.daemon, "submit_bytes", busy)
    assert_json_error(standin.post("/api/v1/classify", jpeg_bytes), 503, "overloaded")
    monkeypatch.setattr(standin.daemon, "submit_bytes", slow)
    e = assert_json_error(standin.post("/Inference", jpeg_bytes), 503, "timeout")
    assert "01ABC" in e["message"] and "still be journaled" in e["message"]


def test_unknown_route_and_method_are_json(standin):
    assert_json_error(standin.get("/nope"), 404, "not_found")
    assert_json_error(standin.get("/api/v1/classify"), 405, "method_not_allowed")


def test_unexpected_exception_is_clean_500(standin, jpeg_bytes, monkeypatch):
    def boom(*a, **k):
        raise KeyError("internal detail /secret/path")

    monkeypatch.setattr(standin.daemon, "submit_bytes", boom)
    e = assert_json_error(standin.post("/api/v1/classify", jpeg_bytes), 500, "internal_error")
    assert "secret" not in e["message"] and "Traceback" not in e["message"]


# ---------------------------------------------------------------------------- results


def test_results_paging_covers_every_row_once(standin):
    ids = [standin.post("/api/v1/classify", solid_png(v)).json()["id"] for v in range(5)]
    seen, before = [], None
    for _ in range(5):  # bounded
        q = "/api/v1/results?limit=2" + (f"&before={before}" if before else "")
        page = standin.get(q).json()
        seen += [r["id"] for r in page["results"]]
        before = page["next_before"]
        if before is None:
            break
    assert seen == list(reversed(ids))


def test_results_filtered_by_status_and_paged(standin):
    ok = [standin.post("/api/v1/classify", solid_png(v)).json()["id"] for v in range(3)]
    bad = [standin.post("/api/v1/classify", b"").json()["id"] for _ in range(3)]
    page = standin.get("/api/v1/results?status=quarantined&limit=2").json()
    assert [r["id"] for r in page["results"]] == bad[:0:-1]
    rest = standin.get(f"/api/v1/results?status=quarantined&before={page['next_before']}").json()
    assert [r["id"] for r in rest["results"]] == bad[:1]
    assert [r["id"] for r in standin.get("/api/v1/results?status=ok").json()["results"]] == ok[::-1]


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "limit=abc", "before=..%2Fx", "status=done"])
def test_results_bad_query_is_400(standin, query):
    assert_json_error(standin.get(f"/api/v1/results?{query}"), 400, "bad_request")


def test_unknown_and_malformed_ids(standin):
    assert_json_error(standin.get("/api/v1/results/01ZZZZZZZZZZZZZZZZZZZZZZZZ"), 404, "not_found")
    assert_json_error(standin.get("/api/v1/results/01ZZ/image"), 404, "not_found")
    assert_json_error(standin.get("/api/v1/results/..%2F..%2Fetc/image"), 404, "not_found")
    assert_json_error(standin.get("/api/v1/results/bad%20id"), 400, "bad_request")


def test_image_404_when_none_stored(standin, jpeg_bytes):
    rid = standin.post("/api/v1/classify", jpeg_bytes).json()["id"]
    assert_json_error(standin.get(f"/api/v1/results/{rid}/image?annotated=1"), 404, "no_image")
    e = assert_json_error(standin.post("/api/v1/classify", b""), 400, "empty")
    assert_json_error(standin.get(f"/api/v1/results/{e['id']}/image"), 404, "no_image")
    assert_json_error(standin.get(f"/api/v1/results/{e['id']}/thumb"), 404, "no_image")
    # retention removed the archived file: a clean 404, not a 500
    for f in (standin.daemon.config.storage.data_dir / "archive").rglob(f"{rid}*"):
        f.unlink()
    assert_json_error(standin.get(f"/api/v1/results/{rid}/image"), 404, "no_image")


def test_annotated_image_when_the_analyzer_stored_one(standin, jpeg_bytes):
    rid = standin.post("/api/v1/classify", jpeg_bytes).json()["id"]
    rel = f"annotated/2026-11-22/{rid}.jpg"
    path = standin.daemon.config.storage.data_dir / rel
    path.parent.mkdir(parents=True)
    path.write_bytes(jpeg_bytes)
    standin.daemon.journal.set_files(rid, annotated=rel)  # as the pipeline records it
    r = standin.get(f"/api/v1/results/{rid}/image?annotated=1")
    assert r.status == 200 and r.body == jpeg_bytes and r.headers["content-type"] == "image/jpeg"


def test_journal_path_outside_data_dir_is_never_served(standin, jpeg_bytes, tmp_path):
    rid = standin.post("/api/v1/classify", jpeg_bytes).json()["id"]
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"secret")
    standin.daemon.journal.set_files(rid, image="../outside.jpg", thumb="../outside.jpg")
    assert_json_error(standin.get(f"/api/v1/results/{rid}/image"), 404, "no_image")
    assert_json_error(standin.get(f"/api/v1/results/{rid}/thumb"), 404, "no_image")


# ---------------------------------------------------------------------------- control


def test_reload_ok_and_failure(standin):
    r = standin.post("/api/v1/reload")
    assert r.status == 200 and r.json()["ok"] is True
    standin.daemon.reload_ok = (False, "model.xml: input shape mismatch")
    e = assert_json_error(standin.post("/api/v1/reload"), 422, "reload_failed")
    assert "previous model" in e["message"]


def test_capture_without_and_with_camera(standin):
    assert_json_error(standin.post("/api/v1/capture"), 409, "no_camera")
    standin.daemon.camera_available = True
    r = standin.post("/api/v1/capture")
    assert r.status == 202 and standin.daemon.capture_requests == 1


# ---------------------------------------------------------------------------- health, metrics


def test_healthz_ok_then_503_with_reasons(standin):
    from edge.component import HealthCheck

    ok = standin.get("/healthz")
    assert ok.status == 200 and ok.json()["status"] == "ok"
    names = {c["name"] for c in ok.json()["checks"]}
    assert {"model", "disk", "cpu temperature", "http"} <= names
    standin.daemon.health_override = [HealthCheck("model", "ok", "fine"),
                                      HealthCheck("folder", "fail", "inbox /x is not writable")]
    bad = standin.get("/healthz")
    assert bad.status == 503
    assert bad.json()["reasons"] == ["folder: inbox /x is not writable"]


METRIC_LINE = re.compile(
    r'^(# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+|'
    r'[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? '
    r'(-?[0-9.e+-]+|NaN|\+Inf|-Inf))$'
)


def parse_metrics(text: str) -> dict:
    values = {}
    for line in text.splitlines():
        assert METRIC_LINE.match(line), f"not Prometheus text format: {line!r}"
        if not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            values[key] = float(value)
    return values


def test_metrics_prometheus_text(standin, jpeg_bytes):
    standin.post("/api/v1/classify", jpeg_bytes)
    standin.post("/api/v1/classify", b"")
    r = standin.get("/metrics")
    assert r.status == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    m = parse_metrics(r.body.decode())
    assert m["all_edge_processed_total"] == 1 and m["all_edge_quarantined_total"] == 1
    assert m["all_edge_latency_ms_count"] == 1 and m['all_edge_latency_ms_bucket{le="+Inf"}'] == 1
    assert m.get('all_edge_results_seen_total{source="api",status="ok",label="ALL"}', 0) + \
        m.get('all_edge_results_seen_total{source="api",status="ok",label="normal"}', 0) == 1
    assert m['all_edge_results_seen_total{source="api",status="quarantined",label="none"}'] == 1
    assert m["all_edge_queue_depth"] == 0
    assert m["all_edge_status_outbox_depth"] == 0
    assert m['all_edge_health{check="http",state="ok"}'] == 1
    assert m['all_edge_health{check="http",state="fail"}'] == 0
    assert m['all_edge_health{check="model",state="warn"}'] == 1
    assert m['all_edge_http_requests_total{method="POST",route="/api/v1/classify",code="200"}'] \
        == 1
    assert m['all_edge_http_requests_total{method="POST",route="/api/v1/classify",code="400"}'] \
        == 1
    r = request(standin.base, "BREW", "/")
    assert r.status == 405
    m = parse_metrics(standin.get("/metrics").body.decode())
    assert m['all_edge_http_requests_total{method="OTHER",route="unmatched",code="405"}'] == 1
