"""Safe image decoding shared by the edge and the trainer.

Every input is probed (format and pixel count from the header, without decoding) before it is
decoded, so a decompression bomb or a text file renamed `.png` becomes an `ImageError` with a
reason instead of an out-of-memory kill or a crash.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Optional, Tuple, Union

import cv2
import numpy as np
from PIL import Image

SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF")
SUPPORTED_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
# the usual extension of each format, for inputs whose name has none that fits
FORMAT_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "TIFF": ".tif"}
# Pillow's names for what is one of ours to every other reader (OpenCV decodes the first
# picture of a multi-picture JPEG like any JPEG)
FORMAT_ALIASES = {"MPO": "JPEG"}
DEFAULT_MAX_PIXELS = 50_000_000  # a 2592x1944 field is 5 Mpx; 10x headroom

Image.MAX_IMAGE_PIXELS = None  # we enforce our own limit before decoding


class ImageError(ValueError):
    """An input that cannot become an image; `reason` is a short stable code for journals/APIs."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int


def probe(data: bytes) -> ImageInfo:
    """Format and size from the header only."""
    if not data:
        raise ImageError("empty", "the file is empty")
    return _probe_stream(io.BytesIO(data))


def probe_file(path: Union[str, Path]) -> ImageInfo:
    """`probe` for a stored file, reading only as much of it as the header needs (serving an
    archived image must not load the whole file to name its type)."""
    with open(path, "rb") as f:
        if not f.read(1):
            raise ImageError("empty", "the file is empty")
        f.seek(0)
        return _probe_stream(f)


def _probe_stream(fp: BinaryIO) -> ImageInfo:
    try:
        with Image.open(fp) as im:
            fmt, (w, h) = im.format or "", im.size
    except Exception as exc:  # PIL raises many types for garbage
        raise ImageError("not_an_image", f"not a readable image ({type(exc).__name__})") from None
    fmt = FORMAT_ALIASES.get(fmt, fmt)
    if fmt not in SUPPORTED_FORMATS:
        raise ImageError(
            "unsupported_format", f"{fmt or 'unknown'} is not supported; use JPEG, PNG, BMP or TIFF"
        )
    return ImageInfo(fmt, w, h)


def check_pixels(info: ImageInfo, max_pixels: int) -> None:
    """`too_many_pixels` when the header's size exceeds the limit (checked before decoding)."""
    if info.width * info.height > max_pixels:
        raise ImageError(
            "too_many_pixels",
            f"{info.width}x{info.height} exceeds the limit of {max_pixels} pixels",
        )


def _reduction_flag(info: ImageInfo, target: Optional[Tuple[int, int]]) -> Tuple[int, int]:
    """Largest JPEG DCT reduction that keeps the image at least as big as the target (h, w)."""
    if info.format != "JPEG" or target is None:
        return cv2.IMREAD_COLOR, 1
    th, tw = target
    for factor, flag in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                         (2, cv2.IMREAD_REDUCED_COLOR_2)):
        if info.width // factor >= tw and info.height // factor >= th:
            return flag, factor
    return cv2.IMREAD_COLOR, 1


def _looks_truncated(data: bytes, fmt: str) -> bool:
    if fmt == "JPEG":
        # no end-of-image marker after the last start-of-scan (entropy-coded data cannot
        # contain one); data after the EOI (padding, camera trailers) is not truncation
        return data.find(b"\xff\xd9", max(0, data.rfind(b"\xff\xda"))) < 0
    if fmt == "PNG":
        # the whole IEND chunk (length 0, type, CRC); bytes after it are not truncation
        return b"\x00\x00\x00\x00IEND\xaeB`\x82" not in data
    if fmt == "BMP" and len(data) >= 6:
        # the header's file size (0 from some writers: then there is nothing to go by)
        return len(data) < int.from_bytes(data[2:6], "little")
    return False


def decode(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    target: Optional[Tuple[int, int]] = None,
) -> np.ndarray:
    """Bytes -> HxWx3 uint8 BGR.

    `target` (h, w) lets large JPEGs decode at reduced size when the consumer only needs that
    much resolution (whole-image mode into a 100x100 model).
    """
    info = probe(data)
    check_pixels(info, max_pixels)
    if _looks_truncated(data, info.format):
        raise ImageError("truncated", f"the {info.format} data is truncated")
    flag, _ = _reduction_flag(info, target)
    buf = np.frombuffer(data, np.uint8)
    if info.format in ("PNG", "TIFF"):   # may hold 16-bit samples: keep them for _to_8bit
        image = cv2.imdecode(buf, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR)
        if image is not None and image.dtype == np.uint16:
            image = _to_8bit(image)
        elif image is not None and image.dtype != np.uint8:   # e.g. float TIFF: OpenCV's own way
            image = cv2.imdecode(buf, flag)
    else:
        image = cv2.imdecode(buf, flag)
    if image is None or image.size == 0:
        raise ImageError("undecodable", f"the {info.format} data could not be decoded")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image


def _to_8bit(image: np.ndarray) -> np.ndarray:
    """16-bit samples to 8 bits by the depth they actually use: camera sensors store 10- or
    12-bit data in 16-bit files, and dropping the usual 8 low bits would leave them nearly
    black (a 12-bit white is 15 of 255). The depth is taken from the largest sample."""
    bits = max(8, int(image.max()).bit_length())
    return (image >> (bits - 8)).astype(np.uint8)


def read(
    path: Union[str, Path],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    target: Optional[Tuple[int, int]] = None,
) -> np.ndarray:
    """Decode a file; unreadable files become `ImageError` too."""
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        raise ImageError("not_a_file", "is a directory, not an image file") from None
    except OSError as exc:
        raise ImageError("unreadable", f"cannot read file: {exc.strerror}") from None
    return decode(data, max_pixels=max_pixels, target=target)


def fit_within(image_bgr: np.ndarray, max_side: int) -> Tuple[np.ndarray, float]:
    """Shrink (never enlarge) so the longer side is at most `max_side`; returns (image, scale).

    For previews (thumbnails, annotated fields), not for model input: that is edge.preprocess.
    The input itself is returned unchanged when it already fits.
    """
    h, w = image_bgr.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return image_bgr, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image_bgr, size, interpolation=cv2.INTER_AREA), scale
