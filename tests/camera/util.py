"""Helpers for camera tests: real MJPG videos, solid frames, a recording daemon double."""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import cv2
import numpy as np

from edge.config import Config
from tests.camera.fields import make_field


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


@functools.lru_cache(maxsize=1)
def stage_views(size: tuple = (320, 240)) -> Dict[str, np.ndarray]:
    """SYNTHETIC microscope views (from tests/camera/fields.py), as a camera sees the stage:
    `A`; `A_flicker`, the same field 10 % brighter with sensor noise; `B`, another field in
    the same stain; `A_moved`, field A after the stage moved by a quarter of the view."""
    w, h = 972, 729  # the view: 3/4 of a 1296x972 field, so that it can move
    a, _ = make_field(21, size=(1296, 972), leukocytes=3, pairs=0, red_cells=45)
    b, _ = make_field(22, size=(1296, 972), leukocytes=3, pairs=0, red_cells=45)

    def view(field: np.ndarray, dx: int) -> np.ndarray:
        return cv2.resize(field[:h, dx:dx + w], size, interpolation=cv2.INTER_AREA)

    noise = np.random.default_rng(23).normal(0, 6, (size[1], size[0], 3))
    flicker = np.clip(view(a, 0).astype(np.float32) * 1.1 + noise, 0, 255).astype(np.uint8)
    return {"A": view(a, 0), "A_flicker": flicker, "B": view(b, 0), "A_moved": view(a, w // 4)}


def looks_like(img: np.ndarray, ref: np.ndarray, tol: float = 8.0) -> bool:
    """Same picture after JPEG round trips: mean absolute pixel difference below `tol`."""
    return img.shape == ref.shape and float(np.mean(cv2.absdiff(img, ref))) < tol


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
