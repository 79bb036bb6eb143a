"""Classical leukocyte detection in a stained blood-smear field (no learning, no TensorFlow).

Giemsa/May-Grünwald stains nuclei purple and dark: blue high, green low. Red cells are pink,
backgrounds grey or lilac, and those are bright in green. So (blue - green) x (255 - green) is
a stain channel in which nuclei are bright and everything else is dark, on smear backgrounds
and on C-NMC's black alike. Otsu splits it, a per-blob threshold trims touching red cells and
cytoplasm, morphology cleans it, and a distance-transform watershed splits touching nuclei;
size and shape filters from `AnalysisConfig` drop debris and stain blobs.

Work happens on a downscaled copy (a 5 Mpx field at full size costs ~10x the time for the
same boxes); boxes are returned in full-resolution pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Tuple

import cv2
import numpy as np

from edge.config import AnalysisConfig

WORK_LONG_SIDE = 1024  # px of the working copy's long side (unless cells would get too small)
MIN_WORK_DIAMETER = 8.0  # px a smallest cell keeps in the working copy
MIN_STAIN_CONTRAST = 18  # stain units; below this Otsu is splitting noise, not stain
SPLIT_CORE_FRACTION = 0.7  # seeds: distance >= this fraction of the blob maximum (necks are lower)
MIN_SOLIDITY = 0.6  # area / convex hull area; stain smears and debris are ragged
MAX_ASPECT = 3.5  # long / short side of the rotated box
LOCAL_FRACTION = 0.5  # within a blob, nucleus pixels stain at least half its 90th percentile
RELATIVE_STAIN = 0.65  # drop blobs stained weaker than this fraction of the strongest nucleus


@dataclass(frozen=True)
class Cell:
    """One detected nucleus: bounding box (x, y, w, h) and centre in full-resolution pixels."""

    box: Tuple[int, int, int, int]
    centre: Tuple[float, float]
    diameter: float  # equivalent-circle diameter, px


def _check_image(image_bgr: np.ndarray) -> None:
    if not isinstance(image_bgr, np.ndarray) or image_bgr.dtype != np.uint8:
        raise ValueError("expected a uint8 numpy image")
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.size == 0:
        raise ValueError(f"expected an HxWx3 BGR image, got shape {image_bgr.shape}")


def work_scale(shape: Tuple[int, ...], cfg: AnalysisConfig) -> float:
    """Downscale factor: small enough to be fast, large enough to keep small cells visible."""
    long_side = max(shape[0], shape[1])
    scale = min(1.0, WORK_LONG_SIDE / long_side)
    return min(1.0, max(scale, MIN_WORK_DIAMETER / cfg.min_cell_diameter_px))


def stain_channel(image_bgr: np.ndarray) -> np.ndarray:
    """uint8 nucleus-stain strength: purple-ness (blue - green) times darkness (255 - green).

    Blue minus green alone also lights up lilac backgrounds and pink red cells; nuclei are the
    only structures that are both purple and dark in green, so the product separates them.
    A black background (C-NMC) scores 0.
    """
    b, g, _ = cv2.split(image_bgr)
    purple = cv2.subtract(b, g).astype(np.float32)  # saturating: pink, grey, green -> 0
    stain = purple * (255.0 - g.astype(np.float32)) / 255.0
    return cv2.GaussianBlur(stain.astype(np.uint8), (5, 5), 0)


def _clean(mask: np.ndarray, min_diameter: float) -> np.ndarray:
    """Open (drop specks), close (bridge stain gaps), fill holes (pale nucleoli)."""
    r = max(1, int(round(min_diameter / 6)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, contours, -1, 255, thickness=cv2.FILLED)
    return filled


def _refine(mask: np.ndarray, stain: np.ndarray) -> np.ndarray:
    """Per blob, drop pixels stained less than LOCAL_FRACTION of the blob's strong stain:
    lilac red cells or cytoplasm touching a nucleus pass the global threshold but not this."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    out = np.zeros_like(mask)
    for i in range(1, n):
        x, y, w, h = stats[i, :4]
        inside = labels[y:y + h, x:x + w] == i
        roi = stain[y:y + h, x:x + w]
        local = LOCAL_FRACTION * float(np.percentile(roi[inside], 90))
        out[y:y + h, x:x + w][inside & (roi >= local)] = 255
    return out


def nucleus_mask(stain: np.ndarray, min_diameter: float) -> np.ndarray:
    """Binary mask of stained nuclei: Otsu with a contrast floor, then a per-blob threshold."""
    otsu, _ = cv2.threshold(stain, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    _, mask = cv2.threshold(stain, max(otsu, MIN_STAIN_CONTRAST), 255, cv2.THRESH_BINARY)
    mask = _clean(mask, min_diameter)
    return _clean(_refine(mask, stain), min_diameter)


def _split(blob: np.ndarray) -> List[np.ndarray]:
    """Split one binary blob (uint8 0/255) into touching nuclei.

    Seeds are the cores where the distance to the blob's edge is near its maximum (one per
    nucleus, since a neck between nuclei is narrower than either); every other pixel goes to
    its nearest seed, which is the watershed of the distance-to-seeds relief.
    """
    dist = cv2.distanceTransform(blob, cv2.DIST_L2, 5)
    peak = float(dist.max())
    if peak <= 0:
        return []
    cores = (dist >= SPLIT_CORE_FRACTION * peak).astype(np.uint8)
    n, _ = cv2.connectedComponents(cores)
    if n <= 2:  # background + one core: a single nucleus
        return [blob]
    _, labels = cv2.distanceTransformWithLabels(
        1 - cores, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_CCOMP)
    parts = []
    for label in np.unique(labels[cores > 0]):
        part = ((labels == label) & (blob > 0)).astype(np.uint8) * 255
        if part.any():
            parts.append(part)
    return parts


def _accept(contour: np.ndarray, min_d: float, max_d: float) -> bool:
    area = cv2.contourArea(contour)
    if area <= 0:
        return False
    d = math.sqrt(4 * area / math.pi)
    if not min_d <= d <= max_d:
        return False
    hull = cv2.contourArea(cv2.convexHull(contour))
    if hull <= 0 or area / hull < MIN_SOLIDITY:
        return False
    (_, _), (rw, rh), _ = cv2.minAreaRect(contour)
    return min(rw, rh) > 0 and max(rw, rh) / min(rw, rh) <= MAX_ASPECT


def detect_cells(image_bgr: np.ndarray, cfg: AnalysisConfig) -> List[Cell]:
    """Nuclei in a field, sorted top-to-bottom then left-to-right (the caller caps the count).

    Raises ValueError for something that is not an HxWx3 uint8 image.
    """
    _check_image(image_bgr)
    scale = work_scale(image_bgr.shape, cfg)
    work = image_bgr if scale == 1.0 else cv2.resize(
        image_bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    min_d, max_d = cfg.min_cell_diameter_px * scale, cfg.max_cell_diameter_px * scale
    stain = stain_channel(work)
    mask = nucleus_mask(stain, min_d)
    pad = 2
    padded = cv2.copyMakeBorder(stain, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    found: List[Tuple[float, Cell]] = []
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        if math.sqrt(4 * cv2.contourArea(contour) / math.pi) < min_d:
            continue  # debris: not worth a distance transform
        blob = np.zeros((h + 2 * pad, w + 2 * pad), np.uint8)
        cv2.drawContours(blob, [contour], -1, 255, cv2.FILLED, offset=(pad - x, pad - y))
        roi = padded[y:y + h + 2 * pad, x:x + w + 2 * pad]  # aligned with `blob`
        for part in _split(blob):
            outline, _ = cv2.findContours(part, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            if not outline:
                continue
            c = max(outline, key=cv2.contourArea)
            if not _accept(c, min_d, max_d):
                continue
            px, py, pw, ph = cv2.boundingRect(c)
            m = cv2.moments(c)
            cx = (m["m10"] / m["m00"] + x - pad) / scale
            cy = (m["m01"] / m["m00"] + y - pad) / scale
            box = (int(round((px + x - pad) / scale)), int(round((py + y - pad) / scale)),
                   int(round(pw / scale)), int(round(ph / scale)))
            diameter = math.sqrt(4 * cv2.contourArea(c) / math.pi) / scale
            strength = float(cv2.mean(roi, mask=part)[0])
            found.append((strength, Cell(box=box, centre=(cx, cy), diameter=diameter)))
    strongest = max((s for s, _ in found), default=0.0)
    cells = [c for s, c in found if s >= RELATIVE_STAIN * strongest]
    cells.sort(key=lambda c: (c.box[1], c.box[0]))
    return cells
