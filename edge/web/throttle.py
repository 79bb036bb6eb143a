"""Failed-login lockout: without it a Pi on a lab network answers password guesses as fast as
HTTP allows. Counted per client address over a sliding window; memory is bounded."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from typing import Callable, Deque

MAX_ADDRESSES = 1024   # a flood of spoofed sources must not grow memory without bound


class FailedLogins:
    """`limit` wrong credentials from one address within `window` s lock it out until the oldest
    of them is `window` s old. `limit` 0 switches the lockout off."""

    def __init__(self, limit: int = 10, window: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self._clock = limit, window, clock
        self._failures: OrderedDict[str, Deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, addr: str, now: float) -> Deque[float]:
        times = self._failures.get(addr, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def retry_after(self, addr: str) -> int:
        """Whole seconds until `addr` may try again; 0 when it is not locked out."""
        if self.limit <= 0:
            return 0
        with self._lock:
            now = self._clock()
            times = self._recent(addr, now)
            if len(times) < self.limit:
                return 0
            return max(1, math.ceil(times[-self.limit] + self.window - now))

    def failed(self, addr: str) -> bool:
        """Count one wrong attempt; True when it is the one that locks `addr` out."""
        if self.limit <= 0:
            return False
        with self._lock:
            now = self._clock()
            times = self._recent(addr, now)
            times.append(now)
            while len(times) > self.limit:
                times.popleft()
            self._failures[addr] = times
            self._failures.move_to_end(addr)
            while len(self._failures) > MAX_ADDRESSES:
                self._failures.popitem(last=False)
            return len(times) == self.limit

    def succeeded(self, addr: str) -> None:
        with self._lock:
            self._failures.pop(addr, None)
