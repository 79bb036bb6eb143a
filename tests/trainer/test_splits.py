"""Grouped splits: no source image, subject or identical content ever crosses train/val/test."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import pytest

from trainer import TrainerError
from trainer.datasets import CNMC_ALIASES, Dataset, Sample, load
from trainer.splits import SPLITS, check_disjoint, groups, split


def _assert_no_crossing(ds, splits) -> None:
    where = {}
    for name in SPLITS:
        for p in splits[name]:
            assert p not in where, f"{p} in two splits"
            where[p] = name
    assert set(where) == {s.path for s in ds.samples}, "every image lands in exactly one split"
    by_subject, by_sha = {}, {}
    for s in ds.samples:
        if s.subject:
            by_subject.setdefault(s.subject, set()).add(where[s.path])
        by_sha.setdefault(ds.sha256[s.path], set()).add(where[s.path])
    assert all(len(v) == 1 for v in by_subject.values()), f"a subject crosses splits: {by_subject}"
    assert all(len(v) == 1 for v in by_sha.values()), "identical images cross splits"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_real_cnmc_subjects_never_cross(cnmc_sample, seed) -> None:
    """Real C-NMC sample (Gupta & Gupta 2019, TCIA, CC BY 3.0)."""
    ds = load(cnmc_sample)
    splits = split(ds, seed=seed, val_frac=0.2, test_frac=0.2)
    _assert_no_crossing(ds, splits)
    for name in SPLITS:
        labels = {s.label for s in ds.samples if s.path in set(splits[name])}
        assert labels == {0, 1}, f"{name} has both classes"


def test_synthetic_cnmc_and_idb2(cnmc_set, idb2_set) -> None:
    for root in (cnmc_set, idb2_set):
        ds = load(root)
        splits = split(ds, seed=4)
        _assert_no_crossing(ds, splits)
        assert len(splits["train"]) > len(splits["test"]) > 0


def test_identical_files_under_two_subjects_are_one_group(tmp_path, cnmc_set) -> None:
    shutil.copytree(cnmc_set, tmp_path / "d")
    src = sorted((tmp_path / "d" / "all").glob("UID_S1_*.bmp"))[0]
    shutil.copy(src, tmp_path / "d" / "all" / "UID_99_1_1_all.bmp")  # the C-NMC alias quirk
    ds = load(tmp_path / "d")
    g = groups(ds)
    gid = {s.path: gi for s, gi in zip(ds.samples, g)}
    assert gid["all/UID_99_1_1_all.bmp"] == gid[f"all/{src.name}"]
    for seed in range(5):
        _assert_no_crossing(ds, split(ds, seed=seed))


def test_leak_detector_fails_on_a_leaky_split(cnmc_set) -> None:
    ds = load(cnmc_set)
    splits = split(ds, seed=0)
    # move one image of a training subject into test: the check must catch it
    moved = next(p for p in splits["train"] if any(q != p and q.split("_")[1] == p.split("_")[1]
                                                  for q in splits["train"]))
    splits["train"].remove(moved)
    splits["test"].append(moved)
    with pytest.raises(AssertionError, match="leak"):
        check_disjoint(ds, splits)


def test_fixed_test_list(idb2_set) -> None:
    ds = load(idb2_set)
    names = sorted(p.name for p in idb2_set.glob("*.tif"))
    fixed = [next(n for n in names if n.endswith("_0.tif")), next(n for n in names if n.endswith("_1.tif"))]
    splits = split(ds, seed=0, test_list=fixed)
    assert splits["test"] == sorted(fixed)
    _assert_no_crossing(ds, splits)
    with pytest.raises(TrainerError, match="not in the data set"):
        split(ds, seed=0, test_list=["Im999_1.tif"])
    with pytest.raises(TrainerError, match="test split has one class only"):
        split(ds, seed=0, test_list=fixed[:1])


def test_too_few_groups(tmp_path, idb2_set) -> None:
    names = sorted(idb2_set.glob("*.tif"))
    for p in [n for n in names if n.stem.endswith("_1")][:5] + [n for n in names if n.stem.endswith("_0")][:2]:
        shutil.copy(p, tmp_path / p.name)
    ds = load(tmp_path)
    with pytest.raises(TrainerError, match="class normal has only 2 independent source group"):
        split(ds)


def test_folders_with_cnmc_names_group_by_subject(tmp_path, cnmc_set) -> None:
    """--format folders on C-NMC-named cells: the subject in the name groups the split too."""
    for cls, folder in (("all", "ALL"), ("hem", "normal")):
        shutil.copytree(cnmc_set / cls, tmp_path / "d" / folder)
    ds = load(tmp_path / "d", "folders")
    assert ds.format == "folders"
    subject_of = {s.path: re.match(r"UID_([^_]+)_", Path(s.path).name).group(1) for s in ds.samples}
    assert all(s.subject == subject_of[s.path] for s in ds.samples), "the subject is read from the name"
    for seed in range(4):
        splits = split(ds, seed=seed)
        where = {}
        for name in SPLITS:
            for p in splits[name]:
                assert where.setdefault(subject_of[p], name) == name, f"subject {subject_of[p]} crosses splits"


def test_synthetic_cnmc_subjects_are_not_real_aliases(cnmc_set) -> None:
    """Synthetic H2/H4/H5/H6 used to be merged into one patient by the real-data alias table."""
    ds = load(cnmc_set)
    raw = {re.match(r"UID_([^_]+)_", Path(s.path).name).group(1) for s in ds.samples}
    aliases = set().union(*CNMC_ALIASES)
    assert not raw & aliases, f"synthetic subject ids collide with real C-NMC aliases: {sorted(raw & aliases)}"
    assert {s.subject for s in ds.samples} == raw, "every synthetic subject stays its own group"
    assert len(set(groups(ds))) == len(raw)


def test_warns_when_one_subject_swamps_a_split(tmp_path, caplog) -> None:
    """A subject is indivisible: one that alone far exceeds its split's share must be reported."""
    samples = [Sample(f"hem/UID_HBIG_{i}_1_hem.bmp", 0, "HBIG") for i in range(20)]
    samples += [Sample(f"hem/UID_H{j}_{i}_1_hem.bmp", 0, f"H{j}") for j in range(6) for i in range(2)]
    samples += [Sample(f"all/UID_{j}_{i}_1_all.bmp", 1, str(j)) for j in range(10) for i in range(3)]
    ds = Dataset(tmp_path, "cnmc", samples, False, {s.path: s.path for s in samples})
    swamped = 0
    for seed in range(12):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="trainer"):
            splits = split(ds, seed=seed)
        big_in = next(k for k in SPLITS if samples[0].path in splits[k])
        warned = [r.getMessage() for r in caplog.records if "HBIG" in r.getMessage()]
        if big_in == "train":
            assert not warned
        else:
            swamped += 1
            assert warned and "skewed" in warned[0] and big_in in warned[0], caplog.text
    assert swamped, "some seed puts the big subject into validation or test"


def test_empty_test_list_is_an_error(idb2_set) -> None:
    ds = load(idb2_set)
    with pytest.raises(TrainerError, match="--test-list lists no files"):
        split(ds, seed=0, test_list=[])
