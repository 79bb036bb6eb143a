"""Inference on the real default model; refusal of IRs that do not match model.json."""

from __future__ import annotations

import json
import logging
import shutil
import sys
import types
from pathlib import Path
from typing import List

import cv2
import numpy as np
import openvino as ov
import pytest

from edge import inference
from edge.inference import Classifier, ModelError
from edge.model_meta import ModelMeta
from tests.util import cnmc_files


def synthetic_ir(d: Path, in_shape: List[int], n_out: int, meta_shape: List[int],
                 labels: List[str] = None) -> Path:
    """A throwaway synthetic IR (test-only, never shipped) with chosen shapes."""
    import openvino.opset8 as ops

    d.mkdir(parents=True, exist_ok=True)
    p = ops.parameter(in_shape, np.float32, name="input")
    axes = np.arange(1, len(in_shape) - 1, dtype=np.int64)
    pooled = ops.reduce_mean(p, axes, keep_dims=False)
    w = ops.constant(np.ones((in_shape[-1], n_out), np.float32))
    out = ops.softmax(ops.matmul(pooled, w, False, False), 1)
    ov.save_model(ov.Model([out], [p], "synthetic-test"), str(d / "model.xml"))
    meta = {"name": "synthetic-test", "version": "0", "created": "2026-11-22T00:00:00Z",
            "labels": labels or ["normal", "ALL"], "positive_label": "ALL",
            "input": {"shape": meta_shape}, "synthetic": True}
    (d / "model.json").write_text(json.dumps(meta))
    return d / "model.xml"


def test_default_model_on_cpu_after_myriad_fails(model_xml: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="edge.inference")
    clf = Classifier(model_xml, ["MYRIAD", "CPU"])
    assert clf.device == "CPU"
    assert 'Device with "MYRIAD" name is not registered' in clf.device_errors["MYRIAD"]
    lines = [r.getMessage() for r in caplog.records]
    assert any(ln.startswith("device MYRIAD not used: ") for ln in lines)
    assert any("compiled on CPU after MYRIAD failed" in ln for ln in lines)
    meta = ModelMeta.load(model_xml.with_suffix(".json"))
    assert clf.threshold == meta.threshold and clf.meta.labels == meta.labels


def test_predictions_on_real_cells(model_xml: Path) -> None:
    clf = Classifier(model_xml, ["CPU"])
    seen = set()
    for path in cnmc_files()[::9]:
        pred = clf.predict(cv2.imread(str(path)))
        seen.add(round(pred.probability, 6))
        assert abs(sum(pred.probabilities) - 1.0) < 1e-4
        assert 0.0 <= pred.probability <= 1.0
        assert pred.probability == pred.probabilities[clf.meta.positive_index]
        assert clf.label_for(pred.probability) in clf.meta.labels
    assert len(seen) > 1, "different cells must give different outputs"


def test_threshold_override_and_label(model_xml: Path) -> None:
    clf = Classifier(model_xml, ["CPU"], threshold=0.0)
    assert clf.threshold == 0.0
    assert clf.label_for(0.0) == clf.meta.positive_label
    clf = Classifier(model_xml, ["CPU"], threshold=1.0)
    assert clf.label_for(0.999) == clf.negative_label


def test_no_device_works(model_xml: Path) -> None:
    with pytest.raises(ModelError, match="no device could compile the model: MYRIAD: "):
        Classifier(model_xml, ["MYRIAD", "NOPE"])


def test_refuses_input_shape_mismatch(tmp_path: Path) -> None:
    xml = synthetic_ir(tmp_path / "m", [1, 64, 64, 3], 2, [1, 100, 100, 3])
    with pytest.raises(ModelError, match=r"IR input shape \[1, 64, 64, 3\] does not match"):
        Classifier(xml, ["CPU"])


def test_refuses_input_rank_mismatch(tmp_path: Path) -> None:
    xml = synthetic_ir(tmp_path / "m", [1, 100, 3], 2, [1, 100, 100, 3])
    with pytest.raises(ModelError, match="IR input shape"):
        Classifier(xml, ["CPU"])


def test_refuses_output_mismatch(tmp_path: Path) -> None:
    xml = synthetic_ir(tmp_path / "m", [1, 100, 100, 3], 3, [1, 100, 100, 3])
    with pytest.raises(ModelError, match=r"IR output shape \[1, 3\] does not match \[1, 2\]"):
        Classifier(xml, ["CPU"])


def test_refuses_missing_or_invalid_metadata(tmp_path: Path, model_xml: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    shutil.copy2(model_xml, d / "model.xml")
    shutil.copy2(model_xml.with_suffix(".bin"), d / "model.bin")
    with pytest.raises(ModelError, match="model.json not found"):
        Classifier(d / "model.xml", ["CPU"])
    (d / "model.json").write_text('{"name": "x"}')
    with pytest.raises(ModelError, match="invalid model.json"):
        Classifier(d / "model.xml", ["CPU"])


def test_refuses_corrupt_ir(tmp_path: Path, model_copy: Path) -> None:
    model_copy.write_text("<net>not really</net>")
    with pytest.raises(ModelError, match="cannot read the IR"):
        Classifier(model_copy, ["CPU"])


def test_uses_openvino_runtime_core_when_openvino_core_is_absent(monkeypatch) -> None:
    """OpenVINO 2022.3 (NCS2 era) has only `openvino.runtime.Core`."""
    sentinel = type("Core2022", (), {})
    fake_runtime = types.ModuleType("openvino.runtime")
    fake_runtime.Core = sentinel
    monkeypatch.delattr(ov, "Core")
    monkeypatch.setitem(sys.modules, "openvino.runtime", fake_runtime)
    assert inference._core_class() is sentinel


def test_current_api_is_openvino_core() -> None:
    assert inference._core_class() is ov.Core
