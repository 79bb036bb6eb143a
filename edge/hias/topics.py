"""iotJumpWay topic names: `{location}/{EntityType}s/{zone}/{entity}/{channel}`.

HIAS splits a topic on `/` and reads segment 1 as the entity type plural, segment 3 as the
entity and segment 4 as the channel; a channel it does not know is silently dropped, so only
the names below are ever built.
"""

from __future__ import annotations

from typing import Dict

from edge.config import HiasConfig

STATUS = "Status"
LIFE = "Life"
COMMANDS = "Commands"
NOTIFICATIONS = "Notifications"
CLASSIFICATION = "Classification"
CHANNELS = (STATUS, LIFE, COMMANDS, NOTIFICATIONS, CLASSIFICATION)


def base(cfg: HiasConfig) -> str:
    """Topic prefix of this entity, without the channel."""
    return f"{cfg.location}/{cfg.entity_type}/{cfg.zone}/{cfg.entity}"


def topic(cfg: HiasConfig, channel: str) -> str:
    if channel not in CHANNELS:
        raise ValueError(f"not a HIAS channel this agent uses: {channel!r}")
    return f"{base(cfg)}/{channel}"


def all_topics(cfg: HiasConfig) -> Dict[str, str]:
    return {c: topic(cfg, c) for c in CHANNELS}
