"""HTTP face of the daemon: status page, REST API, the originals' /Inference, health, metrics."""

from edge.web.app import create_app
from edge.web.auth import AuthConfigError
from edge.web.server import HttpServer, ServerStartError

__all__ = ["AuthConfigError", "HttpServer", "ServerStartError", "create_app"]
