"""Helpers shared by every test area (one copy each): bounded waits, free loopback ports, the
real C-NMC sample, and a decompression-bomb PNG."""

from __future__ import annotations

import socket
import struct
import time
import zlib
from pathlib import Path
from typing import Any, Callable, List

import pytest

from tests.conftest import CNMC_SAMPLE


def wait_until(pred: Callable[[], Any], timeout: float = 15.0, what: str = "condition", *,
               interval: float = 0.02) -> Any:
    """Poll `pred` every `interval` s until it returns something truthy and return that; fail
    the test after `timeout` seconds, so that no wait in a test is unbounded."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Clock:
    """A monotonic clock the test moves by hand (`clock.t += 60`)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cnmc_files() -> List[Path]:
    """The 71 real C-NMC 2019 cells, one segmented cell on black per image (Gupta & Gupta 2019,
    TCIA, doi 10.7937/tcia.2019.dc64i46r, CC BY 3.0); fails the test if the sample is missing."""
    files = sorted(CNMC_SAMPLE.glob("fold_*/*/*.bmp"))
    if len(files) != 71:
        pytest.fail(f"expected 71 C-NMC sample images in {CNMC_SAMPLE}, found {len(files)}; "
                    "shared/ must sit beside the repo")
    return files


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height: the header is all a decompression bomb needs."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
