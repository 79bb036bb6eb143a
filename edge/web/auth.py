"""Who may call the state-changing and compute-costing routes.

Credentials (HTTP Basic username + password, and/or a bearer token) come from
`edge.secrets.resolve_secret`, never from the config file itself. They are resolved once at
start so that a missing secret is an error at start, not a surprise at the first request.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from typing import Optional

from edge.config import ServerConfig
from edge.secrets import resolve_secret

REALM = "all-edge"


class AuthConfigError(Exception):
    """The server must not start with this authentication setup; the message says why."""


@dataclass(frozen=True)
class Credentials:
    username: Optional[str] = None
    password: Optional[str] = None
    token: Optional[str] = None
    open_access: bool = False  # no credentials configured and that is allowed (loopback/explicit)

    @property
    def configured(self) -> bool:
        return bool(self.password or self.token)

    @property
    def schemes(self) -> str:
        """What the operator has enabled, for logs (never the secrets)."""
        if self.open_access:
            return "none (open)"
        names = (["basic"] if self.password else []) + (["bearer"] if self.token else [])
        return "+".join(names)


def _read(file, credential, env, what: str) -> Optional[str]:
    try:
        return resolve_secret(file=file, credential=credential, env=env)
    except OSError as exc:
        raise AuthConfigError(f"server.auth: cannot read the {what} file {exc.filename or file}: "
                              f"{exc.strerror}") from None


def load_credentials(server: ServerConfig) -> Credentials:
    """Resolve secrets and apply the bind rule: non-loopback needs credentials unless allowed."""
    auth = server.auth
    password = _read(auth.password_file, auth.password_credential, auth.password_env, "password")
    token = _read(auth.token_file, auth.token_credential, auth.token_env, "token")
    if password and not auth.username:
        raise AuthConfigError(
            "server.auth: a password is configured but server.auth.username is not set "
            "(HTTP Basic needs both)"
        )
    if auth.username and not password:
        raise AuthConfigError(
            f"server.auth.username is set but no password was found (file "
            f"{auth.password_file}, credential {auth.password_credential!r}, "
            f"env {auth.password_env!r})"
        )
    if password or token:
        return Credentials(auth.username, password, token)
    if not server.is_loopback and not server.allow_unauthenticated_remote:
        raise AuthConfigError(
            f"server.host {server.host} is not a loopback address and no API credentials are "
            "configured: set server.auth (username + password and/or token), bind 127.0.0.1, "
            "or set server.allow_unauthenticated_remote=true (not recommended)"
        )
    return Credentials(open_access=True)


def _eq(given: str, expected: Optional[str]) -> bool:
    """Constant-time comparison on bytes (hmac.compare_digest rejects non-ASCII str)."""
    if expected is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def check_authorization(creds: Credentials, header: Optional[str]) -> bool:
    """True when the `Authorization` header satisfies the configured credentials."""
    if creds.open_access:
        return True
    if not header:
        return False
    scheme, _, value = header.strip().partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer" and creds.token:
        return _eq(value, creds.token)
    if scheme == "basic" and creds.password:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        if not sep:
            return False
        # evaluate both so that timing does not reveal which one was wrong
        ok_user = _eq(user, creds.username)
        ok_password = _eq(password, creds.password)
        return ok_user and ok_password
    return False


def challenge(creds: Credentials) -> str:
    """The `WWW-Authenticate` header value for a 401."""
    if creds.password:
        return f'Basic realm="{REALM}", charset="UTF-8"'
    return f'Bearer realm="{REALM}"'
