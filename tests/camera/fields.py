"""SYNTHETIC blood-smear fields for camera/analysis tests (not real data, not ALL-IDB).

A stop-gap and a second opinion beside the trainer's `synth --layout all-idb1`: a grey-pink
background, pale red cells, and purple-nucleus leukocytes (some touching in pairs), with the
leukocyte centres returned as ground truth. Deterministic per seed.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, List, Tuple

import cv2
import numpy as np

BACKGROUND_BGR = (144, 159, 162)  # smear background per docs (ALL-IDB1 fill colour)


def _disc(img: np.ndarray, centre: Tuple[int, int], axes: Tuple[int, int], angle: float,
          colour: Tuple[int, int, int]) -> None:
    cv2.ellipse(img, centre, axes, angle, 0, 360, colour, -1, cv2.LINE_AA)


def make_field(seed: int, size: Tuple[int, int] = (2592, 1944), leukocytes: int = 8,
               pairs: int = 2, red_cells: int = 180) -> Tuple[np.ndarray, List[Tuple[float, float]]]:
    """(BGR field, leukocyte centres [(x, y)]); `pairs` of the leukocytes touch a neighbour."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = np.empty((h, w, 3), np.uint8)
    img[:] = BACKGROUND_BGR
    for _ in range(red_cells):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        r = int(rng.integers(38, 52))
        tint = rng.integers(-12, 12)
        _disc(img, c, (r, int(r * rng.uniform(0.85, 1.0))), rng.uniform(0, 180),
              (int(150 + tint), int(135 + tint), int(200 + tint)))
        _disc(img, c, (r // 3, r // 3), 0, (int(160 + tint), int(150 + tint), int(190 + tint)))
    centres: List[Tuple[float, float]] = []
    margin = 160
    singles = leukocytes - 2 * pairs
    for i in range(singles + pairs):
        for _ in range(200):  # find a spot away from other leukocytes
            cx, cy = int(rng.integers(margin, w - margin)), int(rng.integers(margin, h - margin))
            if all((cx - x) ** 2 + (cy - y) ** 2 > 360 ** 2 for x, y in centres):
                break
        r = int(rng.integers(55, 80))
        group = [(cx, cy)]
        if i >= singles:  # a touching pair: second nucleus overlapping slightly
            ang = rng.uniform(0, 2 * np.pi)
            d = 2 * r * rng.uniform(0.8, 0.95)
            group.append((int(cx + d * np.cos(ang)), int(cy + d * np.sin(ang))))
        for gx, gy in group:
            _disc(img, (gx, gy), (int(r * 1.35), int(r * 1.3)), rng.uniform(0, 180), (205, 175, 170))
        for gx, gy in group:
            shade = int(rng.integers(-25, 25))
            _disc(img, (gx, gy), (r, int(r * rng.uniform(0.8, 1.0))), rng.uniform(0, 180),
                  (int(150 + shade), int(60 + shade // 2), int(110 + shade)))
            centres.append((float(gx), float(gy)))
    img = cv2.GaussianBlur(img, (7, 7), 0)
    noise = rng.normal(0, 4, img.shape)
    img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return img, centres


@contextlib.contextmanager
def recording_white_cells() -> Iterator[List[List[Tuple[float, float]]]]:
    """While active, every `trainer.synth` field appends its white-cell centres to the list.

    `.xyc` files mark blasts only (as in ALL-IDB1); precision needs every white cell. The
    generator hands them to its smear painter (`_smear(..., avoid, ...)`), which is wrapped here.
    """
    import trainer.synth as synth

    placed: List[List[Tuple[float, float]]] = []
    original = synth._smear

    def recording_smear(rng, h, w, stain, density, avoid, rbc_r):  # type: ignore[no-untyped-def]
        placed.append([(float(x), float(y)) for x, y, _ in avoid])
        return original(rng, h, w, stain, density, avoid, rbc_r)

    synth._smear = recording_smear
    try:
        yield placed
    finally:
        synth._smear = original
