"""A real Mosquitto for the HIAS tests and bench: TLS with a throw-away CA, a password file.

Everything lives in one temporary directory: `openssl` makes a CA and a server certificate for
localhost/127.0.0.1 (plus an unrelated CA for the wrong-CA test, a server certificate for
another host name, and a client certificate), `mosquitto_passwd` the password file. An ACL file
is optional, as on HIAS's broker. The broker keeps a persistence file so a stop/start keeps
queued QoS 1 messages for persistent subscribers, as a production broker would.
"""

from __future__ import annotations

import getpass
import shutil
import signal
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


def _signed(d: Path, name: str, cn: str, extensions: str) -> None:
    """`name`.key + `name`.crt signed by ca.crt."""
    _run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
         "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    (d / f"{name}.ext").write_text(extensions)
    _run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
         "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=d)


def make_pki(directory: Path) -> Dict[str, Path]:
    """CA, server key+cert (SAN localhost, 127.0.0.1), a server cert for another host name, a
    client cert, and an unrelated CA, all 2-day RSA 2048."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for name in ("ca", "other-ca"):
        _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN=test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    usage = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
    _signed(d, "server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\n" + usage
            + "extendedKeyUsage=serverAuth\n")
    _signed(d, "other-name", "hias.example.org", "subjectAltName=DNS:hias.example.org\n"
            + usage + "extendedKeyUsage=serverAuth\n")
    _signed(d, "client", "pi-test", usage + "extendedKeyUsage=clientAuth\n")
    return {"ca": d / "ca.crt", "other_ca": d / "other-ca.crt",
            "cert": d / "server.crt", "key": d / "server.key",
            "other_name_cert": d / "other-name.crt", "other_name_key": d / "other-name.key",
            "client_cert": d / "client.crt", "client_key": d / "client.key"}


def make_passwords(path: Path) -> Path:
    path = Path(path)
    path.unlink(missing_ok=True)
    for i, (user, password) in enumerate(USERS.items()):
        flags = ["-c"] if i == 0 else []
        _run("mosquitto_passwd", *flags, "-b", str(path), user, password, cwd=path.parent)
    path.chmod(0o600)
    return path


class Broker:
    """One Mosquitto process: TLS listener on `port`, optional plain listener on `plain_port`.

    `acl`: text of a Mosquitto acl_file (`set_acl` rewrites it and reloads the broker);
    `require_certificate`: clients must present a certificate signed by the test CA;
    `wrong_name`: serve a certificate for hias.example.org instead of localhost.
    """

    def __init__(self, workdir: Path, pki: Dict[str, Path], passwords: Path,
                 plain: bool = False, acl: Optional[str] = None,
                 require_certificate: bool = False, wrong_name: bool = False) -> None:
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pki = pki
        self.port = free_port()
        self.plain_port: Optional[int] = free_port() if plain else None
        self.proc: Optional[subprocess.Popen] = None
        self.log = self.dir / "mosquitto.log"
        self.acl_file = self.dir / "acl"
        cert, key = ("other_name_cert", "other_name_key") if wrong_name else ("cert", "key")
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
            f"certfile {pki[cert]}",
            f"keyfile {pki[key]}",
            "tls_version tlsv1.2",
        ]
        if require_certificate:
            lines.append("require_certificate true")
        if acl is not None:
            self.acl_file.write_text(acl)
            lines.insert(4, f"acl_file {self.acl_file}")
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

    def set_acl(self, acl: str) -> None:
        """Rewrite the ACL file and have the running broker reload it (SIGHUP)."""
        self.acl_file.write_text(acl)
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def client_tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.pki["ca"]))
