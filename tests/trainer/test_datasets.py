"""Loaders: each layout on synthetic output, the real C-NMC sample, and every bad-input case."""

from __future__ import annotations

import logging
import shutil

import pytest

from trainer import TrainerError
from trainer.datasets import load


def test_idb2_loader(idb2_set) -> None:
    ds = load(idb2_set)
    assert ds.format == "all-idb2" and ds.synthetic
    assert ds.counts() == {"normal": 20, "ALL": 20}
    assert all(s.subject is None for s in ds.samples)
    assert len(ds.fingerprint()) == 64


def test_idb1_loader(idb1_set) -> None:
    ds = load(idb1_set)
    assert ds.format == "all-idb1"
    assert sum(ds.counts().values()) == 4


def test_idb1_fields_feed_the_model(idb1_set) -> None:
    from trainer.pipeline import PAPER_INPUT, ImageStore, arrays

    ds = load(idb1_set)
    x = arrays(ImageStore(idb1_set, PAPER_INPUT), [s.path for s in ds.samples])
    assert x.shape == (4, 100, 100, 3) and x.dtype.name == "float32"
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.std() > 0.01


def test_cnmc_loader_synthetic(cnmc_set) -> None:
    ds = load(cnmc_set)
    assert ds.format == "cnmc"
    assert ds.counts() == {"normal": 18, "ALL": 18}
    assert all(s.subject for s in ds.samples)
    assert all(s.subject.startswith("H") == (s.label == 0) for s in ds.samples)


def test_cnmc_loader_real_sample(cnmc_sample) -> None:
    """71 real C-NMC 2019 cells (Gupta & Gupta 2019, TCIA, doi 10.7937/tcia.2019.dc64i46r, CC BY 3.0)."""
    ds = load(cnmc_sample)
    assert ds.format == "cnmc" and not ds.synthetic
    assert ds.counts() == {"normal": 37, "ALL": 34}
    index = {}
    for line in (cnmc_sample / "INDEX.tsv").read_text().splitlines()[1:]:
        f, _fold, cls, subject, sha = line.split("\t")
        index[f] = (cls, subject, sha)
    for s in ds.samples:
        cls, subject, sha = index[s.path]
        assert s.label == (cls == "all")
        assert ds.sha256[s.path] == sha
        # aliased subjects (20/21 in the full set) are one patient
        assert s.subject == subject or subject in s.subject.split("+")
    assert {s.subject for s in ds.samples if "UID_21_" in s.path} == {"20+21"}
    assert len({s.subject for s in ds.samples if s.label == 1}) >= 3


def test_folders_loader(tmp_path, idb2_set) -> None:
    for sub in ("ALL", "normal"):
        (tmp_path / sub).mkdir()
    for p in sorted(idb2_set.glob("*.tif"))[:10]:
        shutil.copy(p, tmp_path / ("ALL" if p.stem.endswith("_1") else "normal") / f"cell-{p.stem}.tif")
    ds = load(tmp_path)
    assert ds.format == "folders"
    assert sum(ds.counts().values()) == 10 and min(ds.counts().values()) > 0


def test_missing_dir(tmp_path) -> None:
    with pytest.raises(TrainerError, match="does not exist"):
        load(tmp_path / "nope")


def test_empty_dir(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(TrainerError, match="holds no images"):
        load(tmp_path)


def test_unknown_naming(tmp_path, idb2_set) -> None:
    for i, p in enumerate(sorted(idb2_set.glob("*.tif"))[:4]):
        shutil.copy(p, tmp_path / f"cell{i}.tif")
    with pytest.raises(TrainerError, match="cannot tell the layout"):
        load(tmp_path)


def test_some_names_break_the_layout(tmp_path, idb2_set) -> None:
    for p in sorted(idb2_set.glob("*.tif"))[:6]:
        shutil.copy(p, tmp_path / p.name)
    shutil.copy(p, tmp_path / "Im999_cell.tif")
    with pytest.raises(TrainerError, match=r"1 image file\(s\).*do not follow the all-idb2 naming.*Im999_cell.tif"):
        load(tmp_path)


def test_unreadable_file(tmp_path, idb2_set) -> None:
    for p in sorted(idb2_set.glob("*.tif"))[:6]:
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "Im900_1.tif").write_bytes(b"this is not a TIFF")
    with pytest.raises(TrainerError, match=r"cannot be decoded: Im900_1.tif \(not a readable image"):
        load(tmp_path)


def test_one_class_only(tmp_path, idb2_set) -> None:
    for p in sorted(idb2_set.glob("*_1.tif"))[:6]:
        shutil.copy(p, tmp_path / p.name)
    with pytest.raises(TrainerError, match="one class only.*add images of class normal"):
        load(tmp_path)


def test_cnmc_name_in_wrong_folder(tmp_path, cnmc_set) -> None:
    shutil.copytree(cnmc_set, tmp_path / "d")
    src = next((tmp_path / "d" / "hem").glob("*.bmp"))
    shutil.move(src, tmp_path / "d" / "all" / src.name)
    with pytest.raises(TrainerError, match="do not follow the cnmc naming"):
        load(tmp_path / "d")


def test_unknown_format_argument(idb2_set) -> None:
    with pytest.raises(TrainerError, match="unknown --format"):
        load(idb2_set, "kaggle")


def test_deepest_class_folder_and_conflicts(tmp_path, idb2_set) -> None:
    """`1/normal/x.tif` used to be labelled ALL (the first class name, "1", won)."""
    cells = sorted(idb2_set.glob("*.tif"))
    for i, p in enumerate(cells[:8]):
        cls = "ALL" if p.stem.endswith("_1") else "normal"
        dst = tmp_path / "ok" / "batch" / ("blasts" if cls == "ALL" else "normal") / cls / f"c{i}.tif"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dst)
    ds = load(tmp_path / "ok", "folders")
    assert all(s.label == (s.path.split("/")[2] == "ALL") for s in ds.samples)
    for i, p in enumerate(cells[:8]):
        dst = tmp_path / "bad" / "1" / ("ALL" if i < 4 else "normal") / f"c{i}.tif"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dst)
    with pytest.raises(TrainerError, match=r"4 image file\(s\).*class folders of both classes.*1/normal/c4.tif"):
        load(tmp_path / "bad", "folders")


def test_synthetic_marker_below_the_root(tmp_path, idb2_set, caplog) -> None:
    """A synth set copied into a subfolder of real data still makes the whole set synthetic."""
    shutil.copytree(idb2_set, tmp_path / "d" / "extra")
    assert not (tmp_path / "d" / "SYNTHETIC.txt").exists()
    with caplog.at_level(logging.WARNING, logger="trainer"):
        ds = load(tmp_path / "d")
    assert ds.synthetic and ds.summary()["synthetic"] is True
    assert "SYNTHETIC" in caplog.text and "extra/SYNTHETIC.txt" in caplog.text
