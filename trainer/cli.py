"""`python -m trainer {synth,train,evaluate,export,demo-model}`.

Expected problems (bad data, missing run files, failed checks) print one `error:` line saying
what to fix and exit 2; no traceback. Research use only.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Optional

from trainer import TrainerError

log = logging.getLogger("trainer")
DEMO_SEED = 7
DEMO_N = 360
DEMO_EPOCHS = 40


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m trainer",
        description="Train, evaluate and export the ALL blood-cell classifier (research use only).",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    s = sub.add_parser("synth", help="write a deterministic SYNTHETIC image set (tests, demos)")
    s.add_argument("--out", required=True, type=Path, help="output directory")
    s.add_argument("--layout", required=True, choices=["all-idb1", "all-idb2", "cnmc"])
    s.add_argument("--n", type=int, default=40, help="number of images, half of them ALL (default 40)")
    s.add_argument("--seed", type=int, default=0)

    t = sub.add_parser("train", help="validate, split (grouped, before augmenting), train; writes RUN_DIR")
    t.add_argument("--data", required=True, help="image set directory")
    t.add_argument("--format", default="auto", choices=["auto", "all-idb1", "all-idb2", "cnmc", "folders"])
    t.add_argument("--out", required=True, help="new (or empty) run directory")
    t.add_argument("--arch", default="paper", choices=["paper", "cnmc2x2"], help="paper = Thanh et al. 2017")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (paper: 1e-4)")
    t.add_argument("--lr-decay", type=float, default=1e-6,
                   help="learning rate / (1 + decay x step), Keras 2's Adam decay (paper: 1e-6; 0 = off)")
    t.add_argument("--seed", type=int, default=2, help="seeds split, augmentation and weights (paper: 2)")
    t.add_argument("--val-frac", type=float, default=0.15)
    t.add_argument("--test-frac", type=float, default=0.15)
    t.add_argument("--test-list", help="file of paths (relative to --data) that form the fixed test split, "
                                       "e.g. the originals' 20 ALL-IDB1 test images")
    t.add_argument("--patience", type=int, default=8, help="early stopping on validation loss")
    t.add_argument("--no-augment", dest="augment", action="store_false")
    t.add_argument("--no-class-weight", dest="class_weight", action="store_false")
    t.add_argument("--deterministic", action="store_true", help="reproducible CPU runs (slower)")
    t.add_argument("--cache-mb", type=int, default=1024, help="memory for decoded images")

    e = sub.add_parser("evaluate", help="test metrics with 95%% bootstrap CIs, ROC and confusion plots")
    e.add_argument("--run", required=True, type=Path)
    e.add_argument("--data", type=Path, help="where the set lives now, if it moved")
    e.add_argument("--target-recall", type=float, help="choose the threshold on validation for this sensitivity")
    e.add_argument("--bootstrap", type=int, default=1000, help="resamples for the intervals")

    x = sub.add_parser("export", help="OpenVINO IR + model.json, with parity and NCS2 operation checks")
    x.add_argument("--run", required=True, type=Path)
    x.add_argument("--out", required=True, type=Path, help="model directory (model.xml/.bin/.json)")
    x.add_argument("--precision", default="fp16", choices=["fp16", "fp32", "int8"])
    x.add_argument("--name", help="model name (default all-<arch>)")
    x.add_argument("--version", help="model version (default: UTC time stamp)")
    x.add_argument("--data", type=Path, help="where the set lives now, if it moved")

    d = sub.add_parser("demo-model", help="synth + train + evaluate + export the SYNTHETIC default model")
    d.add_argument("--out", type=Path, default=Path("models/default"))
    d.add_argument("--work", type=Path, default=Path("runs/demo"),
                   help="synthetic data and run directory (marked DEMO-WORK.txt; its data/ and run/ are replaced)")
    d.add_argument("--n", type=int, default=DEMO_N)
    d.add_argument("--epochs", type=int, default=DEMO_EPOCHS)
    d.add_argument("--seed", type=int, default=DEMO_SEED)
    return p


def _train_cfg(a: argparse.Namespace):
    from trainer.train import TrainConfig

    return TrainConfig(data=a.data, out=a.out, format=a.format, arch=a.arch, epochs=a.epochs,
                       batch_size=a.batch_size, lr=a.lr, lr_decay=a.lr_decay, seed=a.seed, val_frac=a.val_frac,
                       test_frac=a.test_frac,
                       test_list=a.test_list, patience=a.patience, augment=a.augment,
                       class_weight=a.class_weight, deterministic=a.deterministic, cache_mb=a.cache_mb)


def _dispatch(a: argparse.Namespace) -> None:
    progress = not a.quiet
    if a.cmd == "synth":
        from trainer.synth import generate

        try:
            s = generate(a.out, a.layout, a.n, a.seed, progress=progress)
        except ValueError as exc:
            raise TrainerError(str(exc)) from None
        log.info("wrote %d SYNTHETIC %s images %s to %s", s["n"], a.layout, s["counts"], a.out)
    elif a.cmd == "train":
        from trainer.train import run

        run(_train_cfg(a), progress=progress)
    elif a.cmd == "evaluate":
        from trainer.evaluate import run

        run(a.run, a.data, a.target_recall, a.bootstrap)
    elif a.cmd == "export":
        from trainer.export import run

        run(a.run, a.out, a.precision, a.name, a.version, a.data)
    elif a.cmd == "demo-model":
        from trainer.demo import make_demo_model

        make_demo_model(a.out, a.work, n=a.n, epochs=a.epochs, seed=a.seed, progress=progress)


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s trainer %(levelname)s %(message)s",
                        stream=sys.stderr)
    args = _parser().parse_args(argv)
    try:
        _dispatch(args)
    except TrainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in ("tensorflow", "keras", "openvino", "nncf", "sklearn", "matplotlib"):
            print(f"error: {exc.name} is not installed; the trainer needs: pip install -e '.[trainer]'",
                  file=sys.stderr)
            return 2
        raise
    except OSError as exc:  # e.g. --out on a read-only disk or under a file
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}; check the path and its permissions", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
