"""Every bad input the issue lists: the CLI exits != 0 with one message that says what to fix, no traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import List

import pytest

from tests.trainer.conftest import run_cli


def _fails_cleanly(args: List[str], *needles: str) -> str:
    proc = run_cli(args, timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


def _copy(src: Path, dst: Path, pattern: str, n: int) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for p in sorted(src.glob(pattern))[:n]:
        shutil.copy(p, dst / p.name)


def test_missing_dir(tmp_path) -> None:
    _fails_cleanly(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "run")], "does not exist")


def test_empty_dir(tmp_path) -> None:
    (tmp_path / "data").mkdir()
    _fails_cleanly(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run")],
                   "holds no images", "point --data")
    assert not (tmp_path / "run").exists(), "nothing is written for a rejected set"


def test_unreadable_file(tmp_path, idb2_set) -> None:
    _copy(idb2_set, tmp_path / "data", "*.tif", 10)
    (tmp_path / "data" / "Im500_0.tif").write_bytes(b"II*\x00 truncated tiff")
    _fails_cleanly(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run")],
                   "cannot be decoded", "Im500_0.tif", "Replace or remove")


def test_unknown_naming(tmp_path, idb2_set) -> None:
    (tmp_path / "data").mkdir()
    for i, p in enumerate(sorted(idb2_set.glob("*.tif"))[:6]):
        shutil.copy(p, tmp_path / "data" / f"photo_{i}.tif")
    _fails_cleanly(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run")],
                   "cannot tell the layout", "--format")


def test_wrong_format_for_the_names(tmp_path, idb2_set) -> None:
    _fails_cleanly(["train", "--data", str(idb2_set), "--format", "cnmc", "--out", str(tmp_path / "run")],
                   "do not follow the cnmc naming", "rename or remove")


def test_one_class_only(tmp_path, idb2_set) -> None:
    _copy(idb2_set, tmp_path / "data", "*_0.tif", 8)
    _fails_cleanly(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run")],
                   "one class only", "add images of class ALL")


def test_too_few_images_to_split(tmp_path, idb2_set) -> None:
    _copy(idb2_set, tmp_path / "data", "*_0.tif", 2)
    _copy(idb2_set, tmp_path / "data", "*_1.tif", 6)
    _fails_cleanly(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run")],
                   "class normal has only 2", "Add data")


def test_bad_test_list(tmp_path, idb2_set) -> None:
    (tmp_path / "test.txt").write_text("Im777_1.tif\n")
    _fails_cleanly(["train", "--data", str(idb2_set), "--test-list", str(tmp_path / "test.txt"),
                    "--out", str(tmp_path / "run")], "--test-list names files not in the data set")


def test_bad_numbers(tmp_path, idb2_set) -> None:
    _fails_cleanly(["train", "--data", str(idb2_set), "--epochs", "0", "--out", str(tmp_path / "run")],
                   "--epochs")


def test_out_already_trained(tmp_path, idb2_set) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.keras").write_bytes(b"x")
    _fails_cleanly(["train", "--data", str(idb2_set), "--out", str(tmp_path / "run")], "choose a new --out")


def test_out_cannot_be_created(tmp_path, idb2_set) -> None:
    (tmp_path / "afile").write_text("x")
    _fails_cleanly(["train", "--data", str(idb2_set), "--out", str(tmp_path / "afile" / "run")],
                   "afile", "check the path")


def test_evaluate_not_a_run(tmp_path) -> None:
    _fails_cleanly(["evaluate", "--run", str(tmp_path)], "config.json is missing", "made by `train`")


@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_run_config_from_elsewhere(tmp_path, command) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"epochs": 3}))
    extra = ["--out", str(tmp_path / "m")] if command == "export" else []
    _fails_cleanly([command, "--run", str(tmp_path), *extra], "config.json lacks data, seed, arch", "train again")


def test_export_before_evaluate(tmp_path, idb2_set) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"data": str(idb2_set), "seed": 1, "arch": "paper"}))
    (run / "splits.json").write_text(json.dumps({"train": [], "val": [], "test": []}))
    (run / "data.json").write_text("{not json")
    _fails_cleanly(["export", "--run", str(run), "--out", str(tmp_path / "m")], "data.json is not valid JSON")
    (run / "data.json").write_text(json.dumps({"files": []}))
    _fails_cleanly(["export", "--run", str(run), "--out", str(tmp_path / "m")],
                   "metrics.json is missing", "python -m trainer evaluate")


@pytest.mark.parametrize("args", [["synth", "--out", "x", "--layout", "all-idb2", "--n", "1"]])
def test_synth_bad_n(tmp_path, args) -> None:
    args = [a if a != "x" else str(tmp_path / "s") for a in args]
    _fails_cleanly(args, "--n must be at least 2")


def test_help_lists_every_command() -> None:
    proc = run_cli(["--help"], timeout=60)
    assert proc.returncode == 0
    for cmd in ("synth", "train", "evaluate", "export", "demo-model"):
        assert cmd in proc.stdout


def test_synth_image_that_cannot_be_written(tmp_path) -> None:
    # cv2.imwrite only returns False: synth used to report "wrote 4 images" and exit 0.
    (tmp_path / "s" / "Im001_1.tif").mkdir(parents=True)
    _fails_cleanly(["synth", "--out", str(tmp_path / "s"), "--layout", "all-idb2", "--n", "4"],
                   "Im001_1.tif", "could not write the image")


@pytest.mark.parametrize("n", ["0", "-5"])
def test_evaluate_bootstrap_must_resample(tmp_path, n) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for f in ("config.json", "splits.json", "data.json"):
        (run / f).write_text("{}")
    (run / "model.keras").write_bytes(b"")
    _fails_cleanly(["evaluate", "--run", str(run), "--bootstrap", n], "--bootstrap must be at least 1")


def _fake_run(tmp_path: Path, data: Path) -> Path:
    """A run directory over `data` that passes every check before the model is loaded."""
    import hashlib

    files = sorted(p.name for p in data.glob("*.tif"))
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"data": str(data), "seed": 1, "arch": "paper"}))
    (run / "splits.json").write_text(json.dumps({"train": files[4:], "val": files[:2], "test": files[2:4]}))
    (run / "data.json").write_text(json.dumps({"synthetic": True, "fingerprint": "x", "format": "all-idb2",
                                               "counts": {}, "files": [
        {"path": f, "label": "ALL" if f.endswith("_1.tif") else "normal",
         "sha256": hashlib.sha256((data / f).read_bytes()).hexdigest()} for f in files]}))
    (run / "metrics.json").write_text(json.dumps({"threshold": {"value": 0.5}, "test": {}}))
    (run / "model.keras").write_bytes(b"")
    return run


def test_evaluate_refuses_changed_images_under_the_same_names(tmp_path, idb2_set) -> None:
    """--data pointing at a set whose files kept their names but not their content."""
    run = _fake_run(tmp_path, idb2_set)
    files = json.loads((run / "splits.json").read_text())["val"] + json.loads((run / "splits.json").read_text())["test"]
    moved = tmp_path / "moved"
    shutil.copytree(idb2_set, moved)
    shutil.copy(moved / files[0], moved / files[3])           # a test file now holds other pixels
    _fails_cleanly(["evaluate", "--run", str(run), "--data", str(moved)],
                   "1 validation/test file(s)", files[3], "differ from the ones this run was trained", "sha256")


@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_truncated_model(tmp_path, idb2_set, command) -> None:
    """A model.keras cut short (disk full, copy interrupted) used to end in a Keras traceback."""
    run = _fake_run(tmp_path, idb2_set)
    (run / "model.keras").write_bytes(b"PK\x03\x04\x14\x00\x00\x00\x08\x00 cut short")
    extra = ["--out", str(tmp_path / "m")] if command == "export" else []
    _fails_cleanly([command, "--run", str(run), *extra], "model.keras cannot be loaded", "train again")


def test_empty_test_list(tmp_path, idb2_set) -> None:
    (tmp_path / "test.txt").write_text("# the held-out images\n\n")
    _fails_cleanly(["train", "--data", str(idb2_set), "--test-list", str(tmp_path / "test.txt"), "--epochs", "1",
                    "--out", str(tmp_path / "run")], "--test-list lists no files")
    assert not (tmp_path / "run").exists()


def test_out_with_stale_files(tmp_path) -> None:
    """A stale SYNTHETIC.txt from an earlier run would mark a real run synthetic (and vice versa)."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "SYNTHETIC.txt").write_text("old")
    _fails_cleanly(["train", "--data", str(tmp_path / "real"), "--out", str(tmp_path / "run")],
                   "is not empty", "SYNTHETIC.txt", "choose a new --out")


def test_evaluate_data_json_with_unknown_labels(tmp_path, idb2_set) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"data": str(idb2_set), "seed": 1, "arch": "paper"}))
    (run / "splits.json").write_text(json.dumps({"train": [], "val": [], "test": []}))
    (run / "data.json").write_text(json.dumps({"files": [{"path": "Im001_0.tif", "label": "HEM"}]}))
    (run / "model.keras").write_bytes(b"")
    _fails_cleanly(["evaluate", "--run", str(run)], "data.json does not list files with labels normal or ALL")
