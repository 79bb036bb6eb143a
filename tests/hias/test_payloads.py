"""Topics, payloads, commands, Life figures and the outbox's rate limit (no broker needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from edge.config import HiasConfig
from edge.hias import commands, outbox, payloads, topics
from edge.hias.life import SystemStats, temperature
from edge.hias.outbox import Outbox, TokenBucket
from edge.journal import Journal
from tests.hias.edge_setup import make_result
from tests.hias.listener import hias_parse
from tests.util import Clock


def test_topics_parse_the_way_hias_does() -> None:
    cfg = HiasConfig(location="Lab1", zone="Haematology", entity="pi-7")
    t = topics.topic(cfg, topics.CLASSIFICATION)
    assert t == "Lab1/Agents/Haematology/pi-7/Classification"
    seen = hias_parse(t, payloads.encode(payloads.classification(make_result(), "ALL CNN")))
    assert (seen.entity_type, seen.entity, seen.channel) == ("Agent", "pi-7", "Classification")
    old = HiasConfig(entity_type="Devices", entity="d1")
    assert hias_parse(topics.topic(old, topics.STATUS), b"ONLINE").entity_type == "Device"
    with pytest.raises(ValueError, match="not a HIAS channel"):
        topics.topic(cfg, "States")   # the 2021 classifier's typo: HIAS drops it silently


def test_classification_has_hias_keys_and_our_fields() -> None:
    r = make_result(3, positive=True)
    r["cells"] = {"found": 12, "blasts": 3, "blast_fraction": 0.25,
                  "items": [{"box": [1, 2, 3, 4], "label": "ALL", "probability": 0.9}]}
    body = json.loads(payloads.encode(payloads.classification(r, "ALL CNN")))
    assert body["Model"] == "ALL CNN" and body["State"] == "Positive"
    assert body["Value"] == "ALL" and body["Message"] == payloads.POSITIVE_MESSAGE
    for key in ("id", "label", "probability", "threshold", "source", "sha256", "device", "time"):
        assert body[key] == r[key], key
    assert body["model_version"] == "synthetic-test" and body["model_synthetic"] is True
    assert body["cells"] == {"found": 12, "blasts": 3, "blast_fraction": 0.25}
    neg = payloads.classification(make_result(4, positive=False), "m")
    assert (neg["State"], neg["Value"], neg["Message"]) == \
        ("Negative", "normal", payloads.NEGATIVE_MESSAGE)


def test_encode_never_emits_nan() -> None:
    body = payloads.encode({"probability": float("nan"), "x": [float("inf")]})
    assert json.loads(body) == {"probability": None, "x": [None]}


@pytest.mark.parametrize("bad", [None, "", "n/a", float("nan"), float("inf")])
def test_life_values_are_always_numbers(bad) -> None:
    body = payloads.life({"CPU": bad, "Memory": 41.234, "Temperature": bad}, 51.5, -0.12)
    assert set(body) == set(payloads.LIFE_KEYS)
    assert all(isinstance(v, float) and math.isfinite(v) for v in body.values())
    assert body["Memory"] == 41.23 and body["Latitude"] == 51.5 and body["CPU"] == 0.0


def test_system_stats_are_real_figures(tmp_path: Path) -> None:
    zone = tmp_path / "thermal_zone0"
    zone.mkdir()
    (zone / "type").write_text("cpu_thermal\n")
    (zone / "temp").write_text("48123\n")
    assert temperature(tmp_path) == (48.123, "sysfs:cpu_thermal")
    stats = SystemStats(tmp_path, thermal_root=tmp_path).read()
    assert 0 < stats["Memory"] <= 100 and 0 < stats["Diskspace"] <= 100
    assert 0 <= stats["CPU"] <= 100 and stats["Temperature"] == 48.123
    empty = tmp_path / "none"
    empty.mkdir()
    celsius, source = temperature(empty)
    assert isinstance(celsius, float) and source   # psutil's reading or 0.0 'unavailable'


@pytest.mark.parametrize("payload, name, rid", [
    (b'{"Command": "capture", "Id": "c1"}', "capture", "c1"),
    (b'{"command": "Reload-Model"}', "reload", None),
    (b'{"Type": "Command", "Value": "status"}', "status", None),
])
def test_commands_parse(payload: bytes, name: str, rid) -> None:
    assert commands.parse(payload) == commands.Command(name, rid)


@pytest.mark.parametrize("payload, fragment", [
    (b"capture", "not valid UTF-8 JSON"),
    (b"\xff\xfe", "not valid UTF-8 JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"Id": "x"}', "no command name"),
    (b'{"Command": 7}', "no command name"),
    (b'{"Command": "self-destruct"}', "unknown command 'self-destruct'"),
    (b"{" + b" " * 20000 + b"}", "too large"),
    (b"[" * 16000, "nested too deeply"),   # was a RecursionError: no answer, a traceback
    # An int past Python's 4300-digit limit: a plain ValueError, was uncaught too.
    (b'{"Command": "reload", "Id": ' + b"9" * 5000 + b"}", "not valid UTF-8 JSON"),
])
def test_commands_refused_with_a_reason(payload: bytes, fragment: str) -> None:
    with pytest.raises(commands.CommandError, match=fragment):
        commands.parse(payload)


def test_token_bucket_rate() -> None:
    clock = Clock()
    b = TokenBucket(10, clock)
    assert b.available() == 10
    b.take(10)
    assert b.available() == 0
    clock.t += 0.35
    assert b.available() == 3
    clock.t += 100
    assert b.available() == 10   # at most one second saved up


def test_outbox_new_results_first_backlog_at_rate(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    clock = Clock()
    box = Outbox(journal, resend_rate=5, clock=clock)
    old = [make_result(i) for i in range(12)]
    for r in old:
        journal.record(r)
        box.offer(r)                  # offline: stays in the outbox as backlog
    box.set_connected(True)
    first = box.take()
    assert [r["id"] for r in first] == [r["id"] for r in old[:5]]   # oldest first, 5 tokens
    for mid, r in enumerate(first):
        box.published(mid, r["id"])
    new = make_result(99)
    journal.record(new)
    box.offer(new)
    clock.t += 0.41                   # 2 tokens
    second = box.take()
    assert [r["id"] for r in second] == [new["id"]] + [r["id"] for r in old[5:7]]
    assert box.acked(0) == old[0]["id"] and box.acked(0) is None
    journal.close()


def test_outbox_result_offered_after_its_backlog_read_goes_out_once(tmp_path: Path) -> None:
    """The pipeline commits a batch, then offers each result: a backlog read in between sees
    the row first. Sent (and acked) as backlog, the late offer must not send it again."""
    journal = Journal(tmp_path)
    clock = Clock()
    late = make_result(7)

    class Racing:
        def outbox_pending(self, limit: int):
            journal.record(late)          # committed by the finish thread ...
            rows = journal.outbox_pending(limit)
            box.offer(late)               # ... and offered just after this read
            return rows

    box = Outbox(Racing(), resend_rate=5, clock=clock)
    box.set_connected(True)
    first = box.take()
    assert [r["id"] for r in first] == [late["id"]]
    box.published(1, late["id"])
    assert box.acked(1) == late["id"]
    journal.outbox_mark_delivered(late["id"])
    Racing.outbox_pending = lambda self, limit: journal.outbox_pending(limit)  # type: ignore
    clock.t += 1
    assert box.take() == []
    journal.close()


def test_outbox_skips_results_that_are_not_classifications(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    box = Outbox(journal, resend_rate=5, clock=Clock())
    box.set_connected(True)
    box.take()                        # the (empty) backlog is read once
    box.offer(dict(make_result(1), status="quarantined", reason="not an image"))
    assert box.pending_hint() == 0 and box.take() == []
    journal.close()


def test_outbox_holds_results_while_the_broker_refuses_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox, "REFUSED_RETRY_MIN", 10.0)
    monkeypatch.setattr(outbox, "REFUSED_RETRY_MAX", 25.0)
    journal = Journal(tmp_path)
    clock = Clock()
    box = Outbox(journal, resend_rate=50, clock=clock)
    rows = [make_result(i) for i in range(3)]
    for r in rows:
        journal.record(r)
    box.set_connected(True)
    for mid, r in enumerate(box.take()):
        box.published(mid, r["id"])
    assert box.acked(0) and box.refused() is True        # refusal starts: held for 10 s
    assert box.acked(1) and box.refused() is False       # same burst: no longer wait
    box.acked(2)
    box.refused()
    fresh = make_result(9)
    journal.record(fresh)
    box.offer(fresh)
    clock.t += 9.9
    assert box.take() == [] and box.refused_retry_in() == pytest.approx(0.1)
    for wait in (20.0, 25.0, 25.0):                      # probes: one result, doubling, capped
        clock.t += 0.1
        probe = box.take()
        assert [r["id"] for r in probe] == [rows[0]["id"]]
        box.published(7, probe[0]["id"])
        assert box.take() == []                          # one probe in flight at a time
        box.acked(7)
        box.refused()
        assert box.refused_retry_in() == wait
        clock.t += wait - 0.1
    clock.t += 0.1
    probe = box.take()
    box.published(8, probe[0]["id"])
    box.acked(8)
    assert box.accepted() is True and box.accepted() is False   # refusal over
    journal.outbox_mark_delivered(probe[0]["id"])
    assert [r["id"] for r in box.take()] == [r["id"] for r in rows[1:] + [fresh]]  # at once
    journal.close()
