"""The operator's status page: one server-rendered HTML page, no external assets.

Jinja autoescaping is on for the template, so file names and other user-controlled text are
escaped. A few lines of JS re-fetch the page every few seconds and swap the live part in
(scroll position kept); without JS a <noscript> meta refresh does the same.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Dict, List, Mapping, Set, Tuple

from flask import Blueprint, render_template

from edge import DISCLAIMER
from edge.web import images
from edge.web.context import WebContext, current

log = logging.getLogger("edge.web")
bp = Blueprint("page", __name__)

RECENT = 20
RECENT_QUARANTINED = 10   # its own list: a batch of good images must not push them off the page
REFRESH_SECONDS = 5


def model_info(ctx: WebContext, status: Mapping[str, Any]) -> Dict[str, Any]:
    """Name, version, synthetic flag and device of the model in service."""
    info: Dict[str, Any] = {}
    st_model = status.get("model")
    if isinstance(st_model, Mapping):
        info.update({k: st_model.get(k) for k in ("name", "version", "synthetic", "device")
                     if st_model.get(k) is not None})
    clf = getattr(ctx.daemon, "classifier", None)
    meta = getattr(clf, "meta", None)
    if meta is not None:
        info.setdefault("name", getattr(meta, "name", None))
        info.setdefault("version", getattr(meta, "version", None))
        info.setdefault("synthetic", getattr(meta, "synthetic", None))
    if clf is not None and getattr(clf, "device", None):
        info.setdefault("device", clf.device)
    return info


def annotated_ids(ctx: WebContext, recent: List[Dict[str, Any]]) -> Set[str]:
    """Ids of the listed results whose analyzer overlay is still on disk (cells mode)."""
    found: Set[str] = set()
    for r in recent:
        if r.get("status") != "ok" or r.get("analysis") != "cells":
            continue
        try:
            if images.find_image(ctx.daemon.journal, str(r["id"]), ctx.data_dir, "annotated"):
                found.add(str(r["id"]))
        except Exception as exc:  # a journal hiccup costs the link, not the page
            log.warning("journal.files(%s) failed: %s", r.get("id"), exc)
    return found


def _numbers(d: Any) -> Dict[str, Any]:
    return {str(k): v for k, v in d.items() if isinstance(v, (int, float))} \
        if isinstance(d, Mapping) else {}


def counter_rows(ctx: WebContext, status: Mapping[str, Any],
                 labels: Mapping[str, str]) -> List[Tuple[str, str, Any, Any]]:
    """(name, shown name, since start, all time): the daemon's counters beside the journal's
    totals; "positive"/"negative" are shown as the model's labels, uptime is in the header."""
    since, totals = _numbers(status.get("counters")), _numbers(status.get("totals"))
    since.pop("uptime_s", None)
    if not since and not totals:
        try:
            totals = _numbers(ctx.daemon.journal.counters())
        except Exception as exc:
            log.warning("journal.counters() failed: %s", exc)
    names = list(since) + [k for k in totals if k not in since]
    return [(k, labels.get(k, k.replace("_", " ")), since.get(k, ""), totals.get(k, "")) for k in names]


def uptime(status: Mapping[str, Any]) -> str:
    """`3 d 4 h`, `5 h 12 min`, `42 s`: readable after weeks, unlike raw seconds."""
    s = status.get("uptime_s", _numbers(status.get("counters")).get("uptime_s"))
    if not isinstance(s, (int, float)):
        return "?"
    s = int(s)
    d, h, m = s // 86400, s % 86400 // 3600, s % 3600 // 60
    if d:
        return f"{d} d {h} h"
    if h:
        return f"{h} h {m} min"
    return f"{m} min" if m else f"{s} s"


def label_names(ctx: WebContext, status: Mapping[str, Any]) -> Dict[str, str]:
    """The counters' "positive"/"negative" under the model's own label names."""
    positive = positive_label(ctx, status)
    meta = getattr(getattr(ctx.daemon, "classifier", None), "meta", None)
    others = [lb for lb in getattr(meta, "labels", []) or [] if lb != positive]
    return {"positive": f"{positive} (positive)",
            "negative": f"{others[0]} (negative)" if len(others) == 1 else "negative"}


def positive_label(ctx: WebContext, status: Mapping[str, Any]) -> str:
    """The label the overlay boxes in red (model.json `positive_label`)."""
    st_model = status.get("model")
    label = st_model.get("positive_label") if isinstance(st_model, Mapping) else None
    if not label:
        meta = getattr(getattr(ctx.daemon, "classifier", None), "meta", None)
        label = getattr(meta, "positive_label", None)
    return str(label or "positive")


def overall(health: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The worst state and the checks in it: the one line an operator reads first."""
    for state in ("fail", "warn"):
        names = [str(c.get("name")) for c in health if c.get("state") == state]
        if names:
            return {"state": state, "names": names}
    return {"state": "ok", "names": []}


@bp.get("/")
def index():
    ctx = current()
    try:
        status = ctx.status()
    except Exception as exc:
        log.warning("daemon.status() failed: %s", exc)
        status = {}
    recent: List[Dict[str, Any]] = ctx.daemon.journal.recent(RECENT)
    quarantined = ctx.daemon.journal.recent(RECENT_QUARANTINED, status="quarantined")
    health = ctx.health()
    now = datetime.now(timezone.utc)
    return render_template(
        "status.html",
        agent=ctx.daemon.config.agent.name,
        model=model_info(ctx, status),
        health=health,
        overall=overall(health),
        counters=counter_rows(ctx, status, label_names(ctx, status)),
        uptime=uptime(status),
        recent=recent,
        quarantined=quarantined,
        annotated=annotated_ids(ctx, recent),
        positive_label=positive_label(ctx, status),
        disclaimer=DISCLAIMER,
        refresh=REFRESH_SECONDS,
        now=now.strftime("%Y-%m-%d %H:%M:%S UTC"),
        now_iso=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
