"""Fixtures for camera + field analysis: a SYNTHETIC stain-meter IR, the trainer's synthetic
ALL-IDB1-layout fields (with every white cell's centre recorded), and the real C-NMC cells."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

from edge.config import AnalysisConfig
from edge.model_meta import InputSpec, ModelMeta
from tests.camera.fields import recording_white_cells
from tests.util import cnmc_files

SYNTH_FIELDS = 12  # trainer fields for the detection floor (~1.5 s each to generate here)
SYNTH_SEED = 20261122


def build_stain_meter(out: Path, threshold: float = 0.5) -> Path:
    """A real OpenVINO IR that is a SYNTHETIC stand-in, not a trained model.

    P(ALL) = sigmoid(40 * (mean blue - mean green) - 1) over the crop (values 0..1): purple
    crops score high, pink/grey ones low. Deterministic, so field-level logic can be checked
    against a real compiled model without depending on how a trained model behaves.
    """
    import openvino as ov
    import openvino.opset13 as op

    out.mkdir(parents=True, exist_ok=True)
    x = op.parameter([1, 100, 100, 3], np.float32, name="input")
    mean = op.reduce_mean(x, np.array([1, 2]), keep_dims=False)  # [1, 3] in RGB order
    w = np.array([[0, 0], [20, -20], [-20, 20]], np.float32)  # rows R, G, B; cols normal, ALL
    logits = op.add(op.matmul(mean, op.constant(w), False, False),
                    op.constant(np.array([0.5, -0.5], np.float32)))
    model = ov.Model([op.softmax(logits, 1)], [x], "stain-meter")
    xml = out / "model.xml"
    ov.save_model(model, str(xml))
    ModelMeta(
        name="camera-test-stain-meter", version="0", created="2026-11-22T00:00:00Z",
        arch="stain-meter", labels=["normal", "ALL"], positive_label="ALL", threshold=threshold,
        precision="fp32", input=InputSpec(shape=[1, 100, 100, 3]), synthetic=True,
    ).save(xml.with_suffix(".json"))
    return xml


@pytest.fixture(scope="session")
def stain_meter_xml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_stain_meter(tmp_path_factory.mktemp("stain-meter"))


@pytest.fixture(scope="session")
def classifier(stain_meter_xml: Path) -> Any:
    from edge.inference import Classifier

    return Classifier(stain_meter_xml, ["CPU"])


@pytest.fixture(scope="session")
def analysis_cfg() -> AnalysisConfig:
    return AnalysisConfig()


@pytest.fixture(scope="session")
def synth_fields(tmp_path_factory: pytest.TempPathFactory) -> List[Dict[str, Any]]:
    """SYNTHETIC ALL-IDB1-layout fields from `trainer.synth` (JPEG + `.xyc` blast centres).

    `.xyc` marks blasts only (as in ALL-IDB1); every white cell's centre is recorded too
    (`recording_white_cells`) so that precision can be measured.
    """
    import trainer.synth as synth

    out = tmp_path_factory.mktemp("synth-all-idb1")
    with recording_white_cells() as placed:
        summary = synth.generate(out, "all-idb1", SYNTH_FIELDS, SYNTH_SEED)
    assert len(placed) == SYNTH_FIELDS, "trainer.synth no longer paints fields via _smear"
    fields = []
    for entry, wbc in zip(summary["files"], placed):
        jpg = out / entry["file"]
        fields.append({"jpg": jpg, "xyc": jpg.with_suffix(".xyc"), "wbc": wbc,
                       "label": entry["label"]})
    return fields


@pytest.fixture(scope="session")
def cnmc_cells() -> List[Path]:
    """The 71 real C-NMC 2019 cells (Gupta & Gupta 2019, TCIA, doi 10.7937/tcia.2019.dc64i46r,
    CC BY 3.0): one segmented cell on black per image."""
    return cnmc_files()
