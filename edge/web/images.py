"""Find a result's archived input (or annotated image) on disk and make small thumbnails.

Paths are only ever served from inside `storage.data_dir`, and ids are checked against a
strict pattern before they touch the file system, so a crafted id cannot escape the data dir.
Thumbnails are made lazily on first request and cached under `data_dir/thumbs/`.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any, Mapping, Optional

from edge import imaging
from edge.pipeline import THUMB_SIZE
from edge.pipeline import thumbnail as make_thumbnail
from edge.retention import write_atomic

# the overlay's boxes are thin: the page shows this at <=320 CSS px, sharp at 2x density
ANNOTATED_THUMB_SIZE = 640
DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
FORMAT_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "BMP": "image/bmp", "TIFF": "image/tiff"}


def valid_id(result_id: str) -> bool:
    return bool(ID_RE.match(result_id)) and ".." not in result_id


def _inside(path: Path, root: Path) -> Optional[Path]:
    try:
        resolved = path.resolve()
        resolved.relative_to(root.resolve())
    except (OSError, ValueError):
        return None
    return resolved if resolved.is_file() else None


def find_image(journal: Any, result_id: str, data_dir: Path, kind: str = "image") \
        -> Optional[Path]:
    """Absolute path of the result's `image`, `annotated` or `thumb` file, if it still exists.

    The journal records these paths (relative to data_dir); retention may have removed the file.
    """
    path = journal.files(result_id).get(kind)
    return _inside(Path(path), data_dir) if path else None


def mimetype_for(path: Path) -> str:
    """The type of the file's bytes (from its header), never of its name: an upload named
    `.png` may hold a BMP, and a browser shows an image only when told its real type."""
    try:
        return FORMAT_MIME[imaging.probe_file(path).format]
    except (imaging.ImageError, OSError):
        return "application/octet-stream"


def thumb_cache_path(thumbs_dir: Path, result: Mapping[str, Any], annotated: bool = False
                     ) -> Path:
    """`thumbs/YYYY-MM-DD/<id>.jpg` (`<id>.annotated.jpg` for the overlay's): the pipeline's
    layout, so retention prunes ours too."""
    day = str(result.get("time") or "")[:10]
    name = f"{result['id']}.annotated.jpg" if annotated else f"{result['id']}.jpg"
    return thumbs_dir / (day if DAY_RE.match(day) else "undated") / name


def thumbnail(source: Path, cached: Optional[Path], max_pixels: int,
              size: int = THUMB_SIZE) -> bytes:
    """JPEG bytes of a <=`size` px thumbnail; cached atomically at `cached` when given.

    Raises `imaging.ImageError` when the archived file cannot be decoded.
    """
    if cached is not None and cached.is_file():
        return cached.read_bytes()
    image = imaging.decode(source.read_bytes(), max_pixels=max_pixels,
                           target=(size, size))
    data = make_thumbnail(image, size)  # the pipeline's own thumbnail, same look
    if data is None:
        raise imaging.ImageError("undecodable", "could not encode a thumbnail")
    if cached is not None:
        with contextlib.suppress(OSError):  # a full or read-only disk must not break the page
            write_atomic(cached, data)
    return data
