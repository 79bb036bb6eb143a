"""The committed SYNTHETIC demo model: valid model.json, small, NCS2-compatible ops, runs in OpenVINO."""

from __future__ import annotations

import numpy as np

from edge import DISCLAIMER
from edge.model_meta import ModelMeta, meta_path_for
from edge.preprocess import to_tensor
from trainer.export import NCS2_OPSETS, compile_f32, op_report
from trainer.synth import single_cell


def test_files_and_metadata(default_model_xml) -> None:
    d = default_model_xml.parent
    total = sum((d / f).stat().st_size for f in ("model.xml", "model.bin", "model.json"))
    assert total < 600_000, f"demo model is {total} bytes"
    meta = ModelMeta.load(meta_path_for(default_model_xml))
    assert meta.synthetic is True and "synthetic" in meta.name
    assert "SYNTHETIC" in (d / "SYNTHETIC.txt").read_text()
    assert meta.labels == ["normal", "ALL"] and meta.positive_label == "ALL"
    assert meta.input.shape == [1, 100, 100, 3] and meta.input.layout == "NHWC"
    assert meta.input.color_order == "RGB" and abs(meta.input.scale - 1 / 255) < 1e-12
    assert meta.input.resize == "area" and meta.precision == "fp16" and meta.arch == "paper"
    assert meta.disclaimer == DISCLAIMER
    assert meta.trainer["parity"]["ok"] is True
    acc = meta.metrics["test"]["accuracy"]
    assert 0.6 < acc < 0.97, f"held-out synthetic accuracy {acc}: learnable but clearly below 100%"


def test_ir_is_static_and_ncs2_compatible(default_model_xml) -> None:
    import openvino as ov

    m = ov.Core().read_model(str(default_model_xml))
    assert m.inputs[0].get_partial_shape().is_static and list(m.inputs[0].get_shape()) == [1, 100, 100, 3]
    assert list(m.outputs[0].get_shape()) == [1, 2]
    report = op_report(m)
    assert report["unsupported"] == [] and all(o.rsplit("-", 1)[1] in NCS2_OPSETS for o in report["ops"])


def test_runs_on_synthetic_cells(default_model_xml) -> None:
    meta = ModelMeta.load(meta_path_for(default_model_xml))
    compiled = compile_f32(default_model_xml)
    probs = np.stack([compiled(to_tensor(single_cell(np.random.default_rng(i), i % 2 == 0), meta.input))[0][0]
                      for i in range(6)])
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-3) and (probs >= 0).all()
    assert probs[:, 1].std() > 1e-3, "different cells get different probabilities"


def test_op_check_rejects_newer_opsets() -> None:
    import openvino as ov
    from openvino import opset1, opset13

    p = opset1.parameter([1, 4], np.float32)
    m = ov.Model([opset13.bitwise_not(opset1.convert(p, "i32"))], [p])
    assert op_report(m)["unsupported"] == ["BitwiseNot-opset13"]
