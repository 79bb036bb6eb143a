"""Where inputs end up on disk, and how long they stay there, so an SD card never fills.

Layout under `storage.data_dir`:
  processing/<id>__<name>          claimed folder inputs (crash recovery finishes these)
  archive/YYYY-MM-DD/<id>__<name>  inputs with a result (when archiving is on and space allows)
  quarantine/<id>__<name>          rejected inputs + `<id>__<name>.reason.json`
  thumbs/YYYY-MM-DD/<id>.jpg       small previews for the status page
  annotated/YYYY-MM-DD/<id>.jpg    analyzer overlays (cells mode)
Archive, thumbnails, annotated images and quarantine are pruned by age and total size;
journal rows by count and age, never while their result waits in the HIAS outbox.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

log = logging.getLogger(__name__)

NAME_MAX_BYTES = 255
REASON_SUFFIX = ".reason.json"   # beside each quarantined input
_UNSAFE = re.compile(r"[\x00-\x1f/\\]")


def fsync_dir(path: Path) -> None:
    """Make renames into or out of `path` durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def display_name(name: str) -> str:
    """A file name as valid UTF-8 text (undecodable bytes become U+FFFD) for journal and JSON."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def log_name(name: str) -> str:
    """`display_name` with every non-printable character escaped (`\\n`, `\\x1b`, `\\u2028`...):
    a file name is untrusted, and one holding a line break or terminal controls must not
    forge log lines."""
    text = display_name(name)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)


def safe_name(name: str, fallback: str = "upload") -> str:
    """A client-supplied name reduced to one harmless path component."""
    base = _UNSAFE.sub("_", display_name(name).replace("\\", "/").split("/")[-1]).strip()
    if base in ("", ".", ".."):
        return fallback
    return base


def stored_name(id: str, name: str) -> str:
    """`<id>__<name>` as valid UTF-8, shortened (extension kept) to fit NAME_MAX even with a
    `.reason.json` suffix."""
    name = display_name(name)  # undecodable bytes would break the journal's text columns
    budget = NAME_MAX_BYTES - len(id) - 2 - len(REASON_SUFFIX)
    raw = name.encode("utf-8")
    if len(raw) > budget:
        stem, dot, ext = name.rpartition(".")
        ext_b = (dot + ext).encode("utf-8") if dot and len(ext) < 16 else b""
        raw = raw[: budget - len(ext_b)] + ext_b
        name = raw.decode("utf-8", "ignore")
    return f"{id}__{name}"


def split_stored(stored: str) -> Tuple[str, str]:
    """Inverse of stored_name: (id, name); id is '' when the name does not carry one."""
    id, sep, name = stored.partition("__")
    if not sep or len(id) != 26 or not id.isalnum():
        return "", stored
    return id, name


def day_of(iso_time: str) -> str:
    return iso_time[:10]


class Store:
    """Paths and file moves for inputs; decides whether archiving is allowed right now."""

    def __init__(self, storage_cfg: Any) -> None:
        self.cfg = storage_cfg
        self.root = Path(storage_cfg.data_dir)
        self.processing = self.root / "processing"
        self.archive = self.root / "archive"
        self.quarantine = self.root / "quarantine"
        self.thumbs = self.root / "thumbs"
        self.annotated = self.root / "annotated"
        for d in (self.processing, self.archive, self.quarantine, self.thumbs, self.annotated):
            d.mkdir(parents=True, exist_ok=True)
        self._free_cache: Tuple[float, int] = (0.0, 0)
        self._low_space_logged = False
        self._lock = threading.Lock()

    def free_bytes(self, max_age: float = 5.0) -> int:
        with self._lock:
            t, free = self._free_cache
            if time.monotonic() - t > max_age:
                free = shutil.disk_usage(self.root).free
                self._free_cache = (time.monotonic(), free)
            return free

    def low_space(self) -> bool:
        return self.free_bytes() < self.cfg.min_free_mb * 1024 * 1024

    def archiving(self) -> bool:
        """Archive inputs now? Off by config, or below `min_free_mb` free space."""
        if not self.cfg.archive_images or self.cfg.archive_max_days == 0:
            return False
        if self.low_space():
            if not self._low_space_logged:
                log.warning("free space below storage.min_free_mb (%d MB): archiving paused",
                            self.cfg.min_free_mb)
                self._low_space_logged = True
            return False
        if self._low_space_logged:
            log.info("free space above storage.min_free_mb again: archiving resumed")
            self._low_space_logged = False
        return True

    def sync_processing(self) -> None:
        """Make the claim renames durable before their results are (power loss safety)."""
        fsync_dir(self.processing)

    def rel(self, path: Optional[Path]) -> Optional[str]:
        return None if path is None else str(path.relative_to(self.root))

    def target_for(self, result: Dict[str, Any], stored: str) -> Optional[Path]:
        """Where an input goes after its result is journaled; None means delete it."""
        if result["status"] == "quarantined":
            return None if self.low_space() else self.quarantine / stored
        if not self.archiving():
            return None
        return self.archive / day_of(result["time"]) / stored

    def thumb_path(self, result: Dict[str, Any]) -> Path:
        return self.thumbs / day_of(result["time"]) / f"{result['id']}.jpg"

    def annotated_path(self, result: Dict[str, Any]) -> Path:
        return self.annotated / day_of(result["time"]) / f"{result['id']}.jpg"

    def write_file(self, path: Path, data: bytes) -> None:
        write_atomic(path, data)

    def place(self, src: Optional[Path], data: Optional[bytes], target: Optional[Path],
              result: Dict[str, Any]) -> None:
        """Move a claimed file (or write uploaded bytes) to `target`; delete src if no target."""
        if target is None:
            if src is not None:
                remove_entry(src)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        if src is not None:
            os.replace(src, target)
        elif data is not None:
            self.write_file(target, data)
        if result["status"] == "quarantined":
            reason = {k: result.get(k) for k in ("id", "time", "source", "name", "sha256",
                                                  "reason", "detail")}
            self.write_file(target.with_name(target.name + REASON_SUFFIX),
                            (json.dumps(reason, ensure_ascii=False, indent=2) + "\n").encode())


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary name so a crash never leaves a half file under the real name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def remove_entry(path: Path) -> None:
    """Delete a file, link or directory tree (whatever an input turned out to be)."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------------------- retention


def _quarantined_at(path: Path) -> float:
    """When an input was claimed: its id's time, because a claimed file keeps the mtime it had
    in the inbox (years old after `cp -p`); the file's mtime only for names without an id."""
    from edge.sources.folder import ulid_time  # edge.sources imports this module

    id, _ = split_stored(path.name)
    t = ulid_time(id) if id else None
    return t if t is not None else path.lstat().st_mtime


def _day_dirs(root: Path) -> List[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"\d{4}-\d\d-\d\d", p.name))


def _files_oldest_first(root: Path) -> Iterator[Path]:
    for d in _day_dirs(root):
        yield from sorted(p for p in d.iterdir() if not p.is_dir() or p.is_symlink())


def _dir_size(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


class Retention:
    """Prunes files and journal rows; `run()` is called at start and periodically."""

    def __init__(self, store: Store, journal: Any) -> None:
        self.store = store
        self.journal = journal
        self.last_run: Optional[float] = None
        self.last_summary: Dict[str, int] = {}

    def run(self, now: Optional[float] = None) -> Dict[str, int]:
        now = time.time() if now is None else now
        cfg = self.store.cfg
        cutoff_day = time.strftime("%Y-%m-%d", time.gmtime(now - cfg.archive_max_days * 86400))
        # The pipeline may be creating and filling yesterday's or today's folder right now:
        # removing it between its mkdir and the file's rename would lose that file's copy.
        recent_day = time.strftime("%Y-%m-%d", time.gmtime(now - 86400))
        summary = {"days_removed": 0, "files_removed": 0, "quarantine_removed": 0}
        for root in (self.store.archive, self.store.thumbs, self.store.annotated):
            for d in _day_dirs(root):
                if d.name < cutoff_day or (cfg.archive_max_days == 0 and d.name < recent_day):
                    shutil.rmtree(d, ignore_errors=True)
                    summary["days_removed"] += 1
        summary["files_removed"] = self._limit_size(int(cfg.archive_max_gb * 1024 ** 3))
        summary["quarantine_removed"] = self._limit_quarantine(
            now - max(cfg.archive_max_days, 1) * 86400, int(cfg.quarantine_max_gb * 1024 ** 3))
        summary["rows_removed"] = self.journal.prune(cfg.journal_max_rows, cfg.journal_max_days,
                                                     max_bytes=int(cfg.journal_max_mb * 1024 ** 2),
                                                     now=now)
        for root in (self.store.archive, self.store.thumbs, self.store.annotated):
            for d in _day_dirs(root):
                if d.name < recent_day:
                    with contextlib.suppress(OSError):
                        d.rmdir()  # only succeeds when empty
        self.last_run, self.last_summary = now, summary
        if any(summary.values()):
            log.info("retention: removed %s", ", ".join(f"{k}={v}" for k, v in summary.items()))
        return summary

    def _limit_quarantine(self, cutoff: float, limit: int) -> int:
        """Remove quarantined inputs (with their reason files) older than `cutoff`, then the
        oldest until the rest fit in `limit` bytes. Returns the number of inputs removed."""
        groups: Dict[str, List[Path]] = {}   # an input and its reason file go together
        for p in self.store.quarantine.iterdir():
            groups.setdefault(p.name[:-len(REASON_SUFFIX)] if p.name.endswith(REASON_SUFFIX)
                              else p.name, []).append(p)
        entries = []
        for name, paths in groups.items():
            with contextlib.suppress(OSError):
                size = sum(_dir_size(p) if p.is_dir() and not p.is_symlink() else p.lstat().st_size
                           for p in paths)
                entries.append((_quarantined_at(paths[0]), name, paths, size))
        entries.sort()
        total, removed = sum(e[3] for e in entries), 0
        for at, _name, paths, size in entries:
            if at >= cutoff and total <= limit:
                break
            try:
                for p in paths:
                    remove_entry(p)
            except OSError:
                continue
            total -= size
            removed += 1
        return removed

    def _limit_size(self, limit: int) -> int:
        """Delete oldest archived inputs, then thumbnails, until all of them fit in `limit`."""
        roots = (self.store.archive, self.store.annotated, self.store.thumbs)
        total = sum(_dir_size(r) for r in roots)
        removed = 0
        for root in roots:
            for f in _files_oldest_first(root):
                if total <= limit:
                    return removed
                try:
                    size = f.lstat().st_size
                    f.unlink()
                except OSError:
                    continue
                total -= size
                removed += 1
        return removed

