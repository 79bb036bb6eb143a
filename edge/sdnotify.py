"""systemd's notify protocol without python-systemd: one datagram to `$NOTIFY_SOCKET`.

Abstract sockets are written `@name` in the variable. Outside systemd every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Optional

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: Optional[str] = None) -> None:
        self.address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self._sock: Optional[socket.socket] = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    @staticmethod
    def watchdog_interval() -> Optional[float]:
        """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), None if not requested."""
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        if not usec.isdigit() or int(usec) <= 0:
            return None
        if pid and pid.isdigit() and int(pid) != os.getpid():
            return None
        return int(usec) / 2e6

    def _target(self) -> str:
        a = self.address
        return "\0" + a[1:] if a.startswith("@") else a

    def notify(self, **fields: object) -> bool:
        """Send `KEY=value` lines, e.g. notify(READY=1, STATUS="ok"). False if not sent."""
        if not self.enabled:
            return False
        msg = "\n".join(f"{k}={str(v).replace(chr(10), ' ')}" for k, v in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(msg.encode("utf-8"), self._target())
            return True
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify systemd at %s: %s", self.address, exc.strerror)
                self._warned = True
            return False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
