"""Secrets from a file, a systemd credential or an environment variable — never the config."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Optional


def _read(path: Path) -> Optional[str]:
    """The stripped text of `path`, None when blank.

    Raises OSError for an unreadable file, including one that is not UTF-8 (EILSEQ, strerror
    "not UTF-8 text", filename set), so callers that report OSErrors need no other case.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise OSError(errno.EILSEQ, "not UTF-8 text", str(path)) from None
    return text.strip() or None


def resolve_secret(
    file: Optional[Path] = None,
    credential: Optional[str] = None,
    env: Optional[str] = None,
) -> Optional[str]:
    """First non-blank of: explicit file, `$CREDENTIALS_DIRECTORY/<credential>`, `$<env>`.

    Blank sources fall through: the systemd unit provides a blank credential whenever the
    credential file is missing (SetCredential=), and that must not hide `$<env>`.
    """
    if file is not None:
        value = _read(Path(file))
        if value is not None:
            return value
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if credential and cred_dir:
        p = Path(cred_dir) / credential
        if p.is_file():
            value = _read(p)
            if value is not None:
                return value
    if env:
        return os.environ.get(env, "").strip() or None
    return None
