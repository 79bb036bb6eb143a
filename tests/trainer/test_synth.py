"""`synth`: layouts, sizes, determinism, the SYNTHETIC marking, and class differences."""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest

from trainer.synth import cell_params, generate


def _digest(folder) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_idb2_layout(idb2_set) -> None:
    tifs = sorted(idb2_set.glob("Im*_*.tif"))
    assert len(tifs) == 40
    assert sum(p.stem.endswith("_1") for p in tifs) == 20
    img = cv2.imread(str(tifs[0]))
    assert img.shape == (257, 257, 3)
    assert "SYNTHETIC" in (idb2_set / "SYNTHETIC.txt").read_text()
    assert json.loads((idb2_set / "synthetic.json").read_text())["synthetic"] is True


def test_cnmc_layout(cnmc_set) -> None:
    alls, hems = sorted((cnmc_set / "all").glob("*.bmp")), sorted((cnmc_set / "hem").glob("*.bmp"))
    assert len(alls) == 18 and len(hems) == 18
    assert all(p.name.startswith("UID_H") and p.name.endswith("_hem.bmp") for p in hems)
    assert all(not p.name.startswith("UID_H") and p.name.endswith("_all.bmp") for p in alls)
    img = cv2.imread(str(alls[0]))
    assert img.shape == (450, 450, 3)
    assert (img[:5, :5] == 0).all(), "segmented cells sit on black"


def test_idb1_layout(idb1_set) -> None:
    jpgs = sorted(idb1_set.glob("Im*.jpg"))
    assert len(jpgs) == 4
    for p in jpgs:
        img = cv2.imread(str(p))
        assert img.shape == (1944, 2592, 3)
        centres = [tuple(map(int, ln.split())) for ln in p.with_suffix(".xyc").read_text().splitlines()]
        if p.stem.endswith("_1"):
            assert centres, "an ALL field lists at least one blast centre"
            for x, y in centres:
                assert 0 <= x < 2592 and 0 <= y < 1944
                patch = img[y - 5:y + 5, x - 5:x + 5].astype(int)
                assert patch[..., 1].mean() < 140, "a blast centre lies on a stained nucleus"
        else:
            assert centres == []


def test_deterministic(tmp_path) -> None:
    generate(tmp_path / "a", "all-idb2", 6, seed=11)
    generate(tmp_path / "b", "all-idb2", 6, seed=11)
    generate(tmp_path / "c", "all-idb2", 6, seed=12)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_classes_differ_like_real_cells() -> None:
    rng = np.random.default_rng(0)
    blasts = [cell_params(rng, True, 100.0) for _ in range(400)]
    normal = [cell_params(rng, False, 100.0) for _ in range(400)]

    def mean(ps, f):
        return float(np.mean([getattr(p, f) for p in ps]))

    assert mean(blasts, "radius") > mean(normal, "radius") * 1.15  # larger
    assert mean(blasts, "nc_ratio") > mean(normal, "nc_ratio")  # less cytoplasm
    assert mean(blasts, "nucleoli") > 3 * mean(normal, "nucleoli")  # visible nucleoli
    assert mean(blasts, "chromatin_cell") < mean(normal, "chromatin_cell")  # finer chromatin
    assert mean(blasts, "irregular") > 2 * mean(normal, "irregular")  # irregular outline
    # overlapping, not separable by one feature: some normal cells are larger than some blasts
    assert max(p.radius for p in normal) > min(p.radius for p in blasts)


def test_bad_arguments(tmp_path) -> None:
    with pytest.raises(ValueError, match="layout"):
        generate(tmp_path, "png-folder", 4, 0)
    with pytest.raises(ValueError, match="at least 2"):
        generate(tmp_path, "cnmc", 1, 0)
