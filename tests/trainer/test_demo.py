"""`demo-model` only ever deletes what it made itself (runs quickly: synth is stopped before training)."""

from __future__ import annotations

import json

import pytest

from trainer import TrainerError
from trainer.demo import MARKER, make_demo_model


class _Stop(Exception):
    pass


@pytest.fixture
def no_synth(monkeypatch):
    """Stop the demo where it would start generating data."""
    def stop(*args, **kwargs):
        raise _Stop

    monkeypatch.setattr("trainer.synth.generate", stop)


def _run(work, out) -> None:
    make_demo_model(out, work, n=8, epochs=1, seed=7, progress=False)


def test_keeps_a_real_run_in_work(tmp_path, no_synth) -> None:
    run = tmp_path / "work" / "run"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"data": "/data/real", "seed": 2, "arch": "paper"}))
    (run / "data.json").write_text(json.dumps({"synthetic": False}))
    with pytest.raises(TrainerError, match="choose another --work"):
        _run(tmp_path / "work", tmp_path / "model")
    assert (run / "config.json").is_file(), "a run the demo did not make is never deleted"
    (tmp_path / "work" / MARKER).write_text("x")  # even in a demo work dir, a real run is kept
    with pytest.raises(TrainerError, match="holds a run on real data"):
        _run(tmp_path / "work", tmp_path / "model")
    assert (run / "config.json").is_file()


def test_replaces_its_own_work(tmp_path, no_synth) -> None:
    work = tmp_path / "work"
    with pytest.raises(_Stop):
        _run(work, tmp_path / "model")
    assert (work / MARKER).is_file(), "the demo marks the work directory it owns"
    (work / "run").mkdir()
    (work / "run" / "config.json").write_text("{}")
    (work / "data").mkdir()
    with pytest.raises(_Stop):
        _run(work, tmp_path / "model")
    assert not (work / "run").exists() and not (work / "data").exists()
