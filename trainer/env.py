"""TensorFlow set-up and the environment record that makes a run auditable.

Imported before TensorFlow: the log-level variables only work if set first.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Dict, Optional

REPO_ROOT = Path(__file__).resolve().parent.parent


def quiet_tensorflow() -> None:
    """Readable logs: no C++ INFO/WARNING chatter, no CUDA probing noise on CPU-only machines."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import warnings

    warnings.filterwarnings("ignore", module="keras")
    warnings.filterwarnings("ignore", module="tensorflow")


def setup_tensorflow(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and TF; optionally make CPU kernels deterministic (slower)."""
    quiet_tensorflow()
    import keras
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(pkg: str) -> Optional[str]:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def onednn_state() -> Dict[str, object]:
    """Whether TensorFlow's oneDNN custom ops are on (they change float round-off)."""
    state: Dict[str, object] = {"TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS")}
    try:
        from tensorflow.python.util import _pywrap_util_port

        state["enabled"] = bool(_pywrap_util_port.IsMklEnabled())
    except Exception as exc:  # private API: record instead of failing the run
        state["enabled"] = None
        state["error"] = type(exc).__name__
    return state


def git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=5, check=False)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(with_tf: bool = True) -> Dict[str, object]:
    """Package versions, machine and oneDNN state for environment.json / model.json."""
    env: Dict[str, object] = {
        "python": sys.version.split()[0], "platform": platform.platform(), "cpu": cpu_model(),
        "cores": os.cpu_count(), "git_commit": git_commit(),
        "packages": {p: _version(p) for p in ("tensorflow", "keras", "openvino", "nncf", "numpy",
                                              "opencv-python-headless", "scikit-learn", "all-edge")},
    }
    if with_tf:
        env["onednn"] = onednn_state()
        import tensorflow as tf

        env["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
    return env
