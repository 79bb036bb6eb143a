"""Start an installed daemon the way its systemd unit would, without systemd.

systemd cannot run here (it is not PID 1), so this plays its part: ExecStart, Environment= and
WorkingDirectory= are read from the installed unit; LoadCredential= is emulated by copying the
credential files into a private $CREDENTIALS_DIRECTORY; WatchdogSec= becomes WATCHDOG_USEC and
WATCHDOG_PID; NOTIFY_SOCKET is an AF_UNIX datagram socket bound here with SO_PASSCRED, so the
sender's pid can be checked as NotifyAccess=main does. Not covered (needs a real systemd): the
sandboxing itself (User=, ProtectSystem=, DeviceAllow=, SystemCallFilter=).
"""

from __future__ import annotations

import shlex
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from tests.deploy.staging import unit_values

SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def unit_environment(text: str) -> Dict[str, str]:
    env: Dict[str, str] = {}
    for value in unit_values(text, "Environment"):
        for item in shlex.split(value):
            k, _, v = item.partition("=")
            env[k] = v
    return env


class NotifySocket:
    """What systemd listens on: datagrams of `KEY=value` lines, with the sender's credentials."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(path))
        self.messages: List[Tuple[int, Dict[str, str]]] = []

    def wait_for(self, key: str, value: str, deadline: float,
                 proc: subprocess.Popen) -> Optional[int]:
        """Sender pid of the first message with KEY=value; None at the deadline or if proc died."""
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


def start_like_unit(root: Path, tmp_path: Path
                    ) -> Tuple[subprocess.Popen, NotifySocket, Path]:
    """Run the staged unit's ExecStart; returns the process, the notify socket, the log file."""
    unit_text = (root / "etc/systemd/system/all-edge.service").read_text()
    cred_dir = tmp_path / "credentials"
    cred_dir.mkdir(mode=0o700)
    for spec in unit_values(unit_text, "LoadCredential"):  # ID:PATH -> $CREDENTIALS_DIRECTORY/ID
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
    return proc, notify, log_path


def stop(proc: subprocess.Popen, notify: NotifySocket) -> None:
    """Make sure nothing is left running (tests call this in `finally`)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)
    notify.close()
