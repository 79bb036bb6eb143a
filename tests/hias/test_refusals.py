"""What the edge must not publish or run, against a real Mosquitto: results the broker's ACL
refuses, quarantined inputs, retained and malformed commands."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from edge.hias import outbox as outbox_module
from tests.hias.edge_setup import Edge, make_config, make_result
from tests.hias.listener import HiasListener, send_command
from tests.util import wait_until

BASE = "Lab1/Agents/Haematology/pi-test"
COMMANDS = f"{BASE}/Commands"


def _acl(classification: bool) -> str:
    """HIAS-like ACL: the listener reads everything; the edge only its own channels."""
    channels = ["Status", "Life", "Notifications"] + (["Classification"] if classification else [])
    return "\n".join(["user hias", "topic readwrite #", "user edge",
                      f"topic read {COMMANDS}",
                      *(f"topic write {BASE}/{c}" for c in channels)]) + "\n"


def _hias(edge: Edge):
    return next(c for c in edge.hias.health() if c.name == "hias")


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> list:
    return [r for r in caplog.records if text in r.getMessage()]


def test_results_refused_by_the_acl_stay_queued_and_are_retried_with_backoff(
        make_broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge.hias")
    monkeypatch.setattr(outbox_module, "REFUSED_RETRY_MIN", 0.3)
    monkeypatch.setattr(outbox_module, "REFUSED_RETRY_MAX", 1.2)
    broker = make_broker(acl=_acl(classification=False))
    broker.start()
    listener = HiasListener(broker).start()
    edge = Edge(make_config(broker, tmp_path / "edge")).start()   # MQTT 5 by default
    try:
        assert edge.wait_state("connected")
        ids = edge.record(1)
        wait_until(lambda: edge.hias.status()["refused"] >= 1, what="the refusing PUBACK")
        t1 = time.monotonic()
        ids += edge.record(1)            # held back while the broker refuses results
        # One probe at a time, after 0.3, 0.6 and 1.2 s: a fixed 0.3 s would take 0.9 s.
        wait_until(lambda: edge.hias.status()["refused"] >= 4, what="three refused probes")
        assert time.monotonic() - t1 >= 1.6
        check = _hias(edge)
        assert check.state == "fail"
        assert check.summary.startswith(
            f"broker refused to accept results on {BASE}/Classification: Not authorized "
            "(check HIAS's ACL for this entity)"), check.summary
        status = edge.hias.status()
        assert status["delivered"] == 0 and edge.depth() == 2
        assert status["state"] == "connected" and status["last_error"] == check.summary.split(";")[0]
        assert len(_logged(caplog, "broker refused to accept results")) == 1
        assert listener.result_ids() == []

        broker.set_acl(_acl(classification=True))    # the operator fixes HIAS's ACL
        wait_until(lambda: edge.depth() == 0, what="the held results to be delivered")
        assert listener.wait_for(lambda: sorted(listener.result_ids()) == sorted(ids))
        assert _hias(edge).state == "ok"
        assert len(_logged(caplog, "accepts results on")) == 1
        assert listener.errors == []
    finally:
        edge.close()
        listener.stop()


def test_with_mqtt_3_1_1_an_acl_refusal_is_invisible(make_broker, tmp_path: Path) -> None:
    """Why MQTT 5 is the default (docs/hias.md): a 3.1.1 PUBACK cannot say no."""
    broker = make_broker(acl=_acl(classification=False))
    broker.start()
    edge = Edge(make_config(broker, tmp_path / "edge", protocol="3.1.1")).start()
    try:
        assert edge.wait_state("connected")
        edge.record(1)
        wait_until(lambda: edge.depth() == 0, what="the (dropped) result to be acknowledged")
        assert edge.hias.status()["refused"] == 0
    finally:
        edge.close()


def test_quarantined_results_are_not_published(broker, listener, tmp_path: Path) -> None:
    edge = Edge(make_config(broker, tmp_path / "edge")).start()
    try:
        assert edge.wait_state("connected")
        bad = dict(make_result(0), status="quarantined", reason="not an image", label=None,
                   positive=None, probability=None)
        assert edge.journal.record(bad)
        edge.hias.on_result(bad)
        ok = edge.record(1)
        wait_until(lambda: ok[0] in listener.result_ids(), what="the classified result")
        assert listener.result_ids() == ok     # same connection, QoS 1: bad would be first
        wait_until(lambda: edge.depth() == 0, what="the PUBACK")
    finally:
        edge.close()


def test_retained_command_is_refused_on_every_connect(
        broker, listener, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge.hias")
    send_command(broker, COMMANDS, b'{"Command": "reload", "Id": "r1"}', retain=True)
    edge = Edge(make_config(broker, tmp_path / "edge")).start()
    try:
        assert edge.wait_state("connected")
        wait_until(lambda: len(listener.of("Notifications")) == 1, what="the first answer")
        edge.hias._client.socket().close()    # connection lost: the broker replays it
        wait_until(lambda: edge.hias.status()["connects"] == 2, what="the reconnect")
        wait_until(lambda: len(listener.of("Notifications")) == 2, what="the second answer")
        for note in listener.of("Notifications"):
            body = note.body
            assert (body["State"], body["Command"], body["Id"]) == ("Error", "reload", "r1")
            assert "retained commands are ignored" in body["Message"]
        assert edge.daemon.reloads == 0
        assert edge.hias.status()["commands_refused"] == 2
        assert len(_logged(caplog, "refused command")) == 1
    finally:
        edge.close()


def test_malformed_json_commands_are_answered(
        broker, listener, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge.hias")
    edge = Edge(make_config(broker, tmp_path / "edge")).start()
    try:
        assert edge.wait_state("connected")
        wait_until(lambda: listener.of("Status"), what="ONLINE (sent after our SUBSCRIBE)")
        # An integer past Python's 4300-digit limit (ValueError) and JSON nested too deeply.
        send_command(broker, COMMANDS, b'{"Command": "reload", "Id": ' + b"9" * 5000 + b"}")
        send_command(broker, COMMANDS, b"[" * 5000)
        wait_until(lambda: len(listener.of("Notifications")) == 2, what="both answers")
        messages = [n.body["Message"] for n in listener.of("Notifications")]
        assert all(n.body["State"] == "Error" for n in listener.of("Notifications"))
        assert any("not valid UTF-8 JSON" in m for m in messages), messages
        assert any("nested too deeply" in m for m in messages), messages
        assert edge.hias.status()["commands_refused"] == 2 and edge.daemon.reloads == 0
        assert not [r for r in caplog.records if r.exc_info], "no traceback for a bad command"
    finally:
        edge.close()
