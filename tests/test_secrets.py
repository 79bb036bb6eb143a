"""edge.secrets: which source wins, blank sources, unreadable and non-UTF-8 files."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from edge.config import ServerConfig
from edge.secrets import resolve_secret
from edge.web import AuthConfigError
from edge.web.auth import load_credentials

ENV = "EDGE_TEST_SECRET"


@pytest.fixture
def creds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty $CREDENTIALS_DIRECTORY and no ambient secrets."""
    d = tmp_path / "credentials"
    d.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(d))
    for name in (ENV, "ALL_EDGE_API_PASSWORD", "ALL_EDGE_API_TOKEN", "HIAS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    return d


def test_first_non_blank_source_wins(creds: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, " from-env\n")
    (creds / "cred").write_text("from-credential\n")
    (tmp_path / "file").write_text("from-file\n")
    assert resolve_secret(tmp_path / "file", "cred", ENV) == "from-file"
    assert resolve_secret(None, "cred", ENV) == "from-credential"
    assert resolve_secret(None, "missing", ENV) == "from-env"
    assert resolve_secret(None, "missing", "UNSET_" + ENV) is None


@pytest.mark.parametrize("blank", ["", " ", "\n", " \t\n"])
def test_blank_credential_falls_through_to_the_environment(
        creds: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blank: str) -> None:
    """The systemd unit always provides the credential: blank (SetCredential=) when the
    operator has not made the file, and then $HIAS_PASSWORD etc. must still count."""
    (creds / "cred").write_text(blank)
    assert resolve_secret(None, "cred", ENV) is None
    monkeypatch.setenv(ENV, "from-env")
    assert resolve_secret(None, "cred", ENV) == "from-env"
    (tmp_path / "file").write_text(blank)
    assert resolve_secret(tmp_path / "file", "cred", ENV) == "from-env"


def test_not_utf8_is_a_readable_os_error(creds: Path, tmp_path: Path) -> None:
    bad = tmp_path / "file"
    bad.write_bytes(b"\xff\xfep\x00w\x00")                # UTF-16, as a Windows editor saves
    with pytest.raises(OSError) as exc:
        resolve_secret(bad, "cred", ENV)
    assert (exc.value.errno, exc.value.strerror, exc.value.filename) == \
        (errno.EILSEQ, "not UTF-8 text", str(bad))
    (creds / "cred").write_bytes(b"\xff")
    with pytest.raises(OSError, match="not UTF-8 text"):
        resolve_secret(None, "cred", ENV)


def test_web_auth_reports_a_non_utf8_password_file_clearly(creds: Path, tmp_path: Path) -> None:
    bad = tmp_path / "pw"
    bad.write_bytes(b"\xff\xfepw")
    with pytest.raises(AuthConfigError) as exc:
        load_credentials(ServerConfig(auth={"username": "u", "password_file": str(bad)}))
    assert str(exc.value) == f"server.auth: cannot read the password file {bad}: not UTF-8 text"
