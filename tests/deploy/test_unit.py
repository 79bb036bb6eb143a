"""The systemd unit and udev rule as shipped in systemd/ (fast checks, no install)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.deploy.staging import UNIT_SRC, unit_values

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None,
                                   reason="systemd-analyze not installed (scripts/test installs it)")


def verify_output(unit: Path) -> str:
    """Everything `systemd-analyze verify` prints: it returns 0 even on typos, so any output fails."""
    proc = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True,
                          timeout=60)
    return (proc.stdout + proc.stderr).strip()


def security_score(unit: Path) -> float:
    proc = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", str(unit)],
                          capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: ([0-9]+(?:\.[0-9]+)?)", proc.stdout)
    assert m, f"no score in systemd-analyze security output:\n{proc.stdout}\n{proc.stderr}"
    return float(m.group(1))


def runnable_copy(tmp_path: Path, text: str) -> Path:
    """The shipped unit with ExecStart's interpreter pointed at one that exists here."""
    text = text.replace("/opt/all-edge/current/venv/bin/python", sys.executable)
    unit = tmp_path / "all-edge.service"
    unit.write_text(text, encoding="utf-8")
    return unit


@needs_analyze
def test_shipped_unit_verifies_silently(tmp_path: Path) -> None:
    unit = runnable_copy(tmp_path, UNIT_SRC.read_text(encoding="utf-8"))
    assert verify_output(unit) == ""


@needs_analyze
def test_verify_check_catches_a_typo(tmp_path: Path) -> None:
    """The silence check can fail: a misspelt key is reported (and still exits 0)."""
    text = UNIT_SRC.read_text(encoding="utf-8").replace("WatchdogSec=", "WatchdogSecs=")
    out = verify_output(runnable_copy(tmp_path, text))
    assert "WatchdogSecs" in out


@needs_analyze
def test_shipped_unit_security_score(tmp_path: Path) -> None:
    unit = runnable_copy(tmp_path, UNIT_SRC.read_text(encoding="utf-8"))
    assert security_score(unit) <= 3.0


@needs_analyze
def test_score_parser_sees_a_weak_unit(tmp_path: Path) -> None:
    unit = tmp_path / "weak.service"
    unit.write_text(f"[Service]\nExecStart={sys.executable} -c pass\n", encoding="utf-8")
    assert security_score(unit) > 3.0


def test_unit_has_the_required_settings() -> None:
    text = UNIT_SRC.read_text(encoding="utf-8")

    def one(key: str) -> str:
        vals = unit_values(text, key)
        assert len(vals) == 1, f"{key}= appears {len(vals)} times"
        return vals[0]

    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    assert one("ExecStart") == ("/opt/all-edge/current/venv/bin/python -m edge run "
                                "--config /etc/all-edge/confs.json")
    assert int(one("WatchdogSec")) > 0
    assert one("Restart") == "on-failure"
    assert int(one("StartLimitBurst")) > 0 and int(one("StartLimitIntervalSec")) > 0
    for key in ("StateDirectory", "ConfigurationDirectory", "LogsDirectory"):
        assert one(key) == "all-edge"
    creds = dict(v.split(":", 1) for v in unit_values(text, "LoadCredential"))
    assert creds == {n: f"/etc/all-edge/credentials/{n}"
                     for n in ("hias-password", "api-password", "api-token")}
    # each credential has a blank fallback so a missing file does not stop the service
    assert sorted(v.split(":", 1)[0] for v in unit_values(text, "SetCredential")) == sorted(creds)
    assert one("NoNewPrivileges") == "yes"
    assert one("ProtectSystem") == "strict"
    assert one("ProtectHome") == "yes"
    assert one("PrivateTmp") == "yes"
    assert one("CapabilityBoundingSet") == ""
    assert one("RestrictAddressFamilies").split() == ["AF_UNIX", "AF_INET", "AF_INET6",
                                                      "AF_NETLINK"]
    assert one("DevicePolicy") == "closed"
    allowed = unit_values(text, "DeviceAllow")
    assert "char-usb_device rw" in allowed  # USB, char major 189: the NCS2
    assert "char-video4linux rw" in allowed
    assert one("MemoryMax").endswith(("M", "G"))
    assert unit_values(text, "SystemCallFilter")[0] == "@system-service"


def test_udev_rule_covers_the_ncs2() -> None:
    rules = [ln for ln in (REPO_ROOT / "systemd" / "97-myriad-usbboot.rules")
             .read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]
    products = set()
    for ln in rules:
        assert 'SUBSYSTEM=="usb"' in ln and 'ATTRS{idVendor}=="03e7"' in ln, ln
        assert 'GROUP="users"' in ln and 'MODE="0660"' in ln, ln
        products.add(re.search(r'ATTRS\{idProduct\}=="([0-9a-f]{4})"', ln).group(1))
    assert products == {"2150", "2485", "f63b"}
