"""`evaluate`: held-out test metrics with bootstrap intervals; threshold chosen on validation only.

Writes RUN_DIR/metrics.json, roc.png and confusion.png.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from trainer import LABELS, POSITIVE_LABEL, TrainerError
from trainer.train import load_model, read_json, read_run_config, write_json

log = logging.getLogger("trainer")
POS = LABELS.index(POSITIVE_LABEL)


def point_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> Dict[str, Optional[float]]:
    """Binary metrics for the positive class at `threshold` (None where undefined)."""
    from sklearn.metrics import roc_auc_score

    pred = (p >= threshold).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())

    def div(a: float, b: float) -> Optional[float]:
        return a / b if b else None

    sens, prec = div(tp, tp + fn), div(tp, tp + fp)
    f1 = div(2 * prec * sens, prec + sens) if prec is not None and sens is not None else None
    auc = float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else None
    return {"accuracy": div(tp + tn, len(y)), "sensitivity": sens, "specificity": div(tn, tn + fp),
            "precision": prec, "f1": f1, "roc_auc": auc}


def bootstrap(y: np.ndarray, p: np.ndarray, threshold: float, n: int, seed: int) -> Dict[str, List[float]]:
    """95% percentile intervals from `n` resamples of the test set (undefined resamples skipped)."""
    rng = np.random.default_rng(seed)
    draws: Dict[str, List[float]] = {}
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        for k, v in point_metrics(y[idx], p[idx], threshold).items():
            if v is not None:
                draws.setdefault(k, []).append(v)
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in draws.items()}


def threshold_for_recall(y: np.ndarray, p: np.ndarray, target: float) -> float:
    """Highest threshold whose recall on (validation) data reaches `target`."""
    pos = np.sort(p[y == 1])[::-1]
    if len(pos) == 0:
        raise TrainerError("validation has no positive images; cannot choose a threshold for --target-recall")
    k = int(np.ceil(target * len(pos)))
    return float(pos[max(k, 1) - 1])


def confusion(y: np.ndarray, p: np.ndarray, threshold: float) -> List[List[int]]:
    """Rows = true label, columns = predicted label, in LABELS order."""
    pred = np.where(p >= threshold, POS, 1 - POS)
    true = np.where(y == 1, POS, 1 - POS)
    return [[int(((true == i) & (pred == j)).sum()) for j in range(len(LABELS))] for i in range(len(LABELS))]


def _plots(out: Path, y: np.ndarray, p: np.ndarray, cm: List[List[int]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    if len(set(y.tolist())) == 2:
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label="test")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC ({title})")
    fig.tight_layout()
    fig.savefig(out / "roc.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(np.array(cm), cmap="Blues")
    for i in range(len(LABELS)):
        for j in range(len(LABELS)):
            ax.text(j, i, str(cm[i][j]), ha="center", va="center")
    ax.set(xticks=range(len(LABELS)), yticks=range(len(LABELS)), xticklabels=LABELS, yticklabels=LABELS,
           xlabel="predicted", ylabel="true", title=f"Confusion ({title})")
    fig.tight_layout()
    fig.savefig(out / "confusion.png", dpi=100)
    plt.close(fig)


def predict(model, x: np.ndarray) -> np.ndarray:
    """Positive-class probabilities."""
    return model.predict(x, batch_size=64, verbose=0)[:, POS] if len(x) else np.zeros(0)


def file_labels(run_dir: Path, dmeta: dict) -> Dict[str, int]:
    """Label index per file path, from the run's data.json."""
    try:
        return {f["path"]: LABELS.index(f["label"]) for f in dmeta["files"]}
    except (KeyError, TypeError, ValueError):
        raise TrainerError(f"{run_dir}/data.json does not list files with labels {' or '.join(LABELS)}: "
                           "it was not written by this trainer's `train`; train again") from None


def _check_same_files(root: Path, paths: List[str], dmeta: dict) -> None:
    """Same names are not the same images: a re-exported or re-stained set under the same names
    would give metrics on data the split never held out. Compare content with data.json."""
    expected = {f["path"]: f.get("sha256") for f in dmeta["files"]}
    changed = []
    for p in paths:
        want = expected.get(p)
        if want is None:
            continue
        try:
            got = hashlib.sha256((root / p).read_bytes()).hexdigest()
        except OSError as exc:
            raise TrainerError(f"cannot read {root / p}: {exc.strerror}") from None
        if got != want:
            changed.append(p)
    if changed:
        raise TrainerError(f"{len(changed)} validation/test file(s) under {root} differ from the ones this run "
                           f"was trained and split on (sha256 in data.json), e.g. {changed[0]}; the metrics "
                           "would not be on its held-out data. Pass --data to the original set.")


def run(run_dir: Path, data: Optional[Path] = None, target_recall: Optional[float] = None,
        n_boot: int = 1000) -> dict:
    if target_recall is not None and not 0 < target_recall <= 1:
        raise TrainerError("--target-recall must be in (0, 1]")
    if n_boot < 1:   # 0 or less silently wrote metrics without their 95% intervals
        raise TrainerError("--bootstrap must be at least 1 (resamples for the 95% intervals)")
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    splits = read_json(run_dir / "splits.json")
    dmeta = read_json(run_dir / "data.json")
    root = Path(data) if data else Path(cfg["data"])
    if not root.is_dir():
        raise TrainerError(f"data directory {root} is gone; pass --data to where the set lives now")
    label_of = file_labels(run_dir, dmeta)
    missing = [p for k in ("val", "test") for p in splits[k] if not (root / p).is_file()]
    if missing:
        raise TrainerError(f"{len(missing)} validation/test file(s) are missing under {root}, "
                           f"e.g. {missing[0]}; pass --data to the set this run was trained on")
    _check_same_files(root, [p for k in ("val", "test") for p in splits[k]], dmeta)

    from trainer.env import setup_tensorflow

    setup_tensorflow(int(cfg["seed"]), False)
    from trainer.pipeline import PAPER_INPUT, ImageStore, split_arrays

    model = load_model(run_dir)
    store = ImageStore(root, PAPER_INPUT, int(cfg.get("cache_mb", 1024)))
    x_val, y_val = split_arrays(store, splits["val"], label_of)
    x_test, y_test = split_arrays(store, splits["test"], label_of)
    p_val, p_test = predict(model, x_val), predict(model, x_test)
    thr = threshold_for_recall(y_val, p_val, target_recall) if target_recall else 0.5
    cm = confusion(y_test, p_test, thr)
    metrics = {
        "threshold": {"value": thr, "chosen_on": "validation" if target_recall else "default",
                      "target_recall": target_recall},
        "test": {"n": int(len(y_test)), **point_metrics(y_test, p_test, thr),
                 "ci95": bootstrap(y_test, p_test, thr, n_boot, int(cfg["seed"])),
                 "confusion_matrix": {"labels": LABELS, "rows_true_cols_pred": cm}},
        "validation": {"n": int(len(y_val)), **point_metrics(y_val, p_val, thr)},
        "bootstrap_resamples": n_boot, "synthetic": bool(dmeta.get("synthetic")),
        "data_fingerprint": dmeta.get("fingerprint"),
    }
    write_json(run_dir / "metrics.json", metrics)
    _plots(run_dir, y_test, p_test, cm, "synthetic data" if dmeta.get("synthetic") else "test split")
    t = metrics["test"]
    log.info("test n=%d accuracy=%.3f sensitivity=%s specificity=%s auc=%s threshold=%.3f (%s)", t["n"],
             t["accuracy"], _fmt(t["sensitivity"]), _fmt(t["specificity"]), _fmt(t["roc_auc"]), thr,
             metrics["threshold"]["chosen_on"])
    return metrics


def _fmt(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{v:.3f}"
