"""NCS2 mode's software stack for real: Python 3.9 + OpenVINO 2022.3 LTS (`openvino.runtime`).

A Python 3.9 venv (cached in .cache/py39, rebuilt when the requirements change) gets
`openvino==2022.3.*`, numpy<2 and the edge extra's dependencies; the edge package itself comes
from this working tree (PYTHONPATH), so the test always runs the current code. The default model
then classifies real C-NMC cells (Gupta & Gupta 2019, TCIA, doi 10.7937/tcia.2019.dc64i46r,
CC BY 3.0) through `python -m edge classify` under both runtimes; the probabilities must agree.
The PyPI 2022.3 wheels are x86_64 and carry no MYRIAD plugin, so this proves the code path and
the IR compatibility, not the stick (that needs the Pi + NCS2: docs/deploy.md).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from tests.conftest import REPO_ROOT

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
