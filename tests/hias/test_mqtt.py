"""HiasComponent against a real Mosquitto (TLS + password file), checked by a HIAS-style listener."""

from __future__ import annotations

import json
import logging
import subprocess
import time
from pathlib import Path

import pytest

from edge.hias import client as client_module
from tests.hias.broker import USERS
from tests.hias.edge_setup import Edge, make_config
from tests.hias.listener import LIFE_KEYS, send_command
from tests.util import wait_until


def _health(edge: Edge, name: str = "hias"):
    return next(c for c in edge.hias.health() if c.name == name)


def _retrying(edge: Edge) -> str:
    summary = _health(edge).summary
    return summary if "; retrying in" in summary else ""


def test_online_life_classification_offline(broker, listener, tmp_path: Path) -> None:
    edge = Edge(make_config(broker, tmp_path / "edge", latitude=45.46, longitude=9.19)).start()
    try:
        assert edge.wait_state("connected")
        ids = edge.record(3)
        assert listener.wait_for(lambda: len(listener.result_ids()) == 3)
        assert listener.wait_for(lambda: listener.of("Life"))
        assert "as pi-test (" in broker.log.read_text()   # MQTT client id = entity
        assert listener.wait_for(lambda: edge.depth() == 0), "PUBACKs must mark rows delivered"
        assert listener.result_ids() == ids
        status = listener.of("Status")
        assert [s.body for s in status] == ["ONLINE"]
        assert (status[0].entity_type, status[0].entity) == ("Agent", "pi-test")
        life = listener.of("Life")[0].body
        assert set(life) == set(LIFE_KEYS) and life["Latitude"] == 45.46
        assert 0 < life["Memory"] <= 100 and 0 < life["Diskspace"] <= 100
        first = listener.of("Classification")[0].body
        assert first["Model"] == "ALL Classifier" and first["State"] == "Positive"
        assert first["probability"] == 0.9 and first["model_synthetic"] is True
        assert _health(edge).state == "ok" and "connected" in _health(edge).summary
        assert _health(edge, "hias-outbox").state == "ok"
        # the counters are bumped just after the publish and the PUBACK: they may trail the listener
        assert listener.wait_for(lambda: edge.hias.status()["delivered"] == 3
                                 and edge.hias.status()["life"] >= 1), edge.hias.status()
        st = edge.hias.status()
        assert st["state"] == "connected" and st["outbox_depth"] == 0
        assert st["topic"] == "Lab1/Agents/Haematology/pi-test"
    finally:
        edge.close()
    assert listener.wait_for(lambda: [s.body for s in listener.of("Status")] ==
                             ["ONLINE", "OFFLINE"])
    assert listener.errors == []
    assert edge.hias.status()["state"] == "stopped"


@pytest.mark.slow
def test_life_first_after_delay_then_every_interval(broker, listener, tmp_path: Path) -> None:
    edge = Edge(make_config(broker, tmp_path / "edge", life_first_delay=1.0,
                            life_interval=5)).start()
    try:
        assert edge.wait_state("connected")
        t0 = time.monotonic()
        assert listener.wait_for(lambda: len(listener.of("Life")) == 1, 3)
        assert listener.of("Life")[0].at - t0 >= 0.8
        assert listener.wait_for(lambda: len(listener.of("Life")) == 2, 7)
        gap = listener.of("Life")[1].at - listener.of("Life")[0].at
        assert 4.5 <= gap <= 8.0, gap
        assert all(set(m.body) == set(LIFE_KEYS) for m in listener.of("Life"))
    finally:
        edge.close()


def test_wrong_password_fails_readably_without_crash_loop(
        broker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge.hias")
    edge = Edge(make_config(broker, tmp_path / "edge", password="not-the-password")).start()
    try:
        ids = edge.record(2)
        assert edge.wait_state("error")
        time.sleep(1.0)          # several retries at 0.1..0.5 s backoff
        check = _health(edge)
        assert check.state == "fail"
        assert "refused the login of edge" in check.summary and "password" in check.summary
        lines = [r.getMessage() for r in caplog.records if "refused the login" in r.getMessage()]
        assert len(lines) == 1, "one log line per state change, not per retry"
        assert edge.depth() == len(ids)       # kept for later, not lost
        assert edge.hias._thread.is_alive()
    finally:
        edge.close()


@pytest.mark.parametrize("where", ["systemd-credential", "environment",
                                   "environment-under-blank-credential"])
def test_password_from_credential_or_environment(
        broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    cfg = make_config(broker, tmp_path / "edge")
    cfg.hias.password_file = None
    creds = tmp_path / "credentials"
    creds.mkdir()
    if where == "systemd-credential":
        (creds / "hias-password").write_text(USERS["edge"] + "\n")
    else:
        monkeypatch.setenv("HIAS_PASSWORD", USERS["edge"])
    if where == "environment-under-blank-credential":   # the unit's SetCredential= fallback
        (creds / "hias-password").write_text(" ")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    edge = Edge(cfg).start()
    try:
        assert edge.wait_state("connected"), edge.hias.status()["last_error"]
    finally:
        edge.close()


def _check_after_failing(cfg):
    """The `hias` health check once the client has failed to connect."""
    edge = Edge(cfg).start()
    try:
        assert edge.wait_state("error")
        return _health(edge)
    finally:
        edge.close()


def test_wrong_ca_is_a_tls_failure(broker, tmp_path: Path) -> None:
    check = _check_after_failing(make_config(broker, tmp_path / "edge", ca=broker.pki["other_ca"]))
    assert check.state == "fail" and check.summary.startswith("TLS: certificate of")
    assert "not trusted" in check.summary and "hias.tls.ca_file" in check.summary


def test_unreadable_password_file_and_bad_ca_file_do_not_raise(broker, tmp_path: Path) -> None:
    cfg = make_config(broker, tmp_path / "a")
    cfg.hias.password_file = tmp_path / "missing-password"
    edge = Edge(cfg).start()
    assert _health(edge).state == "fail" and "hias.password_file" in _health(edge).summary
    edge.close()
    bad_ca = tmp_path / "garbage.pem"
    bad_ca.write_text("not a certificate")
    edge = Edge(make_config(broker, tmp_path / "b", ca=bad_ca)).start()
    assert _health(edge).state == "fail" and "hias.tls" in _health(edge).summary
    edge.close()


def test_password_file_not_utf8_is_a_readable_failure(broker, tmp_path: Path) -> None:
    cfg = make_config(broker, tmp_path / "edge")
    cfg.hias.password_file.write_bytes(b"\xff\xfeedge-secret-pw\n")   # UTF-16 from an editor
    edge = Edge(cfg).start()                                           # must not raise
    try:
        check = _health(edge)
        assert check.state == "fail"
        assert check.summary == f"cannot read hias.password_file {cfg.hias.password_file}: " \
                                "not UTF-8 text"
    finally:
        edge.close()


def test_host_name_not_in_the_certificate_is_a_tls_failure(make_broker, tmp_path: Path) -> None:
    broker = make_broker(wrong_name=True)   # certificate for hias.example.org, not localhost
    broker.start()
    check = _check_after_failing(make_config(broker, tmp_path / "edge"))
    assert check.state == "fail" and check.summary.startswith("TLS: certificate of localhost")
    assert "mismatch" in check.summary and "host name" in check.summary


def test_client_certificate_when_the_broker_requires_one(make_broker, tmp_path: Path) -> None:
    broker = make_broker(require_certificate=True)
    broker.start()
    pki = broker.pki
    edge = Edge(make_config(broker, tmp_path / "with", tls={
        "certfile": str(pki["client_cert"]), "keyfile": str(pki["client_key"])})).start()
    try:
        assert edge.wait_state("connected"), edge.hias.status()["last_error"]
    finally:
        edge.close()
    edge = Edge(make_config(broker, tmp_path / "without")).start()
    try:
        assert edge.wait_state("error")
        check = _health(edge)
        assert check.state == "fail" and "closed the connection before the MQTT login" in \
            check.summary and "require a client certificate" in check.summary, check
    finally:
        edge.close()


def test_encrypted_client_key_is_a_clear_error_not_a_prompt(pki, tmp_path: Path) -> None:
    encrypted = tmp_path / "client-encrypted.key"
    subprocess.run(["openssl", "pkey", "-in", str(pki["client_key"]), "-aes256", "-passout", "pass:secret",
                    "-out", str(encrypted)], check=True, capture_output=True)
    edge = Edge(make_config(None, tmp_path / "edge", ca=pki["ca"], tls={
        "certfile": str(pki["client_cert"]), "keyfile": str(encrypted)})).start()
    try:
        check = _health(edge)
        assert check.state == "fail" and "hias.tls.keyfile is encrypted" in check.summary, check
    finally:
        edge.close()


def test_dns_failure_is_reported(tmp_path: Path, pki) -> None:
    cfg = make_config(None, tmp_path / "edge", ca=pki["ca"], host="no-such-host.invalid")
    edge = Edge(cfg).start()
    try:
        assert edge.wait_state("error")
        assert _health(edge).summary.startswith("DNS: cannot resolve 'no-such-host.invalid'")
    finally:
        edge.close()


def test_plain_tcp_only_when_configured(make_broker, tmp_path: Path) -> None:
    broker = make_broker(plain=True)
    broker.start()
    edge = Edge(make_config(broker, tmp_path / "edge", port=broker.plain_port,
                            tls={"enabled": False})).start()
    try:
        assert edge.wait_state("connected")
        assert "plain TCP" in _health(edge).summary
    finally:
        edge.close()


def test_commands_are_run_and_answered(broker, listener, tmp_path: Path) -> None:
    edge = Edge(make_config(broker, tmp_path / "edge")).start()
    topic = "Lab1/Agents/Haematology/pi-test/Commands"
    try:
        assert edge.wait_state("connected")
        time.sleep(0.2)   # SUBACK
        sent = [b'{"Command": "capture", "Id": "1"}', b'{"Command": "reload", "Id": "2"}',
                b'{"Command": "status", "Id": "3"}', b'{"Command": "explode", "Id": "4"}',
                b"not json at all", b"[]"]
        for payload in sent:
            send_command(broker, topic, payload)
        assert listener.wait_for(lambda: len(listener.of("Notifications")) == len(sent))
        notes = {n.body["Id"]: n.body for n in listener.of("Notifications")}
        assert notes["1"]["State"] == "OK" and notes["1"]["Message"] == "capture requested"
        assert notes["2"]["State"] == "OK" and notes["2"]["Message"] == "model reloaded"
        assert notes["3"]["State"] == "OK"
        assert notes["4"]["State"] == "Error" and "unknown command 'explode'" in \
            notes["4"]["Message"]
        errors = [n.body["Message"] for n in listener.of("Notifications") if n.body["Id"] is None]
        assert any("not valid UTF-8 JSON" in m for m in errors)
        assert any("must be a JSON object" in m for m in errors)
        assert (edge.daemon.captures, edge.daemon.reloads) == (1, 1)
        assert listener.wait_for(lambda: len(listener.of("Status")) == 2)   # status command
        assert len(listener.of("Life")) >= 1
        assert edge.hias.status()["commands_refused"] == 3
        edge.daemon.camera = False
        send_command(broker, topic, b'{"Command": "capture", "Id": "5"}')
        assert listener.wait_for(lambda: len(listener.of("Notifications")) == len(sent) + 1)
        last = listener.of("Notifications")[-1].body
        assert last["State"] == "Error" and "no camera" in last["Message"]
        assert edge.wait_state("connected")
    finally:
        edge.close()


def test_last_will_is_offline_on_the_status_topic(broker, listener, tmp_path: Path) -> None:
    """A client that dies without DISCONNECT: the broker publishes our Last Will."""
    cfg = make_config(broker, tmp_path / "edge")
    edge = Edge(cfg).start()
    assert edge.wait_state("connected")
    assert listener.wait_for(lambda: len(listener.of("Status")) == 1)
    edge.hias._client.socket().close()     # as if the process died: no DISCONNECT sent
    assert listener.wait_for(lambda: [s.body for s in listener.of("Status")][:2] ==
                             ["ONLINE", "OFFLINE"])
    assert listener.of("Status")[1].entity == "pi-test"
    assert listener.wait_for(lambda: len(listener.of("Status")) >= 3)   # reconnect: ONLINE
    assert listener.of("Status")[2].body == "ONLINE"
    edge.close()


def test_status_json_is_serialisable(broker, tmp_path: Path) -> None:
    edge = Edge(make_config(broker, tmp_path / "edge")).start()
    try:
        assert edge.wait_state("connected")
        json.dumps(edge.hias.status())
        json.dumps([c.to_dict() for c in edge.hias.health()])
    finally:
        edge.close()


def test_journal_failure_is_logged_once_and_not_fatal(
        broker, listener, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    edge = Edge(make_config(broker, tmp_path / "edge")).start()
    try:
        assert edge.wait_state("connected")
        edge.journal.close()                     # every journal call now raises
        edge.hias.outbox.set_connected(True)     # force an outbox read on the next tick
        def failures() -> list:
            return [r for r in caplog.records if "publishing step failed" in r.getMessage()]
        wait_until(failures, timeout=10, what="the publishing failure to be logged")
        time.sleep(0.5)                          # several more ticks, all failing
        assert len(failures()) == 1 and failures()[0].exc_info is None
        assert edge.hias._thread.is_alive() and edge.wait_state("connected")
        outbox = next(c for c in edge.hias.health() if c.name == "hias-outbox")
        assert outbox.state == "warn" and outbox.summary == "outbox unreadable"
        send_command(broker, "Lab1/Agents/Haematology/pi-test/Commands", b'{"Command": "status"}')
        assert listener.wait_for(lambda: len(listener.of("Notifications")) == 1)
    finally:
        edge.hias.stop(timeout=5)


def test_stable_session_lost_retries_at_min_delay(
        broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "STABLE_SESSION", 0.3)
    edge = Edge(make_config(broker, tmp_path / "edge", reconnect_min_delay=0.2,
                            reconnect_max_delay=5)).start()
    try:
        for _ in range(2):          # twice: the backoff must not carry over between outages
            assert edge.wait_state("connected")
            time.sleep(0.5)         # longer than STABLE_SESSION
            broker.stop()
            assert edge.wait_state("error")
            # The problem is recorded when the session ends; the delay a moment later.
            summary = wait_until(lambda: _retrying(edge), timeout=5, what="a retry delay in the summary")
            assert summary.endswith("; retrying in 0.2 s"), summary
            time.sleep(1.0)         # failed attempts: 0.2, 0.4, 0.8 s
            assert not _health(edge).summary.endswith("; retrying in 0.2 s")
            broker.start()
            assert edge.wait_state("connected", timeout=10)
    finally:
        edge.close()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_two_devices_with_one_entity_do_not_storm(broker, tmp_path: Path, protocol: str) -> None:
    """Same client id twice: the broker keeps kicking the older one; backoff still grows."""
    a = Edge(make_config(broker, tmp_path / "a", reconnect_max_delay=5, protocol=protocol)).start()
    assert a.wait_state("connected")
    b = Edge(make_config(broker, tmp_path / "b", reconnect_max_delay=5, protocol=protocol)).start()
    try:
        time.sleep(3.0)
        connects = a.hias.status()["connects"] + b.hias.status()["connects"]
        # Backoff 0.1, 0.2, 0.4, 0.8, 1.6 s: about 9; resetting it after each short session: ~30.
        assert 2 <= connects <= 16, connects
        hints = [e.hias.status()["last_error"] or "" for e in (a, b)]
        assert any("another device using entity 'pi-test'" in h for h in hints), hints
    finally:
        a.close()
        b.close()


def test_broker_restart_right_after_connecting_is_not_blamed_on_another_device(
        broker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge.hias")
    edge = Edge(make_config(broker, tmp_path / "edge")).start()
    try:
        assert edge.wait_state("connected")
        broker.stop()                          # well within 2 s of connecting
        wait_until(lambda: "refused" in (edge.hias.status()["last_error"] or ""), timeout=10,
                   what="the reconnect to be refused")
        broker.start()
        assert edge.wait_state("connected", timeout=10)
        lost = [r.getMessage() for r in caplog.records if " lost" in r.getMessage()]
        assert len(lost) == 1 and "another device" not in lost[0], lost
    finally:
        edge.close()
