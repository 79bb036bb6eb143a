"""Camera source: captures microscope fields and submits them like any other input.

Backends: `picamera2` (Raspberry Pi camera via libcamera; imported only when chosen), `opencv`
(USB/UVC cameras by index or /dev/videoN, video files, stream URLs) and `auto` (picamera2 for
a camera number when importable, else opencv). Triggers: every `interval_seconds`, on request (`request_capture`,
used by the HTTP API and the MQTT command), and with `on_change` only when the field changed.

A camera that is unplugged, busy or returns empty frames never stops the daemon: the error is
shown in health()/status(), the backend is closed and reopened with exponential backoff.
All camera calls happen in one worker thread (neither libcamera nor V4L2 handles are
thread-safe).
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Union

import cv2
import numpy as np

from edge.component import Component, HealthCheck
from edge.config import CameraSourceConfig

log = logging.getLogger(__name__)

JPEG_QUALITY = 95
FAIL_AFTER = 3  # consecutive failures before health says "fail" (503) instead of "warn"
DARK_MAX = 12  # a frame whose brightest pixel is below this is a dark frame (lamp off, cap on)
SIGNATURE_SIZE = (64, 48)  # change detection compares frames this small
# Below this grey-level std (0..1) a thumbnail counts as blank: its sensor noise is not
# stretched into structure, so a blank slide does not look like a new field every poll.
MIN_CONTRAST = 0.02
READ_LIMIT = 10.0  # s; a read running longer than this is reported as stuck
# libcamera's AwbModeEnum values (control_ids.yaml), so libcamera need not be imported here.
AWB_MODES = {"auto": 0, "incandescent": 1, "tungsten": 2, "fluorescent": 3, "indoor": 4,
             "daylight": 5, "cloudy": 6, "custom": 7}


class CameraError(Exception):
    """A capture problem with a stable `reason` (unplugged, busy, empty_frame, dark_frame,
    read_failed, unavailable, misconfigured) and one operator-readable line."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


def to_bgr(frame: Any) -> np.ndarray:
    """Validate a backend frame and return HxWx3 uint8 BGR; empty frames are CameraErrors."""
    if frame is None or not isinstance(frame, np.ndarray) or frame.size == 0:
        raise CameraError("empty_frame", "the camera returned an empty frame")
    if frame.dtype != np.uint8:
        raise CameraError("empty_frame", f"the camera returned {frame.dtype} pixels, not 8-bit")
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    raise CameraError("empty_frame", f"the camera returned a frame of shape {frame.shape}")


# --------------------------------------------------------------------------- backends


class Backend:
    """One camera. open() -> read()* -> close(); read() returns BGR or raises CameraError."""

    name = "backend"

    def open(self) -> None:
        raise NotImplementedError

    def read(self) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device; safe to call twice."""


class OpenCVBackend(Backend):
    """USB/UVC cameras (index or /dev/videoN), video files and stream URLs via cv2.VideoCapture.

    `capture_factory` is cv2.VideoCapture; tests may pass a stand-in with the same methods.
    """

    name = "opencv"
    FLUSH_FRAMES = 2  # live cameras buffer frames: drop stale ones so a capture is current

    def __init__(self, cfg: CameraSourceConfig,
                 capture_factory: Callable[..., Any] = cv2.VideoCapture) -> None:
        self.cfg = cfg
        self._factory = capture_factory
        self._cap: Any = None
        dev: Union[int, str] = cfg.device  # digit strings are ints already (config validator)
        self.source: Union[int, str] = dev
        self.is_url = isinstance(dev, str) and "://" in dev
        self.path: Optional[str] = None  # something on disk that must exist
        if isinstance(dev, int):
            self.path = f"/dev/video{dev}" if os.name == "posix" else None
        elif not self.is_url:
            self.path = dev
        self.is_file = self.path is not None and not self.path.startswith("/dev/")

    def describe(self) -> str:
        return str(self.source)

    def _check_present(self) -> None:
        if self.path is not None and not os.path.exists(self.path):
            what = "video file" if self.is_file else "camera device"
            raise CameraError("unplugged", f"{what} {self.path} does not exist")

    def open(self) -> None:
        self._check_present()
        cap = self._factory(self.source)
        if not cap.isOpened():
            cap.release()
            if self.is_url:
                raise CameraError("unavailable", f"cannot open stream {self.source}")
            if self.path is not None and not os.access(self.path, os.R_OK):
                raise CameraError("busy", f"no permission to read {self.path} "
                                  "(add the service user to the 'video' group)")
            raise CameraError("busy", f"{self.path} exists but cannot be opened (in use by "
                              "another process, or not a camera/video)")
        if not self.is_file:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.height)
            if self.cfg.exposure_us is not None:
                cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, 1)  # V4L2: 1 = manual, 3 = auto
                cap.set(cv2.CAP_PROP_EXPOSURE, self.cfg.exposure_us / 100.0)  # V4L2: 100 µs units
            if self.cfg.awb is not None:
                cap.set(cv2.CAP_PROP_AUTO_WB, 0 if self.cfg.awb.lower() == "off" else 1)
        self._cap = cap

    def read(self) -> np.ndarray:
        if self._cap is None:
            raise CameraError("unavailable", "camera is not open")
        self._check_present()
        if not self.is_file:
            for _ in range(self.FLUSH_FRAMES):
                self._cap.grab()
        ok, frame = self._cap.read()
        if not ok and self.is_file:  # end of the video: reopen it (seeking is unreliable)
            self.close()
            self.open()
            ok, frame = self._cap.read()
        if not ok:
            self._check_present()  # a vanished device is "unplugged", not "read failed"
            raise CameraError("read_failed", f"no frame from {self.source}")
        return to_bgr(frame)

    def close(self) -> None:
        if self._cap is not None:
            try:
                self._cap.release()
            finally:
                self._cap = None


class Picamera2Backend(Backend):
    """Raspberry Pi camera through libcamera. `module` is the picamera2 module (or its fake)."""

    name = "picamera2"

    def __init__(self, cfg: CameraSourceConfig, module: Any = None) -> None:
        self.cfg = cfg
        self._module = module
        self._cam: Any = None

    def describe(self) -> str:
        fake = " (FAKE)" if getattr(self._module, "FAKE", False) else ""
        return f"camera {self.cfg.device}{fake}"

    def _controls(self) -> Dict[str, Any]:
        controls: Dict[str, Any] = {}
        if self.cfg.exposure_us is not None:
            controls.update(AeEnable=False, ExposureTime=int(self.cfg.exposure_us))
        if self.cfg.awb is not None:
            mode = self.cfg.awb.lower()
            if mode == "off":
                controls["AwbEnable"] = False
            elif mode in AWB_MODES:
                controls.update(AwbEnable=True, AwbMode=AWB_MODES[mode])
            else:
                raise CameraError("misconfigured", f"sources.camera.awb {self.cfg.awb!r} is not "
                                  f"one of off, {', '.join(AWB_MODES)}")
        return controls

    def open(self) -> None:
        if self._module is None:
            try:
                self._module = importlib.import_module("picamera2")
            except ImportError as exc:
                raise CameraError("unavailable", f"picamera2 cannot be imported ({exc}); on a Pi "
                                  "install python3-picamera2 and use a --system-site-packages "
                                  "venv") from None
        num = self.cfg.device
        if not isinstance(num, int):
            raise CameraError("misconfigured", f"sources.camera.device {num!r} is not a camera "
                              "number; picamera2 needs 0, 1, ... (paths and URLs are OpenCV's)")
        try:
            cam = self._module.Picamera2(num)
        except Exception as exc:
            raise open_error(num, exc) from None
        try:
            cfg = cam.create_still_configuration(
                main={"size": (self.cfg.width, self.cfg.height), "format": "RGB888"})
            cam.configure(cfg)
            controls = self._controls()
            if controls:
                cam.set_controls(controls)
            cam.start()
        except CameraError:
            cam.close()
            raise
        except Exception as exc:
            cam.close()
            raise CameraError("unavailable", f"camera {num}: {_first_line(exc)}") from None
        self._cam = cam

    def read(self) -> np.ndarray:
        if self._cam is None:
            raise CameraError("unavailable", "camera is not open")
        try:
            frame = self._cam.capture_array("main")  # RGB888 arrays are B, G, R per pixel
        except Exception as exc:
            raise CameraError("read_failed", _first_line(exc)) from None
        return to_bgr(frame)

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is None:
            return
        for step in (cam.stop, cam.close):
            try:
                step()
            except Exception as exc:
                log.debug("camera close: %s", _first_line(exc))


def _chain(exc: BaseException) -> List[BaseException]:
    """`exc` and the exceptions it was raised from or while handling, outermost first."""
    out: List[BaseException] = []
    cur: Optional[BaseException] = exc
    while cur is not None and cur not in out:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def open_error(num: int, exc: BaseException) -> CameraError:
    """Classify a failed `Picamera2(num)`. The real library wraps every failure in
    RuntimeError("Camera __init__ sequence did not complete."); the cause (no camera, camera
    held by another process) is in the exception it was raised while handling."""
    chain = _chain(exc)
    cause = _first_line(chain[-1])
    text = " ".join(_first_line(e).lower() for e in chain)
    if any(isinstance(e, IndexError) for e in chain) or "not found" in text:
        return CameraError("unplugged", f"libcamera detects no camera {num} (ribbon cable, "
                           f"camera_auto_detect): {cause}")
    if "busy" in text or "acquire" in text:
        return CameraError("busy", f"camera {num}: {cause}")
    return CameraError("unavailable", f"camera {num}: {cause}")


def make_backend(cfg: CameraSourceConfig) -> Backend:
    """The configured backend. `auto` takes picamera2 only for a camera number and only when
    it can be imported: a device path, file or URL is always OpenCV's."""
    if cfg.backend == "picamera2":
        return Picamera2Backend(cfg)
    if cfg.backend == "auto" and isinstance(cfg.device, int):
        try:
            module = importlib.import_module("picamera2")
        except ImportError:
            return OpenCVBackend(cfg)
        return Picamera2Backend(cfg, module)
    return OpenCVBackend(cfg)


# --------------------------------------------------------------------------- component


def signature(frame: np.ndarray) -> np.ndarray:
    """A tiny grey thumbnail for change detection, normalised to zero mean and unit std.

    Two fields in the same stain have nearly the same brightness, and a lamp that flickers
    changes only brightness: normalising leaves the layout of cells, which is what a stage
    move changes. Blank frames (std < MIN_CONTRAST) are not stretched.
    """
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(grey, SIGNATURE_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    return (small - small.mean()) / max(float(small.std()), MIN_CONTRAST)


def difference(a: Optional[np.ndarray], b: Optional[np.ndarray]) -> float:
    """Half the mean absolute difference of two signatures, at most 1 (1 when there is nothing
    to compare): about 0.02-0.03 for one field under noise or a 10-20 % brightness change,
    about 0.25 for another field or the same one moved by a quarter of the view."""
    if a is None or b is None:
        return 1.0
    return min(1.0, float(np.mean(np.abs(a - b))) / 2)


def capture_name(t: float) -> str:
    stamp = datetime.fromtimestamp(t, timezone.utc).strftime("%Y%m%dT%H%M%S.%f")[:-3]
    return f"capture-{stamp}Z.jpg"


@dataclass
class _Request:
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False


class CameraSource(Component):
    """Timed / requested / on-change captures submitted through `daemon.submit_bytes`."""

    name = "camera"

    def __init__(self, daemon: Any, backend: Optional[Backend] = None, *,
                 backoff_min: float = 1.0, backoff_max: float = 60.0,
                 change_poll_seconds: float = 1.0, submit_timeout: float = 60.0,
                 read_limit: float = READ_LIMIT) -> None:
        self.daemon = daemon
        self.cfg: CameraSourceConfig = daemon.config.sources.camera
        self.backend = backend or make_backend(self.cfg)
        self.backoff_min, self.backoff_max = backoff_min, backoff_max
        self.change_poll_seconds = change_poll_seconds
        self.submit_timeout = submit_timeout
        self.read_limit = read_limit
        self._read_started: Optional[float] = None  # monotonic start of the read under way
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._requests: List[_Request] = []
        self._open = False
        self._next_open = 0.0
        self._backoff = backoff_min
        self._next_timed: Optional[float] = None
        self._next_poll = 0.0
        self._last_submitted: Optional[np.ndarray] = None  # signature of the last classified
        self._last_polled: Optional[np.ndarray] = None
        self.consecutive_failures = 0
        self.last_error: Optional[Dict[str, Any]] = None
        self.last_capture: Optional[str] = None
        self.last_result: Optional[Dict[str, Any]] = None
        self.counts = {"captures": 0, "submitted": 0, "unchanged": 0, "dark_frames": 0,
                       "failures": 0, "submit_errors": 0}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._stop.clear()
        now = time.monotonic()
        if self.cfg.interval_seconds > 0:
            self._next_timed = now  # first capture right away, then every interval
        self._thread = threading.Thread(target=self._run, name="camera", daemon=True)
        self._thread.start()
        log.info("camera source started: %s %s, interval %s s, on_change %s, analysis %s",
                 self.backend.name, self._describe(), self.cfg.interval_seconds or "off",
                 self.cfg.on_change, self.cfg.analysis)

    def stop(self, timeout: float = 10.0) -> None:
        """Only the camera thread touches the handle: closing it under a read that is still
        running can crash the driver. A thread stuck in a read closes it when the read returns."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        if thread is not None and thread.is_alive():
            log.warning("camera thread still inside a read after %.0f s; it closes the camera "
                        "when the read returns", timeout)
        else:
            self._close()
        with self._lock:
            for req in self._requests:
                req.done.set()
            self._requests.clear()

    def request_capture(self, wait: float = 0.0) -> bool:
        """Ask for one capture now (HTTP API, MQTT). Returns False when the source is not running;
        with `wait` > 0 blocks up to that long and returns whether the capture was submitted."""
        if self._thread is None or not self._thread.is_alive() or self._stop.is_set():
            return False
        req = _Request()
        with self._lock:
            self._requests.append(req)
        self._wake.set()
        if wait <= 0:
            return True
        return req.done.wait(wait) and req.ok

    # ------------------------------------------------------------------ worker

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._step()
                except Exception as exc:  # a bug must not kill the source silently
                    log.error("camera loop error: %s: %s", type(exc).__name__, _first_line(exc))
                    self._fail(CameraError("internal_error", _first_line(exc)))
                    self._close()  # reopen after the backoff, not read the same handle again
                self._wake.wait(self._sleep_time())
                self._wake.clear()
        finally:
            self._close()

    def _sleep_time(self) -> float:
        now = time.monotonic()
        due = [0.5]
        if self._retrying():
            due.append(self._next_open - now)
        if self._next_timed is not None:
            due.append(self._next_timed - now)
        if self.cfg.on_change and self.cfg.interval_seconds == 0:
            due.append(self._next_poll - now)
        return max(0.01, min(due))

    def _wants_frames(self) -> bool:
        return self.cfg.interval_seconds > 0 or self.cfg.on_change

    def _retrying(self) -> bool:
        """Reopen on the backoff when captures are scheduled, and also after a failure when
        they are not (on request only): else health would show the failure, with a retry
        time that never comes, until the next request."""
        return not self._open and (self._wants_frames() or self.consecutive_failures > 0)

    def _step(self) -> None:
        now = time.monotonic()
        with self._lock:
            requests, self._requests = self._requests, []
        if requests:
            ok = False
            try:  # an unexpected error still answers the requests (_run reports it)
                ok = self._ensure_open(force=True) and self._capture(force=True)
            finally:
                for req in requests:
                    req.ok = ok
                    req.done.set()
            return
        if self._retrying() and now >= self._next_open:
            self._reopen()
        timed = self._next_timed is not None and now >= self._next_timed
        polled = self.cfg.on_change and self.cfg.interval_seconds == 0 and now >= self._next_poll
        if not (timed or polled):
            return
        if timed:
            assert self._next_timed is not None
            self._next_timed = max(self._next_timed + self.cfg.interval_seconds, now)
        if polled:
            self._next_poll = now + self.change_poll_seconds
        if self._ensure_open(force=False):
            self._capture(force=False)

    def _reopen(self) -> None:
        """Retry a failed camera when its backoff expires, not only at the next capture, and
        read one probe frame (not classified) so health shows recovery straight away."""
        if not self._ensure_open(force=False):
            return
        try:
            self._read()
        except CameraError as exc:
            self._fail(exc)
            self._close()
            return
        self._recovered()

    def _ensure_open(self, force: bool) -> bool:
        if self._open:
            return True
        if not force and time.monotonic() < self._next_open:
            return False
        try:
            self.backend.open()
        except CameraError as exc:
            self._fail(exc)
            return False
        self._open = True
        log.info("camera opened: %s %s", self.backend.name, self._describe())
        return True

    def _capture(self, force: bool) -> bool:
        """Read a frame and submit it unless it is dark or (on_change) unchanged."""
        try:
            frame = self._read()
        except CameraError as exc:
            self._fail(exc)
            self._close()
            return False
        self.counts["captures"] += 1
        self.last_capture = _utc_iso()
        if int(frame.max()) < DARK_MAX:
            self.counts["dark_frames"] += 1
            self._note(CameraError("dark_frame", "the frame is black (lamp off, lens cap, or "
                                   "shutter closed); not classified"))
            return False
        sig = signature(frame)
        if self.cfg.on_change and not force:
            changed = difference(sig, self._last_submitted) > self.cfg.change_threshold
            settling = (self.cfg.interval_seconds == 0 and
                        difference(sig, self._last_polled) > self.cfg.change_threshold / 2)
            self._last_polled = sig
            if not changed:
                self.counts["unchanged"] += 1
                self._recovered()
                return False
            if settling:  # the stage is still moving: classify once two polls agree
                self._recovered()
                return False
        self._recovered()
        return self._submit(frame, sig)

    def _read(self) -> np.ndarray:
        """backend.read(), timed so that health() can report a read that never returns."""
        self._read_started = time.monotonic()
        try:
            return to_bgr(self.backend.read())
        finally:
            self._read_started = None

    def _submit(self, frame: np.ndarray, sig: np.ndarray) -> bool:
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            self._note(CameraError("encode_failed", "the frame could not be JPEG-encoded"))
            return False
        name = capture_name(time.time())
        try:
            result = self.daemon.submit_bytes(buf.tobytes(), source="camera", name=name,
                                              analysis=self.cfg.analysis,
                                              timeout=self.submit_timeout)
        except TimeoutError:
            # Accepted but slow: it is still journaled later. Count it as submitted so that
            # on_change does not classify the same field again.
            self.counts["submitted"] += 1
            self._last_submitted = sig
            self._note(CameraError("submit_slow", f"the pipeline took over {self.submit_timeout:g}"
                                   " s; the capture was accepted and is journaled when done"))
            return True
        except Exception as exc:  # pipeline full (Busy), stopping, unknown analysis
            self.counts["submit_errors"] += 1
            self._note(CameraError("submit_failed", f"{type(exc).__name__}: {_first_line(exc)}"))
            return False
        self.counts["submitted"] += 1
        self._last_submitted = sig
        self.last_result = {k: result.get(k) for k in ("id", "status", "label", "probability",
                                                         "reason")}
        return True

    # ------------------------------------------------------------------ state

    def _fail(self, exc: CameraError) -> None:
        """A failure of the camera itself: count it and back off before reopening."""
        self.consecutive_failures += 1
        self.counts["failures"] += 1
        delay = self._backoff
        self._backoff = min(self.backoff_max, self._backoff * 2)
        self._next_open = time.monotonic() + delay
        first = self.last_error is None or self.last_error["reason"] != exc.reason
        self.last_error = {"reason": exc.reason, "message": exc.message, "time": _utc_iso()}
        (log.warning if first else log.debug)(
            "camera %s: %s; retry in %.0f s", exc.reason, exc.message, delay)

    def _note(self, exc: CameraError) -> None:
        """A problem with one capture (dark frame, pipeline busy): reported, no backoff."""
        self.last_error = {"reason": exc.reason, "message": exc.message, "time": _utc_iso()}
        log.warning("camera %s: %s", exc.reason, exc.message)

    def _recovered(self) -> None:
        if self.consecutive_failures:
            log.info("camera working again after %d failed attempts", self.consecutive_failures)
        self.consecutive_failures = 0
        self._backoff = self.backoff_min
        self.last_error = None

    def _close(self) -> None:
        if self._open:
            self._open = False
        try:
            self.backend.close()
        except Exception as exc:
            log.debug("camera close: %s", _first_line(exc))

    def _describe(self) -> str:
        describe = getattr(self.backend, "describe", None)
        return describe() if callable(describe) else str(self.cfg.device)

    # ------------------------------------------------------------------ reporting

    def health(self) -> List[HealthCheck]:
        detail = {"backend": self.backend.name, "device": self._describe(),
                  "consecutive_failures": self.consecutive_failures,
                  "last_error": self.last_error}
        if self._thread is None or not self._thread.is_alive():
            return [HealthCheck("camera", "fail", "camera source is not running", detail)]
        started = self._read_started
        reading = 0.0 if started is None else time.monotonic() - started
        if reading > self.read_limit:
            detail["read_running_s"] = round(reading, 1)
            return [HealthCheck("camera", "fail", f"camera read stuck for {reading:.0f} s "
                                f"({self.backend.name} {self._describe()})", detail)]
        err = self.last_error
        if err is None:
            state = "open" if self._open else "idle (opens on the next capture)"
            return [HealthCheck("camera", "ok", f"{self.backend.name} {self._describe()}: {state}",
                                detail)]
        retry = max(0.0, self._next_open - time.monotonic()) if not self._open else 0.0
        detail["retry_in_s"] = round(retry, 1)
        summary = f"{err['reason']}: {err['message']}"
        if not self._open:
            summary += f" (retry in {retry:.0f} s)"
        state = "fail" if self.consecutive_failures >= FAIL_AFTER else "warn"
        return [HealthCheck("camera", state, summary, detail)]

    def status(self) -> Dict[str, Any]:
        return {
            "backend": self.backend.name, "device": self._describe(), "open": self._open,
            "interval_seconds": self.cfg.interval_seconds, "on_change": self.cfg.on_change,
            "analysis": self.cfg.analysis, **self.counts,
            "consecutive_failures": self.consecutive_failures, "last_capture": self.last_capture,
            "last_result": self.last_result, "last_error": self.last_error,
        }


def _utc_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
