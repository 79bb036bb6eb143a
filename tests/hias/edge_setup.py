"""Builds a HiasComponent over a real Journal, with a stand-in for the daemon's command API.

`StubDaemon` is not hardware and not a fake of HIAS: it holds the real config and the real
Journal and records the capture/reload calls the Commands channel makes, which is all the
component uses of the daemon. Results are synthetic (labelled so) and journaled for real.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from edge.config import Config
from edge.hias.client import HiasComponent
from edge.journal import Journal, new_id, utc_iso
from tests.hias.broker import USERS, Broker


def make_config(broker: Optional[Broker], data_dir: Path, *, port: Optional[int] = None,
                ca: Optional[Path] = None, password: Optional[str] = None,
                **hias: Any) -> Config:
    """Config for one simulated edge device pointing at `broker` (password in a file)."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    pw_file = data_dir / "hias-password"
    pw_file.write_text((password if password is not None else USERS["edge"]) + "\n")
    pw_file.chmod(0o600)
    section: Dict[str, Any] = {
        "enabled": True, "host": "localhost",
        "port": port if port is not None else (broker.port if broker else 1),
        "tls": {"enabled": True, "ca_file": str(ca or broker.pki["ca"]) if (ca or broker)
                else "/nonexistent"},
        "username": "edge", "password_file": str(pw_file),
        "location": "Lab1", "zone": "Haematology", "entity": "pi-test",
        "life_first_delay": 0.3, "life_interval": 60,
        "reconnect_min_delay": 0.1, "reconnect_max_delay": 0.5, "resend_rate": 500,
    }
    for key, value in hias.items():
        if key == "tls":
            section["tls"].update(value)
        else:
            section[key] = value
    return Config.model_validate({"hias": section, "storage": {"data_dir": str(data_dir)}})


class StubDaemon:
    """The slice of edge.daemon.Daemon the HIAS component uses (config, journal, commands)."""

    def __init__(self, config: Config, journal: Journal, camera: bool = True) -> None:
        self.config = config
        self.journal = journal
        self.camera = camera
        self.captures = 0
        self.reloads = 0

    def request_capture(self) -> bool:
        self.captures += 1
        return self.camera

    def reload_model(self) -> Tuple[bool, str]:
        self.reloads += 1
        return True, "model reloaded"


def make_result(i: int = 0, positive: bool = True) -> Dict[str, Any]:
    """A synthetic result in the Result JSON shape (no image behind it)."""
    return {
        "id": new_id(), "time": utc_iso(), "source": "folder", "name": f"synthetic-{i}.png",
        "sha256": f"{i:064x}", "status": "ok", "reason": None,
        "label": "ALL" if positive else "normal", "positive": positive,
        "probability": 0.9 if positive else 0.1, "threshold": 0.5,
        "model": {"name": "paper-cnn", "version": "synthetic-test", "synthetic": True},
        "device": "CPU", "latency_ms": 1.5, "analysis": "whole-image", "cells": None,
        "disclaimer": "Research use only. Synthetic test result.",
    }


class Edge:
    """One simulated edge device: real Journal + HiasComponent (+ the stub daemon)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.journal = Journal(config.storage.data_dir)
        self.daemon = StubDaemon(config, self.journal)
        self.hias = HiasComponent(self.daemon)

    def start(self) -> Edge:
        self.hias.start()
        return self

    def record(self, n: int, notify: bool = True) -> List[str]:
        """Journal n results the way the daemon does (journal first, then on_result)."""
        ids = []
        for i in range(n):
            r = make_result(i, positive=i % 2 == 0)
            assert self.journal.record(r)
            if notify:
                self.hias.on_result(r)
            ids.append(r["id"])
        return ids

    def depth(self) -> int:
        return int(self.journal.outbox_stats()["depth"])

    def wait_state(self, state: str, timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.hias.status()["state"] == state:
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self.hias.stop(timeout=5)
        self.journal.close()
