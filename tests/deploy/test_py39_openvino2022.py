"""NCS2 mode's software stack for real: Python 3.9 + OpenVINO 2022.3 LTS (`openvino.runtime`).

A Python 3.9 venv (cached in .cache/py39, rebuilt when the requirements change) gets
`openvino==2022.3.*`, numpy<2 and the edge extra's dependencies; the edge package itself comes
from this working tree (PYTHONPATH), so the test always runs the current code. The default model
then classifies real C-NMC cells (Gupta & Gupta 2019, TCIA, doi 10.7937/tcia.2019.dc64i46r,
CC BY 3.0) through `python -m edge classify` under both runtimes; the probabilities must agree.
The PyPI 2022.3 wheels are x86_64 and carry no MYRIAD plugin, so this proves the code path and
the IR compatibility, not the stick (that needs the Pi + NCS2: docs/deploy.md).

The last test runs install.sh in NCS2 mode on Python 3.9 with a SYNTHETIC stand-in for Intel's
2022.3 ARM archive (see synthetic_ov_archive) and starts the installed daemon like the unit.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from tests.conftest import REPO_ROOT
from tests.deploy.staging import diff_snapshots, run_install, snapshot
from tests.deploy.test_unit import SYSTEMD_ANALYZE, security_score, verify_output
from tests.deploy.unit_runner import start_like_unit, stop
from tests.util import free_port

pytestmark = [pytest.mark.slow, pytest.mark.needs_py39]

VENV = REPO_ROOT / ".cache" / "py39"
TOLERANCE = 1e-4  # both runtimes run the FP16-weight IR on CPU in f32


def find_python39() -> Optional[str]:
    """python3.9 from PATH, else from pyenv's versions (pyenv root, or ~/.pyenv)."""
    roots = []
    try:
        out = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            roots.append(out.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    roots.append(os.path.expanduser("~/.pyenv"))
    candidates = [shutil.which("python3.9")]
    for r in roots:
        candidates += sorted(glob.glob(f"{r}/versions/3.9*/bin/python3.9"), reverse=True)
    for c in candidates:
        if c and subprocess.run([c, "-c", "import venv, ensurepip"], capture_output=True,
                                timeout=60).returncode == 0:
            return c
    return None


def requirements() -> List[str]:
    import tomllib

    proj = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return ["openvino==2022.3.*", "numpy<2"] + list(proj["dependencies"]) + \
        list(proj["optional-dependencies"]["edge"])


@pytest.fixture(scope="module")
def py39() -> Path:
    exe = find_python39()
    if exe is None:
        pytest.skip("no Python 3.9 interpreter with venv (looked on PATH and in pyenv versions): "
                    "the OpenVINO 2022.3 check needs one")
    reqs = requirements()
    key = hashlib.sha256("\n".join([exe] + reqs).encode()).hexdigest()
    stamp = VENV / ".stamp"
    py = VENV / "bin" / "python"
    if not (stamp.is_file() and stamp.read_text() == key and py.exists()):
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run([exe, "-m", "venv", str(VENV)], check=True, timeout=300)
        proc = subprocess.run([str(py), "-m", "pip", "install", "-q",
                               "--disable-pip-version-check", *reqs],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            pytest.fail("cannot build the Python 3.9 + OpenVINO 2022.3 venv:\n"
                        + proc.stderr[-3000:])
        stamp.write_text(key)
    return py


def run_edge(python: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run([str(python), *args], capture_output=True, text=True, timeout=600,
                          cwd=REPO_ROOT, env=env)


def classify(python: Path, images: List[Path]) -> Dict[str, dict]:
    proc = run_edge(python, "-m", "edge", "classify", "--set", 'model.devices=["CPU"]',
                    *map(str, images))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == len(images), proc.stdout
    return {Path(r["name"]).name: r for r in rows}


def test_the_venv_really_is_python39_with_openvino_2022_3(py39: Path) -> None:
    code = ("import sys, openvino.runtime as ov\n"
            "print('%d.%d' % sys.version_info[:2], ov.get_version())\n"
            "try:\n    from openvino import Core\nexcept ImportError:\n    print('no-top-level-Core')\n")
    proc = run_edge(py39, "-c", code)
    assert proc.returncode == 0, proc.stderr
    version, ov_version = proc.stdout.split()[:2]
    assert version == "3.9"
    assert ov_version.startswith("2022.3"), ov_version
    # so edge.inference must take its `openvino.runtime` fallback here
    assert "no-top-level-Core" in proc.stdout


def test_edge_classify_agrees_between_openvino_2022_3_and_current(
        py39: Path, default_model_xml: Path, cnmc_sample: Path) -> None:
    images = sorted(cnmc_sample.glob("fold_0/all/*.bmp"))[:4] + \
        sorted(cnmc_sample.glob("fold_0/hem/*.bmp"))[:4]
    assert len(images) == 8
    old = classify(py39, images)
    new = classify(Path(sys.executable), images)
    for name, r in old.items():
        assert r["status"] == "ok", r
        assert r["device"] == "CPU"
        assert abs(r["probability"] - new[name]["probability"]) <= TOLERANCE, (r, new[name])
        assert r["label"] == new[name]["label"]
        assert r["model"] == new[name]["model"]
    # the probabilities are not all the same value (a constant would hide a broken pipeline)
    assert len({round(r["probability"], 4) for r in old.values()}) > 1


def test_edge_inference_api_under_2022_3(py39: Path, default_model_xml: Path,
                                         cnmc_sample: Path) -> None:
    """The Classifier object the daemon uses, called directly (not via the CLI)."""
    image = sorted(cnmc_sample.glob("fold_1/all/*.bmp"))[0]
    code = (
        "import sys, cv2\n"
        "from edge.inference import Classifier, _core_class\n"
        "print(_core_class().__module__)\n"
        f"clf = Classifier({str(default_model_xml)!r}, ['MYRIAD', 'CPU'])\n"
        f"p = clf.predict(cv2.imread({str(image)!r}))\n"
        "print(clf.device, repr(p.probability))\n"
    )
    proc = run_edge(py39, "-c", code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.split("\n")
    assert lines[0].startswith("openvino.runtime"), lines[0]
    device, prob = lines[1].split()
    assert device == "CPU"  # no MYRIAD plugin in the PyPI wheel: the CPU fallback is taken
    assert 0.0 <= float(prob) <= 1.0


# ------------------------------------------------------------------ NCS2 mode of install.sh

WHEELHOUSE39 = REPO_ROOT / ".cache" / "wheelhouse-py39"


@pytest.fixture(scope="module")
def wheelhouse39(py39: Path) -> Path:
    """Python 3.9 wheels of the edge extra (numpy 1.x), for an offline --ncs2 install."""
    reqs = [r for r in requirements() if not r.startswith("openvino")] + \
        ["setuptools>=68", "wheel"]
    key = hashlib.sha256("\n".join(reqs).encode()).hexdigest()
    stamp = WHEELHOUSE39 / ".stamp"
    if not (stamp.is_file() and stamp.read_text() == key):
        WHEELHOUSE39.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([str(py39), "-m", "pip", "download", "-q",
                               "--disable-pip-version-check", "-d", str(WHEELHOUSE39), *reqs],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            pytest.fail("cannot fill the Python 3.9 wheelhouse:\n" + proc.stderr[-3000:])
        stamp.write_text(key)
    return WHEELHOUSE39


def synthetic_ov_archive(py39: Path, dest: Path) -> Path:
    """SYNTHETIC stand-in for Intel's 2022.3 runtime archive, repackaged from the PyPI wheel in
    the archive's layout (setupvars.sh): python/python3.9/openvino, runtime/lib/<arch>/*.so.
    The libraries sit only in runtime/lib, so the Python module loads them only through the
    LD_LIBRARY_PATH that install.sh writes into the unit. x86_64, and no MYRIAD plugin."""
    site = Path(run_edge(py39, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
                .stdout.strip())
    top = dest / "l_openvino_toolkit_SYNTHETIC_2022.3_x86_64"
    pydir = top / "python" / "python3.9"
    libdir = top / "runtime" / "lib" / "intel64"
    ignore = shutil.ignore_patterns("__pycache__", "libs")
    shutil.copytree(site / "openvino", pydir / "openvino", ignore=ignore)
    shutil.copytree(site / "ngraph", pydir / "ngraph", ignore=ignore)
    for so in site.glob("_pyngraph*.so"):
        shutil.copy2(so, pydir)
    shutil.copytree(site / "openvino" / "libs", libdir)
    (top / "SYNTHETIC.txt").write_text("Repackaged from the openvino 2022.3 PyPI wheel for "
                                       "tests; not Intel's ARM archive.\n")
    archive = dest / "openvino-2022.3-synthetic.tgz"
    subprocess.run(["tar", "-czf", str(archive), "-C", str(dest), top.name], check=True,
                   timeout=300)
    return archive


def test_ncs2_mode_install_on_python39_reaches_ready(
        py39: Path, wheelhouse39: Path, source: Path, tmp_path: Path) -> None:
    archive = synthetic_ov_archive(py39, tmp_path / "archive")
    root = tmp_path / "root"
    try:
        ncs2_install_checks(py39, wheelhouse39, source, tmp_path, archive, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)  # ~500 MB of venv and runtime
        shutil.rmtree(archive.parent, ignore_errors=True)


def ncs2_install_checks(py39: Path, wheelhouse39: Path, source: Path, tmp_path: Path,
                        archive: Path, root: Path) -> None:
    proc = run_install(root, "--ncs2", "--openvino-archive", str(archive), src=source,
                       wheelhouse=wheelhouse39, python=find_python39())
    assert "OpenVINO 2022.3" in proc.stdout
    assert "no MYRIAD device visible now" in proc.stdout  # no stick here: warned, not fatal

    rule = root / "etc/udev/rules.d/97-myriad-usbboot.rules"
    assert rule.read_bytes() == (REPO_ROOT / "systemd/97-myriad-usbboot.rules").read_bytes()
    cfg = json.loads((root / "etc/all-edge/confs.json").read_text())
    assert cfg["model"]["devices"] == ["MYRIAD", "CPU"]
    unit = root / "etc/systemd/system/all-edge.service"
    text = unit.read_text()
    release = (root / "opt/all-edge/current").resolve()
    assert f"Environment=LD_LIBRARY_PATH={release}/openvino/runtime/lib/intel64\n" in text
    if SYSTEMD_ANALYZE:
        assert verify_output(unit) == ""
        assert security_score(unit) <= 3.0

    # the runtime's libraries are found only through the unit's LD_LIBRARY_PATH
    venv_py = str(root / "opt/all-edge/current/venv/bin/python")
    bare = subprocess.run([venv_py, "-c", "import openvino.runtime"], capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert bare.returncode != 0
    assert "libopenvino" in bare.stderr, bare.stderr
    with_path = subprocess.run(
        [venv_py, "-c", "import openvino.runtime as ov; print(ov.get_version())"],
        capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": f"{release}/openvino/runtime/lib/intel64"})
    assert with_path.stdout.startswith("2022.3"), with_path.stderr

    # a second run changes nothing; then the daemon, started like the unit, gets READY
    before = snapshot(root)
    run_install(root, "--ncs2", "--openvino-archive", str(archive), src=source,
                wheelhouse=wheelhouse39, python=find_python39())
    assert diff_snapshots(before, snapshot(root)) == []
    # --upgrade without --ncs2 --openvino-archive keeps the recorded mode: same release, no change
    proc = run_install(root, "--upgrade", src=source, wheelhouse=wheelhouse39,
                       python=find_python39())
    assert f"mode ncs2, --openvino-archive {archive}: as recorded in" in proc.stdout
    assert diff_snapshots(before, snapshot(root)) == []

    cfg["server"]["port"] = free_port()
    (root / "etc/all-edge/confs.json").write_text(json.dumps(cfg, indent=2) + "\n")
    daemon, notify, log_path = start_like_unit(root, tmp_path)
    try:
        pid = notify.wait_for("READY", "1", time.monotonic() + 120, daemon)
        assert pid == daemon.pid, f"no READY=1 from the main pid:\n{log_path.read_text()[-4000:]}"
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    finally:
        stop(daemon, notify)
    log_text = log_path.read_text()
    assert "Traceback" not in log_text
    assert "MYRIAD" in log_text, log_text  # the fallback to CPU is logged
