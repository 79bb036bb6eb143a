"""Operator logging: one plain line per event on stderr, journald-aware.

Under systemd (`$JOURNAL_STREAM` set) journald adds its own timestamps, so lines carry a
`<N>` syslog priority prefix instead (journald turns it into the entry's priority).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional, TextIO

_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7,
}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prio = _SYSLOG_PRIORITY.get(record.levelno, 6)
        return f"<{prio}>{super().format(record)}"


def under_journald() -> bool:
    return bool(os.environ.get("JOURNAL_STREAM"))


def setup_logging(level: str = "INFO", stream: Optional[TextIO] = None) -> None:
    """Configure the root logger once (idempotent: replaces our previous handler)."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    if under_journald():
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    handler.set_name("all-edge")
    root = logging.getLogger()
    for h in list(root.handlers):
        if h.get_name() == "all-edge":
            root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party chatter (watchdog's inotify debug lines, waitress queue warnings) stays quiet.
    logging.getLogger("watchdog").setLevel(max(logging.INFO, root.level))
