"""End to end: camera capture -> real Daemon (pipeline, OpenVINO, journal, archive) with cells.

The model is the SYNTHETIC stain meter (a real compiled IR, see conftest); the fields come from
the trainer's SYNTHETIC generator, written into a real MJPG video that the OpenCV source reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.config import load_config
from edge.retention import stored_name
from tests.camera.util import solid, write_video
from tests.util import wait_until


@pytest.fixture
def daemon(tmp_path: Path, stain_meter_xml: Path) -> Any:
    import trainer.synth as synth
    from edge.daemon import Daemon

    field, _ = synth.field(np.random.default_rng([5, 1]), True)
    blank = solid((200, 196, 205), (2592, 1944))  # an empty slide: no white cells
    video = write_video(tmp_path / "microscope.avi", [field, blank])
    settings = {
        "model": {"xml": str(stain_meter_xml), "devices": ["CPU"]},
        "sources": {"folder": {"enabled": False},
                    "camera": {"enabled": True, "backend": "opencv", "device": str(video),
                               "analysis": "cells"}},
        "server": {"enabled": False},
        "storage": {"data_dir": str(tmp_path / "data"), "min_free_mb": 0},
    }
    path = tmp_path / "confs.json"
    path.write_text(json.dumps(settings), encoding="utf-8")
    d = Daemon(load_config(path))
    d.start()
    yield d
    d.shutdown(timeout=20)


def test_camera_capture_is_journaled_with_cells(daemon: Any) -> None:
    camera = daemon.component("camera")
    assert camera is not None and "cells" in daemon.analyzers
    assert daemon.request_capture() is True  # the call the HTTP API / MQTT command make
    wait_until(lambda: daemon.journal.count() >= 1, 60, "the field's journal row")
    assert camera.request_capture(wait=60) is True  # second frame: the empty slide
    wait_until(lambda: daemon.journal.count() >= 2, 60, "the blank frame's journal row")

    field, blank = reversed(daemon.journal.recent(10))
    assert field["source"] == "camera" and field["analysis"] == "cells"
    assert field["status"] == "ok" and field["name"].startswith("capture-")
    cells = field["cells"]
    assert cells["found"] >= 2 and len(cells["items"]) == cells["found"]
    assert field["probability"] == max(it["probability"] for it in cells["items"])
    assert field["positive"] == (field["probability"] >= field["threshold"])
    assert field["model"]["synthetic"] is True

    files = daemon.journal.files(field["id"])
    assert files["image"] is not None and files["image"].is_file()  # archived capture
    annotated = cv2.imread(str(files["annotated"]))
    assert annotated is not None and max(annotated.shape) == 1600

    # the empty slide gets its one outcome too: quarantined as "no cells", not "negative"
    assert blank["status"] == "quarantined" and blank["reason"] == "no_cells"
    # and, since the camera keeps no copy, the capture is stored in quarantine/ with its reason
    stored = Path(daemon.config.storage.data_dir) / "quarantine" / stored_name(blank["id"],
                                                                             blank["name"])
    assert cv2.imread(str(stored)) is not None, sorted(stored.parent.iterdir())
    reason = json.loads(stored.with_name(stored.name + ".reason.json").read_text())
    assert (reason["reason"], reason["source"]) == ("no_cells", "camera")
    health = {c.name: c for c in daemon.health()}
    assert health["camera"].state == "ok"
    assert daemon.status()["components"]["camera"]["submitted"] == 2
