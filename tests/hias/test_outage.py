"""Store-and-forward against a real broker: outages, restarts, kill -9, backlog rate."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List

from tests.conftest import REPO_ROOT
from tests.hias.edge_setup import Edge, make_config
from tests.hias.listener import HiasListener


def test_broker_absent_at_start_then_started(primed_broker, tmp_path: Path) -> None:
    broker = primed_broker
    edge = Edge(make_config(broker, tmp_path / "edge")).start()
    try:
        ids = edge.record(5)
        assert edge.wait_state("error")
        check = next(c for c in edge.hias.health() if c.name == "hias")
        assert check.state == "warn" and "connection refused" in check.summary
        outbox = next(c for c in edge.hias.health() if c.name == "hias-outbox")
        assert outbox.detail["depth"] == 5 and "5 result(s) waiting" in outbox.summary
        assert edge.hias.status()["outbox_oldest_age_s"] >= 0
        broker.start()
        assert edge.wait_state("connected", timeout=10)
        listener = HiasListener(broker).start()
        try:
            assert listener.wait_for(lambda: sorted(listener.result_ids()) == sorted(ids))
            assert listener.wait_for(lambda: edge.depth() == 0)
            assert listener.errors == []
        finally:
            listener.stop()
    finally:
        edge.close()


def test_broker_stopped_mid_batch_and_restarted(broker, listener, tmp_path: Path) -> None:
    edge = Edge(make_config(broker, tmp_path / "edge")).start()
    recorded: List[str] = []
    try:
        assert edge.wait_state("connected")

        def produce() -> None:
            for _ in range(150):
                recorded.extend(edge.record(1))
                time.sleep(0.005)

        producer = threading.Thread(target=produce)
        producer.start()
        assert listener.wait_for(lambda: len(listener.result_ids()) >= 30)
        broker.stop()                    # mid batch: some in flight, more being journaled
        during = len(recorded)
        assert during < 150, "the outage must start in the middle of the batch"
        time.sleep(0.5)
        broker.start()
        producer.join(30)
        assert not producer.is_alive()
        assert len(recorded) > during, "results must keep being journaled during the outage"
        assert listener.wait_for(lambda: set(listener.result_ids()) >= set(recorded), 30), \
            f"missing: {len(set(recorded) - set(listener.result_ids()))}"
        assert listener.wait_for(lambda: edge.depth() == 0)
        assert set(listener.result_ids()) == set(recorded)   # nothing foreign, none missing
        assert edge.hias.status()["connects"] >= 2
        assert listener.errors == []
    finally:
        edge.close()


def test_backlog_drains_at_rate_while_new_results_flow(primed_broker, tmp_path: Path) -> None:
    broker = primed_broker
    edge = Edge(make_config(broker, tmp_path / "edge", resend_rate=20)).start()
    try:
        backlog = edge.record(60)            # broker down: all of it is backlog
        assert edge.wait_state("error")
        broker.start()
        listener = HiasListener(broker).start()
        try:
            assert edge.wait_state("connected", timeout=10)
            t0 = time.monotonic()
            time.sleep(0.5)
            fresh = edge.record(1)[0]
            assert listener.wait_for(lambda: len(listener.result_ids()) == 61, 20)
            drained = time.monotonic() - t0
            order = listener.result_ids()
            assert order.index(fresh) < order.index(backlog[-1]), "new result waited for backlog"
            assert [i for i in order if i != fresh] == backlog, "backlog oldest first"
            # 20 at once (one second's tokens), then 40 more at 20/s: at least ~2 s.
            assert drained >= 1.6, f"backlog drained in {drained:.2f} s, above resend_rate"
        finally:
            listener.stop()
    finally:
        edge.close()


def test_rows_marked_delivered_only_on_puback(broker, listener, tmp_path: Path) -> None:
    """A frozen broker (SIGSTOP) takes the bytes but sends no PUBACK: nothing is marked."""
    edge = Edge(make_config(broker, tmp_path / "edge", keepalive=60)).start()
    try:
        assert edge.wait_state("connected")
        broker.proc.send_signal(signal.SIGSTOP)
        try:
            ids = edge.record(4)
            assert listener.wait_for(lambda: edge.hias.status()["in_flight"] == 4, 5)
            time.sleep(0.3)
            assert edge.depth() == 4 and edge.hias.status()["delivered"] == 0
        finally:
            broker.proc.send_signal(signal.SIGCONT)
        assert listener.wait_for(lambda: edge.depth() == 0)
        assert listener.wait_for(lambda: listener.result_ids() == ids)
        assert edge.hias.status()["in_flight"] == 0
    finally:
        edge.close()


class EdgeProcess:
    """tests/hias/edge_proc.py in a subprocess, lines read with a bounded wait."""

    def __init__(self, cfg, tmp_path: Path, want: str) -> None:
        conf = tmp_path / "edge-config.json"
        conf.write_text(cfg.model_dump_json())
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.hias.edge_proc", str(conf), want], cwd=REPO_ROOT,
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def line(self, timeout: float = 30.0) -> str:
        return self.lines.get(timeout=timeout)

    def ask(self, text: str) -> str:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self.line()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def test_killed_process_last_will_then_undelivered_results_sent_after_restart(
        broker, listener, tmp_path: Path) -> None:
    cfg = make_config(broker, tmp_path / "edge")
    p = EdgeProcess(cfg, tmp_path, "connected")
    try:
        assert p.line() == "READY connected"
        assert listener.wait_for(lambda: [s.body for s in listener.of("Status")] == ["ONLINE"])
        first = json.loads(p.ask("record 3"))
        assert listener.wait_for(lambda: listener.result_ids() == first)
        p.kill()                                   # kill -9 while connected
        assert listener.wait_for(lambda: [s.body for s in listener.of("Status")] ==
                                 ["ONLINE", "OFFLINE"]), "Last Will not published"
    finally:
        p.kill()
    # Second life: the broker goes away, results pile up, the process is killed again.
    p = EdgeProcess(cfg, tmp_path, "connected")
    try:
        assert p.line() == "READY connected"
        broker.stop()
        pending = json.loads(p.ask("record 7"))
        p.kill()
    finally:
        p.kill()
    broker.start()
    assert listener.wait_for(lambda: listener.connected.is_set(), 10)
    edge = Edge(cfg)                               # the restarted daemon, same journal
    try:
        # All 7 survived the kill undelivered (plus, perhaps, some of `first` whose PUBACK
        # the first life never got to record).
        waiting = {r["id"] for r in edge.journal.outbox_pending(100)}
        assert set(pending) <= waiting <= set(first) | set(pending), waiting
        edge.start()
        assert listener.wait_for(lambda: set(pending) <= set(listener.result_ids()), 20)
        assert listener.wait_for(lambda: edge.depth() == 0)
        assert set(listener.result_ids()) == set(first) | set(pending)   # ids kept on resend
        assert listener.errors == []
    finally:
        edge.close()
