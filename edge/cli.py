"""Command line: `run` the daemon, `check-config`, `classify` files once.

Config problems print one `path: what (expected)` line each and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

from edge import DISCLAIMER
from edge.config import Config, ConfigError, load_config
from edge.logs import setup_logging

log = logging.getLogger("edge")

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m edge",
        description="ALL edge daemon (research use only, not a diagnostic device).",
    )
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", type=Path, default=None,
                        help="JSON config file (default: the built-in defaults)")
        sp.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config value by dotted path; VALUE is JSON or a string")

    common(sub.add_parser("run", help="run the daemon"))
    common(sub.add_parser("check-config", help="validate the configuration and model.json"))
    c = sub.add_parser("classify", help="classify image files once; one JSON result per line")
    common(c)
    c.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    return p


def _load(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def _config_error(exc: ConfigError) -> int:
    for line in exc.problems:
        print(f"config error: {line}", file=sys.stderr)
    return EXIT_CONFIG


def _serving_problem(cfg: Config) -> Optional[str]:
    """The HTTP access rules (e.g. no remote bind without credentials) are configuration too:
    check-config must catch them, and run must refuse them before it compiles the model."""
    if not cfg.server.enabled:
        return None
    from edge.web.auth import AuthConfigError, load_credentials

    try:
        load_credentials(cfg.server)
    except AuthConfigError as exc:
        return str(exc)
    return None


def cmd_check_config(cfg: Config) -> int:
    from edge.model_meta import ModelMeta, meta_path_for

    meta_path = meta_path_for(cfg.model.xml)
    try:
        meta = ModelMeta.load(meta_path)
    except Exception as exc:
        print(f"config error: model.xml: invalid {meta_path}: {str(exc).splitlines()[0]}",
              file=sys.stderr)
        return EXIT_CONFIG
    print(f"config OK: model {meta.name} {meta.version}"
          f"{' (synthetic)' if meta.synthetic else ''} from {cfg.model.xml}")
    print(f"  devices {', '.join(cfg.model.devices)}; data_dir {cfg.storage.data_dir}")
    if cfg.sources.folder.enabled:
        print(f"  folder source: {cfg.sources.folder.path}")
    if cfg.server.enabled:
        print(f"  http: {cfg.server.host}:{cfg.server.port}")
    print(f"  hias: {'enabled' if cfg.hias.enabled else 'disabled'}; "
          f"camera: {'enabled' if cfg.sources.camera.enabled else 'disabled'}")
    return 0


def cmd_classify(cfg: Config, images: Sequence[Path]) -> int:
    """Classify without the daemon: nothing is journaled, moved or archived."""
    import hashlib

    from edge import imaging
    from edge.inference import ModelError, load_classifier
    from edge.journal import new_id, utc_iso
    from edge.pipeline import read_claimed
    from edge.retention import display_name, log_name

    try:
        clf = load_classifier(cfg)
    except ModelError as exc:
        log.error("%s", exc)
        return 1
    meta, failed = clf.meta, 0
    for path in images:
        t0 = time.time()
        r = {"id": new_id(), "time": utc_iso(t0), "source": "cli", "name": display_name(str(path)),
             "sha256": None, "status": "quarantined", "reason": None, "label": None,
             "positive": None, "probability": None, "threshold": clf.threshold,
             "model": {"name": meta.name, "version": meta.version, "synthetic": meta.synthetic},
             "device": clf.device, "latency_ms": None, "analysis": "whole-image", "cells": None,
             "disclaimer": DISCLAIMER}
        try:
            # a path typed on the command line may be a link (the inbox's rule is not for it)
            data = read_claimed(Path(path).resolve(), max_pixels=cfg.server.max_pixels)
            r["sha256"] = hashlib.sha256(data).hexdigest()
            image = imaging.decode(data, max_pixels=cfg.server.max_pixels, target=clf.input_hw)
            pred = clf.predict(image)
        except imaging.ImageError as exc:
            failed += 1
            r.update(reason=exc.reason, detail=exc.message)
        except ModelError as exc:  # e.g. non-finite output for this input: say so, go on
            failed += 1
            r.update(reason="model_error", detail=str(exc))
            log.error("%s: model error: %s", log_name(str(path)), exc)
        else:
            label = clf.label_for(pred.probability)
            r.update(status="ok", label=label, positive=label == meta.positive_label,
                     probability=round(pred.probability, 6), latency_ms=round(pred.latency_ms, 3))
        print(json.dumps(r, ensure_ascii=False), flush=True)
    return 1 if failed else 0


def cmd_run(cfg: Config) -> int:
    from edge.daemon import Daemon
    from edge.inference import ModelError

    early_stop: List[int] = []  # SIGTERM or Ctrl-C while the model compiles: stop right after start
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: early_stop.append(signum))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload before start is moot: the model loads now
    log.info("starting %s (research use only, not a diagnostic device)", cfg.agent.name)
    try:
        daemon = Daemon(cfg)
    except (ModelError, OSError, sqlite3.Error) as exc:
        log.error("cannot start: %s", exc)
        return 1
    try:
        daemon.start()
    except Exception as exc:
        log.error("cannot start: %s: %s", type(exc).__name__, exc)
        daemon.shutdown()
        return 1
    if early_stop:
        daemon.request_stop()
    return daemon.run()


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = _load(args)
    except ConfigError as exc:
        return _config_error(exc)
    setup_logging("WARNING" if args.command == "classify" and cfg.agent.log_level == "INFO"
                  else cfg.agent.log_level)
    if args.command in ("run", "check-config"):
        problem = _serving_problem(cfg)
        if problem:
            return _config_error(ConfigError([problem]))
    if args.command == "check-config":
        return cmd_check_config(cfg)
    if args.command == "classify":
        return cmd_classify(cfg, args.images)
    return cmd_run(cfg)
