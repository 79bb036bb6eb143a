"""Classical leukocyte detection in a stained blood-smear field (no learning, no TensorFlow).

Giemsa/May-Grünwald stains nuclei purple and dark: blue high, green low. Red cells are pink,
backgrounds grey or lilac, and those are bright in green. So (blue - green) x (255 - green) is
a stain channel in which nuclei are bright and everything else is dark, on smear backgrounds
and on C-NMC's black alike. Otsu splits it, a per-blob threshold trims touching red cells and
cytoplasm, morphology cleans it, and a distance-transform watershed splits touching nuclei;
size and shape filters from `AnalysisConfig` drop debris and stain blobs. A small, nucleus-
stained blob joined to a nucleus by stained material (a lobe, or a fragment on a thin bridge)
is merged into that nucleus's cell rather than counted as a cell.

Work happens on a downscaled copy (a 5 Mpx field at full size costs ~10x the time for the
same boxes); boxes are returned in full-resolution pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

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
RELATIVE_STAIN = 0.65  # a nucleus: of the reference nucleus's stain; a fragment: of its host's
OUTLIER_GAP = 1.3  # a nucleus stained this many times the next strongest does not set the reference
BACKGROUND_CONTRAST = 1.5  # a nucleus stains at least this many times the field's non-nucleus stain
BACKGROUND_PERCENTILE = 99  # non-nucleus stain level: what red cells and cytoplasm reach
HALO_PX = 4  # working-copy px around the nucleus mask (blurred nucleus edges) left out of it
CELL_REGION_FRACTION = 0.5  # cytoplasm and bridges: stain >= this fraction of the nucleus threshold
FRAGMENT_GAP = 1.0  # a fragment lies within this many host-nucleus radii of the host's edge


@dataclass(frozen=True)
class Cell:
    """One detected cell in full-resolution pixels: its nucleus's centre and size, and a
    bounding box (x, y, w, h) that also covers any nucleus fragments merged into it."""

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
    scale = min(1.0, max(scale, MIN_WORK_DIAMETER / cfg.min_cell_diameter_px))
    # A strip a pixel or two thick would resize to zero rows (cv2.error): keep it at full size.
    return scale if min(shape[0], shape[1]) * scale >= 1 else 1.0


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


def stain_threshold(stain: np.ndarray) -> float:
    """Global nucleus threshold: Otsu, but never below the contrast floor."""
    otsu, _ = cv2.threshold(stain, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return max(float(otsu), float(MIN_STAIN_CONTRAST))


def nucleus_mask(stain: np.ndarray, min_diameter: float) -> np.ndarray:
    """Binary mask of stained nuclei: Otsu with a contrast floor, then a per-blob threshold."""
    _, mask = cv2.threshold(stain, stain_threshold(stain), 255, cv2.THRESH_BINARY)
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


def cell_regions(stain: np.ndarray, nuclei: np.ndarray) -> np.ndarray:
    """int32 labels of stained regions (nuclei plus the fainter cytoplasm and bridges around
    them): two nuclei share a label only if stained material connects them."""
    faint = (stain >= CELL_REGION_FRACTION * stain_threshold(stain)).astype(np.uint8)
    _, labels = cv2.connectedComponents(faint | (nuclei > 0).astype(np.uint8))
    return labels


@dataclass
class _Blob:
    """A connected piece of the nucleus mask, in working-copy pixels."""

    image: np.ndarray  # uint8 0/255, padded by PAD, origin at `offset`
    offset: Tuple[int, int]
    contour: np.ndarray  # in working-copy pixels
    peak: float  # distance-transform maximum: the radius of its widest part
    region: int  # label in `cell_regions`
    strength: float  # mean stain


@dataclass
class _Nucleus:
    """An accepted nucleus (one watershed part) and the fragments merged into its cell."""

    contour: np.ndarray  # in working-copy pixels
    strength: float  # mean stain
    peak: float  # of the blob it was split from
    region: int
    fragments: List[np.ndarray] = field(default_factory=list)


PAD = 2  # px of background around a blob image, so that its distance transform sees an edge


def _roi(padded_stain: np.ndarray, blob_image: np.ndarray, offset: Tuple[int, int]) -> np.ndarray:
    """The stain under a blob image (`padded_stain` is the stain padded by PAD)."""
    (ox, oy), (h, w) = offset, blob_image.shape
    return padded_stain[oy + PAD:oy + PAD + h, ox + PAD:ox + PAD + w]


def _blobs(mask: np.ndarray, regions: np.ndarray, padded_stain: np.ndarray,
           min_d: float) -> List[_Blob]:
    out = []
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    for contour in contours:
        if math.sqrt(4 * cv2.contourArea(contour) / math.pi) < min_d:
            continue  # debris: not worth a distance transform
        x, y, w, h = cv2.boundingRect(contour)
        image = np.zeros((h + 2 * PAD, w + 2 * PAD), np.uint8)
        cv2.drawContours(image, [contour], -1, 255, cv2.FILLED, offset=(PAD - x, PAD - y))
        peak = float(cv2.distanceTransform(image, cv2.DIST_L2, 5).max())
        px, py = contour[0, 0]  # on the blob's edge, so inside its region
        offset = (x - PAD, y - PAD)
        strength = float(cv2.mean(_roi(padded_stain, image, offset), mask=image)[0])
        out.append(_Blob(image, offset, contour, peak, int(regions[py, px]), strength))
    return out


def _nuclei(blob: _Blob, padded_stain: np.ndarray, min_d: float, max_d: float) -> List[_Nucleus]:
    """The blob split into touching nuclei; parts failing the size/shape filters are dropped."""
    ox, oy = blob.offset
    roi = _roi(padded_stain, blob.image, blob.offset)
    out = []
    for part in _split(blob.image):
        outline, _ = cv2.findContours(part, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if not outline:
            continue
        c = max(outline, key=cv2.contourArea)
        if _accept(c, min_d, max_d):
            out.append(_Nucleus(c + np.array([ox, oy], np.int32),
                                float(cv2.mean(roi, mask=part)[0]), blob.peak, blob.region))
    return out


def _host(fragment: _Blob, nuclei: List[_Nucleus]) -> Optional[_Nucleus]:
    """The nucleus whose cell a small blob belongs to, if any: same stained region, stained
    like a nucleus (not a red cell or cytoplasm), its core too small to seed a nucleus of its
    own next to that one (the watershed seed rule), and no further than FRAGMENT_GAP of the
    nucleus's radius from its edge."""
    best: Optional[_Nucleus] = None
    best_gap = math.inf
    points = [(float(x), float(y)) for x, y in fragment.contour[:, 0]]
    for n in nuclei:
        if (n.region != fragment.region or fragment.peak >= SPLIT_CORE_FRACTION * n.peak
                or fragment.strength < RELATIVE_STAIN * n.strength):
            continue
        inside = max(cv2.pointPolygonTest(n.contour, p, True) for p in points)
        gap = max(0.0, -inside)
        if gap <= FRAGMENT_GAP * n.peak and gap < best_gap:
            best, best_gap = n, gap
    return best


def background_stain(stain: np.ndarray, mask: np.ndarray) -> float:
    """The stain that red cells, cytoplasm and background reach in this field (a high
    percentile outside the nucleus mask and its blurred edge); 0 when nothing is outside.

    Overlapping red cells pass the nucleus threshold on weakly stained smears; they stain like
    red cells, not like nuclei. Comparing each blob with this level, rather than with the
    strongest nucleus, means one dark blob (stain debris, a dark lymphocyte) cannot make every
    other nucleus look weak.
    """
    size = 2 * HALO_PX + 1
    near = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    outside = stain[near == 0]
    return float(np.percentile(outside, BACKGROUND_PERCENTILE)) if outside.size else 0.0


def reference_strength(strengths: List[float]) -> float:
    """The stain of the field's strongest ordinary nucleus: the strongest, unless it stands
    more than OUTLIER_GAP above the next (stain debris, a dark clump), and so on down.

    Overlapping red cells can pass the nucleus threshold; they stain well under the nuclei of
    the same field (at most 0.63 of the strongest on the trainer's fields, against at least
    0.77 for real nuclei), which the relative rule uses. Taking the plain maximum let one dark
    blob make every other nucleus look weak. Several dark nuclei (dense lymphocytes) do set
    the reference, so paler blasts beside them may still be dropped: not measured on real
    smears.
    """
    ranked = sorted(strengths, reverse=True)
    i = 0
    while i + 1 < len(ranked) and ranked[i] > OUTLIER_GAP * ranked[i + 1]:
        i += 1
    return ranked[i] if ranked else 0.0


def _cell(n: _Nucleus, scale: float) -> Cell:
    """Centre and size of the nucleus; the box also covers the cell's merged fragments."""
    m = cv2.moments(n.contour)
    x, y, w, h = cv2.boundingRect(np.concatenate([n.contour, *n.fragments]))
    return Cell(box=(int(round(x / scale)), int(round(y / scale)),
                     int(round(w / scale)), int(round(h / scale))),
                centre=(m["m10"] / m["m00"] / scale, m["m01"] / m["m00"] / scale),
                diameter=math.sqrt(4 * cv2.contourArea(n.contour) / math.pi) / scale)


def detect_cells(image_bgr: np.ndarray, cfg: AnalysisConfig) -> List[Cell]:
    """Nuclei in a field, sorted top-to-bottom then left-to-right (the caller caps the count).

    A blob whose core is too small to seed a nucleus next to a larger one that stained
    material joins it to (a nucleus lobe, or a fragment on a thin bridge) is part of that
    cell, not a cell of its own (see `_host`). Raises ValueError for something that is not an
    HxWx3 uint8 image.
    """
    _check_image(image_bgr)
    scale = work_scale(image_bgr.shape, cfg)
    work = image_bgr if scale == 1.0 else cv2.resize(
        image_bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    min_d, max_d = cfg.min_cell_diameter_px * scale, cfg.max_cell_diameter_px * scale
    stain = stain_channel(work)
    mask = nucleus_mask(stain, min_d)
    padded = cv2.copyMakeBorder(stain, PAD, PAD, PAD, PAD, cv2.BORDER_CONSTANT, value=0)
    blobs = _blobs(mask, cell_regions(stain, mask), padded, min_d)
    largest: Dict[int, float] = {}
    for b in blobs:
        largest[b.region] = max(largest.get(b.region, 0.0), b.peak)
    nuclei: List[_Nucleus] = []
    fragments: List[_Blob] = []
    for b in blobs:
        if b.peak < SPLIT_CORE_FRACTION * largest[b.region]:
            fragments.append(b)
        else:
            nuclei.extend(_nuclei(b, padded, min_d, max_d))
    hosts = list(nuclei)  # fragments join nuclei, never other fragments
    for f in fragments:
        host = _host(f, hosts)
        if host is None:
            nuclei.extend(_nuclei(f, padded, min_d, max_d))  # a small cell of its own
        else:
            host.fragments.append(f.contour)
    floor = max(BACKGROUND_CONTRAST * background_stain(stain, mask),
                RELATIVE_STAIN * reference_strength([n.strength for n in nuclei]))
    cells = [_cell(n, scale) for n in nuclei if n.strength >= floor]
    cells.sort(key=lambda c: (c.box[1], c.box[0]))
    return cells
