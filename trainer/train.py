"""`train`: validate the set, split before augmenting, train, and record the run for audit.

RUN_DIR gets config.json (exact settings), data.json (counts, fingerprint, per-file sha256),
splits.json, environment.json (versions, oneDNN), history.json/.csv and model.keras.
"""

from __future__ import annotations

import json
import logging
import sys
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np

from trainer import LABELS, POSITIVE_LABEL, TrainerError
from trainer.datasets import load
from trainer.synth import SYNTHETIC_NOTE

log = logging.getLogger("trainer")


@dataclass
class TrainConfig:
    data: str
    out: str
    format: str = "auto"
    arch: str = "paper"
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-4
    lr_decay: float = 1e-6
    seed: int = 2
    val_frac: float = 0.15
    test_frac: float = 0.15
    test_list: Optional[str] = None
    patience: int = 8
    augment: bool = True
    class_weight: bool = True
    deterministic: bool = False
    cache_mb: int = 1024


def write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrainerError(f"{path} is missing: is {path.parent} a run directory made by `train`?") from None
    except json.JSONDecodeError as exc:
        raise TrainerError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None


RUN_CONFIG_KEYS = ("data", "seed", "arch")


def read_run_config(run_dir: Path) -> dict:
    """`config.json` of a run, with the keys evaluate and export rely on checked."""
    cfg = read_json(Path(run_dir) / "config.json")
    missing = [k for k in RUN_CONFIG_KEYS if k not in cfg] if isinstance(cfg, dict) else list(RUN_CONFIG_KEYS)
    if missing:
        raise TrainerError(f"{run_dir}/config.json lacks {', '.join(missing)}: it was not written by this "
                           "trainer's `train`; train again")
    return cfg


def load_model(run_dir: Path):
    """The run's model.keras; a missing, truncated or corrupt file is the user's to fix, not a traceback."""
    import keras

    path = Path(run_dir) / "model.keras"
    if not path.is_file():
        raise TrainerError(f"{path} is missing: the training run did not finish; train again")
    try:
        if not zipfile.is_zipfile(path):
            raise ValueError("not a complete .keras zip archive")
        return keras.models.load_model(path)
    except Exception as exc:  # Keras raises many kinds (ValueError, KeyError, OSError, ...) on a damaged file
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise TrainerError(f"{path} cannot be loaded ({detail}): it is truncated or damaged; train again") from None


def _check_out(out: Path) -> None:
    """A run directory holds exactly one run: stale files (SYNTHETIC.txt, splits, a model) from an
    earlier run would be taken for this one's."""
    if out.exists() and not out.is_dir():
        raise TrainerError(f"--out {out} is a file; choose a new --out directory")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if entries:
        what = "already holds a trained run" if "model.keras" in entries else "is not empty"
        raise TrainerError(f"{out} {what} ({', '.join(entries[:5])}); choose a new --out (or an empty directory)")


def _read_test_list(path: str) -> List[str]:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TrainerError(f"cannot read --test-list {path}: {exc.strerror}") from None
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def _check(cfg: TrainConfig) -> None:
    from trainer.models import ARCHS

    if cfg.arch not in ARCHS:
        raise TrainerError(f"unknown --arch {cfg.arch!r}; choose one of {', '.join(ARCHS)}")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise TrainerError("--epochs and --batch-size must be at least 1")
    if not (0 < cfg.val_frac < 0.5 and 0 < cfg.test_frac < 0.5):
        raise TrainerError("--val-frac and --test-frac must be between 0 and 0.5")
    if cfg.lr <= 0:
        raise TrainerError("--lr must be positive")
    if cfg.lr_decay < 0:
        raise TrainerError("--lr-decay must be 0 (off) or positive")


def run(cfg: TrainConfig, progress: bool = True) -> Path:
    """Train one model; returns the run directory."""
    from trainer.splits import split

    _check(cfg)
    out = Path(cfg.out)
    _check_out(out)
    ds = load(Path(cfg.data), cfg.format, progress=progress)
    test_list = _read_test_list(cfg.test_list) if cfg.test_list is not None else None
    splits = split(ds, val_frac=cfg.val_frac, test_frac=cfg.test_frac, seed=cfg.seed, test_list=test_list)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", asdict(cfg))
    write_json(out / "splits.json", splits)
    data = ds.summary()
    data["split_counts"] = {k: len(v) for k, v in splits.items()}
    data["labels"], data["positive_label"] = LABELS, POSITIVE_LABEL
    data["files"] = [{"path": s.path, "label": LABELS[s.label], "subject": s.subject,
                      "sha256": ds.sha256[s.path]} for s in ds.samples]
    write_json(out / "data.json", data)
    if ds.synthetic:
        (out / "SYNTHETIC.txt").write_text(SYNTHETIC_NOTE, encoding="utf-8")
    log.info("data: %s %s, %d images %s; split train/val/test = %d/%d/%d", ds.format, ds.root, len(ds.samples),
             ds.counts(), len(splits["train"]), len(splits["val"]), len(splits["test"]))

    from trainer.env import environment, setup_tensorflow

    setup_tensorflow(cfg.seed, cfg.deterministic)
    import keras

    from trainer.models import build
    from trainer.pipeline import (
        PAPER_INPUT,
        ImageStore,
        class_weights,
        labels_for,
        one_hot,
        split_arrays,
        train_dataset,
    )

    env = environment()
    write_json(out / "environment.json", env)
    log.info("tensorflow %s, oneDNN %s, GPUs: %s", env["packages"]["tensorflow"],
             "on" if env["onednn"].get("enabled") else "off", ", ".join(env["gpus"]) or "none")
    spec = PAPER_INPUT
    label_of = {s.path: s.label for s in ds.samples}
    store = ImageStore(ds.root, spec, cfg.cache_mb)
    y_train = labels_for(splits["train"], label_of)
    train_ds = train_dataset(store, splits["train"], y_train, cfg.batch_size, cfg.seed, augment=cfg.augment)
    x_val, y_val = split_arrays(store, splits["val"], label_of)
    model = build(cfg.arch, (spec.height, spec.width, 3), len(LABELS), cfg.lr, cfg.lr_decay)
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience, restore_best_weights=True),
        keras.callbacks.CSVLogger(str(out / "history.csv")),
    ]
    hist = model.fit(
        train_ds, validation_data=(x_val, one_hot(y_val)), epochs=cfg.epochs, callbacks=callbacks,
        class_weight=class_weights(y_train) if cfg.class_weight else None,
        verbose=1 if progress and sys.stdout.isatty() else 2,  # 2 = one line per epoch
    )
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    best = int(np.argmin(history["val_loss"])) if history.get("val_loss") else len(history.get("loss", [])) - 1
    write_json(out / "history.json", {"epochs_run": len(history.get("loss", [])), "best_epoch": best + 1,
                                      "history": history})
    model.save(out / "model.keras")
    log.info("trained %s for %d epochs (best %d); run saved in %s", cfg.arch, len(history.get("loss", [])),
             best + 1, out)
    return out
