"""JSON bodies for the HIAS channels.

HIAS reads its own keys (`Model`, `Type`, `Value`, `State`, `Message` on Classification; numeric
`CPU`, `Memory`, `Diskspace`, `Temperature`, `Latitude`, `Longitude` on Life, through `float()`)
and ignores extra keys, so our result fields ride along for consumers that want them.
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, Mapping, Optional

LIFE_KEYS = ("CPU", "Memory", "Diskspace", "Temperature", "Latitude", "Longitude")
POSITIVE_MESSAGE = "Acute Lymphoblastic Leukemia detected!"
NEGATIVE_MESSAGE = "Acute Lymphoblastic Leukemia not detected!"
# Result fields copied as they are (the Result JSON of docs/architecture.md).
_RESULT_FIELDS = ("id", "time", "source", "name", "sha256", "status", "reason", "label",
                  "positive", "probability", "threshold", "device", "latency_ms", "analysis",
                  "disclaimer")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def encode(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; NaN/Infinity (not JSON, HIAS's parser fails) become null."""
    try:
        text = json.dumps(payload, separators=(",", ":"), allow_nan=False, default=str)
    except ValueError:
        text = json.dumps(_finite(payload), separators=(",", ":"), allow_nan=False, default=str)
    return text.encode()


def _number(value: Any) -> float:
    """A finite float for HIAS's `float()`; unreadable sensors become 0.0, never ''/None."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return 0.0
    return round(f, 2) if math.isfinite(f) else 0.0


def life(stats: Mapping[str, Any], latitude: float, longitude: float) -> Dict[str, float]:
    """Life heartbeat: every key present and numeric."""
    merged = dict(stats, Latitude=latitude, Longitude=longitude)
    return {k: _number(merged.get(k)) for k in LIFE_KEYS}


def classification(result: Mapping[str, Any], model_name: str) -> Dict[str, Any]:
    """One Classification message for one classified (status "ok") result.

    Quarantined inputs are not classifications and are never published (see Outbox.offer).
    """
    positive = bool(result.get("positive"))
    head: Dict[str, Any] = {
        "Model": model_name,
        "Type": "Classification",
        "Value": str(result.get("label") or ("ALL" if positive else "normal")),
        "State": "Positive" if positive else "Negative",
        "Message": POSITIVE_MESSAGE if positive else NEGATIVE_MESSAGE,
    }
    body = {k: result[k] for k in _RESULT_FIELDS if k in result}
    model = result.get("model")
    if isinstance(model, Mapping):
        body["model_name"] = model.get("name")
        body["model_version"] = model.get("version")
        body["model_synthetic"] = model.get("synthetic")
    cells = result.get("cells")
    if isinstance(cells, Mapping):
        # Counts only: per-cell boxes stay in the journal and the HTTP API (message size).
        body["cells"] = {k: cells.get(k) for k in ("found", "blasts", "blast_fraction")}
        if "skipped" in cells:  # cells beyond analysis.max_cells: `found` leaves them out
            body["cells"]["skipped"] = cells["skipped"]
    return {**head, **body}


def notification(command: Optional[str], ok: bool, message: str,
                 request_id: Optional[str] = None) -> Dict[str, Any]:
    """Answer to a command on the Notifications channel."""
    return {
        "Type": "Command",
        "Command": command or "unknown",
        "Id": request_id,
        "State": "OK" if ok else "Error",
        "Message": message,
    }
