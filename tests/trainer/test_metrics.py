"""Metric arithmetic, bootstrap intervals and threshold choice on known inputs."""

from __future__ import annotations

import numpy as np
import pytest

from trainer import TrainerError
from trainer.evaluate import bootstrap, confusion, point_metrics, threshold_for_recall


def test_point_metrics_known_confusion() -> None:
    # TP=3 FN=1 TN=4 FP=2
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.2, 0.1, 0.3, 0.4, 0.2, 0.6, 0.55])
    m = point_metrics(y, p, 0.5)
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["sensitivity"] == pytest.approx(0.75)
    assert m["specificity"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(0.6)
    assert m["f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert 0.5 < m["roc_auc"] < 1
    assert confusion(y, p, 0.5) == [[4, 2], [1, 3]]  # rows true normal/ALL, cols predicted


def test_undefined_metrics_are_none() -> None:
    m = point_metrics(np.array([0, 0]), np.array([0.1, 0.2]), 0.5)
    assert m["sensitivity"] is None and m["roc_auc"] is None and m["specificity"] == 1.0


def test_bootstrap_interval_contains_point_and_narrows() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    p = np.clip(y * 0.3 + rng.uniform(0, 0.7, 400), 0, 1)
    point = point_metrics(y, p, 0.5)["accuracy"]
    wide = bootstrap(y[:40], p[:40], 0.5, 300, 1)["accuracy"]
    narrow = bootstrap(y, p, 0.5, 300, 1)["accuracy"]
    assert narrow[0] <= point <= narrow[1]
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def test_threshold_for_recall() -> None:
    y = np.array([1, 1, 1, 1, 0, 0])
    p = np.array([0.9, 0.6, 0.4, 0.2, 0.5, 0.1])
    assert threshold_for_recall(y, p, 0.5) == pytest.approx(0.6)
    t = threshold_for_recall(y, p, 0.75)
    assert t == pytest.approx(0.4) and point_metrics(y, p, t)["sensitivity"] >= 0.75
    assert threshold_for_recall(y, p, 1.0) == pytest.approx(0.2)
    with pytest.raises(TrainerError):
        threshold_for_recall(np.array([0, 0]), np.array([0.1, 0.2]), 0.9)
