"""JSON routes: status, results, classify, the originals' /Inference, reload, capture, health."""

from __future__ import annotations

import logging
from typing import Any, Dict, List

from flask import Blueprint, Response, jsonify, request, send_file

from edge.imaging import ImageError
from edge.web import images
from edge.web.context import WebContext, current, protected
from edge.web.errors import ApiError
from edge.web.metrics import CONTENT_TYPE
from edge.web.uploads import analysis_arg, read_upload, submit

log = logging.getLogger("edge.web")
bp = Blueprint("api", __name__)

MAX_PAGE = 500
INFERENCE_TIMEOUT = 25.0  # HIAS's UI gives up after 30 s: answer (503) before it does


def _result_or_404(ctx: WebContext, result_id: str) -> Dict[str, Any]:
    if not images.valid_id(result_id):
        raise ApiError(400, "bad_request", "malformed result id")
    result = ctx.daemon.journal.get(result_id)
    if result is None:
        raise ApiError(404, "not_found", f"no result with id {result_id}")
    return result


@bp.get("/api/v1/status")
def status():
    return jsonify(current().status())


@bp.get("/api/v1/results")
def results():
    try:
        limit = int(request.args.get("limit", "50"))
    except ValueError:
        raise ApiError(400, "bad_request", "limit must be an integer") from None
    if not 1 <= limit <= MAX_PAGE:
        raise ApiError(400, "bad_request", f"limit must be between 1 and {MAX_PAGE}")
    before = request.args.get("before") or None
    if before is not None and not images.valid_id(before):
        raise ApiError(400, "bad_request", "malformed 'before' id")
    status = request.args.get("status") or None
    if status not in (None, "ok", "quarantined"):
        raise ApiError(400, "bad_request", "status must be 'ok' or 'quarantined'")
    rows: List[Dict[str, Any]] = current().daemon.journal.recent(limit, before_id=before, status=status)
    nxt = rows[-1]["id"] if len(rows) == limit else None
    return jsonify({"results": rows, "count": len(rows), "next_before": nxt})


@bp.get("/api/v1/results/<result_id>")
def result(result_id: str):
    return jsonify(_result_or_404(current(), result_id))


def _annotated_arg() -> bool:
    """`?annotated=1`: the analyzer's overlay (cells mode) instead of the archived input."""
    return request.args.get("annotated", "0").lower() not in ("0", "", "false", "no")


@bp.get("/api/v1/results/<result_id>/image")
def result_image(result_id: str):
    ctx = current()
    res = _result_or_404(ctx, result_id)
    annotated = _annotated_arg()
    path = images.find_image(ctx.daemon.journal, res["id"], ctx.data_dir,
                             "annotated" if annotated else "image")
    if path is None:
        what = "annotated image" if annotated else "archived input image"
        raise ApiError(404, "no_image", f"no {what} is stored for result {result_id}")
    return send_file(path, mimetype=images.mimetype_for(path), max_age=3600)


@bp.get("/api/v1/results/<result_id>/thumb")
def result_thumb(result_id: str):
    """The input's 160 px thumbnail, or with `?annotated=1` a 640 px one of the overlay."""
    ctx = current()
    res = _result_or_404(ctx, result_id)
    journal = ctx.daemon.journal
    annotated = _annotated_arg()
    if not annotated:
        made = images.find_image(journal, res["id"], ctx.data_dir, "thumb")
        if made is not None:  # the pipeline already wrote one
            return send_file(made, mimetype=images.mimetype_for(made), max_age=86400)
    path = images.find_image(journal, res["id"], ctx.data_dir,
                             "annotated" if annotated else "image")
    if path is None:
        what = "annotated image" if annotated else "archived input image"
        raise ApiError(404, "no_image", f"no {what} for result {result_id}")
    size = images.ANNOTATED_THUMB_SIZE if annotated else images.THUMB_SIZE
    try:
        cache = images.thumb_cache_path(ctx.thumbs_dir, res, annotated) \
            if ctx.thumbs_dir else None
        data = images.thumbnail(path, cache, ctx.server.max_pixels, size)
    except ImageError as exc:
        raise ApiError(404, "no_image", f"the stored image cannot be shown: {exc.message}") \
            from None
    resp = Response(data, mimetype="image/jpeg")
    resp.cache_control.max_age = 86400
    return resp


@bp.post("/api/v1/classify")
@protected
def classify():
    data, name = read_upload()
    ctx = current()
    return jsonify(submit(ctx.daemon, data, name, "api", analysis_arg(), INFERENCE_TIMEOUT))


@bp.post("/Inference")
@protected
def inference():
    """The originals' endpoint: same request forms, exactly their three response keys."""
    data, name = read_upload()
    res = submit(current().daemon, data, name, "inference", None, INFERENCE_TIMEOUT)
    detected = bool(res.get("positive"))
    return jsonify({
        "Response": "OK",
        "Message": "Acute Lymphoblastic Leukemia detected!" if detected
        else "Acute Lymphoblastic Leukemia not detected!",
        "Diagnosis": "Positive" if detected else "Negative",
    })


@bp.post("/api/v1/reload")
@protected
def reload_model():
    ok, message = current().daemon.reload_model()
    log.info("model reload requested over HTTP: %s", "ok" if ok else "failed")
    if not ok:
        raise ApiError(422, "reload_failed", f"{message} (still serving the previous model)")
    return jsonify({"ok": True, "message": message})


@bp.post("/api/v1/capture")
@protected
def capture():
    try:
        accepted = current().daemon.request_capture()
    except RuntimeError as exc:
        raise ApiError(503, "camera_unavailable", str(exc) or "the camera is not working") \
            from None
    if not accepted:
        raise ApiError(409, "no_camera", "no camera source is enabled (sources.camera.enabled)")
    return jsonify({"ok": True, "message": "capture requested"}), 202


@bp.get("/healthz")
def healthz():
    ctx = current()
    checks = ctx.health()
    failing = [c for c in checks if c["state"] == "fail"]
    ready = getattr(ctx.daemon, "ready", True) is not False
    body: Dict[str, Any] = {"status": "ok" if ready and not failing else "fail",
                            "checks": checks}
    if failing or not ready:
        reasons = [f"{c['name']}: {c['summary']}" for c in failing]
        if not ready:
            reasons.insert(0, "daemon: not ready")
        body["reasons"] = reasons
        return jsonify(body), 503
    return jsonify(body)


@bp.get("/metrics")
def metrics():
    ctx = current()
    text = ctx.metrics.render(ctx.status(), ctx.health())
    return Response(text, content_type=CONTENT_TYPE)
