"""Secrets from a file, a systemd credential or an environment variable — never the config."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def resolve_secret(
    file: Optional[Path] = None,
    credential: Optional[str] = None,
    env: Optional[str] = None,
) -> Optional[str]:
    """First found of: explicit file, `$CREDENTIALS_DIRECTORY/<credential>`, `$<env>`."""
    if file is not None:
        return Path(file).read_text(encoding="utf-8").strip() or None
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if credential and cred_dir:
        p = Path(cred_dir) / credential
        if p.is_file():
            return p.read_text(encoding="utf-8").strip() or None
    if env:
        value = os.environ.get(env, "").strip()
        return value or None
    return None
