"""Flask application factory: the daemon's HTTP face (status page, REST API, /Inference)."""

from __future__ import annotations

from typing import Any, Optional

from flask import Flask, request
from flask.json.provider import DefaultJSONProvider

from edge.web import api, errors, page
from edge.web.auth import Credentials, load_credentials
from edge.web.context import EXTENSION, WebContext
from edge.web.metrics import Metrics
from edge.web.throttle import FailedLogins

MB = 1024 * 1024


class _JSON(DefaultJSONProvider):
    """Keep key order (the /Inference keys read like the originals') and stringify paths."""

    sort_keys = False

    @staticmethod
    def default(o: Any) -> Any:
        try:
            return DefaultJSONProvider.default(o)
        except TypeError:
            return str(o)


def max_upload_bytes(daemon: Any) -> int:
    return int(daemon.config.server.max_upload_mb * MB)


def create_app(daemon: Any, *, credentials: Optional[Credentials] = None,
               metrics: Optional[Metrics] = None) -> Flask:
    """Build the app for `daemon` (the API in docs/architecture.md).

    `credentials` default to `load_credentials(daemon.config.server)`, which raises
    `AuthConfigError` for a setup that must not serve (e.g. remote bind without credentials).
    """
    app = Flask(__name__)
    app.json = _JSON(app)
    app.config["MAX_CONTENT_LENGTH"] = max_upload_bytes(daemon)
    creds = credentials if credentials is not None else load_credentials(daemon.config.server)
    auth = daemon.config.server.auth
    ctx = WebContext(daemon=daemon, creds=creds, metrics=metrics or Metrics(),
                     logins=FailedLogins(auth.max_failed_logins, auth.lockout_seconds))
    app.extensions[EXTENSION] = ctx
    errors.install(app, daemon.config.server.max_upload_mb)
    app.register_blueprint(page.bp)
    app.register_blueprint(api.bp)

    @app.after_request
    def _count(resp):
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        ctx.metrics.observe_http(request.method, route, resp.status_code)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        return resp

    return app
