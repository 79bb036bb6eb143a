"""Commands arriving on `.../Commands`: parsing and running them against the daemon.

A command is a JSON object `{"Command": "capture" | "reload" | "status", "Id": "optional"}`
(key names case-insensitive; HIAS-style `{"Type": "Command", "Value": "capture"}` is accepted
too). Anything else is refused with a readable reason that goes back on `Notifications`, and so
is a retained command: the broker would hand it over again on every reconnect.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

MAX_COMMAND_BYTES = 16 * 1024
KNOWN = ("capture", "reload", "status")
RETAINED = ("retained commands are ignored (the broker replays them on every reconnect): "
            "publish commands without retain, and clear the retained one")
_ALIASES = {"capture-now": "capture", "capture_now": "capture", "reload-model": "reload",
            "reload_model": "reload", "publish-status": "status", "publish_status": "status"}


class CommandError(ValueError):
    """Malformed or unknown command; `command` is the name when one could be read."""

    def __init__(self, message: str, command: Optional[str] = None,
                 request_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.command = command
        self.request_id = request_id


@dataclass(frozen=True)
class Command:
    name: str
    request_id: Optional[str] = None


def _short(value: Any, limit: int = 64) -> Optional[str]:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "…"


def parse(payload: bytes) -> Command:
    """Decode one command message; raises CommandError with an operator-readable reason."""
    if len(payload) > MAX_COMMAND_BYTES:
        raise CommandError(f"command too large ({len(payload)} bytes, max {MAX_COMMAND_BYTES})")
    try:
        doc = json.loads(payload.decode("utf-8"))
    except RecursionError:   # "[[[[…" nested thousands deep: json gives up, paho must not see it
        raise CommandError("command JSON is nested too deeply") from None
    except ValueError:       # also UnicodeDecodeError, and an int past Python's digit limit
        raise CommandError("command is not valid UTF-8 JSON") from None
    if not isinstance(doc, dict):
        raise CommandError("command must be a JSON object like {\"Command\": \"capture\"}")
    keys: Dict[str, Any] = {str(k).lower(): v for k, v in doc.items()}
    request_id = _short(keys.get("id"))
    raw = keys.get("command")
    if raw is None and str(keys.get("type", "")).lower() == "command":
        raw = keys.get("value")
    if not isinstance(raw, str) or not raw.strip():
        raise CommandError("no command name (expected {\"Command\": \"capture|reload|status\"})",
                           request_id=request_id)
    name = raw.strip().lower()
    name = _ALIASES.get(name, name)
    if name not in KNOWN:
        raise CommandError(f"unknown command {_short(raw)!r} (known: {', '.join(KNOWN)})",
                           command=_short(raw), request_id=request_id)
    return Command(name, request_id)


def run_on_daemon(daemon: Any, name: str) -> Tuple[bool, str]:
    """Runs `capture` or `reload` (may take seconds: call it off the MQTT thread)."""
    if name == "capture":
        if daemon.request_capture():
            return True, "capture requested"
        return False, "no camera is enabled on this device"
    if name == "reload":
        ok, message = daemon.reload_model()
        return bool(ok), str(message)
    raise CommandError(f"{name!r} is not run on the daemon", command=name)
