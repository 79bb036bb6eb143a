"""Every error leaves the HTTP API as `{"error": code, "message": text}`, never an HTML page.

`ImageError.reason` codes from `edge.imaging` map to the status codes the issue asks for, so a
client can tell "too big" (413) from "not an image" (415) from "broken image" (400).
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from typing import Any, Dict, Optional

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

log = logging.getLogger("edge.web")

REASON_STATUS = {
    "too_many_pixels": 413,
    "too_large": 413,
    "not_an_image": 415,
    "unsupported_format": 415,
    "unsupported_extension": 415,
    "empty": 400,
    "truncated": 400,
    "undecodable": 400,
    "internal_error": 500,
}


STORAGE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EIO, errno.EDQUOT}


class ApiError(Exception):
    """Raise from a view to answer with a clean JSON error."""

    def __init__(self, status: int, code: str, message: str,
                 extra: Optional[Dict[str, Any]] = None,
                 headers: Optional[Dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra or {}
        self.headers = headers or {}


def status_for_reason(reason: Optional[str]) -> int:
    return REASON_STATUS.get(reason or "", 400)


def error_response(status: int, code: str, message: str, **extra: Any):
    body: Dict[str, Any] = {"error": code, "message": message}
    body.update(extra)
    resp = jsonify(body)
    resp.status_code = status
    return resp


def error_code(name: str) -> str:
    """`Request Header Fields Too Large` -> `request_header_fields_too_large`."""
    return name.lower().replace(" ", "_").replace("-", "_").replace("'", "")


def too_large_message(max_upload_mb: float) -> str:
    """One wording for every `too_large` 413, whether Flask or waitress refuses the body."""
    return (f"the request body exceeds the upload limit of {max_upload_mb:g} MB "
            "(server.max_upload_mb)")


def install(app: Flask, max_upload_mb: float) -> None:
    """Register handlers so that nothing (404, 405, 413, bugs) renders an HTML traceback."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        resp = error_response(exc.status, exc.code, exc.message, **exc.extra)
        for k, v in exc.headers.items():
            resp.headers[k] = v
        return resp

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge):
        return error_response(413, "too_large", too_large_message(max_upload_mb))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        return error_response(exc.code or 500, error_code(exc.name), exc.description or exc.name)

    @app.errorhandler(sqlite3.Error)
    @app.errorhandler(OSError)
    def _storage(exc: Exception):
        """A full or failing SD card is an operating condition, not a bug: one line, 503."""
        if isinstance(exc, OSError) and exc.errno not in STORAGE_ERRNOS:
            return _unexpected(exc)
        log.error("storage error while serving a request: %s: %s", type(exc).__name__, exc)
        return error_response(503, "storage_unavailable",
                              f"the journal or data directory cannot be written ({exc}); "
                              "the operator must free space or fix the storage")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("internal error while serving a request: %s", type(exc).__name__)
        return error_response(500, "internal_error",
                              "internal error; the operator's log has the details")
