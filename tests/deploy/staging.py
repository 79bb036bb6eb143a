"""Helpers for the deployment tests: run install.sh into a staging root and compare trees.

install.sh runs for real here (its `--prefix` staging mode, which implies `--no-system`: no apt,
useradd, chown, systemctl or udevadm). Python packages come from a wheelhouse cached under
.cache/wheelhouse, filled once from the package index, so installs do not download anything
else.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from tests.conftest import REPO_ROOT

INSTALL_SH = REPO_ROOT / "install.sh"
UNIT_SRC = REPO_ROOT / "systemd" / "all-edge.service"
CACHE = REPO_ROOT / ".cache"
WHEELHOUSE = CACHE / "wheelhouse"
# Same requirement strings as pyproject's dependencies + [edge] + [openvino], plus the build
# backend (install.sh builds the package without build isolation).
SOURCE_ITEMS = ["pyproject.toml", "README.md", "confs.json", "install.sh", "edge", "models",
                "docs", "systemd"]


def base_python() -> str:
    """The interpreter the dev venv was made from: install.sh makes its own venv from it."""
    exe = getattr(sys, "_base_executable", None) or sys.executable
    return str(Path(exe).resolve())


def _requirements() -> List[str]:
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        pytest.skip("tomllib needs Python >= 3.11 to read pyproject.toml")
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    proj = data["project"]
    extras = proj["optional-dependencies"]
    return list(proj["dependencies"]) + extras["edge"] + extras["openvino"] + [
        "setuptools>=68", "wheel"]


@pytest.fixture(scope="session")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A snapshot of what install.sh installs, so edits made in the tree meanwhile do not
    change the code between two runs of one test."""
    return copy_source(tmp_path_factory.mktemp("source") / "all-edge")


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """Wheels for the installed venv; rebuilt when pyproject's requirements change."""
    reqs = _requirements()
    key = hashlib.sha256("\n".join(reqs + [base_python()]).encode()).hexdigest()
    stamp = WHEELHOUSE / ".stamp"
    if stamp.is_file() and stamp.read_text() == key:
        return WHEELHOUSE
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
         "-d", str(WHEELHOUSE), *reqs],
        capture_output=True, text=True, timeout=600,
    )
    if proc.returncode != 0:
        pytest.fail("cannot fill the wheelhouse from the package index:\n" + proc.stderr[-2000:])
    stamp.write_text(key)
    return WHEELHOUSE


def run_install(root: Path, *args: str, src: Path = REPO_ROOT, wheelhouse: Path = WHEELHOUSE,
                env: Optional[Dict[str, str]] = None, check: bool = True,
                python: Optional[str] = None, timeout: float = 600,
                umask: Optional[int] = None) -> subprocess.CompletedProcess:
    """Run SRC/install.sh into the staging root (with UMASK, when given, as the caller's umask);
    fail with its output when it fails."""
    cmd = ["bash", str(src / "install.sh"), "--prefix", str(root), "--python",
           python or base_python(),
           "--wheelhouse", str(wheelhouse), *args]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("DESTDIR", "ALL_EDGE_"))}
    full_env.update(env or {})
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env,
                          preexec_fn=None if umask is None else (lambda: os.umask(umask)))
    if check and proc.returncode != 0:
        pytest.fail(f"install.sh {' '.join(args)} failed ({proc.returncode}):\n"
                    f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def copy_source(dst: Path) -> Path:
    """A copy of the parts of the repository install.sh installs (for 'new code' tests)."""
    dst.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for item in SOURCE_ITEMS:
        s = REPO_ROOT / item
        if s.is_dir():
            shutil.copytree(s, dst / item, ignore=ignore, symlinks=True)
        else:
            shutil.copy2(s, dst / item)
    return dst


Entry = Tuple[str, int, int, str]  # kind, mode, mtime_ns, sha256 / link target


def snapshot(root: Path) -> Dict[str, Entry]:
    """Every path under root with its type, mode and mtime, and the content hash of every file
    outside the venvs (venv files, hundreds of MB, are compared by size and mtime)."""
    out: Dict[str, Entry] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", 0, 0, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns, "")
            else:
                in_venv = "/venv/" in f"/{rel}"
                digest = f"size={st.st_size}" if in_venv else hashlib.sha256(p.read_bytes()).hexdigest()
                out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_mtime_ns, digest)
    return out


def diff_snapshots(a: Dict[str, Entry], b: Dict[str, Entry]) -> List[str]:
    lines = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            lines.append(f"{k}: {a.get(k)} -> {b.get(k)}")
    return lines


def unit_values(unit_text: str, key: str) -> List[str]:
    """Values of KEY= lines in a unit file (comments skipped)."""
    vals = []
    for line in unit_text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";")) and line.split("=", 1)[0] == key:
            vals.append(line.split("=", 1)[1])
    return vals
