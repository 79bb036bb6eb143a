"""Prometheus text exposition (format 0.0.4) without a client library.

Three sources: results seen by this process (`on_result`: a latency histogram and counts by
source/status/label), HTTP requests served, and a snapshot of `daemon.status()` whose numeric
leaves become gauges (queue depth, outbox depth/oldest age, ...; the `counters` subtree becomes
counters). Health checks are exported as a state set so alerts can fire on `state="fail"`.
"""

from __future__ import annotations

import math
import re
import threading
from collections import defaultdict
from typing import Any, Dict, Iterable, List, Mapping, Tuple

PREFIX = "all_edge"
LATENCY_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
HEALTH_STATES = ("ok", "warn", "fail", "disabled")
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_NAME_BAD = re.compile(r"[^a-zA-Z0-9_]")
_GAUGE_KEY = re.compile(r"depth|uptime|age|_s$")  # levels kept among the daemon's counters


def metric_name(*parts: str) -> str:
    name = "_".join(_NAME_BAD.sub("_", str(p)) for p in (PREFIX, *parts) if p != "")
    return re.sub(r"_+", "_", name).strip("_")


def _label_value(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, Any]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items()) + "}"


def _family(name: str, help_text: str, kind: str) -> List[str]:
    """The `# HELP` and `# TYPE` lines that open one metric family."""
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


def _num(v: float) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return "NaN" if math.isnan(v) else ("+Inf" if v > 0 else "-Inf")
    return repr(float(v)) if isinstance(v, float) else str(int(v))


class Metrics:
    """Thread-safe accumulators; `render` produces the whole exposition text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._results: Dict[Tuple[str, str, str], int] = defaultdict(int)
        self._buckets = [0] * len(LATENCY_BUCKETS_MS)
        self._lat_count = 0
        self._lat_sum = 0.0
        self._http: Dict[Tuple[str, str, int], int] = defaultdict(int)

    def observe_result(self, result: Mapping[str, Any]) -> None:
        key = (str(result.get("source") or "unknown"), str(result.get("status") or "unknown"),
               str(result.get("label") or "none"))
        latency = result.get("latency_ms")
        with self._lock:
            self._results[key] += 1
            if isinstance(latency, (int, float)) and not isinstance(latency, bool) \
                    and latency >= 0:
                self._lat_count += 1
                self._lat_sum += float(latency)
                for i, le in enumerate(LATENCY_BUCKETS_MS):
                    if latency <= le:
                        self._buckets[i] += 1

    def observe_http(self, method: str, route: str, code: int) -> None:
        """`route` is the URL rule (bounded); unknown methods are folded so that clients
        cannot grow the label set."""
        method = method if method in HTTP_METHODS else "OTHER"
        with self._lock:
            self._http[(method, route, code)] += 1

    # ------------------------------------------------------------------ rendering

    def render(self, status: Mapping[str, Any], health: Iterable[Mapping[str, Any]]) -> str:
        out: List[str] = []
        with self._lock:
            results = dict(self._results)
            buckets, count, total = list(self._buckets), self._lat_count, self._lat_sum
            http = dict(self._http)

        name = metric_name("results_seen_total")
        out += _family(name, "Results journaled since this process started.", "counter")
        for (source, st, label), n in sorted(results.items()):
            out.append(f"{name}{_labels({'source': source, 'status': st, 'label': label})} {n}")

        name = metric_name("latency_ms")
        out += _family(name, "Per-input latency (decode + inference) in milliseconds.", "histogram")
        for le, n in zip(LATENCY_BUCKETS_MS, buckets):
            out.append(f'{name}_bucket{{le="{le}"}} {n}')
        out += [f'{name}_bucket{{le="+Inf"}} {count}', f"{name}_sum {_num(total)}",
                f"{name}_count {count}"]

        name = metric_name("http_requests_total")
        out += _family(name, "HTTP requests answered, by route and status code.", "counter")
        for (method, route, code), n in sorted(http.items()):
            out.append(f"{name}{_labels({'method': method, 'route': route, 'code': code})} {n}")

        name = metric_name("health")
        out += _family(name, "Health checks as a state set (1 = the check is in this state).", "gauge")
        for check in health:
            for state in HEALTH_STATES:
                value = 1 if check.get("state") == state else 0
                out.append(f"{name}{_labels({'check': check.get('name'), 'state': state})} "
                           f"{value}")

        out += _status_metrics(status)
        return "\n".join(out) + "\n"


def _leaves(node: Any, path: Tuple[str, ...]) -> Iterable[Tuple[Tuple[str, ...], float]]:
    if isinstance(node, Mapping):
        for k, v in node.items():
            yield from _leaves(v, (*path, str(k)))
    elif isinstance(node, (int, float)):  # bool is an int: exported as 0/1
        yield path, node


def _status_metrics(status: Mapping[str, Any]) -> List[str]:
    """Numeric leaves of daemon.status(): `counters.*` as counters, the rest as gauges."""
    out: List[str] = []
    seen = set()
    for path, value in _leaves(status, ()):
        is_counter = path[0] == "counters" and not _GAUGE_KEY.search(path[-1])
        parts = path[1:] if path[0] == "counters" else ("status", *path)
        name = metric_name(*parts) + ("_total" if is_counter else "")
        if name in seen:
            continue
        seen.add(name)
        kind = "counter" if is_counter else "gauge"
        where = ".".join(path).replace("\\", "\\\\").replace("\n", "\\n")
        out += _family(name, f"daemon.status() {where}", kind) + [f"{name} {_num(value)}"]
    return out
