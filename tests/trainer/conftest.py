"""Fixtures for the trainer tests: small SYNTHETIC sets made once per session, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from tests.conftest import REPO_ROOT
from trainer.synth import generate


def run_cli(args: List[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m trainer ARGS` in a subprocess (what a user runs); bounded by `timeout`."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "trainer", "-q", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def idb2_set(tmp_path_factory) -> Path:
    """40 synthetic ALL-IDB2 cells (20/20)."""
    out = tmp_path_factory.mktemp("idb2") / "data"
    generate(out, "all-idb2", 40, seed=1)
    return out


@pytest.fixture(scope="session")
def cnmc_set(tmp_path_factory) -> Path:
    """36 synthetic C-NMC cells from several synthetic subjects."""
    out = tmp_path_factory.mktemp("cnmc") / "data"
    generate(out, "cnmc", 36, seed=3)
    return out


@pytest.fixture(scope="session")
def idb1_set(tmp_path_factory) -> Path:
    """4 synthetic ALL-IDB1 fields (2592x1944 JPEG + .xyc)."""
    out = tmp_path_factory.mktemp("idb1") / "data"
    generate(out, "all-idb1", 4, seed=5)
    return out
