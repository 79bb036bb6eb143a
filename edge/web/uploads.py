"""Turn an HTTP upload into bytes + a safe name, and a daemon answer into a result or an error.

Both request forms of the originals are accepted: multipart field `file`, or the raw image as
the body (name from `X-Filename` or `?name=`). Bad images are journaled by the daemon like any
input (quarantined with a reason); here the reason becomes 400/413/415.
"""

from __future__ import annotations

import logging
import os
import queue
from typing import Any, Dict, Optional, Tuple
from urllib.parse import unquote

from flask import request

from edge import imaging
from edge.pipeline import Busy, Stopped
from edge.retention import log_name, safe_name
from edge.web.errors import ApiError, status_for_reason

log = logging.getLogger("edge.web")

ANALYSIS_MODES = ("whole-image", "cells")


def read_upload() -> Tuple[bytes, str]:
    """(data, name) from multipart `file` or the raw body."""
    if request.mimetype == "multipart/form-data":
        f = request.files.get("file")
        if f is None:
            raise ApiError(400, "missing_file",
                           "multipart upload without a 'file' field (send the image as 'file')")
        data, name = f.read(), f.filename
    else:
        header = request.headers.get("X-Filename")
        name = unquote(header) if header else request.args.get("name")
        data = request.get_data(cache=False)
    return data, with_format_suffix(data, safe_name(name or "upload"))


def with_format_suffix(data: bytes, name: str) -> str:
    """`name` plus the extension of the format its bytes are in when it has no image extension
    (`upload` -> `upload.jpg`), so the archived copy is stored under a name that says its type.
    A name with an image extension is kept even if the bytes disagree (the served type comes
    from the bytes); a non-image keeps its name, it is quarantined and never stored."""
    if os.path.splitext(name)[1].lower() in imaging.SUPPORTED_SUFFIXES:
        return name
    try:
        return name + imaging.FORMAT_SUFFIX[imaging.probe(data).format]
    except imaging.ImageError:
        return name


def analysis_arg() -> Optional[str]:
    mode = request.args.get("analysis")
    if mode is None or mode == "":
        return None
    if mode not in ANALYSIS_MODES:
        raise ApiError(400, "bad_request",
                       f"analysis must be one of {', '.join(ANALYSIS_MODES)}")
    return mode


def submit(daemon: Any, data: bytes, name: str, source: str,
           analysis: Optional[str], timeout: float) -> Dict[str, Any]:
    """daemon.submit_bytes with every failure turned into an ApiError; returns an `ok` result."""
    if getattr(daemon, "ready", True) is False:
        raise ApiError(503, "not_ready", "the daemon is starting or stopping; retry shortly",
                       headers={"Retry-After": "5"})
    try:
        result = daemon.submit_bytes(data, source=source, name=name, analysis=analysis,
                                     timeout=timeout)
    except imaging.ImageError as exc:
        raise ApiError(status_for_reason(exc.reason), exc.reason, exc.message) from None
    except ValueError as exc:  # e.g. an analysis mode no analyzer is registered for
        raise ApiError(400, "bad_request", str(exc)) from None
    except (Busy, queue.Full):
        log.warning("upload %s refused: the pipeline queue is full", log_name(name))
        raise ApiError(503, "overloaded", "the daemon's queue is full; nothing was recorded, "
                       "retry shortly", headers={"Retry-After": "5"}) from None
    except TimeoutError as exc:
        log.warning("upload %s not finished in time: %s", log_name(name), exc)
        raise ApiError(503, "timeout", f"{exc}; it will still be journaled: check "
                       "/api/v1/results before sending it again",
                       headers={"Retry-After": "5"}) from None
    except (Stopped, RuntimeError) as exc:  # the daemon is not running / stopping
        log.warning("upload %s not processed: %s", log_name(name), exc)
        raise ApiError(503, "not_ready", str(exc) or "the daemon cannot take work now",
                       headers={"Retry-After": "5"}) from None
    if result.get("status") != "ok":
        reason = result.get("reason") or "rejected"
        message = result.get("message") or _reason_text(result)
        raise ApiError(status_for_reason(reason), reason, message,
                       extra={"id": result.get("id")})
    return result


def _reason_text(result: Dict[str, Any]) -> str:
    detail = result.get("detail") or result.get("reason_detail")
    if isinstance(detail, str) and detail:
        return detail
    return f"the input was not classified: {result.get('reason') or 'rejected'}"
