"""Field-of-view analysis (`analysis.mode = "cells"`): classical cell detection + per-cell model.

The daemon calls `register(daemon)` at start-up; see docs/camera.md.
"""

from __future__ import annotations

from typing import Any, Dict

import numpy as np

from edge.analysis.field import analyze_field


def register(daemon: Any) -> None:
    """Register the `cells` analyzer with the daemon's pipeline (config read at call time)."""

    def cells(image_bgr: np.ndarray, classifier: Any) -> Dict[str, Any]:
        return analyze_field(image_bgr, classifier, daemon.config.analysis)

    daemon.register_analyzer("cells", cells)
