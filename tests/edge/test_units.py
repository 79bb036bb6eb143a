"""Small units: sd_notify framing, names on disk, ids, CPU temperature."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from edge import daemon as daemon_mod
from edge.journal import new_id
from edge.retention import display_name, safe_name, split_stored, stored_name
from edge.sdnotify import Notifier
from edge.sources.folder import ignored, ulid_time


def test_notify_path_and_abstract_sockets(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    s1 = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s1.bind(str(path))
    name = f"edge-unit-{os.getpid()}"
    s2 = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s2.bind("\0" + name)
    try:
        assert Notifier(str(path)).notify(READY=1, STATUS="two\nlines")
        assert s1.recv(100) == b"READY=1\nSTATUS=two lines"
        assert Notifier("@" + name).notify(WATCHDOG=1)
        assert s2.recv(100) == b"WATCHDOG=1"
    finally:
        s1.close()
        s2.close()
    assert Notifier("").notify(READY=1) is False
    assert Notifier(str(tmp_path / "gone.sock")).notify(READY=1) is False


def test_watchdog_interval(monkeypatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert Notifier.watchdog_interval() == 1.5
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Notifier.watchdog_interval() is None, "the pings are meant for another process"
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier.watchdog_interval() == 1.5
    monkeypatch.setenv("WATCHDOG_USEC", "0")
    assert Notifier.watchdog_interval() is None


def test_stored_names_fit_and_round_trip() -> None:
    id = new_id()
    long = "é" * 200 + ".tiff"
    s = stored_name(id, long)
    assert len((s + ".reason.json").encode()) <= 255 and s.endswith(".tiff")
    assert split_stored(stored_name(id, "a__b c.png")) == (id, "a__b c.png")
    assert split_stored("no-id.png") == ("", "no-id.png")
    assert display_name("caf\udce9") == "caf\ufffd"
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("C:\\x\\y.png") == "y.png"
    assert safe_name("..") == "upload" and safe_name("a\x00b.png") == "a_b.png"
    assert abs(ulid_time(id) - time.time()) < 5


def test_ignored_names() -> None:
    assert ignored(".x.bmp") and ignored("a.PART") and ignored("b~")
    assert not ignored("cell.bmp") and not ignored("notes.txt")


def test_cpu_temperature(tmp_path: Path, monkeypatch) -> None:
    zone = tmp_path / "thermal_zone0"
    zone.mkdir()
    (zone / "type").write_text("cpu_thermal\n")
    (zone / "temp").write_text("48312\n")
    monkeypatch.setattr(daemon_mod, "THERMAL", tmp_path)
    assert daemon_mod.cpu_temperature() == 48.312
    monkeypatch.setattr(daemon_mod, "THERMAL", tmp_path / "none")
    assert daemon_mod.cpu_temperature() is None


def test_optional_component_absent_module_is_skipped_with_warning(caplog) -> None:
    assert daemon_mod._optional_component("edge.not_written_yet", "Thing") is None
    assert "edge.not_written_yet is not available; Thing disabled" in caplog.text
    assert daemon_mod._optional_component("edge.sources.folder", "FolderSource") is not None


def test_pixel_bomb_is_refused_before_the_file_is_read(tmp_path: Path) -> None:
    """A huge file whose header is over the pixel limit is refused from its first bytes,
    not read whole into memory first (a Pi could be OOM-killed, then loop on recovery)."""
    import tracemalloc

    import pytest

    from edge.imaging import ImageError
    from edge.pipeline import read_claimed
    from tests.util import png_header_only

    bomb = tmp_path / "bomb.png"
    with open(bomb, "wb") as f:
        f.write(png_header_only(30000, 30000))
        f.truncate(64 * 1024 * 1024)  # sparse: costs no disk
    tracemalloc.start()
    try:
        with pytest.raises(ImageError) as exc:
            read_claimed(bomb, max_pixels=50_000_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert exc.value.reason == "too_many_pixels" and "30000x30000" in exc.value.message
    assert peak < 8 * 1024 * 1024, f"{peak} bytes allocated"
    small = tmp_path / "ok.png"
    small.write_bytes(png_header_only(10, 10))
    assert read_claimed(small, max_pixels=50_000_000) == small.read_bytes()
    assert len(read_claimed(bomb)) == 64 * 1024 * 1024  # no limit given: read as before
