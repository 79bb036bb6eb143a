"""install.sh for real, into a staging root: files, modes, idempotency, upgrade, uninstall.

The staging root implies --no-system (no apt, useradd, chown, systemctl, udevadm); owners are
therefore not checked here, only that each skipped chown is reported. The tests of the
"installed" module fixture run in file order: install, rerun, upgrade, uninstall, purge.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Dict, Iterator

import pytest

from tests.conftest import REPO_ROOT
from tests.deploy.staging import (
    INSTALL_SH,
    base_python,
    copy_source,
    diff_snapshots,
    run_install,
    snapshot,
    unit_values,
)
from tests.deploy.test_unit import needs_analyze, security_score, verify_output

CREDENTIALS = ("hias-password", "api-password", "api-token")


def mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


# ------------------------------------------------------------------ fast checks (no install)


def test_shellcheck_clean() -> None:
    sc = shutil.which("shellcheck")
    if sc is None:
        pytest.skip("shellcheck not installed (scripts/test installs it)")
    proc = subprocess.run([sc, str(INSTALL_SH)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_help() -> None:
    proc = subprocess.run(["bash", str(INSTALL_SH), "--help"], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0
    for opt in ("--ncs2", "--openvino-archive", "--upgrade", "--uninstall", "--purge",
                "--dry-run", "--prefix", "--no-system"):
        assert opt in proc.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--bogus"], "unknown option '--bogus'"),
    (["--purge"], "--purge only goes with --uninstall"),
    (["--prefix", "relative/dir"], "must be an absolute path"),
    (["--openvino-archive", "/nonexistent.tgz"], "--openvino-archive needs --ncs2"),
    (["--user", "Bad User"], "is not a valid user name"),
])
def test_bad_options_fail_clearly(tmp_path: Path, args: list, message: str) -> None:
    proc = subprocess.run(["bash", str(INSTALL_SH), *args], capture_output=True, text=True,
                          timeout=30, cwd=tmp_path)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_preflight_rejects_wrong_python_for_ncs2_before_changing_anything(tmp_path: Path) -> None:
    root = tmp_path / "root"
    proc = run_install(root, "--ncs2", wheelhouse=tmp_path, check=False)
    assert proc.returncode == 1
    assert "NCS2 mode runs OpenVINO 2022.3" in proc.stderr
    assert not root.exists()


def test_dry_run_on_empty_root_creates_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    proc = run_install(root, "--dry-run", wheelhouse=tmp_path)
    assert "dry run: nothing will be changed" in proc.stdout
    assert f"would: mkdir -m 0755 {root}/opt/all-edge" in proc.stdout
    assert "would: copy the code" in proc.stdout
    assert not root.exists()


def test_destdir_is_the_staging_root(tmp_path: Path) -> None:
    root = tmp_path / "staged"
    proc = subprocess.run(["bash", str(INSTALL_SH), "--python", base_python(), "--dry-run"],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "DESTDIR": str(root)})
    assert proc.returncode == 0, proc.stderr
    assert "implies --no-system" in proc.stdout
    assert f"would: install {root}/etc/all-edge/confs.json" in proc.stdout
    assert not root.exists()


def test_snapshot_sees_changes_inside_a_venv(tmp_path: Path) -> None:
    """The idempotency checks compare venv files too (by size, mode and mtime)."""
    f = tmp_path / "opt/all-edge/releases/r/venv/lib/site-packages/x.pth"
    f.parent.mkdir(parents=True)
    f.write_text("/a\n")
    before = snapshot(tmp_path)
    assert "opt/all-edge/releases/r/venv/lib/site-packages/x.pth" in before
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))  # rewritten, same content
    assert diff_snapshots(before, snapshot(tmp_path)) != []
    f.write_text("/ab\n")
    assert diff_snapshots(before, snapshot(tmp_path)) != []


# ------------------------------------------------------------------ the install life cycle


CLONER = 1000  # the Pi's first user, who cloned the repository


def as_cloned(src: Path) -> Path:
    """The source tree as a user's checkout with umask 002 leaves it: group-writable, and (when
    the tests run as root, as install.sh does) owned by that user, not root."""
    for dirpath, dirnames, filenames in os.walk(src):
        for name in [""] + dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                continue
            p.chmod(stat.S_IMODE(p.stat().st_mode) | stat.S_IWGRP)
            if os.geteuid() == 0:
                os.chown(p, CLONER, CLONER)
    return src


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory,
              wheelhouse: Path) -> Iterator[Dict[str, object]]:
    tmp = tmp_path_factory.mktemp("staging")
    root = tmp / "root"
    source = as_cloned(copy_source(tmp / "src"))
    # umask 002 as sudo may pass on: install.sh must not let it reach the installed tree
    proc = run_install(root, src=source, wheelhouse=wheelhouse, umask=0o002)
    yield {"root": root, "out": proc.stdout, "src": source}
    shutil.rmtree(root.parent, ignore_errors=True)  # ~1 GB of venvs


@pytest.mark.slow
def test_fresh_install_places_every_file(installed: Dict[str, object]) -> None:
    root: Path = installed["root"]  # type: ignore[assignment]
    etc, state = root / "etc/all-edge", root / "var/lib/all-edge"
    expected_modes = {
        root / "opt/all-edge": 0o755,
        etc: 0o750,
        etc / "confs.json": 0o640,
        etc / "confs.json.dist": 0o640,
        etc / "credentials": 0o700,
        state: 0o750,
        state / "data": 0o750,
        state / "inbox": 0o2770,
        state / "models": 0o750,
        root / "var/log/all-edge": 0o750,
        root / "etc/systemd/system/all-edge.service": 0o644,
    }
    for c in CREDENTIALS:
        expected_modes[etc / "credentials" / c] = 0o600
    for path, want in expected_modes.items():
        assert path.exists(), f"{path} was not installed"
        assert mode(path) == want, f"{path}: mode {oct(mode(path))}, expected {oct(want)}"
    for c in CREDENTIALS:  # placeholders are empty: no secret is ever invented
        assert (etc / "credentials" / c).read_bytes() == b""
    current = root / "opt/all-edge/current"
    assert current.is_symlink() and str(current.readlink()).startswith("releases/")
    rel = current.resolve()
    assert (rel / ".complete").is_file()
    assert (rel / "src/models/default/model.xml").is_file()
    assert not (rel / "src/build").exists() and not list((rel / "src").glob("*.egg-info"))
    # the mode is recorded, for a rerun or --upgrade without --cpu/--ncs2
    assert (rel / "install-mode").read_text() == "hw=cpu\nopenvino_archive=\n"
    assert mode(rel / "install-mode") == 0o644
    # the udev rule is only for --ncs2
    assert not (root / "etc/udev/rules.d/97-myriad-usbboot.rules").exists()
    out: str = installed["out"]  # type: ignore[assignment]
    for skipped in ("apt-get install", "useradd --system all-edge", "chown root:all-edge",
                    "systemctl enable --now all-edge"):
        assert f"skipped (--no-system): {skipped}" in out
    assert "status page: http://127.0.0.1:8080/" in out
    # owners cannot be set without root and the user; the planned chown of each path is checked
    planned = dict(reversed(line.split(": chown ", 1)[1].split(" ", 1))
                   for line in out.splitlines() if ": chown " in line)
    svc = "all-edge:all-edge"
    assert planned == {
        str(root / "opt/all-edge"): "root:root",
        str(root / "opt/all-edge/releases"): "root:root",
        str(etc): "root:all-edge",
        str(etc / "confs.json"): "root:all-edge",
        str(etc / "confs.json.dist"): "root:all-edge",
        str(etc / "credentials"): "root:root",
        **{str(etc / "credentials" / c): "root:root" for c in CREDENTIALS},
        str(state): svc, str(state / "data"): svc, str(state / "inbox"): svc,
        str(state / "models"): svc, str(root / "var/log/all-edge"): svc,
    }


@pytest.mark.slow
def test_release_code_belongs_to_root_and_is_not_group_writable(
        installed: Dict[str, object]) -> None:
    """The checkout is the cloner's and group-writable (see as_cloned); the release's code and
    venv must be root's (docs/deploy.md: "root, 0755"), writable by nobody else, readable by
    the service user. Owners are checked when the tests run as root (install.sh's tar then
    keeps owners unless told not to); otherwise only the modes."""
    root: Path = installed["root"]  # type: ignore[assignment]
    rel = (root / "opt/all-edge/current").resolve()
    src = installed["src"]
    assert mode(src / "edge/daemon.py") & stat.S_IWGRP  # the fixture really is group-writable
    bad = []
    for dirpath, dirnames, filenames in os.walk(rel):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                continue
            m = stat.S_IMODE(st.st_mode)
            if m & (stat.S_IWGRP | stat.S_IWOTH) or not m & stat.S_IROTH:
                bad.append(f"{p}: mode {oct(m)}")
            if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0):
                bad.append(f"{p}: owner {st.st_uid}:{st.st_gid}")
    assert bad == [], "\n".join(bad[:20])
    assert mode(rel / "src") == 0o755 and mode(rel / "src/edge") == 0o755
    assert mode(rel / "src/edge/daemon.py") == 0o644
    assert mode(rel / "src/install.sh") == 0o755  # executables stay executable


@pytest.mark.slow
def test_installed_venv_runs_the_edge_package_without_tensorflow(
        installed: Dict[str, object]) -> None:
    root: Path = installed["root"]  # type: ignore[assignment]
    py = root / "opt/all-edge/current/venv/bin/python"
    code = ("import sys, edge, edge.config, openvino, cv2, flask, waitress, paho.mqtt, watchdog\n"
            "assert 'tensorflow' not in sys.modules\n"
            "print(edge.__file__)")
    proc = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=120,
                          cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{root}/opt/all-edge/current/venv/")  # not the repository's
    venv_cfg = (root / "opt/all-edge/current/venv/pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in venv_cfg
    proc = subprocess.run([str(py), "-m", "pip", "show", "tensorflow"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0  # not installed


@pytest.mark.slow
def test_installed_config_points_into_the_root(installed: Dict[str, object]) -> None:
    root: Path = installed["root"]  # type: ignore[assignment]
    cfg = json.loads((root / "etc/all-edge/confs.json").read_text())
    repo_cfg = json.loads((REPO_ROOT / "confs.json").read_text())
    assert cfg["model"]["xml"] == f"{root}/opt/all-edge/current/src/models/default/model.xml"
    assert cfg["model"]["devices"] == ["CPU"]
    assert cfg["sources"]["folder"]["path"] == f"{root}/var/lib/all-edge/inbox"
    assert cfg["storage"]["data_dir"] == f"{root}/var/lib/all-edge/data"
    # everything else is the repository's defaults
    for section in ("agent", "analysis", "server", "hias"):
        assert cfg[section] == repo_cfg[section]


@pytest.mark.slow
@needs_analyze
def test_installed_unit_has_real_paths_and_passes_the_checks(
        installed: Dict[str, object]) -> None:
    root: Path = installed["root"]  # type: ignore[assignment]
    unit = root / "etc/systemd/system/all-edge.service"
    text = unit.read_text()
    assert unit_values(text, "ExecStart") == [
        f"{root}/opt/all-edge/current/venv/bin/python -m edge run "
        f"--config {root}/etc/all-edge/confs.json"]
    assert unit_values(text, "WorkingDirectory") == [f"{root}/var/lib/all-edge"]
    for value in unit_values(text, "LoadCredential"):
        assert value.split(":", 1)[1].startswith(f"{root}/etc/all-edge/credentials/")
    assert verify_output(unit) == ""
    assert security_score(unit) <= 3.0


@pytest.mark.slow
def test_second_run_and_dry_run_change_nothing(installed: Dict[str, object],
                                               wheelhouse: Path) -> None:
    root: Path = installed["root"]  # type: ignore[assignment]
    before = snapshot(root)
    proc = run_install(root, src=installed["src"], wheelhouse=wheelhouse)
    assert "already built" in proc.stdout
    assert "kept the existing" in proc.stdout
    assert diff_snapshots(before, snapshot(root)) == []
    proc = run_install(root, "--dry-run", src=installed["src"], wheelhouse=wheelhouse)
    assert diff_snapshots(before, snapshot(root)) == []
    proc = run_install(root, "--upgrade", "--dry-run", src=installed["src"],
                       wheelhouse=wheelhouse)
    assert diff_snapshots(before, snapshot(root)) == []


def _new_code(tmp: Path, name: str, bump: int) -> Path:
    """The repository with one new file and one changed default (analysis.max_cells)."""
    src = copy_source(tmp / name)
    (src / "docs" / f"{name}.md").write_text(f"# {name}\n")
    cfg_path = src / "confs.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["analysis"]["max_cells"] += bump
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    return src


@pytest.mark.slow
def test_plain_install_of_new_code_asks_for_upgrade(installed: Dict[str, object],
                                                    tmp_path: Path, wheelhouse: Path) -> None:
    root: Path = installed["root"]  # type: ignore[assignment]
    before = snapshot(root)
    proc = run_install(root, src=_new_code(tmp_path, "newer", 1), wheelhouse=wheelhouse,
                       check=False)
    assert proc.returncode == 1
    assert "run with --upgrade" in proc.stderr
    assert diff_snapshots(before, snapshot(root)) == []


@pytest.mark.slow
def test_upgrade_keeps_config_credentials_and_data(installed: Dict[str, object],
                                                    tmp_path: Path, wheelhouse: Path) -> None:
    root: Path = installed["root"]  # type: ignore[assignment]
    etc = root / "etc/all-edge"
    # the operator's edits and the daemon's data
    cfg = json.loads((etc / "confs.json").read_text())
    cfg["agent"]["name"] = "lab-pi-7"
    (etc / "confs.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (etc / "credentials/hias-password").write_text("s3cret\n")
    marker = root / "var/lib/all-edge/data/journal-marker"
    marker.write_text("results\n")
    config_before = (etc / "confs.json").read_bytes()
    old_release = (root / "opt/all-edge/current").resolve()
    old_max = cfg["analysis"]["max_cells"]

    proc = run_install(root, "--upgrade", src=_new_code(tmp_path, "v2", 7),
                       wheelhouse=wheelhouse)

    new_release = (root / "opt/all-edge/current").resolve()
    assert new_release != old_release
    assert (new_release / "src/docs/v2.md").is_file()
    assert old_release.is_dir(), "the previous release is kept for a rollback"
    assert (etc / "confs.json").read_bytes() == config_before
    assert (etc / "credentials/hias-password").read_text() == "s3cret\n"
    assert marker.read_text() == "results\n"
    # the changed default is shown as a diff and recorded as the new defaults
    assert "the default configuration changed" in proc.stdout
    assert f'-    "max_cells": {old_max}' in proc.stdout
    assert f'+    "max_cells": {old_max + 7}' in proc.stdout
    dist = json.loads((etc / "confs.json.dist").read_text())
    assert dist["analysis"]["max_cells"] == old_max + 7
    assert "skipped (--no-system): systemctl restart all-edge" in proc.stdout

    # upgrading to the same code again changes nothing
    before = snapshot(root)
    proc = run_install(root, "--upgrade", src=tmp_path / "v2", wheelhouse=wheelhouse)
    assert diff_snapshots(before, snapshot(root)) == []


@pytest.mark.slow
def test_upgrade_of_a_network_exposed_setup_validates_with_its_credentials(
        installed: Dict[str, object], tmp_path: Path, wheelhouse: Path) -> None:
    """server.host 0.0.0.0 with the API token as a credential file (docs/deploy.md): check-config
    applies the "no remote bind without credentials" rule, so install.sh must validate with the
    credentials the unit loads, as the daemon sees them."""
    root: Path = installed["root"]  # type: ignore[assignment]
    etc = root / "etc/all-edge"
    cfg_path, token = etc / "confs.json", etc / "credentials/api-token"
    good_cfg, good_token = cfg_path.read_bytes(), token.read_bytes()
    cfg = json.loads(good_cfg)
    cfg["server"]["host"] = "0.0.0.0"
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    current = root / "opt/all-edge/current"
    old_release = current.resolve()
    try:
        token.write_text("deploy-test-token-91c7\n")
        proc = run_install(root, "--upgrade", src=_new_code(tmp_path, "v4", 11),
                           wheelhouse=wheelhouse)
        assert "http: 0.0.0.0:" in proc.stdout  # check-config's summary
        assert current.resolve() != old_release
        assert (current.resolve() / "src/docs/v4.md").is_file()
        assert token.read_text() == "deploy-test-token-91c7\n"
        assert mode(token) == 0o600

        # the same setup without the token is refused: the credential is what made it valid
        token.write_bytes(b"")
        live = current.resolve()
        proc = run_install(root, "--upgrade", src=tmp_path / "v4", wheelhouse=wheelhouse,
                           check=False)
        assert proc.returncode == 1
        assert "does not validate" in proc.stderr
        assert "not a loopback address" in proc.stderr
        assert current.resolve() == live
    finally:
        cfg_path.write_bytes(good_cfg)
        token.write_bytes(good_token)


def test_upgrade_without_a_mode_keeps_the_recorded_mode(tmp_path: Path) -> None:
    """--upgrade without --cpu/--ncs2 takes the mode recorded in the live release (no build:
    a recorded NCS2 mode makes the preflight refuse this machine's Python >= 3.11)."""
    root = tmp_path / "root"
    rel = root / "opt/all-edge/releases/0.1.0-recorded"
    rel.mkdir(parents=True)
    (rel / "install-mode").write_text("hw=ncs2\nopenvino_archive=/nonexistent/ov.tgz\n")
    (root / "opt/all-edge/current").symlink_to("releases/0.1.0-recorded")
    proc = run_install(root, "--upgrade", "--dry-run", wheelhouse=tmp_path, check=False)
    assert f"mode ncs2, --openvino-archive /nonexistent/ov.tgz: as recorded in " \
           f"{root}/opt/all-edge/current/install-mode" in proc.stdout
    assert proc.returncode == 1
    assert "NCS2 mode runs OpenVINO 2022.3" in proc.stderr
    # given again, the mode is the one given
    proc = run_install(root, "--upgrade", "--dry-run", "--cpu", wheelhouse=tmp_path,
                       check=False)
    assert "as recorded" not in proc.stdout
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_upgrade_that_does_not_validate_keeps_the_current_release(
        installed: Dict[str, object], tmp_path: Path, wheelhouse: Path) -> None:
    root: Path = installed["root"]  # type: ignore[assignment]
    cfg_path = root / "etc/all-edge/confs.json"
    good = cfg_path.read_bytes()
    cfg = json.loads(good)
    cfg["agent"]["colour"] = "red"  # an unknown key: check-config must refuse it
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    current = (root / "opt/all-edge/current").resolve()
    dist = (root / "etc/all-edge/confs.json.dist").read_bytes()
    try:
        proc = run_install(root, "--upgrade", src=_new_code(tmp_path, "v3", 9),
                           wheelhouse=wheelhouse, check=False)
        assert proc.returncode == 1
        assert "does not validate" in proc.stderr
        assert "agent.colour" in proc.stdout + proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
        assert (root / "opt/all-edge/current").resolve() == current
        # the recorded defaults stay those of the live release
        assert (root / "etc/all-edge/confs.json.dist").read_bytes() == dist
    finally:
        cfg_path.write_bytes(good)


@pytest.mark.slow
def test_uninstall_keeps_config_and_data_then_purge_removes_them(
        installed: Dict[str, object], wheelhouse: Path) -> None:
    root: Path = installed["root"]  # type: ignore[assignment]
    before = snapshot(root)
    run_install(root, "--uninstall", "--dry-run", src=installed["src"],
                       wheelhouse=wheelhouse)
    assert diff_snapshots(before, snapshot(root)) == []

    proc = run_install(root, "--uninstall", src=installed["src"],
                       wheelhouse=wheelhouse)
    assert not (root / "opt/all-edge").exists()
    assert not (root / "etc/systemd/system/all-edge.service").exists()
    assert (root / "etc/all-edge/confs.json").is_file()
    assert (root / "etc/all-edge/credentials/hias-password").read_text() == "s3cret\n"
    assert (root / "var/lib/all-edge/data/journal-marker").is_file()
    assert "skipped (--no-system): systemctl disable --now all-edge" in proc.stdout

    proc = run_install(root, "--uninstall", "--purge", src=installed["src"],
                       wheelhouse=wheelhouse)
    for gone in ("etc/all-edge", "var/lib/all-edge", "var/log/all-edge", "opt/all-edge"):
        assert not (root / gone).exists(), gone
    assert "skipped (--no-system): userdel all-edge" in proc.stdout
