"""Folder source: watch an inbox, wait until files are completely written, claim atomically.

A file is claimed by renaming it into `data_dir/processing/<id>__<name>`: from then on it has an
id, and whatever happens (even `kill -9`) `recover()` at the next start finishes it exactly once.
When the inbox is on another filesystem the rename is split in two: an atomic rename into
`<inbox>/.claiming/<id>__<name>` (the claim), then a copy into processing/ (finished by
`recover()` if interrupted), so even then a file is never taken twice.
Everything that is not a settled regular image file (directories, symlinks, other extensions)
is claimed too and ends in quarantine with a reason. Names starting with "." and the temporary
suffixes below are left alone: copy tools write those and rename them when done.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib
import logging
import os
import shutil
import stat
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from edge.component import Component, HealthCheck
from edge.journal import new_id
from edge.pipeline import Job, Stopped
from edge.retention import fsync_dir, log_name, remove_entry, split_stored, stored_name

log = logging.getLogger(__name__)

TEMP_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".filepart", "~")
CLAIMING = ".claiming"   # in the inbox: claimed across filesystems, copy not finished
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid_time(id: str) -> Optional[float]:
    """Creation time (seconds) encoded in an id from edge.journal.new_id."""
    try:
        ms = 0
        for ch in id[:10]:
            ms = ms * 32 + _CROCKFORD.index(ch)
    except ValueError:
        return None
    return ms / 1000.0


def open_for_writing(path: str) -> Optional[bool]:
    """True if some process has the file open for writing (Linux read lease test).

    None when it cannot be told cheaply (not our file and no CAP_LEASE, leases disabled):
    the settle time alone decides then.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    except OSError as exc:
        return True if exc.errno == errno.EAGAIN else None
    finally:
        os.close(fd)


def _shorten_move_pairing() -> None:
    """watchdog holds each IN_MOVED_FROM event (our own claim renames) for 0.5 s to pair it
    with an IN_MOVED_TO, and its queue is FIFO, so every new file's event waits behind it.
    We only need wake-ups, not paired moves: hold them briefly instead."""
    for module, cls in (("watchdog.observers.inotify_move_event_grouper",
                         "InotifyMoveEventGrouper"),  # watchdog >= 6
                        ("watchdog.observers.inotify_buffer", "InotifyBuffer")):  # older
        try:
            klass = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError):
            continue
        if isinstance(getattr(klass, "delay", None), (int, float)):
            klass.delay = min(klass.delay, 0.01)


# What filesystems and other OSes put at the top of a volume: not inputs, and often not ours to move.
VOLUME_ENTRIES = {"lost+found", "system volume information", "$recycle.bin"}


def ignored(name: str) -> bool:
    return name.startswith(".") or name.lower().endswith(TEMP_SUFFIXES) or name.lower() in VOLUME_ENTRIES


class FolderSource(Component):
    name = "folder"

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        self.cfg = daemon.config.sources.folder
        self.inbox = Path(self.cfg.path)
        self.processing: Path = daemon.store.processing
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._observer: Any = None
        self.mode = "polling"
        self._pending: Dict[str, Tuple[Tuple[int, ...], float]] = {}
        self.claimed = 0
        self.last_claim: Optional[float] = None
        self.last_scan: Optional[float] = None
        self.error: Optional[str] = None
        self._cross_device = False
        self._reported: set = set()
        self._pass_error: Optional[str] = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.inbox.mkdir(parents=True, exist_ok=True)
        self._cross_device = os.stat(self.inbox).st_dev != os.stat(self.processing).st_dev
        if self._cross_device:
            log.info("inbox %s and data_dir are on different filesystems: claims are copied "
                     "(through %s/%s)", self.inbox, self.inbox, CLAIMING)
        if self.cfg.use_inotify:
            self._start_observer()
        self._thread = threading.Thread(target=self._run, name="folder-source", daemon=True)
        self._thread.start()
        log.info("folder source watching %s (%s, settle %.1f s)", self.inbox, self.mode,
                 self.cfg.settle_seconds)

    def _start_observer(self) -> None:
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer

            wake = self._wake

            class _Wake(FileSystemEventHandler):
                def on_any_event(self, event: Any) -> None:
                    wake.set()

            _shorten_move_pairing()
            obs = Observer()
            obs.schedule(_Wake(), str(self.inbox), recursive=False)
            obs.daemon = True
            obs.start()
        except Exception as exc:
            log.warning("inotify unavailable (%s); polling %s every %.1f s", exc, self.inbox,
                        self.cfg.poll_interval)
            return
        self._observer = obs
        self.mode = "inotify"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; files already claimed are finished by the pipeline (or recovery)."""
        self._stop.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ scanning

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                delay = self.scan()
            except OSError as exc:
                self.error = f"cannot scan {self.inbox}: {exc.strerror}"
                if self.error not in self._reported:
                    log.error("%s", self.error)
                    self._reported.add(self.error)
                delay = self.cfg.poll_interval
            except Exception as exc:  # a bug must not silently end the source
                self.error = f"folder source error: {type(exc).__name__}: {exc}"
                log.exception("%s", self.error)
                delay = max(self.cfg.poll_interval, 5.0)
            self._wake.wait(delay)
            self._wake.clear()

    def scan(self) -> float:
        """One pass over the inbox; claims settled entries. Returns seconds until the next pass."""
        now = time.monotonic()
        self.last_scan = time.time()
        self._pass_error = None
        if self._cross_device:
            self._retry_held()
        # With inotify the poll is only a safety net (e.g. events lost on overflow).
        next_wait = self.cfg.poll_interval if self.mode == "polling" else max(
            self.cfg.poll_interval, 10.0)
        seen = set()
        with os.scandir(self.inbox) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            if self._stop.is_set():
                break
            name = entry.name
            if ignored(name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            seen.add(name)
            sig = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_mode)
            prev = self._pending.get(name)
            if prev is None or prev[0] != sig:
                self._pending[name] = (sig, now)
                if self.cfg.settle_seconds > 0:
                    next_wait = min(next_wait, self.cfg.settle_seconds)
                    continue
                prev = self._pending[name]
            waited = now - prev[1]
            if waited < self.cfg.settle_seconds:
                next_wait = min(next_wait, self.cfg.settle_seconds - waited)
                continue
            if entry.is_file(follow_symlinks=False) and open_for_writing(entry.path):
                next_wait = min(next_wait, max(self.cfg.settle_seconds, 0.2))
                continue
            if self._claim(name):
                self._pending.pop(name, None)
            else:  # refused: retry at the next poll without waiting to settle again
                next_wait = min(next_wait, self.cfg.poll_interval)
        for name in list(self._pending):
            if name not in seen:
                del self._pending[name]
        self.error = self._pass_error
        return max(0.05, next_wait)

    def _claim(self, name: str) -> bool:
        """Rename into processing/ and submit. False if the file could not be claimed."""
        id = new_id()
        stored = stored_name(id, name)
        src, dst = self.inbox / name, self.processing / stored
        try:
            os.rename(src, dst)
        except FileNotFoundError:
            return True  # someone else took it: nothing left to do
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                msg = f"cannot claim {log_name(name)}: {exc.strerror}"
                if msg not in self._reported:
                    log.error("%s (check the inbox permissions)", msg)
                    self._reported.add(msg)
                self._pass_error = msg
                return False
            claimed = self._copy_claim(src, dst)
            if claimed is None:
                return True   # gone, or held in .claiming until the copy can be finished
            if not claimed:
                self._pass_error = f"cannot claim {log_name(name)} across filesystems"
                return False
        self._submit(dst, name)
        return True

    def _submit(self, path: Path, name: str) -> None:
        """`name` is the inbox name; the stored name may be a shortened one."""
        id = split_stored(path.name)[0]
        self.claimed += 1
        self.last_claim = time.time()
        job = Job(id=id, source="folder", name=name, analysis=self.cfg.analysis,
                  received=time.time(), stored=path.name, path=path)
        if not submit_blocking(self.daemon.pipeline, job, self._stop):
            self._unclaim(path, name)

    def _unclaim(self, path: Path, name: str) -> None:
        """Stopping with the queue full: give the file back to the inbox, so a stop leaves
        nothing half-taken. Across filesystems, or if the name was reused meanwhile, it stays
        in processing/ and the next start's recovery finishes it."""
        back = self.inbox / name
        try:
            if path.is_file() and not path.is_symlink():
                os.link(path, back)   # fails if a new file took the name: never overwrites
                path.unlink()
            elif not os.path.lexists(back):
                os.rename(path, back)
            else:
                return
        except OSError:
            return
        self.claimed -= 1

    def _copy_claim(self, src: Path, dst: Path) -> Optional[bool]:
        """Claim across filesystems: an atomic rename within the inbox's filesystem first, so
        a crash during the copy can neither lose the file nor leave it to be claimed again.
        True: `dst` is ready; False: not claimed; None: nothing to submit now."""
        held = self.inbox / CLAIMING / dst.name
        try:
            held.parent.mkdir(exist_ok=True)
            os.rename(src, held)
        except FileNotFoundError:
            return None   # someone else took it
        except OSError as exc:
            msg = f"cannot claim {log_name(src.name)} across filesystems: {exc.strerror}"
            if msg not in self._reported:  # once, not at every poll while it stays there
                log.error("%s", msg)
                self._reported.add(msg)
            return False
        return True if self._finish_held(held) else None

    def _finish_held(self, held: Path) -> bool:
        """Copy a held claim into processing/; on failure (e.g. data_dir full) it stays held
        and every scan pass tries again."""
        try:
            finish_held_claim(held, self.processing / held.name)
            return True
        except OSError as exc:
            msg = f"cannot copy {log_name(held.name)} into {self.processing}: {exc.strerror or exc}"
            if msg not in self._reported:
                log.error("%s (it waits in %s)", msg, held.parent)
                self._reported.add(msg)
            self._pass_error = msg
            return False

    def _retry_held(self) -> None:
        for path in _held(self.inbox / CLAIMING):
            if self._stop.is_set():
                return
            if self.daemon.journal.get(split_stored(path.name)[0]) is not None:
                try:   # its copy was processed; only letting go of it failed
                    _let_go(path)
                except OSError as exc:
                    msg = f"cannot remove {log_name(path.name)} from {path.parent}: {exc.strerror}"
                    if msg not in self._reported:
                        log.error("%s", msg)
                        self._reported.add(msg)
                continue
            if self._finish_held(path):
                self._submit(self.processing / path.name, split_stored(path.name)[1])

    # ------------------------------------------------------------------ reporting

    def health(self) -> List[HealthCheck]:
        detail = {"path": str(self.inbox), "mode": self.mode, "claimed": self.claimed,
                  "waiting": len(self._pending)}
        if self.error:
            return [HealthCheck("folder source", "fail", self.error, detail)]
        alive = self._thread is not None and self._thread.is_alive()
        if not alive:
            return [HealthCheck("folder source", "fail", "not running", detail)]
        summary = f"watching {self.inbox} ({self.mode}), {self.claimed} claimed"
        if self._cross_device:
            summary += " (on another filesystem than data_dir: claims are copied)"
        return [HealthCheck("folder source", "ok", summary, detail)]

    def status(self) -> Dict[str, Any]:
        return {"path": str(self.inbox), "mode": self.mode, "claimed": self.claimed,
                "waiting": len(self._pending), "last_claim": self.last_claim,
                "error": self.error}


def submit_blocking(pipeline: Any, job: Job, stop: threading.Event) -> bool:
    """Submit with back-pressure. Tried at least once, even when stopping (the pipeline still
    takes work while the sources stop); gives up only when stopping and the queue is full."""
    while True:
        try:
            pipeline.submit(job, timeout=0.5)
            return True
        except Stopped:
            return False
        except Exception as exc:
            if type(exc).__name__ != "Busy":
                raise
            if stop.is_set():
                return False


def _copy_leaf(src: str, dst: str) -> None:
    """A file inside a claimed directory: regular files are copied when readable, anything
    else (FIFO, socket, device) becomes a FIFO; the directory is quarantined either way."""
    if stat.S_ISREG(os.lstat(src).st_mode):
        with contextlib.suppress(OSError):
            shutil.copy2(src, dst)
    else:
        os.mkfifo(dst)


def _copy_entry(src: Path, dst: Path) -> None:
    """Copy what an inbox entry is, so the pipeline can judge it as it would after a rename:
    a symlink stays a link (never followed), a directory stays a directory (with what of its
    content can be read), and any other special file becomes a FIFO, which reads as "not a
    regular file" (copying a FIFO's content would block forever)."""
    st = src.lstat()
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISDIR(st.st_mode):
        try:
            shutil.copytree(src, dst, symlinks=True, copy_function=_copy_leaf)
        except shutil.Error as exc:   # e.g. an unreadable subfolder: the rest is copied
            log.warning("part of the claimed folder %s could not be copied (%d entries)",
                        log_name(src.name), len(exc.args[0]) if exc.args else 0)
    elif stat.S_ISREG(st.st_mode):
        shutil.copy2(src, dst)
        with open(dst, "rb") as f:
            os.fsync(f.fileno())
    else:
        os.mkfifo(dst)


def _let_go(held: Path) -> None:
    """Remove a held claim whose copy is in processing/. What cannot be removed (a folder
    with content the service may not delete) is set aside under a hidden name, so it is never
    copied and submitted a second time."""
    if held.is_dir() and not held.is_symlink():
        shutil.rmtree(held, ignore_errors=True)
    else:
        held.unlink(missing_ok=True)
    if os.path.lexists(held):
        aside = held.with_name(f".{held.name}.leftover")
        os.rename(held, aside)
        log.warning("could not remove all of %s; left as %s", log_name(held.name), log_name(aside.name))


def _held(held_dir: Path) -> List[Path]:
    """Claims waiting in `<inbox>/.claiming` (hidden names are leftovers, set aside)."""
    try:
        return sorted(p for p in held_dir.iterdir() if not p.name.startswith("."))
    except OSError:
        return []


def finish_held_claim(held: Path, dst: Path) -> None:
    """Copy a claim held in `<inbox>/.claiming` into processing/, durably, then let it go.
    `dst` appears whole or not at all (copy to a hidden name, then rename)."""
    if not os.path.lexists(dst):
        tmp = dst.with_name("." + dst.name + ".claim")
        try:
            remove_entry(tmp)
            _copy_entry(held, tmp)
            os.rename(tmp, dst)
        except OSError:
            with contextlib.suppress(OSError):
                remove_entry(tmp)
            raise
        fsync_dir(dst.parent)
    _let_go(held)


def _finish_held_claims(daemon: Any) -> None:
    held_dir = Path(daemon.config.sources.folder.path) / CLAIMING
    for path in _held(held_dir):
        try:
            finish_held_claim(path, daemon.store.processing / path.name)
            log.info("finished the interrupted claim of %s", log_name(path.name))
        except OSError as exc:
            log.error("cannot finish the claim of %s: %s (it stays in %s)", log_name(path.name),
                      exc.strerror or exc, held_dir)


def recover(daemon: Any, stop: threading.Event) -> int:
    """Finish leftovers in processing/ after a crash: journaled ones are only moved on,
    the others are processed again under their original id. Returns the number found."""
    store, journal = daemon.store, daemon.journal
    _finish_held_claims(daemon)
    count = 0
    for entry in sorted(os.listdir(store.processing)):
        path = store.processing / entry
        if entry.startswith("."):
            # a half-done cross-filesystem claim copy: the claim itself is in <inbox>/.claiming
            log.info("removing incomplete claim copy %s", log_name(entry))
            remove_entry(path)
            continue
        id, name = split_stored(entry)
        if not id:
            log.warning("processing/%s has no id; giving it one", log_name(entry))
            id = new_id()
            new_path = store.processing / stored_name(id, entry)
            os.rename(path, new_path)
            path, entry, name = new_path, new_path.name, entry
        count += 1
        result = journal.get(id)
        if result is not None:
            try:
                store.place(path, None, store.target_for(result, entry), result)
            except OSError as exc:
                log.error("recovered %s is journaled but could not be moved on: %s", id,
                          exc.strerror)
                continue
            log.info("recovered %s (%s): already journaled as %s, moved on", id,
                     log_name(name), result["status"])
            continue
        log.info("recovered %s (%s): not journaled, processing again", id, log_name(name))
        job = Job(id=id, source="folder", name=name,
                  analysis=daemon.config.sources.folder.analysis,
                  received=ulid_time(id) or time.time(), stored=entry, path=path)
        submit_blocking(daemon.pipeline, job, stop)
    return count
