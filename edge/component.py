"""What every long-running part of the daemon (sources, HTTP, HIAS, camera) looks like to it.

The daemon owns a list of components: it starts them in order after the model is compiled,
asks each for health checks and a status snapshot, and stops them in reverse order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Literal

State = Literal["ok", "warn", "fail", "disabled"]


@dataclass
class HealthCheck:
    """One line of the operator's health table; `fail` makes /healthz answer 503."""

    name: str
    state: State
    summary: str
    detail: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


class Component:
    """Base class with no-op defaults; subclasses override what they need."""

    name: str = "component"

    def start(self) -> None:
        """Start threads; must return promptly. Raise only for unrecoverable misconfiguration."""

    def stop(self, timeout: float = 10.0) -> None:
        """Stop intake first, finish in-flight work, release resources."""

    def health(self) -> List[HealthCheck]:
        return []

    def status(self) -> Dict[str, Any]:
        """JSON-able snapshot merged under `components.<name>` in /api/v1/status."""
        return {}

    def on_result(self, result: Dict[str, Any]) -> None:
        """Called after a result is durably journaled (never before). Must not block."""
