"""Augmentation: shapes and ranges, varied rotation angles, the cell stays in frame, no colour-axis blur."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from trainer.augment import AUGMENTATIONS, apply, background_colour, random_augment
from trainer.synth import cnmc_cell, single_cell


@pytest.fixture(scope="module")
def cell() -> np.ndarray:
    return cnmc_cell(np.random.default_rng(0), True)  # synthetic, on black


def _foreground(img: np.ndarray) -> np.ndarray:
    return img.max(axis=2) > 20


@pytest.mark.parametrize("kind", AUGMENTATIONS)
def test_shape_dtype_range(cell, kind) -> None:
    rng = np.random.default_rng(1)
    for img in (cell, single_cell(np.random.default_rng(2), False)):
        out = apply(img, kind, rng)
        assert out.shape == img.shape and out.dtype == np.uint8
        assert out.flags["C_CONTIGUOUS"]
        if kind != "original":
            assert not np.array_equal(out, img), f"{kind} changed nothing"


@pytest.mark.parametrize("kind", ["translate", "shear", "rotate", "flip_h", "flip_v"])
def test_cell_stays_in_frame(cell, kind) -> None:
    rng = np.random.default_rng(3)
    area = _foreground(cell).sum()
    for _ in range(20):
        out = apply(cell, kind, rng)
        fg = _foreground(out)
        assert abs(int(fg.sum()) - int(area)) < 0.12 * area, "the cell lost part of itself"
        edge = np.concatenate([fg[:3].ravel(), fg[-3:].ravel(), fg[:, :3].ravel(), fg[:, -3:].ravel()])
        assert not edge.any(), "the cell touches the frame"


def test_rotation_angles_vary() -> None:
    """The originals re-seeded before every draw: all ten rotations used one angle."""
    img = np.zeros((101, 101, 3), np.uint8)
    cv2.line(img, (50, 50), (95, 50), (255, 255, 255), 3)  # a bar from the centre to the right
    rng = np.random.default_rng(4)
    angles = []
    for _ in range(10):
        out = apply(img, "rotate", rng)
        ys, xs = np.nonzero(out[..., 0] > 128)
        far = np.argmax((xs - 50) ** 2 + (ys - 50) ** 2)
        angles.append(np.degrees(np.arctan2(50 - ys[far], xs[far] - 50)) % 360)
    rounded = {round(a / 5) for a in angles}
    assert len(rounded) >= 8, f"rotation angles barely vary: {sorted(angles)}"


def test_blur_is_spatial_only() -> None:
    """The originals blurred across the colour axis too; a pure-blue image must stay pure blue."""
    img = np.zeros((64, 64, 3), np.uint8)
    img[16:48, 16:48, 0] = 255
    out = apply(img, "blur", np.random.default_rng(0))
    assert out[..., 1:].max() == 0
    assert 0 < out[15, 32, 0] < 255, "edges are blurred"


def test_grayscale_and_equalize() -> None:
    img = single_cell(np.random.default_rng(5), True)
    g = apply(img, "grayscale", np.random.default_rng(0))
    assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 1], g[..., 2])
    e = apply(img, "equalize_y", np.random.default_rng(0))
    y = cv2.cvtColor(e, cv2.COLOR_BGR2YUV)[..., 0]
    y0 = cv2.cvtColor(img, cv2.COLOR_BGR2YUV)[..., 0]
    assert np.ptp(y) >= np.ptp(y0) and y.std() > 1.2 * y0.std(), "equalisation stretches the Y histogram"


def test_fill_colour_is_the_background() -> None:
    smear = single_cell(np.random.default_rng(6), False)
    bg = np.array(background_colour(smear))
    out = apply(smear, "rotate", np.random.default_rng(7))
    corner = out[0, 0].astype(int)
    assert np.abs(corner - bg).max() < 40, "rotation corners are filled with the smear colour, not black"


def test_random_augment_uses_every_kind(cell, monkeypatch) -> None:
    """Through the real sampling path (random_augment, WEIGHTS): a kind weighted 0 would never appear."""
    import trainer.augment as aug

    drawn = []
    monkeypatch.setattr(aug, "apply", lambda img, kind, rng: drawn.append(kind) or img)
    rng = np.random.default_rng(8)
    n = 2200
    for _ in range(n):
        random_augment(cell, rng)
    counts = {k: drawn.count(k) for k in AUGMENTATIONS}
    assert set(drawn) == set(AUGMENTATIONS), f"never drawn: {[k for k, c in counts.items() if not c]}"
    # rotation is weighted 3x (the originals made ten rotations, one of each other kind)
    for k, c in counts.items():
        want = n * (3 if k == "rotate" else 1) / 11
        assert abs(c - want) < 0.25 * want, counts
    monkeypatch.undo()
    out = random_augment(cell, rng)
    assert out.shape == cell.shape
    with pytest.raises(ValueError, match="unknown augmentation"):
        apply(cell, "mixup", rng)
