"""What every view needs (daemon, config, credentials, metrics), and the auth decorator."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from flask import current_app, request

from edge.config import ServerConfig, StorageConfig
from edge.web.auth import Credentials, challenge, check_authorization
from edge.web.errors import ApiError
from edge.web.metrics import Metrics
from edge.web.throttle import FailedLogins

log = logging.getLogger("edge.web")
EXTENSION = "all_edge_web"


def _as_dict(check: Any) -> Dict[str, Any]:
    if hasattr(check, "to_dict"):
        return check.to_dict()
    if isinstance(check, dict):
        return dict(check)
    return {"name": str(getattr(check, "name", "?")), "state": str(getattr(check, "state", "?")),
            "summary": str(getattr(check, "summary", "")), "detail": {}}


@dataclass
class WebContext:
    daemon: Any
    creds: Credentials
    metrics: Metrics = field(default_factory=Metrics)
    logins: FailedLogins = field(default_factory=FailedLogins)

    @property
    def server(self) -> ServerConfig:
        return self.daemon.config.server

    @property
    def storage(self) -> StorageConfig:
        return self.daemon.config.storage

    @property
    def data_dir(self) -> Path:
        return Path(self.storage.data_dir)

    @property
    def thumbs_dir(self) -> Optional[Path]:
        return self.data_dir / "thumbs" if self.storage.thumbnails else None

    def health(self) -> List[Dict[str, Any]]:
        """The daemon's checks (model, device, pipeline, disk, temperature, components)."""
        try:
            return [_as_dict(c) for c in self.daemon.health()]
        except Exception as exc:  # a broken check must not take the page down
            log.warning("daemon.health() failed: %s", exc)
            return [{"name": "daemon", "state": "fail",
                     "summary": f"health check failed: {type(exc).__name__}", "detail": {}}]

    def status(self) -> Dict[str, Any]:
        return self.daemon.status()


def current() -> WebContext:
    return current_app.extensions[EXTENSION]


def protected(view: Callable) -> Callable:
    """Require credentials (Basic or Bearer) unless open access applies (loopback dev default)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any):
        ctx = current()
        addr = request.remote_addr or "?"
        wait = ctx.logins.begin(addr)
        if wait:
            raise ApiError(429, "locked_out", f"too many wrong credentials from {addr}; try again in "
                           f"{wait} s", headers={"Retry-After": str(wait)})
        header = request.headers.get("Authorization")
        ok = check_authorization(ctx.creds, header)
        # only wrong credentials count, not a browser's first try without any
        if ctx.logins.finish(addr, failed=bool(header) and not ok, cleared=bool(header) and ok):
            log.warning("locked out %s for %.0f s after %d wrong credentials", addr,
                        ctx.logins.window, ctx.logins.limit)
        elif not ok:
            log.info("unauthenticated %s %s from %s", request.method, request.path, addr)
        if not ok:
            raise ApiError(401, "unauthorized", "credentials required (HTTP Basic or Bearer)",
                           headers={"WWW-Authenticate": challenge(ctx.creds)})
        return view(*args, **kwargs)

    return wrapper
