"""synth -> train -> evaluate -> export through the CLI; the IR, run by OpenVINO, agrees with Keras.

SYNTHETIC data; a short run (2 epochs) checks the plumbing and parity, not accuracy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from edge import imaging
from edge.model_meta import ModelMeta
from edge.preprocess import to_tensor
from tests.trainer.conftest import run_cli
from trainer.export import op_report

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("e2e")
    data, run = base / "data", base / "run"
    steps = [
        ["synth", "--out", str(data), "--layout", "all-idb2", "--n", "40", "--seed", "3"],
        ["train", "--data", str(data), "--out", str(run), "--epochs", "2", "--batch-size", "8", "--seed", "3",
         "--lr", "3e-4", "--val-frac", "0.2", "--test-frac", "0.2"],
        ["evaluate", "--run", str(run), "--target-recall", "0.9", "--bootstrap", "200"],
        ["export", "--run", str(run), "--out", str(base / "model"), "--version", "test-1"],
    ]
    for args in steps:
        proc = run_cli(args, timeout=600)
        assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stderr[-3000:]}"
        assert "Traceback" not in proc.stderr
    return run


def test_run_dir_is_auditable(run_dir) -> None:
    for f in ("config.json", "splits.json", "data.json", "environment.json", "history.json", "history.csv",
              "model.keras", "metrics.json", "roc.png", "confusion.png", "SYNTHETIC.txt"):
        assert (run_dir / f).is_file(), f
    env = json.loads((run_dir / "environment.json").read_text())
    assert env["packages"]["tensorflow"].startswith("2.") and env["packages"]["openvino"]
    assert isinstance(env["onednn"]["enabled"], bool)
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["epochs"] == 2 and cfg["seed"] == 3 and cfg["arch"] == "paper"
    splits = json.loads((run_dir / "splits.json").read_text())
    assert sum(len(v) for v in splits.values()) == 40
    assert not set(splits["train"]) & set(splits["test"]) and not set(splits["train"]) & set(splits["val"])
    assert json.loads((run_dir / "history.json").read_text())["epochs_run"] == 2


def test_metrics_and_threshold_on_validation(run_dir) -> None:
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["threshold"]["chosen_on"] == "validation" and m["threshold"]["target_recall"] == 0.9
    assert m["validation"]["sensitivity"] >= 0.9, "the threshold reaches the target recall on validation"
    t = m["test"]
    assert t["n"] == len(json.loads((run_dir / "splits.json").read_text())["test"])
    cm = t["confusion_matrix"]["rows_true_cols_pred"]
    assert sum(map(sum, cm)) == t["n"]
    for k in ("accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc"):
        assert k in t
    lo, hi = t["ci95"]["accuracy"]
    assert lo <= t["accuracy"] <= hi
    assert m["synthetic"] is True


def test_ir_agrees_with_keras(run_dir) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import openvino as ov

    model_dir = run_dir.parent / "model"
    meta = ModelMeta.load(model_dir / "model.json")
    assert meta.synthetic and meta.version == "test-1" and meta.precision == "fp16"
    assert meta.labels == ["normal", "ALL"] and meta.positive_label == "ALL"
    assert meta.input.shape == [1, 100, 100, 3] and meta.input.color_order == "RGB"
    assert meta.trainer["parity"]["ok"] is True
    assert (model_dir / "SYNTHETIC.txt").is_file()
    core = ov.Core()
    ir = core.read_model(str(model_dir / "model.xml"))
    assert meta.trainer["ops"] == op_report(ir)["ops"], "model.json lists the ops of the IR as written"
    assert ir.inputs[0].get_partial_shape().is_static
    assert list(ir.inputs[0].get_shape()) == [1, 100, 100, 3]
    compiled = core.compile_model(ir, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    k = keras.models.load_model(run_dir / "model.keras")
    data = Path(json.loads((run_dir / "config.json").read_text())["data"])
    test = json.loads((run_dir / "splits.json").read_text())["test"]
    diffs, agree = [], []
    for rel in test:
        x = to_tensor(imaging.read(data / rel, target=(100, 100)), meta.input)
        p_ir = compiled(x)[0][0]
        p_k = np.asarray(k(x, training=False))[0]
        assert p_ir.shape == (2,) and abs(float(p_ir.sum()) - 1) < 1e-3
        diffs.append(float(np.abs(p_ir - p_k).max()))
        agree.append((p_ir[1] >= meta.threshold) == (p_k[1] >= meta.threshold))
    assert max(diffs) < 1e-2, f"IR vs Keras max |diff| {max(diffs)}"
    assert np.mean(agree) == 1.0


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_other_precisions(run_dir, precision) -> None:
    out = run_dir.parent / f"model-{precision}"
    proc = run_cli(["export", "--run", str(run_dir), "--out", str(out), "--precision", precision], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = ModelMeta.load(out / "model.json")
    assert meta.precision == precision and meta.trainer["parity"]["ok"]
    assert meta.trainer["parity"]["max_abs_diff"] <= {"fp32": 1e-4, "int8": 0.15}[precision]
    fp16_bin = (run_dir.parent / "model" / "model.bin").stat().st_size
    size = (out / "model.bin").stat().st_size
    assert size > fp16_bin * 1.5 if precision == "fp32" else size < fp16_bin
