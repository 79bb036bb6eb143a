"""Fixtures shared by every test area."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CNMC_SAMPLE = REPO_ROOT.parent / "shared" / "data" / "cnmc-sample"
DEFAULT_MODEL_XML = REPO_ROOT / "models" / "default" / "model.xml"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def cnmc_sample() -> Path:
    """71 real C-NMC 2019 cells (Gupta & Gupta 2019, TCIA, CC BY 3.0); see its README."""
    if not CNMC_SAMPLE.is_dir():
        pytest.fail(f"the real C-NMC sample is missing at {CNMC_SAMPLE}; shared/ must sit beside the repo")
    return CNMC_SAMPLE


@pytest.fixture(scope="session")
def default_model_xml() -> Path:
    assert DEFAULT_MODEL_XML.is_file(), "models/default/model.xml is missing: see README (make the demo model)"
    return DEFAULT_MODEL_XML
