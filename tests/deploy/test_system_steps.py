"""install.sh's system steps (apt, user, chown, systemctl, udev) and its start/rollback logic.

These commands need root on a real Pi with systemd as PID 1, which this machine is not. So the
test puts recording FAKES of apt-get, useradd, usermod, userdel, id, chown, udevadm, uname and
systemctl first on PATH (ALL_EDGE_FAKE_SYSTEM=1 lets install.sh run them inside a staging root).
The fake systemctl "starts" the service unless the current release contains docs/BROKEN.md,
which stands for a release that fails to start; such a failure counts as start-limit-hit (the
unit's retries used up), after which the fake, like systemd, refuses every start until
`systemctl reset-failed`. This checks which commands install.sh issues,
in which order, and what it does when a start fails; it is no proof that they work on a Pi.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from tests.deploy.staging import copy_source, run_install
from tests.deploy.test_py39_openvino2022 import find_python39

pytestmark = pytest.mark.slow

LOGGER = 'echo "$(basename "$0") $*" >> "$FAKE_LOG"\n'
FAKES = {
    "apt-get": LOGGER,
    "usermod": LOGGER,
    "chown": LOGGER,
    "udevadm": LOGGER,
    "useradd": LOGGER + 'for a; do last="$a"; done; touch "$FAKE_STATE/user-$last"\n',
    "userdel": LOGGER + 'rm -f "$FAKE_STATE/user-$1"\n',
    "id": ('if [ "$1" = -u ] && [ -n "${2:-}" ]; then\n'
           '  [ -f "$FAKE_STATE/user-$2" ] && echo 999 && exit 0; exit 1\nfi\n'
           'exec /usr/bin/id "$@"\n'),
    "uname": 'if [ "$1" = -m ]; then echo aarch64; else exec /bin/uname "$@"; fi\n',
    "systemctl": LOGGER + (
        'case "$1" in\n'
        '  is-active) [ -f "$FAKE_STATE/active" ]; exit $? ;;\n'
        '  is-enabled) [ -f "$FAKE_STATE/enabled" ]; exit $? ;;\n'
        '  enable) touch "$FAKE_STATE/enabled" ;;\n'
        '  disable) rm -f "$FAKE_STATE/enabled"\n'
        '           if [ "$2" = --now ]; then rm -f "$FAKE_STATE/active"; fi ;;\n'
        '  reset-failed) rm -f "$FAKE_STATE/start-limit-hit" ;;\n'
        '  start|restart)\n'
        '    if [ -e "$FAKE_STATE/start-limit-hit" ]; then\n'
        '      echo "Job for $2.service failed: start-limit-hit" >&2; exit 1\n'
        '    fi\n'
        '    if [ -e "$FAKE_ROOT/opt/all-edge/current/src/docs/BROKEN.md" ]; then\n'
        '      rm -f "$FAKE_STATE/active"; touch "$FAKE_STATE/start-limit-hit"; exit 1\n'
        '    fi\n'
        '    touch "$FAKE_STATE/active" ;;\n'
        'esac\n'),
}


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "root"
    shutil.rmtree(tmp_path / "root", ignore_errors=True)  # releases with venvs: ~1 GB


class FakeSystem:
    def __init__(self, tmp: Path, root: Path) -> None:
        self.bin, self.state, self.log, self.root = tmp / "bin", tmp / "state", tmp / "log", root
        self.bin.mkdir()
        self.state.mkdir()
        self.log.write_text("")
        for name, body in FAKES.items():
            p = self.bin / name
            p.write_text("#!/bin/bash\n# FAKE for tests/deploy/test_system_steps.py\n" + body)
            p.chmod(p.stat().st_mode | stat.S_IXUSR)
        self.seen = 0

    @property
    def env(self) -> Dict[str, str]:
        return {"PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                "ALL_EDGE_FAKE_SYSTEM": "1", "FAKE_LOG": str(self.log),
                "FAKE_STATE": str(self.state), "FAKE_ROOT": str(self.root)}

    def new_calls(self) -> List[str]:
        lines = self.log.read_text().splitlines()
        new, self.seen = lines[self.seen:], len(lines)
        return new

    def is_(self, what: str) -> bool:
        return (self.state / what).exists()


BROKEN_EXEC = "python -X dev -m edge run"  # the broken release's unit differs from the good one


def broken(src: Path) -> Path:
    """A release that fails to start (fake systemctl) and brings a changed default and a
    changed unit (ExecStart)."""
    (src / "docs" / "BROKEN.md").write_text("this release fails to start (fake systemctl)\n")
    cfg = json.loads((src / "confs.json").read_text())
    cfg["analysis"]["max_cells"] += 3
    (src / "confs.json").write_text(json.dumps(cfg, indent=2) + "\n")
    unit = src / "systemd" / "all-edge.service"
    text = unit.read_text()
    assert "python -m edge run" in text
    unit.write_text(text.replace("python -m edge run", BROKEN_EXEC))
    return src


def test_system_steps_start_and_rollback(tmp_path: Path, root: Path, source: Path,
                                         wheelhouse: Path) -> None:
    fake = FakeSystem(tmp_path, root)

    def install(*args: str, src: Path = source, check: bool = True):
        return run_install(root, *args, src=src, wheelhouse=wheelhouse, env=fake.env,
                           check=check)

    # fresh install: packages, user, owners, then the unit is enabled and started
    proc = install()
    calls = fake.new_calls()
    assert "implies --no-system" not in proc.stdout
    assert calls[:2] == [
        "apt-get update -q",
        "apt-get install -y -q --no-install-recommends python3-venv python3-pip "
        "python3-systemd python3-picamera2 ca-certificates"]
    assert calls[2] == ("useradd --system --user-group --home-dir /var/lib/all-edge "
                        "--no-create-home --shell /usr/sbin/nologin --groups video all-edge")
    assert f"chown root:all-edge {root}/etc/all-edge/confs.json" in calls
    # files created by root already belong to root:root: no chown for them
    assert not [c for c in calls if c.startswith("chown root:root")]
    assert f"chown all-edge:all-edge {root}/var/lib/all-edge/inbox" in calls
    sysd = [c for c in calls if c.startswith("systemctl")]
    assert sysd == ["systemctl daemon-reload", "systemctl is-active --quiet all-edge",
                    "systemctl reset-failed all-edge", "systemctl enable all-edge",
                    "systemctl restart all-edge"]
    assert not [c for c in calls if c.startswith("udevadm")]  # CPU mode: no NCS2 rule
    assert fake.is_("enabled") and fake.is_("active")

    # a rerun: the user exists, nothing changed, the running (and enabled) service is left alone
    install()
    calls = fake.new_calls()
    assert "usermod -a -G video all-edge" in calls
    assert [c for c in calls if c.startswith("systemctl")] == [
        "systemctl is-active --quiet all-edge", "systemctl is-enabled --quiet all-edge"]

    # an upgrade whose release does not start is rolled back to the previous release, and to
    # its unit: the unit is rendered from the release being installed, not from the new tree
    good = (root / "opt/all-edge/current").resolve()
    unit = root / "etc/systemd/system/all-edge.service"
    good_unit = unit.read_text()
    dist = root / "etc/all-edge/confs.json.dist"
    defaults = dist.read_bytes()
    proc = install("--upgrade", src=broken(copy_source(tmp_path / "broken")), check=False)
    assert proc.returncode == 1
    assert "upgrade failed and was rolled back" in proc.stderr
    assert (root / "opt/all-edge/current").resolve() == good
    assert dist.read_bytes() == defaults, "the live release's defaults stay recorded"
    assert BROKEN_EXEC not in unit.read_text()
    assert unit.read_text() == good_unit
    assert [c for c in fake.new_calls() if c.startswith("systemctl")] == [
        "systemctl daemon-reload",  # the broken release's unit
        "systemctl reset-failed all-edge", "systemctl restart all-edge",
        "systemctl daemon-reload",  # the good release's unit again
        "systemctl reset-failed all-edge", "systemctl restart all-edge"]
    assert fake.is_("active") and fake.is_("enabled")

    # a good upgrade switches and restarts once
    v2 = copy_source(tmp_path / "v2")
    (v2 / "docs" / "v2.md").write_text("# new code\n")
    proc = install("--upgrade", src=v2)
    assert (root / "opt/all-edge/current").resolve() != good
    assert [c for c in fake.new_calls() if c.startswith("systemctl")] == [
        "systemctl reset-failed all-edge", "systemctl restart all-edge",
        "systemctl is-enabled --quiet all-edge"]

    # uninstall --purge stops, disables, removes the user
    install("--uninstall", "--purge")
    calls = fake.new_calls()
    assert calls == ["systemctl disable --now all-edge", "systemctl daemon-reload",
                     "userdel all-edge"]
    assert not fake.is_("enabled") and not fake.is_("active")


def test_a_fresh_install_that_does_not_start_is_left_disabled_and_an_upgrade_recovers_it(
        tmp_path: Path, root: Path, source: Path, wheelhouse: Path) -> None:
    fake = FakeSystem(tmp_path, root)

    def install(*args: str, src: Path, check: bool = True):
        return run_install(root, *args, src=src, wheelhouse=wheelhouse, env=fake.env,
                           check=check)

    proc = install(src=broken(copy_source(tmp_path / "src")), check=False)
    assert proc.returncode == 1
    assert "did not start; it was left disabled" in proc.stderr
    sysd = [c for c in fake.new_calls() if c.startswith("systemctl")]
    assert sysd[-3:] == ["systemctl enable all-edge", "systemctl restart all-edge",
                         "systemctl disable --now all-edge"]
    assert not fake.is_("enabled")
    assert fake.is_("start-limit-hit")

    # fixed code: a plain rerun says to upgrade; the upgrade resets the failed state, starts
    # the new release and enables it (it was left disabled)
    proc = install(src=source, check=False)
    assert proc.returncode == 1 and "run with --upgrade" in proc.stderr
    install("--upgrade", src=source)
    assert [c for c in fake.new_calls() if c.startswith("systemctl")] == [
        "systemctl daemon-reload", "systemctl reset-failed all-edge",
        "systemctl restart all-edge", "systemctl is-enabled --quiet all-edge",
        "systemctl enable all-edge"]
    assert fake.is_("active") and fake.is_("enabled")
    unit = (root / "etc/systemd/system/all-edge.service").read_text()
    assert BROKEN_EXEC not in unit and "python -m edge run" in unit


def test_ncs2_mode_adds_the_users_group_and_the_udev_rule(tmp_path: Path, source: Path) -> None:
    """Dry run in NCS2 mode with the fakes: which system steps it would take (no venv built)."""
    root = tmp_path / "root"
    fake = FakeSystem(tmp_path, root)
    py39 = find_python39()
    if py39 is None:
        pytest.skip("no Python 3.9 interpreter (pyenv or PATH): NCS2 mode needs one")
    os_release = tmp_path / "os-release"  # FAKE: this machine is not Bullseye
    os_release.write_text('PRETTY_NAME="Debian GNU/Linux 11 (bullseye)"\n'
                          'VERSION_CODENAME=bullseye\nID=debian\n')
    proc = run_install(root, "--ncs2", "--dry-run", src=source, wheelhouse=tmp_path,
                       env={**fake.env, "ALL_EDGE_OS_RELEASE": str(os_release)}, python=py39)
    assert "warning" not in proc.stdout  # OS and architecture accepted
    assert "would: apt-get install python3-venv python3-pip python3-systemd " \
           "python3-picamera2 ca-certificates libusb-1.0-0" in proc.stdout
    assert "would: useradd --system all-edge (groups video,users)" in proc.stdout
    assert f"would: install {root}/etc/udev/rules.d/97-myriad-usbboot.rules" in proc.stdout
    assert fake.new_calls() == []  # a dry run runs none of them
    assert not root.exists()
