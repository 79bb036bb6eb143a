"""Decode in a small thread pool, infer in one thread, journal in one thread; bounded queues.

    submit() -> [intake] -> decode workers -> [decoded] -> inference thread -> [done] -> finisher
The finisher writes thumbnails, commits the journal row (+ outbox) and only then moves the
input to the archive/quarantine and tells listeners, so a crash at any point leaves either a
journaled row or an unjournaled file in processing/ (which recovery finishes). Every queue is
bounded: a full pipeline blocks the folder source and makes `submit(timeout=...)` raise `Busy`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import stat
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

from edge import DISCLAIMER, imaging
from edge.journal import utc_iso
from edge.retention import Store, display_name, log_name

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 512 * 1024 * 1024  # larger files are quarantined without reading them
HEADER_BYTES = 256 * 1024  # enough for the size in JPEG/PNG/BMP headers (after EXIF)
THUMB_SIZE = 160
GROUP_COMMIT = 32  # results per journal transaction at most

# An analyzer turns a decoded image into the image-level outcome. See docs/architecture.md.
Analyzer = Callable[[np.ndarray, Any], Dict[str, Any]]


class Busy(Exception):
    """The pipeline is full (back-pressure); try again later (HTTP 503)."""


class Stopped(Exception):
    """The pipeline no longer accepts work (daemon shutting down)."""


def whole_image(image_bgr: np.ndarray, classifier: Any) -> Dict[str, Any]:
    """The built-in analyzer: the whole image is one input to the model."""
    p = classifier.predict(image_bgr)
    return {"probability": p.probability, "latency_ms": p.latency_ms}


@dataclass
class Job:
    """One input. Exactly one of `data` (bytes in memory) or `path` (claimed file) is set."""

    id: str
    source: str
    name: str
    analysis: str
    received: float
    stored: str  # `<id>__<name>`: file name in processing/, archive/, quarantine/
    data: Optional[bytes] = None
    path: Optional[Path] = None
    future: Optional[Future] = None
    # filled in by the stages
    sha256: Optional[str] = None
    image: Optional[np.ndarray] = None
    thumb: Optional[bytes] = None
    error: Optional[imaging.ImageError] = None
    outcome: Dict[str, Any] = field(default_factory=dict)
    result: Optional[Dict[str, Any]] = None


def _refuse_too_many_pixels(f: Any, max_pixels: int) -> None:
    """An over-limit image is refused from its header before the whole (possibly huge) file
    is read into memory; a header the prefix cannot show is left to the full decode."""
    head = f.read(HEADER_BYTES)
    f.seek(0)
    try:
        info = imaging.probe(head)
    except imaging.ImageError:
        return
    imaging.check_pixels(info, max_pixels)


def read_claimed(path: Path, stored: Optional[str] = None,
                 max_pixels: Optional[int] = None) -> bytes:
    """Read a claimed input without following symlinks; non-regular files, unsupported
    extensions (of `stored`, the original name), oversized files and (with `max_pixels`)
    images whose header is over the pixel limit are ImageErrors."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise imaging.ImageError("not_found", "no such file (removed before it was read?)") from None
    if stat.S_ISLNK(st.st_mode):
        raise imaging.ImageError("symlink", "symbolic links are not followed; copy the file in")
    if stat.S_ISDIR(st.st_mode):
        raise imaging.ImageError("not_a_file", "is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise imaging.ImageError("not_a_file", "is not a regular file")
    suffix = os.path.splitext(stored or path.name)[1].lower()
    if suffix not in imaging.SUPPORTED_SUFFIXES:
        raise imaging.ImageError(
            "unsupported_extension",
            f"extension {suffix or '(none)'!r} is not one of {' '.join(imaging.SUPPORTED_SUFFIXES)}")
    if st.st_size > MAX_FILE_BYTES:
        raise imaging.ImageError("too_large", f"{st.st_size} bytes exceeds {MAX_FILE_BYTES}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            if max_pixels is not None:
                _refuse_too_many_pixels(f, max_pixels)
            return f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise imaging.ImageError("unreadable", f"cannot read file: {exc.strerror}") from None


def thumbnail(image_bgr: np.ndarray, size: int = THUMB_SIZE) -> Optional[bytes]:
    small, _ = imaging.fit_within(image_bgr, size)
    ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return buf.tobytes() if ok else None


class Pipeline:
    """Owns the stage threads. `classifier_fn()` returns the current model (reload swaps it)."""

    def __init__(
        self,
        *,
        classifier_fn: Callable[[], Any],
        journal: Any,
        store: Store,
        analyzers: Dict[str, Analyzer],
        listeners: Callable[[Dict[str, Any]], None],
        max_pixels: int = imaging.DEFAULT_MAX_PIXELS,
        thumbnails: bool = True,
        decode_workers: int = 2,
        queue_size: int = 8,
    ) -> None:
        self.classifier_fn = classifier_fn
        self.journal = journal
        self.store = store
        self.analyzers = analyzers
        self.listeners = listeners
        self.max_pixels = max_pixels
        self.thumbnails = thumbnails
        self._intake: queue.Queue = queue.Queue(maxsize=queue_size)
        self._decoded: queue.Queue = queue.Queue(maxsize=max(2, decode_workers * 2))
        self._done: queue.Queue = queue.Queue(maxsize=queue_size)
        self._n_decoders = max(1, decode_workers)
        self._threads: List[threading.Thread] = []
        self._accepting = False
        self._lock = threading.Lock()
        self.submitted = 0
        self.completed = 0
        self.failed = 0  # journal write failures (input left for recovery)
        self.counters = {"processed": 0, "positive": 0, "negative": 0, "quarantined": 0}
        self.last_progress = time.monotonic()
        self.last_error: Optional[str] = None

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        self._decoders_left = self._n_decoders
        specs = [(f"decode-{i}", self._decode_loop) for i in range(self._n_decoders)]
        specs += [("infer", self._infer_loop), ("finish", self._finish_loop)]
        for name, target in specs:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        self._accepting = True

    def stop(self, timeout: float = 20.0) -> bool:
        """Stop intake, finish everything already submitted. False if it did not drain in time."""
        with self._lock:
            if not self._accepting:
                return all(not t.is_alive() for t in self._threads)
            self._accepting = False
        deadline = time.monotonic() + timeout
        for _ in range(self._n_decoders):
            self._put(self._intake, None, deadline)
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.warning("pipeline did not drain in %.0f s (%s still busy); unfinished folder "
                        "inputs stay in processing/ for the next start", timeout, ", ".join(alive))
            return False
        return True

    @staticmethod
    def _put(q: queue.Queue, item: Any, deadline: float) -> None:
        with contextlib.suppress(queue.Full):
            q.put(item, timeout=max(0.01, deadline - time.monotonic()))

    @property
    def accepting(self) -> bool:
        return self._accepting

    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    @property
    def depth(self) -> int:
        """Inputs submitted but not yet finished."""
        return self.submitted - self.completed - self.failed

    def submit(self, job: Job, timeout: Optional[float] = None) -> None:
        """Queue a job; blocks while full up to `timeout` (None = forever) then raises Busy.

        The accepting check and the enqueue happen under the lock that `stop()` takes to stop
        intake, so no job can land behind the stop markers and be left unprocessed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if not self._accepting:
                    raise Stopped("the pipeline is stopping")
                try:
                    self._intake.put_nowait(job)
                except queue.Full:
                    pass
                else:
                    if self.depth == 0:
                        self.last_progress = time.monotonic()  # idle until now: not a stall
                    self.submitted += 1
                    return
            if deadline is not None and time.monotonic() >= deadline:
                raise Busy(f"{self.depth} inputs queued; try again later")
            time.sleep(0.005)

    # ------------------------------------------------------------------ stages

    def _decode_loop(self) -> None:
        while True:
            job = self._intake.get()
            if job is None:
                with self._lock:
                    self._decoders_left -= 1
                    last = self._decoders_left == 0
                if last:
                    self._decoded.put(None)
                return
            try:
                self._decode(job)
            except Exception as exc:  # never let one input kill the stage
                log.exception("unexpected error decoding %s", job.id)
                job.error = imaging.ImageError("internal_error", f"{type(exc).__name__}: {exc}")
            self._decoded.put(job)

    def _decode(self, job: Job) -> None:
        try:
            if job.data is None:
                job.data = read_claimed(job.path, job.stored,  # type: ignore[arg-type]
                                        max_pixels=self.max_pixels)
            job.sha256 = hashlib.sha256(job.data).hexdigest()
            target = None
            if job.analysis == "whole-image":
                target = self.classifier_fn().input_hw
            job.image = imaging.decode(job.data, max_pixels=self.max_pixels, target=target)
        except imaging.ImageError as exc:
            job.error = exc
            return
        finally:
            if job.path is not None:
                job.data = None  # the file stays on disk; do not hold big inputs in memory
        if self.thumbnails:
            job.thumb = thumbnail(job.image)

    def _infer_loop(self) -> None:
        while True:
            job = self._decoded.get()
            if job is None:
                self._done.put(None)
                return
            classifier = self.classifier_fn()
            try:
                job.result = self._classify(job, classifier)
            except Exception as exc:
                log.exception("unexpected error classifying %s", job.id)
                job.error = imaging.ImageError("internal_error", f"{type(exc).__name__}: {exc}")
                job.result = self._base_result(job, classifier)
            job.image = None
            self._done.put(job)

    def _base_result(self, job: Job, classifier: Any) -> Dict[str, Any]:
        meta = classifier.meta
        r: Dict[str, Any] = {
            "id": job.id, "time": utc_iso(job.received), "source": job.source,
            "name": display_name(job.name), "sha256": job.sha256,
            "status": "quarantined", "reason": None, "label": None, "positive": None,
            "probability": None, "threshold": classifier.threshold,
            "model": {"name": meta.name, "version": meta.version, "synthetic": meta.synthetic},
            "device": classifier.device, "latency_ms": None, "analysis": job.analysis,
            "cells": None, "disclaimer": DISCLAIMER,
        }
        if job.error is not None:
            r["reason"], r["detail"] = job.error.reason, job.error.message
        return r

    def _classify(self, job: Job, classifier: Any) -> Dict[str, Any]:
        if job.error is None:
            fn = self.analyzers.get(job.analysis)
            if fn is None:
                job.error = imaging.ImageError(
                    "analysis_unavailable", f"no analyzer registered for {job.analysis!r}")
            else:
                t0 = time.perf_counter()
                try:
                    out = fn(job.image, classifier)
                except imaging.ImageError as exc:
                    job.error = exc
                else:
                    return self._ok_result(job, classifier, out, t0)
        return self._base_result(job, classifier)

    def _ok_result(self, job: Job, classifier: Any, out: Dict[str, Any], t0: float
                   ) -> Dict[str, Any]:
        r = self._base_result(job, classifier)
        p = float(out["probability"])
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"analyzer {job.analysis!r} returned probability {p}")
        label = classifier.label_for(p)
        r.update(status="ok", label=label, positive=label == classifier.meta.positive_label,
                 probability=round(p, 6), cells=out.get("cells"),
                 latency_ms=round(float(out.get("latency_ms") or
                                        (time.perf_counter() - t0) * 1000), 3))
        # fail here (this input: internal_error), not in the group commit, which would roll
        # back every other result of the batch and leave this input without an outcome
        json.dumps(r)
        job.outcome = out
        return r

    def _finish_loop(self) -> None:
        """Group commit: whatever is waiting (up to GROUP_COMMIT) shares one transaction."""
        while True:
            job = self._done.get()
            batch, last = [job], job is None
            while not last and len(batch) < GROUP_COMMIT:
                try:
                    nxt = self._done.get_nowait()
                except queue.Empty:
                    break
                batch.append(nxt)
                last = nxt is None
            jobs = [j for j in batch if j is not None]
            if jobs:
                try:
                    self._finish(jobs)
                except Exception as exc:
                    self._failed(jobs, exc)
            if last:
                return

    def _failed(self, jobs: List[Job], exc: Exception) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.failed += len(jobs)
        for job in jobs:
            log.error("could not journal %s (%s): %s; %s", job.id, log_name(job.name),
                      self.last_error,
                      "left in processing/ for the next start" if job.path
                      else "the caller gets an error")
            if job.future is not None and not job.future.done():
                job.future.set_exception(exc)

    def _prepare(self, job: Job) -> Tuple[Optional[Path], Dict[str, Optional[str]]]:
        """Thumbnail/annotated files (written before the commit) and the input's destination."""
        result = job.result
        assert result is not None
        result["pipeline_ms"] = round((time.time() - job.received) * 1000, 3)
        files: Dict[str, Optional[str]] = {}
        if result["status"] == "ok":
            try:  # previews are optional: never let them block the journal
                if job.thumb is not None:
                    tp = self.store.thumb_path(result)
                    self.store.write_file(tp, job.thumb)
                    files["thumb"] = self.store.rel(tp)
                annotated = job.outcome.get("annotated")
                if annotated is not None:
                    ok, buf = cv2.imencode(".jpg", annotated, [cv2.IMWRITE_JPEG_QUALITY, 85])
                    if ok:
                        ap = self.store.annotated_path(result)
                        self.store.write_file(ap, buf.tobytes())
                        files["annotated"] = self.store.rel(ap)
            except (OSError, cv2.error) as exc:
                log.warning("%s: preview not written: %s", job.id, exc)
        # Quarantined uploads are journaled but not stored: the caller already has the bytes
        # and the reason, and nobody can fill quarantine/ over HTTP. A camera keeps nothing,
        # so its quarantined captures are stored like folder inputs.
        keep = job.path is not None or job.source == "camera" or result["status"] == "ok"
        target = self.store.target_for(result, job.stored) if keep else None
        if target is not None and result["status"] == "ok":
            files["image"] = self.store.rel(target)
        return target, files

    def _finish(self, jobs: List[Job]) -> None:
        planned = [self._prepare(job) for job in jobs]
        if any(job.path is not None for job in jobs):
            self.store.sync_processing()
        inserted = self.journal.record_many(
            [(job.result, files) for job, (_, files) in zip(jobs, planned)])
        for job, (target, _), new in zip(jobs, planned, inserted):
            self._after_commit(job, target, new)

    def _after_commit(self, job: Job, target: Optional[Path], new: bool) -> None:
        result = job.result
        assert result is not None
        try:
            self.store.place(job.path, job.data if job.path is None else None, target, result)
        except OSError as exc:  # journaled already: the outcome stands, the file stays put
            log.error("%s journaled but could not be moved to %s: %s", job.id,
                      log_name(str(target)), exc.strerror)
        job.data = job.thumb = None
        with self._lock:
            self.completed += 1
            if new:
                if result["status"] == "ok":
                    self.counters["processed"] += 1
                    self.counters["positive" if result["positive"] else "negative"] += 1
                else:
                    self.counters["quarantined"] += 1
            self.last_progress = time.monotonic()
        self.last_error = None
        if result["status"] == "ok":
            log.info("%s %s %s: %s p=%.3f", result["source"], job.id, log_name(result["name"]),
                     result["label"], result["probability"])
        else:
            log.warning("%s %s %s quarantined: %s (%s)", result["source"], job.id,
                        log_name(result["name"]), result["reason"], result.get("detail"))
        if job.future is not None and not job.future.done():
            job.future.set_result(result)
        if new:
            self.listeners(result)
