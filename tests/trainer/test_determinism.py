"""`--deterministic`: two CPU runs with one seed give identical weights (and a new seed does not)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_same_seed_same_weights(idb2_set, tmp_path) -> None:
    from trainer.train import TrainConfig, run

    def train(name: str, seed: int):
        import keras

        cfg = TrainConfig(data=str(idb2_set), out=str(tmp_path / name), epochs=1, batch_size=8, seed=seed,
                          deterministic=True, lr=3e-4)
        run(cfg, progress=False)
        return [w for w in keras.models.load_model(tmp_path / name / "model.keras").get_weights()]

    a, b, c = train("a", 5), train("b", 5), train("c", 6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
