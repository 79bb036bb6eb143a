"""`model.json`: the contract between the trainer's export and the edge.

The trainer writes it beside `model.xml`; the edge refuses a model whose metadata does not
validate or does not match the IR. Python 3.9 compatible (typing.List/Optional on purpose).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge import DISCLAIMER

FORMAT_VERSION = 1


class InputSpec(BaseModel):
    """How pixels become the model's input tensor: the one preprocessing definition.

    value = (pixel_in_color_order - mean) * scale, after resizing to (height, width).
    """

    model_config = ConfigDict(extra="forbid")

    shape: List[int] = Field(description="static input shape, batch 1, in `layout` order")
    layout: Literal["NHWC", "NCHW"] = "NHWC"
    color_order: Literal["RGB", "BGR"] = "RGB"
    scale: float = Field(1.0 / 255.0, gt=0)
    mean: List[float] = Field(default_factory=lambda: [0.0, 0.0, 0.0])
    resize: Literal["area", "linear"] = "area"
    dtype: Literal["float32"] = "float32"

    @field_validator("shape")
    @classmethod
    def _static_batch1(cls, v: List[int]) -> List[int]:
        if len(v) != 4 or v[0] != 1 or any(d <= 0 for d in v):
            raise ValueError(f"must be a static 4-D batch-1 shape, got {v}")
        return v

    @field_validator("mean")
    @classmethod
    def _three_means(cls, v: List[float]) -> List[float]:
        if len(v) != 3:
            raise ValueError("must have one value per colour channel (3)")
        return v

    @model_validator(mode="after")
    def _three_channels(self) -> InputSpec:
        if self.channels != 3:
            raise ValueError(f"shape {self.shape} with layout {self.layout} is not 3-channel")
        return self

    @property
    def height(self) -> int:
        return self.shape[1] if self.layout == "NHWC" else self.shape[2]

    @property
    def width(self) -> int:
        return self.shape[2] if self.layout == "NHWC" else self.shape[3]

    @property
    def channels(self) -> int:
        return self.shape[3] if self.layout == "NHWC" else self.shape[1]


class ModelMeta(BaseModel):
    """Everything needed to feed the IR and to interpret and audit its output."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    format_version: int = FORMAT_VERSION
    name: str
    version: str
    created: str
    arch: str = "paper"
    labels: List[str] = Field(description="class names in output index order")
    positive_label: str = Field(description="the label that means ALL (blast) detected")
    threshold: float = Field(0.5, ge=0.0, le=1.0, description="on the positive probability")
    precision: Literal["fp16", "fp32", "int8"] = "fp16"
    input: InputSpec
    output: Dict[str, Any] = Field(default_factory=lambda: {"kind": "softmax"})
    data: Dict[str, Any] = Field(default_factory=dict, description="fingerprint, format, counts")
    metrics: Dict[str, Any] = Field(default_factory=dict, description="held-out test metrics")
    synthetic: bool
    disclaimer: str = DISCLAIMER
    trainer: Dict[str, Any] = Field(default_factory=dict, description="package versions etc.")

    @model_validator(mode="after")
    def _positive_in_labels(self) -> ModelMeta:
        if len(self.labels) < 2:
            raise ValueError("labels: need at least two classes")
        if self.positive_label not in self.labels:
            raise ValueError(f"positive_label {self.positive_label!r} is not in labels {self.labels}")
        return self

    @property
    def positive_index(self) -> int:
        return self.labels.index(self.positive_label)

    @classmethod
    def load(cls, path: Path) -> ModelMeta:
        return cls.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))

    def save(self, path: Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")


def meta_path_for(xml_path: Path) -> Path:
    """`model.json` sits beside `model.xml` (same stem)."""
    return Path(xml_path).with_suffix(".json")
