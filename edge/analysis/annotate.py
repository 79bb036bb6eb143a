"""The operator's view of a field: every analysed cell boxed, coloured by its label."""

from __future__ import annotations

from typing import Any, Dict, List

import cv2
import numpy as np

from edge.imaging import fit_within

POSITIVE_BGR = (40, 40, 230)  # red: at/above the threshold (blast)
NEGATIVE_BGR = (60, 170, 40)  # green: below the threshold
MAX_SIDE = 1600  # px; the status page and API show a preview, not a 5 Mpx original


def annotate(image_bgr: np.ndarray, items: List[Dict[str, Any]], positive_label: str) -> np.ndarray:
    """A downscaled copy with a box and probability per cell (red = positive, green = not)."""
    out, scale = fit_within(image_bgr, MAX_SIDE)
    if out is image_bgr:
        out = image_bgr.copy()  # we draw on it
    thick = max(1, round(max(out.shape[:2]) / 400))
    font = max(0.4, max(out.shape[:2]) / 1600)
    for item in items:
        x, y, bw, bh = (int(round(v * scale)) for v in item["box"])
        colour = POSITIVE_BGR if item["label"] == positive_label else NEGATIVE_BGR
        cv2.rectangle(out, (x, y), (x + bw, y + bh), colour, thick)
        text = f"{item['probability']:.2f}"
        ty = y - 4 if y > 16 else y + bh + 14
        cv2.putText(out, text, (x, ty), cv2.FONT_HERSHEY_SIMPLEX, font, colour, thick, cv2.LINE_AA)
    return out
