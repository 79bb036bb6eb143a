"""Cell detection measured against ground truth: synthetic fields and real C-NMC cells."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

import cv2
import numpy as np
import pytest

from edge.analysis.crop import square_crop
from edge.analysis.detect import detect_cells, reference_strength
from edge.analysis.evaluate import Match, match_centres, read_xyc
from edge.config import AnalysisConfig
from tests.camera.fields import make_field, recording_white_cells

MATCH_RADIUS = 40  # px; the smallest synthetic nucleus is ~60 px across
# Measured by bench/bench_field.py on 40 trainer fields (seed 20261122): blast recall 1.000
# (54/54), white-cell recall and precision 1.000 (149/149); an earlier detector without the
# per-blob threshold scored 0.981 / 0.993 / 0.993. Floors sit a little below.
RECALL_FLOOR = 0.95
PRECISION_FLOOR = 0.95
# C-NMC crops are 450 px at high magnification: cells measure 120-300 px, so the size filter is
# set for that scale, as docs/camera.md tells operators to do. The default (20-400 px) must give
# one cell too: UID_3_1_2's 37 px nucleus tag and UID_H7_1_2's darker second body (joined by a
# thin stained bridge) are fragments of the one cell, not cells of their own.
CNMC_CFGS = {
    "scale-60-440": AnalysisConfig(min_cell_diameter_px=60, max_cell_diameter_px=440),
    "default-20-400": AnalysisConfig(),
}


@pytest.mark.slow
def test_synthetic_fields_recall_and_precision(synth_fields: List[Dict[str, Any]],
                                               analysis_cfg: AnalysisConfig) -> None:
    blasts, cells = Match(0, 0, 0), Match(0, 0, 0)
    for field in synth_fields:
        image = cv2.imread(str(field["jpg"]))
        assert image is not None and image.shape == (1944, 2592, 3)
        found = [c.centre for c in detect_cells(image, analysis_cfg)]
        blasts = blasts + match_centres(found, read_xyc(field["xyc"]), MATCH_RADIUS)
        cells = cells + match_centres(found, field["wbc"], MATCH_RADIUS)
    assert blasts.annotated > 10 and cells.annotated > blasts.annotated
    print(f"blast recall {blasts.recall:.3f} ({blasts.annotated}); white cells: recall "
          f"{cells.recall:.3f} precision {cells.precision:.3f} ({cells.annotated})")
    assert blasts.recall >= RECALL_FLOOR
    assert cells.recall >= RECALL_FLOOR
    assert cells.precision >= PRECISION_FLOOR


def test_touching_nuclei_are_split() -> None:
    """Own SYNTHETIC fields (tests/camera/fields.py) with two touching pairs in each."""
    cfg = AnalysisConfig(min_cell_diameter_px=60)
    total = Match(0, 0, 0)
    for seed in range(3):
        image, centres = make_field(seed, leukocytes=8, pairs=2)
        found = [c.centre for c in detect_cells(image, cfg)]
        total = total + match_centres(found, centres, MATCH_RADIUS)
    assert total.recall >= 0.95, total
    assert total.precision >= 0.95, total


@pytest.mark.parametrize("setting", sorted(CNMC_CFGS))
def test_each_real_cnmc_image_has_one_cell(cnmc_cells: List[Path], setting: str) -> None:
    counts = {}
    for path in cnmc_cells:
        cells = detect_cells(cv2.imread(str(path)), CNMC_CFGS[setting])
        counts[path.name] = len(cells)
        for c in cells:  # the cell is on the image, and its box holds the cell's centre
            x, y, w, h = c.box
            assert x >= 0 and y >= 0 and x + w <= 450 and y + h <= 450
            assert x <= c.centre[0] <= x + w and y <= c.centre[1] <= y + h
    wrong = {n: k for n, k in counts.items() if k != 1}
    assert not wrong, f"images without exactly one cell: {wrong}"
    assert len(counts) == 71


def _body_with_satellite(radius: int, gap: int, bridge: bool, colour: Tuple[int, int, int],
                         background: Tuple[int, int, int]) -> np.ndarray:
    """SYNTHETIC: a 90 px-radius nucleus and a round body `gap` px from its edge, optionally
    joined by a faint stained bridge (as in C-NMC UID_H7_1_2)."""
    img = np.empty((500, 800, 3), np.uint8)
    img[:] = background
    centre = (300 + 90 + gap + radius, 250)
    if bridge:  # stain ~21: above half the nucleus threshold (~34), below the threshold
        cv2.line(img, (300, 250), centre, (160, 120, 140), 14, cv2.LINE_AA)
    cv2.circle(img, (300, 250), 90, (150, 60, 110), -1, cv2.LINE_AA)
    cv2.circle(img, centre, radius, colour, -1, cv2.LINE_AA)
    return cv2.GaussianBlur(img, (5, 5), 0)


DARK = (130, 40, 70)  # BGR: stained more strongly than the main nucleus
PINK = (170, 150, 200)  # BGR: a red-cell-like body, weakly stained


def _free_spots(centres: List[Tuple[float, float]], count: int, size: Tuple[int, int],
                seed: int) -> List[Tuple[int, int]]:
    """`count` points at least 300 px from every cell and from each other."""
    rng = np.random.default_rng(seed)
    spots: List[Tuple[int, int]] = []
    while len(spots) < count:
        p = (int(rng.integers(150, size[0] - 150)), int(rng.integers(150, size[1] - 150)))
        if all((p[0] - x) ** 2 + (p[1] - y) ** 2 > 300 ** 2 for x, y in [*centres, *spots]):
            spots.append(p)
    return spots


def test_reference_strength_skips_outliers_above_a_gap() -> None:
    assert reference_strength([]) == 0.0
    assert reference_strength([5.0]) == 5.0
    assert reference_strength([10.0, 9.0, 8.0, 3.0]) == 10.0          # no outlier
    assert reference_strength([30.0, 10.0, 9.0]) == 10.0              # one debris blob
    assert reference_strength([60.0, 30.0, 10.0, 9.0]) == 10.0        # a staircase of them


@pytest.mark.parametrize("dark, bgr", [
    (1, (160, 0, 60)),  # one stain-debris disc, stained ~2.3x as strongly as the nuclei
])
def test_a_dark_blob_does_not_hide_the_other_cells(dark: int, bgr: Tuple[int, int, int]) -> None:
    """Blobs used to be dropped below 65 % of the field's strongest stain: one dark disc
    removed every real cell of the field. (Several dark nuclei still set the reference:
    see `reference_strength`.)"""
    image, centres = make_field(7, leukocytes=6, pairs=0)
    spots = _free_spots(centres, dark, (image.shape[1], image.shape[0]), seed=7)
    for x, y in spots:
        cv2.circle(image, (x, y), 60, bgr, -1, cv2.LINE_AA)
    found = [c.centre for c in detect_cells(image, AnalysisConfig(min_cell_diameter_px=60))]
    assert match_centres(found, centres, MATCH_RADIUS).recall == 1.0, found
    assert match_centres(found, spots, MATCH_RADIUS).recall == 1.0, found  # round and stained

@pytest.mark.parametrize("background", [(0, 0, 0), (144, 159, 162)], ids=["black", "smear"])
@pytest.mark.parametrize("radius, gap, bridge, colour, boxes", [
    (45, 50, True, DARK, 1),  # small body bridged to the nucleus: one cell, box covers both
    (45, 50, False, DARK, 2),  # no stained connection: a small cell of its own
    (45, 120, True, DARK, 2),  # bridged but further than a nucleus radius away: its own cell
    (70, 50, True, DARK, 2),  # comparable size (own watershed seed): a second cell
    (45, 50, True, PINK, 1),  # weakly stained body: not a cell, and not merged into the box
])
def test_bridged_fragment_belongs_to_its_cell(radius: int, gap: int, bridge: bool,
                                              colour: Tuple[int, int, int], boxes: int,
                                              background: Tuple[int, int, int]) -> None:
    image = _body_with_satellite(radius, gap, bridge, colour, background)
    cells = detect_cells(image, AnalysisConfig(min_cell_diameter_px=60))
    assert len(cells) == boxes, [c.box for c in cells]
    main = min(cells, key=lambda c: c.box[0])
    assert main.centre == pytest.approx((300, 250), abs=3)  # the centre stays on the nucleus
    merged = bridge and boxes == 1 and colour == DARK
    right = main.box[0] + main.box[2]
    assert right == pytest.approx(300 + 90 + gap + 2 * radius if merged else 390, abs=4)


@pytest.mark.parametrize("kind", ["black", "grey", "background", "noise", "white"])
def test_empty_fields_have_no_cells(kind: str, analysis_cfg: AnalysisConfig) -> None:
    rng = np.random.default_rng(1)
    image = {
        "black": np.zeros((480, 640, 3), np.uint8),
        "grey": np.full((480, 640, 3), 128, np.uint8),
        "background": np.full((480, 640, 3), (200, 196, 205), np.uint8),
        "noise": rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
        "white": np.full((480, 640, 3), 255, np.uint8),
    }[kind]
    assert detect_cells(image, analysis_cfg) == []


def test_size_filters_follow_the_config() -> None:
    image, centres = make_field(5, leukocytes=6, pairs=0)
    assert len(detect_cells(image, AnalysisConfig(min_cell_diameter_px=60))) == len(centres)
    # nuclei are 88-160 px across: a minimum above that, or a maximum below it, finds none
    assert detect_cells(image, AnalysisConfig(min_cell_diameter_px=300,
                                              max_cell_diameter_px=400)) == []
    assert detect_cells(image, AnalysisConfig(min_cell_diameter_px=20,
                                              max_cell_diameter_px=60)) == []


@pytest.mark.parametrize("bad", [
    np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8),
    np.zeros((10, 10, 3), np.float32), np.zeros((0, 0, 3), np.uint8), "not an image",
])
def test_bad_input_is_a_clear_error(bad: Any, analysis_cfg: AnalysisConfig) -> None:
    with pytest.raises(ValueError, match="expected"):
        detect_cells(bad, analysis_cfg)


def test_square_crop_centres_and_pads() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, :, 2] = np.arange(200, dtype=np.uint8)[None, :]  # red = x
    crop = square_crop(image, (90, 40, 20, 10), margin=0.25)
    assert crop.shape == (30, 30, 3)
    assert crop[0, 0, 2] == 85 and crop[0, -1, 2] == 114  # centred on x = 100
    edge = square_crop(image, (0, 0, 20, 20), margin=0.5)  # 40 px, half outside
    assert edge.shape == (40, 40, 3)
    assert edge[0, 0, 2] == 0  # replicated border, not black-filled garbage
    with pytest.raises(ValueError):
        square_crop(image, (500, 500, 10, 10), 0.25)


def test_xyc_and_matching(tmp_path: Path) -> None:
    xyc = tmp_path / "Im001_1.xyc"
    xyc.write_text("100 200\n\n300\t400\n", encoding="ascii")
    assert read_xyc(xyc) == [(100.0, 200.0), (300.0, 400.0)]
    m = match_centres([(105, 198), (110, 205), (900, 900)], read_xyc(xyc), radius=20)
    assert (m.true_positives, m.detections, m.annotated) == (1, 3, 2)  # one-to-one
    assert m.precision == pytest.approx(1 / 3) and m.recall == 0.5
    xyc.write_text("12\n", encoding="ascii")
    with pytest.raises(ValueError, match="expected 'x y'"):
        read_xyc(xyc)


@pytest.mark.parametrize("shape", [(1, 5000, 3), (5000, 1, 3), (2, 3000, 3)])
def test_thin_strips_are_analysed_not_crashed(shape: Tuple[int, int, int],
                                              analysis_cfg: AnalysisConfig) -> None:
    # A 1 px tall upload used to scale to 0 rows: cv2.error, quarantined as internal_error.
    assert detect_cells(np.full(shape, 230, np.uint8), analysis_cfg) == []


def test_a_weakly_stained_field_does_not_turn_red_cells_into_nuclei(analysis_cfg: AnalysisConfig) -> None:
    """Field 30 of bench/bench_field.py (seed 20261122): with only a background-contrast floor
    its overlapping red cells passed as 402 nuclei; the relative floor keeps them out."""
    import trainer.synth as synth

    with recording_white_cells() as placed:
        image, _blasts = synth.field(np.random.default_rng([20261122, 30]), True)
    found = [c.centre for c in detect_cells(image, analysis_cfg)]
    match = match_centres(found, placed[-1], MATCH_RADIUS)
    assert match.recall == 1.0 and match.precision >= PRECISION_FLOOR, (match, len(found))
