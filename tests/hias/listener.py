"""Plays the HIAS server's side: subscribes and parses topics and payloads the way HIAS does.

HIAS splits a topic on `/`: segment 1 minus its trailing `s` is the entity type, segment 3 the
entity, segment 4 the channel; it runs `float()` on every Life value and reads the
Classification keys. A message HIAS would choke on is recorded in `errors`, not swallowed.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, DefaultDict, Dict, List, Optional

import paho.mqtt.client as mqtt

from tests.hias.broker import USERS, Broker

HIAS_CHANNELS = {"Status", "Life", "Sensors", "Actuators", "Commands", "Notifications", "State",
                 "Classification", "Integrity", "Zone"}
LIFE_KEYS = ("CPU", "Memory", "Diskspace", "Temperature", "Latitude", "Longitude")
CLASSIFICATION_KEYS = ("Model", "Type", "Value", "State", "Message")


@dataclass
class Seen:
    entity_type: str
    entity: str
    channel: str
    body: Any
    retained: bool
    at: float = 0.0          # time.monotonic() on arrival


def hias_parse(topic: str, payload: bytes) -> Seen:
    """What HIAS's agent does with an incoming message (raises where HIAS would fail)."""
    parts = topic.split("/")
    if len(parts) != 5:
        raise ValueError(f"topic {topic!r} does not have 5 segments")
    entity_type = parts[1][:-1] if parts[1].endswith("s") else parts[1]
    entity, channel = parts[3], parts[4]
    if channel not in HIAS_CHANNELS:
        raise ValueError(f"channel {channel!r} unknown to HIAS (silently dropped there)")
    text = payload.decode("utf-8")
    if channel == "Status":
        if text not in ("ONLINE", "OFFLINE"):
            raise ValueError(f"Status {text!r} is not ONLINE/OFFLINE")
        return Seen(entity_type, entity, channel, text, False)
    body = json.loads(text)
    if channel == "Life":
        body = {k: float(body[k]) for k in LIFE_KEYS}   # HIAS: float() on each, '' crashes
    elif channel == "Classification":
        missing = [k for k in CLASSIFICATION_KEYS if k not in body]
        if missing:
            raise ValueError(f"Classification without {missing}")
    return Seen(entity_type, entity, channel, body, False)


class HiasListener:
    """Persistent-session QoS 1 subscriber (messages queued at the broker survive restarts)."""

    def __init__(self, broker: Broker, location: str = "+", client_id: str = "hias-listener"
                 ) -> None:
        self.broker = broker
        self.lock = threading.Lock()
        self.messages: List[Seen] = []
        self.errors: List[str] = []
        self.by_channel: DefaultDict[str, List[Seen]] = defaultdict(list)
        self.connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=False, protocol=mqtt.MQTTv311)
        self.client.username_pw_set("hias", USERS["hias"])
        self.client.tls_set_context(broker.client_tls_context())
        self.client.max_inflight_messages_set(1000)
        self.client.reconnect_delay_set(0.05, 0.5)
        self.topic = f"{location}/+/+/+/+"
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe(self.topic, qos=1)
            self.connected.set()

    def _on_message(self, client, userdata, msg) -> None:
        try:
            seen = hias_parse(msg.topic, msg.payload)
            seen.retained = bool(msg.retain)
            seen.at = time.monotonic()
        except Exception as exc:
            with self.lock:
                self.errors.append(f"{msg.topic}: {exc!r}")
            return
        with self.lock:
            self.messages.append(seen)
            self.by_channel[seen.channel].append(seen)

    def start(self, timeout: float = 10.0) -> HiasListener:
        self.client.connect("localhost", self.broker.port, keepalive=10)
        self.client.loop_start()
        assert self.connected.wait(timeout), "listener could not connect"
        time.sleep(0.1)   # SUBACK
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def of(self, channel: str, entity: Optional[str] = None) -> List[Seen]:
        with self.lock:
            return [m for m in self.by_channel[channel] if entity is None or m.entity == entity]

    def result_ids(self, entity: Optional[str] = None) -> List[str]:
        return [m.body["id"] for m in self.of("Classification", entity)]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()

    def summary(self) -> Dict[str, int]:
        with self.lock:
            return {k: len(v) for k, v in self.by_channel.items()}


def send_command(broker: Broker, topic: str, payload: bytes, retain: bool = False) -> None:
    """Publish one command the way the HIAS server does (its own user and client id)."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hias-server")
    c.username_pw_set("hias", USERS["hias"])
    c.tls_set_context(broker.client_tls_context())
    c.connect("localhost", broker.port)
    c.loop_start()
    c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()
