"""Fixtures for the daemon core: real model, real files, temp data dirs, subprocess daemons."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from edge.config import load_config
from tests.conftest import DEFAULT_MODEL_XML, REPO_ROOT
from tests.util import wait_until

PY = sys.executable


@pytest.fixture(scope="session")
def model_xml() -> Path:
    """The real default model (trainer's export), never a stand-in."""
    assert DEFAULT_MODEL_XML.is_file(), "models/default/model.xml is missing (make the demo model)"
    return DEFAULT_MODEL_XML


@pytest.fixture
def model_copy(tmp_path: Path, model_xml: Path) -> Path:
    """A private copy of the default model that a test may break (reload tests)."""
    d = tmp_path / "model"
    d.mkdir()
    for suffix in (".xml", ".bin", ".json"):
        shutil.copy2(model_xml.with_suffix(suffix), d / f"model{suffix}")
    return d / "model.xml"


class Env:
    """A temp inbox + data dir and a config file pointing at them."""

    def __init__(self, root: Path, model: Path) -> None:
        self.root = root
        self.inbox = root / "inbox"
        self.data = root / "data"
        self.inbox.mkdir()
        self.settings: Dict[str, Any] = {
            "model": {"xml": str(model), "devices": ["MYRIAD", "CPU"]},
            "sources": {"folder": {"path": str(self.inbox), "settle_seconds": 0.2,
                                   "poll_interval": 0.2}},
            "server": {"enabled": False},
            "storage": {"data_dir": str(self.data), "min_free_mb": 0},
        }
        self.path = root / "config.json"
        self.write()

    def write(self) -> Path:
        self.path.write_text(json.dumps(self.settings, indent=2), encoding="utf-8")
        return self.path

    def config(self, *overrides: str) -> Any:
        return load_config(self.write(), list(overrides))

    def rows(self) -> List[Dict[str, Any]]:
        db = self.data / "journal.sqlite3"
        if not db.exists():
            return []
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute("SELECT * FROM results ORDER BY id")]
        except sqlite3.OperationalError:
            return []
        finally:
            con.close()

    def drop(self, name: str, data: bytes) -> Path:
        """Write under a hidden name, then rename in: how a careful copier delivers a file."""
        tmp = self.inbox / f".drop-{time.monotonic_ns()}.tmp"
        tmp.write_bytes(data)
        dst = self.inbox / name
        os.rename(tmp, dst)
        return dst


@pytest.fixture
def env(tmp_path: Path, model_xml: Path) -> Env:
    return Env(tmp_path, model_xml)


class DaemonProcess:
    """`python -m edge run` as a subprocess with a real NOTIFY_SOCKET datagram socket."""

    def __init__(self, env: Env, *overrides: str, watchdog_usec: Optional[int] = None,
                 abstract: bool = False) -> None:
        self.env = env
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"all-edge-test-{os.getpid()}-{time.monotonic_ns()}"
            self.sock.bind("\0" + name)
            address = "@" + name
        else:
            path = env.root / f"notify-{time.monotonic_ns()}.sock"
            self.sock.bind(str(path))
            address = str(path)
        self.sock.settimeout(0.2)
        self.messages: List[str] = []
        e = dict(os.environ, NOTIFY_SOCKET=address, PYTHONUNBUFFERED="1")
        e.pop("WATCHDOG_USEC", None)
        e.pop("JOURNAL_STREAM", None)
        if watchdog_usec:
            e["WATCHDOG_USEC"] = str(watchdog_usec)
        self.log_path = env.root / f"daemon-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [PY, "-m", "edge", "run", "--config", str(env.write()), *sum(
                (["--set", o] for o in overrides), [])],
            cwd=REPO_ROOT, env=e, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def receive(self) -> None:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except (socket.timeout, BlockingIOError):
                return

    def wait_message(self, key: str, timeout: float = 30.0) -> str:
        """The first datagram with a line starting with `key` (e.g. "READY=1")."""
        def found() -> Optional[str]:
            self.receive()
            for m in self.messages:
                if any(ln.startswith(key) for ln in m.split("\n")):
                    return m
            if self.proc.poll() is not None:
                pytest.fail(f"daemon exited {self.proc.returncode} before {key}:\n{self.log()}")
            return None
        return wait_until(found, timeout, what=key)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            pytest.fail(f"daemon did not exit within {timeout} s:\n{self.log()}")
        return -1

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()
        self.sock.close()


@pytest.fixture
def daemon_process():
    started: List[DaemonProcess] = []

    def start(env: Env, *overrides: str, **kw: Any) -> DaemonProcess:
        d = DaemonProcess(env, *overrides, **kw)
        started.append(d)
        return d

    yield start
    for d in started:
        d.close()
