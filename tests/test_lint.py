"""The code base stays ruff-clean (pyproject's [tool.ruff] settings)."""

import shutil
import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_ruff_clean() -> None:
    ruff = shutil.which("ruff") or str(REPO_ROOT / ".venv" / "bin" / "ruff")
    proc = subprocess.run(
        [ruff, "check", "edge", "trainer", "tests", "bench"],
        cwd=REPO_ROOT, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_edge_never_imports_tensorflow() -> None:
    code = (
        "import sys, edge.config, edge.preprocess, edge.imaging, edge.model_meta\n"
        "import pkgutil, importlib, edge\n"
        "for m in pkgutil.walk_packages(edge.__path__, 'edge.'):\n"
        "    if 'fake' in m.name or m.name.endswith('__main__'): continue\n"
        "    try: importlib.import_module(m.name)\n"
        "    except ImportError as e:\n"
        "        if 'tensorflow' in str(e): raise\n"
        "assert 'tensorflow' not in sys.modules, 'edge imported tensorflow'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)
