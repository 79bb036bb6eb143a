"""`export`: Keras run -> OpenVINO IR + model.json, checked before it is put in place.

Checks: static batch-1 input, only opset1..opset10 operations (what the OpenVINO 2022.3 runtime
for the NCS2 knows), and parity of the written IR against Keras on the test split, fed through
edge.preprocess.to_tensor exactly as the edge feeds it. The files only replace MODEL_DIR's
contents once every check passed.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from edge.model_meta import ModelMeta
from edge.preprocess import to_tensor
from trainer import LABELS, POSITIVE_LABEL, TrainerError
from trainer.synth import SYNTHETIC_NOTE
from trainer.train import load_model, read_json, read_run_config

log = logging.getLogger("trainer")
NCS2_OPSETS = {f"opset{i}" for i in range(1, 11)}  # OpenVINO 2022.3 LTS
PRECISIONS = ("fp16", "fp32", "int8")
# max |p_IR - p_Keras| allowed on the test split; beyond it export fails
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.15}
CALIBRATION_MAX = 300


def op_report(ov_model) -> Dict[str, List[str]]:
    """{"ops": sorted "Type-opsetN", "unsupported": those outside opset1..opset10}."""
    ops = sorted({f"{op.get_type_info().name}-{op.get_type_info().version_id}" for op in ov_model.get_ordered_ops()})
    bad = [o for o in ops if o.rsplit("-", 1)[1] not in NCS2_OPSETS]
    return {"ops": ops, "unsupported": bad}


def save_ir(ov_model, xml: Path, precision: str) -> Dict[str, List[str]]:
    """Write the IR and check the operations of the IR as written, read back from disk: saving
    rewrites the graph (FP16 compression adds Convert ops), so the in-memory graph is not what ships."""
    import openvino as ov

    ov.save_model(ov_model, str(xml), compress_to_fp16=(precision == "fp16"))
    ops = op_report(ov.Core().read_model(str(xml)))
    if ops["unsupported"]:
        raise TrainerError(f"the IR uses operations the OpenVINO 2022.3 runtime (NCS2) lacks: "
                           f"{', '.join(ops['unsupported'])}; change the architecture")
    return ops


def calibration_sample(paths: List[str], label_of: Dict[str, int], n: int, seed: int) -> List[str]:
    """Up to `n` training paths, each class in its training proportion (at least one), drawn with
    `seed`. The first `n` sorted paths would be one class only on C-NMC (all/ sorts before hem/)."""
    if len(paths) <= n:
        return sorted(paths)
    rng = np.random.default_rng(seed)
    by_class: Dict[int, List[str]] = {}
    for p in sorted(paths):
        by_class.setdefault(label_of[p], []).append(p)
    picked: List[str] = []
    for _, members in sorted(by_class.items()):
        k = min(len(members), max(1, n * len(members) // len(paths)))
        picked += [members[i] for i in rng.choice(len(members), size=k, replace=False)]
    return sorted(picked)


def compile_f32(xml: Path):
    """CPU, precision pinned to f32 (CPUs with bf16 would otherwise default to bf16)."""
    import openvino as ov

    core = ov.Core()
    return core.compile_model(core.read_model(str(xml)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def parity(xml: Path, images: List[np.ndarray], keras_probs: np.ndarray, spec, threshold: float,
           precision: str) -> Dict[str, object]:
    """IR vs Keras on the same source images; `ok` is False past the tolerance."""
    compiled = compile_f32(xml)
    ir = np.stack([compiled(to_tensor(img, spec))[0][0] for img in images]) if images else np.zeros((0, 2))
    pos = LABELS.index(POSITIVE_LABEL)
    tol = TOLERANCE[precision]
    diff = float(np.max(np.abs(ir - keras_probs))) if len(images) else 0.0
    agree = (ir[:, pos] >= threshold) == (keras_probs[:, pos] >= threshold)
    # a label flip is only acceptable for a probability within tolerance of the threshold
    flips = int(np.sum(~agree & (np.abs(keras_probs[:, pos] - threshold) > tol)))
    return {"n": len(images), "max_abs_diff": diff, "label_agreement": float(agree.mean()) if len(images) else None,
            "flips_outside_tolerance": flips, "tolerance": tol, "precision": precision,
            "ok": diff <= tol and flips == 0, "inference_precision_hint": "f32", "device": "CPU"}


def _convert(model, spec):
    import openvino as ov

    ov_model = ov.convert_model(model, input=[list(spec.shape)])
    ov_model.inputs[0].get_tensor().set_names({"image"})
    ov_model.outputs[0].get_tensor().set_names({"probabilities"})
    return ov_model


def _quantize(ov_model, calibration: np.ndarray):
    import nncf

    data = nncf.Dataset(list(calibration), lambda x: x[None])
    return nncf.quantize(ov_model, data, subset_size=min(CALIBRATION_MAX, len(calibration)))


def run(run_dir: Path, out: Path, precision: str = "fp16", name: Optional[str] = None,
        version: Optional[str] = None, data: Optional[Path] = None) -> ModelMeta:
    if precision not in PRECISIONS:
        raise TrainerError(f"unknown --precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    run_dir, out = Path(run_dir), Path(out)
    cfg = read_run_config(run_dir)
    splits = read_json(run_dir / "splits.json")
    dmeta = read_json(run_dir / "data.json")
    if not (run_dir / "metrics.json").is_file():
        raise TrainerError(f"{run_dir}/metrics.json is missing: run `python -m trainer evaluate --run {run_dir}` "
                           "first (the model card needs held-out metrics and the threshold)")
    metrics = read_json(run_dir / "metrics.json")
    root = Path(data) if data else Path(cfg["data"])
    if not root.is_dir():
        raise TrainerError(f"data directory {root} is gone; pass --data to where the set lives now")

    from trainer.env import environment, setup_tensorflow

    setup_tensorflow(int(cfg["seed"]), False)
    from trainer.evaluate import file_labels
    from trainer.pipeline import PAPER_INPUT, ImageStore, arrays

    spec = PAPER_INPUT
    model = load_model(run_dir)
    store = ImageStore(root, spec, int(cfg.get("cache_mb", 1024)))
    test_imgs = [store.get(p) for p in splits["test"]]
    keras_probs = model.predict(arrays(store, splits["test"]), batch_size=64, verbose=0) if test_imgs \
        else np.zeros((0, 2))
    ov_model = _convert(model, spec)
    if not ov_model.inputs[0].get_partial_shape().is_static:
        raise TrainerError("the converted model has a dynamic input shape; the NCS2 needs a static one")
    if precision == "int8":
        calib = calibration_sample(splits["train"], file_labels(run_dir, dmeta), CALIBRATION_MAX, int(cfg["seed"]))
        ov_model = _quantize(ov_model, arrays(store, calib))
    threshold = float(metrics["threshold"]["value"])
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        xml = tmp / "model.xml"
        ops = save_ir(ov_model, xml, precision)
        par = parity(xml, test_imgs, keras_probs, spec, threshold, precision)
        log.info("parity IR vs Keras on %d test images: max |diff| %.2g, label agreement %s (tolerance %.2g)",
                 par["n"], par["max_abs_diff"], par["label_agreement"], par["tolerance"])
        if not par["ok"]:
            raise TrainerError(f"the {precision} IR disagrees with Keras beyond tolerance (max |diff| "
                               f"{par['max_abs_diff']:.3g} > {par['tolerance']}, "
                               f"label flips {par['flips_outside_tolerance']}); try --precision fp32")
        now = dt.datetime.now(dt.timezone.utc)
        meta = ModelMeta(
            name=name or f"all-{cfg['arch']}", version=version or now.strftime("%Y%m%d.%H%M%S"),
            created=now.isoformat(timespec="seconds").replace("+00:00", "Z"), arch=cfg["arch"],
            labels=LABELS, positive_label=POSITIVE_LABEL, threshold=threshold, precision=precision, input=spec,
            output={"kind": "softmax", "shape": [1, len(LABELS)], "name": "probabilities"},
            data={"fingerprint": dmeta["fingerprint"], "format": dmeta["format"], "counts": dmeta["counts"],
                  "split_counts": dmeta.get("split_counts"), "synthetic": dmeta["synthetic"]},
            metrics={"test": metrics["test"], "threshold": metrics["threshold"]},
            synthetic=bool(dmeta["synthetic"]),
            trainer={"environment": environment(), "parity": par, "ops": ops["ops"], "config": cfg},
        )
        meta.save(tmp / "model.json")
        files = ["model.xml", "model.bin", "model.json"]
        if meta.synthetic:
            (tmp / "SYNTHETIC.txt").write_text(SYNTHETIC_NOTE, encoding="utf-8")
            files.append("SYNTHETIC.txt")
        # the .json last: a reader that sees the new metadata also sees the new IR
        for f in ["model.bin", "model.xml"] + files[2:][::-1]:
            os.replace(tmp / f, out / f)
        if not meta.synthetic and (out / "SYNTHETIC.txt").exists():
            (out / "SYNTHETIC.txt").unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s %s (%s, %d bytes) to %s", meta.name, meta.version, precision,
             (out / "model.bin").stat().st_size, out)
    return meta
