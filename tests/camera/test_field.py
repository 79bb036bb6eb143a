"""`cells` mode on a real compiled OpenVINO model (the SYNTHETIC stain meter from conftest)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, List

import cv2
import numpy as np
import pytest

from edge.analysis import register
from edge.analysis.detect import detect_cells
from edge.analysis.field import analyze_field
from edge.config import AnalysisConfig, Config, ConfigError, load_config
from edge.hias import payloads
from edge.imaging import ImageError
from edge.inference import Classifier
from tests.camera.fields import make_field

CFG = AnalysisConfig(min_cell_diameter_px=60)


def test_field_result_is_consistent(classifier: Classifier) -> None:
    image, centres = make_field(11, leukocytes=6, pairs=1)
    out = analyze_field(image, classifier, CFG)
    cells = out["cells"]
    items = cells["items"]
    assert cells["found"] == len(items) == len(detect_cells(image, CFG)) == len(centres)
    assert cells["skipped"] == 0
    for it in items:
        x, y, w, h = it["box"]
        assert all(isinstance(v, int) for v in it["box"]) and w > 0 and h > 0
        assert 0.0 <= it["probability"] <= 1.0
        assert it["label"] == ("ALL" if it["probability"] >= classifier.threshold else "normal")
    assert cells["blasts"] == sum(it["label"] == "ALL" for it in items)
    assert cells["blast_fraction"] == pytest.approx(cells["blasts"] / cells["found"], abs=1e-4)
    assert out["probability"] == pytest.approx(max(it["probability"] for it in items), abs=1e-6)
    assert out["latency_ms"] > 0
    annotated = out["annotated"]
    assert annotated.dtype == np.uint8 and annotated.ndim == 3 and max(annotated.shape) <= 1600


def test_purple_cells_score_above_the_background(classifier: Classifier) -> None:
    """The stain meter says P(ALL) grows with purple: nucleus crops beat a crop of smear."""
    image, _ = make_field(12, leukocytes=5, pairs=0)
    out = analyze_field(image, classifier, CFG)
    smear = classifier.predict(image[0:150, 0:150]).probability
    assert min(it["probability"] for it in out["cells"]["items"]) > smear


def test_threshold_decides_the_field_label(stain_meter_xml: Path) -> None:
    image, _ = make_field(13, leukocytes=6, pairs=0)
    probe = Classifier(stain_meter_xml, ["CPU"])
    probs = sorted(it["probability"] for it in analyze_field(image, probe, CFG)["cells"]["items"])
    assert probs[0] < probs[-1], "need a spread of cell probabilities for this test"
    middle = (probs[0] + probs[-1]) / 2
    mid = analyze_field(image, Classifier(stain_meter_xml, ["CPU"], threshold=middle), CFG)
    assert mid["probability"] >= middle and 0 < mid["cells"]["blasts"] < mid["cells"]["found"]
    high = analyze_field(image, Classifier(stain_meter_xml, ["CPU"],
                                           threshold=min(1.0, probs[-1] + 1e-3)), CFG)
    assert high["cells"]["blasts"] == 0 and high["probability"] < min(1.0, probs[-1] + 1e-3)


def test_boxes_are_coloured_by_label(classifier: Classifier) -> None:
    image, _ = make_field(14, leukocytes=4, pairs=0)
    out = analyze_field(image, Classifier(classifier.xml, ["CPU"], threshold=0.0), CFG)
    red = np.all(out["annotated"] == (40, 40, 230), axis=2).sum()
    assert out["cells"]["blasts"] == out["cells"]["found"] and red > 100
    out = analyze_field(image, Classifier(classifier.xml, ["CPU"], threshold=1.0), CFG)
    green = np.all(out["annotated"] == (60, 170, 40), axis=2).sum()
    assert out["cells"]["blasts"] == 0 and green > 100


def test_a_cell_just_under_the_threshold_leaves_the_field_negative(
        stain_meter_xml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cells were labelled by the unrounded probability and the field by the rounded maximum:
    0.4999996 gave a normal cell (blasts 0) in a field labelled ALL (0.5 >= 0.5)."""
    probe = Classifier(stain_meter_xml, ["CPU"], threshold=0.5)
    monkeypatch.setattr(probe, "predict", lambda crop: SimpleNamespace(probability=0.4999996))
    image, _ = make_field(17, leukocytes=3, pairs=0)
    out = analyze_field(image, probe, CFG)
    assert out["cells"]["blasts"] == 0
    assert probe.label_for(out["probability"]) == "normal"  # what the pipeline labels the field


def test_max_cells_caps_and_reports(classifier: Classifier, tmp_path: Path) -> None:
    image, _ = make_field(15, leukocytes=6, pairs=0)
    out = analyze_field(image, classifier, AnalysisConfig(min_cell_diameter_px=60, max_cells=2))
    assert out["cells"]["found"] == 2 and out["cells"]["skipped"] == 4
    # the cells left out are reported to HIAS and on the status page too
    result = {"id": "r1", "label": "normal", "positive": False, "cells": out["cells"]}
    body = payloads.classification(result, "m")
    assert body["cells"] == {"found": 2, "blasts": out["cells"]["blasts"],
                             "blast_fraction": out["cells"]["blast_fraction"], "skipped": 4}
    assert "cells 6 (4 not classified), blasts" in _status_page(tmp_path, out["cells"])


def _status_page(tmp_path: Path, cells: dict) -> str:
    """The status page of the web tests' stand-in daemon (TEST DOUBLE, real journal and
    template) showing one journaled `cells` result."""
    from edge import DISCLAIMER
    from edge.journal import new_id, utc_iso
    from tests.web.conftest import start_standin

    run = start_standin(tmp_path)
    try:
        run.daemon.journal.record({
            "id": new_id(), "time": utc_iso(), "source": "camera", "name": "field.jpg",
            "sha256": "0" * 64, "status": "ok", "reason": None, "label": "normal",
            "positive": False, "probability": 0.2, "threshold": 0.5,
            "model": {"name": "m", "version": "1", "synthetic": True}, "device": "CPU",
            "latency_ms": 1.0, "analysis": "cells", "cells": cells, "disclaimer": DISCLAIMER,
        })
        return run.get("/").body.decode()
    finally:
        run.server.stop(timeout=5)
        run.daemon.close()


def test_cell_size_limits_must_be_ordered() -> None:
    """Checked by the analysis section itself, so also without file checks and on assignment
    (it used to be checked only by load_config's file checks)."""
    with pytest.raises(ValueError, match=r"min_cell_diameter_px \(500\) must be below "
                                         r"max_cell_diameter_px \(400\)"):
        AnalysisConfig(min_cell_diameter_px=500)
    cfg = AnalysisConfig()
    with pytest.raises(ValueError, match="must be below"):
        cfg.min_cell_diameter_px = 400
    with pytest.raises(ConfigError) as err:
        load_config(None, ["analysis.max_cell_diameter_px=10"], check_files=False)
    assert err.value.problems == ["analysis: Value error, min_cell_diameter_px (20) must be "
                                  "below max_cell_diameter_px (10)"]


@pytest.mark.parametrize("image", [np.zeros((300, 400, 3), np.uint8),
                                   np.full((300, 400, 3), (200, 196, 205), np.uint8)])
def test_a_field_without_cells_is_no_cells_not_negative(classifier: Classifier,
                                                        image: np.ndarray) -> None:
    with pytest.raises(ImageError) as err:
        analyze_field(image, classifier, CFG)
    assert err.value.reason == "no_cells"


def test_real_cnmc_cell_is_one_item(classifier: Classifier, cnmc_cells: List[Path]) -> None:
    out = analyze_field(cv2.imread(str(cnmc_cells[0])), classifier,
                        AnalysisConfig(min_cell_diameter_px=60, max_cell_diameter_px=440))
    assert out["cells"]["found"] == 1


def test_register_reads_the_daemons_config(classifier: Classifier) -> None:
    class Registry:
        def __init__(self) -> None:
            self.config = Config()
            self.fns: dict = {}

        def register_analyzer(self, mode: str, fn: Any) -> None:
            self.fns[mode] = fn

    reg = Registry()
    register(reg)
    image, centres = make_field(16, leukocytes=5, pairs=0)
    reg.config.analysis.min_cell_diameter_px = 60
    assert reg.fns["cells"](image, classifier)["cells"]["found"] == len(centres)
    reg.config.analysis.min_cell_diameter_px = 300  # config changes are seen by the analyzer
    with pytest.raises(ImageError):
        reg.fns["cells"](image, classifier)
