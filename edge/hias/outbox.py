"""Store-and-forward: what to publish next from the journal's outbox, and PUBACK bookkeeping.

The daemon journals a result and its outbox row in one transaction, then calls `on_result`.
New results (`offer`) go out at once; everything else still undelivered (an outage's backlog,
or what a previous run left behind) is read from `journal.outbox_pending` oldest first and
released at `resend_rate` per second by a token bucket, so new results keep flowing while the
backlog drains. A row is marked delivered only when its PUBACK's message id comes back with a
success code. A refusing PUBACK (MQTT 5, e.g. the broker's ACL says no) holds every result
back for a while, then one result probes whether the broker takes them again; the wait doubles
per refused probe. Only results with status "ok" are published (Classification messages are
for classifications; the journal gives other results no outbox row).

Not thread-safe except `offer`, `set_connected` and `pending_hint`: the MQTT thread owns it.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from typing import Any, Deque, Dict, List, Mapping, Optional

MAX_IN_FLIGHT = 100          # published, PUBACK not yet seen
MAX_FRESH = 1000             # new results held in memory; more stay in the outbox (backlog)
RECHECK_SECONDS = 30.0       # look at the outbox now and then even when told nothing
REFUSED_RETRY_MIN = 60.0     # seconds results are held back after the broker refused one ...
REFUSED_RETRY_MAX = 900.0    # ... doubling per refused probe up to this


def row_result(row: Mapping[str, Any]) -> Dict[str, Any]:
    """The result dict of an outbox row (the journal may return it bare or under `result`)."""
    inner = row.get("result", row)
    if isinstance(inner, (str, bytes)):
        inner = json.loads(inner)
    return dict(inner)


class TokenBucket:
    """`rate` tokens per second, at most one second's worth saved up."""

    def __init__(self, rate: float, clock=time.monotonic) -> None:
        self.rate = float(rate)
        self.capacity = max(1.0, self.rate)
        self.clock = clock
        self.tokens = self.capacity
        self.stamp = clock()

    def available(self) -> int:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return int(self.tokens)

    def take(self, n: int) -> None:
        self.tokens -= n


class Outbox:
    def __init__(self, journal: Any, resend_rate: float, clock=time.monotonic) -> None:
        self.journal = journal
        self.bucket = TokenBucket(resend_rate, clock)
        self.clock = clock
        self._lock = threading.Lock()
        self._fresh: Deque[Dict[str, Any]] = collections.deque()
        self._connected = False
        self._backlog_maybe = True      # a previous run may have left rows behind
        self._last_check = float("-inf")
        self._refused_until: Optional[float] = None   # set while the broker refuses results
        self._refused_delay = 0.0
        self.in_flight: Dict[int, str] = {}   # mid -> result id
        # Ids recently sent from the backlog: the pipeline commits a batch, then offers each
        # result, so a backlog read can see a row before its offer lands in _fresh.
        self._backlog_sent: Deque[str] = collections.deque(maxlen=MAX_FRESH)
        self._backlog_sent_set: set = set()
        self.sent_fresh = 0
        self.sent_backlog = 0
        self.unreadable = 0

    # ---- any thread
    def offer(self, result: Mapping[str, Any]) -> None:
        """A result was just journaled. Never blocks on I/O."""
        if result.get("status") != "ok":
            return
        with self._lock:
            if self._connected and len(self._fresh) < MAX_FRESH and result.get("id"):
                self._fresh.append(dict(result))
            else:
                self._backlog_maybe = True

    def set_connected(self, connected: bool) -> None:
        with self._lock:
            self._connected = connected
            self._backlog_maybe = True
            if not connected:
                self._fresh.clear()   # they are in the outbox; they go out as backlog

    def pending_hint(self) -> int:
        with self._lock:
            return len(self._fresh)

    # ---- MQTT thread
    def _in_flight_ids(self) -> set:
        return set(self.in_flight.values())

    def take(self) -> List[Dict[str, Any]]:
        """Results to publish now: new ones first, then backlog as the rate allows."""
        room = MAX_IN_FLIGHT - len(self.in_flight)
        if self._refused_until is not None:
            if self.in_flight or self.clock() < self._refused_until:
                with self._lock:   # held back; they are in the outbox and go out later
                    self._fresh.clear()
                    self._backlog_maybe = True
                return []
            room = 1               # probe: does the broker take results again?
        if room <= 0:
            return []
        busy = self._in_flight_ids()
        out: List[Dict[str, Any]] = []
        with self._lock:
            while self._fresh and len(out) < room:
                r = self._fresh.popleft()
                if r["id"] not in busy and r["id"] not in self._backlog_sent_set:
                    out.append(r)
                    busy.add(r["id"])
            fresh_ids = {r["id"] for r in self._fresh}
            check = self._backlog_maybe or self.clock() - self._last_check >= RECHECK_SECONDS
        self.sent_fresh += len(out)
        room -= len(out)
        allowed = min(room, self.bucket.available())
        if not check or allowed <= 0:
            return out
        limit = len(busy) + len(fresh_ids) + allowed
        rows = self.journal.outbox_pending(limit)
        self._last_check = self.clock()
        backlog = []
        for row in rows:
            try:
                r = row_result(row)
            except (ValueError, TypeError):
                self.unreadable += 1   # cannot happen with the journal's own JSON; never loops
                continue
            if r.get("id") not in busy and r.get("id") not in fresh_ids:
                backlog.append(r)
                if len(backlog) >= allowed:
                    break
        if len(rows) < limit and len(backlog) < allowed:
            with self._lock:
                self._backlog_maybe = False   # everything pending is accounted for
        self.bucket.take(len(backlog))
        for r in backlog:
            if len(self._backlog_sent) == self._backlog_sent.maxlen:
                self._backlog_sent_set.discard(self._backlog_sent[0])
            self._backlog_sent.append(r["id"])
            self._backlog_sent_set.add(r["id"])
        self.sent_backlog += len(backlog)
        return out + backlog

    def published(self, mid: int, result_id: str) -> None:
        self.in_flight[mid] = result_id

    def acked(self, mid: int) -> Optional[str]:
        """The result id whose PUBACK this is, or None (Status/Life/Notifications)."""
        return self.in_flight.pop(mid, None)

    def refused(self) -> bool:
        """A result's PUBACK refused it: hold results back. True if this starts a refusal."""
        now = self.clock()
        if self._refused_until is not None and now < self._refused_until:
            return False           # another answer to the same burst
        first = self._refused_until is None
        self._refused_delay = REFUSED_RETRY_MIN if first else \
            min(self._refused_delay * 2, REFUSED_RETRY_MAX)
        self._refused_until = now + self._refused_delay
        return first

    def accepted(self) -> bool:
        """A result's PUBACK accepted it. True if this ends a refusal."""
        was = self._refused_until is not None
        self._refused_until = None
        return was

    def refused_retry_in(self) -> Optional[float]:
        """Seconds until the next probe while the broker refuses results, else None."""
        until = self._refused_until
        return None if until is None else max(0.0, until - self.clock())
