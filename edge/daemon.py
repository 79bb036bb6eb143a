"""The daemon: owns config, journal, classifier, pipeline and components; runs the main loop.

The main thread only supervises: signals (SIGTERM/SIGINT stop, SIGHUP reloads the model),
systemd notifications (READY, WATCHDOG while the pipeline makes progress, STATUS, STOPPING)
and periodic retention. All work happens in the pipeline's and the components' threads.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import importlib.util
import logging
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from edge import DISCLAIMER, __version__
from edge.component import Component, HealthCheck
from edge.inference import Classifier, ModelError, load_classifier
from edge.journal import Journal, new_id, utc_iso
from edge.pipeline import Analyzer, Job, Pipeline, whole_image
from edge.retention import Retention, Store, safe_name, stored_name
from edge.sdnotify import Notifier
from edge.sources.folder import FolderSource, recover

log = logging.getLogger(__name__)

RETENTION_INTERVAL = 900.0
STALL_SECONDS = 120.0  # work queued but nothing finished for this long = not making progress
LATE_STOP = ("hias",)  # stopped after the pipeline drained, so they see the last results
THERMAL = Path("/sys/class/thermal")


def cpu_temperature() -> Optional[float]:
    """°C of the CPU thermal zone (`cpu_thermal` on a Pi), None where there is none."""
    zones = sorted(THERMAL.glob("thermal_zone*")) if THERMAL.is_dir() else []
    preferred = [z for z in zones if (z / "type").is_file() and
                 (z / "type").read_text().strip() in ("cpu_thermal", "x86_pkg_temp", "soc_thermal")]
    for zone in preferred + zones:
        try:
            return int((zone / "temp").read_text().strip()) / 1000.0
        except (OSError, ValueError):
            continue
    return None


def quiet_opencv() -> None:
    """OpenCV prints multi-line errors to stderr for bad inputs; we log our own single line."""
    import cv2

    with contextlib.suppress(AttributeError, cv2.error):
        cv2.setLogLevel(0)


def _optional_component(module: str, cls: str) -> Optional[Callable[[Any], Component]]:
    """The class if its module is present; None (with a warning) if not installed yet."""
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        log.warning("%s is not available; %s disabled", module, cls)
        return None
    return getattr(importlib.import_module(module), cls)


class Daemon:
    def __init__(self, config: Any, notifier: Optional[Notifier] = None) -> None:
        self.config = config
        self.notifier = notifier or Notifier()
        self.started = time.time()
        self._t0 = time.monotonic()
        self.ready = False
        self.stopping = False
        self.store = Store(config.storage)
        self.journal = Journal(config.storage.data_dir, outbox=config.hias.enabled)
        try:
            self._assemble(config)
        except BaseException:
            self.journal.close()  # an embedding program may retry; don't leak the database
            raise

    def _assemble(self, config: Any) -> None:
        """Everything that needs the journal; `__init__` closes it if this fails."""
        self.classifier: Classifier = load_classifier(config)  # raises ModelError
        self.reload_error: Optional[str] = None
        self.last_reload: Optional[str] = None
        self._reload_lock = threading.Lock()
        self.analyzers: Dict[str, Analyzer] = {"whole-image": whole_image}
        self.pipeline = Pipeline(
            classifier_fn=lambda: self.classifier, journal=self.journal, store=self.store,
            analyzers=self.analyzers, listeners=self._on_result,
            max_pixels=config.server.max_pixels, thumbnails=config.storage.thumbnails,
        )
        self.retention = Retention(self.store, self.journal)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reload_requested = False
        self._housekeeper: Optional[threading.Thread] = None
        self._load_analysis_plugins()
        self.components: List[Component] = self._build_components()

    # ------------------------------------------------------------------ assembly

    def register_analyzer(self, mode: str, fn: Analyzer) -> None:
        if not callable(fn):
            raise TypeError(f"analyzer for {mode!r} is not callable")
        self.analyzers[mode] = fn
        log.info("analyzer %r registered", mode)

    def _load_analysis_plugins(self) -> None:
        try:
            spec = importlib.util.find_spec("edge.analysis")
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            return
        try:
            register = getattr(importlib.import_module("edge.analysis"), "register", None)
            if callable(register):
                register(self)
        except Exception as exc:  # a broken plugin must not take the folder source down
            log.error("edge.analysis could not be loaded (%s: %s); 'cells' inputs will be "
                      "quarantined as analysis_unavailable", type(exc).__name__, exc)

    def _build_components(self) -> List[Component]:
        cfg = self.config
        comps: List[Component] = []
        if cfg.hias.enabled:
            cls = _optional_component("edge.hias.client", "HiasComponent")
            if cls:
                comps.append(cls(self))
        if cfg.sources.camera.enabled:
            cls = _optional_component("edge.sources.camera", "CameraSource")
            if cls:
                comps.append(cls(self))
        if cfg.sources.folder.enabled:
            comps.append(FolderSource(self))
        if cfg.server.enabled:
            cls = _optional_component("edge.web.server", "HttpServer")
            if cls:
                comps.append(cls(self))
        return comps

    def component(self, name: str) -> Optional[Component]:
        return next((c for c in self.components if c.name == name), None)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Pipeline, crash recovery, components; then READY=1. Raises if a component fails."""
        quiet_opencv()
        self.pipeline.start()
        found = recover(self, self._stop)
        if found:
            log.info("crash recovery: %d leftover input(s) in processing/ handled", found)
        started: List[Component] = []
        try:
            for c in self.components:
                c.start()
                started.append(c)
        except Exception:
            for c in reversed(started):
                self._stop_component(c)
            self.pipeline.stop(timeout=10)
            raise
        self._housekeeper = threading.Thread(target=self._housekeeping, name="housekeeping",
                                             daemon=True)
        self._housekeeper.start()
        self._install_signal_handlers()
        self.ready = True
        self.notifier.notify(READY=1, STATUS=self.summary())
        log.info("ready: %s", self.summary())

    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def request_reload(self) -> None:
        self._reload_requested = True
        self._wake.set()

    def _install_signal_handlers(self) -> None:
        """Before READY=1, so a `systemctl reload` right after start reloads instead of killing us."""
        if threading.current_thread() is not threading.main_thread():
            return  # embedded (tests, tools): the host owns signals
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop())
        signal.signal(signal.SIGINT, lambda *_: self.request_stop())
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())

    def run(self) -> int:
        """Main loop until SIGTERM/SIGINT; returns the exit code."""
        self._install_signal_handlers()
        wd = self.notifier.watchdog_interval()
        tick = min(wd, 5.0) if wd else 5.0
        last_status = ""
        while not self._stop.is_set():
            self._wake.wait(tick)
            self._wake.clear()
            if self._stop.is_set():
                break
            if self._reload_requested:
                self._reload_requested = False
                self.reload_model()
            if wd and self.progressing():
                self.notifier.notify(WATCHDOG=1)
            summary = self.summary()
            if summary != last_status:
                self.notifier.notify(STATUS=summary)
                last_status = summary
        self.shutdown()
        return 0

    def shutdown(self, timeout: float = 20.0) -> None:
        """Stop intake, drain the pipeline, stop the rest, close the journal."""
        if self.stopping:
            return
        self.stopping = True
        self.ready = False
        self._stop.set()
        log.info("stopping: %d input(s) in flight", self.pipeline.depth)
        self.notifier.notify(STOPPING=1, STATUS="stopping")
        late = [c for c in self.components if c.name in LATE_STOP]
        for c in reversed(self.components):
            if c not in late:
                self._stop_component(c)
        self.pipeline.stop(timeout=timeout)
        for c in reversed(late):
            self._stop_component(c)
        if self._housekeeper is not None:
            self._housekeeper.join(10)  # a retention pass in progress uses the journal
        self.journal.close()
        log.info("stopped")

    @staticmethod
    def _stop_component(c: Component) -> None:
        try:
            c.stop()
        except Exception as exc:
            log.error("component %s did not stop cleanly: %s", c.name, exc)

    def _housekeeping(self) -> None:
        while not self._stop.is_set():
            try:
                self.retention.run()
            except Exception as exc:
                log.error("retention failed: %s: %s", type(exc).__name__, exc)
            self._stop.wait(RETENTION_INTERVAL)

    def _on_result(self, result: Dict[str, Any]) -> None:
        for c in self.components:
            try:
                c.on_result(result)
            except Exception as exc:
                log.error("component %s on_result failed: %s", c.name, exc)

    # ------------------------------------------------------------------ API

    def submit_bytes(self, data: bytes, *, source: str, name: str,
                     analysis: Optional[str] = None, timeout: float = 30) -> Dict[str, Any]:
        """Classify bytes synchronously; the result is journaled before it is returned."""
        mode = analysis or "whole-image"
        if mode not in self.analyzers:
            raise ValueError(f"unknown analysis mode {mode!r}; known: {', '.join(self.analyzers)}")
        id = new_id()
        name = safe_name(name or "upload")
        fut: concurrent.futures.Future = concurrent.futures.Future()
        job = Job(id=id, source=source, name=name, analysis=mode, received=time.time(),
                  stored=stored_name(id, name), data=bytes(data), future=fut)
        deadline = time.monotonic() + timeout
        self.pipeline.submit(job, timeout=timeout)
        try:
            return fut.result(timeout=max(0.0, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"{id} accepted but not finished within {timeout} s") from None

    def reload_model(self) -> Tuple[bool, str]:
        """Compile the configured model again; on failure keep serving the old one."""
        with self._reload_lock:
            old = self.classifier
            try:
                new = load_classifier(self.config)
            except ModelError as exc:
                self.reload_error = f"{utc_iso()}: {exc}"
                msg = f"reload failed, still serving {old.meta.name} {old.meta.version}: {exc}"
                log.error("%s", msg)
                return False, msg
            self.classifier = new  # the inference thread picks it up with its next input
            self.reload_error = None
            self.last_reload = utc_iso()
            msg = (f"model reloaded: {new.meta.name} {new.meta.version} on {new.device} "
                   f"(was {old.meta.name} {old.meta.version})")
            log.info("%s", msg)
            return True, msg

    def request_capture(self) -> bool:
        for c in self.components:
            fn = getattr(c, "request_capture", None)
            if callable(fn):
                return bool(fn())
        return False

    # ------------------------------------------------------------------ reporting

    def progressing(self) -> bool:
        p = self.pipeline
        if not p.alive():
            return False
        return p.depth == 0 or time.monotonic() - p.last_progress < STALL_SECONDS

    def counters(self) -> Dict[str, Any]:
        c: Dict[str, Any] = dict(self.pipeline.counters)
        c["queue_depth"] = self.pipeline.depth
        c["uptime_s"] = round(time.monotonic() - self._t0, 1)
        return c

    def summary(self) -> str:
        c, m = self.pipeline.counters, self.classifier
        meta = m.meta
        neg = m.negative_label
        return (f"{c['processed']} classified ({c['positive']} {meta.positive_label}, "
                f"{c['negative']} {neg}), {c['quarantined']} quarantined, "
                f"{self.pipeline.depth} queued; model {meta.name} {meta.version} on {m.device}")

    def health(self) -> List[HealthCheck]:
        checks = [self._model_check(), self._device_check(), self._pipeline_check()]
        if not self.config.sources.folder.enabled:
            checks.append(HealthCheck("folder source", "disabled", "sources.folder.enabled=false"))
        if not self.config.sources.camera.enabled:
            checks.append(HealthCheck("camera", "disabled", "sources.camera.enabled=false"))
        if not self.config.hias.enabled:
            checks.append(HealthCheck("hias", "disabled", "HIAS publishing is off (hias.enabled=false)"))
        checks += [self._disk_check(), self._temperature_check()]
        for c in self.components:
            try:
                checks.extend(c.health())
            except Exception as exc:
                checks.append(HealthCheck(c.name, "fail", f"health check failed: {exc}"))
        return checks

    def _model_check(self) -> HealthCheck:
        meta = self.classifier.meta
        detail = {"name": meta.name, "version": meta.version, "synthetic": meta.synthetic,
                  "reload_error": self.reload_error}
        text = f"{meta.name} {meta.version}"
        if self.reload_error:
            return HealthCheck("model", "warn", f"{text}; last reload failed: {self.reload_error}",
                               detail)
        if meta.synthetic:
            return HealthCheck("model", "warn", f"{text} (synthetic demo model: detects nothing "
                               "real)", detail)
        return HealthCheck("model", "ok", text, detail)

    def _device_check(self) -> HealthCheck:
        c = self.classifier
        others = "; ".join(f"{d}: {e}" for d, e in c.device_errors.items())
        return HealthCheck("device", "ok", c.device + (f" ({others})" if others else ""),
                           {"device": c.device, "unavailable": dict(c.device_errors)})

    def _pipeline_check(self) -> HealthCheck:
        p = self.pipeline
        detail = {"queue_depth": p.depth, "completed": p.completed, "failed": p.failed,
                  "last_progress_s": round(time.monotonic() - p.last_progress, 1)}
        if not p.alive() and not self.stopping:
            return HealthCheck("pipeline", "fail", "pipeline threads are not running", detail)
        if not self.progressing():
            return HealthCheck("pipeline", "fail", f"{p.depth} queued, nothing finished for "
                               f"{detail['last_progress_s']:.0f} s", detail)
        if p.failed:
            return HealthCheck("pipeline", "warn", f"{p.failed} input(s) could not be journaled "
                               f"(last: {p.last_error}); folder inputs are retried at the next "
                               "start", detail)
        return HealthCheck("pipeline", "ok", f"{p.depth} queued, {p.completed} done since start",
                           detail)

    def _disk_check(self) -> HealthCheck:
        try:
            du = shutil.disk_usage(self.store.root)
        except OSError as exc:
            return HealthCheck("disk", "fail", f"cannot stat data_dir: {exc.strerror}")
        free_mb = du.free / 1024 ** 2
        detail = {"path": str(self.store.root), "free_mb": round(free_mb),
                  "used_percent": round(100 * du.used / du.total, 1),
                  "min_free_mb": self.config.storage.min_free_mb}
        text = f"{free_mb / 1024:.1f} GB free ({detail['used_percent']}% used)"
        if free_mb < 64:
            return HealthCheck("disk", "fail", text + ": journal writes may fail", detail)
        if free_mb < self.config.storage.min_free_mb:
            return HealthCheck("disk", "warn", text + ": archiving paused", detail)
        return HealthCheck("disk", "ok", text, detail)

    @staticmethod
    def _temperature_check() -> HealthCheck:
        t = cpu_temperature()
        if t is None:
            return HealthCheck("cpu temperature", "ok", "n/a", {"celsius": None})
        state = "fail" if t >= 85 else "warn" if t >= 75 else "ok"
        return HealthCheck("cpu temperature", state, f"{t:.1f} °C", {"celsius": t})

    def status(self) -> Dict[str, Any]:
        model = self.classifier.describe()
        model["reload_error"] = self.reload_error
        model["last_reload"] = self.last_reload
        comps = {}
        for c in self.components:
            try:
                comps[c.name] = c.status()
            except Exception as exc:
                comps[c.name] = {"error": str(exc)}
        return {
            "agent": self.config.agent.name, "version": __version__, "ready": self.ready,
            "started": utc_iso(self.started), "uptime_s": round(time.monotonic() - self._t0, 1),
            "model": model, "counters": self.counters(), "totals": self.journal.counters(),
            "outbox": self.journal.outbox_stats(),
            "health": [h.to_dict() for h in self.health()],
            "components": comps, "disclaimer": DISCLAIMER,
        }
