"""FAKE `picamera2` module for tests and demos without a Raspberry Pi camera.

THIS IS NOT THE CAMERA. It mirrors only the Picamera2 calls that `edge.sources.camera` makes
(`Picamera2()`, `create_still_configuration`, `create_preview_configuration`, `configure`,
`start`, `capture_array`, `set_controls`, `stop`, `close`) and the failures the real library
raises. Like the real `Picamera2.__init__`, every open failure surfaces as
`RuntimeError("Camera __init__ sequence did not complete.")`, raised while handling the cause:
no camera at all, `RuntimeError("Camera(s) not found ...")`; no camera with that number,
`IndexError`; camera held by another process, `RuntimeError("Failed to acquire camera: Device
or resource busy")`. A test passing
against this fake proves our calling code and error handling, never that a real camera,
libcamera or the Pi's ISP work. Install it with `sys.modules["picamera2"] = fake_picamera2`.

Pixel order follows the Picamera2 manual: format "RGB888" arrays are [B, G, R] per pixel
(what OpenCV expects), "BGR888" arrays are [R, G, B], "XRGB8888" are [B, G, R, 255].
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import numpy as np

FAKE = True  # lets callers and status pages say so
SENSOR_SIZE = (2592, 1944)  # OV5647 (Camera Module v1) full resolution
KNOWN_CONTROLS = {"ExposureTime", "AeEnable", "AwbEnable", "AwbMode", "ColourGains",
                  "AnalogueGain", "Brightness", "Contrast"}
FORMATS = ("RGB888", "BGR888", "XRGB8888", "XBGR8888")


def _default_scene(width: int, height: int) -> np.ndarray:
    """A grey-lilac field (BGR) with one purple disc, so something is there to look at."""
    img = np.empty((height, width, 3), np.uint8)
    img[:] = (200, 196, 205)
    yy, xx = np.ogrid[:height, :width]
    r = max(4, min(width, height) // 12)
    img[(xx - width // 2) ** 2 + (yy - height // 2) ** 2 <= r * r] = (150, 60, 110)
    return img


@dataclass
class FakeWorld:
    """What the fake 'hardware' does; tests change these attributes."""

    cameras: int = 1  # 0 = nothing detected (unplugged ribbon cable)
    busy: bool = False  # another process holds the camera
    empty_frames: bool = False  # capture_array returns an empty array
    fail_capture: bool = False  # capture_array raises (camera went away mid-run)
    scene: Callable[[int, int], np.ndarray] = _default_scene  # (w, h) -> BGR image
    open_cameras: List[Picamera2] = field(default_factory=list)
    controls_log: List[Dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


world = FakeWorld()


class Picamera2:
    """FAKE of `picamera2.Picamera2` (subset)."""

    def __init__(self, camera_num: int = 0) -> None:
        try:
            self._open(camera_num)
        except Exception:  # the real class does this, so the cause is only in __context__
            raise RuntimeError("Camera __init__ sequence did not complete.")  # noqa: B904

    def _open(self, camera_num: int) -> None:
        with world.lock:
            if world.cameras == 0:
                raise RuntimeError("Camera(s) not found (Do not forget to disable legacy camera "
                                   "with raspi-config).")
            if camera_num >= world.cameras:
                raise IndexError("list index out of range")  # camera_manager.cameras[idx]
            if world.busy or any(c._num == camera_num for c in world.open_cameras):
                raise RuntimeError("Failed to acquire camera: Device or resource busy")
            self._num = camera_num
            self._config: Optional[Dict[str, Any]] = None
            self._started = False
            self._closed = False
            self.controls: Dict[str, Any] = {}
            world.open_cameras.append(self)

    @staticmethod
    def _configuration(use_case: str, main: Optional[Dict[str, Any]], fmt: str,
                       controls: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        main = dict(main or {})
        size = tuple(main.get("size", SENSOR_SIZE))
        fmt = main.get("format", fmt)
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"bad size {size}")
        if fmt not in FORMATS:
            raise RuntimeError(f"Invalid format {fmt}")  # picamera2 rejects unknown formats
        return {"use_case": use_case, "main": {"size": size, "format": fmt},
                "controls": dict(controls or {})}

    def create_still_configuration(self, main: Optional[Dict[str, Any]] = None,
                                   controls: Optional[Dict[str, Any]] = None,
                                   **_: Any) -> Dict[str, Any]:
        return self._configuration("still", main, "BGR888", controls)

    def create_preview_configuration(self, main: Optional[Dict[str, Any]] = None,
                                     controls: Optional[Dict[str, Any]] = None,
                                     **_: Any) -> Dict[str, Any]:
        main = {"size": (640, 480), **(main or {})}
        return self._configuration("preview", main, "XBGR8888", controls)

    def configure(self, config: Dict[str, Any]) -> None:
        self._check_open()
        if self._started:
            raise RuntimeError("Camera must be stopped before configuring")
        self._config = config
        self.controls.update(config.get("controls", {}))

    def set_controls(self, controls: Dict[str, Any]) -> None:
        self._check_open()
        unknown = set(controls) - KNOWN_CONTROLS
        if unknown:
            raise RuntimeError(f"Control {sorted(unknown)[0]} is not advertised by libcamera")
        if "AwbMode" in controls and int(controls["AwbMode"]) not in range(8):
            raise RuntimeError(f"AwbMode {controls['AwbMode']} out of range")
        self.controls.update(controls)
        world.controls_log.append(dict(controls))

    def start(self) -> None:
        self._check_open()
        if self._config is None:  # picamera2 falls back to a preview configuration
            self.configure(self.create_preview_configuration())
        self._started = True

    def capture_array(self, name: str = "main") -> np.ndarray:
        self._check_open()
        if not self._started:
            raise RuntimeError("Camera is not running")  # fake: the real call would wait
        if name != "main":
            raise KeyError(name)
        if world.fail_capture:
            raise RuntimeError("Camera frontend has timed out!")
        assert self._config is not None
        w, h = self._config["main"]["size"]
        fmt = self._config["main"]["format"]
        if world.empty_frames:
            return np.empty((0, 0, 3), np.uint8)
        bgr = np.ascontiguousarray(world.scene(w, h)[:h, :w])
        if fmt == "RGB888":
            return bgr
        if fmt == "BGR888":
            return np.ascontiguousarray(bgr[:, :, ::-1])
        alpha = np.full((h, w, 1), 255, np.uint8)
        return np.concatenate([bgr if fmt == "XRGB8888" else bgr[:, :, ::-1], alpha], axis=2)

    def stop(self) -> None:
        self._started = False

    def close(self) -> None:
        if self._closed:
            return
        self._started = False
        self._closed = True
        with world.lock:
            if self in world.open_cameras:
                world.open_cameras.remove(self)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("Camera is closed")
