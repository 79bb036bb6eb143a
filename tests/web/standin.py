"""TEST DOUBLE: `StandInDaemon`, a minimal stand-in for `edge.daemon.Daemon` (web tests only).

It implements the daemon API of docs/architecture.md with REAL parts where they exist here
(the real `edge.journal.Journal` on SQLite, real `edge.imaging` decoding with the configured
pixel limit, real archiving to data_dir) and one FAKE part: `FakeClassifier` does no inference,
its "probability" is a deterministic function of the mean pixel value. Results from it are
meaningless and are labelled synthetic. Tests that need real inference use the real daemon.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from edge import DISCLAIMER, imaging
from edge.component import HealthCheck
from edge.config import Config
from edge.journal import Journal, new_id, utc_iso


class FakeMeta:
    name = "stand-in-fake"
    version = "0"
    synthetic = True
    positive_label = "ALL"


class FakeClassifier:
    """FAKE: no model. probability = mean pixel / 255 (so a black image is 'normal')."""

    meta = FakeMeta()
    device = "FAKE"
    threshold = 0.5

    def predict_probability(self, image) -> float:
        return float(image.mean()) / 255.0


class StandInDaemon:
    """TEST DOUBLE of edge.daemon.Daemon: same public API, real journal, fake classifier."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.ready = True
        self.classifier = FakeClassifier()
        self.journal = Journal(Path(config.storage.data_dir), outbox=False)
        self.components: List[Any] = []
        self.capture_requests = 0
        self.camera_available = False
        self.reload_ok: Tuple[bool, str] = (True, "reloaded stand-in-fake 0 on FAKE")
        self.health_override: Optional[List[HealthCheck]] = None
        self._lock = threading.Lock()

    def submit_bytes(self, data: bytes, *, source: str, name: str,
                     analysis: Optional[str] = None, timeout: float = 30) -> Dict[str, Any]:
        t0 = time.perf_counter()
        rid = new_id()
        result: Dict[str, Any] = {
            "id": rid, "time": utc_iso(), "source": source, "name": name,
            "sha256": hashlib.sha256(data).hexdigest(), "status": "ok", "reason": None,
            "label": None, "positive": None, "probability": None, "threshold": 0.5,
            "model": {"name": FakeMeta.name, "version": FakeMeta.version, "synthetic": True},
            "device": "FAKE", "latency_ms": None, "analysis": analysis or "whole-image",
            "cells": None, "disclaimer": DISCLAIMER,
        }
        try:
            image = imaging.decode(data, max_pixels=self.config.server.max_pixels)
        except imaging.ImageError as exc:
            result.update(status="quarantined", reason=exc.reason, detail=exc.message)
            self.journal.record(result)
            self._notify(result)
            return result
        p = self.classifier.predict_probability(image)
        result.update(label="ALL" if p >= 0.5 else "normal", positive=p >= 0.5,
                      probability=round(p, 4), latency_ms=(time.perf_counter() - t0) * 1000)
        rel = Path("archive") / result["time"][:10] / f"{rid}__{name}"
        dest = Path(self.config.storage.data_dir) / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        self.journal.record(result, files={"image": str(rel)})
        self._notify(result)
        return result

    def _notify(self, result: Dict[str, Any]) -> None:
        for c in self.components:  # like the real pipeline: after the journal commit
            c.on_result(result)

    def reload_model(self) -> Tuple[bool, str]:
        return self.reload_ok

    def request_capture(self) -> bool:
        if self.camera_available:
            self.capture_requests += 1
            return True
        return False

    def health(self) -> List[HealthCheck]:
        if self.health_override is not None:
            return list(self.health_override)
        return [HealthCheck("model", "warn", "stand-in-fake 0 (FAKE classifier, synthetic)"),
                HealthCheck("device", "ok", "FAKE"),
                HealthCheck("folder source", "disabled", "sources.folder.enabled=false"),
                HealthCheck("disk", "ok", "plenty free (stand-in)"),
                HealthCheck("cpu temperature", "ok", "n/a")] + \
            [h for c in self.components for h in c.health()]

    def status(self) -> Dict[str, Any]:
        """Same shape as edge.daemon.Daemon.status()."""
        totals = self.journal.counters()
        return {"agent": self.config.agent.name, "ready": self.ready,
                "model": {"name": FakeMeta.name, "version": "0", "synthetic": True,
                          "device": "FAKE"},
                "counters": dict(totals, queue_depth=0, uptime_s=1.0), "totals": totals,
                "outbox": self.journal.outbox_stats(),
                "health": [h.to_dict() for h in self.health()],
                "components": {c.name: c.status() for c in self.components},
                "disclaimer": DISCLAIMER}

    def close(self) -> None:
        self.journal.close()
