"""Square crops around detected cells, with context, as the classifier was trained on them.

ALL-IDB2 crops (and the synthetic ones) show one white cell centred with some surrounding
smear; a tight nucleus box would show the model something it never saw in training.
"""

from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np


def square_crop(image_bgr: np.ndarray, box: Tuple[int, int, int, int], margin: float) -> np.ndarray:
    """Square crop centred on `box` (x, y, w, h), side = max(w, h) * (1 + 2 * margin).

    Parts outside the field are filled by replicating the border, so cells cut by the edge
    of the field stay centred and every crop has the same aspect ratio.
    """
    x, y, w, h = box
    if w <= 0 or h <= 0:
        raise ValueError(f"empty box {box}")
    side = max(1, int(round(max(w, h) * (1 + 2 * margin))))
    cx, cy = x + w / 2.0, y + h / 2.0
    x0, y0 = int(round(cx - side / 2.0)), int(round(cy - side / 2.0))
    x1, y1 = x0 + side, y0 + side
    ih, iw = image_bgr.shape[:2]
    inner = image_bgr[max(0, y0):min(ih, y1), max(0, x0):min(iw, x1)]
    if inner.size == 0:
        raise ValueError(f"box {box} lies outside the {iw}x{ih} image")
    pad = (max(0, -y0), max(0, y1 - ih), max(0, -x0), max(0, x1 - iw))
    if any(pad):
        inner = cv2.copyMakeBorder(inner, *pad, cv2.BORDER_REPLICATE)
    return inner
