"""The installed daemon, started exactly as the unit starts it, reaches READY=1.

systemd cannot run here (it is not PID 1), so the test plays its part: ExecStart, Environment=
and WorkingDirectory= are read from the installed unit, LoadCredential= is emulated by copying
the credential files into a private $CREDENTIALS_DIRECTORY, WatchdogSec= becomes WATCHDOG_USEC
and WATCHDOG_PID, and NOTIFY_SOCKET is an AF_UNIX datagram socket bound here with SO_PASSCRED,
so the sender's pid is checked as NotifyAccess=main would. Not covered (needs a real systemd):
the sandboxing (User=, ProtectSystem=, DeviceAllow=, SystemCallFilter=) itself.
"""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from tests.deploy.staging import run_install, unit_values

pytestmark = pytest.mark.slow

SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TOKEN = "deploy-test-token-5f2c"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unit_environment(text: str) -> Dict[str, str]:
    env: Dict[str, str] = {}
    for value in unit_values(text, "Environment"):
        for item in shlex.split(value):
            k, _, v = item.partition("=")
            env[k] = v
    return env


class NotifySocket:
    """What systemd listens on: datagrams `KEY=value` lines, with the sender's credentials."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(path))
        self.messages: List[Tuple[int, Dict[str, str]]] = []

    def wait_for(self, key: str, value: str, deadline: float,
                 proc: subprocess.Popen) -> Optional[int]:
        """Sender pid of the first message with KEY=value, or None at the deadline."""
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, min(1.0, deadline - time.monotonic())))
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except socket.timeout:
                if proc.poll() is not None:
                    return None
                continue
            pid = -1
            for level, typ, cdata in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", cdata[:12])[0]
            fields = dict(line.partition("=")[::2] for line in data.decode().splitlines())
            self.messages.append((pid, fields))
            if fields.get(key) == value:
                return pid
        return None

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path, source: Path) -> Path:
    root = tmp_path_factory.mktemp("svc") / "root"
    run_install(root, src=source, wheelhouse=wheelhouse)
    return root


def http(url: str, data: Optional[bytes] = None, token: Optional[str] = None) -> int:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_daemon_started_like_the_unit_reaches_ready(staged: Path, tmp_path: Path,
                                                    cnmc_sample: Path) -> None:
    root = staged
    unit_text = (root / "etc/systemd/system/all-edge.service").read_text()
    # The operator's edits: a free port, and an API token as a systemd credential.
    port = free_port()
    cfg_path = root / "etc/all-edge/confs.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["server"]["port"] = port
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    (root / "etc/all-edge/credentials/api-token").write_text(TOKEN + "\n")

    # LoadCredential=ID:PATH -> $CREDENTIALS_DIRECTORY/ID (read-only copy)
    cred_dir = tmp_path / "credentials"
    cred_dir.mkdir(mode=0o700)
    for spec in unit_values(unit_text, "LoadCredential"):
        cred_id, _, src = spec.partition(":")
        shutil.copyfile(src, cred_dir / cred_id)
        (cred_dir / cred_id).chmod(0o400)

    notify = NotifySocket(tmp_path / "notify.sock")
    (exec_start,) = unit_values(unit_text, "ExecStart")
    (workdir,) = unit_values(unit_text, "WorkingDirectory")
    (watchdog_sec,) = unit_values(unit_text, "WatchdogSec")
    env = {
        "PATH": SYSTEMD_PATH,
        "LANG": "C.UTF-8",
        "NOTIFY_SOCKET": str(notify.path),
        "WATCHDOG_USEC": str(int(watchdog_sec) * 1_000_000),
        "CREDENTIALS_DIRECTORY": str(cred_dir),
        "STATE_DIRECTORY": str(root / "var/lib/all-edge"),
        "LOGS_DIRECTORY": str(root / "var/log/all-edge"),
        "CONFIGURATION_DIRECTORY": str(root / "etc/all-edge"),
        "INVOCATION_ID": "0" * 32,
        **unit_environment(unit_text),
    }
    # systemd sets WATCHDOG_PID to the main pid: the shell exports its own pid, then execs.
    argv = ["/bin/sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"', "sh",
            *shlex.split(exec_start)]
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        pid = notify.wait_for("READY", "1", time.monotonic() + 120, proc)
        assert pid is not None, f"no READY=1; daemon log:\n{log_path.read_text()[-4000:]}"
        assert pid == proc.pid, "READY=1 must come from the main process (NotifyAccess=main)"

        base = f"http://127.0.0.1:{port}"
        assert http(base + "/") == 200
        image = sorted((cnmc_sample).rglob("*.bmp"))[0].read_bytes()
        assert http(base + "/api/v1/classify", data=image) == 401  # the credential is enforced
        assert http(base + "/api/v1/classify", data=image, token=TOKEN) == 200

        # a real C-NMC cell dropped in the installed inbox is processed and archived
        inbox = Path(cfg["sources"]["folder"]["path"])
        shutil.copyfile(sorted(cnmc_sample.rglob("*.bmp"))[1], inbox / "cell.bmp")
        data_dir = Path(cfg["storage"]["data_dir"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list((data_dir / "archive").rglob("*cell.bmp")):
            time.sleep(0.2)
        assert list((data_dir / "archive").rglob("*cell.bmp")), log_path.read_text()[-4000:]

        proc.send_signal(signal.SIGTERM)
        assert notify.wait_for("STOPPING", "1", time.monotonic() + 30, proc) == proc.pid
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        notify.close()
    log_text = log_path.read_text()
    assert TOKEN not in log_text, "the daemon logged a secret"
    assert "Traceback" not in log_text
