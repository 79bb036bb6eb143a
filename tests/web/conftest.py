"""Fixtures for the HTTP tests: a real waitress server on a free loopback port, real requests."""

from __future__ import annotations

import base64
import http.client
import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import cv2
import numpy as np
import pytest

from edge.config import Config
from edge.web import HttpServer
from tests.util import free_port
from tests.web.standin import StandInDaemon

SECRET_ENVS = ("ALL_EDGE_API_PASSWORD", "ALL_EDGE_API_TOKEN", "CREDENTIALS_DIRECTORY")
USER, PASSWORD, TOKEN = "hias", "pässwörd-Δ-42", "tok-3f9c0d1e2b"


@dataclass
class Reply:
    status: int
    headers: Dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


def request(base: str, method: str, path: str, body: Optional[bytes] = None,
            headers: Optional[Dict[str, str]] = None, timeout: float = 30) -> Reply:
    """One real HTTP request with http.client (no keep-alive reuse between calls)."""
    host, port = base.replace("http://", "").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def multipart(field: str, filename: str, data: bytes,
              content_type: str = "application/octet-stream") -> Tuple[bytes, Dict[str, str]]:
    boundary = "----alledgetestboundary7d1f"
    # RFC 7578: UTF-8 file names are sent raw in the quoted filename parameter
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n').encode()
    body = head + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def basic(user: str = USER, password: str = PASSWORD) -> Dict[str, str]:
    raw = f"{user}:{password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def bearer(token: str = TOKEN) -> Dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_config(tmp_path: Path, **server: Any) -> Config:
    raw = {
        "sources": {"folder": {"enabled": False, "path": str(tmp_path / "inbox")}},
        "storage": {"data_dir": str(tmp_path / "data"), "min_free_mb": 0},
        "server": {"host": "127.0.0.1", "port": free_port(), "threads": 2, **server},
    }
    return Config.model_validate(raw)


@pytest.fixture(autouse=True)
def _no_ambient_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials come only from what each test configures."""
    for name in SECRET_ENVS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture()
def secret_files(tmp_path: Path) -> Dict[str, str]:
    (tmp_path / "pw").write_text(PASSWORD + "\n", encoding="utf-8")
    (tmp_path / "tok").write_text(TOKEN + "\n", encoding="utf-8")
    return {"username": USER, "password_file": str(tmp_path / "pw"),
            "token_file": str(tmp_path / "tok")}


class Running:
    """A started HttpServer around a daemon; `.get/.post` send real requests to it."""

    def __init__(self, daemon: Any, server: HttpServer) -> None:
        self.daemon, self.server = daemon, server
        self.base = server.url

    def get(self, path: str, **kw: Any) -> Reply:
        return request(self.base, "GET", path, **kw)

    def post(self, path: str, body: Optional[bytes] = b"", **kw: Any) -> Reply:
        return request(self.base, "POST", path, body=body, **kw)


def start_standin(tmp_path: Path, **server: Any) -> Running:
    daemon = StandInDaemon(make_config(tmp_path, **server))
    srv = HttpServer(daemon)
    daemon.components.append(srv)
    srv.start()
    return Running(daemon, srv)


@pytest.fixture()
def standin(tmp_path: Path) -> Iterator[Running]:
    """Stand-in daemon (TEST DOUBLE), open loopback access (the dev default)."""
    run = start_standin(tmp_path)
    yield run
    run.server.stop(timeout=5)
    run.daemon.close()


@pytest.fixture()
def standin_auth(tmp_path: Path, secret_files: Dict[str, str]) -> Iterator[Running]:
    """Stand-in daemon with Basic + Bearer credentials configured from files."""
    run = start_standin(tmp_path, auth=secret_files)
    yield run
    run.server.stop(timeout=5)
    run.daemon.close()


# ---------------------------------------------------------------------------- test inputs


@pytest.fixture(scope="session")
def cnmc_cell(cnmc_sample: Path) -> Tuple[str, bytes]:
    """One real C-NMC 2019 cell (Gupta & Gupta 2019, TCIA, doi 10.7937/tcia.2019.dc64i46r,
    CC BY 3.0)."""
    p = cnmc_sample / "fold_0" / "all" / "UID_11_1_1_all.bmp"
    return p.name, p.read_bytes()


@pytest.fixture(scope="session")
def jpeg_bytes(cnmc_cell: Tuple[str, bytes]) -> bytes:
    """The real C-NMC cell re-encoded as JPEG."""
    img = cv2.imdecode(np.frombuffer(cnmc_cell[1], np.uint8), cv2.IMREAD_COLOR)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@pytest.fixture(scope="session")
def huge_png(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A complete, valid 30000x30000 1-bit PNG (~110 KB compressed, 900 Mpx decoded)."""
    w = h = 30000
    row = b"\x00" + bytes((w + 7) // 8)
    comp = zlib.compressobj(9)
    parts = [comp.compress(row) for _ in range(h)]
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", b"".join(parts)) + _png_chunk(b"IEND", b""))
