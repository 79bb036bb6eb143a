"""`cells` mode: detect the white cells of a field, classify each, summarise the field.

The field is positive when any analysed cell is at or above the classifier's threshold; its
probability is the highest cell probability, so `positive == (probability >= threshold)`
holds for fields as it does for single images. `found` counts the analysed cells; `skipped`
those beyond `analysis.max_cells`.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List

import numpy as np

from edge.analysis.annotate import annotate
from edge.analysis.crop import square_crop
from edge.analysis.detect import detect_cells
from edge.config import AnalysisConfig
from edge.imaging import ImageError

log = logging.getLogger(__name__)


def analyze_field(image_bgr: np.ndarray, classifier: Any, cfg: AnalysisConfig) -> Dict[str, Any]:
    """Analyzer outcome for the pipeline: probability, cells, annotated image, latency.

    A field without any detectable white cell raises ImageError("no_cells"): "no cells" is
    not the same as "no blasts", so it is quarantined with that reason instead of reported
    negative.
    """
    t0 = time.perf_counter()
    try:
        cells = detect_cells(image_bgr, cfg)
    except ValueError as exc:
        raise ImageError("bad_image", str(exc)) from None
    if not cells:
        raise ImageError("no_cells", "no white cells were found in the field "
                         "(empty field, out of focus, or analysis.*_cell_diameter_px wrong)")
    skipped = max(0, len(cells) - cfg.max_cells)
    if skipped:
        log.warning("field has %d cells; only the first %d are analysed (analysis.max_cells)",
                    len(cells), cfg.max_cells)
        cells = cells[: cfg.max_cells]
    positive = classifier.meta.positive_label
    items: List[Dict[str, Any]] = []
    highest = 0.0
    for cell in cells:
        p = float(classifier.predict(square_crop(image_bgr, cell.box, cfg.crop_margin)).probability)
        highest = max(highest, p)
        items.append({"box": [int(v) for v in cell.box], "label": classifier.label_for(p),
                      "probability": round(p, 6)})
    blasts = sum(1 for it in items if it["label"] == positive)
    summary: Dict[str, Any] = {
        "found": len(items), "blasts": blasts, "blast_fraction": round(blasts / len(items), 4),
        "skipped": skipped, "items": items,
    }
    return {
        # unrounded, like each cell's label: a cell just under the threshold must not make
        # the field positive through rounding (blasts 0, label ALL)
        "probability": highest,
        "cells": summary,
        "annotated": annotate(image_bgr, items, positive),
        "latency_ms": (time.perf_counter() - t0) * 1000,
    }
