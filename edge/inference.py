"""OpenVINO classifier: load IR + model.json, pick the first working device, refuse mismatches.

Works with the current API (`openvino.Core`) and 2022.3 LTS (`openvino.runtime.Core`, the last
release with the NCS2 `MYRIAD` plugin). One infer request is reused behind a lock because
OpenVINO requests are not thread-safe.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from edge.model_meta import ModelMeta, meta_path_for
from edge.preprocess import to_tensor

log = logging.getLogger(__name__)


def _core_class() -> Any:
    try:
        from openvino import Core  # 2023.0+
    except ImportError:
        from openvino.runtime import Core  # 2022.3 LTS
    return Core


class ModelError(Exception):
    """The model cannot be used; the message is one operator-readable line."""


@dataclass(frozen=True)
class Prediction:
    probability: float  # of the positive class
    probabilities: List[float]  # per label, in model.json order
    latency_ms: float  # preprocessing + inference


def _shape_of(port: Any) -> Optional[List[int]]:
    ps = port.get_partial_shape()
    if not ps.is_static:
        return None
    return [int(d) for d in ps.to_shape()]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # OpenVINO prefixes messages with "Exception from src/...cpp:NNN:"; the useful part follows.
    useful = [ln for ln in lines if not ln.startswith("Exception from ") and ".cpp:" not in ln]
    return (useful or lines or [text])[0][:300]


class Classifier:
    """A compiled model with its metadata. `predict(image_bgr)` is thread-safe."""

    def __init__(self, xml: Path, devices: List[str], threshold: Optional[float] = None,
                 cpu_threads: int = 0, core: Any = None) -> None:
        self.xml = Path(xml)
        meta_path = meta_path_for(self.xml)
        try:
            self.meta = ModelMeta.load(meta_path)
        except FileNotFoundError:
            raise ModelError(f"{meta_path}: model.json not found beside the IR") from None
        except Exception as exc:
            raise ModelError(f"{meta_path}: invalid model.json: {_first_line(exc)}") from None
        kind = str(self.meta.output.get("kind", "softmax"))
        if kind not in ("softmax", "logits"):
            raise ModelError(f"{meta_path}: output.kind {kind!r} is not supported "
                             "(expected softmax or logits)")
        self._logits = kind == "logits"
        self.threshold = float(threshold if threshold is not None else self.meta.threshold)
        self.positive_index = self.meta.positive_index

        core = core if core is not None else _core_class()()
        try:
            model = core.read_model(str(self.xml))
        except Exception as exc:
            raise ModelError(f"{self.xml}: cannot read the IR: {_first_line(exc)}") from None
        self._check_shapes(model)

        self.device = ""
        self.device_errors: Dict[str, str] = {}
        compiled = None
        for device in devices:
            try:
                compiled = core.compile_model(model, device, self._properties(device, cpu_threads))
            except Exception as exc:
                self.device_errors[device] = _first_line(exc)
                log.info("device %s not used: %s", device, self.device_errors[device])
                continue
            self.device = device
            break
        if compiled is None:
            raise ModelError(
                "no device could compile the model: "
                + "; ".join(f"{d}: {e}" for d, e in self.device_errors.items())
            )
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()
        log.info(
            "model %s %s (%s) compiled on %s%s", self.meta.name, self.meta.version,
            "synthetic" if self.meta.synthetic else "real data", self.device,
            f" after {', '.join(self.device_errors)} failed" if self.device_errors else "",
        )

    def _check_shapes(self, model: Any) -> None:
        if len(model.inputs) != 1 or len(model.outputs) < 1:
            raise ModelError(f"{self.xml}: expected one input and an output, got "
                             f"{len(model.inputs)} inputs and {len(model.outputs)} outputs")
        in_shape = _shape_of(model.inputs[0])
        want = list(self.meta.input.shape)
        if in_shape != want:
            raise ModelError(f"{self.xml}: IR input shape {in_shape} does not match model.json "
                             f"input.shape {want} ({self.meta.input.layout})")
        out_shape = _shape_of(model.outputs[0])
        if out_shape != [1, len(self.meta.labels)]:
            raise ModelError(f"{self.xml}: IR output shape {out_shape} does not match "
                             f"[1, {len(self.meta.labels)}] for labels {self.meta.labels}")

    @staticmethod
    def _properties(device: str, cpu_threads: int) -> Dict[str, str]:
        props = {"PERFORMANCE_HINT": "LATENCY"}
        if device == "CPU":
            # bf16 on capable CPUs would change outputs; keep f32 like the trainer's parity check.
            props["INFERENCE_PRECISION_HINT"] = "f32"
            if cpu_threads:
                props["INFERENCE_NUM_THREADS"] = str(cpu_threads)
        return props

    @property
    def input_hw(self) -> tuple:
        return (self.meta.input.height, self.meta.input.width)

    def predict(self, image_bgr: np.ndarray) -> Prediction:
        """HxWx3 uint8 BGR (any size) -> positive-class probability."""
        t0 = time.perf_counter()
        x = to_tensor(image_bgr, self.meta.input)
        with self._lock:
            self._request.infer({0: x})
            out = np.array(self._request.get_output_tensor(0).data, dtype=np.float64).reshape(-1)
        if self._logits:
            e = np.exp(out - out.max())
            out = e / e.sum()
        if not np.all(np.isfinite(out)):
            raise ModelError("the model produced non-finite outputs")
        probs = [float(p) for p in out]
        return Prediction(probs[self.positive_index], probs, (time.perf_counter() - t0) * 1000)

    def label_for(self, probability: float) -> str:
        """Positive label at/above the threshold, else the most likely other label."""
        return self.meta.positive_label if probability >= self.threshold else self.negative_label

    @property
    def negative_label(self) -> str:
        return next(lb for lb in self.meta.labels if lb != self.meta.positive_label)

    def describe(self) -> Dict[str, Any]:
        return {
            "name": self.meta.name, "version": self.meta.version,
            "synthetic": self.meta.synthetic, "device": self.device,
            "threshold": self.threshold, "labels": list(self.meta.labels),
            "positive_label": self.meta.positive_label, "xml": str(self.xml),
            "device_errors": dict(self.device_errors),
        }


def load_classifier(config: Any) -> Classifier:
    """From `edge.config.Config`'s model section."""
    m = config.model
    return Classifier(m.xml, list(m.devices), m.threshold, m.cpu_threads)
