"""Images -> model tensors for training, evaluation and export, through edge.preprocess only.

Decoding is edge.imaging (the same as the edge, including reduced JPEG decoding for the model
size); augmentation works on the uint8 BGR source; edge.preprocess.to_hwc is the only resize and
normalisation. So the deployed model is fed exactly as it was trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from edge import imaging
from edge.model_meta import InputSpec
from edge.preprocess import to_hwc
from trainer import LABELS
from trainer.augment import random_augment

PAPER_INPUT = InputSpec(shape=[1, 100, 100, 3], layout="NHWC", color_order="RGB", scale=1.0 / 255.0,
                        resize="area")


class ImageStore:
    """Decodes source images (uint8 BGR), keeping them in memory up to a byte budget."""

    def __init__(self, root: Path, spec: InputSpec, cache_mb: int = 1024) -> None:
        self.root = Path(root)
        self.spec = spec
        self.budget = cache_mb * 1024 * 1024
        self.used = 0
        self._cache: Dict[str, np.ndarray] = {}

    def get(self, rel: str) -> np.ndarray:
        img = self._cache.get(rel)
        if img is None:
            img = imaging.read(self.root / rel, target=(self.spec.height, self.spec.width))
            if self.used + img.nbytes <= self.budget:
                self._cache[rel] = img
                self.used += img.nbytes
        return img


def labels_for(paths: Sequence[str], label_of: Dict[str, int]) -> np.ndarray:
    return np.array([label_of[p] for p in paths], np.int64)


def arrays(store: ImageStore, paths: Sequence[str]) -> np.ndarray:
    """Un-augmented model inputs, N x H x W x 3 float32 (validation, test, parity)."""
    spec = store.spec
    out = np.empty((len(paths), spec.height, spec.width, 3), np.float32)
    for i, p in enumerate(paths):
        out[i] = to_hwc(store.get(p), spec)
    return out


def train_dataset(store: ImageStore, paths: List[str], labels: np.ndarray, batch_size: int, seed: int,
                  augment: bool = True):
    """tf.data over the training split: a fresh shuffle and fresh augmentations every epoch.

    One NumPy generator serves the whole run (never re-seeded), so draws differ between epochs
    and images yet the run repeats exactly with the same seed.
    """
    import tensorflow as tf

    spec = store.spec
    rng = np.random.default_rng(seed)
    n_classes = len(LABELS)

    def gen():
        for i in rng.permutation(len(paths)):
            img = store.get(paths[i])
            if augment:
                img = random_augment(img, rng)
            yield to_hwc(img, spec), np.eye(n_classes, dtype=np.float32)[labels[i]]

    sig = (tf.TensorSpec((spec.height, spec.width, 3), tf.float32), tf.TensorSpec((n_classes,), tf.float32))
    return tf.data.Dataset.from_generator(gen, output_signature=sig).batch(batch_size).prefetch(2)


def class_weights(labels: np.ndarray) -> Dict[int, float]:
    """Inverse-frequency weights so an imbalanced set does not teach the majority class only."""
    counts = np.bincount(labels, minlength=len(LABELS)).astype(float)
    return {i: float(len(labels) / (len(LABELS) * c)) if c else 0.0 for i, c in enumerate(counts)}


def one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(len(LABELS), dtype=np.float32)[labels]


def split_arrays(store: ImageStore, paths: List[str], label_of: Dict[str, int]) -> Tuple[np.ndarray, np.ndarray]:
    return arrays(store, paths), labels_for(paths, label_of)
