"""The one preprocessing definition, used by training, export parity checks and the edge.

Input is always an 8-bit BGR image as OpenCV decodes it; output is float32 in the layout,
colour order and scaling that `model.json`'s `input` section states.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.model_meta import InputSpec

_INTERP = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}


def resize_for(image_bgr: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Resize to the model's spatial size (uint8 stays uint8)."""
    h, w = image_bgr.shape[:2]
    if (h, w) == (spec.height, spec.width):
        return image_bgr
    interp = _INTERP[spec.resize]
    if spec.resize == "area" and (h < spec.height or w < spec.width):
        interp = cv2.INTER_LINEAR  # INTER_AREA is meant for shrinking
    return cv2.resize(image_bgr, (spec.width, spec.height), interpolation=interp)


def normalize(image_bgr: np.ndarray, spec: InputSpec) -> np.ndarray:
    """HxWx3 uint8 BGR at model size -> HxWx3 float32 in the spec's colour order and scale."""
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {image_bgr.shape}")
    img = image_bgr[:, :, ::-1] if spec.color_order == "RGB" else image_bgr
    out = (img.astype(np.float32) - np.asarray(spec.mean, np.float32)) * np.float32(spec.scale)
    return np.ascontiguousarray(out)


def to_hwc(image_bgr: np.ndarray, spec: InputSpec) -> np.ndarray:
    """One image as an HxWx3 float32 array (training batches stack these)."""
    return normalize(resize_for(image_bgr, spec), spec)


def to_tensor(image_bgr: np.ndarray, spec: InputSpec) -> np.ndarray:
    """One image as the model's batch-1 input tensor in the spec's layout."""
    x = to_hwc(image_bgr, spec)[None]
    if spec.layout == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x
