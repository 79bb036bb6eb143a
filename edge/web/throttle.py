"""Failed-login lockout: without it a Pi on a lab network answers password guesses as fast as
HTTP allows. Counted per client address over a sliding window; memory is bounded."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from typing import Callable, Deque, Dict

MAX_ADDRESSES = 1024   # a flood of spoofed sources must not grow memory without bound


class FailedLogins:
    """`limit` wrong credentials from one address within `window` s lock it out until the oldest
    of them is `window` s old. `limit` 0 switches the lockout off.

    An attempt is reserved (`begin`) before its credentials are checked and settled (`finish`)
    after, both under one lock, so parallel requests cannot slip more guesses past the limit."""

    def __init__(self, limit: int = 10, window: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self._clock = limit, window, clock
        self._failures: OrderedDict[str, Deque[float]] = OrderedDict()
        self._pending: Dict[str, int] = {}
        self._lock = threading.Lock()

    def _recent(self, addr: str, now: float) -> Deque[float]:
        times = self._failures.get(addr, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def begin(self, addr: str) -> int:
        """0 when `addr` may try now (the attempt is reserved: call `finish`); otherwise the
        whole seconds until it may."""
        if self.limit <= 0:
            return 0
        with self._lock:
            now = self._clock()
            times = self._recent(addr, now)
            if len(times) >= self.limit:
                return max(1, math.ceil(times[-self.limit] + self.window - now))
            if len(times) + self._pending.get(addr, 0) >= self.limit:
                return 1   # the attempts in flight may use up what is left
            self._pending[addr] = self._pending.get(addr, 0) + 1
            return 0

    def finish(self, addr: str, *, failed: bool, cleared: bool = False) -> bool:
        """Settle a reserved attempt: `failed` counts wrong credentials, `cleared` (right ones)
        forgets earlier failures. True when this failure is the one that locks `addr` out."""
        if self.limit <= 0:
            return False
        with self._lock:
            left = self._pending.get(addr, 1) - 1
            if left > 0:
                self._pending[addr] = left
            else:
                self._pending.pop(addr, None)
            if cleared:
                self._failures.pop(addr, None)
                return False
            if not failed:
                return False
            now = self._clock()
            times = self._recent(addr, now)
            times.append(now)
            self._failures[addr] = times
            self._failures.move_to_end(addr)
            while len(self._failures) > MAX_ADDRESSES:
                self._failures.popitem(last=False)
            return len(times) == self.limit
