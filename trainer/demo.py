"""`demo-model`: the SYNTHETIC default model under models/default, made by one seeded command.

It exists so the daemon runs out of the box; it has never seen a real cell and detects nothing.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from edge.model_meta import ModelMeta
from trainer import TrainerError

log = logging.getLogger("trainer")


def _fresh(path: Path, marker: str) -> None:
    """Remove a previous demo output, but only if it is one (has `marker`)."""
    if path.exists():
        if not (path / marker).exists():
            raise TrainerError(f"{path} exists and is not a previous demo output; choose another --work")
        shutil.rmtree(path)


def make_demo_model(out: Path, work: Path, n: int, epochs: int, seed: int, progress: bool = True) -> ModelMeta:
    from trainer import evaluate, export, train
    from trainer.synth import generate

    data, run_dir = Path(work) / "data", Path(work) / "run"
    _fresh(data, "SYNTHETIC.txt")
    _fresh(run_dir, "config.json")
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
