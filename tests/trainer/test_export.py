"""Export helpers: the op check sees the IR as written; INT8 calibration is a stratified, seeded sample."""

from __future__ import annotations

import numpy as np

from trainer.export import calibration_sample, save_ir


def test_op_report_is_of_the_written_ir(tmp_path) -> None:
    """FP16 compression adds Convert ops on save; model.json's op list must include them."""
    import openvino as ov
    from openvino import opset1

    p = opset1.parameter([1, 4], np.float32)
    w = opset1.constant(np.linspace(0.5, 2.0, 4, dtype=np.float32).reshape(1, 4))
    m = ov.Model([opset1.multiply(p, w)], [p])
    ops = save_ir(m, tmp_path / "m.xml", "fp16")
    assert "Convert-opset1" in ops["ops"] and ops["unsupported"] == []
    written = {op.get_type_info().name for op in ov.Core().read_model(str(tmp_path / "m.xml")).get_ordered_ops()}
    assert {o.rsplit("-", 1)[0] for o in ops["ops"]} == written


def test_calibration_sample_is_stratified_and_seeded() -> None:
    """C-NMC sorts all/ before hem/: the first 300 sorted paths were ALL cells only."""
    paths = [f"fold_0/all/UID_{i}_1_1_all.bmp" for i in range(600)] + \
            [f"fold_0/hem/UID_H{i}_1_1_hem.bmp" for i in range(400)]
    label_of = {p: int("/all/" in p) for p in paths}
    a = calibration_sample(paths, label_of, 300, seed=2)
    assert len(a) <= 300 and len(set(a)) == len(a) and set(a) <= set(paths)
    n_all = sum(label_of[p] for p in a)
    assert abs(n_all - 180) <= 1 and abs((len(a) - n_all) - 120) <= 1, "classes in their training proportion"
    assert a == calibration_sample(list(reversed(paths)), label_of, 300, seed=2), "seeded, order-independent"
    assert a != calibration_sample(paths, label_of, 300, seed=3)
    assert sorted(calibration_sample(paths[:10], label_of, 300, seed=2)) == sorted(paths[:10])
