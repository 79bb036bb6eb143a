"""A real Mosquitto for the HIAS tests and bench: TLS with a throw-away CA, a password file.

Everything lives in one temporary directory: `openssl` makes a CA and a server certificate for
localhost/127.0.0.1 (plus an unrelated CA for the wrong-CA test), `mosquitto_passwd` the
password file. The broker keeps a persistence file so a stop/start keeps queued QoS 1
messages for persistent subscribers, as a production broker would.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Dict, Optional

from tests.util import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
USERS = {"edge": "edge-secret-pw", "hias": "hias-listener-pw"}


def _run(*cmd: str, cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")


def make_pki(directory: Path) -> Dict[str, Path]:
    """CA, server key+cert (SAN localhost, 127.0.0.1) and an unrelated CA, all 1-day RSA 2048."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for name in ("ca", "other-ca"):
        _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN=test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
         "-out", "server.csr", "-subj", "/CN=localhost", cwd=d)
    (d / "server.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    _run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
         "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", "server.crt", cwd=d)
    return {"ca": d / "ca.crt", "other_ca": d / "other-ca.crt",
            "cert": d / "server.crt", "key": d / "server.key"}


def make_passwords(path: Path) -> Path:
    path = Path(path)
    path.unlink(missing_ok=True)
    for i, (user, password) in enumerate(USERS.items()):
        flags = ["-c"] if i == 0 else []
        _run("mosquitto_passwd", *flags, "-b", str(path), user, password, cwd=path.parent)
    path.chmod(0o600)
    return path


class Broker:
    """One Mosquitto process: TLS listener on `port`, optional plain listener on `plain_port`."""

    def __init__(self, workdir: Path, pki: Dict[str, Path], passwords: Path,
                 plain: bool = False) -> None:
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pki = pki
        self.port = free_port()
        self.plain_port: Optional[int] = free_port() if plain else None
        self.proc: Optional[subprocess.Popen] = None
        self.log = self.dir / "mosquitto.log"
        lines = [
            f"user {getpass.getuser()}",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {passwords}",
            "persistence true",
            f"persistence_location {self.dir}/",
            "max_queued_messages 100000",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            f"listener {self.port} 127.0.0.1",
            f"cafile {pki['ca']}",
            f"certfile {pki['cert']}",
            f"keyfile {pki['key']}",
            "tls_version tlsv1.2",
        ]
        if self.plain_port:
            lines.append(f"listener {self.plain_port} 127.0.0.1")
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        assert not self.running
        self._logf = open(self.log, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                     stdout=self._logf, stderr=subprocess.STDOUT)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError("mosquitto did not start listening in time")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        self._logf.close()

    def client_tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.pki["ca"]))
