"""The Thanh et al. (IJCTE 2018) augmentation set, on uint8 BGR source images, without the originals' bugs.

Applied on the fly to the training split only (after the split), before edge.preprocess.
Fixes: the blur is spatial only (never across the colour axis); the translation is a fraction of
the image (the cell stays in frame at any input size); one generator is drawn from for every
choice, never re-seeded, so the rotation angles differ.
"""

from __future__ import annotations

from typing import Optional, Tuple

import cv2
import numpy as np

AUGMENTATIONS = ("original", "grayscale", "equalize_y", "flip_v", "flip_h", "blur", "translate", "shear", "rotate")
# the originals made ten rotations per image, one of each other kind
WEIGHTS = np.array([1, 1, 1, 1, 1, 1, 1, 1, 3], float) / 11.0
MAX_SHIFT = 0.08  # of width/height
MAX_SHEAR = 0.15


def background_colour(img: np.ndarray) -> Tuple[int, int, int]:
    """Median of the border pixels: smear background for ALL-IDB, black for C-NMC."""
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    b, g, r = np.median(border, axis=0)
    return int(b), int(g), int(r)


def _warp(img: np.ndarray, m: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=background_colour(img))


def apply(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """One augmentation of an HxWx3 uint8 BGR image; random parameters come from `rng`."""
    h, w = img.shape[:2]
    if kind == "original":
        return img
    if kind == "grayscale":
        return cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    if kind == "equalize_y":
        yuv = cv2.cvtColor(img, cv2.COLOR_BGR2YUV)
        yuv[:, :, 0] = cv2.equalizeHist(yuv[:, :, 0])
        return cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR)
    if kind == "flip_v":
        return np.ascontiguousarray(img[::-1])
    if kind == "flip_h":
        return np.ascontiguousarray(img[:, ::-1])
    if kind == "blur":
        sigma = rng.uniform(0.5, 1.5) * max(h, w) / 100.0  # about 0.5-1.5 px at model size
        return cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma)
    if kind == "translate":
        dx, dy = rng.uniform(-MAX_SHIFT, MAX_SHIFT) * w, rng.uniform(-MAX_SHIFT, MAX_SHIFT) * h
        return _warp(img, np.float32([[1, 0, dx], [0, 1, dy]]))
    if kind == "shear":
        s = rng.uniform(-MAX_SHEAR, MAX_SHEAR)
        return _warp(img, np.float32([[1, s, -s * h / 2], [0, 1, 0]]))
    if kind == "rotate":
        angle = rng.uniform(0.0, 360.0)
        return _warp(img, cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0))
    raise ValueError(f"unknown augmentation {kind!r}; choose from {AUGMENTATIONS}")


def random_augment(img: np.ndarray, rng: np.random.Generator, kind: Optional[str] = None) -> np.ndarray:
    """Pick one augmentation (weighted like the originals' set) and apply it."""
    if kind is None:
        kind = str(rng.choice(AUGMENTATIONS, p=WEIGHTS))
    return apply(img, kind, rng)
