"""The real daemon (edge.daemon.Daemon, real OpenVINO model, real C-NMC cells) publishing to HIAS.

Images: C-NMC 2019 sample cells (Gupta & Gupta 2019, TCIA, doi 10.7937/tcia.2019.dc64i46r,
CC BY 3.0); see shared/data/cnmc-sample/README.md.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from edge.config import Config
from tests.conftest import REPO_ROOT
from tests.hias.edge_setup import make_config
from tests.hias.listener import HiasListener
from tests.util import cnmc_files


@pytest.fixture(scope="module")
def model_xml(default_model_xml: Path) -> Path:
    return default_model_xml


def cells(n: int) -> List[Path]:
    files = cnmc_files()
    return files[:: max(1, len(files) // n)][:n]


def daemon_settings(broker, data: Path, model_xml: Path, inbox: Path) -> Dict[str, Any]:
    hias = make_config(broker, data / "hias-secrets", entity="pi-daemon",
                       model_name="ALL paper CNN").hias
    return {
        "model": {"xml": str(model_xml), "devices": ["CPU"]},
        "sources": {"folder": {"enabled": True, "path": str(inbox), "settle_seconds": 0.1,
                               "poll_interval": 0.2}},
        "server": {"enabled": False},
        "storage": {"data_dir": str(data), "min_free_mb": 0},
        "hias": json.loads(hias.model_dump_json()),
    }


def test_daemon_results_reach_hias(broker, listener, tmp_path: Path, model_xml: Path) -> None:
    from edge.daemon import Daemon

    settings = daemon_settings(broker, tmp_path / "data", model_xml, tmp_path / "inbox")
    settings["sources"]["folder"]["enabled"] = False
    daemon = Daemon(Config.model_validate(settings))
    daemon.start()
    try:
        hias = daemon.component("hias")
        assert listener.wait_for(lambda: hias.status()["state"] == "connected")
        results = [daemon.submit_bytes(p.read_bytes(), source="api", name=p.name)
                   for p in cells(4)]
        assert all(r["status"] == "ok" for r in results)
        assert listener.wait_for(lambda: len(listener.result_ids("pi-daemon")) == 4)
        got = {m.body["id"]: m.body for m in listener.of("Classification")}
        for r in results:
            body = got[r["id"]]
            assert body["probability"] == r["probability"] and body["label"] == r["label"]
            assert body["Model"] == "ALL paper CNN" and body["sha256"] == r["sha256"]
            assert body["State"] == ("Positive" if r["positive"] else "Negative")
        assert listener.wait_for(lambda: daemon.status()["components"]["hias"]
                                 ["outbox_depth"] == 0)
        checks = {c.name: c.state for c in daemon.health()}
        assert checks["hias"] == "ok" and checks["hias-outbox"] == "ok"
    finally:
        daemon.shutdown()
    assert listener.wait_for(lambda: [s.body for s in listener.of("Status")] ==
                             ["ONLINE", "OFFLINE"])
    assert listener.errors == []


def journaled_ids(data: Path) -> List[str]:
    db = data / "journal.sqlite3"
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return [r[0] for r in con.execute("SELECT id FROM results WHERE status='ok' ORDER BY id")]
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


class DaemonRun:
    """`python -m edge run --config FILE` in a subprocess, output to a log file."""

    def __init__(self, config_file: Path, log: Path) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "JOURNAL_STREAM"):
            env.pop(k, None)
        self.log = log
        self._out = open(log, "ab")  # noqa: SIM115 (closed in close)
        self.proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config",
                                      str(config_file)], cwd=REPO_ROOT, env=env,
                                     stdout=self._out, stderr=subprocess.STDOUT)

    def close(self, sig: int = signal.SIGKILL) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self._out.close()
        return code


def test_daemon_killed_with_undelivered_results_delivers_after_restart(
        primed_broker, tmp_path: Path, model_xml: Path) -> None:
    broker = primed_broker                           # HIAS unreachable while images arrive
    data, inbox = tmp_path / "data", tmp_path / "inbox"
    inbox.mkdir()
    conf = tmp_path / "confs.json"
    conf.write_text(json.dumps(daemon_settings(broker, data, model_xml, inbox)))
    first = DaemonRun(conf, tmp_path / "daemon1.log")
    try:
        for p in cells(5):
            (inbox / p.name).write_bytes(p.read_bytes())
        end = time.monotonic() + 60
        while len(journaled_ids(data)) < 5 and time.monotonic() < end:
            assert first.proc.poll() is None, first.log.read_text()
            time.sleep(0.1)
        ids = journaled_ids(data)
        assert len(ids) == 5, first.log.read_text()
    finally:
        first.close(signal.SIGKILL)                  # kill -9 with 5 results undelivered
    assert "connection refused" in first.log.read_text()
    broker.start()
    listener = HiasListener(broker).start()
    second = DaemonRun(conf, tmp_path / "daemon2.log")
    try:
        assert listener.wait_for(lambda: set(listener.result_ids("pi-daemon")) == set(ids), 60), \
            second.log.read_text()
        assert listener.result_ids("pi-daemon") == ids       # oldest first, ids kept
    finally:
        code = second.close(signal.SIGTERM)
        listener.stop()
    assert code == 0, second.log.read_text()
    con = sqlite3.connect(f"file:{data / 'journal.sqlite3'}?mode=ro", uri=True)
    assert con.execute("SELECT COUNT(*) FROM outbox WHERE delivered IS NULL").fetchone()[0] == 0
    con.close()
