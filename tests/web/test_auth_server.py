"""Access control and server lifecycle over real HTTP (stand-in daemon: TEST DOUBLE)."""

from __future__ import annotations

import base64
import logging
import socket
import threading
import time

import pytest

from edge.config import ServerConfig
from edge.web import AuthConfigError, HttpServer, ServerStartError
from edge.web.auth import check_authorization, load_credentials
from tests.web.conftest import (
    PASSWORD,
    TOKEN,
    USER,
    basic,
    bearer,
    make_config,
    multipart,
    request,
    start_standin,
)
from tests.web.standin import StandInDaemon

PROTECTED = [("/api/v1/classify", True), ("/Inference", True), ("/api/v1/reload", False),
             ("/api/v1/capture", False)]


@pytest.mark.parametrize("path,upload", PROTECTED)
def test_protected_routes_need_credentials(standin_auth, jpeg_bytes, path, upload):
    body = jpeg_bytes if upload else b""
    for headers in ({}, basic(USER, "wrong"), basic("someone", PASSWORD), bearer("nope"),
                    {"Authorization": "Basic !!notbase64"}, {"Authorization": "Digest x"}):
        r = standin_auth.post(path, body, headers=headers)
        assert r.status == 401, (headers, r.status)
        assert r.json()["error"] == "unauthorized"
        assert r.headers["www-authenticate"].startswith("Basic realm=")
    assert standin_auth.daemon.journal.count() == 0  # nothing was computed or journaled


def test_basic_and_bearer_accepted(standin_auth, jpeg_bytes):
    body, headers = multipart("file", "c.jpg", jpeg_bytes, "image/jpeg")
    r = standin_auth.post("/Inference", body, headers={**headers, **basic()})
    assert r.status == 200 and set(r.json()) == {"Response", "Message", "Diagnosis"}
    r = standin_auth.post("/api/v1/classify", jpeg_bytes, headers=bearer())
    assert r.status == 200 and r.json()["status"] == "ok"
    assert standin_auth.post("/api/v1/reload", headers=bearer()).status == 200


def test_read_only_routes_stay_open(standin_auth):
    for path in ("/", "/api/v1/status", "/api/v1/results", "/healthz", "/metrics"):
        assert standin_auth.get(path).status == 200, path


def test_no_secret_in_responses_or_logs(standin_auth, jpeg_bytes, caplog):
    caplog.set_level(logging.DEBUG)
    replies = [standin_auth.post("/api/v1/classify", jpeg_bytes, headers=basic(USER, "guess")),
               standin_auth.get("/api/v1/status"), standin_auth.get("/"),
               standin_auth.get("/metrics"), standin_auth.get("/healthz")]
    for r in replies:
        for secret in (PASSWORD, TOKEN, "guess"):
            assert secret.encode() not in r.body
    assert "unauthenticated POST /api/v1/classify" in caplog.text
    for secret in (PASSWORD, TOKEN, "guess", base64.b64encode(b"hias:guess").decode()):
        assert secret not in caplog.text


def test_open_on_loopback_without_credentials(standin, jpeg_bytes):
    assert standin.post("/api/v1/classify", jpeg_bytes).status == 200


def test_non_loopback_bind_without_credentials_is_refused(tmp_path):
    daemon = StandInDaemon(make_config(tmp_path, host="0.0.0.0"))
    srv = HttpServer(daemon)
    with pytest.raises(AuthConfigError, match="not a loopback address.*allow_unauthenticated"):
        srv.start()
    assert srv.port is None  # nothing was bound
    daemon.close()


def test_non_loopback_allowed_explicitly_or_with_credentials(tmp_path, secret_files):
    cfg = ServerConfig(host="0.0.0.0", allow_unauthenticated_remote=True)
    assert load_credentials(cfg).open_access
    cfg = ServerConfig(host="0.0.0.0", auth=secret_files)
    creds = load_credentials(cfg)
    assert not creds.open_access and creds.schemes == "basic+bearer"
    assert check_authorization(creds, basic()["Authorization"])
    assert not check_authorization(creds, None)


def test_credentials_from_env_and_systemd_credential(tmp_path, monkeypatch):
    monkeypatch.setenv("ALL_EDGE_API_TOKEN", "from-env")
    creds = load_credentials(ServerConfig())
    assert check_authorization(creds, "Bearer from-env") and not creds.open_access
    monkeypatch.delenv("ALL_EDGE_API_TOKEN")
    (tmp_path / "api-password").write_text("from-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    creds = load_credentials(ServerConfig(auth={"username": "u"}))
    assert check_authorization(creds, basic("u", "from-credential")["Authorization"])


def test_half_configured_basic_is_refused(tmp_path, monkeypatch):
    with pytest.raises(AuthConfigError, match="no password was found"):
        load_credentials(ServerConfig(auth={"username": "u"}))
    monkeypatch.setenv("ALL_EDGE_API_PASSWORD", "pw")
    with pytest.raises(AuthConfigError, match="username is not set"):
        load_credentials(ServerConfig())
    with pytest.raises(AuthConfigError, match="cannot read the password file"):
        load_credentials(ServerConfig(auth={"username": "u", "password_file": tmp_path / "no"}))


def test_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        daemon = StandInDaemon(make_config(tmp_path, port=port))
        with pytest.raises(ServerStartError, match=f"cannot listen on 127.0.0.1:{port}"):
            HttpServer(daemon).start()
        daemon.close()


def test_stop_closes_the_socket_and_health_reports_it(tmp_path):
    run = start_standin(tmp_path)
    base = run.base
    assert [c.state for c in run.server.health()] == ["ok"]
    assert run.server.status()["url"] == base
    # an idle keep-alive connection must not keep the server alive
    keep = socket.create_connection(("127.0.0.1", run.server.port), timeout=5)
    run.server.stop(timeout=4)
    keep.close()
    assert not run.server._thread.is_alive()
    assert run.server.health()[0].state == "fail"
    with pytest.raises(OSError):
        request(base, "GET", "/healthz", timeout=2)
    run.daemon.close()


def test_stop_lets_an_in_flight_request_finish(tmp_path, jpeg_bytes):
    run = start_standin(tmp_path)
    real_submit = run.daemon.submit_bytes
    entered = threading.Event()

    def slow_submit(*a, **k):
        entered.set()
        time.sleep(1.0)
        return real_submit(*a, **k)

    run.daemon.submit_bytes = slow_submit
    replies = []
    t = threading.Thread(target=lambda: replies.append(run.post("/api/v1/classify", jpeg_bytes)))
    t.start()
    assert entered.wait(10)
    t0 = time.monotonic()
    run.server.stop(timeout=6)
    t.join(10)
    assert replies and replies[0].status == 200 and replies[0].json()["status"] == "ok"
    assert time.monotonic() - t0 < 6
    run.daemon.close()
