"""A short training run on the 71 real C-NMC cells (Gupta & Gupta 2019, TCIA,
doi 10.7937/tcia.2019.dc64i46r, CC BY 3.0): loader, subject-grouped split and training on real pixels.

Far too small to learn anything; it proves the path works on real data, not accuracy.
"""

from __future__ import annotations

import json

import pytest

from tests.trainer.conftest import run_cli

pytestmark = pytest.mark.slow


def test_short_run_on_real_cnmc(cnmc_sample, tmp_path) -> None:
    run = tmp_path / "run"
    proc = run_cli(["train", "--data", str(cnmc_sample), "--format", "cnmc", "--out", str(run), "--epochs", "1",
                    "--batch-size", "16", "--val-frac", "0.2", "--test-frac", "0.2", "--seed", "1"], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli(["evaluate", "--run", str(run), "--bootstrap", "100"], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((run / "data.json").read_text())
    assert data["format"] == "cnmc" and data["synthetic"] is False and data["n"] == 71
    assert not (run / "SYNTHETIC.txt").exists()
    splits = json.loads((run / "splits.json").read_text())
    subject = {f["path"]: f["subject"] for f in data["files"]}
    seen = {}
    for name, paths in splits.items():
        for p in paths:
            assert seen.setdefault(subject[p], name) == name, f"subject {subject[p]} crosses splits"
    m = json.loads((run / "metrics.json").read_text())
    assert m["test"]["n"] == len(splits["test"]) > 0
    assert m["synthetic"] is False
