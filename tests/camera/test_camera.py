"""Camera source: OpenCV on real video files, picamera2 against its FAKE, failures survived."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np
import pytest

from edge.config import CameraSourceConfig, Config
from edge.pipeline import Busy
from edge.sources import fake_picamera2
from edge.sources.camera import (
    CameraError,
    CameraSource,
    OpenCVBackend,
    Picamera2Backend,
    capture_name,
    difference,
    make_backend,
    open_error,
    signature,
)
from tests.camera.util import RecordingDaemon, looks_like, solid, stage_views, write_video
from tests.util import wait_until

FAST = {"backoff_min": 0.05, "backoff_max": 0.2, "change_poll_seconds": 0.05}
COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]  # BGR: blue, green, red frames


def config(**camera: Any) -> Config:
    cfg = Config()
    cfg.sources.camera = CameraSourceConfig(enabled=True, **camera)
    return cfg


@pytest.fixture
def fake_world(monkeypatch: pytest.MonkeyPatch) -> Iterator[fake_picamera2.FakeWorld]:
    """The FAKE picamera2 installed as `picamera2` (only calling code is tested, not a camera)."""
    monkeypatch.setitem(sys.modules, "picamera2", fake_picamera2)
    fake_picamera2.world.reset()
    yield fake_picamera2.world
    for cam in list(fake_picamera2.world.open_cameras):
        cam.close()
    fake_picamera2.world.reset()


def running(daemon: RecordingDaemon, backend: Optional[Any] = None) -> CameraSource:
    src = CameraSource(daemon, backend, **FAST)
    src.start()
    return src


def running_picamera2() -> Tuple[RecordingDaemon, CameraSource]:
    """A started picamera2 source (against the FAKE module) capturing small frames every 50 ms."""
    daemon = RecordingDaemon(config(backend="picamera2", width=96, height=64, interval_seconds=0.05))
    return daemon, running(daemon)


def mean_bgr(img: np.ndarray) -> Tuple[int, ...]:
    return tuple(int(round(v)) for v in img.reshape(-1, 3).mean(axis=0))


def close_to(img: np.ndarray, bgr: Tuple[int, int, int], tol: int = 12) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(mean_bgr(img), bgr))


# ------------------------------------------------------------------ OpenCV backend


def test_requested_captures_read_a_real_video_in_order(tmp_path: Path) -> None:
    video = write_video(tmp_path / "stage.avi", [solid(c) for c in COLOURS])
    daemon = RecordingDaemon(config(backend="opencv", device=str(video)))
    src = running(daemon)
    try:
        for _ in range(4):  # three frames, then the video starts again
            assert src.request_capture(wait=10) is True
        assert src.health()[0].state == "ok"
    finally:
        src.stop()
    got = [s["image"] for s in daemon.submitted]
    assert len(got) == 4
    for img, colour in zip(got, COLOURS + COLOURS[:1]):
        assert img.shape == (240, 320, 3) and close_to(img, colour), mean_bgr(img)
    first = daemon.submitted[0]
    assert first["source"] == "camera" and first["analysis"] == "cells"
    assert first["name"].startswith("capture-") and first["name"].endswith("Z.jpg")
    assert first["data"][:2] == b"\xff\xd8"  # JPEG
    assert src.status()["submitted"] == 4


def test_timed_captures_of_generated_frames(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(3)]
    video = write_video(tmp_path / "gen.avi", frames)
    daemon = RecordingDaemon(config(backend="opencv", device=str(video), interval_seconds=0.05))
    src = running(daemon)
    try:
        wait_until(lambda: daemon.count() >= 3, 10, "three timed captures")
    finally:
        src.stop()
    assert all(s["image"].shape == (120, 160, 3) for s in daemon.submitted)


def test_on_change_classifies_a_field_once(tmp_path: Path) -> None:
    views = stage_views()
    frames = [views["A"]] * 3 + [views["B"]] * 7  # stage moved once
    video = write_video(tmp_path / "moves.avi", frames)
    daemon = RecordingDaemon(config(backend="opencv", device=str(video), interval_seconds=0.02,
                                    on_change=True))
    src = running(daemon)
    try:
        wait_until(lambda: src.status()["captures"] >= 6, 10, "six captures")
    finally:
        src.stop()
    st = src.status()
    assert daemon.count() == 2, st  # field A once, field B once
    assert looks_like(daemon.submitted[0]["image"], views["A"])
    assert looks_like(daemon.submitted[1]["image"], views["B"])
    assert st["unchanged"] >= 4


def test_on_change_polling_waits_for_the_stage_to_settle(tmp_path: Path) -> None:
    views = stage_views()
    frames = [views["A"]] * 4 + [views["B"]] * 6
    video = write_video(tmp_path / "poll.avi", frames)
    daemon = RecordingDaemon(config(backend="opencv", device=str(video), on_change=True))
    src = running(daemon)  # interval 0 + on_change: polls every change_poll_seconds
    try:
        wait_until(lambda: daemon.count() >= 2, 10, "both fields")
    finally:
        src.stop()
    assert looks_like(daemon.submitted[0]["image"], views["A"])
    assert looks_like(daemon.submitted[1]["image"], views["B"])


class PlaylistBackend:
    """A TEST DOUBLE camera that shows the given frames once each, then holds the last one
    (a real video would loop back to the first)."""

    name = "playlist"

    def __init__(self, frames: List[np.ndarray]) -> None:
        self.frames = list(frames)

    def open(self) -> None:
        pass

    def read(self) -> np.ndarray:
        return self.frames.pop(0) if len(self.frames) > 1 else self.frames[0]

    def close(self) -> None:
        pass


def test_on_change_sees_stage_moves_not_lamp_flicker(tmp_path: Path) -> None:
    """Two fields in one stain differ by ~0.03 in grey level and a 10 % brighter lamp by ~0.06:
    the old measure (threshold 0.08 on raw thumbnails) missed moves. Frames come from a real
    MJPG video of SYNTHETIC fields."""
    views = stage_views()
    order = ["A", "A", "A_flicker", "B", "B", "A_moved"]
    video = write_video(tmp_path / "stage.avi", [views[n] for n in order])
    reader = OpenCVBackend(CameraSourceConfig(backend="opencv", device=str(video)))
    reader.open()
    frames = [reader.read() for _ in order]
    reader.close()
    sig = {n: signature(f) for n, f in zip(order, frames)}
    limit = CameraSourceConfig().change_threshold
    assert difference(sig["A"], sig["A_flicker"]) < limit / 2  # the "settled" test too
    for moved in ("B", "A_moved"):
        assert difference(sig["A"], sig[moved]) > 2 * limit, moved

    daemon = RecordingDaemon(config(backend="opencv", interval_seconds=0.02, on_change=True))
    src = running(daemon, PlaylistBackend(frames))  # the first frame is the start-up probe
    try:
        wait_until(lambda: src.status()["captures"] >= len(frames) + 2, 10, "all frames")
    finally:
        src.stop()
    got = [s["image"] for s in daemon.submitted]
    assert len(got) == 3, src.status()  # A, B, A moved; not A under a flickering lamp
    for img, name in zip(got, ("A", "B", "A_moved")):
        assert looks_like(img, views[name]), name


def test_unplug_and_replug_a_video_file(tmp_path: Path) -> None:
    video = write_video(tmp_path / "cam.avi", [solid(c) for c in COLOURS])
    aside = tmp_path / "unplugged.avi"
    daemon = RecordingDaemon(config(backend="opencv", device=str(video), interval_seconds=0.05))
    src = running(daemon)
    try:
        wait_until(lambda: daemon.count() >= 1, 10, "a first capture")
        os.rename(video, aside)  # unplug
        wait_until(lambda: src.health()[0].state == "fail", 10, "health to fail")
        check = src.health()[0]
        assert check.detail["last_error"]["reason"] == "unplugged"
        assert "does not exist" in check.summary and "retry in" in check.summary
        before = daemon.count()
        assert src.request_capture(wait=5) is False  # an explicit request fails cleanly
        os.rename(aside, video)  # replug
        wait_until(lambda: daemon.count() > before and src.health()[0].state == "ok", 10,
                   "recovery after replug")
    finally:
        src.stop()
    assert src.status()["failures"] >= 3


def test_backoff_grows_while_the_camera_is_missing(tmp_path: Path) -> None:
    daemon = RecordingDaemon(config(backend="opencv", device=str(tmp_path / "none.avi"),
                                    interval_seconds=0.01))
    src = CameraSource(daemon, backoff_min=0.05, backoff_max=0.4)
    src.start()
    try:
        wait_until(lambda: src.status()["failures"] >= 4, 10, "four failed opens")
    finally:
        src.stop()
    assert src._backoff == pytest.approx(0.4)  # 0.05 -> 0.1 -> 0.2 -> 0.4 (ceiling)
    assert daemon.count() == 0


def test_busy_or_unreadable_device(tmp_path: Path) -> None:
    """A path that exists but that OpenCV cannot open (what a camera held elsewhere looks like)."""
    held = tmp_path / "video0"
    held.write_bytes(b"not a video stream")
    daemon = RecordingDaemon(config(backend="opencv", device=str(held), interval_seconds=0.05))
    src = running(daemon)
    try:
        wait_until(lambda: src.health()[0].state == "fail", 10, "busy to be reported")
    finally:
        src.stop()
    err = src.health()[0].detail["last_error"]
    assert err["reason"] == "busy" and "cannot be opened" in err["message"]


class EmptyFrameCapture:
    """Stand-in for cv2.VideoCapture (same methods) whose reads succeed with no pixels, as
    some UVC cameras do while starting up. Not a camera: it only drives our error path."""

    def __init__(self, source: Any) -> None:
        self.reads = 0

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return True

    def set(self, prop: int, value: float) -> bool:
        return True

    def grab(self) -> bool:
        return True

    def read(self) -> Tuple[bool, Optional[np.ndarray]]:
        self.reads += 1
        return True, (None if self.reads % 2 else np.empty((0, 0, 3), np.uint8))

    def release(self) -> None:
        pass


def test_empty_frames_are_reported_and_retried() -> None:
    cfg = config(backend="opencv", device="http://127.0.0.1:9/stream", interval_seconds=0.02)
    daemon = RecordingDaemon(cfg)
    src = running(daemon, OpenCVBackend(cfg.sources.camera, capture_factory=EmptyFrameCapture))
    try:
        wait_until(lambda: src.health()[0].state == "fail", 10, "empty frames to be reported")
    finally:
        src.stop()
    assert src.health()[0].detail["last_error"]["reason"] == "empty_frame"
    assert daemon.count() == 0


def test_dark_frames_are_not_classified(tmp_path: Path) -> None:
    video = write_video(tmp_path / "dark.avi", [solid((0, 0, 0))] * 2)
    daemon = RecordingDaemon(config(backend="opencv", device=str(video)))
    src = running(daemon)
    try:
        assert src.request_capture(wait=10) is False
    finally:
        src.stop()
    assert daemon.count() == 0 and src.status()["dark_frames"] == 1
    check = src.health()[0]  # stopped now: reports not running; the error is kept in detail
    assert check.detail["last_error"]["reason"] == "dark_frame"


def test_submit_errors_keep_the_source_alive(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", [solid(COLOURS[0])])
    daemon = RecordingDaemon(config(backend="opencv", device=str(video)),
                             fail_with=Busy("pipeline full"))
    src = running(daemon)
    try:
        assert src.request_capture(wait=10) is False
        assert src.health()[0].state == "warn"
        daemon.fail_with = None
        assert src.request_capture(wait=10) is True
        assert src.health()[0].state == "ok"
    finally:
        src.stop()
    assert src.status()["submit_errors"] == 1


def test_slow_pipeline_does_not_classify_an_unchanged_field_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # TimeoutError = accepted, journaled later (docs/architecture.md): the field counts as
    # submitted. It used to count as failed, so on_change sent the same field every capture.
    video = write_video(tmp_path / "still.avi", [solid(COLOURS[0])] * 4)
    daemon = RecordingDaemon(config(backend="opencv", device=str(video), interval_seconds=0.02,
                                    on_change=True), fail_with=TimeoutError("slow"))
    src = running(daemon)
    try:
        wait_until(lambda: src.status()["captures"] >= 6, 10, "six captures")
    finally:
        src.stop()
    st = src.status()
    assert daemon.attempts == 1, st
    assert st["submitted"] == 1 and st["submit_errors"] == 0 and st["unchanged"] >= 4, st
    assert "camera submit_slow" in caplog.text   # reported; later captures clear it


def test_request_capture_needs_a_running_source(tmp_path: Path) -> None:
    src = CameraSource(RecordingDaemon(config(backend="opencv", device=str(tmp_path / "x.avi"))))
    assert src.request_capture() is False
    assert src.health()[0].state == "fail"  # not started


def test_capture_names_are_utc_and_sortable() -> None:
    assert capture_name(0.0) == "capture-19700101T000000.000Z.jpg"
    assert capture_name(1.5) < capture_name(2.0)


# ------------------------------------------------------------------ picamera2 (FAKE)


def test_backend_choice(fake_world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(make_backend(CameraSourceConfig(backend="auto")), Picamera2Backend)
    assert isinstance(make_backend(CameraSourceConfig(backend="opencv")), OpenCVBackend)
    # a path, file or URL is OpenCV's even where picamera2 is importable
    for device in ("/dev/video2", "/srv/stage.avi", "rtsp://10.0.0.5/stream"):
        assert isinstance(make_backend(CameraSourceConfig(device=device)), OpenCVBackend), device
    one = CameraSourceConfig(device="1")  # e.g. --set sources.camera.device=1 quoted in JSON
    assert one.device == 1 and isinstance(make_backend(one), Picamera2Backend)
    assert OpenCVBackend(CameraSourceConfig(backend="opencv", device=" 2")).source == 2
    with pytest.raises(CameraError) as wrong:
        Picamera2Backend(CameraSourceConfig(backend="picamera2", device="/dev/video0")).open()
    assert wrong.value.reason == "misconfigured" and fake_world.open_cameras == []
    monkeypatch.setitem(sys.modules, "picamera2", None)  # not importable (any non-Pi machine)
    assert isinstance(make_backend(CameraSourceConfig(backend="auto")), OpenCVBackend)
    chosen = make_backend(CameraSourceConfig(backend="picamera2"))  # import deferred to open()
    with pytest.raises(Exception) as err:
        chosen.open()
    assert getattr(err.value, "reason", None) == "unavailable"


def test_picamera2_capture_against_the_fake(fake_world: Any) -> None:
    scene = np.zeros((64, 80, 3), np.uint8)
    scene[:, :40] = (255, 0, 0)  # left half blue (BGR), right half red
    scene[:, 40:] = (0, 0, 255)
    fake_world.scene = lambda w, h: scene
    daemon = RecordingDaemon(config(backend="picamera2", width=80, height=64, exposure_us=2000,
                                    awb="daylight"))
    src = running(daemon)
    try:
        assert src.request_capture(wait=10) is True
        cam = fake_world.open_cameras[0]
        assert cam._config["main"] == {"size": (80, 64), "format": "RGB888"}
        assert cam._config["use_case"] == "still"
    finally:
        src.stop()
    img = daemon.submitted[0]["image"]
    assert close_to(img[:, :35], (255, 0, 0), 20) and close_to(img[:, 45:], (0, 0, 255), 20)
    assert {"AeEnable": False, "ExposureTime": 2000, "AwbEnable": True,
            "AwbMode": 5} in fake_world.controls_log
    assert fake_world.open_cameras == []  # stop() released the camera
    assert "FAKE" in src.status()["device"]


def test_picamera2_unplugged_then_connected(fake_world: Any) -> None:
    fake_world.cameras = 0
    daemon, src = running_picamera2()
    try:
        wait_until(lambda: src.health()[0].state == "fail", 10, "unplugged to be reported")
        assert src.health()[0].detail["last_error"]["reason"] == "unplugged"
        fake_world.cameras = 1
        wait_until(lambda: daemon.count() >= 1 and src.health()[0].state == "ok", 10, "recovery")
    finally:
        src.stop()


def test_picamera2_busy_then_released(fake_world: Any) -> None:
    fake_world.busy = True
    daemon, src = running_picamera2()
    try:
        wait_until(lambda: src.consecutive_failures >= 1, 10, "busy to be reported")
        err = src.health()[0].detail["last_error"]
        assert err["reason"] == "busy" and "Device or resource busy" in err["message"]
        fake_world.busy = False
        wait_until(lambda: daemon.count() >= 1, 10, "capture after release")
    finally:
        src.stop()


def test_picamera2_empty_frames_and_capture_errors(fake_world: Any) -> None:
    fake_world.empty_frames = True
    daemon, src = running_picamera2()
    try:
        wait_until(lambda: src.consecutive_failures >= 2, 10, "empty frames to be reported")
        assert src.health()[0].detail["last_error"]["reason"] == "empty_frame"
        fake_world.empty_frames = False
        fake_world.fail_capture = True
        wait_until(lambda: (src.last_error or {}).get("reason") == "read_failed", 10, "read error")
        fake_world.fail_capture = False
        wait_until(lambda: daemon.count() >= 1, 10, "recovery")
    finally:
        src.stop()
    assert len(fake_world.open_cameras) == 0  # every failed camera was closed, none leaked


def test_picamera2_open_errors_are_classified_by_their_cause(fake_world: Any) -> None:
    """The real Picamera2() raises RuntimeError("Camera __init__ sequence did not complete.")
    for every failure; the cause is its __context__. The fake does the same."""
    fake_world.busy = True
    with pytest.raises(RuntimeError, match="__init__ sequence did not complete") as err:
        fake_picamera2.Picamera2(0)
    assert "Device or resource busy" in str(err.value.__context__)
    fake_world.busy = False
    for cameras, num in ((0, 0), (1, 1)):  # none at all; not that number
        fake_world.cameras = cameras
        with pytest.raises(CameraError) as unplugged:
            Picamera2Backend(CameraSourceConfig(backend="picamera2", device=num)).open()
        assert unplugged.value.reason == "unplugged", unplugged.value.message
    try:
        try:
            raise OSError("Failed to open /dev/media3: Permission denied")
        except OSError:
            raise RuntimeError("Camera __init__ sequence did not complete.")  # noqa: B904
    except RuntimeError as exc:
        other = open_error(0, exc)
    assert other.reason == "unavailable" and "Permission denied" in other.message
    assert "__init__" not in other.message  # the cause is shown, not the wrapper


def test_picamera2_bad_awb_is_a_clear_error(fake_world: Any) -> None:
    backend = Picamera2Backend(CameraSourceConfig(backend="picamera2", awb="sunset"))
    with pytest.raises(Exception) as err:
        backend.open()
    assert getattr(err.value, "reason", None) == "misconfigured" and "sunset" in str(err.value)
    assert fake_world.open_cameras == []


def test_waiting_for_a_missing_camera_does_not_spin(tmp_path: Path) -> None:
    daemon = RecordingDaemon(config(backend="opencv", device=str(tmp_path / "none.avi"),
                                    interval_seconds=60))
    src = CameraSource(daemon, backoff_min=0.2, backoff_max=0.2)
    steps = []
    real_step = src._step
    src._step = lambda: (steps.append(1), real_step())[1]  # type: ignore[method-assign]
    src.start()
    try:
        wait_until(lambda: src.status()["failures"] >= 3, 10, "three retries")
    finally:
        src.stop()
    # one wake-up per retry (plus a few), not a 10 ms poll while the backoff runs out
    assert len(steps) <= 3 * src.status()["failures"] + 3, (len(steps), src.status())


class HangingBackend:
    """A TEST DOUBLE whose read() hangs until released, like a wedged USB camera."""

    name = "hanging"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.reading = threading.Event()
        self.events: List[Tuple[str, str]] = []   # (what, thread name)

    def open(self) -> None:
        self.events.append(("open", threading.current_thread().name))

    def read(self) -> np.ndarray:
        self.reading.set()
        self.release.wait(30)
        self.events.append(("read-returned", threading.current_thread().name))
        return solid((90, 90, 90))

    def close(self) -> None:
        self.events.append(("close", threading.current_thread().name))


def test_stop_never_closes_the_camera_under_a_hung_read(tmp_path: Path) -> None:
    backend = HangingBackend()
    daemon = RecordingDaemon(config(backend="opencv", interval_seconds=60))
    src = running(daemon, backend)
    try:
        assert backend.reading.wait(10)
        src.stop(timeout=0.2)
        assert ("close", "MainThread") not in backend.events, backend.events
    finally:
        backend.release.set()
    wait_until(lambda: ("close", "camera") in backend.events, 10, "the camera thread to close it")
    closes = [e for e in backend.events if e[0] == "close"]
    assert closes == [("close", "camera")]
    assert backend.events.index(("read-returned", "camera")) < backend.events.index(("close", "camera"))


def test_stuck_read_is_reported_by_health() -> None:
    backend = HangingBackend()
    daemon = RecordingDaemon(config(backend="opencv", interval_seconds=60))
    src = CameraSource(daemon, backend, read_limit=0.2, **FAST)  # type: ignore[arg-type]
    src.start()
    try:
        assert backend.reading.wait(10)
        check = wait_until(lambda: next((c for c in src.health() if c.state == "fail"), None),
                           10, "the hung read to be reported")
        assert check.summary.startswith("camera read stuck for ") and "hanging" in check.summary
        backend.release.set()
        wait_until(lambda: src.health()[0].state == "ok" and daemon.count() == 1, 10, "recovery")
    finally:
        backend.release.set()
        src.stop()


class BrokenReadBackend:
    """A TEST DOUBLE whose read() fails with something other than CameraError (a driver bug)."""

    name = "broken"

    def __init__(self) -> None:
        self.events: List[str] = []

    def open(self) -> None:
        self.events.append("open")

    def read(self) -> np.ndarray:
        self.events.append("read")
        raise OSError("USB transfer failed")

    def close(self) -> None:
        self.events.append("close")


def test_unexpected_read_errors_close_and_back_off() -> None:
    backend = BrokenReadBackend()
    daemon = RecordingDaemon(config(backend="opencv", interval_seconds=0.01))
    src = running(daemon, backend)  # type: ignore[arg-type]
    try:
        assert src.request_capture(wait=10) is False  # answered, not left to time out
        wait_until(lambda: src.status()["failures"] >= 3, 10, "three failures")
        assert src.last_error is not None and src.last_error["reason"] == "internal_error"
    finally:
        src.stop()
    # every read is of a freshly opened camera: it was closed and reopened after each failure
    ev = backend.events
    assert ev.count("read") <= ev.count("open") <= ev.count("read") + 1, ev
    assert ev.count("close") >= ev.count("read"), ev


def test_request_only_source_retries_a_failed_camera(tmp_path: Path) -> None:
    """No interval, no on_change: a failed camera used to stay failed ("retry in 0 s") until
    the next request. It is retried on the backoff now, and recovers without a request."""
    video = tmp_path / "later.avi"
    daemon = RecordingDaemon(config(backend="opencv", device=str(video)))
    src = running(daemon)
    try:
        assert src.request_capture(wait=5) is False  # not there yet
        wait_until(lambda: src.status()["failures"] >= 3, 10, "retries without requests")
        assert "retry in" in src.health()[0].summary
        os.rename(write_video(tmp_path / "staging.avi", [solid(COLOURS[0])]), video)  # plug in
        wait_until(lambda: src.health()[0].state == "ok" and src.status()["open"], 10,
                   "recovery without a request")
    finally:
        src.stop()
    assert daemon.count() == 0  # retries probe the camera; only requests are classified
