"""`demo-model`: the SYNTHETIC default model under models/default, made by one seeded command.

It exists so the daemon runs out of the box; it has never seen a real cell and detects nothing.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from edge.model_meta import ModelMeta
from trainer import TrainerError

log = logging.getLogger("trainer")


MARKER = "DEMO-WORK.txt"  # written into --work by demo-model: what is below it is the demo's to replace
MARKER_NOTE = ("Working directory of `python -m trainer demo-model`: its data/ and run/ are SYNTHETIC and are\n"
               "deleted and remade on every demo-model run. Do not keep anything else here.\n")


def _trained_on_real_data(run_dir: Path) -> bool:
    try:
        return json.loads((run_dir / "data.json").read_text(encoding="utf-8")).get("synthetic") is False
    except (OSError, ValueError, AttributeError):
        return False


def _claim(work: Path) -> None:
    """Make `work` the demo's, clearing its previous data/ and run/ only if the demo made them.

    Anything else (a real trained run, someone's data) is never deleted: the user picks another --work.
    """
    parts = [work / "data", work / "run"]
    if (work / MARKER).is_file():
        if _trained_on_real_data(work / "run"):
            raise TrainerError(f"{work / 'run'} holds a run on real data; demo-model will not delete it. "
                               "Move it away or choose another --work")
        for d in parts:
            if d.exists():
                shutil.rmtree(d)
    elif any(d.exists() for d in parts):
        raise TrainerError(f"{work} holds data/ or run/ that demo-model did not make (no {MARKER}); "
                           "choose another --work, or delete them yourself if they are expendable")
    work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).write_text(MARKER_NOTE, encoding="utf-8")


def make_demo_model(out: Path, work: Path, n: int, epochs: int, seed: int, progress: bool = True) -> ModelMeta:
    from trainer import evaluate, export, train
    from trainer.synth import generate

    work = Path(work)
    data, run_dir = work / "data", work / "run"
    _claim(work)
    generate(data, "all-idb2", n, seed, progress=progress)
    cfg = train.TrainConfig(data=str(data), out=str(run_dir), format="all-idb2", arch="paper", epochs=epochs,
                            batch_size=16, lr=1e-4, lr_decay=0.0, seed=seed, patience=8,
                            deterministic=True)  # as models/default was made
    train.run(cfg, progress=progress)
    evaluate.run(run_dir)
    meta = export.run(run_dir, Path(out), "fp16", name="all-demo-synthetic", version=f"0.1.0-synthetic-seed{seed}")
    acc = meta.metrics["test"]["accuracy"]
    log.info("demo model: SYNTHETIC, held-out test accuracy %.3f on %d synthetic cells", acc, meta.metrics["test"]["n"])
    if acc >= 0.995:
        log.warning("test accuracy %.3f: the synthetic task is too easy to show anything; check trainer.synth", acc)
    return meta
