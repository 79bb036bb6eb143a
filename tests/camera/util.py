"""Helpers for camera tests: real MJPG videos, solid frames, a recording daemon double."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import cv2
import numpy as np

from edge.config import Config


def write_video(path: Path, frames: Sequence[np.ndarray], fps: float = 5.0) -> Path:
    """A real Motion-JPEG .avi written by cv2.VideoWriter (what a USB microscope camera streams)."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened(), "OpenCV cannot write MJPG here"
    for f in frames:
        writer.write(f)
    writer.release()
    assert path.stat().st_size > 0
    return path


def solid(bgr: Sequence[int], size: tuple = (320, 240)) -> np.ndarray:
    img = np.empty((size[1], size[0], 3), np.uint8)
    img[:] = bgr
    return img


class RecordingDaemon:
    """A test double of the daemon's submit API for camera-loop unit tests: decodes and keeps
    what the camera submits. The end-to-end test uses the real edge.daemon.Daemon instead."""

    def __init__(self, config: Optional[Config] = None, fail_with: Optional[Exception] = None):
        self.config = config or Config()
        self.fail_with = fail_with
        self.submitted: List[Dict[str, Any]] = []
        self.attempts = 0  # submit_bytes calls, failed ones included
        self.lock = threading.Lock()

    def submit_bytes(self, data: bytes, *, source: str, name: str,
                     analysis: Optional[str] = None, timeout: float = 30) -> Dict[str, Any]:
        with self.lock:
            self.attempts += 1
        if self.fail_with is not None:
            raise self.fail_with
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        with self.lock:
            self.submitted.append({"data": data, "image": image, "source": source, "name": name,
                                   "analysis": analysis})
            n = len(self.submitted)
        return {"id": f"test-{n}", "status": "ok", "label": "normal", "probability": 0.1}

    def count(self) -> int:
        with self.lock:
            return len(self.submitted)
