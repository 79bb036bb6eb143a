"""`HttpServer`: the daemon component that serves the Flask app with waitress in a thread."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from typing import Any, Dict, List, Optional, Tuple

import waitress
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer
from waitress.task import ErrorTask

from edge.component import Component, HealthCheck
from edge.web.app import create_app, max_upload_bytes
from edge.web.auth import load_credentials
from edge.web.errors import error_code, too_large_message
from edge.web.metrics import Metrics

log = logging.getLogger("edge.web")

# Flask refuses a body over server.max_upload_mb with the JSON 413 (MAX_CONTENT_LENGTH). Waitress
# reads every body whole before the app sees it (into a temp file beyond inbuf_overflow, 512 KiB,
# so memory stays bounded) and cuts off one beyond its own cap as soon as it knows, often while
# the client is still sending (it may see a reset, not the answer). So its cap sits well above
# the limit: an upload that is merely too large is read and answered cleanly; the cap only
# bounds the temp file per connection. Beyond it, waitress's answer is made JSON too.
WAITRESS_CAP_FACTOR = 2   # x 100 connections: the worst-case temp disk (5 GB at 25 MB)


class _JsonError:
    """A waitress error (body over its cap, malformed request) answered as our JSON error."""

    def __init__(self, error: Any, too_large: str) -> None:
        self.code, self.reason = error.code, error.reason
        self.message = too_large if error.code == 413 else str(error.body)

    def to_response(self, ident: Optional[str] = None) -> Tuple[str, List[Tuple[str, str]], bytes]:
        code = "too_large" if self.code == 413 else error_code(self.reason)
        body = json.dumps({"error": code, "message": self.message}).encode("utf-8")
        return f"{self.code} {self.reason}", [("Content-Type", "application/json")], body


def _json_error_channel(too_large: str) -> type:
    """An HTTPChannel whose own error answers (waitress's, not the app's) are JSON."""

    class JsonErrorTask(ErrorTask):
        def execute(self) -> None:
            self.request.error = _JsonError(self.request.error, too_large)
            super().execute()

    class JsonErrorChannel(HTTPChannel):
        error_task_class = JsonErrorTask

    return JsonErrorChannel


class ServerStartError(Exception):
    """The HTTP server cannot start (e.g. the port is taken); the message says why."""


class HttpServer(Component):
    name = "http"

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self.metrics = Metrics()
        self._server: Any = None
        self._thread: Optional[threading.Thread] = None
        self._creds = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Bind and serve; returns once the socket is bound. Raises AuthConfigError or
        ServerStartError for a setup that must not serve."""
        cfg = self.daemon.config.server
        self._creds = load_credentials(cfg)
        # waitress logs every request that has to wait for a worker; /metrics shows load instead
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        app = create_app(self.daemon, credentials=self._creds, metrics=self.metrics)
        sockets: Dict[int, Any] = {}
        try:
            self._server = waitress.create_server(
                app, map=sockets, host=cfg.host, port=cfg.port, threads=cfg.threads,
                max_request_body_size=max_upload_bytes(self.daemon) * WAITRESS_CAP_FACTOR,
                ident="all-edge", channel_timeout=60, connection_limit=100,
            )
        except OSError as exc:
            raise ServerStartError(
                f"server: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}"
            ) from None
        channel = _json_error_channel(too_large_message(cfg.max_upload_mb))
        for listener in sockets.values():  # one per listening socket (localhost: v4 and v6)
            if isinstance(listener, BaseWSGIServer):
                listener.channel_class = channel
        self._thread = threading.Thread(target=self._server.run, name="http", daemon=True)
        self._thread.start()
        log.info("HTTP API on http://%s:%s (auth: %s)", cfg.host, self.port,
                 self._creds.schemes)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish (bounded), close every connection."""
        server, self._server = self._server, None
        if server is None:
            return

        def close_listener() -> None:  # runs in the server thread; keeps the trigger open
            server.accepting = False
            wasyncore.dispatcher.close(server)

        def close_all() -> None:  # every connection and the trigger: the loop then ends
            for ch in list(server._map.values()):
                with contextlib.suppress(OSError):
                    ch.close()

        with contextlib.suppress(OSError):
            server.trigger.pull_trigger(close_listener)
            server.task_dispatcher.shutdown(cancel_pending=False, timeout=max(0.1, timeout / 2))
            server.trigger.pull_trigger(close_all)
        if self._thread is not None:
            self._thread.join(max(0.1, timeout / 2))
            if self._thread.is_alive():
                log.warning("HTTP server thread did not stop within %.1f s", timeout)
        log.info("HTTP API stopped")

    # ------------------------------------------------------------------ component API

    @property
    def port(self) -> Optional[int]:
        return self._server.effective_port if self._server is not None else None

    @property
    def url(self) -> Optional[str]:
        if self._server is None:
            return None
        host = self._server.effective_host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    def health(self) -> List[HealthCheck]:
        if self._server is None:
            return [HealthCheck("http", "fail", "HTTP server not running")]
        if self._thread is None or not self._thread.is_alive():
            return [HealthCheck("http", "fail", "HTTP server thread died")]
        return [HealthCheck("http", "ok", f"listening on {self.url}",
                            {"auth": self._creds.schemes if self._creds else None})]

    def status(self) -> Dict[str, Any]:
        return {"url": self.url, "auth": self._creds.schemes if self._creds else None}

    def on_result(self, result: Dict[str, Any]) -> None:
        self.metrics.observe_result(result)
