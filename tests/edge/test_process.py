"""The daemon as a real subprocess: sd_notify on a real datagram socket, signals, kill -9."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.edge.conftest import Env
from tests.util import cnmc_files, free_port, wait_until


def test_notify_ready_watchdog_status_stopping_and_sigterm(env: Env, daemon_process) -> None:
    files = cnmc_files()
    for f in files[:5]:
        (env.inbox / f.name).write_bytes(f.read_bytes())
    d = daemon_process(env, watchdog_usec=400_000)
    ready = d.wait_message("READY=1")
    assert "STATUS=" in ready and "model " in ready
    d.wait_message("WATCHDOG=1", timeout=10)
    wait_until(lambda: len(env.rows()) == 5, 30, what="5 rows")
    wait_until(lambda: (d.receive() or True) and any(
        "STATUS=5 classified" in m for m in d.messages), 15, what="STATUS with 5 classified")
    n_wd = sum("WATCHDOG=1" in m for m in d.messages)
    time.sleep(1.0)
    d.receive()
    assert sum("WATCHDOG=1" in m for m in d.messages) > n_wd, "watchdog pings go on while idle"
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.wait(20) == 0
    assert time.monotonic() - t0 < 10
    d.receive()
    assert any("STOPPING=1" in m for m in d.messages)
    log = d.log()
    assert "Traceback" not in log
    assert 'device MYRIAD not used: Device with "MYRIAD" name is not registered' in log
    assert "compiled on CPU" in log


def test_abstract_notify_socket_and_sighup_reload(env: Env, daemon_process) -> None:
    d = daemon_process(env, abstract=True)
    d.wait_message("READY=1")
    d.signal(signal.SIGHUP)
    wait_until(lambda: "model reloaded" in d.log(), 20, what="reload after SIGHUP")
    env.drop("after-reload.bmp", cnmc_files()[0].read_bytes())
    wait_until(lambda: len(env.rows()) == 1, 20, what="a result after reload")
    d.signal(signal.SIGTERM)
    assert d.wait(20) == 0


def test_no_watchdog_ping_when_pipeline_is_stalled(env: Env, daemon_process, tmp_path) -> None:
    """WATCHDOG=1 stops when work is queued but nothing finishes (stall limit lowered to 1 s,
    a hung inference simulated by an analyzer that blocks), so systemd restarts the daemon."""
    plugin = tmp_path / "plugin"
    plugin.mkdir()
    (plugin / "sitecustomize.py").write_text(
        "import time, edge.daemon, edge.pipeline\n"
        "edge.daemon.STALL_SECONDS = 1.0\n"
        "_orig = edge.pipeline.whole_image\n"
        "def hang(image, clf):\n"
        "    time.sleep(30)\n"
        "    return _orig(image, clf)\n"
        "edge.daemon.whole_image = hang\n"
    )
    os.environ["PYTHONPATH"] = str(plugin)
    try:
        d = daemon_process(env, watchdog_usec=400_000)
    finally:
        del os.environ["PYTHONPATH"]
    d.wait_message("READY=1")
    d.wait_message("WATCHDOG=1", timeout=10)
    env.drop("hang.bmp", cnmc_files()[0].read_bytes())
    time.sleep(2.5)  # the claim, then > STALL_SECONDS without progress
    d.receive()
    d.messages.clear()
    time.sleep(1.5)
    d.receive()
    assert not any("WATCHDOG=1" in m for m in d.messages), d.messages
    assert d.proc.poll() is None, "the daemon itself is still running; only progress stopped"


def test_journald_log_format(env: Env, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    p = subprocess.run(
        [sys.executable, "-m", "edge", "classify", "--config", str(env.write()),
         "--set", "agent.log_level=\"DEBUG\"", str(cnmc_files()[0])],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        env=dict(os.environ, JOURNAL_STREAM="8:1234"))
    lines = [ln for ln in p.stderr.splitlines() if ln]
    assert lines and all(ln.startswith("<") for ln in lines), p.stderr
    assert any(ln.startswith("<6>edge.inference: model ") for ln in lines)
    p = subprocess.run(
        [sys.executable, "-m", "edge", "classify", "--config", str(env.write()),
         "--set", "agent.log_level=\"DEBUG\"", str(cnmc_files()[0])],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"})
    assert any(ln[:4].isdigit() and " INFO edge.inference: model " in ln
               for ln in p.stderr.splitlines()), p.stderr


@pytest.mark.slow
def test_kill_9_mid_batch_then_restart_gives_exactly_one_outcome(env: Env,
                                                                daemon_process) -> None:
    """SIGKILL at three different moments of a 240-file batch (with bad files mixed in),
    restart each time; every input ends with exactly one journal row and one file."""
    files = cnmc_files()
    names = []
    for i in range(240):
        src = files[i % len(files)]
        name = f"{i:03d}_{src.name}"
        data = src.read_bytes() if i % 37 else b"broken" * 10  # some quarantined
        (env.inbox / name).write_bytes(data)
        names.append(name)
    kills = leftovers = 0
    for at in (20, 90, 170):
        d = daemon_process(env, "sources.folder.settle_seconds=0")
        wait_until(lambda at=at: len(env.rows()) >= at, 60, interval=0.005,
                   what=f"{at} rows before kill")
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(10)
        kills += 1
        leftovers += len(list((env.data / "processing").iterdir()))
        assert len(env.rows()) < len(names), "the kill must land mid-batch"
    d = daemon_process(env, "sources.folder.settle_seconds=0")
    d.wait_message("READY=1")
    wait_until(lambda: len(env.rows()) >= len(names), 90, what="all rows after restart")
    wait_until(lambda: not list((env.data / "processing").iterdir()), 20,
               what="processing/ empty")
    d.signal(signal.SIGTERM)
    assert d.wait(20) == 0
    rows = env.rows()
    counts = Counter(r["name"] for r in rows)
    assert sorted(counts) == sorted(names)
    assert max(counts.values()) == 1, [n for n, c in counts.items() if c > 1]
    assert len({r["id"] for r in rows}) == len(rows)
    archived = [p.name.split("__", 1)[1] for p in (env.data / "archive").rglob("*") if p.is_file()]
    quarantined = [p.name.split("__", 1)[1] for p in (env.data / "quarantine").iterdir()
                   if not p.name.endswith(".reason.json")]
    assert sorted(archived + quarantined) == sorted(names)
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(quarantined) == len([n for i, n in enumerate(names) if i % 37 == 0])
    assert len(ok) == len(archived)
    assert list(env.inbox.iterdir()) == []
    con_counts = json.loads(json.dumps(Counter(r["status"] for r in rows)))
    assert con_counts["ok"] + con_counts["quarantined"] == len(names)
    assert kills == 3
    assert leftovers > 0, "the kills must leave claimed inputs for crash recovery"


def test_ready_only_after_http_is_up(env: Env, daemon_process) -> None:
    """With the HTTP component present, READY=1 means /healthz already answers."""
    pytest.importorskip("edge.web.server")
    port = free_port()
    d = daemon_process(env, "server.enabled=true", f"server.port={port}")
    d.wait_message("READY=1")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
        assert r.status in (200, 503)
    d.signal(signal.SIGTERM)
    assert d.wait(20) == 0


def test_hup_and_ctrl_c_while_starting(env: Env, daemon_process) -> None:
    """Before READY: SIGHUP must not kill it, Ctrl-C stops it cleanly once started."""
    d = daemon_process(env)
    wait_until(lambda: "starting" in d.log(), 30, what="the starting line")
    d.signal(signal.SIGHUP)
    d.signal(signal.SIGINT)
    assert d.wait(30) == 0, d.log()
    assert "Traceback" not in d.log() and "stopped" in d.log()


def test_sigterm_mid_batch_finishes_in_flight_and_loses_nothing(env: Env,
                                                               daemon_process) -> None:
    files = cnmc_files()
    names = [f"{i:03d}_{files[i % 71].name}" for i in range(150)]
    for i, name in enumerate(names):
        (env.inbox / name).write_bytes(files[i % 71].read_bytes())
    d = daemon_process(env, "sources.folder.settle_seconds=0")
    wait_until(lambda: len(env.rows()) >= 10, 60, interval=0.005, what="10 rows")
    d.signal(signal.SIGTERM)
    assert d.wait(20) == 0
    assert list((env.data / "processing").iterdir()) == [], "in-flight inputs were finished"
    done = {r["name"] for r in env.rows()}
    waiting = {p.name for p in env.inbox.iterdir()}
    assert done.isdisjoint(waiting) and done | waiting == set(names)
    assert "stopped" in d.log()
